"""``python -m adamp_core check``: run the conformance suite against every installed backend.

Backends are found, never imported by name: an adapter announces itself under the
``adamp_core.backends`` entry-point group with a zero-argument callable that returns a
:class:`~adamp_core.testing.Backend` (or a list of them). The NumPy reference checked
against itself is always the first backend.

What can happen to an entry point:

* it loads and its backends run: one table row per backend x optimizer x dtype x branch;
* it fails to load, its callable raises, it returns something that is not a
  ``Backend``, or a backend's factory raises: an error row, and the check fails;
* it needs an optional framework that is not installed (a ``ModuleNotFoundError`` for a
  module outside the entry point's own package, e.g. ``torch``): reported under
  "not checked" with the reason; this fails the check only with ``strict=True``.

A backend whose :attr:`~adamp_core.testing.Backend.env` differs from this process's
environment (a Keras backend other than the one this process would load) runs in a child
process, ``python -m adamp_core check --backend NAME --json FILE``, with that environment;
its results are merged.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from . import __version__
from .plugins import LoadError, describe, is_missing_optional, load_entry_points
from .testing import (
    Backend,
    CaseResult,
    SummaryRow,
    format_table,
    numpy_factory,
    run_conformance,
    summarize,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "NUMPY_BACKEND",
    "LoadError",
    "Discovery",
    "CheckReport",
    "discover_backends",
    "backend_from_factory",
    "run_check",
    "format_report",
    "write_json",
    "read_json",
]

ENTRY_POINT_GROUP = "adamp_core.backends"

#: The reference against itself: always available, and a sanity check of the suite.
NUMPY_BACKEND = Backend("numpy", numpy_factory)

OPTIMIZERS = ("AdamP", "SGDP")

#: Hidden flag telling the child process not to spawn children of its own.
CHILD_FLAG = "--child"


@dataclass
class Discovery:
    """What :func:`discover_backends` found."""

    backends: list[Backend] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    #: Entry points skipped because an optional framework is not installed.
    skipped: list[LoadError] = field(default_factory=list)
    #: Backend name -> the entry point that announced it.
    origin: dict[str, str] = field(default_factory=dict)


@dataclass
class CheckReport:
    """Everything one ``check`` run produced."""

    results: list[CaseResult] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    skipped: list[LoadError] = field(default_factory=list)
    #: Opt-in backends that were not named with ``--backend`` (never a failure).
    opt_in: list[LoadError] = field(default_factory=list)
    steps: int = 20
    strict: bool = False

    @property
    def rows(self) -> list[SummaryRow]:
        """Summary rows: measured rows first, then one error row per load error."""
        rows = summarize(self.results)
        rows += [
            SummaryRow(e.name, "-", "-", "-", math.nan, math.nan, math.nan, False, 0, [e.message])
            for e in self.errors
        ]
        return rows

    @property
    def passed(self) -> bool:
        """True when every row passed, something was checked, and (if strict) nothing
        was skipped."""
        rows = self.rows
        return bool(rows) and all(r.passed for r in rows) and not (self.strict and self.skipped)

    def merge(self, other: CheckReport) -> None:
        self.results += other.results
        self.errors += other.errors
        self.skipped += other.skipped
        self.opt_in += other.opt_in


def _as_backends(value: object, source: str) -> list[Backend]:
    items = [value] if isinstance(value, Backend) else value
    if not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        raise TypeError(f"{source} returned {type(value).__name__}, expected Backend or a list")
    items = list(items)
    for item in items:
        if not isinstance(item, Backend):
            raise TypeError(f"{source} returned a {type(item).__name__}, expected Backend")
    return items


def discover_backends(
    entry_points: Iterable[metadata.EntryPoint] | None = None,
    *,
    only_entry_points: Collection[str] | None = None,
) -> Discovery:
    """The NumPy backend plus every backend announced under :data:`ENTRY_POINT_GROUP`.

    Args:
        entry_points: the entry points to load; default: those installed in the group.
        only_entry_points: load only the entry points with these names (a child process
            loads only the one that announced its backend). Default: all.
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if only_entry_points is not None:
        entry_points = [ep for ep in entry_points if ep.name in only_entry_points]
    loaded = load_entry_points(ENTRY_POINT_GROUP, entry_points)
    found = Discovery(backends=[NUMPY_BACKEND], errors=loaded.errors, skipped=loaded.skipped)
    for name, announce in loaded.objects.items():
        try:
            if not callable(announce):
                raise TypeError(f"{announce!r} is not callable")
            announced = _as_backends(announce(), f"entry point {name!r}")
            found.backends += announced
            found.origin.update((b.name, name) for b in announced)
        except Exception as exc:
            record = LoadError(name, f"entry point {name!r}: {describe(exc)}")
            own = getattr(announce, "__module__", None) or name
            (found.skipped if is_missing_optional(exc, own) else found.errors).append(record)
    names = [b.name for b in found.backends]
    for name in sorted({n for n in names if names.count(n) > 1}):
        found.errors.append(LoadError(name, f"backend name {name!r} is announced twice"))
        found.backends = [b for b in found.backends if b.name != name]
    return found


def backend_from_factory(spec: str) -> Backend:
    """A backend from ``"module:attribute"`` naming a factory (or a ``Backend``)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--factory expects MODULE:ATTRIBUTE, got {spec!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, Backend):
        return obj
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return Backend(spec, obj)


def _env_satisfied(backend: Backend) -> bool:
    return all(os.environ.get(k) == v for k, v in backend.env.items())


def _run_in_child(backend: Backend, steps: int, origin: str | None) -> CheckReport:
    """Run ``backend`` in ``python -m adamp_core check`` with its environment."""
    with tempfile.TemporaryDirectory(prefix="adamp-check-") as tmp:
        path = os.path.join(tmp, "report.json")
        cmd = [
            sys.executable,
            "-m",
            "adamp_core",
            "check",
            "--backend",
            backend.name,
            "--json",
            path,
            "--steps",
            str(steps),
            CHILD_FLAG,
        ]
        if origin is not None:
            cmd += ["--entry-point", origin]
        env = {**os.environ, **backend.env}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if not os.path.exists(path):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return CheckReport(
                errors=[
                    LoadError(
                        backend.name,
                        f"child process ({' '.join(f'{k}={v}' for k, v in backend.env.items())}) "
                        f"exited with {proc.returncode} and no report: " + " | ".join(tail),
                    )
                ]
            )
        return read_json(path)


def run_check(
    discovery: Discovery,
    *,
    only: Sequence[str] = (),
    steps: int = 20,
    strict: bool = False,
    in_child: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run the conformance suite on the discovered backends.

    Args:
        discovery: from :func:`discover_backends`.
        only: backend names to run (default: all). An unknown name is an error.
        steps: optimizer steps per run (default 20).
        strict: count skipped (not installed) backends as failures. Default ``False``.
        in_child: run every backend here, even when its ``env`` differs (used by the
            child process itself; it then reports an env mismatch as an error).
        progress: called with a line of text before each backend.
    """
    report = CheckReport(
        errors=list(discovery.errors), skipped=list(discovery.skipped), steps=steps, strict=strict
    )
    backends = discovery.backends
    if only:
        known = {b.name for b in backends} | {e.name for e in report.errors + report.skipped}
        for name in only:
            if name not in known:
                report.errors.append(
                    LoadError(name, f"no backend named {name!r}; found: {', '.join(sorted(known))}")
                )
        backends = [b for b in backends if b.name in only]
        if all(name in known for name in only):  # else keep every load error: it may say why
            report.errors = [e for e in report.errors if e.name in only]
            report.skipped = [e for e in report.skipped if e.name in only]
    elif not in_child:
        report.opt_in = [
            LoadError(b.name, f"opt-in, run it with --backend {b.name}")
            for b in backends
            if b.opt_in
        ]
        backends = [b for b in backends if not b.opt_in]
    for backend in backends:
        started = time.perf_counter()
        here = _env_satisfied(backend)
        if progress is not None:
            where = (
                ""
                if here
                else " (child process: "
                + ", ".join(f"{k}={v}" for k, v in backend.env.items())
                + ")"
            )
            progress(f"checking {backend.name}{where} ...")
        if here:
            for optimizer in OPTIMIZERS:
                for dtype in backend.dtypes:
                    if progress is not None:
                        progress(f"  {backend.name}: {optimizer} {dtype}")
                    report.results += run_conformance(
                        backend.factory,
                        backend=backend.name,
                        optimizers=[optimizer],
                        dtypes=[dtype],
                        steps=steps,
                    )
        elif in_child:
            report.errors.append(
                LoadError(
                    backend.name,
                    f"environment {dict(backend.env)} not satisfied in the child process",
                )
            )
        else:
            report.merge(_run_in_child(backend, steps, discovery.origin.get(backend.name)))
        if progress is not None:
            progress(f"  {backend.name}: {time.perf_counter() - started:.1f} s")
    return report


def format_report(report: CheckReport) -> str:
    """The table, the error messages, what was not checked, and the verdict."""
    lines = [format_table(report.rows)]
    errors: dict[tuple[str, str], int] = {}  # (backend, message) -> rows it failed
    for r in report.rows:
        for msg in r.errors:
            errors[(r.backend, msg)] = errors.get((r.backend, msg), 0) + 1
    if errors:
        lines += ["", "errors:"]
        lines += [
            f"  {b}" + (f" ({n} rows)" if n > 1 else "") + f": {msg}"
            for (b, msg), n in errors.items()
        ]
    if report.skipped:
        lines += ["", "not checked (optional framework not installed):"]
        lines += [f"  {s.name}: {s.message}" for s in report.skipped]
    if report.opt_in:
        lines += ["", "not checked (slow, opt-in):"]
        lines += [f"  {s.name}: {s.message}" for s in report.opt_in]
    failed = [r for r in report.rows if not r.passed]
    verdict = "PASSED" if report.passed else "FAILED"
    detail = f"{len(report.rows) - len(failed)}/{len(report.rows)} rows pass"
    if report.strict and report.skipped:
        detail += f", {len(report.skipped)} skipped (strict)"
    lines += ["", f"{verdict}: {detail} ({report.steps} steps per run)"]
    return "\n".join(lines)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _row_dict(row: SummaryRow | CaseResult) -> dict[str, Any]:
    d = row.as_dict()
    for key in ("max_abs", "max_rel", "tol"):
        d[key] = _finite_or_none(d[key])
    return d


def write_json(report: CheckReport, path: str | os.PathLike[str]) -> None:
    """Write ``report`` as strict JSON (non-finite numbers become ``null``)."""
    data = {
        "adamp_core_version": __version__,
        "passed": report.passed,
        "steps": report.steps,
        "rows": [_row_dict(r) for r in report.rows],
        "results": [_row_dict(r) for r in report.results],
        "errors": [vars(e) for e in report.errors],
        "skipped": [vars(e) for e in report.skipped],
        "opt_in": [vars(e) for e in report.opt_in],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write("\n")


def read_json(path: str | os.PathLike[str]) -> CheckReport:
    """Read a report written by :func:`write_json` (``null`` numbers become ``inf``)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    results = []
    for d in data["results"]:
        for key in ("max_abs", "max_rel", "tol"):
            d[key] = math.inf if d[key] is None else d[key]
        results.append(CaseResult(**d))
    return CheckReport(
        results=results,
        steps=data["steps"],
        errors=[LoadError(**e) for e in data["errors"]],
        skipped=[LoadError(**e) for e in data["skipped"]],
        opt_in=[LoadError(**e) for e in data.get("opt_in", [])],
    )
