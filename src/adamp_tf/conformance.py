"""The Keras backends announced to ``adamp_core``'s conformance check.

``backends()`` lists one :class:`adamp_core.testing.Backend` per Keras backend whose
framework is installed, without importing Keras or any framework: a Keras backend is
fixed when Keras is first imported, so the check runs each in a process whose
``KERAS_BACKEND`` matches, and the factory imports Keras only when first called.

The suite's arrays are in PyTorch layout (axis 0 is the output channel); the factory says
so with the optimizers' ``channel_axes`` override.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from adamp_core.testing import Backend

__all__ = ["backends", "keras_factory", "keras_eager_factory", "KerasUnderTest"]

#: Keras backend name -> the module that must be importable for it.
_FRAMEWORKS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

#: Names of the hyperparameters whose Keras spelling differs from the core's.
_KERAS_NAMES = {"lr": "learning_rate", "eps": "epsilon"}


def _torch_layout(variable: Any) -> Any:
    """The suite's override: axis 0 is the output channel of every tensor of rank >= 2."""
    return (0,) if len(variable.shape) >= 2 else None


def keras_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The core's hyperparameter names translated to the Keras optimizers' names."""
    out = {}
    for key, value in hparams.items():
        if key == "betas":
            out["beta_1"], out["beta_2"] = (float(b) for b in value)
        else:
            out[_KERAS_NAMES.get(key, key)] = float(value) if key == "lr" else value
    return out


class KerasUnderTest:
    """An ``adamp_tf`` optimizer on Keras variables, driven with NumPy gradients.

    Args:
        optimizer: ``"AdamP"`` or ``"SGDP"``.
        params: starting weights (PyTorch layout).
        hparams: hyperparameters in the core's names.
        jit: compile the update (``tf.function`` on TensorFlow, ``jax.jit`` of
            ``stateless_apply`` on JAX; the torch backend runs eagerly).
        xla: on TensorFlow, compile with XLA (``jit_compile=True``).
    """

    def __init__(
        self,
        optimizer: str,
        params: list[np.ndarray],
        hparams: dict[str, Any],
        *,
        jit: bool = True,
        xla: bool = True,
    ) -> None:
        import keras

        import adamp_tf

        self.variables = [
            keras.Variable(np.asarray(p), dtype=str(np.asarray(p).dtype), name=f"param{i}")
            for i, p in enumerate(params)
        ]
        cls = {"AdamP": adamp_tf.AdamP, "SGDP": adamp_tf.SGDP}[optimizer]
        self.optimizer = cls(channel_axes=_torch_layout, **keras_hparams(hparams))
        self.optimizer.build(self.variables)
        self.xla = xla
        self._apply = self._compiled_apply() if jit else self._eager_apply

    def _eager_apply(self, grads: list[Any]) -> None:
        self.optimizer.apply(grads, self.variables)

    def _compiled_apply(self) -> Any:
        import keras

        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(self._eager_apply, jit_compile=self.xla)
        if backend == "jax":
            import jax

            stateless = jax.jit(self.optimizer.stateless_apply)

            def apply(grads: list[Any]) -> None:
                train, opt = stateless(
                    [v.value for v in self.optimizer.variables],
                    grads,
                    [v.value for v in self.variables],
                )
                for var, value in zip([*self.variables, *self.optimizer.variables], [*train, *opt]):
                    var.assign(value)

            return apply
        return self._eager_apply

    def step(self, grads: Sequence[np.ndarray]) -> None:
        from keras import ops

        self._apply(
            [
                ops.convert_to_tensor(np.asarray(g), dtype=v.dtype)
                for g, v in zip(grads, self.variables)
            ]
        )

    def get_params(self) -> list[np.ndarray]:
        from keras import ops

        return [np.asarray(ops.convert_to_numpy(v.value)) for v in self.variables]


def keras_factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
    """Conformance factory for the Keras backend of this process (``KERAS_BACKEND``);
    the update is compiled where the backend compiles (see :class:`KerasUnderTest`)."""
    return KerasUnderTest(optimizer, params, hparams)


def keras_eager_factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
    """As :func:`keras_factory`, with the update run eagerly."""
    return KerasUnderTest(optimizer, params, hparams, jit=False)


def _float64_ok(backend: str) -> bool:
    if backend != "jax":
        return True
    return os.environ.get("JAX_ENABLE_X64", "").lower() in ("1", "true", "yes")


def backends() -> list[Backend]:
    """One :class:`Backend` per importable Keras backend (``keras-tensorflow`` ...)."""
    if importlib.util.find_spec("keras") is None:
        return []
    out = []
    for backend, module in _FRAMEWORKS.items():
        if importlib.util.find_spec(module) is None:
            continue
        dtypes = ("float32", "float64") if _float64_ok(backend) else ("float32",)
        out.append(
            Backend(f"keras-{backend}", keras_factory, dtypes, env={"KERAS_BACKEND": backend})
        )
    return out
