"""state_dict: the authors' keys, loading their checkpoints, exact save/load/resume."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from adamp_core.testing import FLOAT64_ABS_TOL
from adamp_torch import SGDP, AdamP
from helpers.torch_utils import set_suite_grads, suite_tensors

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("AdamP", dict(lr=0.02, weight_decay=0.5)),
    ("AdamP", dict(lr=0.02, nesterov=True, weight_decay=0.5, wd_ratio=0.3)),
    ("SGDP", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGDP", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]


def _ours(name: str) -> type[torch.optim.Optimizer]:
    return {"AdamP": AdamP, "SGDP": SGDP}[name]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: range) -> None:
    for step in steps:
        set_suite_grads(params, step)
        opt.step()


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(("name", "hparams"), CONFIGS, ids=IDS)
def test_state_keys_match_authors(name: str, hparams: dict[str, Any]) -> None:
    adamp = pytest.importorskip("adamp")
    params, theirs_params = suite_tensors(), suite_tensors()
    ours, theirs = _ours(name)(params, **hparams), getattr(adamp, name)(theirs_params, **hparams)
    _run(ours, params, range(2))
    _run(theirs, theirs_params, range(2))
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert ours_sd["state"].keys() == theirs_sd["state"].keys()
    for key, st in theirs_sd["state"].items():
        assert set(ours_sd["state"][key]) == set(st)
        for k, v in st.items():
            if k != "step":
                assert torch.allclose(ours_sd["state"][key][k], v, rtol=0, atol=1e-12)
            else:
                assert float(ours_sd["state"][key][k]) == v == 2


@pytest.mark.parametrize(("name", "hparams"), CONFIGS, ids=IDS)
def test_authors_checkpoint_continues_on_their_trajectory(
    name: str, hparams: dict[str, Any]
) -> None:
    """adamp.X for 5 steps, checkpoint, adamp_torch.X resumes: same as adamp.X for 10."""
    adamp = pytest.importorskip("adamp")
    theirs_cls = getattr(adamp, name)
    straight = suite_tensors()
    _run(theirs_cls(straight, **hparams), straight, range(10))

    first = suite_tensors()
    theirs = theirs_cls(first, **hparams)
    _run(theirs, first, range(5))
    checkpoint = _roundtrip({"params": [p.detach() for p in first], "opt": theirs.state_dict()})

    resumed = [p.clone().requires_grad_(True) for p in checkpoint["params"]]
    ours = _ours(name)(resumed, **hparams)
    ours.load_state_dict(checkpoint["opt"])
    if name == "AdamP":
        steps = [ours.state[p]["step"] for p in resumed]
        assert all(isinstance(s, torch.Tensor) and float(s) == 5 for s in steps)
    _run(ours, resumed, range(5, 10))
    for a, b in zip(resumed, straight):
        assert torch.max(torch.abs(a - b)).item() <= FLOAT64_ABS_TOL


@pytest.mark.parametrize(("name", "hparams"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_resume_is_bitwise_exact(
    name: str, hparams: dict[str, Any], dtype: torch.dtype
) -> None:
    straight = suite_tensors(dtype)
    _run(_ours(name)(straight, **hparams), straight, range(10))

    first = suite_tensors(dtype)
    opt = _ours(name)(first, **hparams)
    _run(opt, first, range(5))
    checkpoint = _roundtrip({"params": [p.detach() for p in first], "opt": opt.state_dict()})
    resumed = [p.clone().requires_grad_(True) for p in checkpoint["params"]]
    fresh = _ours(name)(resumed, **hparams)
    fresh.load_state_dict(checkpoint["opt"])
    _run(fresh, resumed, range(5, 10))
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_loading_mismatched_shapes_fails_loudly(name: str) -> None:
    a = [torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    b = [torch.randn(3, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    src = _ours(name)(a, lr=0.1)
    for p in a:
        p.grad = torch.randn_like(p)
    src.step()
    dst = _ours(name)(b, lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*shape \(3, 4\)") as info:
        dst.load_state_dict(src.state_dict())
    assert "params'][0]" in str(info.value)
    assert len(dst.state) == 0  # nothing was loaded


def test_loading_mismatched_group_sizes_fails() -> None:
    src = AdamP([torch.randn(3, requires_grad=True)])
    dst = AdamP([torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)])
    with pytest.raises(ValueError):
        dst.load_state_dict(src.state_dict())


def test_state_follows_parameter_layout() -> None:
    w = torch.randn(8, 4, 3, 3).to(memory_format=torch.channels_last).requires_grad_(True)
    opt = AdamP([w], lr=0.01)
    w.grad = torch.randn_like(w)
    opt.step()
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt.state[w][key].stride() == w.stride()
    assert opt.state[w]["step"].dtype == torch.float32
