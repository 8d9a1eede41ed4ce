"""What AdamP and SGDP share in Keras: per-variable decisions, decay, config, torch path."""

from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from .axes import Axes, ChannelAxesOverride, check_axes_spec, resolve_channel_axes, variable_path

__all__ = ["ProjectedOptimizer"]


def _as_float_lr(learning_rate: Any) -> Any:
    """Integers become floats (Keras only accepts float learning rates); rest unchanged."""
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        return float(learning_rate)
    return learning_rate


def validated_lr(learning_rate: Any) -> Any:
    """What the core's validation checks: ``None`` for schedules and callables."""
    return None if callable(learning_rate) else learning_rate


class ProjectedOptimizer(keras.optimizers.Optimizer):
    """Base of :class:`~adamp_tf.AdamP` and :class:`~adamp_tf.SGDP`.

    In ``build()`` it decides, per variable, the channel axes (see :mod:`adamp_tf.axes`)
    and the weight decay coefficient (``0`` for variables excluded with
    ``exclude_from_weight_decay``). The base class's own decay is switched off: AdamP's
    decay depends on the projection (``wd_ratio``), so ``update_step`` applies it.
    """

    def __init__(
        self,
        learning_rate: Any,
        *,
        weight_decay: float,
        channel_axes: ChannelAxesOverride,
        exclude_from_weight_decay: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # checked before the base class creates any variable
        channel_axes = _checked_channel_axes(channel_axes)
        excluded = _checked_names(exclude_from_weight_decay)
        learning_rate = _as_float_lr(learning_rate)
        constant = isinstance(learning_rate, float) and _has_float64()
        # A constant learning rate gets a float64 variable (below) instead of Keras'
        # floatx one: a placeholder callable keeps the base class from creating its own.
        super().__init__(
            learning_rate=_placeholder_lr if constant else learning_rate,
            weight_decay=weight_decay,
            **kwargs,
        )
        if constant:
            self._set_float64_learning_rate(learning_rate)
        self.channel_axes = channel_axes
        self._excluded_names: list[str] = []
        if excluded:
            self.exclude_from_weight_decay(var_names=excluded)
        self._axes_of: list[Axes] = []
        self._decay_of: list[float] = []

    def _set_float64_learning_rate(self, value: float) -> None:
        """Hold a constant learning rate in a float64 variable.

        Keras keeps it in ``floatx`` (float32), which rounds e.g. 0.02 by 2e-8 relative:
        float64 variables would then follow a slightly different trajectory than
        PyTorch's, whose learning rate is a Python float. Same name, place among the
        optimizer variables and aggregation as Keras' own.
        """
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                value,
                name="learning_rate",
                dtype="float64",
                trainable=False,
                aggregation="only_first_replica",
            )
        self._track_variable(variable)
        self._learning_rate = variable

    # -- per-variable decisions -------------------------------------------------------
    def build(self, variables: list[Any]) -> None:
        """Create state and fix each variable's channel axes and decay coefficient.

        Raises:
            ValueError: a variable that is not floating-point (its update would be
                truncated), or ``channel_axes`` giving invalid axes for a variable.
                Raised before any state is created.
        """
        if self.built:
            return
        variables = list(variables)
        for v in variables:
            dtype = keras.backend.standardize_dtype(v.dtype)
            if dtype not in _FLOAT_DTYPES:
                raise ValueError(
                    f"{type(self).__name__} updates floating-point variables only "
                    f"({', '.join(_FLOAT_DTYPES)}); variable {variable_path(v)!r} has "
                    f"dtype {dtype}"
                )
        axes_of = [resolve_channel_axes(v, self.channel_axes) for v in variables]
        super().build(variables)
        wd = float(self.weight_decay or 0.0)
        self._axes_of = axes_of
        self._decay_of = [wd if self._use_weight_decay(v) else 0.0 for v in variables]

    def apply(self, grads: Any, trainable_variables: Any = None) -> None:
        """Keras' ``apply``, after checking that each gradient has its variable's shape.

        Shapes are static here (also under ``tf.function`` and ``jax.jit``), so the check
        reads no tensor value; without it a mismatch would fail deep inside the step, or
        broadcast silently.

        Raises:
            ValueError: a gradient count or shape that does not match the variables.
        """
        grads = list(grads)
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
        variables = trainable_variables
        if variables is None and self.built:
            variables = self._trainable_variables
        if variables is not None and grads:
            _check_gradients(type(self).__name__, grads, variables)
        super().apply(grads, trainable_variables)

    def variable_channel_axes(self, variable: Any) -> Axes:
        """The channel axes chosen for ``variable`` in ``build()`` (``()``: not projected)."""
        return self._axes_of[self._get_variable_index(variable)]

    def variable_weight_decay(self, variable: Any) -> float:
        """The weight decay coefficient chosen for ``variable`` in ``build()`` (``0`` if
        excluded)."""
        return self._decay_of[self._get_variable_index(variable)]

    def exclude_from_weight_decay(
        self, var_list: Any = None, var_names: Sequence[str] | None = None
    ) -> None:
        """Keras' exclusion (call before ``build``); ``var_names`` are also saved in the
        config, so a reloaded optimizer excludes the same variables (``var_list`` holds
        variable objects and is not saved)."""
        super().exclude_from_weight_decay(var_list=var_list, var_names=var_names)
        self._excluded_names = [str(n) for n in var_names or ()]

    def _apply_weight_decay(self, variables: Any) -> None:
        """Disabled: decay is applied in ``update_step``, scaled by the projection ratio."""
        return None

    # -- torch backend: one batched kernel call instead of a Python loop of small ones ---
    def _backend_update_step(
        self, grads: Any, trainable_variables: Any, learning_rate: Any
    ) -> None:
        if keras.backend.backend() == "torch":
            from . import _torch_path

            if _torch_path.available():
                _torch_path.update(self, list(grads), list(trainable_variables), learning_rate)
                return
        super()._backend_update_step(grads, trainable_variables, learning_rate)

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
        """One step of ``adamp_torch.functional`` on torch views of ``variables`` in
        PyTorch layout (``params``, ``grads``; ``axes``: their channel axes), all with this
        ``weight_decay``."""
        raise NotImplementedError

    # -- config -----------------------------------------------------------------------
    def _projection_config(self) -> dict[str, Any]:
        axes = self.channel_axes
        if callable(axes):
            warnings.warn(
                "channel_axes is a callable and is not saved in the config; pass it again "
                "when loading (from_config / custom_objects)",
                stacklevel=3,
            )
            axes = None
        return {
            "channel_axes": None if axes is None else dict(axes),
            "exclude_from_weight_decay": list(self._excluded_names) or None,
        }


def _placeholder_lr() -> float:
    """Stands in for the learning rate during the base class's constructor only."""
    raise AssertionError("replaced in ProjectedOptimizer.__init__")


def _has_float64() -> bool:
    """Whether the running Keras backend has float64 tensors (JAX only with x64)."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    # getattr: jax.config's flags are not in its type stubs
    return bool(getattr(jax.config, "jax_enable_x64", False))


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _checked_channel_axes(channel_axes: Any) -> ChannelAxesOverride:
    """``channel_axes`` checked as far as possible without the variables: a mapping's keys
    must compile as regexes and its values be axes specs (stored in JSON form: ``None``,
    an int or a list of ints); the ranks are checked in ``build()``."""
    if channel_axes is None or callable(channel_axes):
        return channel_axes
    if not isinstance(channel_axes, Mapping):
        raise ValueError(
            "channel_axes must be None, a mapping {regex: axes} or a callable, "
            f"got {channel_axes!r}"
        )
    out: dict[str, Any] = {}
    for pattern, spec in channel_axes.items():
        if not isinstance(pattern, str):
            raise ValueError(
                f"channel_axes keys must be regular expressions (str), got {pattern!r}"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"channel_axes key {pattern!r} is not a valid regular expression: {exc}"
            ) from None
        try:
            axes = check_axes_spec(spec)
        except ValueError as exc:
            raise ValueError(f"channel_axes[{pattern!r}]: {exc}") from None
        if axes is None or isinstance(spec, (list, tuple, range)):
            out[pattern] = None if axes is None else list(axes)
        else:  # a single integer stays one int in the config
            out[pattern] = axes[0]
    return out


def _checked_names(names: Any) -> list[str]:
    """``exclude_from_weight_decay``: ``None`` or a list of regexes. A single string is
    refused: iterated, each of its characters would become a pattern."""
    if names is None:
        return []
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(
            "exclude_from_weight_decay must be a list of variable-name patterns "
            f"(regexes), e.g. ['bias'], got {names!r}"
        )
    for name in names:
        if not isinstance(name, str):
            raise ValueError(
                f"exclude_from_weight_decay patterns must be str, got {name!r} in {names!r}"
            )
        try:
            re.compile(name)
        except re.error as exc:
            raise ValueError(
                f"exclude_from_weight_decay pattern {name!r} is not a valid regular "
                f"expression: {exc}"
            ) from None
    return list(names)


def _static_shape(x: Any) -> tuple[int | None, ...] | None:
    """``x``'s static shape (``None`` for unknown dimensions), or ``None`` if unknown."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):  # a TensorShape of unknown rank
        return None


def _check_gradients(owner: str, grads: list[Any], variables: list[Any]) -> None:
    """One gradient per variable, each of its variable's shape (dimensions unknown at
    trace time match anything); ``None`` gradients are left to Keras."""
    if len(grads) != len(variables):
        raise ValueError(
            f"{owner}: got {len(grads)} gradients for {len(variables)} variables; pass "
            "one gradient per variable"
        )
    for g, v in zip(grads, variables):
        if g is None:
            continue
        g_shape, v_shape = _static_shape(g), _static_shape(v)
        if g_shape is None or v_shape is None:
            continue
        same = len(g_shape) == len(v_shape) and all(
            a is None or b is None or a == b for a, b in zip(g_shape, v_shape)
        )
        if not same:
            raise ValueError(
                f"{owner}: the gradient of variable {variable_path(v)!r} has shape "
                f"{g_shape}, the variable {v_shape}"
            )
