"""What AdamP and SGDP share in Keras: per-variable decisions, decay, config, torch path."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from .axes import Axes, ChannelAxesOverride, resolve_channel_axes

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
        if channel_axes is not None and not callable(channel_axes):
            if not isinstance(channel_axes, Mapping):
                raise ValueError(
                    "channel_axes must be None, a mapping {regex: axes} or a callable, "
                    f"got {channel_axes!r}"
                )
            channel_axes = {str(k): _axes_to_config(v) for k, v in channel_axes.items()}
        self.channel_axes = channel_axes
        self._excluded_names: list[str] = []
        if exclude_from_weight_decay:
            self.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
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
        """Create state and fix each variable's channel axes and decay coefficient."""
        if self.built:
            return
        super().build(variables)
        wd = float(self.weight_decay or 0.0)
        self._axes_of = [resolve_channel_axes(v, self.channel_axes) for v in variables]
        self._decay_of = [wd if self._use_weight_decay(v) else 0.0 for v in variables]

    def variable_channel_axes(self, variable: Any) -> Axes:
        """The channel axes chosen for ``variable`` in ``build()`` (``()``: not projected)."""
        return self._axes_of[self._get_variable_index(variable)]

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

    # -- torch backend: one fused call instead of a Python loop of small kernels ------
    def _backend_update_step(
        self, grads: Any, trainable_variables: Any, learning_rate: Any
    ) -> None:
        if keras.backend.backend() == "torch":
            from . import _torch_path

            if _torch_path.available():
                _torch_path.update(self, list(grads), list(trainable_variables), learning_rate)
                return
        super()._backend_update_step(grads, trainable_variables, learning_rate)

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


def _axes_to_config(spec: Any) -> Any:
    """A mapping value in JSON form: ``None``, an int or a list of ints."""
    if spec is None or isinstance(spec, int):
        return spec
    return [int(a) for a in spec]
