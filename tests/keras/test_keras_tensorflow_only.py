"""TensorFlow-only features: sparse (IndexedSlices) gradients, MirroredStrategy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import adamp_tf
from helpers.keras_utils import BACKEND, to_numpy

pytestmark = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow backend only")


@pytest.mark.parametrize("cls", [adamp_tf.AdamP, adamp_tf.SGDP])
def test_indexed_slices_gradients_equal_dense(cls) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    def run(densify: bool) -> list[np.ndarray]:
        keras.utils.set_random_seed(4)
        layer = keras.layers.Embedding(9, 5, name="embedding")
        layer.build((None, 3))
        opt = cls(learning_rate=0.05, weight_decay=0.2, clipnorm=1.0)
        opt.build(layer.trainable_variables)
        step = tf.function(lambda g: opt.apply([g], layer.trainable_variables))
        ids = tf.constant([[1, 2, 2], [7, 1, 0]])
        for _ in range(4):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(ids) ** 2)
            (grad,) = tape.gradient(loss, layer.trainable_variables)
            assert isinstance(grad, tf.IndexedSlices)
            if densify:
                grad = tf.convert_to_tensor(grad)
            step(grad)
        return [to_numpy(layer.embeddings.value)]

    sparse, dense = run(False), run(True)
    np.testing.assert_allclose(sparse[0], dense[0], rtol=1e-6)
    assert np.all(np.isfinite(sparse[0]))


MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, adamp_tf

    def train(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((6, 6, 2))
            x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
            x = keras.layers.Flatten()(x)
            model = keras.Model(inputs, keras.layers.Dense(2)(x))
            model.compile(optimizer=adamp_tf.AdamP(0.05, weight_decay=0.1), loss="mse")
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((16, 6, 6, 2)), rng.standard_normal((16, 2))
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        return [w.numpy() for w in model.weights]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    a, b = train(mirrored), train(tf.distribute.get_strategy())
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    print("ok", len(a))
    """
)


def test_mirrored_strategy_two_cpus_matches_single_device() -> None:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    out = subprocess.run([sys.executable, "-c", MIRRORED], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok 3" in out.stdout
