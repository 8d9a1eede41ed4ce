"""adamp_jax in the main job: the ``optax`` conformance backend, the Flax demo trainer
(and its skip without flax), and a smoke run of the optax step benchmark."""

from __future__ import annotations

import importlib
import math
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from adamp_core.cli.demo import ENTRY_POINT_GROUP as DEMOS
from adamp_core.cli.demo import load_digits_data, run_demo
from adamp_core.cli.trainer import DEMO_OPTIMIZERS
from adamp_core.testing import CASES, CONFIGS, run_conformance
from adamp_jax.conformance import backends, from_flax_layout, optax_factory, to_flax_layout


def test_backend_is_announced_with_x64_for_its_child_process() -> None:
    (backend,) = backends()
    assert backend.name == "optax"
    assert backend.dtypes == ("float32", "float64")
    assert dict(backend.env) == {"JAX_ENABLE_X64": "1"}
    names = {ep.name: ep.value for ep in metadata.entry_points(group="adamp_core.backends")}
    assert names.get("optax") == "adamp_jax.conformance:backends"


def test_layout_round_trip() -> None:
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert to_flax_layout(x).shape == (3, 4, 5, 2)
    np.testing.assert_array_equal(from_flax_layout(to_flax_layout(x)), x)
    np.testing.assert_array_equal(to_flax_layout(np.arange(3)), np.arange(3))


@pytest.mark.usefixtures("x64")
def test_conformance_suite_passes_in_both_dtypes() -> None:
    """The suite's own cases (every branch) through the backend's factory, one config per
    optimizer with weight decay, 3 steps (``python -m adamp_core check`` runs them all)."""
    configs = {
        "AdamP": {"nesterov-weight-decay": CONFIGS["AdamP"]["nesterov-weight-decay"]},
        "SGDP": {"momentum-weight-decay": CONFIGS["SGDP"]["momentum-weight-decay"]},
    }
    cases = [
        c
        for c in CASES
        if c.name in ("conv-channel", "linear-layer", "conv-none", "linear-zero-grad", "vector")
    ]
    results = run_conformance(optax_factory, backend="optax", configs=configs, cases=cases, steps=3)
    assert {r.branch for r in results} == {"channel", "layer", "none"}
    failed = [(r.optimizer, r.dtype, r.case, r.max_abs, r.error) for r in results if not r.passed]
    assert not failed


def test_float64_without_x64_is_an_error_not_a_silent_float32_run() -> None:
    import jax

    assert not jax.config.read("jax_enable_x64")
    with pytest.raises(RuntimeError, match="JAX_ENABLE_X64=1"):
        optax_factory("AdamP", [np.ones((2, 3))], {"lr": 0.1})


def test_flax_demo_trains() -> None:
    """Every optimizer of the comparison builds; AdamP trains an epoch of one batch (each
    optimizer costs a train-step compilation; ``python -m adamp_core demo`` runs them all)."""
    pytest.importorskip("flax")
    pytest.importorskip("sklearn")
    from adamp_jax import demo

    assert {ep.name: ep.value for ep in metadata.entry_points(group=DEMOS)}.get("flax") == (
        "adamp_jax.demo:train"
    )
    for spec in DEMO_OPTIMIZERS:  # every optimizer of the comparison builds
        demo.make_optimizer(spec, total_steps=10)
    data = load_digits_data(train_size=32)  # one batch: one train-step compilation
    specs = [s for s in DEMO_OPTIMIZERS if s.name == "AdamP"]
    lines: list[str] = []
    histories = demo.train(data, specs, epochs=1, seed=0, progress=lines.append)
    assert set(histories) == {"AdamP"}
    for h in histories.values():
        assert h["step"] == list(range(data.steps_per_epoch() + 1))
        assert all(math.isfinite(x) for x in h["weight_norm"] + h["train_loss"][1:])
        assert 0.0 <= h["test_accuracy"][-1] <= 1.0
    assert len(lines) == 1 and lines[0].startswith("[flax] AdamP")


def test_demo_skips_the_flax_trainer_with_a_reason_when_flax_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.setitem(sys.modules, "flax", None)  # "import flax" now fails
    monkeypatch.delitem(sys.modules, "adamp_jax.demo", raising=False)
    ep = metadata.EntryPoint(name="flax", value="adamp_jax.demo:train", group=DEMOS)
    report = run_demo(str(tmp_path), quick=True, entry_points=[ep], progress=lambda _: None)
    assert not report.errors and "flax" not in report.trainings
    (line,) = [s for s in report.skipped if "flax" in s]
    assert "not installed" in line and "pip install flax" in line
    monkeypatch.undo()
    importlib.import_module("adamp_jax.demo")


def test_jax_benchmark_smoke() -> None:
    """The harness runs end to end on the tiny set; orthogonal gradients fire the test on
    every kernel. Nothing is timed or compared."""
    from benchmarks import jax_bench

    params = jax_bench.make_params("tiny")
    assert params["conv.weight"].shape == (3, 3, 3, 16)  # (kh, kw, in, out)
    grads = jax_bench.make_grads(params, "orthogonal")
    assert jax_bench.census(params, grads).startswith("projection fires on 2/2")
    (section,) = jax_bench.run(
        "tiny", ["orthogonal"], rounds=1, steps=1, warmup=1, log=lambda _: None
    )
    labels = {r["label"]: r for r in section["rows"]}
    assert set(labels) == {
        "optax adamw",
        "ours adamp_jax.adamp",
        "optax sgd",
        "ours adamp_jax.sgdp",
    }
    assert all(r["median_ms"] > 0 and r["ratio"] > 0 for r in labels.values())
