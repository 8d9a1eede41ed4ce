"""Shared helpers of the PyTorch adapter's tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch

import adamp_core
from adamp_core.testing import CASES, Case, case_gradient, initial_params

Factory = Callable[[str, list[np.ndarray], dict[str, Any]], Any]


def paired_max_diff(
    ours: Factory,
    theirs: Factory,
    optimizer: str,
    hparams: dict[str, Any],
    dtype: str,
    *,
    cases: Sequence[Case] = CASES,
    steps: int = 25,
) -> float:
    """Worst max-abs weight difference of two implementations run side by side.

    Each is fed the suite's gradients computed from its own current weights.
    """
    start = [p.astype(dtype) for p in initial_params(cases)]
    a = ours(optimizer, [p.copy() for p in start], dict(hparams))
    b = theirs(optimizer, [p.copy() for p in start], dict(hparams))
    worst = 0.0
    for step in range(steps):
        for opt in (a, b):
            grads = [
                case_gradient(c, np.asarray(p, dtype=np.float64), step).astype(dtype)
                for c, p in zip(cases, opt.get_params())
            ]
            opt.step(grads)
        for pa, pb in zip(a.get_params(), b.get_params()):
            diff = np.max(np.abs(np.asarray(pa, np.float64) - np.asarray(pb, np.float64)))
            worst = max(worst, float(diff) if np.isfinite(diff) else np.inf)
    return worst


def suite_tensors(
    dtype: torch.dtype = torch.float64, cases: Sequence[Case] = CASES
) -> list[torch.Tensor]:
    """The suite's starting weights as leaf tensors."""
    return [torch.tensor(p, dtype=dtype, requires_grad=True) for p in initial_params(cases)]


def set_suite_grads(
    params: Sequence[torch.Tensor], step: int, cases: Sequence[Case] = CASES
) -> None:
    """Give ``params`` the suite's gradients for ``step`` at their current values."""
    for c, p in zip(cases, params):
        g = case_gradient(c, p.detach().cpu().double().numpy(), step)
        p.grad = torch.tensor(g, dtype=p.dtype, device=p.device)


def reference_run(
    name: str, cases: list, hparams: dict[str, Any], steps: int, lrs: list[float] | None = None
) -> list[np.ndarray]:
    """The NumPy reference's weights after ``steps`` steps on the suite's ``cases``."""
    params = [p.copy() for p in initial_params(cases)]
    opt = getattr(adamp_core, name)(params, **hparams)
    for step in range(steps):
        if lrs is not None:
            opt.hparams["lr"] = lrs[step]
        opt.step([case_gradient(c, p, step) for c, p in zip(cases, opt.params)])
    return opt.params


def max_diff(ours: list[torch.Tensor], ref: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(p.detach().cpu().numpy() - r))) for p, r in zip(ours, ref))


CPU_PATHS = ("kernel", "host", "device")
"""The batched CPU paths: the C++ kernel (the default), the composite path with decisions
read on the host (the C++ kernel off), and the device path (decisions kept on the device,
what CUDA and ``torch.compile`` run)."""


def require_cpu_kernel() -> None:
    """Fail unless the C++ kernel is built; skip only where no C++ compiler is installed."""
    from adamp_torch import _cpu

    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler here: the fused CPU kernel cannot be built")
    assert _cpu.available("cpu"), _cpu.import_error()


def use_cpu_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Send the CPU steps of the test down one of :data:`CPU_PATHS`."""
    import adamp_torch.functional

    if path == "kernel":
        require_cpu_kernel()
    elif path == "host":
        monkeypatch.setenv("ADAMP_TORCH_CPU_KERNEL", "0")
    elif path == "device":
        monkeypatch.setattr(adamp_torch.functional, "HOST_DECISIONS", False)
    else:
        raise ValueError(path)
