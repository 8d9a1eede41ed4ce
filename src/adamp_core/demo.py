"""``python -m adamp_core demo``: the paper's effect, on a laptop CPU.

Two parts:

1. the 2-D toy (:mod:`adamp_core.toy`, NumPy only);
2. a small training run: a conv net with batch normalization on scikit-learn's bundled
   digits (8x8 images, no download), SGD vs SGDP and AdamW vs AdamP, in every framework
   whose trainer is installed. Trainers announce themselves under the
   ``adamp_core.demos`` entry-point group; each is a :class:`Trainer`.

The trainer protocol
--------------------
``train(data, optimizers, epochs, seed, progress) -> dict[str, dict]``:

* ``data``: a :class:`DemoData` (images in NCHW layout, float32 in ``[0, 1]``);
* ``optimizers``: :class:`OptimizerSpec` list, hyperparameters in the core's names; the
  learning rate decays to 0 over the run by :func:`cosine_lr_factor`, per step;
* ``epochs``: passes over the training set; batches come from
  :meth:`DemoData.batches` so every trainer sees the same order;
* ``seed``: seeds the model's initial weights (the same start for every optimizer);
* ``progress``: called with one line of text per epoch.

It returns, per optimizer name, the dict of a :class:`HistoryRecorder`: the test accuracy
and training loss per epoch, and the norm and effective step size of the scale-invariant
weights (convolution kernels followed by batch normalization) per step.

The command line trains with each trainer in a child process of its own
(``run_demo(isolate=True)``): this process imports no framework, and frameworks that
cannot share a process (TensorFlow and a CUDA build of torch) never meet. The child,
``python -m adamp_core demo --child`` (see :func:`child_main`), reads the data from a
file, streams its progress lines and writes the histories as JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, cast

import numpy as np

from .plugins import (
    LoadError,
    child_progress,
    describe,
    entry_point_arg,
    is_missing_optional,
    load_entry_points,
    parse_entry_point_arg,
    run_child,
)
from .toy import TOY_ITERATIONS, ToyRun, run_toys

__all__ = [
    "ENTRY_POINT_GROUP",
    "BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DemoData",
    "OptimizerSpec",
    "DEMO_OPTIMIZERS",
    "Trainer",
    "HistoryRecorder",
    "cosine_lr_factor",
    "effective_step_size",
    "load_digits_data",
    "DemoReport",
    "run_demo",
    "child_main",
]

ENTRY_POINT_GROUP = "adamp_core.demos"
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


def load_digits_data(seed: int = 0, train_size: int | None = None) -> DemoData:
    """scikit-learn's bundled digits, a stratified 75/25 split (raises ImportError without
    scikit-learn). ``train_size`` keeps only the first images of the shuffled training set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    if train_size is not None:
        x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
    return DemoData(x_tr, y_tr, x_te, y_te)


@dataclass
class DemoReport:
    """What :func:`run_demo` did: the toy, each framework's histories, what it skipped."""

    out: str
    toy: list[ToyRun]
    trainings: dict[str, dict[str, dict[str, Any]]]
    skipped: list[str]
    errors: list[LoadError]
    files: list[str]
    summary_text: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


#: What training with one trainer gave: its histories (``None`` if it did not train),
#: skip lines, errors.
_Trained = tuple[dict[str, dict[str, Any]] | None, list[str], list[LoadError]]


def _train_one(
    ep: metadata.EntryPoint,
    data: DemoData,
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
) -> _Trained:
    """Load the trainer ``ep`` in this process and train with it."""
    loaded = load_entry_points(ENTRY_POINT_GROUP, [ep])
    skipped = [f"training with {e.name}: not installed ({e.message})" for e in loaded.skipped]
    if ep.name not in loaded.objects:
        return None, skipped, loaded.errors
    train = loaded.objects[ep.name]
    progress(
        f"training with {ep.name}: {len(data.x_train)} train / {len(data.x_test)} test "
        f"images, {epochs} epoch(s), {', '.join(s.name for s in DEMO_OPTIMIZERS)}"
    )
    try:
        return cast(Trainer, train)(data, DEMO_OPTIMIZERS, epochs, seed, progress), [], []
    except Exception as exc:
        if is_missing_optional(exc, getattr(train, "__module__", None) or ep.name):
            return None, [f"training with {ep.name}: not installed ({describe(exc)})"], []
        return None, [], [LoadError(ep.name, f"trainer failed: {describe(exc)}")]


def _train_in_child(
    ep: metadata.EntryPoint,
    data_path: str,
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
) -> _Trained:
    """Train with ``ep`` in ``python -m adamp_core demo --child`` (see :func:`child_main`):
    its progress lines go to ``progress``, its other output to this process's stderr."""
    out = os.path.join(os.path.dirname(data_path), f"{ep.name}.json")
    args = ["demo", "--child", "--trainer", entry_point_arg(ep), "--data", data_path]
    args += ["--json", out, "--epochs", str(epochs), "--seed", str(seed)]
    ended = run_child(args, progress=progress, echo=sys.stderr)
    if not os.path.exists(out):
        return None, [], [LoadError(ep.name, ended.failure("trainer child process"))]
    with open(out, encoding="utf-8") as f:
        got = json.load(f)
    return got["trainings"], got["skipped"], [LoadError(**e) for e in got["errors"]]


def child_main(trainer: str, data_path: str, path: str, epochs: int, seed: int) -> int:
    """``demo --child``: train with ``trainer`` (``NAME=VALUE``, or an installed trainer's
    ``NAME``) on the :class:`DemoData` saved at ``data_path`` (``.npz``) and write the
    histories, skips and errors as JSON to ``path``. Returns the exit code (0)."""
    if "=" in trainer:
        ep = parse_entry_point_arg(trainer, ENTRY_POINT_GROUP)
    else:
        (ep,) = [e for e in metadata.entry_points(group=ENTRY_POINT_GROUP) if e.name == trainer]
    with np.load(data_path) as arrays:
        fields = {k: arrays[k] for k in arrays.files}
    data = DemoData(**{**fields, "num_classes": int(fields["num_classes"])})
    histories, skipped, errors = _train_one(ep, data, epochs, seed, child_progress)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(
            {"trainings": histories, "skipped": skipped, "errors": [vars(e) for e in errors]}, f
        )
    return 0


def _train_all(
    frameworks: Sequence[str],
    quick: bool,
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
    entry_points: Sequence[metadata.EntryPoint] | None,
    isolate: bool,
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[str], list[LoadError]]:
    trainings: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: list[str] = []
    errors: list[LoadError] = []
    try:
        data = load_digits_data(seed, QUICK_TRAIN_SIZE if quick else None)
    except ImportError as exc:
        return (
            {},
            [
                f"training: scikit-learn is not installed ({exc}); "
                "pip install 'adamp-optimizers[demo]'"
            ],
            [],
        )
    available = list(
        metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
    )
    known = sorted({ep.name for ep in available})
    wanted = set(frameworks) if frameworks else set(known)
    errors += [
        LoadError(n, f"no demo trainer named {n!r}; found: {', '.join(known)}")
        for n in sorted(wanted - set(known))
    ]
    # load only the trainers asked for: each imports its framework
    chosen = sorted((ep for ep in available if ep.name in wanted), key=lambda e: e.name)
    with tempfile.TemporaryDirectory(prefix="adamp-demo-") as tmp:
        data_path = os.path.join(tmp, "data.npz")
        if isolate:
            np.savez(data_path, **vars(data))
        for ep in chosen:
            if isolate:
                histories, ep_skipped, ep_errors = _train_in_child(
                    ep, data_path, epochs, seed, progress
                )
            else:
                histories, ep_skipped, ep_errors = _train_one(ep, data, epochs, seed, progress)
            if histories is not None:
                trainings[ep.name] = histories
            skipped += ep_skipped
            errors += ep_errors
    return trainings, skipped, errors


def run_demo(
    out: str = "adamp-demo",
    *,
    quick: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    frameworks: Sequence[str] = (),
    train: bool = True,
    progress: Callable[[str], None] = print,
    entry_points: Sequence[metadata.EntryPoint] | None = None,
    isolate: bool = False,
) -> DemoReport:
    """Run the toy and the training comparison; write the report folder ``out``.

    Args:
        out: report folder, created if needed. Default ``"adamp-demo"``.
        quick: smoke run (1 epoch on 256 images, a 100-iteration toy). Default ``False``.
        epochs: training epochs; default :data:`DEFAULT_EPOCHS` (1 with ``quick``).
        seed: seed of the data split, the shuffles and the initial weights. Default 0.
        frameworks: demo entry-point names to train with (default: all installed).
        train: ``False`` runs the toy only.
        progress: receives progress lines.
        entry_points: the trainers to use instead of the installed ones (for tests).
        isolate: train with each trainer in a child process of its own, so that this
            process imports no framework and two frameworks never share a process (the
            command line does). Default ``False``: train here.
    """
    from .report import write_report

    epochs = epochs if epochs is not None else (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    progress("2-D toy: GD, momentum and SGDP on |w/|w| - u|^2 ...")
    toy = run_toys(iterations=QUICK_TOY_ITERATIONS if quick else TOY_ITERATIONS)
    progress("2-D toy: done (table in the summary)")
    trainings: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: list[str] = []
    errors: list[LoadError] = []
    if train:
        trainings, skipped, errors = _train_all(
            frameworks, quick, epochs, seed, progress, entry_points, isolate
        )
    else:
        skipped.append("training: --no-train")
    report = DemoReport(os.fspath(out), toy, trainings, skipped, errors, [])
    write_report(report, epochs=epochs, seed=seed, quick=quick)
    return report
