"""The Flax trainer of ``python -m adamp_core demo`` (entry point ``adamp_core.demos``).

The same small conv net with batch normalization as the PyTorch and Keras demos, in Flax
NNX, trained once per optimizer from the same initial weights: ``optax.sgd`` vs
:func:`adamp_jax.sgdp` and ``optax.adamw`` vs :func:`adamp_jax.adamp`, the learning rate
decaying to 0 by ``optax.cosine_decay_schedule`` (which computes
:func:`adamp_core.cli.trainer.cosine_lr_factor`). See :mod:`adamp_core.cli.trainer` for
the protocol. Without flax, loading this module raises ``ModuleNotFoundError`` for it, and
the demo skips this trainer with that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adamp_core.cli.trainer import DemoData, HistoryRecorder, OptimizerSpec

from . import adamp, flax_channel_axes, sgdp

try:
    from flax import nnx
except ModuleNotFoundError as exc:  # the demo reports this as its reason to skip
    raise ModuleNotFoundError(
        f"{exc} (the Flax demo needs it: pip install flax)", name="flax"
    ) from exc

__all__ = ["Net", "make_optimizer", "train"]

FRAMEWORK = "flax"


class Net(nnx.Module):
    """conv(16)-BN-ReLU-conv(32)-BN-ReLU-maxpool-global average-dense, on (8, 8, 1) images.

    The two convolution kernels are scale-invariant (no bias, batch norm follows).
    """

    def __init__(self, num_classes: int, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 16, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
        self.head = nnx.Linear(32, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return self.head(jnp.mean(x, axis=(1, 2)))

    def scale_invariant(self) -> list[jax.Array]:
        """The convolution kernels (followed by batch norm)."""
        return [self.conv1.kernel[...], self.conv2.kernel[...]]


def _core_to_optax(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The core's hyperparameter names (lr excluded) in optax's and adamp_jax's names."""
    out = {}
    for key, value in hparams.items():
        if key == "betas":
            out["b1"], out["b2"] = (float(b) for b in value)
        elif key != "lr":
            out[key] = value
    return out


def make_optimizer(spec: OptimizerSpec, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation named by ``spec``, its learning rate decaying to 0 over
    ``total_steps``. SGD's weight decay, if any, is coupled (added to the gradient), as in
    ``torch.optim.SGD``; the other three decay decoupled."""
    lr = optax.cosine_decay_schedule(float(spec.hparams["lr"]), total_steps)
    hparams = _core_to_optax(spec.hparams)
    if spec.name == "SGD":
        weight_decay = hparams.pop("weight_decay", 0.0)
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, **hparams))
    if spec.name == "AdamW":
        return optax.adamw(lr, **hparams)
    factory: Any = {"SGDP": sgdp, "AdamP": adamp}[spec.name]
    return factory(lr, channel_axes=flax_channel_axes, **hparams)


@nnx.jit
def _train_step(
    model: Net, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    def loss_fn(model: Net) -> jax.Array:
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    norms = jnp.stack([jnp.linalg.norm(w) for w in model.scale_invariant()])
    return loss, norms


@nnx.jit
def _predict(model: Net, x: jax.Array) -> jax.Array:
    return jnp.argmax(model(x), axis=1)


def _accuracy(model: Net, x: jax.Array, y: np.ndarray) -> float:
    model.eval()
    correct = np.asarray(_predict(model, x)) == y
    model.train()
    return float(np.mean(correct))


def _norms(model: Net) -> list[float]:
    return [float(jnp.linalg.norm(w)) for w in model.scale_invariant()]


def train(
    data: DemoData,
    optimizers: Sequence[OptimizerSpec],
    epochs: int,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Train one copy of the same initial model per optimizer; histories by name."""
    # the "rbg" generator: Flax's default initialisers compile in a third of threefry's time
    initial = Net(data.num_classes, nnx.Rngs(jax.random.key(seed, impl="rbg")))
    x_train = jnp.asarray(np.transpose(data.x_train, (0, 2, 3, 1)))  # NCHW -> NHWC
    x_test = jnp.asarray(np.transpose(data.x_test, (0, 2, 3, 1)))
    y_train = jnp.asarray(data.y_train.astype(np.int32))
    total = epochs * data.steps_per_epoch()
    histories = {}
    for spec in optimizers:
        model = nnx.clone(initial)  # fresh variables: each optimizer starts from the same weights
        optimizer = nnx.Optimizer(model, make_optimizer(spec, total), wrt=nnx.Param)
        rec = HistoryRecorder(spec, total)
        rec.log_step(0, _norms(model))
        rec.log_epoch(0, _accuracy(model, x_test, data.y_test), None)
        step = 0
        for epoch in range(1, epochs + 1):
            losses = []
            for idx in data.batches(epoch, seed):
                loss, norms = _train_step(model, optimizer, x_train[idx], y_train[idx])
                step += 1
                losses.append(float(loss))
                rec.log_step(step, [float(n) for n in np.asarray(norms)])
            rec.log_epoch(epoch, _accuracy(model, x_test, data.y_test), float(np.mean(losses)))
            progress(rec.progress_line(FRAMEWORK, epochs))
        histories[spec.name] = rec.as_dict()
    return histories
