"""optax behaviour of adamp_jax (after optax's own contrib suite), numbers checked
against the NumPy reference (:mod:`jax_reference`): jit without recompiling,
``inject_hyperparams``, ``chain`` after ``clip_by_global_norm``, ``MultiSteps``,
``lax.scan``, schedules, ``mask``, bf16 parameters, non-finite gradients, convergence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from jax_reference import (
    AXES,
    Reference,
    core_defaults,
    gradient_tree,
    initial_tree,
    jax_hparams,
    largest_weight,
    max_diff,
)

import adamp_jax
from adamp_core.validation import validate_adamp_hparams, validate_sgdp_hparams

#: One leaf per branch (channel, layer, none).
LEAVES = ("conv_channel", "dense_layer", "bias")
TOL64 = 1e-12
HPARAMS = {
    "AdamP": dict(lr=0.02, weight_decay=0.5, wd_ratio=0.3),
    "SGDP": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
}
FACTORIES = {"AdamP": adamp_jax.adamp, "SGDP": adamp_jax.sgdp}
AXES3 = {k: AXES[k] for k in LEAVES}


def make(optimizer: str, **changes: Any) -> optax.GradientTransformation:
    hparams = jax_hparams({**HPARAMS[optimizer], **changes})
    return FACTORIES[optimizer](**hparams, channel_axes=AXES3)


def counting_jit(fn: Callable[..., Any]) -> tuple[Callable[..., Any], list[int]]:
    """``jax.jit(fn)`` and a list whose length is the number of times it was traced."""
    traces: list[int] = []

    def traced(*args: Any) -> Any:
        traces.append(1)
        return fn(*args)

    return jax.jit(traced), traces


def stepper(tx: optax.GradientTransformation) -> Callable[..., Any]:
    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def as_jax(tree: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in tree.items()}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_jit_does_not_recompile_and_schedule_matches_reference(optimizer: str) -> None:
    """A schedule learning rate, under jit: traced once over several steps, and every
    step uses the schedule's value at that step (reference given that value)."""
    schedule = optax.linear_schedule(HPARAMS[optimizer]["lr"], 0.001, transition_steps=4)
    start = initial_tree(np.float64, LEAVES)
    ref = Reference(optimizer, start, HPARAMS[optimizer])
    tx = FACTORIES[optimizer](
        **{**jax_hparams(HPARAMS[optimizer]), "learning_rate": schedule}, channel_axes=AXES3
    )
    step, traces = counting_jit(stepper(tx))
    params = as_jax(start)
    state = tx.init(params)
    for t in range(5):
        grads = gradient_tree(ref.params, t)
        # the schedule's value as the optimizer computes it (an int32 step count)
        ref.step(grads, lr=float(schedule(jnp.asarray(t, jnp.int32))))
        params, state = step(params, state, grads)
    assert len(traces) == 1
    assert max_diff(params, ref.params) <= TOL64


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(
    "optimizer, static",
    [("AdamP", dict(nesterov=True)), ("SGDP", dict(nesterov=False, variant="paper"))],
)
def test_inject_hyperparams_gives_the_same_numbers(optimizer: str, static: dict) -> None:
    """Every float argument injected (traced); changing the learning rate in the state
    takes effect without a retrace and matches the reference at the new value."""
    hparams = {**HPARAMS[optimizer], **static}
    factory = optax.inject_hyperparams(FACTORIES[optimizer], static_args=("channel_axes",))
    injected = factory(**jax_hparams(hparams), channel_axes=AXES3)
    plain = make(optimizer, **static)
    start = initial_tree(np.float64, LEAVES)
    ref = Reference(optimizer, start, hparams)
    step, traces = counting_jit(stepper(injected))
    params, plain_params = as_jax(start), as_jax(start)
    state, plain_state = jax.jit(injected.init)(params), plain.init(plain_params)
    plain_step = jax.jit(stepper(plain))
    for t in range(3):
        grads = gradient_tree(ref.params, t)
        ref.step(grads)
        params, state = step(params, state, grads)
        plain_params, plain_state = plain_step(plain_params, plain_state, grads)
    assert max_diff(params, ref.params) <= TOL64
    assert max_diff(params, plain_params) <= TOL64
    leaves = jax.tree.leaves(state.inner_state[0])
    assert (
        max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(leaves, jax.tree.leaves(plain_state[0]))
            if a.size
        )
        <= TOL64
    )
    old = state.hyperparams["learning_rate"]
    state.hyperparams["learning_rate"] = jnp.asarray(0.005, dtype=old.dtype)
    grads = gradient_tree(ref.params, 3)
    ref.step(grads, lr=0.005)
    params, state = step(params, state, grads)
    assert len(traces) == 1
    assert max_diff(params, ref.params) <= TOL64


@pytest.mark.usefixtures("x64")
def test_chain_after_clip_by_global_norm() -> None:
    max_norm = 0.5
    tx = optax.chain(optax.clip_by_global_norm(max_norm), make("AdamP"))
    start = initial_tree(np.float64, LEAVES)
    ref = Reference("AdamP", start, HPARAMS["AdamP"])
    params, state = as_jax(start), tx.init(as_jax(start))
    step = jax.jit(stepper(tx))
    for t in range(3):
        grads = gradient_tree(ref.params, t)
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        assert norm > max_norm  # the clip is active
        ref.step({k: g * (max_norm / norm) for k, g in grads.items()})
        params, state = step(params, state, grads)
    assert max_diff(params, ref.params) <= TOL64


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_multisteps_applies_the_mean_gradient_every_k_steps(optimizer: str) -> None:
    k = 2
    # MultiSteps accumulates in float32 unless told otherwise
    tx = optax.MultiSteps(make(optimizer), every_k_schedule=k, accumulator_dtype=jnp.float64)
    start = initial_tree(np.float64, LEAVES)
    ref = Reference(optimizer, start, HPARAMS[optimizer])
    params, state = as_jax(start), tx.init(as_jax(start))
    step = jax.jit(stepper(tx))
    for t in range(2):
        micro = [gradient_tree(ref.params, 10 * t + i) for i in range(k)]
        for i, grads in enumerate(micro):
            before = params
            params, state = step(params, state, grads)
            if i < k - 1:
                assert max_diff(params, before) == 0.0
        ref.step({name: sum(g[name] for g in micro) / k for name in micro[0]})
        assert max_diff(params, ref.params) <= TOL64


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_lax_scan_over_steps(optimizer: str) -> None:
    steps = 4
    start = initial_tree(np.float64, LEAVES)
    ref = Reference(optimizer, start, HPARAMS[optimizer])
    sequence = []
    for t in range(steps):
        sequence.append(gradient_tree(ref.params, t))
        ref.step(sequence[-1])
    stacked = {k: jnp.stack([g[k] for g in sequence]) for k in LEAVES}
    tx = make(optimizer)
    step = stepper(tx)

    @jax.jit
    def train(params: Any, state: Any, grads: Any) -> Any:
        def body(carry: Any, g: Any) -> Any:
            return step(*carry, g), None

        return jax.lax.scan(body, (params, state), grads)[0]

    params, _ = train(as_jax(start), tx.init(as_jax(start)), stacked)
    assert max_diff(params, ref.params) <= TOL64


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(
    "optimizer, mask",
    [
        ("AdamP", {"conv_channel": True, "dense_layer": False, "bias": False}),
        ("SGDP", lambda p: {k: k == "conv_channel" for k in p}),
    ],
    ids=["AdamP-tree", "SGDP-callable"],
)
def test_mask_excludes_leaves_from_weight_decay(optimizer: str, mask: Any) -> None:
    start = initial_tree(np.float64, LEAVES)
    ref = Reference(optimizer, start, HPARAMS[optimizer], no_decay=("dense_layer", "bias"))
    tx = make(optimizer, mask=mask)
    params = as_jax(start)
    state = tx.init(params)
    step = jax.jit(stepper(tx))
    for t in range(3):
        grads = gradient_tree(ref.params, t)
        ref.step(grads)
        params, state = step(params, state, grads)
    assert max_diff(params, ref.params) <= TOL64


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_bfloat16_params_keep_their_dtype_with_float32_statistics(optimizer: str) -> None:
    """bf16 weights stay bf16, the state is float32, and the numbers are the float32
    reference's with the weights rounded to bf16 after every step (within 2 bf16 ulps)."""
    start = {k: v.astype(ml_dtypes.bfloat16) for k, v in initial_tree(np.float32, LEAVES).items()}
    ref = Reference(
        optimizer, {k: v.astype(np.float32) for k, v in start.items()}, HPARAMS[optimizer]
    )
    tx = make(optimizer)
    params = as_jax(start)
    state = tx.init(params)
    step = jax.jit(stepper(tx))
    for t in range(3):
        grads = {k: g.astype(ml_dtypes.bfloat16) for k, g in gradient_tree(ref.params, t).items()}
        updates, _ = jax.eval_shape(tx.update, as_jax(grads), state, params)
        assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
        ref.step({k: g.astype(np.float32) for k, g in grads.items()})
        ref.rows = {k: v.astype(ml_dtypes.bfloat16).astype(np.float32) for k, v in ref.rows.items()}
        params, state = step(params, state, as_jax(grads))
        assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params))
        stats = [x for x in jax.tree.leaves(state[0]) if x.ndim > 0]
        assert stats and all(x.dtype == jnp.float32 for x in stats)
    assert max_diff(params, ref.params) <= 2 * 2.0**-8 * largest_weight(ref.params)


def test_inject_hyperparams_with_bfloat16_params_needs_a_float32_hyperparam_dtype() -> None:
    """optax stores injected hyperparameters in the parameters' dtype by default: b2=0.999
    is 1.0 in bfloat16, which the core's validation refuses (optax.adam would give NaN);
    with ``hyperparam_dtype=float32`` the step is finite and the weights stay bfloat16."""
    params = {"w": jnp.ones((4, 3), jnp.bfloat16)}
    grads = {"w": jnp.full((4, 3), 0.1, jnp.bfloat16)}
    tx = optax.inject_hyperparams(adamp_jax.adamp)(learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\), got 1.0"):
        tx.init(params)
    tx = optax.inject_hyperparams(adamp_jax.adamp, hyperparam_dtype=jnp.float32)(0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert new["w"].dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(new["w"])))
    assert float(new["w"][0, 0]) < 1.0


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_non_finite_gradients_propagate_like_the_reference(optimizer: str) -> None:
    """NaN/inf reach the weights where the gradient has them (nothing is projected on
    that leaf); the other leaves are untouched by them."""
    start = initial_tree(np.float64, LEAVES)
    ref = Reference(optimizer, start, HPARAMS[optimizer])
    grads = gradient_tree(ref.params, 0)
    grads["conv_channel"][0, 0, 0, 0] = np.nan
    grads["dense_layer"][1, 2] = np.inf
    with np.errstate(invalid="ignore"):  # the reference's NaN cosines, as expected
        ref.step(grads)
    tx = make(optimizer)
    params, _ = jax.jit(stepper(tx))(as_jax(start), tx.init(as_jax(start)), grads)
    assert ref.branches == {"conv_channel": "none", "dense_layer": "none", "bias": "none"}
    for k in LEAVES:
        got, want = np.asarray(params[k]), ref.params[k]
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = np.isfinite(want)
        assert np.max(np.abs(got[finite] - want[finite]), initial=0.0) <= TOL64
    assert not np.all(np.isfinite(np.asarray(params["conv_channel"])))
    assert np.all(np.isfinite(np.asarray(params["bias"])))


def _parabola_targets() -> dict[str, jax.Array]:
    return {
        "matrix": jnp.array([[3.0, -2.0], [1.0, 4.0]]),
        "vector": jnp.array([1.0, -1.0, 2.0]),
    }


@pytest.mark.parametrize(
    "tx",
    [
        adamp_jax.adamp(0.05, weight_decay=1e-4),
        adamp_jax.sgdp(0.01, momentum=0.9, nesterov=True),
    ],
    ids=["adamp", "sgdp"],
)
def test_converges_on_a_mixed_parabola(tx: optax.GradientTransformation) -> None:
    """optax contrib's "mixed tensor target": a 2x2 matrix and a vector from zeros."""
    targets = _parabola_targets()

    def loss(params: Any) -> jax.Array:
        return sum(jnp.sum((params[k] - targets[k]) ** 2) for k in targets)

    step = stepper(tx)

    @jax.jit
    def train(params: Any) -> Any:
        def body(carry: Any, _: Any) -> Any:
            params, state = carry
            return step(params, state, jax.grad(loss)(params)), None

        return jax.lax.scan(body, (params, tx.init(params)), length=3000)[0][0]

    final = train({k: jnp.zeros_like(v) for k, v in targets.items()})
    for k in targets:
        np.testing.assert_allclose(final[k], targets[k], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_state_is_stable_and_update_needs_params(optimizer: str) -> None:
    """The state after a step has the init state's structure, shapes and dtypes (what
    ``lax.cond`` and checkpoints need); ``tree.map_params`` works; no params: an error."""
    tx = make(optimizer)
    params = as_jax(initial_tree(np.float32, LEAVES))
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, new_state = jax.eval_shape(tx.update, grads, state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    optax.tree.map_params(tx, lambda v: v, state)
    with pytest.raises(ValueError, match="need the current parameters"):
        tx.update(grads, state)


_CORE_ADAMP = {"lr": 1e-3, **core_defaults("AdamP")}
_CORE_SGDP = {"lr": 0.1, **core_defaults("SGDP")}


def _core_message(optimizer: str, **changes: Any) -> str:
    fn = validate_adamp_hparams if optimizer == "AdamP" else validate_sgdp_hparams
    base = dict(_CORE_ADAMP if optimizer == "AdamP" else _CORE_SGDP)
    with pytest.raises(ValueError) as info:
        fn(**{**base, **changes})
    return str(info.value)


@pytest.mark.parametrize(
    "optimizer, ours, core",
    [
        ("AdamP", dict(learning_rate=-1.0), dict(lr=-1.0)),
        ("AdamP", dict(b1=1.0), dict(betas=(1.0, 0.999))),
        ("AdamP", dict(b2=-0.1), dict(betas=(0.9, -0.1))),
        ("AdamP", dict(eps=-1.0), dict(eps=-1.0)),
        ("AdamP", dict(wd_ratio=2.0), dict(wd_ratio=2.0)),
        ("AdamP", dict(weight_decay=float("nan")), dict(weight_decay=float("nan"))),
        ("AdamP", dict(nesterov=1), dict(nesterov=1)),
        ("AdamP", dict(delta=np.asarray(-0.5)), dict(delta=-0.5)),
        ("SGDP", dict(momentum=1.0), dict(momentum=1.0)),
        ("SGDP", dict(nesterov=True), dict(nesterov=True)),
        (
            "SGDP",
            dict(momentum=0.9, dampening=0.1, nesterov=True),
            dict(momentum=0.9, dampening=0.1, nesterov=True),
        ),
        ("SGDP", dict(variant="timm"), dict(variant="timm")),
        ("SGDP", dict(dampening=jnp.asarray(1.5)), dict(dampening=1.5)),
    ],
)
def test_invalid_hyperparameters_raise_the_core_errors(
    optimizer: str, ours: dict[str, Any], core: dict[str, Any]
) -> None:
    """The same ValueError as every adapter, from ``adamp`` / ``sgdp`` and from the
    ``scale_by_*`` pieces; concrete JAX/NumPy scalars are checked like numbers."""
    lr = 1e-3 if optimizer == "AdamP" else 0.1
    kwargs = {"learning_rate": lr, **ours}
    with pytest.raises(ValueError) as info:
        FACTORIES[optimizer](**kwargs)
    assert str(info.value) == _core_message(optimizer, **core)
    if "learning_rate" not in ours:
        piece = adamp_jax.scale_by_adamp if optimizer == "AdamP" else adamp_jax.scale_by_sgdp
        with pytest.raises(ValueError) as info:
            piece(**ours)
        assert str(info.value) == _core_message(optimizer, **core)


def test_a_schedule_learning_rate_is_not_validated_as_a_number() -> None:
    adamp_jax.adamp(optax.constant_schedule(1e-3))
    adamp_jax.sgdp(lambda count: 0.1 * 0.5**count, momentum=0.9)
