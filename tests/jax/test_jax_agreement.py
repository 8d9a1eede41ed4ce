"""adamp_jax against the NumPy reference on Flax-layout leaves, every branch forced.

Oracle: adamp_core's functional steps on the same tensors with the channel axes moved to
the front (:mod:`jax_reference`). float64 (x64) within 1e-12 absolute; float32 within
1e-4 of the largest weight, eagerly and under ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
import pytest
from jax_reference import (
    AXES,
    BRANCH,
    CONFIGS,
    Reference,
    gradient_tree,
    initial_tree,
    jax_hparams,
    largest_weight,
    max_diff,
)

import adamp_jax
from adamp_core.testing import FLOAT32_REL_TOL, FLOAT64_ABS_TOL

STEPS = 8
#: One leaf per branch and layout kind, for the eager runs (each new shape costs JAX a
#: compilation per primitive there).
EAGER_LEAVES = ("conv_channel", "dense_layer", "bias")
FACTORIES = {"AdamP": adamp_jax.adamp, "SGDP": adamp_jax.sgdp}
CASES = [(opt, name) for opt, configs in CONFIGS.items() for name in configs]


def make(
    optimizer: str, hparams: dict[str, Any], names: Any = AXES, **kwargs: Any
) -> optax.GradientTransformation:
    """adamp_jax's optimizer for the reference's hyperparameters, with :data:`AXES` as
    the ``channel_axes`` tree of the leaves ``names``."""
    axes = {k: AXES[k] for k in names}
    return FACTORIES[optimizer](**jax_hparams(hparams), channel_axes=axes, **kwargs)


def run_against_reference(
    optimizer: str,
    hparams: dict[str, Any],
    dtype: Any,
    *,
    jit: bool,
    steps: int = STEPS,
    names: Any = AXES,
) -> tuple[float, float]:
    """(worst absolute difference, largest reference weight) over ``steps`` steps on the
    leaves ``names``; every step the reference must take each leaf's intended branch."""
    start = initial_tree(dtype, tuple(names))
    ref = Reference(optimizer, start, hparams)
    tx = make(optimizer, hparams, names)
    params = jax.tree.map(jax.numpy.asarray, start)
    state = tx.init(params)

    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step_fn = jax.jit(step) if jit else step
    worst, scale = 0.0, 0.0
    for t in range(steps):
        grads = gradient_tree(ref.params, t)
        ref.step(grads)
        assert ref.branches == {k: BRANCH[k] for k in start}, f"branches at step {t}"
        params, state = step_fn(params, state, grads)
        assert all(np.asarray(v).dtype == dtype for v in jax.tree.leaves(params))
        worst = max(worst, max_diff(params, ref.params))
        scale = max(scale, largest_weight(ref.params))
    return worst, scale


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer, config", CASES)
def test_float64_matches_reference_on_every_branch(optimizer: str, config: str) -> None:
    worst, _ = run_against_reference(optimizer, CONFIGS[optimizer][config], np.float64, jit=True)
    assert worst <= FLOAT64_ABS_TOL


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_float64_eager_matches_reference(optimizer: str) -> None:
    config = next(iter(CONFIGS[optimizer].values()))
    worst, _ = run_against_reference(
        optimizer, config, np.float64, jit=False, steps=2, names=EAGER_LEAVES
    )
    assert worst <= FLOAT64_ABS_TOL


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_float32_matches_reference(optimizer: str) -> None:
    config = next(iter(CONFIGS[optimizer].values()))
    worst, scale = run_against_reference(optimizer, config, np.float32, jit=True)
    assert worst <= FLOAT32_REL_TOL * scale


@pytest.mark.usefixtures("x64")
def test_defaults_equal_the_reference_defaults() -> None:
    """adamp(lr) and sgdp(lr) with nothing else: the core's defaults (weight decay off)."""
    for optimizer, lr in (("AdamP", 1e-3), ("SGDP", 0.1)):
        start = initial_tree(names=EAGER_LEAVES)
        ref = Reference(optimizer, start, {"lr": lr})
        tx = FACTORIES[optimizer](lr, channel_axes={k: AXES[k] for k in EAGER_LEAVES})
        params = jax.tree.map(jax.numpy.asarray, start)
        state = tx.init(params)
        for t in range(3):
            grads = gradient_tree(ref.params, t)
            ref.step(grads)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        assert max_diff(params, ref.params) <= FLOAT64_ABS_TOL
