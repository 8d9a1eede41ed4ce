"""Helpers shared by the Keras adapter tests (run once per backend: KERAS_BACKEND=...)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

import adamp_core
from adamp_core.functional import AdamPState, SGDPState, adamp_step, sgdp_step

BACKEND = keras.backend.backend()


def core_defaults(name: str) -> dict[str, Any]:
    """The NumPy reference optimizer's default hyperparameters (``"AdamP"`` / ``"SGDP"``),
    read from its constructor: the keyword arguments its step function takes (SGDP's
    ``lr`` has no default and is left out)."""
    step = adamp_step if name == "AdamP" else sgdp_step
    wanted = {k for k, p in inspect.signature(step).parameters.items() if p.kind == p.KEYWORD_ONLY}
    return {
        k: p.default
        for k, p in inspect.signature(getattr(adamp_core, name)).parameters.items()
        if k in wanted and p.default is not inspect.Parameter.empty
    }


def has_float64() -> bool:
    """float64 tensors exist on this backend (JAX only with x64)."""
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


#: dtypes a test can run in on this backend (float64 omitted on JAX without x64).
DTYPES = ("float32", "float64") if has_float64() else ("float32",)


def compiled_apply(
    optimizer: keras.optimizers.Optimizer, variables: list[Any], xla: bool = True
) -> Callable:
    """``grads -> None`` applying ``optimizer`` compiled as the backend compiles a train
    step: ``tf.function(jit_compile=xla)`` on TensorFlow, ``jax.jit`` of
    ``stateless_apply`` on JAX, eager on torch."""
    from adamp_tf.conformance import KerasUnderTest

    runner = KerasUnderTest.__new__(KerasUnderTest)
    runner.optimizer, runner.variables, runner.xla = optimizer, variables, xla
    return runner._compiled_apply()


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


class Reference:
    """adamp_core run tensor by tensor, with a per-tensor weight decay (exclusions)."""

    def __init__(
        self,
        name: str,
        params: Sequence[np.ndarray],
        hparams: dict[str, Any],
        no_decay: Sequence[bool] = (),
    ):
        self.name = name
        self.params = [np.array(p) for p in params]
        self.hparams = dict(hparams)
        self.no_decay = list(no_decay) or [False] * len(self.params)
        zero = AdamPState.zeros_like if name == "AdamP" else SGDPState.zeros_like
        self.state: list[Any] = [zero(p) for p in self.params]
        self.branches: list[str] = []

    def step(self, grads: Sequence[np.ndarray]) -> None:
        fn = adamp_step if self.name == "AdamP" else sgdp_step
        defaults = core_defaults(self.name)
        self.branches = []
        for i, g in enumerate(grads):
            hp = {**defaults, **self.hparams}
            if self.no_decay[i]:
                hp["weight_decay"] = 0.0
            out = fn(self.params[i], np.asarray(g, self.params[i].dtype), self.state[i], **hp)
            self.params[i], self.state[i] = out.param, out.state
            self.branches.append(out.branch)
