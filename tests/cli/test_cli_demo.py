"""``python -m adamp_core demo``: the report folder, the trainer protocol, what is skipped."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from adamp_core import cli
from adamp_core.cli.demo import load_digits_data, run_demo
from adamp_core.cli.trainer import DEMO_OPTIMIZERS, cosine_lr_factor, effective_step_size
from helpers.cli_utils import entry_point, run_cli

GROUP = "adamp_core.demos"
FAKE = [entry_point("fake", "fake_plugin:trainer", GROUP)]
NAMES = [s.name for s in DEMO_OPTIMIZERS]


def _quiet(line: str) -> None:
    pass


def test_report_folder_with_a_trainer(tmp_path) -> None:
    lines: list[str] = []
    report = run_demo(str(tmp_path), quick=True, entry_points=FAKE, progress=lines.append)
    assert report.ok and not report.skipped
    for name in ("summary.md", "results.json", "toy_weight_norm.png", "fake_training.png"):
        path = tmp_path / name
        assert path.stat().st_size > 0, name
    assert (tmp_path / "toy_weight_norm.png").read_bytes()[:4] == b"\x89PNG"
    assert any(line.startswith("[fake] SGDP") for line in lines)  # progress is shown

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"] == {"epochs": 1, "seed": 0, "quick": True}
    assert {r["label"] for r in data["toy"]} >= {"GD", "momentum 0.99", "SGDP paper 0.9"}
    histories = data["training"]["fake"]
    assert list(histories) == NAMES
    sgd = histories["SGD"]
    steps = len(load_digits_data(0, 256).x_train) // 32  # 256 images, batches of 32
    assert sgd["step"] == list(range(steps + 1))
    # the recorder's numbers, recomputed by hand from the fake trainer's known norms
    norms = [1.0 + 0.01 * steps, 2.0]
    assert sgd["weight_norm"][-1] == pytest.approx(math.hypot(*norms))
    lr_last = 0.1 * 0.5 * (1 + math.cos(math.pi * (steps - 1) / steps))
    assert sgd["effective_step_size"][-1] == pytest.approx(np.mean([lr_last / n**2 for n in norms]))
    assert histories["AdamW"]["effective_step_size"][0] == pytest.approx((3e-3 + 1.5e-3) / 2)

    summary = (tmp_path / "summary.md").read_text()
    assert "| fake | SGD | 50.0% | 50.0% | 2.24 -> 2.27 |" in summary
    assert "| momentum 0.9 |" in summary


def test_toy_only_and_numpy_only_messages(tmp_path, monkeypatch) -> None:
    """Without scikit-learn and matplotlib: the toy still runs; the report says what and
    why it skipped."""

    def no_sklearn(*args: object, **kwargs: object) -> None:
        raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr("adamp_core.cli.demo.load_digits_data", no_sklearn)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    report = run_demo(str(tmp_path), quick=True, entry_points=FAKE, progress=_quiet)
    assert report.ok and not report.trainings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "summary.md"]
    summary = (tmp_path / "summary.md").read_text()
    assert "scikit-learn is not installed" in summary
    assert "plots: matplotlib is not installed" in summary
    assert "| GD |" in summary


def test_missing_framework_is_skipped_and_failing_trainer_is_an_error(tmp_path) -> None:
    eps = [
        entry_point("absent", "fake_missing_framework:backends", GROUP),
        entry_point("boom", "fake_plugin:failing_trainer", GROUP),
        *FAKE,
    ]
    report = run_demo(str(tmp_path), quick=True, entry_points=eps, progress=_quiet)
    assert not report.ok and list(report.trainings) == ["fake"]
    assert [e.name for e in report.errors] == ["boom"]
    assert "RuntimeError: trainer exploded" in report.errors[0].message
    assert any(s.startswith("training with absent: not installed") for s in report.skipped)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Errors" in summary and "## Skipped" in summary


def test_framework_filter(tmp_path) -> None:
    report = run_demo(
        str(tmp_path), quick=True, entry_points=FAKE, frameworks=["nope"], progress=_quiet
    )
    assert not report.ok and "no demo trainer named 'nope'" in report.errors[0].message
    assert cli.main(["demo", "--quick", "--no-train", "--out", str(tmp_path / "t")]) == 0
    assert "training: --no-train" in (tmp_path / "t" / "summary.md").read_text()


def test_cosine_factor_and_effective_step() -> None:
    assert [cosine_lr_factor(s, 10) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    assert effective_step_size("sgd", 0.1, [2.0, 4.0]) == pytest.approx((0.025 + 0.00625) / 2)
    assert effective_step_size("adam", 0.1, [2.0, 4.0]) == pytest.approx((0.05 + 0.025) / 2)


def test_digits_split() -> None:
    data = load_digits_data(0)
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() < data.x_train.max() <= 1
    order = np.concatenate(list(data.batches(1, 0)))
    assert sorted(order) == list(range(1347))  # each image once per epoch
    assert not np.array_equal(order, np.concatenate(list(data.batches(2, 0))))


def _check_quick_run(out, framework: str) -> None:
    data = json.loads((out / "results.json").read_text())
    histories = data["training"][framework]
    assert list(histories) == NAMES
    end = {name: h["weight_norm"][-1] for name, h in histories.items()}
    start = {name: h["weight_norm"][0] for name, h in histories.items()}
    assert len(set(start.values())) == 1  # same initial weights for every optimizer
    # the paper's effect, already after a few steps: projection slows the norm growth
    assert end["SGD"] - start["SGD"] > 2 * (end["SGDP"] - start["SGDP"])
    assert end["AdamW"] - start["AdamW"] > 2 * (end["AdamP"] - start["AdamP"])
    for h in histories.values():
        assert 0.0 <= h["test_accuracy"][-1] <= 1.0 and len(h["epoch"]) == 2
    assert (out / f"{framework}_training.png").stat().st_size > 0


def test_quick_demo_torch_end_to_end(tmp_path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "report"
    proc = run_cli("demo", "--quick", "--framework", "torch", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[torch] AdamP epoch 1/1" in proc.stderr
    assert "| torch | SGDP |" in proc.stdout and "report written to" in proc.stdout
    _check_quick_run(out, "torch")


@pytest.mark.slow  # imports TensorFlow
def test_quick_demo_keras_end_to_end(tmp_path) -> None:
    pytest.importorskip("keras")
    out = tmp_path / "report"
    proc = run_cli("demo", "--quick", "--framework", "keras", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_quick_run(out, "keras")
