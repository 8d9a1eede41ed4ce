"""The channel-axis rule on real Keras layers, and the user override."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import adamp_tf
from adamp_tf.axes import model_channel_axes, normalize_axes, resolve_channel_axes


def _variables(layer: keras.layers.Layer, *inputs: tuple[int, ...]) -> dict[str, keras.Variable]:
    if len(inputs) == 1:
        layer.build(inputs[0])
    else:
        layer(*[keras.ops.ones(s) for s in inputs])
    return {v.path.split("/", 1)[1]: v for v in layer.trainable_variables}


# (layer, input shape(s), variable, torch weight shape of the same tensor)
LAYERS = [
    (lambda: keras.layers.Conv2D(5, 3, name="c"), [(1, 8, 8, 3)], "kernel", (5, 3, 3, 3)),
    (lambda: keras.layers.Conv1D(5, 2, name="c"), [(1, 8, 3)], "kernel", (5, 3, 2)),
    (lambda: keras.layers.Conv3D(2, 2, name="c"), [(1, 4, 4, 4, 3)], "kernel", (2, 3, 2, 2, 2)),
    (lambda: keras.layers.Dense(7, name="d"), [(1, 4)], "kernel", (7, 4)),
    (lambda: keras.layers.Conv2DTranspose(3, 2, name="t"), [(1, 4, 4, 6)], "kernel", (6, 3, 2, 2)),
    (lambda: keras.layers.Embedding(11, 4, name="e"), [(1, 2)], "embeddings", (11, 4)),
    (
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise_conv2d"),
        [(1, 8, 8, 3)],
        "kernel",
        (6, 1, 3, 3),
    ),
    (
        lambda: keras.layers.SeparableConv2D(4, 3, name="s"),
        [(1, 8, 8, 3)],
        "depthwise_kernel",
        (3, 1, 3, 3),
    ),
    (
        lambda: keras.layers.SeparableConv2D(4, 3, name="s"),
        [(1, 8, 8, 3)],
        "pointwise_kernel",
        (4, 3, 1, 1),
    ),
    (lambda: keras.layers.LSTM(3, name="l"), [(1, 2, 5)], "lstm_cell/kernel", (12, 5)),
    (lambda: keras.layers.LSTM(3, name="l"), [(1, 2, 5)], "lstm_cell/recurrent_kernel", (12, 3)),
    (
        lambda: keras.layers.MultiHeadAttention(2, 4, name="m"),
        [(1, 3, 6), (1, 3, 6)],
        "query/kernel",
        (8, 6),
    ),
    (
        lambda: keras.layers.MultiHeadAttention(2, 4, name="m"),
        [(1, 3, 6), (1, 3, 6)],
        "attention_output/kernel",
        (6, 8),
    ),
]


@pytest.mark.parametrize("make, inputs, var, torch_shape", LAYERS)
def test_rows_match_torch(make, inputs, var, torch_shape) -> None:  # type: ignore[no-untyped-def]
    """Rows and row length of the channel view equal PyTorch's ``reshape(out, -1)``."""
    v = _variables(make(), *inputs)[var]
    axes = resolve_channel_axes(v)
    shape = tuple(v.shape)
    rows = math.prod(shape[a] for a in axes)
    assert (rows, math.prod(shape) // rows) == (torch_shape[0], math.prod(torch_shape[1:]))


@pytest.mark.parametrize(
    "make, inputs",
    [
        (lambda: keras.layers.MultiHeadAttention(2, 4, name="m"), [(1, 3, 6), (1, 3, 6)]),
        (lambda: keras.layers.GRU(3, name="g"), [(1, 2, 5)]),
        (lambda: keras.layers.BatchNormalization(name="b"), [(1, 4)]),
        (lambda: keras.layers.Dense(3, name="d"), [(1, 4)]),
    ],
)
def test_biases_and_vectors_never_projected(make, inputs) -> None:  # type: ignore[no-untyped-def]
    """PyTorch biases are 1-D; Keras' 2-D MHA and GRU biases must not be projected either."""
    for path, v in _variables(make(), *inputs).items():
        if path.endswith("bias") or len(v.shape) < 2:
            assert resolve_channel_axes(v) == (), path


def test_renamed_depthwise_needs_model_rule() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    model = keras.Model(inputs, x)
    dw = model.get_layer("dw").kernel
    assert resolve_channel_axes(dw) == (3,)  # the name gives no hint: default rule
    mapping = model_channel_axes(model)
    assert resolve_channel_axes(dw, mapping) == (2, 3)
    sep = model.get_layer("sep").depthwise_kernel
    assert resolve_channel_axes(sep, mapping) == (2, 3)
    opt = adamp_tf.AdamP(channel_axes=mapping)
    opt.build(model.trainable_variables)
    assert opt.variable_channel_axes(dw) == (2, 3)


def test_overrides() -> None:
    v = keras.Variable(np.zeros((3, 4, 5)), name="kernel")
    assert resolve_channel_axes(v) == (2,)
    assert resolve_channel_axes(v, {"ker": 0}) == (0,)
    assert resolve_channel_axes(v, {"nomatch": 0}) == (2,)
    assert resolve_channel_axes(v, {"kernel": None}) == ()
    assert resolve_channel_axes(v, {"kernel": [-1, 0]}) == (0, 2)
    assert resolve_channel_axes(v, lambda var: "default") == (2,)
    assert resolve_channel_axes(v, lambda var: (1,)) == (1,)
    assert resolve_channel_axes(v, lambda var: ()) == ()
    assert normalize_axes(0, 1) == ()  # vectors are never projected
    for bad in (3, [0, 0], [0, 1, 2], "x"):
        with pytest.raises(ValueError):
            resolve_channel_axes(v, {"kernel": bad})
    with pytest.raises(ValueError, match="channel_axes"):
        adamp_tf.AdamP(channel_axes=[0])  # type: ignore[arg-type]
