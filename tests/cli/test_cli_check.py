"""``python -m adamp_core check``: discovery, verdicts, error rows, child processes, JSON."""

from __future__ import annotations

import json
import math

import pytest

from adamp_core import cli
from adamp_core.cli.check import (
    CheckReport,
    discover_backends,
    format_report,
    read_json,
    run_check,
    write_json,
)
from adamp_core.cli.plugins import LoadError
from adamp_core.testing import FLOAT64_ABS_TOL, CaseResult
from helpers.cli_utils import entry_point, install_fake_plugin, run_cli

STEPS = 3  # the suite's cases force their branch from the first step on


def _rows(report: CheckReport, backend: str) -> dict[tuple[str, str, str], object]:
    return {(r.optimizer, r.dtype, r.branch): r for r in report.rows if r.backend == backend}


def test_numpy_is_always_a_backend_and_passes() -> None:
    discovery = discover_backends(entry_points=[])
    assert [b.name for b in discovery.backends] == ["numpy"]
    report = run_check(discovery, steps=STEPS)
    assert report.passed
    keys = set(_rows(report, "numpy"))
    assert keys == {
        (o, d, b)
        for o in ("AdamP", "SGDP")
        for d in ("float32", "float64")
        for b in ("channel", "layer", "none")
    }
    assert all(r.max_abs == 0.0 for r in report.rows)  # the reference against itself


def test_broken_optimizer_fails_on_projecting_branches_only() -> None:
    discovery = discover_backends([entry_point("broken", "fake_plugin:broken_backends")])
    report = run_check(discovery, steps=STEPS)
    assert not report.passed
    rows = _rows(report, "fake-broken")
    assert set(rows) == {
        (o, "float64", b) for o in ("AdamP", "SGDP") for b in ("channel", "layer", "none")
    }
    for (_, _, branch), row in rows.items():
        if branch == "none":  # without projection, AdamW/SGD equal the reference
            assert row.passed and row.max_abs <= FLOAT64_ABS_TOL
        else:
            assert not row.passed and row.max_abs > 1e-4 and not row.errors
    text = format_report(report)
    assert "FAIL" in text and text.rstrip().splitlines()[-1].startswith("FAILED")


def test_raising_factory_gives_error_rows() -> None:
    discovery = discover_backends([entry_point("raising", "fake_plugin:raising_backends")])
    report = run_check(discovery, steps=STEPS)
    assert not report.passed
    rows = _rows(report, "fake-raising")
    assert len(rows) == 6 and all(not r.passed for r in rows.values())
    assert all(r.errors == ["RuntimeError: factory exploded"] for r in rows.values())
    assert "fake-raising (6 rows): RuntimeError: factory exploded" in format_report(report)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no_such_adapter_module:backends", "ModuleNotFoundError"),
        ("fake_plugin:no_such_function", "AttributeError"),
        ("fake_plugin:not_a_backend", "expected Backend"),
        ("fake_plugin:announce_fails", "ValueError: cannot list backends"),
    ],
)
def test_entry_point_that_cannot_load_is_an_error_row(value: str, message: str) -> None:
    discovery = discover_backends([entry_point("bad", value)])
    assert [e.name for e in discovery.errors] == ["bad"]
    report = run_check(discovery, steps=STEPS)
    assert not report.passed
    (row,) = [r for r in report.rows if r.backend == "bad"]
    assert not row.passed and row.runs == 0 and message in row.errors[0]
    line = next(x for x in format_report(report).splitlines() if x.startswith("bad "))
    assert line.split()[-1] == "ERROR" and " - " in line
    # asking for a backend that is not there keeps the load error that may explain why
    asked = run_check(discovery, only=["missing-backend"], steps=STEPS)
    assert [e.name for e in asked.errors] == ["bad", "missing-backend"]


def test_missing_optional_framework_is_reported_not_failed() -> None:
    discovery = discover_backends([entry_point("fw", "fake_missing_framework:backends")])
    assert not discovery.errors
    assert [s.name for s in discovery.skipped] == ["fw"]
    report = run_check(discovery, steps=STEPS)
    assert report.passed  # the NumPy rows pass, the missing framework is not a failure...
    text = format_report(report)
    assert "not checked" in text and "framework_that_is_not_installed_xyz" in text
    strict = run_check(discovery, steps=STEPS, strict=True)
    assert not strict.passed  # ...unless --strict


def test_single_backend_and_filters() -> None:
    discovery = discover_backends(
        [
            entry_point("good", "fake_plugin:good_backends"),
            entry_point("broken", "fake_plugin:broken_backends"),
        ]
    )
    report = run_check(discovery, only=["fake-good"], steps=STEPS)
    assert report.passed and {r.backend for r in report.rows} == {"fake-good"}
    unknown = run_check(discovery, only=["nope"], steps=STEPS)
    assert not unknown.passed and "no backend named 'nope'" in unknown.errors[0].message


def test_opt_in_backend_runs_only_when_named() -> None:
    discovery = discover_backends([entry_point("slow", "fake_plugin:opt_in_backends")])
    default = run_check(discovery, steps=STEPS)
    assert default.passed and {r.backend for r in default.rows} == {"numpy"}
    assert [e.name for e in default.opt_in] == ["fake-slow-broken"]
    assert "--backend fake-slow-broken" in format_report(default)
    named = run_check(discovery, only=["fake-slow-broken"], steps=STEPS)
    assert not named.passed  # it ran, and the broken optimizer fails
    assert {r.backend for r in named.rows} == {"fake-slow-broken"}


def test_duplicate_backend_names_are_an_error() -> None:
    discovery = discover_backends(
        [
            entry_point("a", "fake_plugin:good_backends"),
            entry_point("b", "fake_plugin:good_backends"),
        ]
    )
    assert "fake-good" not in [b.name for b in discovery.backends]
    assert any("announced twice" in e.message for e in discovery.errors)


def test_json_round_trip_is_strict_json(tmp_path) -> None:
    report = CheckReport(
        results=[
            CaseResult(
                "x",
                "AdamP",
                "plain",
                "float64",
                "c",
                "channel",
                math.inf,
                math.nan,
                1e-12,
                False,
                "boom",
            )
        ],
        errors=[LoadError("y", "failed to load")],
        skipped=[LoadError("z", "No module named 'zz'")],
        steps=7,
    )
    path = tmp_path / "r.json"
    write_json(report, path)

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(path.read_text(), parse_constant=reject)
    assert data["passed"] is False and data["steps"] == 7
    assert [r["backend"] for r in data["rows"]] == ["x", "y"]
    assert data["rows"][0]["max_abs"] is None and data["rows"][1]["errors"] == ["failed to load"]
    back = read_json(path)
    assert back.results[0].max_abs == math.inf and back.results[0].error == "boom"
    assert back.errors == report.errors and back.skipped == report.skipped


def test_cli_in_process_exit_codes_and_json(tmp_path, monkeypatch, capsys) -> None:
    fakes = [entry_point("broken", "fake_plugin:broken_backends")]
    monkeypatch.setattr("adamp_core.cli.check.metadata.entry_points", lambda group: fakes)
    out = tmp_path / "check.json"
    assert cli.main(["check", "--steps", "2", "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "fake-broken" in printed and "numpy" in printed
    data = json.loads(out.read_text())
    assert data["passed"] is False
    verdicts = {(r["backend"], r["branch"]) for r in data["rows"] if not r["passed"]}
    assert verdicts == {("fake-broken", "channel"), ("fake-broken", "layer")}
    assert cli.main(["check", "--steps", "2", "--backend", "numpy"]) == 0
    assert cli.main(["check", "--steps", "2", "--factory", "fake_plugin:never_projects"]) == 1
    assert cli.main(["check", "--steps", "2", "--factory", "fake_plugin:nothing_here"]) == 1
    capsys.readouterr()
    assert cli.main(["check", "--list"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["numpy", "dtypes=float32,float64"]


@pytest.mark.slow  # a fresh interpreter that loads every installed adapter
def test_cli_end_to_end_with_child_process(tmp_path) -> None:
    """A real installed plugin (a dist-info on PYTHONPATH): the env-requiring backend runs
    in a child process with its environment, the broken one fails, the exit code is 1."""
    env = install_fake_plugin(
        tmp_path / "site",
        {
            "adamp_core.backends": {
                "fakeenv": "fake_plugin:env_backends",
                "fakebroken": "fake_plugin:broken_backends",
            }
        },
    )
    out = tmp_path / "check.json"
    proc = run_cli(
        "check",
        "--steps",
        "2",
        "--json",
        str(out),
        "--backend",
        "fake-env",
        "--backend",
        "fake-broken",
        env=env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "checking fake-env (child process: ADAMP_FAKE_ENV=on)" in proc.stderr
    data = json.loads(out.read_text())
    by = {(r["backend"], r["optimizer"], r["branch"]): r["passed"] for r in data["rows"]}
    assert all(
        by[("fake-env", o, b)] for o in ("AdamP", "SGDP") for b in ("channel", "layer", "none")
    )
    assert not by[("fake-broken", "AdamP", "channel")] and by[("fake-broken", "SGDP", "none")]
