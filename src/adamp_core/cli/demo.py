"""``python -m adamp_core demo``: the paper's effect, on a laptop CPU.

Two parts:

1. the 2-D toy (:mod:`adamp_core.cli.toy`, NumPy only);
2. a small training run: a conv net with batch normalization on scikit-learn's bundled
   digits (8x8 images, no download), SGD vs SGDP and AdamW vs AdamP, in every framework
   whose trainer is installed. Trainers announce themselves under the
   ``adamp_core.demos`` entry-point group; :mod:`adamp_core.cli.trainer` is their protocol.

The command line trains with each trainer in a child process of its own
(``run_demo(isolate=True)``, :func:`child_main`): this process imports no framework, and
frameworks that cannot share a process (TensorFlow and a CUDA build of torch) never meet.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, cast

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
from .report import write_report
from .results import DemoReport
from .toy import TOY_ITERATIONS, run_toys
from .trainer import (
    DEFAULT_EPOCHS,
    DEMO_OPTIMIZERS,
    QUICK_EPOCHS,
    QUICK_TOY_ITERATIONS,
    QUICK_TRAIN_SIZE,
    DemoData,
    Trainer,
)

__all__ = ["ENTRY_POINT_GROUP", "load_digits_data", "run_demo", "child_main"]

ENTRY_POINT_GROUP = "adamp_core.demos"


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
