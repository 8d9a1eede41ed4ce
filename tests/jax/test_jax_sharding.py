"""Parameters sharded with ``NamedSharding`` over 4 virtual CPU devices: the jitted update
equals the unsharded one, keeps every leaf's sharding, and gathers no leaf (the row sums
are reduced where they are: no reshape that would force a reshard)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jax_reference import Reference, forced_gradient

import adamp_jax

pytestmark = pytest.mark.skipif(
    len(jax.devices()) < 4, reason="needs 4 CPU devices (jax_num_cpu_devices, set in conftest)"
)

#: name -> (shape, channel axes, gradient kind, partition over mesh axis "x").
LEAVES: dict[str, tuple[tuple[int, ...], tuple[int, ...] | None, str, P]] = {
    "conv_out": ((3, 3, 4, 8), (3,), "orthogonal", P(None, None, None, "x")),
    "dense_out": ((12, 8), (1,), "layer", P(None, "x")),
    "dense_in": ((12, 8), (1,), "orthogonal", P("x", None)),  # rows split across devices
    "embed_rows": ((8, 6), (0,), "orthogonal", P("x", None)),
    "bias": ((8,), None, "aligned", P()),
}
AXES = {k: v[1] for k, v in LEAVES.items()}
OPTIMIZERS = {
    "AdamP": (adamp_jax.adamp, dict(lr=0.02, weight_decay=0.5, wd_ratio=0.3)),
    "SGDP": (adamp_jax.sgdp, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
}


def _problem() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    params = {k: rng.standard_normal(shape) for k, (shape, *_) in LEAVES.items()}
    grads = {k: forced_gradient(params[k], axes, kind) for k, (_, axes, kind, _) in LEAVES.items()}
    return params, grads


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(
    "optimizer, axis_type",
    [("AdamP", AxisType.Explicit), ("AdamP", AxisType.Auto), ("SGDP", AxisType.Explicit)],
    ids=["AdamP-explicit", "AdamP-auto", "SGDP-explicit"],
)
def test_sharded_update_equals_unsharded_and_keeps_the_sharding(
    optimizer: str, axis_type: AxisType
) -> None:
    """Both kinds of mesh axes: explicit (JAX's default, sharding in types) and auto."""
    factory, hparams = OPTIMIZERS[optimizer]
    params_np, grads_np = _problem()
    ref = Reference(optimizer, params_np, hparams, axes=AXES)
    kwargs = {k: v for k, v in hparams.items() if k != "lr"}
    tx = factory(hparams["lr"], channel_axes=AXES, **kwargs)

    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    mesh = jax.make_mesh((4,), ("x",), axis_types=(axis_type,))
    shardings = {k: NamedSharding(mesh, spec) for k, (*_, spec) in LEAVES.items()}
    sharded = {k: jax.device_put(v, shardings[k]) for k, v in params_np.items()}
    sharded_grads = {k: jax.device_put(v, shardings[k]) for k, v in grads_np.items()}
    plain = {k: jnp.asarray(v) for k, v in params_np.items()}
    sharded_state = tx.init(sharded)
    statistics = [tree for tree in sharded_state[0] if isinstance(tree, dict)]  # mu, nu / buffer
    assert statistics
    for tree in statistics:  # zeros_like: the state is sharded like the parameters
        assert all(tree[k].sharding.is_equivalent_to(shardings[k], tree[k].ndim) for k in LEAVES)
    executable = jax.jit(step).lower(sharded, sharded_state, sharded_grads).compile()
    hlo = executable.as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo
    assert "all-reduce" in hlo  # the row sums of the split rows, and the max over rows

    plain_state = tx.init(plain)
    for t in range(3):
        grads = (
            grads_np
            if t == 0
            else {k: forced_gradient(ref.params[k], AXES[k], LEAVES[k][2], t) for k in LEAVES}
        )
        ref.step(grads)
        sharded_grads = {k: jax.device_put(v, shardings[k]) for k, v in grads.items()}
        sharded, sharded_state = executable(sharded, sharded_state, sharded_grads)
        plain, plain_state = jax.jit(step)(plain, plain_state, grads)
    assert ref.branches == {
        "conv_out": "channel",
        "dense_out": "layer",
        "dense_in": "channel",
        "embed_rows": "channel",
        "bias": "none",
    }
    for k in LEAVES:
        assert sharded[k].sharding.is_equivalent_to(shardings[k], sharded[k].ndim), k
        np.testing.assert_allclose(np.asarray(sharded[k]), np.asarray(plain[k]), rtol=0, atol=1e-13)
        np.testing.assert_allclose(np.asarray(sharded[k]), ref.params[k], rtol=0, atol=1e-12)
