"""The fused C++ CPU kernel (``adamp_torch._cpu``): built here, taken by default, its
branches, its independence of the thread count, and what happens when it is missing.

Its numbers against the NumPy reference and the authors' package are checked by the
conformance, precision and memory tests, which run every CPU path (the kernel first).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

import adamp_torch.functional as F
from adamp_torch import SGDP, AdamP, _cpu
from helpers.torch_utils import require_cpu_kernel

ADAMP_HP = dict(
    lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, delta=0.1, wd_ratio=0.1
)


@pytest.fixture(autouse=True)
def kernel() -> None:
    require_cpu_kernel()


def _weights(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 50), (6, 40), (5, 7), (9,)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def _gradients(weights: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    """Gradients whose branches are known by construction: every row orthogonal to its
    weight row (channel), orthogonal to the whole weight but not to its rows (layer), the
    weight itself (none), and a vector (never projected)."""
    gen = torch.Generator().manual_seed(100 + step)
    w = [x.double() for x in weights]
    g = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in w]
    g[0] -= (g[0] * w[0]).sum(1, keepdim=True) / (w[0] * w[0]).sum(1, keepdim=True) * w[0]
    g[1] = w[1].roll(1, 0)  # rows correlate with other rows only...
    g[1] -= (g[1] * w[1]).sum() / (w[1] * w[1]).sum() * w[1]  # ...and not with the whole
    g[2] = w[2].clone()
    return [x.to(weights[0].dtype) for x in g]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_branches_and_numbers_match_the_single_tensor_path(name: str, dtype: torch.dtype) -> None:
    """At every step the kernel takes the branch built into each tensor, and 3 steps
    agree with ``foreach=False`` (the reference path): 1e-12 in float64, float32
    round-off otherwise (bfloat16: one storage ulp of the largest weight)."""
    weights = _weights(dtype)
    ours = [w.clone() for w in weights]
    ref = [w.clone() for w in weights]
    branches = torch.zeros(len(ours), dtype=torch.int32)
    states = [[torch.zeros_like(w) for w in weights] for _ in range(4)]
    steps = [[torch.zeros(()) for _ in weights] for _ in range(2)]
    sgd: dict[str, Any] = dict(
        lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=False,
        eps=1e-8, delta=0.1, wd_ratio=0.1, variant="authors",
    )  # fmt: skip
    for step in range(3):
        branches.fill_(-1)
        g_ours, g_ref = _gradients(ours, step), _gradients(ref, step)
        if name == "AdamP":
            _cpu.adamp_step(
                ours, g_ours, states[0], states[1], steps[0], **ADAMP_HP,
                nesterov=False, maximize=False, branches=branches,
            )  # fmt: skip
            F.adamp(
                ref, g_ref, states[2], states[3], steps[1], **ADAMP_HP,
                nesterov=False, foreach=False,
            )  # fmt: skip
        else:
            _cpu.sgdp_step(ours, g_ours, states[0], **sgd, maximize=False, branches=branches)
            F.sgdp(ref, g_ref, states[2], **sgd, foreach=False)
        got = [_cpu.BRANCHES[b] for b in branches.tolist()]
        assert got == ["channel", "layer", "none", "none"], step
    tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(dtype, 2**-7)
    for a, b in zip(ours, ref):
        scale = float(b.double().abs().max())
        assert float((a.double() - b.double()).abs().max()) <= tol * scale


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_the_default_cpu_step_runs_the_kernel(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor whose rows are blocks in order goes to the kernel (channels_last
    included); a transposed weight goes to the composite path in the same step."""
    taken: list[list[tuple[int, ...]]] = []
    real = getattr(_cpu, f"{name.lower()}_step")

    def spy(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        taken.append([tuple(p.shape) for p in params])
        real(params, *args, **kwargs)

    monkeypatch.setattr(_cpu, f"{name.lower()}_step", spy)
    gen = torch.Generator().manual_seed(1)
    params = [
        torch.randn(4, 3, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last),
        torch.randn(5, 6, generator=gen),
        torch.randn(7, 5, generator=gen).t(),  # rows not in memory order
        torch.randn(5, generator=gen),
    ]
    params = [p.requires_grad_() for p in params]
    opt = (AdamP if name == "AdamP" else SGDP)(params, lr=0.1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).contiguous(
            memory_format=torch.channels_last if p.dim() == 4 else torch.contiguous_format
        )
    opt.step()
    assert taken == [[(4, 3, 3, 3), (5, 6), (5,)]]


def test_results_do_not_depend_on_the_thread_count() -> None:
    """Sums run in fixed blocks and lanes: 1 and 2 threads give the same bits."""
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(s, generator=gen) for s in [(300, 1000), (1, 90000), (70000, 2)]]
    grads = [torch.randn(w.shape, generator=gen) for w in weights]
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            ws = [w.clone() for w in weights]
            states = [[torch.zeros_like(w) for w in weights] for _ in range(2)]
            steps = [torch.zeros(()) for _ in weights]
            for _ in range(2):
                _cpu.adamp_step(
                    ws, grads, *states, steps, **ADAMP_HP, nesterov=True, maximize=False
                )
            results.append(ws)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_nan_gradients_propagate_like_the_reference() -> None:
    w = torch.randn(6, 10, dtype=torch.float64)
    g = torch.randn(6, 10, dtype=torch.float64)
    g[2, 3] = math.nan
    out = []
    for foreach in (None, False):
        ws = [w.clone()]
        m, v, s = [torch.zeros_like(w)], [torch.zeros_like(w)], [torch.zeros(())]
        F.adamp(ws, [g], m, v, s, **ADAMP_HP, nesterov=False, foreach=foreach)
        out.append(ws[0])
    assert torch.equal(out[0].isnan(), out[1].isnan())
    assert torch.allclose(out[0], out[1], atol=1e-12, equal_nan=True)


def test_fused_true_requires_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    p = torch.randn(4, 5, requires_grad=True)
    p.grad = torch.randn(4, 5)
    SGDP([p], lr=0.1, fused=True).step()  # available: runs
    monkeypatch.setenv("ADAMP_TORCH_CPU_KERNEL", "0")
    with pytest.raises(RuntimeError, match="fused CPU kernel is unavailable"):
        SGDP([p], lr=0.1, fused=True).step()
    SGDP([p], lr=0.1).step()  # the default takes the composite path


def test_a_failed_build_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    state: dict[str, object] = {}

    def broken() -> None:
        state["error"] = "CalledProcessError: no compiler"
        raise RuntimeError(state["error"])

    monkeypatch.setattr(_cpu, "_state", state)
    monkeypatch.setattr(_cpu, "build", broken)
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    g = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
    opt_a, opt_b = AdamP([a], lr=0.1), AdamP([b], lr=0.1, foreach=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            a.grad, b.grad = g.clone(), g.clone()
            opt_a.step()
            opt_b.step()
    assert [str(c.message).count("could not be built") for c in caught] == [1]
    assert float((a - b).detach().abs().max()) <= 1e-14


def test_a_direct_call_checks_layouts_before_touching_anything() -> None:
    """The kernel walks raw memory: a layout it does not take is refused up front, and no
    tensor of the call (the first, valid one included) is changed."""
    good = torch.randn(4, 5)
    transposed = torch.randn(6, 4).t()
    cases = {
        "rows out of order": ([good, transposed], [torch.randn(4, 5), torch.randn(4, 6)]),
        "grad laid out otherwise": ([good, torch.randn(4, 6)], [torch.randn(4, 5), transposed]),
    }
    for name, (params, grads) in cases.items():
        before = [p.clone() for p in params]
        states = [[torch.zeros_like(p) for p in params] for _ in range(2)]
        steps = [torch.zeros(()) for _ in params]
        with pytest.raises(RuntimeError, match="adamp_cpu"):
            _cpu.adamp_step(
                params, grads, *states, steps, **ADAMP_HP, nesterov=False, maximize=False
            )
        assert all(torch.equal(a, b) for a, b in zip(params, before)), name
        assert all(float(s) == 0 for s in steps), name
