"""The command line's error-input table: user errors exit 2 with one line, before any work.

Each row runs ``adamp_core.cli.main`` in this process with the check, the demo and their
discovery replaced by tripwires (a row that started any work fails), and asserts: exit
status 2, no traceback, the message's last line ``python -m adamp_core COMMAND: error:
...`` matching the row, nothing on stdout, and nothing created in the working folder. A
few rows run again in a fresh interpreter, end to end. The last tests cover a check that
compares nothing (never PASSED) and output that fails after the run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adamp_core import cli
from adamp_core.cli import check as check_module
from adamp_core.cli.check import (
    NUMPY_BACKEND,
    CheckReport,
    Discovery,
    discover_backends,
    format_report,
    run_check,
)
from adamp_core.cli.plugins import LoadError
from helpers.cli_utils import run_cli
from helpers.error_inputs import ErrorInput, as_params, expect_refused

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


class CliExit(Exception):
    """``main`` ended with a non-zero status; ``str()`` is what it wrote to stderr."""

    def __init__(self, code: int, out: str, err: str) -> None:
        super().__init__(err)
        self.code, self.out, self.err = code, out, err


@dataclass
class Workspace:
    """A folder holding a regular file (``file``), a FIFO and a read-only folder; the CLI
    runs with it as the working folder."""

    root: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def file(self) -> Path:
        return self.root / "a-file"

    def run(self, *argv: str) -> None:
        """``main(argv)`` (with ``{ws}`` replaced by the folder); raises :class:`CliExit`
        unless it returns 0."""
        args = [a.replace("{ws}", str(self.root)) for a in argv]
        self.capsys.readouterr()
        try:
            code = cli.main(args)
        except SystemExit as exc:  # argparse's own errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        if code != 0:
            raise CliExit(code, out, err)


def tree(ws: Workspace) -> list[tuple[str, int]]:
    """Every path under the workspace with its size: what a refused run may not change."""
    return sorted(
        (str(p.relative_to(ws.root)), p.stat().st_size if p.is_file() else -1)
        for p in ws.root.rglob("*")
    )


def _run(*argv: str) -> Any:
    return lambda ws: ws.run(*argv)


TOP = None  # the error comes from the top-level parser: no command in the prefix


def _row(
    id: str, description: str, argv: tuple[str, ...], match: str, command: str | None = ""
) -> ErrorInput[Workspace]:
    """A row whose message is ``python -m adamp_core COMMAND: error: MATCH`` (COMMAND:
    ``argv[0]`` by default, none with ``command=TOP``)."""
    prog = "python -m adamp_core" + ("" if command is TOP else f" {command or argv[0]}")
    return ErrorInput(id, description, _run(*argv), CliExit, prog + ": error: " + match)


ROWS: list[ErrorInput[Workspace]] = [
    # -- check: numbers -------------------------------------------------------------------
    _row("check-steps-zero", "zero steps would compare nothing",
         ("check", "--steps", "0"), r"argument --steps: must be an integer >= 1, got 0"),
    _row("check-steps-negative", "negative steps", ("check", "--steps", "-3"),
         r"argument --steps: must be an integer >= 1, got -3"),
    _row("check-steps-text", "steps not a number", ("check", "--steps", "abc"),
         r"argument --steps: expected an integer >= 1, got 'abc'"),
    _row("check-steps-float", "steps not an integer", ("check", "--steps", "1.5"),
         r"argument --steps: expected an integer >= 1, got '1.5'"),
    _row("check-steps-empty", "steps empty", ("check", "--steps", ""),
         r"argument --steps: expected an integer >= 1, got ''"),
    _row("check-steps-missing-value", "--steps without a value", ("check", "--steps"),
         r"argument --steps: expected one argument"),
    # -- check: --json --------------------------------------------------------------------
    _row("check-json-missing-folder", "--json into a folder that does not exist",
         ("check", "--json", "{ws}/missing/check.json"),
         r"--json \S+/missing/check.json: folder \S+/missing does not exist$"),
    _row("check-json-under-a-file", "--json under a regular file",
         ("check", "--json", "{ws}/a-file/check.json"),
         r"--json \S+/a-file/check.json: \S+/a-file is not a folder$"),
    _row("check-json-is-a-folder", "--json naming a folder", ("check", "--json", "{ws}"),
         r"--json \S+: is a folder; give a file name inside it$"),
    _row("check-json-empty", "--json ''", ("check", "--json", ""), r"--json: the path is empty$"),
    _row("check-json-fifo", "--json at a FIFO nobody reads (would block)",
         ("check", "--json", "{ws}/a-fifo"), r"--json \S+/a-fifo: cannot write there"),
    _row("check-json-read-only-folder", "--json in a folder without write permission",
         ("check", "--json", "{ws}/read-only/check.json"),
         r"--json \S+/read-only/check.json: cannot write there \(Permission denied\)$"),
    _row("check-json-proc", "--json under /proc (no files can be created there)",
         ("check", "--json", "/proc/adamp-check.json"),
         r"--json /proc/adamp-check.json: cannot write there"),
    # -- check: other arguments -------------------------------------------------------------
    _row("check-factory-no-colon", "--factory without MODULE:ATTRIBUTE",
         ("check", "--factory", "mypkg"), r"argument --factory: expected MODULE:ATTRIBUTE"),
    _row("check-factory-no-module", "--factory ':f'", ("check", "--factory", ":f"),
         r"argument --factory: expected MODULE:ATTRIBUTE, got ':f'"),
    _row("check-factory-no-attribute", "--factory 'mypkg:'", ("check", "--factory", "mypkg:"),
         r"argument --factory: expected MODULE:ATTRIBUTE, got 'mypkg:'"),
    _row("check-unknown-option", "an option check does not have", ("check", "--epochs", "1"),
         r"unrecognized arguments: --epochs 1", command=TOP),
    _row("no-command", "no command", (), r"the following arguments are required: command",
         command=TOP),
    _row("unknown-command", "a misspelt command", ("chek",), r"argument command: invalid choice",
         command=TOP),
    # -- demo: numbers ----------------------------------------------------------------------
    _row("demo-epochs-zero", "zero epochs", ("demo", "--epochs", "0"),
         r"argument --epochs: must be an integer >= 1, got 0"),
    _row("demo-epochs-negative", "negative epochs", ("demo", "--epochs", "-1"),
         r"argument --epochs: must be an integer >= 1, got -1"),
    _row("demo-epochs-quick-zero", "zero epochs with --quick", ("demo", "--quick", "--epochs", "0"),
         r"argument --epochs: must be an integer >= 1, got 0"),
    _row("demo-epochs-text", "epochs not a number", ("demo", "--epochs", "ten"),
         r"argument --epochs: expected an integer >= 1, got 'ten'"),
    _row("demo-seed-negative", "a negative seed (scikit-learn and NumPy refuse it later)",
         ("demo", "--seed", "-1"), r"argument --seed: must be in \[0, 4294967295\], got -1"),
    _row("demo-seed-too-large", "a seed above 2**32 - 1", ("demo", "--seed", str(2**32)),
         r"argument --seed: must be in \[0, 4294967295\], got 4294967296"),
    _row("demo-seed-float", "a fractional seed", ("demo", "--seed", "1.5"),
         r"argument --seed: expected an integer seed, got '1.5'"),
    _row("demo-seed-text", "a seed that is not a number", ("demo", "--seed", "random"),
         r"argument --seed: expected an integer seed, got 'random'"),
    # -- demo: --out and --framework --------------------------------------------------------
    _row("demo-out-is-a-file", "--out naming a regular file", ("demo", "--out", "{ws}/a-file"),
         r"--out \S+/a-file: is a file, not a folder$"),
    _row("demo-out-under-a-file", "--out under a regular file",
         ("demo", "--out", "{ws}/a-file/sub/report"),
         r"--out \S+/a-file/sub/report: \S+/a-file is a file, not a folder$"),
    _row("demo-out-empty", "--out ''", ("demo", "--out", ""), r"--out: the path is empty$"),
    _row("demo-out-read-only", "--out inside a folder without write permission",
         ("demo", "--out", "{ws}/read-only/report"),
         r"--out \S+/read-only/report: cannot write there \(Permission denied\)$"),
    _row("demo-out-existing-read-only", "--out an existing folder without write permission",
         ("demo", "--out", "{ws}/read-only"),
         r"--out \S+/read-only: cannot write there \(Permission denied\)$"),
    _row("demo-out-proc", "--out under /proc", ("demo", "--out", "/proc/adamp-demo"),
         r"--out /proc/adamp-demo: cannot write there"),
    _row("demo-unknown-framework", "a framework with no demo trainer",
         ("demo", "--framework", "tensorflw", "--out", "{ws}/report"),
         r"--framework tensorflw: no demo trainer of that name; installed: "),
    _row("demo-unknown-option", "an option demo does not have", ("demo", "--steps", "3"),
         r"unrecognized arguments: --steps 3", command=TOP),
]  # fmt: skip

NEEDS_NON_ROOT = {
    "check-json-read-only-folder",
    "demo-out-read-only",
    "demo-out-existing-read-only",
}
NEEDS_PROC = {"check-json-proc", "demo-out-proc"}
NEEDS_FIFO = {"check-json-fifo"}


def _skip_reason(row_id: str) -> str | None:
    if row_id in NEEDS_NON_ROOT and ROOT:
        return "the superuser may write anywhere"
    if row_id in NEEDS_PROC and not os.path.isdir("/proc/self"):
        return "no /proc"
    if row_id in NEEDS_FIFO and not hasattr(os, "mkfifo"):
        return "no FIFOs"
    return None


@pytest.fixture
def workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a-file").write_text("not a folder\n")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "a-fifo")
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.chdir(root)  # relative default paths (./adamp-demo) land here too

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the command line was refused")

    for name in ("run_check", "discover_backends", "backend_from_factory", "list_backends"):
        monkeypatch.setattr(f"adamp_core.cli.check.{name}", tripwire)
    monkeypatch.setattr("adamp_core.cli.demo.run_demo", tripwire)
    yield Workspace(root, capsys)
    read_only.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("row", as_params(ROWS))
def test_user_error_exits_2_with_one_line(row: ErrorInput[Workspace], workspace: Workspace) -> None:
    reason = _skip_reason(row.id)
    if reason:
        pytest.skip(reason)
    info = expect_refused(row, snapshot=tree, target=workspace)
    exc = info.value
    assert isinstance(exc, CliExit)
    assert exc.code == 2 and exc.out == ""
    assert "Traceback" not in exc.err
    last = exc.err.rstrip("\n").splitlines()[-1]
    assert last.startswith("python -m adamp_core") and ": error: " in last
    if "argument" not in last and "unrecognized" not in last:
        assert exc.err.count("\n") == 1  # ours: exactly one line, no usage block


def test_table_size() -> None:
    assert len(ROWS) >= 35


@pytest.mark.parametrize(
    "argv, match",
    [
        (["check", "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["check", "--json", "{ws}/missing/check.json"], "does not exist"),
        (["demo", "--out", "{ws}/a-file/report"], "is a file, not a folder"),
        (["demo", "--epochs", "-1"], "argument --epochs: must be an integer >= 1"),
    ],
    ids=["steps", "json", "out", "epochs"],
)
def test_end_to_end_in_a_fresh_interpreter(argv: list[str], match: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(*[a.replace("{ws}", str(tmp_path)) for a in argv], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert match in proc.stderr.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# -- a check that compares nothing is never PASSED ---------------------------------------


def test_run_check_refuses_zero_steps() -> None:
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1, got 0"):
        run_check(discover_backends(entry_points=[]), steps=0)


def test_backend_with_no_results_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose runs produced no result row (a factory that yields nothing) fails
    the check instead of passing silently next to the NumPy rows."""
    monkeypatch.setattr(check_module, "run_conformance", lambda *a, **k: [])
    report = run_check(Discovery(backends=[NUMPY_BACKEND]), steps=1)
    assert not report.passed
    assert report.errors == [LoadError("numpy", "compared nothing (no result rows)")]
    assert format_report(report).splitlines()[-1].startswith("FAILED")


def test_child_backend_with_no_results_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = check_module._backend_from_dict(
        {"name": "quiet", "dtypes": ["float64"], "env": {"X": "1"}, "opt_in": False}
    )
    child = check_module._ChildResult([backend], CheckReport(), [])
    monkeypatch.setattr(check_module, "_check_in_child", lambda *a, **k: child)
    report = check_module._run_in_child(backend, 1, None)
    assert not report.passed and "compared nothing" in report.errors[0].message


def test_only_skipped_backends_fail() -> None:
    report = CheckReport(skipped=[LoadError("torch", "not installed")])
    assert not report.passed and format_report(report).splitlines()[-1].startswith("FAILED")


# -- failures after the run: the table is kept, one line, no traceback --------------------


def test_json_write_failing_after_the_run_keeps_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def disk_full(report: object, path: str) -> None:
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(check_module, "write_json", disk_full)
    monkeypatch.setattr(
        check_module, "discover_backends", lambda **kw: Discovery(backends=[NUMPY_BACKEND])
    )
    assert cli.main(["check", "--steps", "1", "--json", str(tmp_path / "c.json")]) == 1
    out, err = capsys.readouterr()
    assert out.rstrip().splitlines()[-1].startswith("PASSED")
    assert err.rstrip().splitlines()[-1].startswith("python -m adamp_core check: error: --json")
    assert "No space left on device" in err and "Traceback" not in err


def test_demo_output_failing_after_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "report"

    def vanished(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", str(out_dir / "summary.md"))

    monkeypatch.setattr("adamp_core.cli.demo.run_demo", vanished)
    assert cli.main(["demo", "--no-train", "--out", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1].startswith("python -m adamp_core demo: error: --out")

    def bug(*args: object, **kwargs: object) -> None:  # not about --out: a bug, re-raised
        raise FileNotFoundError(2, "No such file or directory", "/elsewhere/data.npz")

    monkeypatch.setattr("adamp_core.cli.demo.run_demo", bug)
    with pytest.raises(FileNotFoundError):
        cli.main(["demo", "--no-train", "--out", str(out_dir)])


def test_interrupt_exits_130_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(check_module, "discover_backends", interrupted)
    assert cli.main(["check"]) == 130
    assert capsys.readouterr().err == "python -m adamp_core check: interrupted\n"


def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only user errors are caught at the boundary: anything else propagates."""

    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(check_module, "discover_backends", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["check"])


def test_valid_numbers_are_accepted() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["demo", "--epochs", "1", "--seed", str(2**32 - 1)])
    assert (args.epochs, args.seed) == (1, 2**32 - 1)
    assert parser.parse_args(["demo", "--seed", "0"]).seed == 0
    assert parser.parse_args(["check", "--steps", "1"]).steps == 1
    assert parser.parse_args(["check"]).steps == 20


@pytest.mark.parametrize("what", ["file", "folder", "new-folder"])
def test_permission_denied_is_one_line(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's PermissionError becomes the message (as the superuser, who may write
    anywhere, the read-only rows of the table are skipped; this covers them)."""
    from adamp_core.cli import paths

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paths.tempfile, "TemporaryFile", denied)
    monkeypatch.setattr(paths.tempfile, "TemporaryDirectory", denied)
    target = {"file": tmp_path / "c.json", "folder": tmp_path, "new-folder": tmp_path / "new"}[what]
    check = paths.check_output_file if what == "file" else paths.check_output_folder
    with pytest.raises(paths.UsageError, match=r"cannot write there \(Permission denied\)$"):
        check("--x", str(target))
