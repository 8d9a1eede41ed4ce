"""Entry-point discovery shared by ``check`` and ``demo``: the core never imports an adapter.

An entry point either loads, fails because an optional framework is not installed (a
``ModuleNotFoundError`` for a module outside the entry point's own package, such as
``torch`` or ``keras``: "skipped"), or fails for any other reason ("error").

``check`` and ``demo`` load each entry point in a child process of its own (see
:func:`run_child`): two adapters' frameworks never share a process, and the parent
imports none.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TextIO

__all__ = [
    "PROGRESS_PREFIX",
    "ChildRun",
    "LoadError",
    "Loaded",
    "child_progress",
    "describe",
    "entry_point_arg",
    "is_missing_optional",
    "load_entry_points",
    "parse_entry_point_arg",
    "run_child",
]


@dataclass(frozen=True)
class LoadError:
    """Something (an entry point, a backend, a trainer) that could not run, and why."""

    name: str
    message: str


@dataclass
class Loaded:
    """What :func:`load_entry_points` found: ``objects`` maps entry-point names to the
    loaded objects, in name order."""

    objects: dict[str, object] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    skipped: list[LoadError] = field(default_factory=list)


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``."""
    return f"{type(exc).__name__}: {exc}"


def is_missing_optional(exc: BaseException, own_module: str) -> bool:
    """Is ``exc`` a missing third-party module, rather than a defect of ``own_module``?"""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return False
    return exc.name.split(".")[0] != own_module.split(".")[0]


def load_entry_points(
    group: str, entry_points: Iterable[metadata.EntryPoint] | None = None
) -> Loaded:
    """Load every entry point of ``group`` (or the given ``entry_points``), sorted by name.

    Exceptions are recorded, never raised: a missing optional framework goes to
    ``skipped``, anything else to ``errors``.
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=group)
    loaded = Loaded()
    for ep in sorted(entry_points, key=lambda e: e.name):
        try:
            loaded.objects[ep.name] = ep.load()
        except Exception as exc:
            record = LoadError(ep.name, f"entry point {ep.value}: {describe(exc)}")
            (loaded.skipped if is_missing_optional(exc, ep.module) else loaded.errors).append(
                record
            )
    return loaded


# -- child processes ---------------------------------------------------------------------
#
# Adapters are loaded in child processes, one entry point each, so that frameworks that
# cannot share a process (TensorFlow and a CUDA build of torch) never meet: the parent
# imports no adapter. A child is ``python -m adamp_core COMMAND --child ...``; it prints its
# progress lines with :data:`PROGRESS_PREFIX` and writes its result as JSON to a file.

#: Marks a child's progress lines on its output; the parent forwards them, without it.
PROGRESS_PREFIX = "[adamp_core child] "

#: Lines of a child's other output kept to explain a child that failed.
TAIL_LINES = 5


def child_progress(line: str) -> None:
    """A child process's progress callback: one marked line on stderr."""
    print(PROGRESS_PREFIX + line, file=sys.stderr, flush=True)


def entry_point_arg(ep: metadata.EntryPoint) -> str:
    """``"name=value"``: an entry point on a child's command line (it need not be installed)."""
    return f"{ep.name}={ep.value}"


def parse_entry_point_arg(text: str, group: str) -> metadata.EntryPoint:
    """The entry point of :func:`entry_point_arg`'s ``"name=value"``."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"expected NAME=MODULE:ATTRIBUTE, got {text!r}")
    return metadata.EntryPoint(name=name, value=value, group=group)


@dataclass(frozen=True)
class ChildRun:
    """How a child process ended: its exit code and the last lines of its other output."""

    returncode: int
    tail: list[str]

    def failure(self, what: str) -> str:
        """``"WHAT exited with N and no result: last | lines"``."""
        return f"{what} exited with {self.returncode} and no result: " + " | ".join(self.tail)


def run_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    echo: TextIO | None = None,
) -> ChildRun:
    """Run ``python -m adamp_core ARGS`` and stream its output while it runs.

    Args:
        args: the command line after ``python -m adamp_core``.
        env: extra environment variables for the child (on top of this process's).
        progress: receives the child's progress lines (see :func:`child_progress`),
            unmarked. Default: dropped.
        echo: where the child's other output (its stdout and stderr, e.g. a framework's
            log) is copied, line by line. Default: nowhere; the last lines are kept in
            :attr:`ChildRun.tail` either way.
    """
    cmd = [sys.executable, "-m", "adamp_core", *args]
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        cmd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\r\n")
            if line.startswith(PROGRESS_PREFIX):
                if progress is not None:
                    progress(line[len(PROGRESS_PREFIX) :])
                continue
            if line.strip():
                tail.append(line.strip())
            if echo is not None:
                print(line, file=echo, flush=True)
        returncode = proc.wait()
    return ChildRun(returncode, list(tail))
