"""Every option of the kernels against the NumPy reference in float64 (1e-12)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton.language")

from triton_helpers import (  # noqa: E402
    ADAMP_DEFAULTS,
    SGDP_DEFAULTS,
    SMALL_CASES,
    Kernels,
    grads_for,
    run_pair,
    start,
)

from adamp_core.testing import FLOAT64_ABS_TOL  # noqa: E402
from adamp_torch import _triton  # noqa: E402
from adamp_torch import functional as eager  # noqa: E402

ADAMP_OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "nesterov": dict(nesterov=True),
    "weight-decay": dict(weight_decay=0.3, wd_ratio=0.2),
    "nesterov-weight-decay": dict(nesterov=True, weight_decay=0.3),
    "betas-eps": dict(betas=(0.0, 0.99), eps=1e-3),
}
SGDP_OPTIONS: dict[str, dict[str, Any]] = {
    "authors": dict(weight_decay=0.01),
    "paper": dict(weight_decay=0.01, variant="paper"),
    "nesterov": dict(nesterov=True, weight_decay=0.01),
    "paper-nesterov": dict(nesterov=True, variant="paper"),
    "dampening": dict(dampening=0.3, weight_decay=0.01),
    "paper-dampening": dict(dampening=0.3, variant="paper"),
    "no-momentum": dict(momentum=0.0, weight_decay=0.05),
}


def _assert_matches(optimizer: str, hparams: dict[str, Any], **kwargs: Any) -> None:
    worst, ref_branches, got_branches = run_pair(optimizer, hparams, **kwargs)
    assert got_branches == ref_branches
    assert worst <= FLOAT64_ABS_TOL, worst


@pytest.mark.parametrize("name", sorted(ADAMP_OPTIONS))
def test_adamp_options(name: str) -> None:
    _assert_matches("AdamP", dict(ADAMP_DEFAULTS, **ADAMP_OPTIONS[name]))


@pytest.mark.parametrize("name", sorted(SGDP_OPTIONS))
def test_sgdp_options(name: str) -> None:
    _assert_matches("SGDP", dict(SGDP_DEFAULTS, **SGDP_OPTIONS[name]))


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_maximize(optimizer: str) -> None:
    """Maximizing on ``-g`` is minimizing on ``g``: the gradient is negated everywhere
    (the test uses the absolute cosine, which the sign does not change)."""
    defaults = ADAMP_DEFAULTS if optimizer == "AdamP" else SGDP_DEFAULTS
    _assert_matches(optimizer, dict(defaults, nesterov=True, weight_decay=0.1), maximize=True)


def test_sgdp_variants_differ() -> None:
    """Without Nesterov the authors' variant projects the buffer, the paper's does not."""
    h = dict(SGDP_DEFAULTS, weight_decay=0.01)
    runs = {}
    for variant in ("authors", "paper"):
        kernels = Kernels("SGDP", [torch.tensor(p) for p in start()], dict(h, variant=variant))
        for step in range(3):
            grads = grads_for(SMALL_CASES, [p.numpy() for p in kernels.params], step, np.float64)
            kernels.step([torch.tensor(g) for g in grads])
        runs[variant] = kernels.params[0].clone()
    assert float((runs["authors"] - runs["paper"]).abs().max()) > 1e-3


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_per_call_delta_and_wd_ratio(optimizer: str) -> None:
    """``delta`` and ``wd_ratio`` are arguments of each call: delta 0 projects nothing,
    a large delta projects every tensor with two or more dimensions."""
    defaults = ADAMP_DEFAULTS if optimizer == "AdamP" else SGDP_DEFAULTS
    per_step = {
        0: dict(delta=0.0),
        1: dict(delta=10.0, wd_ratio=0.5),
        2: dict(delta=0.1, wd_ratio=0.0),
    }
    worst, ref_branches, got_branches = run_pair(
        optimizer, dict(defaults, weight_decay=0.2), steps=3, per_step=per_step
    )
    assert got_branches == ref_branches
    assert got_branches[0] == ["none"] * 4
    assert got_branches[1] == ["channel", "channel", "channel", "none"]
    assert worst <= FLOAT64_ABS_TOL, worst


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_tensor_lr_equals_float_lr(optimizer: str) -> None:
    defaults = ADAMP_DEFAULTS if optimizer == "AdamP" else SGDP_DEFAULTS
    h = dict(defaults, weight_decay=0.1)
    out = []
    for lr in (h["lr"], torch.tensor(h["lr"], dtype=torch.float64)):
        kernels = Kernels(optimizer, [torch.tensor(p) for p in start()], dict(h, lr=lr))
        for step in range(2):
            grads = grads_for(SMALL_CASES, [p.numpy() for p in kernels.params], step, np.float64)
            kernels.step([torch.tensor(g) for g in grads])
        out.append(kernels.params)
    for a, b in zip(*out):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_maximize_matches_the_eager_path(optimizer: str) -> None:
    """Same numbers as ``adamp_torch.functional`` with ``maximize=True`` (float64)."""
    params = [torch.tensor(p) for p in start()]
    grads = [torch.tensor(g) for g in grads_for(SMALL_CASES, start(), 0, np.float64)]
    if optimizer == "AdamP":
        kw = dict(
            lr=0.02, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, delta=0.1,
            wd_ratio=0.1, nesterov=True, maximize=True,
        )  # fmt: skip

        def state() -> list[list[torch.Tensor]]:
            zeros = [[torch.zeros_like(p) for p in params] for _ in range(2)]
            return [*zeros, [torch.zeros((), dtype=torch.float32) for _ in params]]

        a, b = [p.clone() for p in params], [p.clone() for p in params]
        eager.adamp(a, grads, *state(), **kw)
        _triton.adamp_step(b, grads, *state(), **kw)
    else:
        kw = dict(
            lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=False, eps=1e-8,
            delta=0.1, wd_ratio=0.1, variant="authors", maximize=True,
        )  # fmt: skip
        a, b = [p.clone() for p in params], [p.clone() for p in params]
        eager.sgdp(a, grads, [torch.zeros_like(p) for p in params], **kw)
        _triton.sgdp_step(b, grads, [torch.zeros_like(p) for p in params], **kw)
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) <= FLOAT64_ABS_TOL
