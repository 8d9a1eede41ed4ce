"""Command-line user errors, and the checks of output paths made before any work starts.

``check --json PATH`` and ``demo --out DIR`` write their results at the end of a run
that can take minutes; a path that cannot be written is refused up front instead, so a
typo does not cost the run. The checks try what the run will do (create a file or a
folder there) rather than read permission bits, which say nothing for the superuser or
for read-only file systems such as ``/proc``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

__all__ = [
    "UsageError",
    "check_output_file",
    "check_output_folder",
    "positive_int",
    "seed_int",
    "factory_spec",
]

#: Largest accepted ``--seed``: scikit-learn's ``random_state`` and NumPy's legacy
#: seeding take 32-bit unsigned integers.
MAX_SEED = 2**32 - 1


class UsageError(Exception):
    """A mistake in the command line found after parsing: reported as one line
    (``python -m adamp_core COMMAND: error: MESSAGE``), exit status 2, no traceback."""


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_output_file(option: str, path: str) -> None:
    """Refuse ``path`` unless a file can be written there (its folder exists, it is not a
    folder, and a file can be created in that folder or, if it exists, opened for writing).

    Nothing is written: an existing file is opened for appending and closed unchanged,
    and the folder is probed with a temporary file that is removed at once.

    Raises:
        UsageError: naming ``option`` and ``path``.
    """
    if not path:
        raise UsageError(f"{option}: the path is empty")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise UsageError(f"{option} {path}: folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: {folder} is not a folder")
    try:
        if os.path.exists(path):
            # O_NONBLOCK: a FIFO without a reader fails instead of blocking
            flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0)
            os.close(os.open(path, flags))
        else:
            with tempfile.TemporaryFile(dir=folder):
                pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({_why(exc)})") from None


def check_output_folder(option: str, path: str) -> None:
    """Refuse ``path`` unless it is (or can be created as) a folder files can be written in.

    An existing folder is probed with a temporary file; for a missing one, the nearest
    existing parent must be a folder in which a (temporary) folder can be created.
    Nothing is left behind.

    Raises:
        UsageError: naming ``option`` and ``path``.
    """
    if not path:
        raise UsageError(f"{option}: the path is empty")
    try:
        if os.path.exists(path):
            if not os.path.isdir(path):
                raise UsageError(f"{option} {path}: is a file, not a folder")
            with tempfile.TemporaryFile(dir=path):
                pass
            return
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
        with tempfile.TemporaryDirectory(dir=parent):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({_why(exc)})") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of steps or epochs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a seed in ``[0, 2**32 - 1]``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {text}")
    return value


def factory_spec(text: str) -> str:
    """argparse type: ``MODULE:ATTRIBUTE`` (importing it is left to the check, where a
    failure is an error row of the report)."""
    module, sep, attr = text.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise argparse.ArgumentTypeError(f"expected MODULE:ATTRIBUTE, got {text!r}")
    return text
