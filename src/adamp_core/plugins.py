"""Entry-point discovery shared by ``check`` and ``demo``: the core never imports an adapter.

An entry point either loads, fails because an optional framework is not installed (a
``ModuleNotFoundError`` for a module outside the entry point's own package, such as
``torch`` or ``keras``: "skipped"), or fails for any other reason ("error").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata

__all__ = ["LoadError", "Loaded", "describe", "is_missing_optional", "load_entry_points"]


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
