"""``keras.distribution`` on the JAX backend: ``DataParallel`` and ``ModelParallel``
(conv and dense kernels sharded on their output axis) train to the single-device weights,
and the optimizer step neither gathers nor reshards a sharded variable.

The runs happen in one JAX process of their own with 4 virtual CPU devices
(``tests/helpers/keras_distribution.py``); these tests read what it wrote. It runs once,
from the JAX-backend pytest process (the Keras tests run once per backend).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.keras_utils import BACKEND

pytestmark = pytest.mark.skipif(
    BACKEND != "jax",
    reason="keras.distribution is JAX-only; runs once, in the KERAS_BACKEND=jax process",
)

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "keras_distribution.py"
TOLERANCE = 1e-5  # of the largest weight, float32 after 3 epochs (issue 11)
OPTIMIZERS = ("AdamP", "SGDP")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Any]:
    """Every run's final weights (``"AdamP/model/3"``) and the run's ``meta`` JSON."""
    out = tmp_path_factory.mktemp("keras-distribution") / "runs.npz"
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=400
        )
    except subprocess.TimeoutExpired as exc:  # a hang fails instead of stalling CI
        pytest.fail(f"{SCRIPT.name} did not finish in {exc.timeout} s")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with np.load(out) as data:
        arrays = {k: np.asarray(data[k]) for k in data.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def _weights(arrays: dict[str, np.ndarray], meta: Any, name: str, mode: str) -> list[np.ndarray]:
    count = len(meta["runs"][f"{name}/{mode}"]["weight_paths"])
    return [arrays[f"{name}/{mode}/{i}"] for i in range(count)]


def _relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest absolute difference over all weights, relative to ``b``'s largest weight."""
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b)) / max(
        float(np.abs(y).max()) for y in b
    )


@pytest.mark.parametrize("mode", ["data", "model"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_distributed_fit_equals_one_device(runs: Any, name: str, mode: str) -> None:
    arrays, meta = runs
    single = _weights(arrays, meta, name, "single")
    distributed = _weights(arrays, meta, name, mode)
    assert all(np.all(np.isfinite(w)) for w in distributed)
    # BatchNorm moving statistics (non-trainable) included
    assert len(single) == 14
    assert _relative_difference(distributed, single) <= TOLERANCE


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_projection_fired(runs: Any, name: str) -> None:
    """The same training with the projection disabled ends far outside the tolerance:
    the projection changed the trajectory, so it fired, and the comparison above is
    sensitive to it."""
    arrays, meta = runs
    single = _weights(arrays, meta, name, "single")
    unprojected = _weights(arrays, meta, name, "unprojected")
    assert _relative_difference(unprojected, single) > 100 * TOLERANCE
    axes = meta["runs"][f"{name}/model"]["channel_axes"]
    kernels = {path: a for path, a in axes.items() if path.endswith("/kernel")}
    assert len(kernels) == 4  # the candidates: output channel last
    assert all(a == ([3] if "/conv2d" in path else [1]) for path, a in kernels.items())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_model_parallel_keeps_every_layout(runs: Any, name: str) -> None:
    _, meta = runs
    run = meta["runs"][f"{name}/model"]
    sharded = [p for p, spec in zip(run["paths"], run["specs"]) if "model" in spec]
    assert len(sharded) == 4  # 2 conv + 2 dense kernels, split in 2 on their last axis
    assert all(spec[-1] == "model" for spec in run["specs"] if "model" in spec)
    assert run["specs"] == run["wanted_specs"]  # after 3 epochs of fit
    matched = 0
    for path, spec in zip(run["paths"], run["specs"]):
        # optimizer variables are named after their variable's path ("a/b" -> "a_b_...")
        key = path.replace("/", "_") + "_"
        states = [s for p, s in run["state_specs"].items() if key in p]
        assert all(s == spec for s in states), path
        matched += len(states)
    assert matched == 10 * (2 if name == "AdamP" else 1)  # moments / momentum buffers
    # the optimizer step compiled alone on the sharded variables
    assert not run["all_gather"] and not run["all_to_all"]
    assert run["all_reduce"]  # the max and sums over rows split across devices
    assert run["step_output_specs"] == run["trainable_specs"]


@pytest.mark.parametrize("step", ["Auto/AdamP", "Auto/SGDP", "Explicit/AdamP", "Explicit/SGDP"])
def test_sharded_step_gathers_nothing(runs: Any, step: str) -> None:
    """Variables split on any axis (conv input channels, depthwise multiplier, rows of a
    dense kernel...), on meshes with automatic axes (Keras') and explicit ones: the step
    keeps each sharding, has no all-gather or all-to-all, and equals the NumPy reference.
    """
    _, meta = runs
    run = meta["sharded_steps"][step]
    assert not run["all_gather"] and not run["all_to_all"]
    assert run["all_reduce"]
    assert len(run["variables"]) == 8
    for case, result in run["variables"].items():
        assert result["spec"] == result["wanted_spec"], case
        assert result["rel_diff"] <= 1e-6, case
