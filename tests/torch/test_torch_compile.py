"""No host syncs: step() traces into one graph (no breaks) and schedules do not recompile."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from adamp_torch import SGDP, AdamP

OPTIMIZERS: list[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = [
    (AdamP, dict(weight_decay=0.1)),
    (AdamP, dict(weight_decay=0.1, nesterov=True)),
    (SGDP, dict(momentum=0.9, weight_decay=0.1)),
    (SGDP, dict(momentum=0.9, weight_decay=0.1, variant="paper")),
]
IDS = ["adamp", "adamp-nesterov", "sgdp", "sgdp-paper"]


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (6, 5)]
    params = [torch.randn(s, generator=g).requires_grad_(True) for s in shapes]
    params[0].data = params[0].data.contiguous(memory_format=torch.channels_last)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return params


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Any:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("cls", "hparams"), OPTIMIZERS, ids=IDS)
def test_step_has_no_graph_breaks_with_tensor_lr(
    cls: type[torch.optim.Optimizer], hparams: dict[str, Any]
) -> None:
    params = _params()
    opt = cls(params, lr=torch.tensor(0.01), **hparams)
    opt.step()  # state exists: the traced step is the steady-state one
    explained = torch._dynamo.explain(opt.step)()
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def _reference(
    params: list[torch.Tensor], cls: type[torch.optim.Optimizer], hparams: dict[str, Any]
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    reference = [p.detach().clone().requires_grad_(True) for p in params]
    for r, p in zip(reference, params):
        r.grad = p.grad.clone()
    return reference, cls(reference, lr=0.05, **hparams)


@pytest.mark.parametrize(("cls", "hparams"), OPTIMIZERS, ids=IDS)
def test_fullgraph_compile_does_not_recompile_when_lr_changes(
    cls: type[torch.optim.Optimizer], hparams: dict[str, Any]
) -> None:
    params = _params()
    reference, ref_opt = _reference(params, cls, hparams)
    opt = cls(params, lr=torch.tensor(0.05), **hparams)
    counter = CompileCounter()
    step = torch.compile(opt.step, backend=counter, fullgraph=True)
    frames = []
    for i in range(6):
        step()
        ref_opt.step()
        opt.param_groups[0]["lr"].fill_(0.05 * 0.7 ** (i + 1))  # what schedulers do
        ref_opt.param_groups[0]["lr"] = 0.05 * 0.7 ** (i + 1)
        frames.append(counter.frame_count)
    # The first call creates the state; one graph after that, reused on every step.
    assert frames[-1] == frames[1] <= 2, frames
    for a, b in zip(params, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("cls", "hparams"), OPTIMIZERS, ids=IDS)
def test_lr_scheduler_does_not_recompile(
    cls: type[torch.optim.Optimizer], hparams: dict[str, Any]
) -> None:
    """torch's recipe: compile a function that calls opt.step(), scheduler outside."""
    params = _params()
    reference, ref_opt = _reference(params, cls, hparams)
    opt = cls(params, lr=torch.tensor(0.05), **hparams)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=1, gamma=0.7)
    counter = CompileCounter()

    @torch.compile(backend=counter)
    def step() -> None:
        opt.step()

    frames = []
    for _ in range(6):
        step()
        ref_opt.step()
        sched.step()
        ref_sched.step()
        frames.append(counter.frame_count)
    assert frames[-1] == frames[1] <= 2, frames
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.05 * 0.7**6)
    for a, b in zip(params, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
