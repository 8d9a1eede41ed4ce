"""Which axes of a parameter play PyTorch's output-channel axis (axis 0).

AdamP's channel view has one row per output channel; the rows are indexed by the
parameter's *channel axes* and each row holds every element of the other axes, so that
the row length (and with it the ``delta / sqrt(row length)`` threshold) equals PyTorch's.

========================================  ============================  ===============
parameter                                 layout                        channel axes
========================================  ============================  ===============
Flax/Haiku Dense, Conv, ConvTranspose     ``(in, out)``,                last
kernels; any leaf of rank >= 2 (the       ``(H, W, in, out)``
default rule)
Flax ``Embed`` ``embedding``              ``(vocab, features)``         first
Flax attention ``query``/``key``/         ``(embed, heads, head_dim)``  last two
``value`` ``kernel`` (DenseGeneral)
Equinox / PyTorch-layout weights          ``(out, in, ...)``            first
vectors and scalars (biases, norms)       any                           never projected
========================================  ============================  ===============

The ``channel_axes`` argument of :func:`adamp_jax.adamp` and :func:`adamp_jax.sgdp` is
a :data:`ChannelAxes`: ``None`` for the default rule (last axis), a tree of per-leaf
specs (or a prefix of the parameter tree), or a callable from the parameters to such a
tree. :func:`flax_channel_axes` and :func:`equinox_channel_axes` are such callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import jax

from adamp_core.axes import Axes
from adamp_core.axes import normalize_axes as _normalize

__all__ = [
    "Axes",
    "AxesSpec",
    "ChannelAxes",
    "default_channel_axes",
    "flax_channel_axes",
    "equinox_channel_axes",
    "normalize_axes",
    "leaf_channel_axes",
    "leaf_decay_mask",
]

#: One leaf's spec: an int, a tuple of ints (negative counts from the end), or ``None``
#: (or ``()``) for "never project this leaf". Only tuples whose items are all ints are
#: specs: any other tuple, list or dict in a ``channel_axes`` tree is a tree node.
AxesSpec = Union[int, tuple[int, ...], None]  # noqa: UP007 (runtime alias, py3.10)

#: The ``channel_axes`` argument: ``None`` (last axis of every leaf of rank >= 2), a
#: pytree of :data:`AxesSpec` with the parameters' structure or a prefix of it, or a
#: callable ``f(params) -> such a tree``.
ChannelAxes = Union[Any, Callable[[Any], Any], None]  # noqa: UP007

_ATTENTION_QKV = ("query", "key", "value")


def _is_spec(x: Any) -> bool:
    """Is ``x`` one leaf's axes spec rather than a tree node?"""
    if x is None or (isinstance(x, int) and not isinstance(x, bool)):
        return True
    return isinstance(x, tuple) and all(isinstance(a, int) and not isinstance(a, bool) for a in x)


def normalize_axes(axes: AxesSpec, ndim: int, where: str = "") -> Axes:
    """:func:`adamp_core.axes.normalize_axes` for a leaf of rank ``ndim`` (``where`` names
    it in messages)."""
    return _normalize(axes, ndim, where, kind="leaf")


def _names(path: Sequence[Any]) -> tuple[str, ...]:
    """The names along a key path; a Flax NNX ``Variable``'s trailing ``.value`` dropped."""
    keys = list(path)
    if len(keys) > 1 and isinstance(keys[-1], jax.tree_util.GetAttrKey):
        if keys[-1].name == "value":
            keys.pop()
    out = []
    for k in keys:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return tuple(out)


def _last_axis(leaf: Any) -> AxesSpec:
    return (-1,) if len(leaf.shape) >= 2 else None


def default_channel_axes(params: Any) -> Any:
    """The default rule as a tree: the last axis of every leaf of rank >= 2, else ``None``
    (Flax/Haiku Dense ``(in, out)`` and Conv ``(H, W, in, out)`` kernels)."""
    return jax.tree.map(_last_axis, params)


def _flax_leaf(path: Sequence[Any], leaf: Any) -> AxesSpec:
    names = _names(path)
    ndim = len(leaf.shape)
    name = names[-1] if names else ""
    if ndim < 2 or name == "bias":  # DenseGeneral biases are 2-D: (heads, head_dim)
        return None
    if name == "embedding":
        return (0,)
    if ndim == 3 and name == "kernel" and len(names) > 1 and names[-2] in _ATTENTION_QKV:
        return (-2, -1)
    return (-1,)


def flax_channel_axes(params: Any) -> Any:
    """Channel axes of Flax (Linen or NNX) parameters, decided from their paths.

    * ``embedding`` (``Embed``, ``(vocab, features)``): the first axis;
    * ``kernel`` of rank 3 under a ``query``, ``key`` or ``value`` module (attention
      ``DenseGeneral`` / ``LinearGeneral``, ``(embed, heads, head_dim)``): the last two;
    * ``bias`` and leaves of rank below 2: never projected;
    * every other leaf (Dense, Conv, the attention ``out`` kernel ``(heads, head_dim,
      embed)``): the last axis.

    Use as ``adamp(..., channel_axes=adamp_jax.flax_channel_axes)``.
    """
    return jax.tree_util.tree_map_with_path(_flax_leaf, params)


def _first_axis(leaf: Any) -> AxesSpec:
    return (0,) if len(getattr(leaf, "shape", ())) >= 2 else None


def equinox_channel_axes(params: Any) -> Any:
    """Channel axes of Equinox (or any PyTorch-layout) parameters: the first axis of every
    leaf of rank >= 2 (``Linear`` ``(out, in)``, ``Conv``/``ConvTranspose``
    ``(out, in, ...)``, ``Embedding`` ``(vocab, features)``), else never projected.

    Use as ``adamp(..., channel_axes=adamp_jax.equinox_channel_axes)`` with the
    parameters as ``eqx.filter(model, eqx.is_inexact_array)`` gives them.
    """
    return jax.tree.map(_first_axis, params)


def _broadcast(
    prefix: Any, params: Any, is_leaf: Callable[[Any], bool] | None, what: str
) -> list[Any]:
    """``prefix``'s leaf for each leaf of ``params`` (a prefix leaf covers its subtree)."""
    try:
        full = jax.tree.broadcast(prefix, params, is_leaf=is_leaf)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{what} must have the structure of the parameters or of a prefix of it: {exc}"
        ) from None
    return jax.tree.leaves(full, is_leaf=is_leaf)


def leaf_channel_axes(channel_axes: ChannelAxes, params: Any) -> list[Axes]:
    """The normalised channel axes of each leaf of ``params``, in ``jax.tree.leaves`` order.

    Raises:
        ValueError: a tree that does not match the parameters, or an invalid spec.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    tree = channel_axes(params) if callable(channel_axes) else channel_axes
    if tree is None:
        specs: list[Any] = [_last_axis(leaf) for _, leaf in flat]
    else:
        specs = _broadcast(tree, params, _is_spec, "channel_axes")
    if len(specs) != len(flat):  # zip below must not drop a leaf silently
        raise ValueError(f"channel_axes gives {len(specs)} specs for {len(flat)} leaves")
    out = []
    for (path, leaf), spec in zip(flat, specs):
        where = f" (leaf {jax.tree_util.keystr(path)})"
        if not _is_spec(spec):
            raise ValueError(
                f"channel_axes{where}: expected an int, a tuple of ints or None, got {spec!r}"
            )
        out.append(normalize_axes(spec, len(leaf.shape), where))
    return out


def leaf_decay_mask(mask: Any, params: Any) -> list[bool]:
    """Whether each leaf of ``params`` gets weight decay, from an ``optax``-style ``mask``:
    ``None`` (every leaf), a tree of bools (or a prefix of one), or a callable
    ``f(params) -> such a tree``. ``True`` means "decay this leaf"."""
    n = len(jax.tree.leaves(params))
    tree = mask(params) if callable(mask) else mask
    if tree is None:
        return [True] * n
    out = []
    for flag in _broadcast(tree, params, None, "mask"):
        try:
            out.append(bool(flag))
        except jax.errors.ConcretizationTypeError:
            raise ValueError("mask leaves must be Python bools, not traced values") from None
    return out
