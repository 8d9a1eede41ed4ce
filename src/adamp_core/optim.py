"""NumPy AdamP and SGDP optimizers: thin stateful wrappers over :mod:`.functional`.

``params`` is a list of floating-point NumPy arrays that :meth:`step` updates in place.
Every refused input raises before anything changes: hyperparameters and parameters in
the constructor, gradients and parameters (again) at the start of :meth:`step`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from .functional import AdamPState, Array, Branch, SGDPState, StepResult, adamp_step, sgdp_step
from .validation import validate_adamp_hparams, validate_flag, validate_sgdp_hparams

__all__ = ["AdamP", "SGDP"]

S = TypeVar("S", AdamPState, SGDPState)


def _param_list(params: object) -> list[Any]:
    """The items of ``params``: any iterable of arrays, but not one array by itself.

    Iterating a bare 2-D array would silently make each of its rows a parameter (and a
    1-D one, each of its numbers), so an array, a string and a mapping are refused.
    """
    if isinstance(params, np.ndarray):
        raise TypeError(
            "params must be an iterable of numpy arrays (a list such as [w, b]), got one "
            f"numpy.ndarray of shape {params.shape}; to optimize a single array pass [array]"
        )
    if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
        raise TypeError(
            "params must be an iterable of numpy arrays (a list such as [w, b]), "
            f"got {type(params).__name__}"
        )
    return list(params)


def _check_param(i: int, p: object) -> None:
    """``params[i]`` must be a writeable float32/float64 array (integers would truncate)."""
    if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"params[{i}] must be a float32 or float64 numpy.ndarray, "
            f"got {type(p).__name__} of dtype {getattr(p, 'dtype', None)}"
        )
    if not p.flags.writeable:
        raise ValueError(f"params[{i}] is read-only; it is updated in place")


def _byte_range(a: Array) -> tuple[int, int]:
    """``[low, high)``: the addresses of the bytes ``a`` can touch (empty for size 0)."""
    low = high = int(a.__array_interface__["data"][0])
    if a.size == 0:
        return low, low
    for n, stride in zip(a.shape, a.strides):
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + a.itemsize


def _check_no_overlap(params: Sequence[Array]) -> None:
    """No two parameters may share memory: each would be updated once per step with its
    own gradient, and the shared weights twice."""
    ranges = sorted((*_byte_range(p), i) for i, p in enumerate(params) if p.size)
    for k, (_, high, i) in enumerate(ranges):
        # sorted by start: only the arrays that start before this one ends can overlap it
        for low_j, _, j in ranges[k + 1 :]:
            if low_j >= high:
                break
            if np.shares_memory(params[i], params[j]):
                first, second = sorted((i, j))
                raise ValueError(
                    f"params[{second}] shares memory with params[{first}] (the same array "
                    "twice, or overlapping views); pass each array once"
                )


def _require_lr(lr: object) -> None:
    """The shared validation lets ``lr=None`` through (for adapters with schedules); the
    NumPy optimizers have no schedule, so ``None`` is refused here."""
    if lr is None:
        raise ValueError("lr must be a real number, got None")


class _NumpyOptimizer(Generic[S]):
    """Shared bookkeeping: parameter checks, gradient checks, per-tensor state."""

    def __init__(self, params: Iterable[Array], hparams: dict[str, Any], check_finite: bool):
        validate_flag("check_finite", check_finite)
        params = _param_list(params)
        if not params:
            raise ValueError("params is empty: the optimizer needs at least one array")
        for i, p in enumerate(params):
            _check_param(i, p)
        _check_no_overlap(params)
        self.params: list[Array] = params
        self.hparams: dict[str, Any] = hparams
        self.check_finite = check_finite
        self.state: list[S | None] = [None] * len(params)
        #: The projection branch each parameter took in the last :meth:`step`
        #: (``None`` for parameters whose gradient was ``None``).
        self.last_branches: list[Branch | None] = [None] * len(params)

    def _zero_state(self, param: Array) -> S:
        raise NotImplementedError

    def _update(self, param: Array, grad: Array, state: S) -> StepResult:
        raise NotImplementedError

    def _check_state(self, i: int, p: Array) -> None:
        """The state of ``params[i]`` must still fit it (the array may have been resized
        in place, or ``params[i]`` replaced, since the last step)."""
        state = self.state[i]
        if state is None:
            return
        for name, value in vars(state).items():
            if isinstance(value, np.ndarray) and (value.shape, value.dtype) != (p.shape, p.dtype):
                raise ValueError(
                    f"params[{i}] has shape {p.shape} and dtype {p.dtype}, but its state "
                    f"{name!r} has shape {value.shape} and dtype {value.dtype}: the array "
                    "changed since the last step; create a new optimizer for it"
                )

    def _check_grads(self, grads: Iterable[Array | None]) -> list[Array | None]:
        if isinstance(grads, np.ndarray):
            raise TypeError(
                "grads must be a list with one array (or None) per parameter, got one "
                f"numpy.ndarray of shape {grads.shape}"
            )
        if isinstance(grads, (str, bytes, Mapping)) or not isinstance(grads, Iterable):
            raise TypeError(
                "grads must be a list with one array (or None) per parameter, "
                f"got {type(grads).__name__}"
            )
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"expected {len(self.params)} gradients, got {len(grads)}")
        for i, (p, g) in enumerate(zip(self.params, grads)):
            _check_param(i, p)  # params is a public list: it may have been edited
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
            self._check_state(i, p)
        return grads

    def step(self, grads: Iterable[Array | None]) -> None:
        """Apply one update to every parameter whose gradient is not ``None``.

        Args:
            grads: one array per parameter, same order, shape and dtype; ``None`` skips
                that parameter (its state is left untouched), as PyTorch does for a
                parameter without ``.grad``.

        Raises:
            TypeError: ``grads`` is one array (or not iterable) instead of a list.
            ValueError: on a count, shape or dtype mismatch, a parameter that is no
                longer a writeable float array or no longer matches its state, or (with
                ``check_finite=True``) a non-finite gradient. By default non-finite
                values propagate into the weights, as in PyTorch and the authors'
                package.

        Nothing is updated unless every parameter's update succeeds: the checks come
        first, and all new values are computed before any is written.
        """
        grads = self._check_grads(grads)
        results: list[StepResult | None] = []
        for p, g, state in zip(self.params, grads, self.state):
            if g is None:
                results.append(None)
                continue
            results.append(self._update(p, g, self._zero_state(p) if state is None else state))
        for i, (p, result) in enumerate(zip(self.params, results)):
            if result is None:
                self.last_branches[i] = None
                continue
            p[...] = result.param
            self.state[i] = result.state  # type: ignore[assignment]
            self.last_branches[i] = result.branch


class AdamP(_NumpyOptimizer[AdamPState]):
    """AdamP (Heo et al., 2021) on NumPy arrays, numerically equal to ``adamp`` 0.3.0.

    Args:
        params: an iterable (a list) of float32 or float64 arrays, updated in place by
            :meth:`step`; not one array by itself, and no array twice. Empty arrays
            are allowed (their step changes nothing).
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

    Raises:
        TypeError: ``params`` is one array, a string, a mapping or not iterable.
        ValueError: an invalid hyperparameter or flag (named in the message), no
            parameters, a parameter that is not a writeable float32/float64 array, or
            two parameters sharing memory.
    """

    def __init__(
        self,
        params: Iterable[Array],
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
        _require_lr(lr)
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
        params: an iterable (a list) of float32 or float64 arrays, see :class:`AdamP`.
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

    Raises:
        TypeError: ``params`` is one array, a string, a mapping or not iterable.
        ValueError: an invalid hyperparameter or flag (named in the message), no
            parameters, a parameter that is not a writeable float32/float64 array, or
            two parameters sharing memory.
    """

    def __init__(
        self,
        params: Iterable[Array],
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
        _require_lr(lr)
        validate_sgdp_hparams(**hparams)
        super().__init__(params, hparams, check_finite)

    def _zero_state(self, param: Array) -> SGDPState:
        return SGDPState.zeros_like(param)

    def _update(self, param: Array, grad: Array, state: SGDPState) -> StepResult:
        return sgdp_step(param, grad, state, **self.hparams)
