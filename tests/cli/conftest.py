"""Make this folder's helpers and fake plugins importable (here and by module name in
entry points), in this process and in the child processes the CLI starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture(autouse=True)
def _fakes_importable_in_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """Child processes (``check``/``demo`` isolate adapters) import the fake plugins too."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (HERE, path) if p))
