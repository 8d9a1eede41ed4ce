"""The optax transformations as backend ``optax`` of ``adamp_core``'s conformance check.

The suite's arrays are in PyTorch layout (axis 0 is the output channel). The factory moves
that axis last, so the optimizers run on Flax-layout parameters with the default channel
axes (what a Flax user gets), and moves it back for the comparison. Each update runs under
``jax.jit``. Float64 needs JAX's x64 mode, fixed when JAX starts: the backend asks for
``JAX_ENABLE_X64=1``, so the check runs it in a child process that has it.

Loading this module imports the package, hence JAX and optax: where one is missing, the
check lists ``optax`` under "not checked" with the missing module's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamp_core.testing import Backend

__all__ = [
    "OptaxUnderTest",
    "optax_factory",
    "optax_hparams",
    "backends",
    "to_flax_layout",
    "from_flax_layout",
]

#: Names of the core's hyperparameters whose adamp_jax spelling differs.
_NAMES = {"lr": "learning_rate"}


def to_flax_layout(x: np.ndarray) -> np.ndarray:
    """PyTorch layout to Flax layout: the output channel (axis 0) moves last."""
    return np.moveaxis(x, 0, -1) if x.ndim >= 2 else x


def from_flax_layout(x: np.ndarray) -> np.ndarray:
    """Flax layout back to PyTorch layout: the last axis moves to the front."""
    return np.moveaxis(x, -1, 0) if x.ndim >= 2 else x


def optax_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The core's hyperparameter names translated to ``adamp_jax``'s."""
    out = {}
    for key, value in hparams.items():
        if key == "betas":
            out["b1"], out["b2"] = (float(b) for b in value)
        else:
            out[_NAMES.get(key, key)] = value
    return out


class OptaxUnderTest:
    """``adamp_jax.adamp`` / ``sgdp`` on Flax-layout JAX arrays, driven with the suite's
    NumPy gradients (PyTorch layout), one jitted ``update`` per step.

    Raises:
        RuntimeError: float64 parameters while JAX's x64 mode is off (they would be
            silently computed in float32).
    """

    def __init__(self, optimizer: str, params: Sequence[np.ndarray], hparams: dict[str, Any]):
        import jax
        import optax

        import adamp_jax

        if any(np.asarray(p).dtype == np.float64 for p in params) and not jax.config.read(
            "jax_enable_x64"
        ):
            raise RuntimeError("float64 needs JAX's x64 mode: set JAX_ENABLE_X64=1")
        factory: Any = {"AdamP": adamp_jax.adamp, "SGDP": adamp_jax.sgdp}[optimizer]
        self.tx = factory(**optax_hparams(hparams))
        self.params = [jax.numpy.asarray(to_flax_layout(np.asarray(p))) for p in params]
        self.state = self.tx.init(self.params)

        def step(params: Any, state: Any, grads: Any) -> Any:
            updates, state = self.tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self._step: Any = jax.jit(step)

    def step(self, grads: Sequence[np.ndarray]) -> None:
        flax_grads = [to_flax_layout(np.asarray(g)) for g in grads]
        self.params, self.state = self._step(self.params, self.state, flax_grads)

    def get_params(self) -> list[np.ndarray]:
        return [from_flax_layout(np.asarray(p)) for p in self.params]


def optax_factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
    """Conformance factory: see :class:`OptaxUnderTest`."""
    return OptaxUnderTest(optimizer, params, hparams)


def backends() -> list[Backend]:
    """Backend ``optax`` (float32 and float64, the latter with ``JAX_ENABLE_X64=1``)."""
    return [Backend("optax", optax_factory, ("float32", "float64"), env={"JAX_ENABLE_X64": "1"})]
