"""Channel axes: which axes of a tensor index its output channel (the rows AdamP projects).

The core works in PyTorch's layout (axis 0); adapters whose frameworks store the output
channel elsewhere (Keras, Flax) take a user's axes spec per tensor, checked and normalised
here so that every adapter accepts and refuses the same specs with the same messages.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Union

__all__ = ["Axes", "AxesSpec", "check_axes_spec", "normalize_axes"]

#: Sorted non-negative channel axes of one tensor; ``()`` means never projected.
Axes = tuple[int, ...]
#: What a user may give for one tensor: ``None`` (never project), an int or a sequence of
#: ints (negative ints count from the end).
AxesSpec = Union[int, Sequence[int], None]  # noqa: UP007


def _axis(a: Any) -> int | None:
    """``a`` as an int if it is an integer (Python's or NumPy's, not a bool), else None."""
    if isinstance(a, bool) or type(a).__name__ == "bool_":
        return None
    try:
        return operator.index(a)
    except TypeError:
        return None


def check_axes_spec(axes: Any) -> tuple[int, ...] | None:
    """Check the type of one axes spec (an :data:`AxesSpec`) without knowing the rank.

    Returns:
        ``None`` (never project) or the axes as a tuple of Python ints, unsorted and
        possibly negative: an int (NumPy integers too) or a list, tuple or range of them.

    Raises:
        ValueError: anything else, e.g. a string (``"0"`` is not an axis), a float, a
            bool, a set or a dict, or a sequence holding one of those.
    """
    if axes is None:
        return None
    single = _axis(axes)
    if single is not None:
        return (single,)
    if isinstance(axes, (list, tuple, range)):
        items = [_axis(a) for a in axes]
        bad = [a for a, i in zip(axes, items) if i is None]
        if not bad:
            return tuple(i for i in items if i is not None)
        raise ValueError(f"axes must be integers, got {bad[0]!r} in {axes!r}")
    raise ValueError(
        f"axes must be None, an int or a list/tuple of ints, got {type(axes).__name__} {axes!r}"
    )


def normalize_axes(axes: Any, ndim: int, where: str = "", kind: str = "tensor") -> Axes:
    """Turn an axes spec into sorted non-negative axes (``()``: never project).

    Tensors of rank below 2 are never projected, whatever ``axes`` says (its type is still
    checked).

    Args:
        axes: the spec (see :func:`check_axes_spec`).
        ndim: the tensor's rank.
        where: appended to the axes in messages, to name the tensor (e.g. ``" (leaf w)"``).
        kind: what the messages call the tensor (``"variable"``, ``"leaf"``).

    Raises:
        ValueError: not an :data:`AxesSpec`, an axis out of range, repeated, or all axes
            named (no row left).
    """
    items = check_axes_spec(axes)
    if items is None or ndim < 2:
        return ()
    out = []
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"channel axis {a!r}{where} is invalid for a {kind} of rank {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"channel axes {axes!r}{where} repeat an axis")
    if out and len(out) >= ndim:
        raise ValueError(f"channel axes {axes!r}{where} leave no axis for the rows (rank {ndim})")
    return tuple(sorted(out))
