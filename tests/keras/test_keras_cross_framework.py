"""Same network in PyTorch and Keras, same gradients, same weights after every step.

The Keras layers are real (so the default channel-axis rule sees real variable paths);
their weights are copied from PyTorch-layout arrays with each layer's transpose. Every
step both sides get the same gradient (built from the PyTorch-side weights, so that
each tensor takes a chosen branch: channel projection, layer projection or none), and
every Keras weight is compared with the authors' ``adamp`` (PyTorch) and with
``adamp_core``. Biases and BatchNorm vectors are excluded from weight decay on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import adamp
import keras
import numpy as np
import pytest
import torch

import adamp_tf
from adamp_core.testing import Case, case_gradient
from helpers.keras_utils import DTYPES, Reference, compiled_apply, to_numpy


@dataclass
class Tensor:
    """One weight: its PyTorch shape, PyTorch->Keras transform, gradient kind."""

    layer: str
    var: str
    torch_shape: tuple[int, ...]
    to_keras: Callable[[np.ndarray], np.ndarray]
    grad: str  # orthogonal (channel), layer, aligned (none)
    no_decay: bool = False


def conv(t: np.ndarray) -> np.ndarray:  # (out, in, kh, kw) -> (kh, kw, in, out)
    return t.transpose(2, 3, 1, 0)


def depthwise(t: np.ndarray) -> np.ndarray:  # (in*mult, 1, kh, kw) -> (kh, kw, in, mult)
    return t.reshape(4, 2, 3, 3).transpose(2, 3, 0, 1)


def same(t: np.ndarray) -> np.ndarray:
    return t


TENSORS = [
    Tensor("conv", "kernel", (4, 3, 3, 3), conv, "orthogonal"),
    Tensor("conv", "bias", (4,), same, "aligned", no_decay=True),
    Tensor("bn", "gamma", (4,), same, "aligned", no_decay=True),
    Tensor("bn", "beta", (4,), same, "aligned", no_decay=True),
    Tensor("depthwise", "kernel", (8, 1, 3, 3), depthwise, "layer"),
    # ConvTranspose2d(4 -> 3): torch (in, out, kh, kw), Keras (kh, kw, out, in).
    Tensor("deconv", "kernel", (4, 3, 2, 2), conv, "orthogonal"),
    Tensor("dense", "kernel", (5, 16), np.transpose, "layer"),
    Tensor("dense", "bias", (5,), same, "aligned", no_decay=True),
    Tensor("head", "kernel", (3, 5), np.transpose, "aligned"),
    Tensor("embedding", "embeddings", (10, 6), same, "orthogonal"),
    Tensor("lstm", "kernel", (12, 6), np.transpose, "orthogonal"),
]


def keras_layers(dtype: str) -> dict[str, keras.layers.Layer]:
    layers = {
        "conv": keras.layers.Conv2D(4, 3, name="conv", dtype=dtype),
        "bn": keras.layers.BatchNormalization(name="bn", dtype=dtype),
        "depthwise": keras.layers.DepthwiseConv2D(
            3, depth_multiplier=2, use_bias=False, name="depthwise", dtype=dtype
        ),
        "deconv": keras.layers.Conv2DTranspose(3, 2, use_bias=False, name="deconv", dtype=dtype),
        "dense": keras.layers.Dense(5, name="dense", dtype=dtype),
        "head": keras.layers.Dense(3, use_bias=False, name="head", dtype=dtype),
        "embedding": keras.layers.Embedding(10, 6, name="embedding", dtype=dtype),
    }
    shapes = {
        "conv": (1, 8, 8, 3),
        "bn": (1, 4),
        "depthwise": (1, 8, 8, 4),
        "deconv": (1, 4, 4, 4),
        "dense": (1, 16),
        "head": (1, 5),
        "embedding": (1, 2),
    }
    for name, layer in layers.items():
        layer.build(shapes[name])
    lstm = keras.layers.LSTM(3, name="lstm", dtype=dtype)
    lstm.build((1, 2, 6))
    layers["lstm"] = lstm
    return layers


def keras_variable(layers: dict, t: Tensor) -> keras.Variable:
    for v in layers[t.layer].trainable_variables:
        if v.path.endswith(f"/{t.var}") and len(v.shape) == len(t.torch_shape):
            return v
    raise LookupError(t)


CONFIGS = {
    "AdamP-wd": ("AdamP", dict(lr=0.02, weight_decay=0.3, wd_ratio=0.2)),
    "AdamP-nesterov-wd": ("AdamP", dict(lr=0.02, nesterov=True, weight_decay=0.3)),
    "SGDP-momentum-wd": ("SGDP", dict(lr=0.1, momentum=0.9, weight_decay=0.05)),
    "SGDP-paper-nesterov": ("SGDP", dict(lr=0.1, momentum=0.9, weight_decay=0.05, variant="paper")),
}


def keras_optimizer(name: str, hp: dict) -> keras.optimizers.Optimizer:
    from adamp_tf.conformance import keras_hparams

    opt = getattr(adamp_tf, name)(**keras_hparams(hp))
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def authors_optimizer(name: str, hp: dict, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    hp = dict(hp)
    wd = hp.pop("weight_decay", 0.0)
    groups = [
        {"params": [p for p, t in zip(params, TENSORS) if not t.no_decay], "weight_decay": wd},
        {"params": [p for p, t in zip(params, TENSORS) if t.no_decay], "weight_decay": 0.0},
    ]
    return getattr(adamp, name)(groups, **hp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_keras_matches_torch_and_core(config: str, dtype: str) -> None:
    name, hp = CONFIGS[config]
    rng = np.random.default_rng(7)
    start = [rng.standard_normal(t.torch_shape).astype(dtype) for t in TENSORS]
    authors_ok = hp.get("variant", "authors") == "authors"
    torch_params = [torch.tensor(p, requires_grad=True) for p in start]
    authors = authors_optimizer(name, hp, torch_params) if authors_ok else None
    core = Reference(name, start, hp, no_decay=[t.no_decay for t in TENSORS])

    layers = keras_layers(dtype)
    variables = [keras_variable(layers, t) for t in TENSORS]
    for v, t, p in zip(variables, TENSORS, start):
        v.assign(t.to_keras(p))
    opt = keras_optimizer(name, hp)
    opt.build(variables)
    apply = compiled_apply(opt, variables, xla=dtype == "float32")  # XLA: TF, float32

    seen = set()
    for step in range(12):
        grads = [
            case_gradient(
                Case(f"{t.layer}/{t.var}", t.torch_shape, t.grad, "none"),  # type: ignore[arg-type]
                core.params[i].astype(np.float64),
                step,
            ).astype(dtype)
            for i, t in enumerate(TENSORS)
        ]
        core.step(grads)
        seen.update(zip(range(len(TENSORS)), core.branches))
        if authors is not None:
            for p, g in zip(torch_params, grads):
                p.grad = torch.tensor(g)
            authors.step()
        apply([keras.ops.convert_to_tensor(t.to_keras(g)) for t, g in zip(TENSORS, grads)])

        for i, (t, v) in enumerate(zip(TENSORS, variables)):
            got = to_numpy(v.value).astype(np.float64)
            oracles = [core.params[i]]
            if authors is not None:
                oracles.append(torch_params[i].detach().numpy())
            for want in oracles:
                want = t.to_keras(np.asarray(want, np.float64))
                diff = np.max(np.abs(got - want))
                if dtype == "float64":
                    assert diff <= 1e-12, (config, step, t)
                else:
                    assert diff <= 1e-5 * np.max(np.abs(want)), (config, step, t, diff)

    branches = {b for _, b in seen}
    assert branches == {"channel", "layer", "none"}
    expected = {"orthogonal": "channel", "layer": "layer", "aligned": "none"}
    for i, t in enumerate(TENSORS):
        assert (i, expected[t.grad]) in seen, t
