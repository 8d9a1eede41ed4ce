"""Every PyTorch code path against the NumPy reference and the authors' adamp 0.3.0.

Each eager path runs on the three batched CPU paths: the C++ kernel (the CPU default), the
composite path with the projection decisions read on the host (where the kernel is off or
does not take a tensor), and decisions kept on the device (what CUDA and torch.compile do),
forced here on CPU.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from adamp_core.testing import (
    CASES,
    CONFIGS,
    FLOAT32_REL_TOL,
    FLOAT64_ABS_TOL,
    run_conformance,
    summarize,
)
from adamp_torch.conformance import backends, make_factory
from helpers.oracles import AuthorsUnderTest, authors_configs
from helpers.torch_utils import CPU_PATHS, paired_max_diff, use_cpu_path

EAGER = {b.name: b for b in backends() if b.name != "torch-compiled"}


def _assert_passed(results: list) -> None:
    errors = {r.error for r in results if r.error}
    assert not errors
    for row in summarize(results):
        if row.dtype == "float64":
            assert row.max_abs <= FLOAT64_ABS_TOL, row
        else:
            assert row.max_rel <= FLOAT32_REL_TOL, row
    assert {r.branch for r in results} == {"channel", "layer", "none"}


@pytest.fixture(params=CPU_PATHS)
def decisions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on each batched CPU path: the C++ kernel (the default), the composite
    path with decisions read on the host, decisions kept on the device."""
    use_cpu_path(monkeypatch, request.param)
    return str(request.param)


def test_backends_cover_every_path() -> None:
    names = [b.name for b in backends()]
    assert names == ["torch", "torch-single", "torch-foreach", "torch-compiled"]


@pytest.mark.parametrize("name", sorted(EAGER))
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_eager_paths_match_reference(name: str, optimizer: str, decisions: str) -> None:
    backend = EAGER[name]
    results = run_conformance(backend.factory, backend=name, optimizers=[optimizer], steps=25)
    assert len(results) == len(CASES) * len(CONFIGS[optimizer]) * 2
    _assert_passed(results)


@pytest.mark.parametrize("name", sorted(EAGER))
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_eager_paths_match_authors(name: str, optimizer: str, dtype: str, decisions: str) -> None:
    pytest.importorskip("adamp")
    for config, hparams in authors_configs()[optimizer].items():
        worst = paired_max_diff(EAGER[name].factory, AuthorsUnderTest, optimizer, hparams, dtype)
        tol = FLOAT64_ABS_TOL if dtype == "float64" else FLOAT32_REL_TOL * 10
        assert worst <= tol, (config, worst)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "config"), [("AdamP", "nesterov-weight-decay"), ("SGDP", "momentum-weight-decay")]
)
def test_compiled_path_matches_reference(optimizer: str, config: str) -> None:
    """torch.compile(step) with a tensor lr (inductor, CPU): one config each, float64."""
    results = run_conformance(
        make_factory(compiled=True),
        backend="torch-compiled",
        optimizers=[optimizer],
        dtypes=["float64"],
        configs={optimizer: {config: CONFIGS[optimizer][config]}},
        steps=20,
    )
    _assert_passed(results)


def test_importing_the_backends_module_does_not_import_torch() -> None:
    code = (
        "import sys, adamp_torch.conformance as c; c.backends(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
