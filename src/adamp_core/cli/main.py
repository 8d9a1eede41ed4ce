"""Command line: ``python -m adamp_core check`` and ``python -m adamp_core demo``.

Also installed as the ``adamp-optimizers`` console script.

``check`` runs the conformance suite (:mod:`adamp_core.testing`) against the NumPy
reference and every installed backend and exits non-zero on any failure.
``demo`` runs the paper's 2-D toy and a small training run and writes a report folder.

User errors (a meaningless number, an output path that cannot be written, an unknown
``--framework``) are refused before any work with one line on stderr and exit status 2,
never a traceback; argparse reports the ones it parses, :class:`~.paths.UsageError` the
rest. Exceptions that are not user errors are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .paths import (
    UsageError,
    check_output_file,
    check_output_folder,
    factory_spec,
    positive_int,
    seed_int,
)

__all__ = ["main", "build_parser"]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m adamp_core``."""
    from .trainer import DEFAULT_EPOCHS, QUICK_EPOCHS

    parser = argparse.ArgumentParser(
        prog="python -m adamp_core",
        description="AdamP/SGDP reference: conformance check and demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check",
        help="check every installed backend against the NumPy reference",
        description="Run the conformance suite (fixed seeded cases forcing the channel, "
        "layer and no-projection branches; AdamP and SGDP; float32 and float64) against "
        "the NumPy reference and every backend announced under the 'adamp_core.backends' "
        "entry point group. Exit status 1 on any failure or error.",
    )
    check.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this backend (repeatable); see --list",
    )
    check.add_argument(
        "--factory",
        metavar="MODULE:ATTR",
        type=factory_spec,
        help="check only your own implementation: a conformance factory "
        "(see adamp_core.testing) or a Backend",
    )
    check.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    check.add_argument(
        "--steps", type=positive_int, default=20, help="steps per run, >= 1 (default 20)"
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail when a backend is skipped because its framework is missing",
    )
    check.add_argument("--list", action="store_true", help="list the backends and exit")
    check.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    check.add_argument("--entry-point", action="append", default=None, help=argparse.SUPPRESS)

    demo = sub.add_parser(
        "demo",
        help="the paper's 2-D toy and a small training run, written to a report folder",
        description="Runs the 2-D toy (NumPy only), then trains a small conv net with "
        "batch normalization on scikit-learn's digits with SGD vs SGDP and AdamW vs AdamP "
        "in every installed framework, and writes plots, a markdown summary and JSON.",
    )
    demo.add_argument("--out", default="adamp-demo", help="report folder (default ./adamp-demo)")
    demo.add_argument(
        "--quick", action="store_true", help="smoke run: 1 epoch on a subset, short toy"
    )
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"training epochs (default {DEFAULT_EPOCHS}, {QUICK_EPOCHS} with --quick)",
    )
    demo.add_argument("--seed", type=seed_int, default=0, help="seed, 0 to 2**32 - 1 (default 0)")
    demo.add_argument(
        "--framework",
        action="append",
        default=[],
        metavar="NAME",
        help="train only with this framework (repeatable): torch, keras",
    )
    demo.add_argument("--no-train", action="store_true", help="run the toy only")
    demo.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    demo.add_argument("--trainer", help=argparse.SUPPRESS)
    demo.add_argument("--data", help=argparse.SUPPRESS)
    demo.add_argument("--json", help=argparse.SUPPRESS)
    return parser


def _check(args: argparse.Namespace) -> int:
    from .check import (
        Discovery,
        backend_from_factory,
        child_main,
        discover_backends,
        format_report,
        list_backends,
        run_check,
        write_json,
    )
    from .plugins import LoadError, describe

    if args.child:
        return child_main(
            args.entry_point,
            only=args.backend,
            steps=args.steps,
            path=args.json,
            list_only=args.list,
        )
    if args.json is not None and not args.list:  # is not None: "" is refused, not ignored
        check_output_file("--json", args.json)
    if args.factory:
        try:
            discovery = Discovery(backends=[backend_from_factory(args.factory)])
        except Exception as exc:
            discovery = Discovery(errors=[LoadError(args.factory, describe(exc))])
    else:
        discovery = discover_backends(only_entry_points=args.entry_point, isolate=True)
    if args.list:
        listed = list_backends(discovery)
        for b in listed.backends:
            env = " ".join(f"{k}={v}" for k, v in b.env.items())
            print(f"{b.name}  dtypes={','.join(b.dtypes)}" + (f"  env: {env}" if env else ""))
        for e in listed.errors:
            print(f"{e.name}  ERROR: {e.message}")
        for e in listed.skipped:
            print(f"{e.name}  not installed: {e.message}")
        return 0 if not listed.errors else 1
    report = run_check(
        discovery, only=args.backend, steps=args.steps, strict=args.strict, progress=_say
    )
    print(format_report(report), flush=True)  # before the JSON: a failed write keeps it
    if args.json is not None:
        try:
            write_json(report, args.json)
        except OSError as exc:  # checked before the run; the file system changed since
            _say(f"python -m adamp_core check: error: --json {args.json}: {exc}")
            return 1
    return 0 if report.passed else 1


def _check_frameworks(names: Sequence[str]) -> None:
    """Every ``--framework`` must name an installed demo trainer (read from the package
    metadata; nothing is imported)."""
    from importlib import metadata

    from .demo import ENTRY_POINT_GROUP

    known = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"--framework {unknown[0]}: no demo trainer of that name; "
            f"installed: {', '.join(known) or 'none'}"
        )


def _inside(filename: object, folder: str) -> bool:
    """Whether ``filename`` (of an OSError) is ``folder`` or a path inside it."""
    if not isinstance(filename, (str, bytes)):
        return False
    path, top = os.path.abspath(os.fsdecode(filename)), os.path.abspath(folder)
    return path == top or path.startswith(top + os.sep)


def _demo(args: argparse.Namespace) -> int:
    from .demo import child_main, run_demo
    from .trainer import DEFAULT_EPOCHS

    if args.child:
        epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
        return child_main(args.trainer, args.data, args.json, epochs, args.seed)
    check_output_folder("--out", args.out)
    if not args.no_train:
        _check_frameworks(args.framework)
    try:
        report = run_demo(
            out=args.out,
            quick=args.quick,
            epochs=args.epochs,
            seed=args.seed,
            frameworks=args.framework,
            train=not args.no_train,
            progress=_say,
            isolate=True,
        )
    except OSError as exc:  # --out was checked before the run; the file system changed since
        if not _inside(exc.filename, args.out):
            raise
        _say(f"python -m adamp_core demo: error: --out {args.out}: {exc}")
        return 1
    print(report.summary_text)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Exit status: 0 success, 1 a failed check or demo (or stdout closed early), 2 a user
    error (argparse's, or a :class:`~.paths.UsageError` found before any work), 130
    interrupted (Ctrl-C).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        return _demo(args)
    except UsageError as exc:
        _say(f"{parser.prog} {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say(f"{parser.prog} {args.command}: interrupted")
        return 130
    except BrokenPipeError:  # stdout closed early (``check | head``): nothing left to say
        # Python flushes stdout again at exit; point it at devnull so that fails quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
