"""bfloat16 and float16 storage against "upcast to float32, float32 math, round"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton.language")

from triton_helpers import ADAMP_DEFAULTS, SGDP_DEFAULTS, SMALL_CASES, Kernels, grads_for  # noqa: E402

from adamp_core import functional as ref  # noqa: E402
from adamp_core.testing import initial_params  # noqa: E402
from adamp_torch import _triton  # noqa: E402

LOW = [torch.bfloat16, torch.float16]
CONFIGS: dict[str, dict[str, Any]] = {
    "AdamP": dict(ADAMP_DEFAULTS, weight_decay=0.3),
    "AdamP-nesterov": dict(ADAMP_DEFAULTS, weight_decay=0.3, nesterov=True),
    "SGDP": dict(SGDP_DEFAULTS, weight_decay=0.01),
    "SGDP-paper": dict(SGDP_DEFAULTS, weight_decay=0.01, variant="paper"),
    "SGDP-nesterov": dict(SGDP_DEFAULTS, nesterov=True, weight_decay=0.01),
    "SGDP-dampening": dict(SGDP_DEFAULTS, dampening=0.3, weight_decay=0.01),
}


def _ordered(x: torch.Tensor) -> torch.Tensor:
    """16-bit floats as integers in the order of their values (+0 and -0 equal)."""
    bits = x.view(torch.int16).to(torch.int32)
    return torch.where(bits < 0, -(bits & 0x7FFF), bits)


def ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two 16-bit float tensors."""
    assert a.dtype == b.dtype and a.dtype in LOW
    return int((_ordered(a) - _ordered(b)).abs().max())


def _round(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float32)).to(dtype)


def _as32(x: torch.Tensor) -> np.ndarray:
    return x.float().numpy()


class FP32Reference:
    """The reference: the low-precision values upcast, one float32 step, rounded back."""

    def __init__(self, optimizer: str, params: list[torch.Tensor], hparams: dict[str, Any]):
        self.optimizer, self.hparams = optimizer, dict(hparams)
        self.params = [p.clone() for p in params]
        self.state = [[torch.zeros_like(p) for p in params]]
        if optimizer == "AdamP":
            self.state.append([torch.zeros_like(p) for p in params])
        self.step_count = 0
        self.branches: list[str] = []

    def step(self, grads: list[torch.Tensor]) -> None:
        self.step_count += 1
        self.branches = []
        for i, (p, g) in enumerate(zip(self.params, grads)):
            dtype = p.dtype
            if self.optimizer == "AdamP":
                state = ref.AdamPState(
                    self.step_count - 1, _as32(self.state[0][i]), _as32(self.state[1][i])
                )
                out = ref.adamp_step(_as32(p), _as32(g), state, **self.hparams)
                self.state[0][i] = _round(out.state.exp_avg, dtype)
                self.state[1][i] = _round(out.state.exp_avg_sq, dtype)
            else:
                state = ref.SGDPState(_as32(self.state[0][i]))
                out = ref.sgdp_step(_as32(p), _as32(g), state, **self.hparams)
                self.state[0][i] = _round(out.state.momentum_buffer, dtype)
            self.params[i] = _round(out.param, dtype)
            self.branches.append(out.branch)


def _pair(name: str, dtype: torch.dtype) -> tuple[FP32Reference, Kernels]:
    optimizer = name.split("-")[0]
    start = [torch.tensor(p).to(dtype) for p in initial_params(SMALL_CASES)]
    hparams = CONFIGS[name]
    return FP32Reference(optimizer, start, hparams), Kernels(optimizer, start, dict(hparams))


def _random_state(reference: FP32Reference, kernels: Kernels, seed: int) -> None:
    """Nonzero state and step counts (both sides the same), so every term matters."""
    gen = torch.Generator().manual_seed(seed)
    for k, values in enumerate(reference.state):
        for i, p in enumerate(values):
            x = 0.1 * torch.randn(p.shape, generator=gen)
            x = x.abs() * 0.1 if k == 1 else x
            values[i] = x.to(p.dtype)
            kernels.state[k][i].copy_(values[i])
    reference.step_count = 4
    for s in kernels.steps:
        s.fill_(4.0)


def _grads(params: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    g = grads_for(SMALL_CASES, [p.double().numpy() for p in params], step, np.float64)
    return [torch.tensor(x).to(params[0].dtype) for x in g]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_step_within_one_ulp(name: str, dtype: torch.dtype) -> None:
    reference, kernels = _pair(name, dtype)
    _random_state(reference, kernels, seed=3)
    grads = _grads(reference.params, 0)
    reference.step(grads)
    kernels.step(grads)
    assert kernels.branches == reference.branches
    assert set(reference.branches) == {"channel", "layer", "none"}
    for got, want in zip(kernels.params, reference.params):
        assert ulps(got, want) <= 1
    for got_state, want_state in zip(kernels.state, reference.state):
        for got, want in zip(got_state, want_state):
            assert ulps(got, want) <= 1


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", ["AdamP-nesterov", "SGDP"])
def test_twenty_steps_within_two_percent(name: str, dtype: torch.dtype) -> None:
    reference, kernels = _pair(name, dtype)
    seen = set()
    for step in range(20):
        reference.step(_grads(reference.params, step))
        kernels.step(_grads(kernels.params, step))
        seen |= set(reference.branches)
    assert seen == {"channel", "layer", "none"}
    for got, want in zip(kernels.params, reference.params):
        scale = float(want.float().abs().max())
        assert float((got.float() - want.float()).abs().max()) <= 2e-2 * scale


def test_float16_has_no_nan_where_the_authors_package_has() -> None:
    """eps=1e-8 is 0 in float16: the authors' package divides 0 by 0 where the second
    moment is 0; here the math runs in float32."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(6, 5, generator=gen).half()
    g = torch.randn(6, 5, generator=gen)
    g[:, :2] = 0.0  # second moment 0 there
    g = g.half()
    params = [p0.clone()]
    state = [[torch.zeros_like(p0)], [torch.zeros_like(p0)]]
    steps = [torch.zeros((), dtype=torch.float32)]
    _triton.adamp_step(
        params, [g], state[0], state[1], steps, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
        weight_decay=0.0, delta=0.1, wd_ratio=0.1, nesterov=False, maximize=False,
    )  # fmt: skip
    assert bool(torch.isfinite(params[0]).all())
    want = ref.adamp_step(
        _as32(p0), _as32(g), ref.AdamPState.zeros_like(_as32(p0)), lr=1e-3, betas=(0.9, 0.999),
        eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1, nesterov=False,
    )  # fmt: skip
    assert ulps(params[0], _round(want.param, torch.float16)) <= 1
    adamp = pytest.importorskip("adamp")
    theirs = p0.clone().requires_grad_(True)
    theirs.grad = g.clone()
    adamp.AdamP([theirs], lr=1e-3).step()
    assert bool(torch.isnan(theirs.detach()).any())
