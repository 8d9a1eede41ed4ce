"""AdamP and SGDP as Keras 3 optimizers (TensorFlow, JAX and torch backends)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from adamp_core.validation import validate_adamp_hparams, validate_sgdp_hparams

from ._base import ProjectedOptimizer, validated_lr
from ._math import compute_dtype, const, decay_factor, densify, project
from .axes import Axes, ChannelAxesOverride

__all__ = ["AdamP", "SGDP"]


def _step_count(optimizer: keras.optimizers.Optimizer, dtype: str) -> Any:
    """This update's 1-based step number (counts applied updates, as ``iterations``)."""
    return ops.cast(optimizer.iterations + 1, dtype)


@keras.saving.register_keras_serializable(package="adamp_tf")
class AdamP(ProjectedOptimizer):
    """AdamP (Heo et al., ICLR 2021): Adam whose update loses its radial component on
    scale-invariant weights, with decoupled weight decay.

    Same numbers as the authors' PyTorch ``adamp.AdamP`` (and ``adamp_core.AdamP``) once
    the output-channel axes are matched (see :mod:`adamp_tf.axes`).

    Args:
        learning_rate: float (default 1e-3), a ``LearningRateSchedule`` or a callable.
        beta_1: decay of the first moment (default 0.9).
        beta_2: decay of the second moment (default 0.999).
        epsilon: added to ``sqrt(v_hat)`` after bias correction, PyTorch's placement
            (default 1e-8; Keras' Adam uses 1e-7 inside another formula). Also the norm
            floor of the projection.
        weight_decay: decoupled weight decay (default 0). Multiplied by ``wd_ratio`` on
            projected variables; ``exclude_from_weight_decay`` works as usual.
        delta: scale-invariance threshold; a view passes when the largest
            ``|cos(grad row, weight row)|`` is below ``delta / sqrt(row length)``
            (default 0.1).
        wd_ratio: weight decay factor on projected variables (default 0.1).
        nesterov: Nesterov momentum (default False).
        channel_axes: per-variable override of the output-channel axes; a mapping
            ``{regex on variable path: axes}`` or a callable ``f(variable) -> axes``
            (``"default"`` falls back; ``None``/``()`` disables projection). Default rule
            in :mod:`adamp_tf.axes`.
        exclude_from_weight_decay: variable-name patterns (regex, searched in the
            variable name) excluded from weight decay; same as calling
            ``exclude_from_weight_decay(var_names=...)``, and saved in the config.
        **kwargs: Keras base arguments: ``name``, ``clipnorm``, ``clipvalue``,
            ``global_clipnorm``, ``use_ema``, ``ema_momentum``,
            ``ema_overwrite_frequency``, ``loss_scale_factor``,
            ``gradient_accumulation_steps``.

    Raises:
        ValueError: an invalid hyperparameter (the core's shared validation).
    """

    def __init__(
        self,
        learning_rate: Any = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        channel_axes: ChannelAxesOverride = None,
        exclude_from_weight_decay: Sequence[str] | None = None,
        name: str = "adamp",
        **kwargs: Any,
    ) -> None:
        validate_adamp_hparams(
            lr=validated_lr(learning_rate),
            betas=(beta_1, beta_2),
            eps=epsilon,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
        )
        super().__init__(
            learning_rate,
            weight_decay=float(weight_decay),
            channel_axes=channel_axes,
            exclude_from_weight_decay=exclude_from_weight_decay,
            name=name,
            **kwargs,
        )
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.wd_ratio = float(wd_ratio)
        self.nesterov = nesterov

    def build(self, variables: list[Any]) -> None:
        """Create the first and second moment estimates, one pair per variable."""
        if self.built:
            return
        super().build(variables)
        self._exp_avgs, self._exp_avg_sqs = self.add_optimizer_variables(
            variables, ["exp_avg", "exp_avg_sq"]
        )

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One AdamP step on one variable (see ``adamp_core.functional.adamp_step``)."""
        index = self._get_variable_index(variable)
        dtype = compute_dtype(keras.backend.standardize_dtype(variable.dtype))
        b1, b2 = const(self.beta_1, dtype), const(self.beta_2, dtype)
        one = const(1.0, dtype)
        lr = ops.cast(learning_rate, dtype)
        param = ops.cast(variable, dtype)
        grad = ops.cast(densify(gradient), dtype)
        exp_avg_var, exp_avg_sq_var = self._exp_avgs[index], self._exp_avg_sqs[index]

        step = _step_count(self, dtype)
        bias_correction1 = one - ops.power(b1, step)
        bias_correction2 = one - ops.power(b2, step)
        exp_avg = ops.cast(exp_avg_var, dtype) * b1 + (one - b1) * grad
        exp_avg_sq = ops.cast(exp_avg_sq_var, dtype) * b2 + (one - b2) * (grad * grad)
        denom = ops.sqrt(exp_avg_sq) / ops.sqrt(bias_correction2) + const(self.epsilon, dtype)
        numer = b1 * exp_avg + (one - b1) * grad if self.nesterov else exp_avg
        update, ratio = project(
            param,
            grad,
            numer / denom,
            self._axes_of[index],
            delta=self.delta,
            wd_ratio=self.wd_ratio,
            eps=self.epsilon,
        )
        weight_decay = self._decay_of[index]
        if weight_decay > 0:
            param = param * decay_factor(lr, weight_decay, ratio, dtype)
        param = param - (lr / bias_correction1) * update

        self.assign(exp_avg_var, ops.cast(exp_avg, exp_avg_var.dtype))
        self.assign(exp_avg_sq_var, ops.cast(exp_avg_sq, exp_avg_sq_var.dtype))
        self.assign(variable, ops.cast(param, variable.dtype))

    def _torch_update_step(
        self,
        variables: list[Any],
        axes: list[Axes],
        params: list[Any],
        grads: list[Any],
        *,
        lr: Any,
        weight_decay: float,
    ) -> None:
        import torch

        from adamp_torch import functional

        from ._torch_path import channel_first

        index = [self._get_variable_index(v) for v in variables]
        # Keras counts steps once for all variables (``iterations``); the kernel increments
        # per-tensor counts, so it gets that count before this step.
        iterations = getattr(self.iterations, "value", self.iterations)
        step = torch.as_tensor(iterations).to(torch.float32)
        functional.adamp(
            params,
            grads,
            [channel_first(self._exp_avgs[i].value, a) for i, a in zip(index, axes)],
            [channel_first(self._exp_avg_sqs[i].value, a) for i, a in zip(index, axes)],
            [step.clone() for _ in params],
            lr=lr,
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=weight_decay,
            delta=self.delta,
            wd_ratio=self.wd_ratio,
            nesterov=self.nesterov,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            delta=self.delta,
            wd_ratio=self.wd_ratio,
            nesterov=self.nesterov,
            **self._projection_config(),
        )
        return config


@keras.saving.register_keras_serializable(package="adamp_tf")
class SGDP(ProjectedOptimizer):
    """SGDP (Heo et al., ICLR 2021): SGD with momentum whose update loses its radial
    component on scale-invariant weights, with decoupled weight decay.

    Args:
        learning_rate: float (default 0.01), a ``LearningRateSchedule`` or a callable.
        momentum: momentum factor in ``[0, 1)`` (default 0). The buffer starts at zero
            (no first-step special case) and is ``momentum * buf + (1 - dampening) * g``.
        dampening: dampening of the momentum (default 0).
        nesterov: Nesterov momentum (default False; needs momentum > 0, dampening 0).
        weight_decay: decoupled weight decay (default 0), divided by ``1 - momentum`` and
            multiplied by ``wd_ratio`` on projected variables.
        epsilon: norm floor of the projection (default 1e-8).
        delta: scale-invariance threshold (default 0.1), see :class:`AdamP`.
        wd_ratio: weight decay factor on projected variables (default 0.1).
        variant: ``"authors"`` (default: without Nesterov the momentum buffer itself is
            projected, as in the authors' code) or ``"paper"`` (only the update is
            projected, the paper's Algorithm 1). Same meaning as in ``adamp_core``.
        channel_axes: per-variable override of the output-channel axes, see
            :class:`AdamP`.
        exclude_from_weight_decay: see :class:`AdamP`.
        **kwargs: Keras base arguments, see :class:`AdamP`.

    Raises:
        ValueError: an invalid hyperparameter (the core's shared validation).
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        epsilon: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        variant: str = "authors",
        channel_axes: ChannelAxesOverride = None,
        exclude_from_weight_decay: Sequence[str] | None = None,
        name: str = "sgdp",
        **kwargs: Any,
    ) -> None:
        validate_sgdp_hparams(
            lr=validated_lr(learning_rate),
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=epsilon,
            delta=delta,
            wd_ratio=wd_ratio,
            variant=variant,
        )
        super().__init__(
            learning_rate,
            weight_decay=float(weight_decay),
            channel_axes=channel_axes,
            exclude_from_weight_decay=exclude_from_weight_decay,
            name=name,
            **kwargs,
        )
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = nesterov
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.wd_ratio = float(wd_ratio)
        self.variant = variant

    def build(self, variables: list[Any]) -> None:
        """Create one momentum buffer per variable (none when ``momentum == 0``)."""
        if self.built:
            return
        super().build(variables)
        self._momentum_buffers: list[Any] = []
        if self.momentum > 0:
            self._momentum_buffers = self.add_optimizer_variables(variables, "momentum_buffer")

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One SGDP step on one variable (see ``adamp_core.functional.sgdp_step``)."""
        index = self._get_variable_index(variable)
        dtype = compute_dtype(keras.backend.standardize_dtype(variable.dtype))
        momentum = const(self.momentum, dtype)
        lr = ops.cast(learning_rate, dtype)
        param = ops.cast(variable, dtype)
        grad = ops.cast(densify(gradient), dtype)

        buf = const(1.0 - self.dampening, dtype) * grad
        if self._momentum_buffers:
            buf_var = self._momentum_buffers[index]
            buf = ops.cast(buf_var, dtype) * momentum + buf
        direction = grad + momentum * buf if self.nesterov else buf
        update, ratio = project(
            param,
            grad,
            direction,
            self._axes_of[index],
            delta=self.delta,
            wd_ratio=self.wd_ratio,
            eps=self.epsilon,
        )
        if self.variant == "authors" and not self.nesterov:
            buf = update
        weight_decay = self._decay_of[index]
        if weight_decay > 0:
            param = param * decay_factor(lr, weight_decay / (1.0 - self.momentum), ratio, dtype)
        param = param - lr * update

        if self._momentum_buffers:
            self.assign(buf_var, ops.cast(buf, buf_var.dtype))
        self.assign(variable, ops.cast(param, variable.dtype))

    def _torch_update_step(
        self,
        variables: list[Any],
        axes: list[Axes],
        params: list[Any],
        grads: list[Any],
        *,
        lr: Any,
        weight_decay: float,
    ) -> None:
        from adamp_torch import functional

        from ._torch_path import channel_first

        index = [self._get_variable_index(v) for v in variables]
        if self._momentum_buffers:
            buffers = [
                channel_first(self._momentum_buffers[i].value, a) for i, a in zip(index, axes)
            ]
        else:
            # Without momentum the buffer only carries this step's gradient: zeroed
            # scratch kept between steps, not state.
            buffers = [self._torch_scratch(i, p) for i, p in zip(index, params)]
        functional.sgdp(
            params,
            grads,
            buffers,
            lr=lr,
            momentum=self.momentum,
            dampening=self.dampening,
            weight_decay=weight_decay,
            nesterov=self.nesterov,
            eps=self.epsilon,
            delta=self.delta,
            wd_ratio=self.wd_ratio,
            variant=self.variant,
        )

    def _torch_scratch(self, index: int, like: Any) -> Any:
        """Zeros shaped, typed and laid out like ``like``: variable ``index``'s buffer."""
        import torch

        scratch: dict[int, Any] = self.__dict__.setdefault("_torch_scratch_buffers", {})
        buf = scratch.get(index)
        if buf is None or buf.shape != like.shape or buf.stride() != like.stride():
            buf = scratch[index] = torch.zeros_like(like)
        else:
            buf.zero_()  # a gradient of inf must not leave 0 * inf = NaN for the next step
        return buf

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
            epsilon=self.epsilon,
            delta=self.delta,
            wd_ratio=self.wd_ratio,
            variant=self.variant,
            **self._projection_config(),
        )
        return config
