"""The PyTorch trainer of ``python -m adamp_core demo`` (entry point ``adamp_core.demos``).

A small conv net with batch normalization on the digits, trained once per optimizer from
the same initial weights: ``torch.optim.SGD`` vs :class:`adamp_torch.SGDP` and
``torch.optim.AdamW`` vs :class:`adamp_torch.AdamP`. See :mod:`adamp_core.cli.trainer` for the
protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from adamp_core.cli.trainer import DemoData, HistoryRecorder, OptimizerSpec, cosine_lr_factor

from . import SGDP, AdamP

__all__ = ["make_model", "make_optimizer", "train"]


def make_model(num_classes: int = 10) -> nn.Sequential:
    """conv(1->16)-BN-ReLU-conv(16->32)-BN-ReLU-maxpool-global average-linear.

    The two convolution kernels are scale-invariant (no bias, batch norm follows).
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def make_optimizer(spec: OptimizerSpec, params: Any) -> torch.optim.Optimizer:
    """The torch optimizer named by ``spec`` (core names equal torch's here)."""
    classes: dict[str, Any] = {
        "SGD": torch.optim.SGD,
        "SGDP": SGDP,
        "AdamW": torch.optim.AdamW,
        "AdamP": AdamP,
    }
    return classes[spec.name](params, **spec.hparams)


def _scale_invariant(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def _norms(model: nn.Module) -> list[float]:
    return [float(torch.linalg.vector_norm(w.detach())) for w in _scale_invariant(model)]


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = (model(x).argmax(dim=1) == y).sum().item()
    model.train()
    return float(correct) / len(y)


def train(
    data: DemoData,
    optimizers: Sequence[OptimizerSpec],
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Train one copy of the same initial model per optimizer; histories by name.

    Runs on one CPU thread (the model is tiny: more threads only add overhead).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(data, optimizers, epochs, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    data: DemoData,
    optimizers: Sequence[OptimizerSpec],
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    torch.manual_seed(seed)
    initial = make_model(data.num_classes)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    loss_fn = nn.CrossEntropyLoss()
    total = epochs * data.steps_per_epoch()
    histories = {}
    for spec in optimizers:
        model = copy.deepcopy(initial)
        opt = make_optimizer(spec, model.parameters())
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr_factor(s, total))
        rec = HistoryRecorder(spec, total)
        rec.log_step(0, _norms(model))
        rec.log_epoch(0, _accuracy(model, x_test, y_test), None)
        step = 0
        for epoch in range(1, epochs + 1):
            losses = []
            for idx in data.batches(epoch, seed):
                index = torch.from_numpy(idx)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x_train[index]), y_train[index])
                loss.backward()
                opt.step()
                schedule.step()
                step += 1
                losses.append(loss.item())
                rec.log_step(step, _norms(model))
            rec.log_epoch(epoch, _accuracy(model, x_test, y_test), float(np.mean(losses)))
            progress(rec.progress_line("torch", epochs))
        histories[spec.name] = rec.as_dict()
    return histories
