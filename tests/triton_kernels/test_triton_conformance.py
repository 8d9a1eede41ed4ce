"""The kernels against the NumPy reference on the conformance suite's cases, and the
``torch-triton`` backend of ``python -m adamp_core check``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton.language")

from triton_helpers import ADAMP_DEFAULTS, Kernels, grads_for, start

from adamp_core.testing import (
    CASES,
    CONFIGS,
    FLOAT32_REL_TOL,
    FLOAT64_ABS_TOL,
    run_conformance,
    summarize,
)
from adamp_torch import conformance

#: Steps per run: the interpreter costs ~0.5 s a step; the nox session also runs the
#: check command, 20 steps per run.
STEPS = 5


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_conformance(optimizer: str, dtype: str) -> None:
    results = run_conformance(
        conformance.make_triton_factory("cpu"),
        backend="torch-triton",
        optimizers=[optimizer],
        dtypes=[dtype],
        steps=STEPS,
    )
    assert len(results) == len(CASES) * len(CONFIGS[optimizer])
    assert not {r.error for r in results if r.error}
    for row in summarize(results):
        if dtype == "float64":
            assert row.max_abs <= FLOAT64_ABS_TOL, row
        else:
            assert row.max_rel <= FLOAT32_REL_TOL, row
    assert {r.branch for r in results} == {"channel", "layer", "none"}


def test_branches_match_the_cases() -> None:
    """The decide pass takes each case's branch, every step."""
    import torch

    params = start(CASES)
    kernels = Kernels("AdamP", [torch.tensor(p) for p in params], dict(ADAMP_DEFAULTS))
    for step in range(3):
        grads = grads_for(CASES, [p.numpy() for p in kernels.params], step, "float64")
        kernels.step([torch.tensor(g) for g in grads])
        assert kernels.branches == [c.branch for c in CASES]


def test_backend_is_announced_opt_in_under_the_interpreter() -> None:
    (backend,) = conformance.triton_backends()
    assert backend.name == "torch-triton"
    assert backend.opt_in
    assert backend.dtypes == ("float32", "float64")


def test_backend_not_checked_without_interpreter_or_cuda() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-m", "adamp_core", "check", "--backend", "torch-triton"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert "not checked" in text, text
    assert "torch-triton: entry point 'torch-triton': TritonUnavailable" in text, text
    assert "torch-triton  AdamP" not in text, text  # no row was measured
