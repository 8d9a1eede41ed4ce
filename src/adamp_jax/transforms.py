"""AdamP and SGDP as ``optax`` gradient transformations.

``scale_by_adamp`` / ``scale_by_sgdp`` turn gradients into the step direction, the
projected update plus the projection-scaled decoupled weight decay; ``adamp`` / ``sgdp``
chain them with ``optax.scale_by_learning_rate``. The decay lives inside the
``scale_by_*`` pieces because its factor (``wd_ratio`` or 1) is decided per tensor and
step by the same test as the projection, which needs the raw gradient.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adamp_core.validation import validate_adamp_hparams, validate_sgdp_hparams

from ._math import adam_direction, compute_dtype, project, scalar, sgd_direction
from .axes import ChannelAxes, leaf_channel_axes, leaf_decay_mask

__all__ = [
    "ScaleByAdamPState",
    "ScaleBySGDPState",
    "scale_by_adamp",
    "scale_by_sgdp",
    "adamp",
    "sgdp",
]


class ScaleByAdamPState(NamedTuple):
    """State of :func:`scale_by_adamp`: the step count and the two moment estimates
    (float32 for 16-bit parameters, else the parameter's dtype)."""

    count: Any  # int32 scalar array: the steps taken (optax's name for it)
    mu: optax.Updates
    nu: optax.Updates


class ScaleBySGDPState(NamedTuple):
    """State of :func:`scale_by_sgdp`: the momentum buffer (zeros before the first step;
    float32 for 16-bit parameters, else the parameter's dtype)."""

    momentum_buffer: optax.Updates


def _checkable(value: Any, placeholder: Any) -> Any:
    """What the core's validation sees: numbers as they are, concrete scalar arrays as
    Python numbers, and ``placeholder`` (a valid value) for traced ones, which cannot be
    checked here (``inject_hyperparams`` under ``jit``)."""
    if isinstance(value, numbers.Number) or not hasattr(value, "shape"):
        return value  # numbers, and anything else the validation will reject by name
    try:
        array = np.asarray(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return placeholder
    return array.item() if array.shape == () else value


def _checked_lr(learning_rate: Any) -> Any:
    """The learning rate for validation: ``None`` (not checked) for a schedule."""
    return None if callable(learning_rate) else _checkable(learning_rate, None)


def _stats_zeros(params: optax.Params) -> optax.Updates:
    """Zeros like each leaf (and sharded like it), in the statistics' dtype."""
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=compute_dtype(p.dtype)), params)


def _require_params(params: optax.Params | None) -> optax.Params:
    if params is None:
        raise ValueError(
            "AdamP and SGDP need the current parameters: call update(grads, state, params)"
        )
    return params


def _validate_adamp(
    learning_rate: Any,
    b1: Any,
    b2: Any,
    eps: Any,
    weight_decay: Any,
    delta: Any,
    wd_ratio: Any,
    nesterov: Any,
) -> None:
    validate_adamp_hparams(
        lr=_checked_lr(learning_rate),
        betas=(_checkable(b1, 0.0), _checkable(b2, 0.0)),
        eps=_checkable(eps, 0.0),
        weight_decay=_checkable(weight_decay, 0.0),
        delta=_checkable(delta, 0.0),
        wd_ratio=_checkable(wd_ratio, 0.0),
        nesterov=nesterov,
    )


def _validate_sgdp(
    learning_rate: Any,
    momentum: Any,
    dampening: Any,
    nesterov: Any,
    weight_decay: Any,
    eps: Any,
    delta: Any,
    wd_ratio: Any,
    variant: Any,
) -> None:
    validate_sgdp_hparams(
        lr=_checked_lr(learning_rate),
        momentum=_checkable(momentum, 0.5),  # > 0, so a traced momentum passes Nesterov's check
        dampening=_checkable(dampening, 0.0),
        weight_decay=_checkable(weight_decay, 0.0),
        nesterov=nesterov,
        eps=_checkable(eps, 0.0),
        delta=_checkable(delta, 0.0),
        wd_ratio=_checkable(wd_ratio, 0.0),
        variant=variant,
    )


def _leaves(params: optax.Params, *trees: Any) -> tuple[Any, list[list[Any]]]:
    """``params``' tree structure and the leaves of ``params`` and of each tree, which
    must have that structure (gradients, moments)."""
    p_leaves, treedef = jax.tree.flatten(params)
    out = [p_leaves]
    for tree in trees:
        try:  # jax.tree.map raises on a structure that params is not a prefix of
            leaves = jax.tree.leaves(jax.tree.map(lambda _, x: x, params, tree))
            if len(leaves) != len(p_leaves):
                raise ValueError(f"{len(leaves)} leaves, the parameters have {len(p_leaves)}")
        except ValueError as exc:
            raise ValueError(
                f"gradients and state must have the parameters' structure: {exc}"
            ) from None
        out.append(leaves)
    return treedef, out


def _decayed(direction: Any, param: Any, coefficient: Any) -> Any:
    """``direction + coefficient * param``: decoupled weight decay in the direction, so
    that ``-lr`` times it decays the pre-step weights by ``lr * coefficient``."""
    return direction + coefficient * param


def _has_decay(weight_decay: Any) -> bool:
    """False only for a weight decay known to be zero (then no decay term is formed)."""
    return not (isinstance(weight_decay, numbers.Real) and float(weight_decay) == 0.0)


def scale_by_adamp(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    *,
    channel_axes: ChannelAxes = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    """AdamP's direction: Adam's update with its radial part removed on scale-invariant
    leaves, plus the decoupled weight decay (``weight_decay * wd_ratio`` on projected
    leaves). Follow it with ``optax.scale_by_learning_rate`` (as :func:`adamp` does).

    Arguments as in :func:`adamp`. ``update`` needs ``params``.
    """
    _validate_adamp(None, b1, b2, eps, weight_decay, delta, wd_ratio, nesterov)
    decay = _has_decay(weight_decay)

    def init_fn(params: optax.Params) -> ScaleByAdamPState:
        return ScaleByAdamPState(
            count=jnp.zeros([], jnp.int32), mu=_stats_zeros(params), nu=_stats_zeros(params)
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByAdamPState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByAdamPState]:
        params = _require_params(params)
        treedef, (ps, gs, ms, vs) = _leaves(params, updates, state.mu, state.nu)
        axes = leaf_channel_axes(channel_axes, params)
        decays = leaf_decay_mask(mask, params)
        count = optax.safe_increment(state.count)
        outs, new_ms, new_vs = [], [], []
        for p, g, m, v, ax, decay_leaf in zip(ps, gs, ms, vs, axes, decays):
            dtype = compute_dtype(p.dtype)
            param, grad = p.astype(dtype), g.astype(dtype)
            m, v, u, bias_correction1 = adam_direction(
                grad,
                m.astype(dtype),
                v.astype(dtype),
                count,
                b1=scalar(b1, dtype),
                b2=scalar(b2, dtype),
                eps=scalar(eps, dtype),
                nesterov=nesterov,
            )
            u, ratio = project(
                param,
                grad,
                u,
                ax,
                delta=scalar(delta, dtype),
                wd_ratio=scalar(wd_ratio, dtype),
                eps=scalar(eps, dtype),
            )
            out = u / bias_correction1
            if decay and decay_leaf:
                out = _decayed(out, param, scalar(weight_decay, dtype) * ratio)
            outs.append(out.astype(p.dtype))
            new_ms.append(m.astype(dtype))
            new_vs.append(v.astype(dtype))
        return jax.tree.unflatten(treedef, outs), ScaleByAdamPState(
            count=count,
            mu=jax.tree.unflatten(treedef, new_ms),
            nu=jax.tree.unflatten(treedef, new_vs),
        )

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_sgdp(
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    variant: str = "authors",
    *,
    channel_axes: ChannelAxes = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    """SGDP's direction: the momentum direction with its radial part removed on
    scale-invariant leaves, plus the decoupled weight decay divided by ``1 - momentum``
    (times ``wd_ratio`` on projected leaves). Follow it with
    ``optax.scale_by_learning_rate`` (as :func:`sgdp` does).

    Arguments as in :func:`sgdp`. ``update`` needs ``params``.
    """
    _validate_sgdp(None, momentum, dampening, nesterov, weight_decay, eps, delta, wd_ratio, variant)
    decay = _has_decay(weight_decay)
    # the authors' code projects the momentum buffer itself when it is the update
    project_buffer = variant == "authors" and not nesterov

    def init_fn(params: optax.Params) -> ScaleBySGDPState:
        return ScaleBySGDPState(momentum_buffer=_stats_zeros(params))

    def update_fn(
        updates: optax.Updates, state: ScaleBySGDPState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleBySGDPState]:
        params = _require_params(params)
        treedef, (ps, gs, bufs) = _leaves(params, updates, state.momentum_buffer)
        axes = leaf_channel_axes(channel_axes, params)
        decays = leaf_decay_mask(mask, params)
        outs, new_bufs = [], []
        for p, g, buf, ax, decay_leaf in zip(ps, gs, bufs, axes, decays):
            dtype = compute_dtype(p.dtype)
            param, grad = p.astype(dtype), g.astype(dtype)
            mom = scalar(momentum, dtype)
            buf, d = sgd_direction(
                grad,
                buf.astype(dtype),
                momentum=mom,
                dampening=scalar(dampening, dtype),
                nesterov=nesterov,
            )
            u, ratio = project(
                param,
                grad,
                d,
                ax,
                delta=scalar(delta, dtype),
                wd_ratio=scalar(wd_ratio, dtype),
                eps=scalar(eps, dtype),
            )
            if project_buffer:
                buf = u
            out = u
            if decay and decay_leaf:
                out = _decayed(out, param, scalar(weight_decay, dtype) * ratio / (1 - mom))
            outs.append(out.astype(p.dtype))
            new_bufs.append(buf.astype(dtype))
        return jax.tree.unflatten(treedef, outs), ScaleBySGDPState(
            momentum_buffer=jax.tree.unflatten(treedef, new_bufs)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def adamp(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    *,
    channel_axes: ChannelAxes = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    """AdamP (Heo et al., ICLR 2021): Adam whose update loses its radial component on
    scale-invariant weights, with decoupled weight decay.

    The numbers are the NumPy reference's (``adamp_core.AdamP``, the authors' ``adamp``
    0.3.0) once the channel axes are matched.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        b1: decay of the first moment (default 0.9).
        b2: decay of the second moment (default 0.999).
        eps: added to ``sqrt(v_hat)`` after bias correction (PyTorch's placement, not
            optax Adam's); also the norm floor of the projection (default 1e-8).
        weight_decay: decoupled weight decay (default 0): the weights before the step are
            scaled by ``1 - lr * weight_decay * ratio``, ratio ``wd_ratio`` on projected
            leaves and 1 elsewhere.
        delta: the scale-invariance threshold: a view passes when the largest
            ``|cos(grad row, weight row)|`` is below ``delta / sqrt(row length)``
            (default 0.1).
        wd_ratio: the weight decay factor on projected leaves (default 0.1).
        nesterov: Nesterov momentum (default False).
        channel_axes: which axes index each leaf's output channels; ``None`` (default):
            the last axis of every leaf of rank >= 2 (Flax/Haiku kernels). A tree of
            ints / tuples of ints / ``None`` (never project), a prefix of one, or a
            callable from the parameters to one; see :mod:`adamp_jax.axes`.
        mask: which leaves get weight decay, as in ``optax.adamw``: a tree of bools (or a
            prefix of one), or a callable returning one; ``True`` decays. Default: all.

    Every float argument may be a traced value (``optax.inject_hyperparams``, with
    ``nesterov``, and ``channel_axes`` / ``mask`` when they are callables, in
    ``static_args``); concrete values are validated here.

    Raises:
        ValueError: an invalid hyperparameter (the core's shared validation).
    """
    _validate_adamp(learning_rate, b1, b2, eps, weight_decay, delta, wd_ratio, nesterov)
    return optax.chain(
        scale_by_adamp(
            b1,
            b2,
            eps,
            weight_decay,
            delta,
            wd_ratio,
            nesterov,
            channel_axes=channel_axes,
            mask=mask,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgdp(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    variant: str = "authors",
    *,
    channel_axes: ChannelAxes = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    """SGDP (Heo et al., ICLR 2021): SGD with momentum whose update loses its radial
    component on scale-invariant weights, with decoupled weight decay.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        momentum: momentum factor in ``[0, 1)`` (default 0). The buffer starts at zero
            and is ``momentum * buf + (1 - dampening) * g``.
        dampening: dampening of the momentum (default 0).
        nesterov: Nesterov momentum (default False; needs momentum > 0, dampening 0).
        weight_decay: decoupled weight decay (default 0), divided by ``1 - momentum`` and
            multiplied by ``wd_ratio`` on projected leaves.
        eps: norm floor of the projection (default 1e-8).
        delta: the scale-invariance threshold (default 0.1), see :func:`adamp`.
        wd_ratio: the weight decay factor on projected leaves (default 0.1).
        variant: ``"authors"`` (default: without Nesterov the momentum buffer itself is
            projected, as in the authors' code) or ``"paper"`` (only the update is
            projected, the paper's Algorithm 1). Same meaning as in ``adamp_core``.
        channel_axes: see :func:`adamp`.
        mask: see :func:`adamp`.

    Raises:
        ValueError: an invalid hyperparameter (the core's shared validation).
    """
    _validate_sgdp(
        learning_rate, momentum, dampening, nesterov, weight_decay, eps, delta, wd_ratio, variant
    )
    return optax.chain(
        scale_by_sgdp(
            momentum,
            dampening,
            nesterov,
            weight_decay,
            eps,
            delta,
            wd_ratio,
            variant,
            channel_axes=channel_axes,
            mask=mask,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
