"""The NumPy reference against the authors' package adamp 0.3.0, 20 steps, every branch."""

from __future__ import annotations

import pytest

from adamp_core.testing import CASES, FLOAT32_REL_TOL, FLOAT64_ABS_TOL, run_conformance, summarize
from helpers.oracles import AuthorsUnderTest, authors_configs

pytest.importorskip("adamp")


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reference_matches_authors(optimizer: str, dtype: str) -> None:
    configs = authors_configs()
    results = run_conformance(
        AuthorsUnderTest,
        backend="adamp-0.3.0",
        optimizers=[optimizer],
        dtypes=[dtype],
        configs=configs,
        steps=25,
    )
    assert len(results) == len(CASES) * len(configs[optimizer])
    errors = {r.error for r in results if r.error}
    assert not errors
    for row in summarize(results):
        if dtype == "float64":
            assert row.max_abs <= FLOAT64_ABS_TOL, row
        else:
            assert row.max_rel <= FLOAT32_REL_TOL, row
    # every branch was exercised (the suite itself asserts each step took its branch)
    assert {r.branch for r in results} == {"channel", "layer", "none"}
