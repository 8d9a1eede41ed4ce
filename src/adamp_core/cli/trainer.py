"""The demo's trainer protocol: what an ``adamp_core.demos`` entry point receives and returns.

``train(data, optimizers, epochs, seed, progress) -> dict[str, dict]``:

* ``data``: a :class:`DemoData` (images in NCHW layout, float32 in ``[0, 1]``);
* ``optimizers``: :class:`OptimizerSpec` list, hyperparameters in the core's names; the
  learning rate decays to 0 over the run by :func:`cosine_lr_factor`, per step;
* ``epochs``: passes over the training set; batches come from
  :meth:`DemoData.batches` so every trainer sees the same order;
* ``seed``: seeds the model's initial weights (the same start for every optimizer);
* ``progress``: called with one line of text per epoch.

It returns, per optimizer name, the dict of a :class:`HistoryRecorder`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "QUICK_EPOCHS",
    "DemoData",
    "OptimizerSpec",
    "DEMO_OPTIMIZERS",
    "Trainer",
    "HistoryRecorder",
    "cosine_lr_factor",
    "effective_step_size",
]

BATCH_SIZE = 32
DEFAULT_EPOCHS = 10
#: ``--quick``: epochs, training images, toy iterations.
QUICK_EPOCHS, QUICK_TRAIN_SIZE, QUICK_TOY_ITERATIONS = 1, 256, 100


@dataclass(frozen=True)
class DemoData:
    """Train and test images (``(N, 1, 8, 8)`` float32 in ``[0, 1]``) and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    def batches(self, epoch: int, seed: int, batch_size: int = BATCH_SIZE) -> Iterator[np.ndarray]:
        """Index arrays of one epoch's mini-batches (a seeded shuffle, last batch short)."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.x_train))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def steps_per_epoch(self, batch_size: int = BATCH_SIZE) -> int:
        return -(-len(self.x_train) // batch_size)


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the comparison.

    ``name``: ``"SGD"``, ``"SGDP"``, ``"AdamW"`` or ``"AdamP"``; ``family``: ``"sgd"`` or
    ``"adam"`` (decides the effective step size); ``hparams``: the core's argument names
    (lr, momentum, nesterov, betas, eps, weight_decay); a trainer translates them.
    ``baseline``: the name of the optimizer this one is compared with (``None`` for a
    baseline).
    """

    name: str
    family: str
    hparams: Mapping[str, Any]
    baseline: str | None = None


#: The comparison: weight decay off for the SGD pair (torch's SGD would apply it as L2,
#: Keras' decoupled), and the decoupled 1e-2 of the authors' README example for the Adam
#: pair.
DEMO_OPTIMIZERS: tuple[OptimizerSpec, ...] = (
    OptimizerSpec("SGD", "sgd", {"lr": 0.1, "momentum": 0.9}),
    OptimizerSpec("SGDP", "sgd", {"lr": 0.1, "momentum": 0.9}, baseline="SGD"),
    OptimizerSpec("AdamW", "adam", {"lr": 3e-3, "eps": 1e-8, "weight_decay": 1e-2}),
    OptimizerSpec(
        "AdamP", "adam", {"lr": 3e-3, "eps": 1e-8, "weight_decay": 1e-2}, baseline="AdamW"
    ),
)


class Trainer(Protocol):
    """What an ``adamp_core.demos`` entry point is; see the module docstring."""

    def __call__(
        self,
        data: DemoData,
        optimizers: Sequence[OptimizerSpec],
        epochs: int,
        seed: int,
        progress: Callable[[str], None],
    ) -> dict[str, dict[str, Any]]: ...


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """The learning-rate multiplier of step ``step`` (counted from 0) of ``total_steps``:
    ``0.5 (1 + cos(pi step / total_steps))``, as ``keras.optimizers.schedules.CosineDecay``
    and ``torch.optim.lr_scheduler.CosineAnnealingLR`` (to 0). Every trainer uses it."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def effective_step_size(family: str, lr: float, norms: Sequence[float]) -> float:
    """The paper's effective step size, averaged over the scale-invariant tensors.

    For a scale-invariant weight ``w`` the update of its direction ``w/|w|`` scales like
    ``lr/|w|^2`` under SGD (the gradient shrinks as ``1/|w|``) and like ``lr/|w|`` under
    Adam (its normalisation cancels the gradient's scale).
    """
    power = 2.0 if family == "sgd" else 1.0
    return float(np.mean([lr / max(n, 1e-12) ** power for n in norms]))


@dataclass
class HistoryRecorder:
    """Builds a trainer's per-optimizer history; trainers call :meth:`log_step` after every
    step and :meth:`log_epoch` after every epoch (and once before training, epoch 0)."""

    spec: OptimizerSpec
    #: Steps of the whole run: the learning rate follows :func:`cosine_lr_factor`.
    total_steps: int
    step: list[int] = field(default_factory=list)
    weight_norm: list[float] = field(default_factory=list)
    effective_step_size: list[float] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def log_step(self, step: int, norms: Sequence[float]) -> None:
        """``norms``: the norm of each scale-invariant tensor after ``step`` steps. The
        effective step size uses the learning rate of the step just taken (of the first
        step for ``step = 0``)."""
        lr = float(self.spec.hparams["lr"]) * cosine_lr_factor(max(step - 1, 0), self.total_steps)
        self.step.append(int(step))
        self.weight_norm.append(float(np.sqrt(np.sum(np.square(norms)))))
        self.effective_step_size.append(effective_step_size(self.spec.family, lr, norms))

    def log_epoch(self, epoch: int, test_accuracy: float, train_loss: float | None) -> None:
        """Test accuracy (fraction) and mean training loss (``None`` for epoch 0)."""
        self.epoch.append(int(epoch))
        self.test_accuracy.append(float(test_accuracy))
        self.train_loss.append(None if train_loss is None else float(train_loss))

    def progress_line(self, framework: str, epochs: int) -> str:
        loss = self.train_loss[-1]
        return (
            f"[{framework}] {self.spec.name:5s} epoch {self.epoch[-1]}/{epochs}: "
            f"loss {loss if loss is None else f'{loss:.3f}'}, "
            f"test acc {100 * self.test_accuracy[-1]:.1f}%, "
            f"|w| {self.weight_norm[-1]:.2f} ({time.perf_counter() - self.started:.1f}s)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.spec.name,
            "family": self.spec.family,
            "hparams": dict(self.spec.hparams),
            "step": self.step,
            "weight_norm": self.weight_norm,
            "effective_step_size": self.effective_step_size,
            "epoch": self.epoch,
            "test_accuracy": self.test_accuracy,
            "train_loss": self.train_loss,
            "seconds": time.perf_counter() - self.started,
        }
