"""The AdamP/SGDP math on one leaf, in ``jax.numpy``, traceable end to end.

The same formulas as the NumPy reference (``adamp_core.functional``), with the channel
rows indexed by the leaf's channel axes instead of PyTorch's axis 0. Nothing branches in
Python on a value: the branch (channel view, layer view or none) is chosen with
``jnp.where``, and every hyperparameter may be a traced scalar. Row sums contract the
non-channel axes in place (no reshape of the leaf), so a leaf sharded along any axis
keeps its sharding and XLA adds only the sums' collectives.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from adamp_core.functional import compute_dtype as core_compute_dtype

from .axes import Axes

__all__ = ["compute_dtype", "scalar", "project", "adam_direction", "sgd_direction"]

Array = Any


def compute_dtype(dtype: Any) -> Any:
    """:func:`adamp_core.functional.compute_dtype` for JAX dtypes; the state is kept in it
    too (bf16/fp16 parameters keep fp32 statistics)."""
    return jnp.dtype(core_compute_dtype(jnp.dtype(dtype).name))


def scalar(value: Any, dtype: Any) -> Any:
    """A hyperparameter for arithmetic in ``dtype``: Python numbers stay Python numbers
    (weakly typed, so ``1 - b1`` is formed in double precision and rounded once, as the
    reference's NumPy arithmetic does); arrays, traced or not, become scalars of ``dtype``.
    """
    if isinstance(value, (int, float, np.generic)):  # NumPy scalars would be strongly typed
        return float(value)
    return jnp.asarray(value, dtype=dtype)


def _explicitly_sharded(x: Array) -> tuple[bool, ...]:
    """Per axis of ``x``: is it sharded over an explicit mesh axis (JAX's sharding in
    types)? Auto-sharded and unsharded axes are not."""
    spec = tuple(jax.typeof(x).sharding.spec)
    return tuple(i < len(spec) and spec[i] is not None for i in range(x.ndim))


def _row_dot(x: Array, y: Array, row_axes: Axes, channel_axes: Axes) -> Array:
    """``sum(x * y)`` over ``row_axes``, kept as size-1 axes (one value per channel row).

    A ``dot_general`` with the channel axes as batch axes: XLA on CPU reads ``x`` and ``y``
    once, where a reduction of ``x * y`` first writes the product (the whole AdamP step
    on ResNet-50 shapes took about half the time this way). Rows split over an explicit
    mesh axis (where a contraction's output sharding would be ambiguous) take the
    reduction instead. Nothing is reshaped, so a sharded leaf keeps its sharding.
    """
    sharded = _explicitly_sharded(x)
    if any(sharded[a] for a in row_axes) or _explicitly_sharded(y) != sharded:
        return jnp.sum(x * y, axis=row_axes, keepdims=True)
    sums = lax.dot_general(x, y, ((row_axes, row_axes), (channel_axes, channel_axes)))
    return jnp.expand_dims(sums, row_axes)


def project(
    param: Array,
    grad: Array,
    update: Array,
    channel_axes: Axes,
    *,
    delta: Any,
    wd_ratio: Any,
    eps: Any,
) -> tuple[Array, Array]:
    """Remove the radial part of ``update`` if ``param`` looks scale-invariant.

    Args:
        param, grad, update: arrays of one shape, in the compute dtype.
        channel_axes: the axes indexing the channel rows; ``()`` never projects (nor is
            an empty leaf projected, as in the reference).
        delta: a view passes when ``max |cos(grad row, param row)|`` is below
            ``delta / sqrt(row length)``; the channel view is tried before the layer view.
        wd_ratio: the weight decay factor returned where a view passes.
        eps: added to the weight norms of the projection and the floor of the cosine's
            norms (``max(|x|, eps)``, PyTorch's ``cosine_similarity``).

    Returns:
        ``(update, ratio)``: the projected update, and ``wd_ratio`` where a view passed,
        else 1 (a scalar of the compute dtype).
    """
    one = jnp.ones((), param.dtype)
    if not channel_axes or param.size == 0:  # an empty leaf has no row to test
        return update, one
    row_axes = tuple(a for a in range(param.ndim) if a not in channel_axes)
    row_len = math.prod(param.shape[a] for a in row_axes)
    pp_c, gg_c, pg_c, pu_c = (
        _row_dot(x, y, row_axes, channel_axes)
        for x, y in ((param, param), (grad, grad), (param, grad), (param, update))
    )
    # The layer sums are sums of the row sums; summing the four stacked row sums keeps
    # XLA from turning each into another reduction over the whole leaf.
    layer = jnp.sum(jnp.stack([pp_c, gg_c, pg_c, pu_c]), axis=tuple(range(1, param.ndim + 1)))
    pp_l, gg_l, pg_l, pu_l = layer[0], layer[1], layer[2], layer[3]

    def cosine(pp: Array, gg: Array, pg: Array) -> Array:
        return jnp.abs(pg) / (jnp.maximum(jnp.sqrt(gg), eps) * jnp.maximum(jnp.sqrt(pp), eps))

    def radial_coef(pp: Array, pu: Array) -> Array:
        norm = jnp.sqrt(pp) + eps
        return (pu / norm) / norm

    channel_ok = jnp.max(cosine(pp_c, gg_c, pg_c)) < delta / math.sqrt(row_len)
    layer_ok = cosine(pp_l, gg_l, pg_l) < delta / math.sqrt(param.size)
    zero = jnp.zeros_like(pu_c)
    coef = jnp.where(
        channel_ok,
        radial_coef(pp_c, pu_c),
        jnp.where(layer_ok, radial_coef(pp_l, pu_l) + zero, zero),
    )
    ratio = jnp.where(channel_ok | layer_ok, jnp.asarray(wd_ratio, param.dtype), one)
    return update - param * coef, ratio


def adam_direction(
    grad: Array,
    mu: Array,
    nu: Array,
    count: Array,
    *,
    b1: Array,
    b2: Array,
    eps: Array,
    nesterov: bool,
) -> tuple[Array, Array, Array, Array]:
    """AdamP's moments and unprojected direction (the authors' eps placement).

    Returns ``(mu, nu, u, bias_correction1)`` with ``u = m / (sqrt(v)/sqrt(1-b2^t) +
    eps)`` (Nesterov: ``(b1 m + (1-b1) g) / ...``); the step is ``lr / bias_correction1``.
    """
    t = count.astype(grad.dtype)
    mu = mu * b1 + (1 - b1) * grad
    nu = nu * b2 + (1 - b2) * (grad * grad)
    denom = jnp.sqrt(nu) / jnp.sqrt(1 - b2**t) + eps
    numer = b1 * mu + (1 - b1) * grad if nesterov else mu
    return mu, nu, numer / denom, 1 - b1**t


def sgd_direction(
    grad: Array, buf: Array, *, momentum: Array, dampening: Array, nesterov: bool
) -> tuple[Array, Array]:
    """SGDP's new momentum buffer (zeros at first) and unprojected direction."""
    buf = buf * momentum + (1 - dampening) * grad
    return buf, (grad + momentum * buf if nesterov else buf)
