"""What AdamP and SGDP share in Keras: per-variable decisions, decay, config, torch path."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
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
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate=_as_float_lr(learning_rate), weight_decay=weight_decay, **kwargs
        )
        if channel_axes is not None and not callable(channel_axes):
            if not isinstance(channel_axes, Mapping):
                raise ValueError(
                    "channel_axes must be None, a mapping {regex: axes} or a callable, "
                    f"got {channel_axes!r}"
                )
            channel_axes = {str(k): _axes_to_config(v) for k, v in channel_axes.items()}
        self.channel_axes = channel_axes
        self._axes_of: list[Axes] = []
        self._decay_of: list[float] = []

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

    def _apply_weight_decay(self, variables: Any) -> None:
        """Disabled: decay is applied in ``update_step``, scaled by the projection ratio."""
        return None

    # -- torch backend: one fused call instead of a Python loop of small kernels ------
    def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
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
        return {"channel_axes": None if axes is None else dict(axes)}


def _axes_to_config(spec: Any) -> Any:
    """A mapping value in JSON form: ``None``, an int or a list of ints."""
    if spec is None or isinstance(spec, int):
        return spec
    return [int(a) for a in spec]
