"""The code paths: foreach=False, CUDA, and the CPU routing of unprojected tensors;
maximize."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import adamp_core
from adamp_core.testing import FLOAT64_ABS_TOL
from adamp_torch import SGDP, AdamP, functional
from helpers.torch_utils import max_diff, set_suite_grads, suite_tensors, use_cpu_path

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_maximize_equals_minimizing_the_negated_gradient(name: str) -> None:
    cls = {"AdamP": AdamP, "SGDP": SGDP}[name]
    hp = dict(lr=0.05, weight_decay=0.1)
    if name == "SGDP":
        hp["momentum"] = 0.9
    up, down = suite_tensors(), suite_tensors()
    opt_up, opt_down = cls(up, maximize=True, **hp), cls(down, **hp)
    for step in range(10):
        set_suite_grads(up, step)
        for u, d in zip(up, down):
            d.grad = -u.grad
        opt_up.step()
        opt_down.step()
    for u, d in zip(up, down):
        assert float((u - d).abs().max()) <= 1e-13


def test_foreach_false_gives_the_same_numbers() -> None:
    a, b = suite_tensors(), suite_tensors()
    opt_a, opt_b = (
        AdamP(a, lr=0.02, weight_decay=0.5),
        AdamP(b, lr=0.02, weight_decay=0.5, foreach=False),
    )
    for step in range(10):
        set_suite_grads(a, step)
        for x, y in zip(a, b):
            y.grad = x.grad.clone()
        opt_a.step()
        opt_b.step()
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) <= 1e-14


@CUDA
@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_cuda_matches_reference_and_never_syncs(name: str) -> None:
    from adamp_core.testing import FLOAT32_REL_TOL, run_conformance, summarize
    from adamp_torch.conformance import make_factory

    results = run_conformance(make_factory(device="cuda"), backend="torch-cuda", optimizers=[name])
    assert not {r.error for r in results if r.error}
    for row in summarize(results):
        tol = FLOAT64_ABS_TOL if row.dtype == "float64" else FLOAT32_REL_TOL
        assert (row.max_abs if row.dtype == "float64" else row.max_rel) <= tol, row
    params = [p.cuda().detach().requires_grad_(True) for p in suite_tensors(torch.float32)]
    opt = {"AdamP": AdamP, "SGDP": SGDP}[name](params, lr=0.01, weight_decay=0.1)
    set_suite_grads(params, 0)
    opt.step()  # state created (allocation may sync); the steady state must not
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            for p in params:
                p.grad.mul_(0.5)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(
    ("name", "hparams", "kernel"),
    [
        ("AdamP", {"lr": 0.01, "weight_decay": 0.1}, "_fused_adamw_"),
        ("SGDP", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, "_fused_sgd_"),
    ],
)
def test_cpu_skips_the_projection_work_for_unprojected_tensors(
    name: str, hparams: dict[str, Any], kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU's composite path (the C++ kernel off) the decision is read on the host:
    only the projected tensor gets the <P_r, Z_r> reductions, the others are finished by
    torch's fused kernel; the numbers still match the reference."""
    use_cpu_path(monkeypatch, "host")
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(6, 10, generator=gen, dtype=torch.float64) for _ in range(2)]
    weights.append(torch.randn(6, generator=gen, dtype=torch.float64))
    noise = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in weights]

    def gradients(current: list[np.ndarray]) -> list[np.ndarray]:
        # tensor 0: every row orthogonal to its weight row (channel projection);
        # tensor 1: the weights themselves (|cos| = 1: no projection); tensor 2: a vector.
        w0, n0 = current[0], noise[0].numpy()
        ortho = n0 - (n0 * w0).sum(1, keepdims=True) / (w0 * w0).sum(1, keepdims=True) * w0
        return [ortho, current[1].copy(), noise[2].numpy()]

    projected_asked: list[list[int]] = []
    fused_sizes: list[list[tuple[int, ...]]] = []
    real_shift = functional.shift_coefficients
    real_kernel = getattr(torch, kernel)

    def shift_spy(*args: Any, tensors: Any = None, **kwargs: Any) -> torch.Tensor:
        projected_asked.append(list(tensors))
        return real_shift(*args, tensors=tensors, **kwargs)

    def kernel_spy(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        fused_sizes.append([tuple(p.shape) for p in params])
        real_kernel(params, *args, **kwargs)

    monkeypatch.setattr(functional, "shift_coefficients", shift_spy)
    monkeypatch.setattr(torch, kernel, kernel_spy)
    params = [w.clone().requires_grad_() for w in weights]
    opt = getattr(adamp_core, name)([w.numpy().copy() for w in weights], **hparams)
    ours = (AdamP if name == "AdamP" else SGDP)(params, **hparams)
    for _ in range(3):
        for p, g in zip(params, gradients([p.detach().numpy() for p in params])):
            p.grad = torch.from_numpy(g)
        ours.step()
        opt.step(gradients(opt.params))
        assert opt.last_branches[:2] == ["channel", "none"]
    assert projected_asked == [[0]] * 3
    # each step: the unprojected matrix and the vector in one fused call, and one more
    # for the projected matrix (AdamP: its Adam step, into a buffer; SGDP: the update)
    assert fused_sizes == [[(6, 10), (6,)], [(6, 10)]] * 3
    assert max_diff(params, opt.params) <= FLOAT64_ABS_TOL
