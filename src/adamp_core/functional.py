"""The AdamP and SGDP update rules as pure NumPy functions: the math, stated once.

Every function here takes arrays and explicit state and returns new arrays; nothing is
modified in place. The arithmetic follows the authors' package ``adamp`` 0.3.0 step by
step (same operation order, same eps placement), so float64 results agree with it to
round-off. Computation happens in the dtype of the parameter: float32 parameters are
updated in float32 arithmetic, as in PyTorch.

Shapes follow PyTorch's layout: axis 0 of a parameter is its output channel. Callers with
another layout (Keras) move their channel axes to the front first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Branch",
    "BRANCHES",
    "AdamPState",
    "SGDPState",
    "StepResult",
    "Projection",
    "cosine_rows",
    "projection",
    "adamp_step",
    "sgdp_step",
    "compute_dtype",
]

#: Which projection a tensor received in one step: ``"channel"`` (each output channel
#: projected on its own), ``"layer"`` (the whole tensor as one vector) or ``"none"``
#: (not scale-invariant, a tensor with fewer than two dimensions, or an empty one).
Branch = Literal["channel", "layer", "none"]
BRANCHES: tuple[Branch, ...] = ("channel", "layer", "none")

Array = NDArray[np.floating]


class Projection(NamedTuple):
    """Result of :func:`projection`."""

    update: Array
    """The update with its radial part removed (or unchanged if no view passed)."""
    ratio: float
    """``wd_ratio`` if projected, else ``1.0``: the factor on the weight decay."""
    branch: Branch
    """Which view passed the scale-invariance test."""


class StepResult(NamedTuple):
    """Result of one optimizer step on one tensor."""

    param: Array
    state: AdamPState | SGDPState
    branch: Branch


@dataclass(frozen=True)
class AdamPState:
    """Per-tensor AdamP state: step count and the two moment estimates."""

    step: int
    exp_avg: Array
    exp_avg_sq: Array

    @classmethod
    def zeros_like(cls, param: Array) -> AdamPState:
        return cls(0, np.zeros_like(param), np.zeros_like(param))


@dataclass(frozen=True)
class SGDPState:
    """Per-tensor SGDP state: the momentum buffer (zeros before the first step)."""

    momentum_buffer: Array

    @classmethod
    def zeros_like(cls, param: Array) -> SGDPState:
        return cls(np.zeros_like(param))


def _views(x: Array) -> tuple[tuple[Branch, Array], ...]:
    """The two row views tried in order: one row per output channel, then one row."""
    return (("channel", x.reshape(x.shape[0], -1)), ("layer", x.reshape(1, -1)))


def _rownorm(x: Array) -> Array:
    return np.sqrt(np.sum(x * x, axis=1, keepdims=True))


def cosine_rows(a: Array, b: Array, eps: float) -> Array:
    """Absolute cosine similarity of matching rows of two 2-D arrays.

    Uses PyTorch's (>= 1.12) definition: each row is divided by ``max(norm, eps)``
    before the dot product, so zero rows give 0 rather than NaN.
    """
    an = a / np.maximum(_rownorm(a), eps)
    bn = b / np.maximum(_rownorm(b), eps)
    return np.abs(np.sum(an * bn, axis=1))


def projection(
    param: Array,
    grad: Array,
    update: Array,
    *,
    delta: float,
    wd_ratio: float,
    eps: float,
) -> Projection:
    """Remove the radial component of ``update`` if ``param`` looks scale-invariant.

    The channel view is tried first, then the layer view. A view passes when the largest
    absolute cosine between a gradient row and its weight row is below
    ``delta / sqrt(row length)``; the decision is per tensor, the projection per row.
    Tensors with fewer than two dimensions, and empty tensors (a size-0 axis: no row to
    test, and the threshold would divide by a zero row length), are never projected.
    """
    if param.ndim < 2 or param.size == 0:
        return Projection(update, 1.0, "none")
    for (branch, p_rows), (_, g_rows), (_, u_rows) in zip(
        _views(param), _views(grad), _views(update)
    ):
        threshold = delta / math.sqrt(p_rows.shape[1])
        if np.max(cosine_rows(g_rows, p_rows, eps)) < threshold:
            p_unit = p_rows / (_rownorm(p_rows) + eps)
            radial = np.sum(p_unit * u_rows, axis=1, keepdims=True)
            projected = u_rows - p_unit * radial
            return Projection(projected.reshape(update.shape), float(wd_ratio), branch)
    return Projection(update, 1.0, "none")


def adamp_step(
    param: Array,
    grad: Array,
    state: AdamPState,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
) -> StepResult:
    """One AdamP step on one tensor; returns the new parameter, state and branch.

    Bias correction uses Python floats; eps is added after bias-correcting ``sqrt(v)``;
    Nesterov uses ``beta1 * m + (1 - beta1) * g`` with ``m`` already updated; weight decay
    is decoupled, scaled by the projection ratio, and applied to the pre-step weights.
    """
    beta1, beta2 = betas
    step = state.step + 1
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    exp_avg = state.exp_avg * beta1 + (1 - beta1) * grad
    exp_avg_sq = state.exp_avg_sq * beta2 + (1 - beta2) * (grad * grad)
    denom = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + eps
    numer = beta1 * exp_avg + (1 - beta1) * grad if nesterov else exp_avg
    proj = projection(param, grad, numer / denom, delta=delta, wd_ratio=wd_ratio, eps=eps)
    new_param = param
    if weight_decay > 0:
        new_param = new_param * (1 - lr * weight_decay * proj.ratio)
    new_param = new_param - (lr / bias_correction1) * proj.update
    return StepResult(new_param, AdamPState(step, exp_avg, exp_avg_sq), proj.branch)


def sgdp_step(
    param: Array,
    grad: Array,
    state: SGDPState,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    variant: str,
) -> StepResult:
    """One SGDP step on one tensor; returns the new parameter, state and branch.

    ``variant="authors"`` (the authors' package): without Nesterov the update *is* the
    momentum buffer, so the projected update is also stored as the new buffer.
    ``variant="paper"`` (Algorithm 1 of the paper): only the update is projected. With
    Nesterov the two variants coincide. Weight decay is divided by ``1 - momentum``.
    """
    buf = state.momentum_buffer * momentum + (1 - dampening) * grad
    direction = grad + momentum * buf if nesterov else buf
    proj = projection(param, grad, direction, delta=delta, wd_ratio=wd_ratio, eps=eps)
    if variant == "authors" and not nesterov:
        buf = proj.update
    new_param = param
    if weight_decay > 0:
        new_param = new_param * (1 - lr * weight_decay * proj.ratio / (1 - momentum))
    new_param = new_param - lr * proj.update
    return StepResult(new_param, SGDPState(buf), proj.branch)


def compute_dtype(dtype: str) -> str:
    """The dtype an update is computed in, by name: float32 for 16-bit floats (whose state
    stays in their own dtype), else the parameter's own. Every adapter follows this rule."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype
