"""The Keras trainer of ``python -m adamp_core demo`` (entry point ``adamp_core.demos``).

The same small conv net with batch normalization as the PyTorch demo, in Keras 3 on
whichever Keras backend this process runs, trained once per optimizer from the same
initial weights: ``keras.optimizers.SGD`` vs :class:`adamp_tf.SGDP` and
``keras.optimizers.AdamW`` vs :class:`adamp_tf.AdamP`. See :mod:`adamp_core.cli.trainer` for the
protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from adamp_core.cli.trainer import BATCH_SIZE, DemoData, HistoryRecorder, OptimizerSpec

from . import SGDP, AdamP
from .conformance import keras_hparams

__all__ = ["make_model", "make_optimizer", "train"]


def make_model(num_classes: int = 10) -> keras.Sequential:
    """conv(16)-BN-ReLU-conv(32)-BN-ReLU-maxpool-global average-dense, on (8, 8, 1) images.

    The two convolution kernels are scale-invariant (no bias, batch norm follows).
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.GlobalAveragePooling2D(),
            layers.Dense(num_classes),
        ]
    )


def make_optimizer(spec: OptimizerSpec, total_steps: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer named by ``spec``, its hyperparameters in Keras' names, its
    learning rate decaying to 0 over ``total_steps`` (``CosineDecay`` computes
    :func:`adamp_core.cli.trainer.cosine_lr_factor`)."""
    classes: dict[str, Any] = {
        "SGD": keras.optimizers.SGD,
        "SGDP": SGDP,
        "AdamW": keras.optimizers.AdamW,
        "AdamP": AdamP,
    }
    hparams = keras_hparams({k: v for k, v in spec.hparams.items() if k != "lr"})
    schedule = keras.optimizers.schedules.CosineDecay(float(spec.hparams["lr"]), total_steps)
    return classes[spec.name](learning_rate=schedule, **hparams)


def _norms(model: keras.Model) -> list[float]:
    return [
        float(np.linalg.norm(keras.ops.convert_to_numpy(layer.kernel)))
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    ]


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


class _NormLogger(keras.callbacks.Callback):
    def __init__(self, rec: HistoryRecorder, step: int) -> None:
        super().__init__()
        self.rec, self.step = rec, step

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        self.rec.log_step(self.step, _norms(self.model))


def train(
    data: DemoData,
    optimizers: Sequence[OptimizerSpec],
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Train one copy of the same initial model per optimizer; histories by name."""
    keras.utils.set_random_seed(seed)
    initial = make_model(data.num_classes).get_weights()
    x_train = np.transpose(data.x_train, (0, 2, 3, 1))  # NCHW -> NHWC
    x_test = np.transpose(data.x_test, (0, 2, 3, 1))
    framework = f"keras-{keras.backend.backend()}"
    total = epochs * data.steps_per_epoch()
    histories = {}
    for spec in optimizers:
        model = make_model(data.num_classes)
        model.set_weights(initial)
        model.compile(
            optimizer=make_optimizer(spec, total),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        rec = HistoryRecorder(spec, total)
        rec.log_step(0, _norms(model))
        rec.log_epoch(0, _accuracy(model, x_test, data.y_test), None)
        logger = _NormLogger(rec, 0)
        for epoch in range(1, epochs + 1):
            order = np.concatenate(list(data.batches(epoch, seed)))
            fit = model.fit(
                x_train[order],
                data.y_train[order],
                batch_size=BATCH_SIZE,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[logger],
            )
            rec.log_epoch(
                epoch, _accuracy(model, x_test, data.y_test), float(fit.history["loss"][-1])
            )
            progress(rec.progress_line(framework, epochs))
        histories[spec.name] = rec.as_dict()
    return histories
