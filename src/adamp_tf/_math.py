"""The AdamP/SGDP update of one variable in ``keras.ops``, backend-neutral and traceable.

There is no Python branching on tensor values: the branch (channel view, layer view or
none) is chosen with ``ops.where``, so the same code runs eagerly, under
``jit_compile=True`` on TensorFlow, under JAX's ``jit`` and on the torch backend. The
math is the NumPy reference's (``adamp_core.functional``), with the channel rows indexed
by ``channel_axes`` instead of PyTorch's axis 0.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from adamp_core.functional import compute_dtype

from .axes import Axes

__all__ = ["const", "compute_dtype", "densify", "project", "decay_factor"]

Tensor = Any


def const(value: float, dtype: str) -> Tensor:
    """A scalar tensor of ``dtype`` holding the Python float ``value`` without a detour
    through float32 (``ops.cast(0.9, "float64")`` on TensorFlow rounds to float32 first).
    """
    return ops.convert_to_tensor(value, dtype=dtype)


def densify(gradient: Tensor) -> Tensor:
    """A dense tensor for ``gradient``; ``tf.IndexedSlices`` (Embedding) are scattered.

    The projection needs every row of the gradient (the decision is a max over rows and
    every row of the update is projected), so sparse gradients are made dense here, as
    PyTorch's dense Embedding gradients are.
    """
    if type(gradient).__name__ == "IndexedSlices":
        import tensorflow as tf

        return tf.convert_to_tensor(gradient)
    return gradient


def project(
    param: Tensor,
    grad: Tensor,
    update: Tensor,
    channel_axes: Axes,
    *,
    delta: float,
    wd_ratio: float,
    eps: float,
) -> tuple[Tensor, Tensor | float]:
    """Remove the radial part of ``update`` if ``param`` looks scale-invariant.

    Args:
        param, grad, update: tensors of one shape and dtype.
        channel_axes: the axes that index the channel rows; ``()`` never projects, nor
            does an empty (size 0) tensor.
        delta: the threshold; a view passes when ``max |cos(grad row, param row)|``
            is below ``delta / sqrt(row length)``.
        wd_ratio: weight decay factor returned when a view passes.
        eps: added to norms (``Pn = P / (|P| + eps)``) and the floor of the cosine's
            norms (``max(|x|, eps)``, PyTorch's ``cosine_similarity``).

    Returns:
        ``(projected update, ratio)``: ratio is ``wd_ratio`` (a scalar tensor) where a
        view passed, else 1.
    """
    shape = tuple(int(d) for d in param.shape)
    if not channel_axes or math.prod(shape) == 0:
        # an empty variable has no row to test (the threshold would divide by a zero row
        # length, the max would reduce nothing); shapes are static, so this is no branch
        # on tensor values
        return update, 1.0
    dtype = param.dtype
    view, row_axes = _row_view(shape, channel_axes)
    row_len = math.prod(view[a] for a in row_axes)
    size = math.prod(shape)
    param, grad, update = (ops.reshape(x, view) for x in (param, grad, update))

    def rows(x: Tensor) -> Tensor:
        return ops.sum(x, axis=row_axes, keepdims=True)

    # One pass of row sums serves both views: the layer sums are sums of the row sums.
    pp_c, gg_c, pg_c, pu_c = (
        rows(param * param),
        rows(grad * grad),
        rows(param * grad),
        rows(param * update),
    )
    pp_l, gg_l, pg_l, pu_l = (ops.sum(pp_c), ops.sum(gg_c), ops.sum(pg_c), ops.sum(pu_c))
    eps_t = const(eps, dtype)

    def cosine(pp: Tensor, gg: Tensor, pg: Tensor) -> Tensor:
        return ops.abs(pg) / (ops.maximum(ops.sqrt(gg), eps_t) * ops.maximum(ops.sqrt(pp), eps_t))

    def radial_coef(pp: Tensor, pu: Tensor) -> Tensor:
        denom = ops.sqrt(pp) + eps_t
        return (pu / denom) / denom

    channel_ok = ops.max(cosine(pp_c, gg_c, pg_c)) < const(delta / math.sqrt(row_len), dtype)
    layer_ok = cosine(pp_l, gg_l, pg_l) < const(delta / math.sqrt(size), dtype)
    zero = ops.zeros_like(pu_c)
    coef = ops.where(
        channel_ok,
        radial_coef(pp_c, pu_c),
        ops.where(layer_ok, radial_coef(pp_l, pu_l) + zero, zero),
    )
    projected = ops.logical_or(channel_ok, layer_ok)
    ratio = ops.where(projected, const(wd_ratio, dtype), const(1.0, dtype))
    return ops.reshape(update - param * coef, shape), ratio


def _row_view(shape: tuple[int, ...], channel_axes: Axes) -> tuple[tuple[int, ...], Axes]:
    """The shape to compute the projection in and the row axes of that shape.

    Channel axes that are the trailing axes (Keras kernels) or the leading ones
    (``Embedding``) give a 2-D ``(row length, channels)`` or ``(channels, row length)``
    view, so each row sum is a reduction over one axis: XLA on CPU reduces one axis of a
    2-D array faster than several leading axes of the original shape (the whole AdamP
    step on ResNet-50's variables under ``jit_compile`` took about 20% less time).
    Other layouts keep their shape. Reshapes of contiguous arrays copy nothing.

    On the JAX backend every variable keeps its shape: a variable may be sharded
    (``keras.distribution``), and merging a sharded axis with others (a conv kernel
    split on its input channels, a depthwise kernel on its multiplier) makes XLA gather
    the whole variable on every device, or, on a mesh with explicit axes, fails to trace.
    """
    ndim = len(shape)
    if keras.backend.backend() == "jax":
        return shape, tuple(a for a in range(ndim) if a not in channel_axes)
    channels = math.prod(shape[a] for a in channel_axes)
    row_len = math.prod(shape[a] for a in range(ndim) if a not in channel_axes)
    if channel_axes == tuple(range(ndim - len(channel_axes), ndim)):
        return (row_len, channels), (0,)
    if channel_axes == tuple(range(len(channel_axes))):
        return (channels, row_len), (1,)
    return shape, tuple(a for a in range(ndim) if a not in channel_axes)


def decay_factor(lr: Tensor, weight_decay: float, ratio: Tensor | float, dtype: str) -> Tensor:
    """``1 - lr * weight_decay * ratio`` in ``dtype`` (decoupled decay, scaled by the ratio)."""
    return const(1.0, dtype) - lr * const(weight_decay, dtype) * ratio
