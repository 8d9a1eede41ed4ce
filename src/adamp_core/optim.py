"""NumPy AdamP and SGDP optimizers: thin stateful wrappers over :mod:`.functional`.

``params`` is a list of floating-point NumPy arrays that :meth:`step` updates in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from .functional import AdamPState, Array, Branch, SGDPState, StepResult, adamp_step, sgdp_step
from .validation import validate_adamp_hparams, validate_sgdp_hparams

__all__ = ["AdamP", "SGDP"]

S = TypeVar("S", AdamPState, SGDPState)


class _NumpyOptimizer(Generic[S]):
    """Shared bookkeeping: parameter checks, gradient checks, per-tensor state."""

    def __init__(self, params: Sequence[Array], hparams: dict[str, Any], check_finite: bool):
        params = list(params)
        if not params:
            raise ValueError("params is empty: the optimizer needs at least one array")
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise ValueError(
                    f"params[{i}] must be a float32 or float64 numpy.ndarray, "
                    f"got {type(p).__name__} of dtype {getattr(p, 'dtype', None)}"
                )
            if not p.flags.writeable:
                raise ValueError(f"params[{i}] is read-only; it is updated in place")
        self.params: list[Array] = params
        self.hparams: dict[str, Any] = hparams
        self.check_finite = bool(check_finite)
        self.state: list[S | None] = [None] * len(params)
        #: The projection branch each parameter took in the last :meth:`step`
        #: (``None`` for parameters whose gradient was ``None``).
        self.last_branches: list[Branch | None] = [None] * len(params)

    def _zero_state(self, param: Array) -> S:
        raise NotImplementedError

    def _update(self, param: Array, grad: Array, state: S) -> StepResult:
        raise NotImplementedError

    def _check_grads(self, grads: Sequence[Array | None]) -> None:
        if len(grads) != len(self.params):
            raise ValueError(f"expected {len(self.params)} gradients, got {len(grads)}")
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                raise ValueError(f"grads[{i}] must be a numpy.ndarray, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, its parameter {p.shape}")
            if g.dtype != p.dtype:
                raise ValueError(f"grads[{i}] has dtype {g.dtype}, its parameter {p.dtype}")
            if self.check_finite and not np.all(np.isfinite(g)):
                raise ValueError(f"grads[{i}] contains NaN or infinity")

    def step(self, grads: Sequence[Array | None]) -> None:
        """Apply one update to every parameter whose gradient is not ``None``.

        Args:
            grads: one array per parameter, same order, shape and dtype; ``None`` skips
                that parameter (its state is left untouched), as PyTorch does for a
                parameter without ``.grad``.

        Raises:
            ValueError: on a count, shape or dtype mismatch, or (with
                ``check_finite=True``) a non-finite gradient. The check happens before
                anything is updated. By default non-finite values propagate into the
                weights, as in PyTorch and the authors' package.
        """
        self._check_grads(grads)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                self.last_branches[i] = None
                continue
            state = self.state[i]
            if state is None:
                state = self._zero_state(p)
            result = self._update(p, g, state)
            p[...] = result.param
            self.state[i] = result.state  # type: ignore[assignment]
            self.last_branches[i] = result.branch


class AdamP(_NumpyOptimizer[AdamPState]):
    """AdamP (Heo et al., 2021) on NumPy arrays, numerically equal to ``adamp`` 0.3.0.

    Args:
        params: float32 or float64 arrays, updated in place by :meth:`step`.
        lr: learning rate. Default ``1e-3``.
        betas: coefficients of the running averages of the gradient and its square.
            Default ``(0.9, 0.999)``.
        eps: added to the denominator, the cosine norms and the weight norm.
            Default ``1e-8``.
        weight_decay: decoupled weight decay; multiplied by ``wd_ratio`` on projected
            tensors. Default ``0``.
        delta: scale-invariance threshold. Default ``0.1``.
        wd_ratio: weight decay multiplier on projected tensors. Default ``0.1``.
        nesterov: Nesterov momentum. Default ``False``.
        check_finite: raise on NaN/inf gradients instead of propagating them.
            Default ``False``.
    """

    def __init__(
        self,
        params: Sequence[Array],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        *,
        check_finite: bool = False,
    ) -> None:
        hparams: dict[str, Any] = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
        )
        validate_adamp_hparams(**hparams)
        hparams["betas"] = (float(betas[0]), float(betas[1]))
        super().__init__(params, hparams, check_finite)

    def _zero_state(self, param: Array) -> AdamPState:
        return AdamPState.zeros_like(param)

    def _update(self, param: Array, grad: Array, state: AdamPState) -> StepResult:
        return adamp_step(param, grad, state, **self.hparams)


class SGDP(_NumpyOptimizer[SGDPState]):
    """SGDP (Heo et al., 2021) on NumPy arrays, numerically equal to ``adamp`` 0.3.0.

    Args:
        params: float32 or float64 arrays, updated in place by :meth:`step`.
        lr: learning rate (required).
        momentum: momentum factor in ``[0, 1)``. Default ``0``.
        dampening: dampening for momentum. Default ``0``.
        weight_decay: decoupled weight decay, divided by ``1 - momentum`` and multiplied
            by ``wd_ratio`` on projected tensors. Default ``0``.
        nesterov: Nesterov momentum. Default ``False``.
        eps: added to the cosine norms and the weight norm. Default ``1e-8``.
        delta: scale-invariance threshold. Default ``0.1``.
        wd_ratio: weight decay multiplier on projected tensors. Default ``0.1``.
        variant: ``"authors"`` (default; the momentum buffer is projected too when
            Nesterov is off, as in the authors' package) or ``"paper"`` (only the
            update is projected, as in the paper's Algorithm 1, timm and
            pytorch_optimizer).
        check_finite: raise on NaN/inf gradients instead of propagating them.
            Default ``False``.
    """

    def __init__(
        self,
        params: Sequence[Array],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        variant: str = "authors",
        *,
        check_finite: bool = False,
    ) -> None:
        hparams: dict[str, Any] = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            delta=delta,
            wd_ratio=wd_ratio,
            variant=variant,
        )
        validate_sgdp_hparams(**hparams)
        super().__init__(params, hparams, check_finite)

    def _zero_state(self, param: Array) -> SGDPState:
        return SGDPState.zeros_like(param)

    def _update(self, param: Array, grad: Array, state: SGDPState) -> StepResult:
        return sgdp_step(param, grad, state, **self.hparams)
