"""Error-input tables: each bad input, the exception it must raise, and a phrase of its message.

In the style of torch's ``ErrorOptimizerInput`` (``torch/testing/_internal/
common_optimizers.py``), but framework-free, so every adapter's table uses the same row
type and the same driver::

    ROWS = [
        ErrorInput(
            "bare-2d-array",
            "a 2-D array instead of a list of arrays",
            make=lambda: np.ones((3, 4)),
            call=lambda w: AdamP(w),
            error=TypeError,
            match=r"params must be an iterable",
        ),
    ]

    @pytest.mark.parametrize("row", as_params(ROWS))
    def test_refused(row):
        expect_refused(row, snapshot=my_snapshot)

``make`` builds what the refused call acts on (an optimizer that has taken a step, or
the arrays handed to a constructor); ``snapshot`` turns it into plain data (NumPy arrays,
numbers, strings, nested lists/tuples/dicts), taken before and after the call, which must
be bit-identical: a refused call changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pytest

__all__ = ["ErrorInput", "as_params", "expect_refused", "assert_bit_identical"]

T = TypeVar("T")


def _no_target() -> None:
    return None


@dataclass(frozen=True)
class ErrorInput(Generic[T]):
    """One refused call.

    Attributes:
        id: short, unique within its table; the pytest id.
        description: what is wrong with the input, in words.
        call: makes the refused call on the target ``make()`` built.
        error: the exception type it must raise (or a tuple of types).
        match: a regex searched (``re.search``) in ``str(exception)``; it should name
            the offending argument.
        make: builds the target (default: ``None``, for calls that need nothing).
    """

    id: str
    description: str
    call: Callable[[T], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str
    make: Callable[[], T] = field(default=_no_target)  # type: ignore[assignment]


def as_params(rows: Iterable[ErrorInput[Any]]) -> list[Any]:
    """``pytest.param(row, id=row.id)`` for each row; ids must be unique."""
    rows = list(rows)
    ids = [r.id for r in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate error-table ids: {duplicates}"
    return [pytest.param(r, id=r.id) for r in rows]


def expect_refused(
    row: ErrorInput[T],
    snapshot: Callable[[T], object] | None = None,
    target: T | None = None,
) -> pytest.ExceptionInfo[BaseException]:
    """Make ``row``'s call and check that it raises ``row.error`` matching ``row.match``
    and (with ``snapshot``) that the target is bit-identical before and after.

    Args:
        row: the table row.
        snapshot: the target as plain data; ``None`` skips the nothing-changed check.
        target: use this instead of ``row.make()`` (for targets a fixture builds).
    """
    obj = row.make() if target is None else target
    before = None if snapshot is None else snapshot(obj)
    with pytest.raises(row.error, match=row.match) as info:
        row.call(obj)
    if snapshot is not None:
        assert_bit_identical(before, snapshot(obj), where=row.id)
    return info


def assert_bit_identical(before: object, after: object, where: str = "") -> None:
    """Equal structure, and equal bits at every leaf (arrays: dtype, shape and bytes, so
    NaN equals NaN and -0.0 differs from 0.0; floats: their ``float.hex``)."""
    _compare(before, after, where or "snapshot")


def _compare(a: object, b: object, path: str) -> None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), path
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (
            f"{path}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}"
        )
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (
            f"{path}: values changed"
        )
        return
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and list(a) == list(b), f"{path}: keys {list(a)} -> {b!r}"
        for k in a:
            _compare(a[k], b[k], f"{path}[{k!r}]")
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and type(a) is type(b), f"{path}: {a!r} -> {b!r}"
        assert len(a) == len(b), f"{path}: {a!r} -> {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(x, y, f"{path}[{i}]")
        return
    if isinstance(a, float) and isinstance(b, float) and (math.isnan(a) or math.isnan(b)):
        assert a.hex() == b.hex(), f"{path}: {a!r} -> {b!r}"
        return
    assert type(a) is type(b) and a == b, f"{path}: {a!r} -> {b!r}"
    if isinstance(a, float) and isinstance(b, float):  # -0.0 == 0.0, but not bit for bit
        assert a.hex() == b.hex(), f"{path}: {a!r} -> {b!r}"
