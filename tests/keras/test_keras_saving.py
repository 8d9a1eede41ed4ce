"""Saving and restoring: .keras files in a fresh process, tf.train.Checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import adamp_tf
from helpers.keras_utils import BACKEND, to_numpy


def _model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5,))
    x = keras.layers.Embedding(7, 4, name="embedding")(keras.ops.cast(inputs, "int32"))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, use_bias=False, name="hidden")(x)  # no bias before BN
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.integers(0, 7, (12, 5)).astype("float32"), rng.standard_normal((12, 2))


RESUME = textwrap.dedent(
    """
    import sys
    import numpy as np
    import adamp_tf  # registers AdamP / SGDP
    import keras
    model = keras.saving.load_model(sys.argv[1])
    assert type(model.optimizer).__name__ == sys.argv[3], type(model.optimizer)
    data = np.load(sys.argv[2])
    state = [keras.ops.convert_to_numpy(v.value) for v in model.optimizer.variables]
    model.fit(data["x"], data["y"], batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.savez(sys.argv[2] + ".out.npz",
             *[keras.ops.convert_to_numpy(w) for w in model.weights], *state)
    """
)


def _resume_here(path: Path, data: Path, name: str) -> None:
    """The RESUME script, run in this process (already imports adamp_tf)."""
    model = keras.saving.load_model(path)
    assert type(model.optimizer).__name__ == name
    arrays = np.load(data)
    state = [to_numpy(v.value) for v in model.optimizer.variables]
    model.fit(arrays["x"], arrays["y"], batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.savez(str(data) + ".out.npz", *[to_numpy(w) for w in model.weights], *state)


@pytest.mark.parametrize(
    "optimizer, fresh",
    [
        (lambda: adamp_tf.AdamP(learning_rate=0.05, weight_decay=0.1, nesterov=True), True),
        (
            lambda: adamp_tf.SGDP(
                learning_rate=0.05, momentum=0.9, weight_decay=0.1, variant="paper"
            ),
            False,
        ),
    ],
)
def test_keras_file_loads_and_resumes(optimizer, fresh: bool, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Save mid-training, load (AdamP: in a fresh process), train on: same weights."""
    x, y = _data()
    model = _model()
    opt = optimizer()
    opt.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    state = [to_numpy(v.value) for v in model.optimizer.variables]
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    expected = [to_numpy(w) for w in model.weights] + state

    if fresh:
        env = {**os.environ, "KERAS_BACKEND": BACKEND}
        args = [str(path), str(tmp_path / "data.npz"), type(opt).__name__]
        subprocess.run([sys.executable, "-c", RESUME, *args], check=True, env=env)
    else:
        _resume_here(path, tmp_path / "data.npz", type(opt).__name__)
    got = np.load(tmp_path / "data.npz.out.npz")
    assert len(got.files) == len(expected)
    n = len(model.weights)
    for i, want in enumerate(expected[n:], start=n):  # optimizer state: restored exactly
        np.testing.assert_array_equal(got[f"arr_{i}"], want)
    # One more epoch: same trajectory (the weight-decay exclusion is saved too).
    rtol = 1e-5
    for i, want in enumerate(expected[:n]):
        np.testing.assert_allclose(
            got[f"arr_{i}"], want, rtol=rtol, atol=1e-6, err_msg=model.weights[i].path
        )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.train.Checkpoint is TensorFlow's")
def test_tf_train_checkpoint(tmp_path: Path) -> None:
    import tensorflow as tf

    x, y = _data()
    model = _model()
    model.compile(optimizer=adamp_tf.AdamP(learning_rate=0.05, weight_decay=0.1), loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    saved = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "ckpt"))
    state = [to_numpy(v.value) for v in model.optimizer.variables]
    weights = [to_numpy(w) for w in model.weights]

    other = _model()
    other.compile(optimizer=adamp_tf.AdamP(learning_rate=0.05, weight_decay=0.1), loss="mse")
    other.optimizer.build(other.trainable_variables)
    tf.train.Checkpoint(model=other, optimizer=other.optimizer).restore(saved).assert_consumed()
    for a, b in zip(state, other.optimizer.variables):
        np.testing.assert_array_equal(a, to_numpy(b.value))
    for a, b in zip(weights, other.weights):
        np.testing.assert_array_equal(a, to_numpy(b))
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    other.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)
