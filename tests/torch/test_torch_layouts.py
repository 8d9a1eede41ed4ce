"""Any memory layout: channels_last, transposed, permuted and strided parameters."""

from __future__ import annotations

import pytest
import torch

from adamp_core.testing import CASES, FLOAT64_ABS_TOL, initial_params
from adamp_torch import AdamP, functional
from helpers.torch_utils import max_diff, reference_run, set_suite_grads

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _layouts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    conv = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    return {
        "channels_last": conv.contiguous(memory_format=torch.channels_last),
        "transposed": torch.randn(5, 8, generator=g, dtype=torch.float64).t(),
        "keras_kernel": torch.randn(3, 3, 4, 6, generator=g, dtype=torch.float64).permute(
            3, 2, 0, 1
        ),
        "strided_slice": torch.randn(12, 10, generator=g, dtype=torch.float64)[::2, 1:8],
        "strided_vector": torch.randn(20, generator=g, dtype=torch.float64)[::3],
    }


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
@pytest.mark.parametrize("layout", sorted(_layouts()))
@pytest.mark.parametrize("orthogonal", [True, False])
def test_any_memory_layout_updates_in_place_like_contiguous(
    name: str, layout: str, orthogonal: bool
) -> None:
    """channels_last, transposed, permuted (Keras order), strided: same numbers, same tensor."""
    base = _layouts()[layout]
    weird = base.clone(memory_format=torch.preserve_format)
    if layout in ("keras_kernel", "strided_slice", "strided_vector"):
        weird = base  # views of larger storage: keep them as views
    plain = base.detach().clone().contiguous()
    initial = plain.clone()
    assert torch.equal(weird, plain)
    ptr, strides = weird.data_ptr(), weird.stride()
    hp = dict(lr=0.05, weight_decay=0.3)
    if name == "SGDP":
        hp["momentum"] = 0.9
    state: dict[str, list[torch.Tensor]] = {"weird": [], "plain": []}
    g = torch.Generator().manual_seed(2)
    for _ in range(8):
        grad = torch.randn(plain.shape, generator=g, dtype=torch.float64)
        if orthogonal and plain.ndim > 1:
            rows_p, rows_g = plain.reshape(plain.shape[0], -1), grad.reshape(plain.shape[0], -1)
            rows_g -= rows_p * (
                (rows_p * rows_g).sum(1, keepdim=True) / rows_p.square().sum(1, keepdim=True)
            )
        for key, p in (("weird", weird), ("plain", plain)):
            g_in = grad.clone() if key == "plain" else torch.empty_like(p).copy_(grad)
            st = state[key]
            if not st:
                st += [
                    torch.zeros_like(p),
                    torch.zeros_like(p),
                    torch.zeros((), dtype=torch.float32),
                ]
            if name == "AdamP":
                functional.adamp(
                    [p], [g_in], [st[0]], [st[1]], [st[2]], lr=hp["lr"], beta1=0.9,
                    beta2=0.999, eps=1e-8, weight_decay=hp["weight_decay"], delta=0.1,
                    wd_ratio=0.1, nesterov=False,
                )  # fmt: skip
            else:
                functional.sgdp(
                    [p], [g_in], [st[0]], lr=hp["lr"], momentum=0.9, dampening=0.0,
                    weight_decay=hp["weight_decay"], nesterov=False, eps=1e-8, delta=0.1,
                    wd_ratio=0.1,
                )  # fmt: skip
    assert weird.data_ptr() == ptr and weird.stride() == strides
    assert float((weird - plain).abs().max()) <= 1e-13
    assert not torch.equal(weird, initial)  # it did move


def test_non_contiguous_parameter_matches_reference() -> None:
    """The authors' .view() fails on these (their issue #17); ours matches the reference."""
    cases = [c for c in CASES if len(c.shape) == 4]
    params = [
        torch.tensor(p).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        for p in initial_params(cases)
    ]
    opt = AdamP(params, lr=0.02, weight_decay=0.5)
    for step in range(20):
        set_suite_grads(params, step, cases)
        opt.step()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in params)
    ref = reference_run("AdamP", cases, dict(lr=0.02, weight_decay=0.5), 20)
    assert max_diff(params, ref) <= FLOAT64_ABS_TOL
