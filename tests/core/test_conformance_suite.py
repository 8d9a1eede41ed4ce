"""The conformance suite itself: it passes the reference and catches broken optimizers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from adamp_core.functional import cosine_rows
from adamp_core.testing import (
    CASES,
    CONFIGS,
    case_gradient,
    format_table,
    initial_params,
    numpy_factory,
    run_conformance,
    summarize,
)


def test_reference_passes_against_itself_exactly() -> None:
    results = run_conformance(numpy_factory, backend="numpy", steps=5)
    n_configs = sum(len(c) for c in CONFIGS.values())
    assert len(results) == len(CASES) * n_configs * 2
    assert all(r.passed and r.max_abs == 0.0 and r.error is None for r in results)


def _never_projects(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]):
    # delta = 0: no cosine is ever below 0, so this is plain Adam(W)/SGD with full decay
    return numpy_factory(optimizer, params, {**hparams, "delta": 0.0})


def test_suite_fails_an_optimizer_that_never_projects() -> None:
    rows = summarize(run_conformance(_never_projects, backend="broken", steps=10))
    by_branch = {(r.optimizer, r.dtype, r.branch): r for r in rows}
    for optimizer in ("AdamP", "SGDP"):
        for dtype in ("float32", "float64"):
            assert not by_branch[optimizer, dtype, "channel"].passed
            assert not by_branch[optimizer, dtype, "layer"].passed
            assert by_branch[optimizer, dtype, "none"].passed
    assert "FAIL" in format_table(rows)


def test_suite_fails_float64_drift_beyond_1e_12() -> None:
    class Drifting:
        def __init__(self, optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]):
            self.inner = numpy_factory(optimizer, params, hparams)

        def step(self, grads):
            self.inner.step(grads)
            for p in self.inner.get_params():
                p *= 1 + 1e-11

        def get_params(self):
            return self.inner.get_params()

    results = run_conformance(Drifting, optimizers=["SGDP"], dtypes=["float64"], steps=3)
    assert not any(r.passed for r in results if r.case != "vector-zero-init")


def test_an_exception_is_an_error_row_not_a_crash() -> None:
    def explode(optimizer, params, hparams):
        raise ImportError("no such framework")

    rows = summarize(
        run_conformance(explode, backend="ghost", optimizers=["AdamP"], dtypes=["float32"])
    )
    assert rows and all(
        not r.passed and r.errors == ["ImportError: no such framework"] for r in rows
    )
    assert "ERROR" in format_table(rows)


@pytest.mark.parametrize(
    "case", [c for c in CASES if len(c.shape) > 1 and c.init == "normal"], ids=lambda c: c.name
)
def test_gradient_builders_have_the_cosines_they_promise(case) -> None:
    (p,) = initial_params([case])
    g = case_gradient(case, p, step=3)
    channel = cosine_rows(g.reshape(p.shape[0], -1), p.reshape(p.shape[0], -1), 1e-8)
    layer = cosine_rows(g.reshape(1, -1), p.reshape(1, -1), 1e-8)
    if case.grad in ("orthogonal", "zero"):
        assert channel.max() < 1e-12
    elif case.grad == "layer":
        assert channel.max() > 0.3 and layer.max() < 1e-12
    else:
        assert channel.min() > 0.5 and layer.max() > 0.5


def test_case_gradients_are_deterministic_per_step() -> None:
    case = CASES[0]
    (p,) = initial_params([case])
    np.testing.assert_array_equal(case_gradient(case, p, 4), case_gradient(case, p, 4))
    assert not np.array_equal(case_gradient(case, p, 4), case_gradient(case, p, 5))
