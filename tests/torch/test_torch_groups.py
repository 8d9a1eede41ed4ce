"""Param groups, closures, learning-rate schedules, parameters without gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamp_core
from adamp_core.testing import CASES, FLOAT64_ABS_TOL, initial_params
from adamp_torch import SGDP, AdamP
from helpers.torch_utils import max_diff, reference_run, set_suite_grads, suite_tensors

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_param_groups_with_their_own_delta_wd_ratio_nesterov() -> None:
    first, second = list(CASES[:5]), list(CASES[5:])
    hp_first = dict(lr=0.02, weight_decay=0.5, delta=0.2, wd_ratio=0.3, nesterov=True)
    hp_second = dict(lr=0.01, weight_decay=0.1, delta=0.05, wd_ratio=0.7, nesterov=False)
    a, b = suite_tensors(cases=first), suite_tensors(cases=second)
    opt = AdamP(
        [dict(params=a, **hp_first), dict(params=b, delta=0.05, wd_ratio=0.7, lr=0.01)],
        weight_decay=0.1,
    )
    for step in range(20):
        set_suite_grads(a, step, first)
        set_suite_grads(b, step, second)
        opt.step()
    assert max_diff(a, reference_run("AdamP", first, hp_first, 20)) <= FLOAT64_ABS_TOL
    assert max_diff(b, reference_run("AdamP", second, hp_second, 20)) <= FLOAT64_ABS_TOL


def test_sgdp_param_groups_with_their_own_variant() -> None:
    first, second = list(CASES[:5]), list(CASES[5:])
    hp = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    a, b = suite_tensors(cases=first), suite_tensors(cases=second)
    opt = SGDP([dict(params=a, variant="paper"), dict(params=b, wd_ratio=0.5)], **hp)
    for step in range(20):
        set_suite_grads(a, step, first)
        set_suite_grads(b, step, second)
        opt.step()
    ref_a = reference_run("SGDP", first, dict(hp, variant="paper"), 20)
    ref_b = reference_run("SGDP", second, dict(hp, wd_ratio=0.5), 20)
    assert max_diff(a, ref_a) <= FLOAT64_ABS_TOL
    assert max_diff(b, ref_b) <= FLOAT64_ABS_TOL


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_closure_is_evaluated_with_grad_and_its_loss_returned(name: str) -> None:
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, 4, dtype=torch.float64)
    target = w.detach().clone()
    opt = {"AdamP": AdamP, "SGDP": SGDP}[name]([w], lr=0.05)

    def closure() -> float:
        opt.zero_grad()
        loss = ((x @ w.t()) ** 2).sum()
        loss.backward()
        return float(loss.detach())

    expected_grad = 2 * (x @ target.t()).t() @ x
    loss = opt.step(closure)
    assert loss == pytest.approx(float(((x @ target.t()) ** 2).sum()))
    torch.testing.assert_close(w.grad, expected_grad)
    ref = getattr(adamp_core, name)([target.numpy().copy()], lr=0.05)
    ref.step([expected_grad.numpy()])
    assert float((w.detach() - torch.from_numpy(ref.params[0])).abs().max()) <= 1e-12


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_scheduler_follows_the_reference(tensor_lr: bool) -> None:
    params = suite_tensors()
    lr: float | torch.Tensor = torch.tensor(0.02, dtype=torch.float64) if tensor_lr else 0.02
    opt = AdamP(params, lr=lr, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    lrs = []
    for step in range(20):
        lrs.append(float(opt.param_groups[0]["lr"]))
        set_suite_grads(params, step)
        opt.step()
        sched.step()
    assert len(set(lrs)) > 10
    ref = reference_run("AdamP", list(CASES), dict(lr=0.02, weight_decay=0.5), 20, lrs)
    assert max_diff(params, ref) <= FLOAT64_ABS_TOL


def test_mixed_dtypes_in_one_group_each_match_the_reference() -> None:
    cases = list(CASES)
    params = [
        torch.tensor(p, dtype=torch.float64 if i % 2 else torch.float32, requires_grad=True)
        for i, p in enumerate(initial_params(cases))
    ]
    opt = SGDP(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(20):
        set_suite_grads(params, step, cases)
        opt.step()
    ref = reference_run("SGDP", cases, dict(lr=0.1, momentum=0.9, weight_decay=0.01), 20)
    for i, (p, r) in enumerate(zip(params, ref)):
        diff = float(np.max(np.abs(p.detach().double().numpy() - r)))
        assert diff <= (FLOAT64_ABS_TOL if i % 2 else 1e-4 * max(1.0, np.abs(r).max())), i


def test_parameters_without_grad_are_skipped_and_scalars_work() -> None:
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    s = torch.tensor(1.5, requires_grad=True)
    empty = torch.zeros(0, 3, requires_grad=True)
    opt = AdamP([a, b, s, empty], lr=0.1, weight_decay=0.1)
    a.grad, s.grad, empty.grad = torch.randn(3, 2), torch.tensor(0.5), torch.zeros(0, 3)
    before_b = b.detach().clone()
    opt.step()
    assert torch.equal(b, before_b) and b not in opt.state
    ref = adamp_core.AdamP([np.array(1.5)], lr=0.1, weight_decay=0.1)
    ref.step([np.array(0.5)])
    assert float(s) == pytest.approx(float(ref.params[0]), abs=1e-6)
