"""Hyperparameter validation shared by every AdamP/SGDP implementation.

Each adapter (NumPy, PyTorch, Keras) calls these functions in its constructor, so a
bad value is rejected with the same :class:`ValueError` everywhere, before the
optimizer exists. Every message names the argument and repeats the offending value.
:func:`validate_flag` is the check for any on/off argument an adapter adds of its own
(``maximize``, ``check_finite``...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

__all__ = [
    "SGDP_VARIANTS",
    "validate_flag",
    "validate_adamp_hparams",
    "validate_sgdp_hparams",
    "validate_variant",
]

#: Accepted values of SGDP's ``variant`` argument.
#: ``"authors"`` reproduces the authors' package 0.3.0, where (without Nesterov) the
#: momentum buffer itself is projected; ``"paper"`` follows the paper's Algorithm 1,
#: where only the update is projected and the buffer keeps its radial component.
SGDP_VARIANTS: tuple[str, ...] = ("authors", "paper")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if math.isnan(out):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    return out


def _check_interval(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    high_open: bool = False,
) -> None:
    """Require ``low <= value <= high`` (``< high`` if ``high_open``), value finite."""
    x = _real(name, value)
    upper_ok = x < high if high_open else x <= high
    if not (low <= x and upper_ok and math.isfinite(x)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {value!r}")


def validate_flag(name: str, value: Any, *, optional: bool = False) -> None:
    """Require a bool (or ``None`` when ``optional``) for an adapter's own switch, such as
    ``maximize`` or ``foreach``; raise :class:`ValueError` naming it otherwise."""
    if not (optional and value is None):
        if not isinstance(value, bool):
            allowed = "a bool or None" if optional else "a bool"
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


def validate_variant(variant: Any) -> None:
    """Require SGDP's ``variant`` to be one of :data:`SGDP_VARIANTS`, as a ``str``.

    Raises:
        ValueError: ``"variant must be one of ('authors', 'paper'), got {variant!r}"``.
    """
    # the type first: a NumPy string array would compare element-wise with the names
    if not isinstance(variant, str) or variant not in SGDP_VARIANTS:
        raise ValueError(f"variant must be one of {SGDP_VARIANTS}, got {variant!r}")


def _check_projection(eps: Any, weight_decay: Any, delta: Any, wd_ratio: Any) -> None:
    _check_interval("eps", eps, 0.0)
    _check_interval("weight_decay", weight_decay, 0.0)
    _check_interval("delta", delta, 0.0)
    _check_interval("wd_ratio", wd_ratio, 0.0, 1.0)


def _check_lr(lr: Any) -> None:
    if lr is not None:
        _check_interval("lr", lr, 0.0)


def validate_adamp_hparams(
    *,
    lr: float | None,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
) -> None:
    """Validate AdamP's hyperparameters; raise :class:`ValueError` on the first bad one.

    Args:
        lr: learning rate, ``>= 0``. ``None`` skips the check (an adapter whose
            learning rate is a schedule or a device tensor validates it itself).
        betas: ``(beta1, beta2)``, each in ``[0, 1)``.
        eps: term added for numerical stability, ``>= 0``.
        weight_decay: decoupled weight decay coefficient, ``>= 0``.
        delta: scale-invariance threshold (cosine is compared with
            ``delta / sqrt(row length)``), ``>= 0``.
        wd_ratio: weight decay multiplier on projected tensors, in ``[0, 1]``.
        nesterov: whether to use Nesterov momentum; must be a bool.
    """
    _check_lr(lr)
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        _check_interval(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
    _check_projection(eps, weight_decay, delta, wd_ratio)
    validate_flag("nesterov", nesterov)


def validate_sgdp_hparams(
    *,
    lr: float | None,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    variant: str,
) -> None:
    """Validate SGDP's hyperparameters; raise :class:`ValueError` on the first bad one.

    Args:
        lr: learning rate, ``>= 0`` (``None`` skips the check, see
            :func:`validate_adamp_hparams`).
        momentum: momentum factor in ``[0, 1)``. ``1`` is rejected because SGDP
            divides the weight decay by ``1 - momentum``.
        dampening: dampening for momentum, in ``[0, 1]``.
        weight_decay: decoupled weight decay coefficient, ``>= 0``.
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        eps: term added for numerical stability, ``>= 0``.
        delta: scale-invariance threshold, ``>= 0``.
        wd_ratio: weight decay multiplier on projected tensors, in ``[0, 1]``.
        variant: ``"authors"`` or ``"paper"``, see :data:`SGDP_VARIANTS`.
    """
    _check_lr(lr)
    m = _real("momentum", momentum)
    if m >= 1.0 and math.isfinite(m):
        raise ValueError(
            f"momentum must be in [0, 1), got {momentum!r} "
            "(SGDP scales weight decay by 1 / (1 - momentum))"
        )
    _check_interval("momentum", momentum, 0.0, 1.0, high_open=True)
    _check_interval("dampening", dampening, 0.0, 1.0)
    _check_projection(eps, weight_decay, delta, wd_ratio)
    validate_flag("nesterov", nesterov)
    if nesterov and (float(momentum) <= 0.0 or float(dampening) != 0.0):
        raise ValueError(
            "nesterov=True requires momentum > 0 and dampening == 0, "
            f"got momentum={momentum!r}, dampening={dampening!r}"
        )
    validate_variant(variant)
