"""``check`` and ``demo`` load every adapter in a child process: the parent imports none.

TensorFlow and a CUDA build of torch crash when they share a process; these tests prove
that the parent never imports an adapter (``fake_isolated_plugin`` records the process
ids that import it, and must be absent from this process's ``sys.modules``), that each
entry point runs in a process of its own, and that what the children measure, skip and
fail comes back as it would in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adamp_core.cli.check import discover_backends, format_report, list_backends, run_check
from adamp_core.cli.demo import run_demo
from helpers.cli_utils import entry_point, install_fake_plugin

MODULE = "fake_isolated_plugin"
ISO = entry_point("iso", f"{MODULE}:backends")
TRAINER = entry_point("iso", f"{MODULE}:trainer", "adamp_core.demos")
FRAMEWORKS = (
    "torch",
    "keras",
    "tensorflow",
    "jax",
    "optax",
    "flax",
    "triton",
    "adamp_torch",
    "adamp_tf",
    "adamp_jax",
)
STEPS = 2
BRANCHES = ("channel", "layer", "none")


@pytest.fixture
def pid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file ``fake_isolated_plugin`` appends the id of each process importing it to."""
    path = tmp_path / "pids.txt"
    monkeypatch.setenv("ADAMP_FAKE_PID_FILE", str(path))
    monkeypatch.delenv("ADAMP_FAKE_ENV", raising=False)
    assert MODULE not in sys.modules
    return path


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _passed(report, backend: str) -> dict[tuple[str, str], bool]:
    return {(r.optimizer, r.branch): r.passed for r in report.rows if r.backend == backend}


def test_isolated_check_runs_each_entry_point_in_a_child(pid_file: Path) -> None:
    discovery = discover_backends([ISO], isolate=True)
    assert [b.name for b in discovery.backends] == ["numpy"] and discovery.isolated == [ISO]
    lines: list[str] = []
    report = run_check(discovery, steps=STEPS, progress=lines.append)
    assert MODULE not in sys.modules
    pids = _pids(pid_file)
    # the entry point's child, and the child with ADAMP_FAKE_ENV=on for fake-iso-env
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    assert report.passed, format_report(report)
    every = {(o, b) for o in ("AdamP", "SGDP") for b in BRANCHES}
    assert _passed(report, "numpy").keys() >= every
    assert _passed(report, "fake-iso") == dict.fromkeys(every, True)
    assert _passed(report, "fake-iso-env") == dict.fromkeys(every, True)  # env reached it
    assert [e.name for e in report.opt_in] == ["fake-iso-broken"]
    # the children's progress lines come through, unmarked
    assert "checking fake-iso ..." in lines
    assert "checking fake-iso-env (child process: ADAMP_FAKE_ENV=on) ..." in lines
    assert "  fake-iso: SGDP float64" in lines


def test_isolated_check_filters_and_opt_in(pid_file: Path) -> None:
    discovery = discover_backends([ISO], isolate=True)
    named = run_check(discovery, only=["fake-iso-broken"], steps=STEPS)
    assert {r.backend for r in named.rows} == {"fake-iso-broken"}
    broken = _passed(named, "fake-iso-broken")
    assert not broken[("AdamP", "channel")] and broken[("SGDP", "none")]  # it ran, and fails
    unknown = run_check(discovery, only=["nope"], steps=STEPS)
    (error,) = unknown.errors
    assert not unknown.passed and error.message.startswith("no backend named 'nope'")
    assert "fake-iso-env" in error.message and "numpy" in error.message
    assert MODULE not in sys.modules and os.getpid() not in _pids(pid_file)


def test_crash_missing_framework_and_duplicates_in_children(pid_file: Path) -> None:
    eps = [
        entry_point("crash", "fake_crashing_plugin:backends"),
        entry_point("fw", "fake_missing_framework:backends"),
        ISO,
        entry_point("iso2", f"{MODULE}:backends"),
    ]
    report = run_check(discover_backends(eps, isolate=True), steps=STEPS)
    assert not report.passed
    errors = {e.name: e.message for e in report.errors}
    # a child that dies (as on a segfault) is an error row that says how it ended
    assert errors["crash"].startswith("child process exited with 70 and no result")
    assert "fake crash: the framework took the process down" in errors["crash"]
    assert [s.name for s in report.skipped] == ["fw"]
    assert "framework_that_is_not_installed_xyz" in report.skipped[0].message
    # two entry points announcing the same names, found in different processes
    for name in ("fake-iso", "fake-iso-env", "fake-iso-broken"):
        assert errors[name] == f"backend name {name!r} is announced twice"
        assert not any(r.backend == name for r in report.results)
    text = format_report(report)
    assert "crash" in text and "not checked (optional framework not installed)" in text
    assert MODULE not in sys.modules and os.getpid() not in _pids(pid_file)


def test_list_backends_in_children(pid_file: Path) -> None:
    discovery = discover_backends(
        [ISO, entry_point("bad", "fake_plugin:announce_fails")], isolate=True
    )
    listed = list_backends(discovery)
    by = {b.name: b for b in listed.backends}
    assert list(by) == ["numpy", "fake-iso", "fake-iso-env", "fake-iso-broken"]
    assert by["fake-iso-env"].env == {"ADAMP_FAKE_ENV": "on"} and by["fake-iso-broken"].opt_in
    assert by["fake-iso"].dtypes == ("float64",) and listed.origin["fake-iso"] == "iso"
    assert [e.name for e in listed.errors] == ["bad"]
    assert "ValueError: cannot list backends" in listed.errors[0].message
    assert MODULE not in sys.modules and os.getpid() not in _pids(pid_file)


def _no_time(histories: dict) -> dict:
    return {name: {k: v for k, v in h.items() if k != "seconds"} for name, h in histories.items()}


def test_isolated_demo_trains_in_children(tmp_path: Path, pid_file: Path) -> None:
    eps = [
        entry_point("absent", "fake_missing_framework:backends", "adamp_core.demos"),
        entry_point("boom", "fake_plugin:failing_trainer", "adamp_core.demos"),
        entry_point("crash", "fake_crashing_plugin:trainer", "adamp_core.demos"),
        TRAINER,
    ]
    lines: list[str] = []
    report = run_demo(
        str(tmp_path / "iso"), quick=True, entry_points=eps, isolate=True, progress=lines.append
    )
    assert MODULE not in sys.modules
    pids = _pids(pid_file)
    assert len(pids) == 1 and os.getpid() not in pids
    # the oracle: the same trainer run in this process gives the same histories
    here = run_demo(
        str(tmp_path / "here"),
        quick=True,
        entry_points=[entry_point("iso", "fake_plugin:trainer", "adamp_core.demos")],
        progress=lambda line: None,
    )
    assert list(report.trainings) == ["iso"]
    assert _no_time(report.trainings["iso"]) == _no_time(here.trainings["iso"])
    errors = {e.name: e.message for e in report.errors}
    assert errors["boom"] == "trainer failed: RuntimeError: trainer exploded"
    assert errors["crash"].startswith("trainer child process exited with 70 and no result")
    assert any(s.startswith("training with absent: not installed") for s in report.skipped)
    first = "training with iso: 256 train / 450 test images, 1 epoch(s), SGD, SGDP, AdamW, AdamP"
    assert first in lines
    assert any(line.startswith("[fake] AdamP epoch 1/1") for line in lines)
    data = json.loads((tmp_path / "iso" / "results.json").read_text())
    assert list(data["training"]) == ["iso"]


_PARENT_SCRIPT = """
import json, os, sys
from adamp_core.cli import main
codes = [main(a) for a in json.loads(sys.argv[1])]
watched = {watched!r}
print(json.dumps({{"pid": os.getpid(), "codes": codes,
                  "imported": sorted(m for m in sys.modules if m.split('.')[0] in watched)}}))
"""


def _cli_in_a_fresh_parent(
    commands: list[list[str]], env: dict[str, str], watched: tuple[str, ...]
) -> tuple[dict, str]:
    """Run ``main(args)`` for each of ``commands`` in one fresh interpreter; return its
    pid, exit codes and the watched modules it imported, and its stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", _PARENT_SCRIPT.format(watched=watched), json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_cli_isolates_by_default(tmp_path: Path, pid_file: Path) -> None:
    """The command line (not just the API) isolates: a fresh interpreter running ``check``
    and ``demo`` with an installed fake adapter never imports it."""
    env = install_fake_plugin(
        tmp_path / "site",
        {"adamp_core.backends": {"iso": ISO.value}, "adamp_core.demos": {"iso": TRAINER.value}},
    )
    env["ADAMP_FAKE_PID_FILE"] = str(pid_file)
    out = str(tmp_path / "demo")
    got, stderr = _cli_in_a_fresh_parent(
        [
            ["check", "--entry-point", "iso", "--steps", str(STEPS)],
            ["check", "--entry-point", "iso", "--list"],
            ["demo", "--quick", "--framework", "iso", "--out", out],
        ],
        env,
        (MODULE,),
    )
    assert got["codes"] == [0, 0, 0] and got["imported"] == []
    pids = _pids(pid_file)
    assert len(pids) == 4 and got["pid"] not in pids  # check: 2 children, list: 1, demo: 1
    assert "checking fake-iso-env (child process: ADAMP_FAKE_ENV=on) ..." in stderr
    assert "[fake] SGDP  epoch 1/1" in stderr


@pytest.mark.slow  # imports torch, TensorFlow and JAX (in children)
def test_cli_real_adapters_import_no_framework_in_the_parent(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    pytest.importorskip("jax")
    got, stderr = _cli_in_a_fresh_parent(
        [
            ["check", "--backend", "torch", "--backend", "keras-jax", "--steps", str(STEPS)],
            ["demo", "--quick", "--framework", "torch", "--out", str(tmp_path / "demo")],
        ],
        dict(os.environ),
        FRAMEWORKS,
    )
    assert got["codes"] == [0, 0], stderr
    assert got["imported"] == []
    assert "checking torch ..." in stderr
    assert "checking keras-jax (child process: KERAS_BACKEND=jax) ..." in stderr
    assert "[torch] AdamP epoch 1/1" in stderr
