"""Train one small network with ``adamp_tf`` under ``keras.distribution`` (JAX backend).

Run by ``tests/keras/test_keras_distribution.py`` in a process of its own::

    python tests/helpers/keras_distribution.py OUT.npz

It sets ``KERAS_BACKEND=jax``, ``JAX_PLATFORMS=cpu`` and 4 virtual CPU devices
(``XLA_FLAGS``) before JAX is imported: the device count is fixed when JAX creates its
CPU backend, so it cannot be set inside a test process that may already use JAX. For
AdamP and SGDP it trains the same conv + BatchNorm + dense network with ``model.fit``
from the same initial weights on the same batches:

* ``single``: one device, no distribution (the oracle);
* ``data``: ``DataParallel`` over the 4 devices (batch split 4 ways);
* ``model``: ``ModelParallel`` on a ``(2, 2)`` mesh ``("batch", "model")``: every conv and
  dense kernel sharded on its output (last) axis over ``"model"``, the batch over
  ``"batch"``;
* ``unprojected``: one device with ``channel_axes`` disabling the projection everywhere
  (the control showing that the projection changes the result).

It also runs :func:`sharded_steps` (the optimizer step alone on variables sharded along
every axis). It writes every run's final weights and, as JSON under the key ``meta``, what
the test asserts on: the variable paths, the sharding each ``model`` variable and its
optimizer state ended with and the one its layout asks for, and which collectives the
compiled optimizer steps contain.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

DEVICES = 4
MESH = (2, 2)  # ("batch", "model"): both axes really split
EPOCHS = 3
BATCH = 128
SAMPLES = 512
OPTIMIZERS = ("AdamP", "SGDP")
MODES = ("single", "data", "model", "unprojected")
#: variable-path regex (matched whole) -> layout: kernels sharded on their output axis
KERNEL_LAYOUTS = {
    r".*conv2d[^/]*/kernel": (None, None, None, "model"),
    r".*dense[^/]*/kernel": (None, "model"),
}


def _environment() -> None:
    """JAX on 4 virtual CPU devices; call before JAX or Keras is imported.

    LLVM optimisation level 0 compiles about 3x faster; the partitioning and the
    collectives XLA inserts are decided on the HLO, before LLVM, and every run here
    (the single-device oracle too) is compiled the same way.
    """
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["JAX_PLATFORMS"] = "cpu"  # also on a GPU machine: 4 devices of one kind
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={DEVICES} "
        "--xla_backend_optimization_level=0"
    ).strip()


def _data() -> tuple[np.ndarray, np.ndarray]:
    """8x8 one-channel images of 10 classes: a fixed random template per class plus
    noise (learnable in a few epochs, nothing downloaded)."""
    rng = np.random.default_rng(0)
    templates = rng.standard_normal((10, 8, 8, 1))
    y = rng.integers(0, 10, SAMPLES)
    x = templates[y] + rng.standard_normal((SAMPLES, 8, 8, 1))
    return x.astype("float32"), y.astype("int32")


def _model() -> Any:
    """The network, with the same initial weights at every call."""
    import keras

    rng = np.random.default_rng(0)

    def kernel(shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        # NumPy instead of Keras' initializers: JAX's random initializers compile one
        # program per shape, most of this script's run time
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32")

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer=kernel),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            # no bias before BatchNorm: its gradient would be rounding noise, which Adam
            # scales up to steps of size lr that differ between any two summation orders
            keras.layers.Conv2D(
                16, 3, strides=2, padding="same", use_bias=False, kernel_initializer=kernel
            ),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, kernel_initializer=kernel),
            keras.layers.ReLU(),
            keras.layers.Dense(10, kernel_initializer=kernel),
        ]
    )


def _optimizer(name: str, projected: bool) -> Any:
    import adamp_tf

    # callable returning None: projection off for every variable (decay then unscaled)
    axes = None if projected else (lambda variable: None)
    if name == "AdamP":
        return adamp_tf.AdamP(learning_rate=0.003, weight_decay=0.05, channel_axes=axes)
    return adamp_tf.SGDP(learning_rate=0.05, momentum=0.9, weight_decay=1e-3, channel_axes=axes)


def _distribution(mode: str) -> Any:
    import keras

    devices = keras.distribution.list_devices("cpu")
    if mode == "data":
        return keras.distribution.DataParallel(devices=devices)
    mesh = keras.distribution.DeviceMesh(MESH, ("batch", "model"), devices=devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in KERNEL_LAYOUTS.items():
        layout_map[pattern] = axes
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def _spec(array: Any) -> list[Any]:
    """A jax array's sharding as a list of mesh axis names per dimension (None: whole)."""
    spec = list(getattr(array.sharding, "spec", ()))
    spec += [None] * (array.ndim - len(spec))
    return [tuple(s) if isinstance(s, (list, tuple)) else s for s in spec]


def _optimizer_step_collectives(optimizer: Any, model: Any) -> dict[str, Any]:
    """Compile the optimizer step alone on the sharded variables and list its collectives
    and the output shardings XLA chose. The weights stand in for the gradients: sharded
    like their variables, as the train step hands them over."""
    import jax

    weights = [v.value for v in model.trainable_variables]
    state = [v.value for v in optimizer.variables]
    compiled = jax.jit(optimizer.stateless_apply).lower(state, weights, weights).compile()
    hlo = compiled.as_text()
    new_weights, _ = compiled(state, weights, weights)
    return {
        "all_gather": "all-gather" in hlo,
        "all_to_all": "all-to-all" in hlo,
        "all_reduce": "all-reduce" in hlo,
        "step_output_specs": [_spec(w) for w in new_weights],
    }


def train(name: str, mode: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Train from the fixed initial weights; return the final weights and what was seen."""
    import contextlib

    import keras

    x, y = _data()
    distribution = None if mode in ("single", "unprojected") else _distribution(mode)
    with distribution.scope() if distribution else contextlib.nullcontext():
        model = _model()
        optimizer = _optimizer(name, projected=mode != "unprojected")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss)
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
        info: dict[str, Any] = {}
        if mode == "model":
            info["paths"] = [v.path for v in model.weights]
            info["specs"] = [_spec(v.value) for v in model.weights]
            info["wanted_specs"] = [
                list(distribution.get_variable_layout(v).axes) for v in model.weights
            ]
            info["state_specs"] = {v.path: _spec(v.value) for v in optimizer.variables}
            info["trainable_specs"] = [_spec(v.value) for v in model.trainable_variables]
            info.update(_optimizer_step_collectives(optimizer, model))
            info["channel_axes"] = {
                v.path: list(optimizer.variable_channel_axes(v)) for v in model.trainable_variables
            }
        weights = [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in model.weights]
        info["weight_paths"] = [v.path for v in model.weights]
    return weights, info


#: name -> (shape, channel axes, partition over a 4-device mesh axis "m"): every axis a
#: kernel can be split on, including those a reshape to (rows, channels) would merge
SHARDED_STEP_CASES: dict[str, tuple[tuple[int, ...], list[int], tuple[Any, ...]]] = {
    "conv_out": ((3, 3, 8, 16), [3], (None, None, None, "m")),
    "conv_in": ((3, 3, 8, 16), [3], (None, None, "m", None)),
    "conv_kh": ((4, 3, 8, 16), [3], ("m", None, None, None)),
    "dense_in": ((16, 8), [1], ("m", None)),
    "dense_out": ((16, 8), [1], (None, "m")),
    "embeddings_dim": ((16, 8), [0], (None, "m")),
    "depthwise_in": ((3, 3, 8, 4), [2, 3], (None, None, "m", None)),
    "depthwise_mult": ((3, 3, 8, 4), [2, 3], (None, None, None, "m")),
}
STEP_HPARAMS = {
    "AdamP": dict(lr=0.01, weight_decay=0.1),
    "SGDP": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
}


def _reference(name: str, w0: np.ndarray, grads: np.ndarray, axes: list[int]) -> np.ndarray:
    """The NumPy reference's steps, on the weight laid out with its channel axes first
    (PyTorch's layout: one row per channel)."""
    from adamp_core import functional

    front = list(range(len(axes)))
    moved = np.moveaxis(w0, axes, front)
    rows = int(np.prod(moved.shape[: len(axes)]))
    param = moved.reshape(rows, -1)
    h = STEP_HPARAMS[name]
    state: Any = (functional.AdamPState if name == "AdamP" else functional.SGDPState).zeros_like(
        param
    )
    for g in grads:
        grad = np.moveaxis(g, axes, front).reshape(rows, -1)
        if name == "AdamP":
            out = functional.adamp_step(
                param, grad, state, lr=h["lr"], betas=(0.9, 0.999), eps=1e-8,
                weight_decay=h["weight_decay"], delta=0.1, wd_ratio=0.1, nesterov=False,
            )  # fmt: skip
        else:
            out = functional.sgdp_step(
                param, grad, state, lr=h["lr"], momentum=h["momentum"], dampening=0.0,
                weight_decay=h["weight_decay"], nesterov=False, eps=1e-8, delta=0.1,
                wd_ratio=0.1, variant="authors",
            )  # fmt: skip
        param, state = out.param, out.state
    return np.moveaxis(param.reshape(moved.shape), front, axes)


def _owner(path: str) -> str | None:
    """The case whose state an optimizer variable (``"adamp/conv_in_exp_avg_sq"``) is."""
    name = path.split("/")[-1]
    return next((case for case in SHARDED_STEP_CASES if name.startswith(case + "_")), None)


def sharded_steps() -> dict[str, Any]:
    """Two compiled optimizer steps (the first one's gradients make the layer view pass)
    on the variables of :data:`SHARDED_STEP_CASES`, each sharded as given, for both
    optimizers on meshes with automatic (Keras') and explicit axes: the collectives in
    the step, and per variable the sharding of the result and its largest difference from
    the NumPy reference relative to the largest weight."""
    import jax
    import keras
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import adamp_tf

    rng = np.random.default_rng(1)
    weights0, grads = {}, {}
    for case, (shape, _, _) in SHARDED_STEP_CASES.items():
        weights0[case] = w0 = rng.standard_normal(shape).astype("float32")
        grads[case] = g = rng.standard_normal((2, *shape)).astype("float32")
        g[0] -= w0 * (w0 * g[0]).sum() / (w0 * w0).sum()
    out: dict[str, Any] = {}
    for kind in ("Auto", "Explicit"):
        mesh = jax.make_mesh((DEVICES,), ("m",), axis_types=(getattr(AxisType, kind),))
        shardings = {c: NamedSharding(mesh, P(*s)) for c, (*_, s) in SHARDED_STEP_CASES.items()}
        for name in OPTIMIZERS:
            variables = [keras.Variable(w, name=case) for case, w in weights0.items()]
            axes = {f"^{case}$": a for case, (_, a, _) in SHARDED_STEP_CASES.items()}
            h = dict(STEP_HPARAMS[name])
            cls = adamp_tf.AdamP if name == "AdamP" else adamp_tf.SGDP
            optimizer = cls(h.pop("lr"), channel_axes=axes, **h)
            optimizer.build(variables)

            # optimizer state is sharded like its variable, as Keras lays it out
            # ("adamp/conv_in_exp_avg"); the iteration count and lr stay whole
            state = [
                jax.device_put(v.value, shardings[case]) if case else v.value
                for v, case in ((v, _owner(v.path)) for v in optimizer.variables)
            ]
            params = [jax.device_put(weights0[c], shardings[c]) for c in SHARDED_STEP_CASES]
            step_grads = [
                [jax.device_put(grads[c][k], shardings[c]) for c in SHARDED_STEP_CASES]
                for k in range(2)
            ]

            # the executable itself runs the steps: calling the jitted function would
            # compile it a second time
            step = jax.jit(optimizer.stateless_apply).lower(state, step_grads[0], params).compile()
            hlo = step.as_text()
            for g in step_grads:
                params, state = step(state, g, params)
            run: dict[str, Any] = {
                "all_gather": "all-gather" in hlo,
                "all_to_all": "all-to-all" in hlo,
                "all_reduce": "all-reduce" in hlo,
                "variables": {},
            }
            for case, got in zip(SHARDED_STEP_CASES, params):
                _, axes_, spec = SHARDED_STEP_CASES[case]
                want = _reference(name, weights0[case], grads[case], axes_)
                run["variables"][case] = {
                    "spec": _spec(got),
                    "wanted_spec": list(spec),
                    "rel_diff": float(np.abs(np.asarray(got) - want).max() / np.abs(want).max()),
                }
            out[f"{kind}/{name}"] = run
    return out


def main(argv: list[str]) -> int:
    """Write every (optimizer, mode) run's weights and ``meta`` JSON to ``argv[0]``."""
    _environment()
    import jax

    if len(jax.devices()) != DEVICES:
        print(f"{len(jax.devices())} devices, not {DEVICES}: JAX was set up before this ran")
        return 2
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"devices": DEVICES, "mesh": MESH, "runs": {}}
    for name in OPTIMIZERS:
        for mode in MODES:
            weights, info = train(name, mode)
            meta["runs"][f"{name}/{mode}"] = info
            for i, w in enumerate(weights):
                arrays[f"{name}/{mode}/{i}"] = w
    meta["sharded_steps"] = sharded_steps()
    np.savez(argv[0], meta=np.array(json.dumps(meta)), **arrays)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
