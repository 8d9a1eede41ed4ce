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

Isolation (the command line's default, ``isolate=True`` of :func:`discover_backends`):
this process imports no adapter. Each entry point is loaded in a child process of its own,
``python -m adamp_core check --child --entry-point NAME=VALUE --json FILE`` (see
:func:`child_main`), which runs the entry point's backends whose environment it has and
writes what it found and measured as JSON; frameworks that cannot share a process (such
as TensorFlow and a CUDA build of torch) never meet. A backend whose
:attr:`~adamp_core.testing.Backend.env` differs from its process's environment (a Keras
backend other than the one Keras would load) runs in a child process of its own, with
that environment; results are merged. The NumPy backend and a ``--factory`` run here.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .. import __version__
from ..testing import (
    Backend,
    CaseResult,
    SummaryRow,
    format_table,
    numpy_factory,
    run_conformance,
    summarize,
)
from .plugins import (
    ChildRun,
    LoadError,
    child_progress,
    describe,
    entry_point_arg,
    is_missing_optional,
    load_entry_points,
    parse_entry_point_arg,
    run_child,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "NUMPY_BACKEND",
    "LoadError",
    "Discovery",
    "CheckReport",
    "discover_backends",
    "list_backends",
    "backend_from_factory",
    "child_main",
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
    #: Backend name -> the name of the entry point that announced it.
    origin: dict[str, str] = field(default_factory=dict)
    #: Entry-point name -> the entry point, for those loaded here.
    entry_points: dict[str, metadata.EntryPoint] = field(default_factory=dict)
    #: Entry points not loaded here: :func:`run_check` loads and runs each in a child
    #: process of its own (``isolate=True``), :func:`list_backends` lists their backends.
    isolated: list[metadata.EntryPoint] = field(default_factory=list)


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
    #: In a ``check --child`` process: backends not run because their ``env`` differs.
    deferred: list[str] = field(default_factory=list)

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
        self.deferred += other.deferred


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
    isolate: bool = False,
) -> Discovery:
    """The NumPy backend plus every backend announced under :data:`ENTRY_POINT_GROUP`.

    Args:
        entry_points: the entry points to load; default: those installed in the group.
        only_entry_points: load only the entry points with these names. Default: all.
        isolate: load nothing here: the entry points go to ``Discovery.isolated``, and
            :func:`run_check` loads and runs each in a child process of its own (so this
            process imports no adapter and no framework). Default ``False``: load them
            here (the command line isolates).
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if only_entry_points is not None:
        entry_points = [ep for ep in entry_points if ep.name in only_entry_points]
    if isolate:
        return Discovery(
            backends=[NUMPY_BACKEND], isolated=sorted(entry_points, key=lambda e: e.name)
        )
    entry_points = list(entry_points)
    loaded = load_entry_points(ENTRY_POINT_GROUP, entry_points)
    found = Discovery(
        backends=[NUMPY_BACKEND],
        errors=loaded.errors,
        skipped=loaded.skipped,
        entry_points={ep.name: ep for ep in entry_points},
    )
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


def _env_text(backend: Backend) -> str:
    return ", ".join(f"{k}={v}" for k, v in backend.env.items())


def _runs_in_a_child(optimizer: str, params: list[Any], hparams: dict[str, Any]) -> Any:
    raise RuntimeError("this backend was listed by a child process and runs only in one")


def _backend_from_dict(d: dict[str, Any]) -> Backend:
    """A backend described by a child process (its factory exists only there)."""
    return Backend(
        d["name"], _runs_in_a_child, tuple(d["dtypes"]), env=dict(d["env"]), opt_in=d["opt_in"]
    )


def _backend_dict(backend: Backend) -> dict[str, Any]:
    return {
        "name": backend.name,
        "dtypes": list(backend.dtypes),
        "env": dict(backend.env),
        "opt_in": backend.opt_in,
    }


@dataclass
class _ChildResult:
    """What a ``check --child`` process wrote: the backends its entry point announced,
    its report, and the backends it left for a child with another environment."""

    backends: list[Backend]
    report: CheckReport
    deferred: list[str]


def _check_in_child(
    entry_point: str | None,
    *,
    only: Sequence[str] = (),
    steps: int,
    list_only: bool = False,
    env: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> _ChildResult | ChildRun:
    """Run ``python -m adamp_core check --child`` (see :func:`child_main`); its result, or
    how it ended when it wrote none."""
    with tempfile.TemporaryDirectory(prefix="adamp-check-") as tmp:
        path = os.path.join(tmp, "child.json")
        args = ["check", CHILD_FLAG, "--json", path, "--steps", str(steps)]
        args += [a for name in only for a in ("--backend", name)]
        if entry_point is not None:
            args += ["--entry-point", entry_point]
        if list_only:
            args.append("--list")
        ended = run_child(args, env=env, progress=progress)
        if not os.path.exists(path):
            return ended
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    return _ChildResult(
        [_backend_from_dict(d) for d in data["backends"]],
        _report_from_dict(data["report"]),
        list(data["deferred"]),
    )


def _run_in_child(
    backend: Backend,
    steps: int,
    origin: str | None,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run ``backend`` in a child process with its environment; ``origin`` is the entry
    point that announced it (``NAME`` installed, or ``NAME=VALUE``)."""
    where = f"child process ({_env_text(backend)})"
    got = _check_in_child(
        origin, only=[backend.name], steps=steps, env=dict(backend.env), progress=progress
    )
    if isinstance(got, ChildRun):
        return CheckReport(errors=[LoadError(backend.name, got.failure(where))])
    if backend.name in got.deferred:
        message = f"environment {dict(backend.env)} not satisfied in the child process"
        return CheckReport(errors=[LoadError(backend.name, message)])
    if backend.name not in {b.name for b in got.backends}:
        why = [e.message for e in got.report.errors + got.report.skipped]
        message = f"{where} found no backend {backend.name!r}" + (
            ": " + "; ".join(why) if why else ""
        )
        return CheckReport(errors=[LoadError(backend.name, message)])
    report = got.report
    results = [r for r in report.results if r.backend == backend.name]
    errors = [e for e in report.errors if e.name == backend.name]
    if not results and not errors:  # never a vacuous pass
        errors = [LoadError(backend.name, f"{where} compared nothing (no result rows)")]
    return CheckReport(results=results, errors=errors)


def _run_entry_point(
    ep: metadata.EntryPoint,
    only: Sequence[str],
    steps: int,
    progress: Callable[[str], None] | None,
) -> tuple[list[Backend], CheckReport]:
    """Load ``ep`` in a child process and run its backends there, those that need another
    environment each in a child process of their own; the backends it announced and their
    report."""
    got = _check_in_child(entry_point_arg(ep), only=only, steps=steps, progress=progress)
    if isinstance(got, ChildRun):
        return [], CheckReport(errors=[LoadError(ep.name, got.failure("child process"))])
    for name in got.deferred:
        backend = next(b for b in got.backends if b.name == name)
        got.report.merge(_run_in_child(backend, steps, entry_point_arg(ep), progress))
    return got.backends, got.report


def _selected(
    backends: Sequence[Backend], only: Sequence[str], report: CheckReport
) -> list[Backend]:
    """The backends to run: those named in ``only``, or else all but the opt-in ones (which
    go to ``report.opt_in``)."""
    if only:
        return [b for b in backends if b.name in only]
    report.opt_in += [
        LoadError(b.name, f"opt-in, run it with --backend {b.name}") for b in backends if b.opt_in
    ]
    return [b for b in backends if not b.opt_in]


def _drop_duplicates(backends: list[Backend], report: CheckReport) -> None:
    """Backends announced twice (by two entry points loaded in different processes) are an
    error, and their results are dropped."""
    names = [b.name for b in backends]
    for name in sorted({n for n in names if names.count(n) > 1}):
        report.errors.append(LoadError(name, f"backend name {name!r} is announced twice"))
        report.results = [r for r in report.results if r.backend != name]
        report.opt_in = [e for e in report.opt_in if e.name != name]
        backends[:] = [b for b in backends if b.name != name]


def _apply_only(known: set[str], only: Sequence[str], report: CheckReport) -> None:
    """An error for each name in ``only`` that is not a backend; when all are, keep only
    their errors and skips (else keep every load error: it may say why)."""
    unknown = [name for name in only if name not in known]
    if not unknown:
        report.errors = [e for e in report.errors if e.name in only]
        report.skipped = [e for e in report.skipped if e.name in only]
    report.errors += [
        LoadError(name, f"no backend named {name!r}; found: {', '.join(sorted(known))}")
        for name in unknown
    ]


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

    Backends found in this process run here, or in a child process with their ``env``
    when this process's environment differs; each entry point of
    ``discovery.isolated`` is loaded and run in a child process of its own.

    Args:
        discovery: from :func:`discover_backends`.
        only: backend names to run (default: all but the opt-in ones). An unknown name
            is an error.
        steps: optimizer steps per run (default 20).
        strict: count skipped (not installed) backends as failures. Default ``False``.
        in_child: this process is a ``check --child`` of an isolated check: a name of
            ``only`` that is not here is no error (another entry point may announce it),
            load errors are kept, and a backend whose ``env`` differs is not run but
            listed in ``report.deferred``. Default ``False``.
        progress: called with a line of text before each backend.

    Raises:
        ValueError: ``steps`` is not an integer >= 1 (zero steps would compare nothing).
    """
    _check_steps(steps)
    report = CheckReport(
        errors=list(discovery.errors), skipped=list(discovery.skipped), steps=steps, strict=strict
    )
    found = list(discovery.backends)
    known = {b.name for b in found} | {e.name for e in report.errors + report.skipped}
    for backend in _selected(discovery.backends, only, report):
        here = _env_satisfied(backend)
        if not here and in_child:
            report.deferred.append(backend.name)
        elif not here:  # the child says what it is doing
            origin = discovery.origin.get(backend.name)
            ep = discovery.entry_points.get(origin) if origin is not None else None
            origin_arg = entry_point_arg(ep) if ep is not None else origin
            report.merge(_run_in_child(backend, steps, origin_arg, progress))
        else:
            _run_here(backend, steps, report, in_child, progress)
    for ep in discovery.isolated:
        backends, child_report = _run_entry_point(ep, only, steps, progress)
        found += backends
        report.merge(child_report)
        known |= {b.name for b in backends}
        known |= {e.name for e in child_report.errors + child_report.skipped}
    if discovery.isolated:
        _drop_duplicates(found, report)
    if only and not in_child:
        _apply_only(known, only, report)
    return report


def _check_steps(steps: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def _run_here(
    backend: Backend,
    steps: int,
    report: CheckReport,
    in_child: bool,
    progress: Callable[[str], None] | None,
) -> None:
    """Run ``backend`` in this process; its results go to ``report``."""
    started = time.perf_counter()
    before = len(report.results)
    if progress is not None:
        where = f" (child process: {_env_text(backend)})" if in_child and backend.env else ""
        progress(f"checking {backend.name}{where} ...")
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
    if len(report.results) == before:  # never a vacuous pass
        report.errors.append(LoadError(backend.name, "compared nothing (no result rows)"))
    if progress is not None:
        progress(f"  {backend.name}: {time.perf_counter() - started:.1f} s")


def list_backends(discovery: Discovery, progress: Callable[[str], None] | None = None) -> Discovery:
    """``discovery`` with its isolated entry points loaded, each in a child process, for
    listing: the backends they announce are added (their factories run only in a child
    process, so pass the original ``discovery`` to :func:`run_check`)."""
    listed = Discovery(
        backends=list(discovery.backends),
        errors=list(discovery.errors),
        skipped=list(discovery.skipped),
        origin=dict(discovery.origin),
        entry_points=dict(discovery.entry_points),
    )
    for ep in discovery.isolated:
        # steps is unused when listing, but the child's parser wants a count >= 1
        got = _check_in_child(entry_point_arg(ep), steps=1, list_only=True, progress=progress)
        if isinstance(got, ChildRun):
            listed.errors.append(LoadError(ep.name, got.failure("child process")))
            continue
        listed.backends += got.backends
        listed.errors += got.report.errors
        listed.skipped += got.report.skipped
        listed.origin.update((b.name, ep.name) for b in got.backends)
        listed.entry_points[ep.name] = ep
    report = CheckReport()
    _drop_duplicates(listed.backends, report)
    listed.errors += report.errors
    return listed


def _child_entry_points(texts: Sequence[str] | None) -> list[metadata.EntryPoint] | None:
    """``--entry-point`` values: ``NAME=VALUE``, or the ``NAME`` of an installed one."""
    if texts is None:
        return None
    installed = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    out = []
    for text in texts:
        if "=" in text:
            out.append(parse_entry_point_arg(text, ENTRY_POINT_GROUP))
        elif text in installed:
            out.append(installed[text])
    return out


def child_main(
    entry_points: Sequence[str] | None,
    *,
    only: Sequence[str],
    steps: int,
    path: str,
    list_only: bool = False,
) -> int:
    """``check --child``: load ``entry_points`` (``NAME=VALUE`` or an installed ``NAME``;
    default: all installed) here, run their backends whose environment this process has
    (unless ``list_only``), and write what was found and run as JSON to ``path`` for the
    parent. The NumPy backend is left to the parent. Returns the exit code (0)."""
    discovery = discover_backends(_child_entry_points(entry_points))
    discovery.backends = [b for b in discovery.backends if b is not NUMPY_BACKEND]
    if list_only:
        report = CheckReport(errors=discovery.errors, skipped=discovery.skipped, steps=steps)
    else:
        report = run_check(
            discovery, only=only, steps=steps, in_child=True, progress=child_progress
        )
    data = {
        "backends": [_backend_dict(b) for b in discovery.backends],
        "deferred": report.deferred,
        "report": _report_dict(report),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, allow_nan=False)
    return 0


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


def _report_dict(report: CheckReport) -> dict[str, Any]:
    return {
        "adamp_core_version": __version__,
        "passed": report.passed,
        "steps": report.steps,
        "rows": [_row_dict(r) for r in report.rows],
        "results": [_row_dict(r) for r in report.results],
        "errors": [vars(e) for e in report.errors],
        "skipped": [vars(e) for e in report.skipped],
        "opt_in": [vars(e) for e in report.opt_in],
    }


def _report_from_dict(data: dict[str, Any]) -> CheckReport:
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


def write_json(report: CheckReport, path: str | os.PathLike[str]) -> None:
    """Write ``report`` as strict JSON (non-finite numbers become ``null``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_report_dict(report), f, indent=1, allow_nan=False)
        f.write("\n")


def read_json(path: str | os.PathLike[str]) -> CheckReport:
    """Read a report written by :func:`write_json` (``null`` numbers become ``inf``)."""
    with open(path, encoding="utf-8") as f:
        return _report_from_dict(json.load(f))
