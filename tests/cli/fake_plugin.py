"""Fake adapters and trainers for the CLI tests (imported through entry points).

Each ``*_backends`` function is what an adapter's ``adamp_core.backends`` entry point
would be; ``never_projects`` is a deliberately broken AdamP/SGDP: the reference with
``delta=0``, so the scale-invariance test never passes and it behaves like AdamW/SGD.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from adamp_core.cli.trainer import HistoryRecorder
from adamp_core.testing import Backend, numpy_factory

F64 = ("float64",)


def never_projects(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
    return numpy_factory(optimizer, params, {**hparams, "delta": 0.0})


def raising_factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
    raise RuntimeError("factory exploded")


def needs_env_factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
    if os.environ.get("ADAMP_FAKE_ENV") != "on":
        raise RuntimeError("ADAMP_FAKE_ENV is not 'on' in this process")
    return numpy_factory(optimizer, params, hparams)


def good_backends() -> Backend:  # a single Backend (not a list) is accepted too
    return Backend("fake-good", numpy_factory, F64)


def broken_backends() -> list[Backend]:
    return [Backend("fake-broken", never_projects, F64)]


def raising_backends() -> list[Backend]:
    return [Backend("fake-raising", raising_factory, F64)]


def env_backends() -> list[Backend]:
    return [Backend("fake-env", needs_env_factory, F64, env={"ADAMP_FAKE_ENV": "on"})]


def opt_in_backends() -> list[Backend]:
    return [Backend("fake-slow-broken", never_projects, F64, opt_in=True)]


def not_a_backend() -> list[int]:
    return [42]


def announce_fails() -> list[Backend]:
    raise ValueError("cannot list backends")


def trainer(data: Any, optimizers: Any, epochs: int, seed: int, progress: Any) -> dict:
    """A demo trainer that trains nothing: weights 'grow' by a known rule per optimizer."""
    out = {}
    steps = epochs * data.steps_per_epoch()
    for spec in optimizers:
        rec = HistoryRecorder(spec, steps)
        growth = 0.0 if spec.name.endswith("P") else 0.01
        for step in range(steps + 1):
            rec.log_step(step, [1.0 + growth * step, 2.0])
        for epoch in range(epochs + 1):
            rec.log_epoch(epoch, 0.5, None if epoch == 0 else 1.0)
            progress(rec.progress_line("fake", epochs))
        out[spec.name] = rec.as_dict()
    return out


def failing_trainer(*args: Any) -> dict:
    raise RuntimeError("trainer exploded")
