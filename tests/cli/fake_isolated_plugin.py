"""A fake adapter that must only ever be imported in a child process.

On import it appends its process id to the file named by ``ADAMP_FAKE_PID_FILE`` (when
set), so a test can tell which processes imported it.
"""

from __future__ import annotations

import os

from fake_plugin import F64, needs_env_factory, never_projects, trainer

from adamp_core.testing import Backend, numpy_factory

__all__ = ["backends", "trainer"]

_PID_FILE = os.environ.get("ADAMP_FAKE_PID_FILE")
if _PID_FILE:
    with open(_PID_FILE, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")


def backends() -> list[Backend]:
    """One backend runnable in the entry point's child, one that needs another
    environment, and a broken opt-in one."""
    return [
        Backend("fake-iso", numpy_factory, F64),
        Backend("fake-iso-env", needs_env_factory, F64, env={"ADAMP_FAKE_ENV": "on"}),
        Backend("fake-iso-broken", never_projects, F64, opt_in=True),
    ]
