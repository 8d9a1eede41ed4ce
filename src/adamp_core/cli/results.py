"""What ``python -m adamp_core demo`` did, as data (shared by the demo and its report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .plugins import LoadError
from .toy import ToyRun

__all__ = ["DemoReport"]


@dataclass
class DemoReport:
    """What :func:`run_demo` did: the toy, each framework's histories, what it skipped."""

    out: str
    toy: list[ToyRun]
    trainings: dict[str, dict[str, dict[str, Any]]]
    skipped: list[str]
    errors: list[LoadError]
    files: list[str]
    summary_text: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors
