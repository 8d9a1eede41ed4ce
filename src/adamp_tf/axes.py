"""Which axes of a Keras variable play PyTorch's output-channel axis (axis 0).

AdamP's channel view has one row per output channel. PyTorch stores the output channel
first; Keras stores kernels with the output channel last. This module decides, once per
variable and from its shape and path alone, which Keras axes index the rows, so that the
row length (and with it the ``delta / sqrt(n)`` threshold) equals PyTorch's:

========================================  =====================  ==================
variable (Keras layer)                    Keras shape            channel axes
========================================  =====================  ==================
Conv1D/2D/3D, Dense, ConvNDTranspose,     ``(..., out)``         last
LSTM/GRU/SimpleRNN kernels, any other
kernel of rank >= 2
Embedding ``embeddings``                  ``(vocab, dim)``       first
DepthwiseConv1D/2D ``kernel``,            ``(kh, kw, in, mult)`` last two
SeparableConv ``depthwise_kernel``
MultiHeadAttention query/key/value        ``(d, heads, dim)``    last two
``kernel`` (rank 3)
any ``bias`` (also MHA's and GRU's 2-D    any                    never projected
biases), vectors and scalars (BatchNorm)
========================================  =====================  ==================

The rule reads the variable path: a depthwise kernel is recognised by ``depthwise`` in
its layer name (Keras' default names ``depthwise_conv2d``... and SeparableConv's
``depthwise_kernel``). For layers renamed without that word, use
:func:`model_channel_axes`, which decides from the layer types of a built model.

A user override (``channel_axes=`` on :class:`adamp_tf.AdamP` / :class:`adamp_tf.SGDP`)
wins over these defaults; see :data:`ChannelAxesOverride`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from adamp_core.axes import Axes, AxesSpec, check_axes_spec
from adamp_core.axes import normalize_axes as _normalize

__all__ = [
    "Axes",
    "AxesSpec",
    "ChannelAxesOverride",
    "default_channel_axes",
    "resolve_channel_axes",
    "normalize_axes",
    "check_axes_spec",
    "model_channel_axes",
]

#: The ``channel_axes`` argument of the optimizers. Either
#:
#: * a mapping ``{regex: axes}``: the first regex (in insertion order) found by
#:   :func:`re.search` in the variable's path (``"conv2d/kernel"``; its name when it has
#:   no path) decides; variables no regex matches get the default rule; or
#: * a callable ``f(variable) -> axes``: its result decides; returning the string
#:   ``"default"`` falls back to the default rule.
#:
#: In both, ``axes`` is an :data:`AxesSpec`; ``None`` or ``()`` turns projection off for
#: that variable (it is then treated like a bias: plain AdamW/SGD step, full decay).
ChannelAxesOverride = Union[Mapping[str, AxesSpec], Callable[[Any], Any], None]  # noqa: UP007

_DEPTHWISE = re.compile(r"depthwise_kernel$|depthwise[^/]*/kernel$")
_BIAS = re.compile(r"bias$")
_EMBEDDING = re.compile(r"embeddings$")
_ATTENTION_QKV = re.compile(r"(^|/)(query|key|value)/kernel$")


def normalize_axes(axes: AxesSpec, ndim: int) -> Axes:
    """:func:`adamp_core.axes.normalize_axes` for a variable of rank ``ndim``."""
    return _normalize(axes, ndim, kind="variable")


def default_channel_axes(shape: Sequence[int], path: str) -> Axes:
    """The default rule (table in the module docstring) for a variable of ``shape``.

    Args:
        shape: the variable's shape.
        path: its Keras path (``"embedding/embeddings"``) or name.
    """
    ndim = len(shape)
    if ndim < 2 or _BIAS.search(path):
        return ()
    if _EMBEDDING.search(path):
        return (0,)
    if _DEPTHWISE.search(path) or (ndim == 3 and _ATTENTION_QKV.search(path)):
        return (ndim - 2, ndim - 1)
    return (ndim - 1,)


def variable_path(variable: Any) -> str:
    """The variable's Keras path, falling back to its name (raw backend variables)."""
    path = getattr(variable, "path", None)
    if path is None:
        path = str(getattr(variable, "name", ""))
    return str(path).split(":")[0]


def resolve_channel_axes(variable: Any, override: ChannelAxesOverride = None) -> Axes:
    """The channel axes of ``variable``: the user override if it decides, else the default.

    Args:
        variable: a Keras variable (anything with ``shape`` and ``path`` or ``name``).
        override: see :data:`ChannelAxesOverride`; ``None`` uses the default rule only.

    Raises:
        ValueError: the override's axes for this variable are not valid axes of it (the
            message names ``channel_axes``, the regex or callable, and the variable).
    """
    shape = tuple(int(d) for d in variable.shape)
    path = variable_path(variable)
    if callable(override):
        spec = override(variable)
        if not (isinstance(spec, str) and spec == "default"):
            name = getattr(override, "__qualname__", type(override).__name__)
            return _normalize_for(spec, shape, path, f"channel_axes callable {name}")
    elif override is not None:
        for pattern, spec in override.items():
            if re.search(pattern, path):
                return _normalize_for(spec, shape, path, f"channel_axes[{pattern!r}]")
    return default_channel_axes(shape, path)


def _normalize_for(spec: Any, shape: tuple[int, ...], path: str, source: str) -> Axes:
    """:func:`normalize_axes` with an error that says where the spec came from."""
    try:
        return normalize_axes(spec, len(shape))
    except ValueError as exc:
        raise ValueError(
            f"{source} gave {spec!r} for variable {path!r} of shape {shape}: {exc}"
        ) from None


def model_channel_axes(model: Any) -> dict[str, AxesSpec]:
    """A ``channel_axes`` mapping for a built Keras model, decided from its layer types.

    Covers what variable paths alone cannot tell: depthwise kernels of layers whose name
    lacks ``depthwise`` (``DepthwiseConv1D/2D`` kernels and ``SeparableConv``
    ``depthwise_kernel``: last two axes). Other variables are left to the default rule.
    Use as ``AdamP(channel_axes=model_channel_axes(model))``.
    """
    import keras

    depthwise = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    separable = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
    out: dict[str, AxesSpec] = {}
    for layer in model._flatten_layers(include_self=True):
        for v in layer.trainable_variables:
            name = variable_path(v)
            is_depthwise = (isinstance(layer, depthwise) and name.endswith("/kernel")) or (
                isinstance(layer, separable) and name.endswith("/depthwise_kernel")
            )
            if is_depthwise:
                out[re.escape(name) + "$"] = [-2, -1]
    return out
