"""Channel axes: the four forms of ``channel_axes`` (None, tree, prefix, callable), their
errors, and the Flax (Linen, NNX) and Equinox helpers, checked numerically against the
NumPy reference with the channel axes moved to the front."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_reference import Reference, forced_gradient

import adamp_jax
from adamp_jax.axes import leaf_channel_axes, normalize_axes

TOL64 = 1e-12
HPARAMS = dict(lr=0.02, weight_decay=0.5, wd_ratio=0.3)


def one_step(tx: optax.GradientTransformation, params: Any, grads: Any) -> Any:
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


def nested_params() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "encoder": {
            "conv": rng.standard_normal((3, 3, 2, 4)),
            "dense": rng.standard_normal((6, 5)),
        },
        "embed": {"table": rng.standard_normal((7, 3))},
        "bias": rng.standard_normal((5,)),
    }


def test_the_four_forms_resolve_to_the_same_axes() -> None:
    params = nested_params()
    want = [(), (0,), (3,), (1,)]  # leaves: bias, embed.table, encoder.conv, encoder.dense
    full = {"encoder": {"conv": (-1,), "dense": 1}, "embed": {"table": (0,)}, "bias": None}
    prefix = {"encoder": -1, "embed": 0, "bias": None}
    assert leaf_channel_axes(full, params) == want
    assert leaf_channel_axes(prefix, params) == want
    assert leaf_channel_axes(lambda p: prefix, params) == want
    # None: the default rule, last axis everywhere (the table gets (1,), not (0,))
    assert leaf_channel_axes(None, params) == [(), (1,), (3,), (1,)]
    assert leaf_channel_axes(adamp_jax.default_channel_axes, params) == [(), (1,), (3,), (1,)]


@pytest.mark.usefixtures("x64")
def test_forms_give_the_reference_numbers() -> None:
    """A prefix tree and a callable give the reference's numbers on each leaf with its
    channel axes in front; the default puts the table's rows on its last axis."""
    params = nested_params()
    axes = {"encoder/conv": (3,), "encoder/dense": (1,), "embed/table": (0,), "bias": None}
    flat = {
        "encoder/conv": params["encoder"]["conv"],
        "encoder/dense": params["encoder"]["dense"],
        "embed/table": params["embed"]["table"],
        "bias": params["bias"],
    }
    kinds = {
        "encoder/conv": "orthogonal",
        "encoder/dense": "layer",
        "embed/table": "orthogonal",
        "bias": "aligned",
    }
    grads_flat = {k: forced_gradient(v, axes[k], kinds[k]) for k, v in flat.items()}
    ref = Reference("AdamP", flat, HPARAMS, axes=axes)
    ref.step(grads_flat)
    assert ref.branches == {
        "encoder/conv": "channel",
        "encoder/dense": "layer",
        "embed/table": "channel",
        "bias": "none",
    }
    grads = {
        "encoder": {"conv": grads_flat["encoder/conv"], "dense": grads_flat["encoder/dense"]},
        "embed": {"table": grads_flat["embed/table"]},
        "bias": grads_flat["bias"],
    }
    prefix = {"encoder": -1, "embed": 0, "bias": None}
    for channel_axes in (prefix, lambda p: prefix):
        tx = adamp_jax.adamp(0.02, weight_decay=0.5, wd_ratio=0.3, channel_axes=channel_axes)
        got = one_step(tx, jax.tree.map(jnp.asarray, params), grads)
        got_flat = {
            "encoder/conv": got["encoder"]["conv"],
            "encoder/dense": got["encoder"]["dense"],
            "embed/table": got["embed"]["table"],
            "bias": got["bias"],
        }
        for k in flat:
            assert np.max(np.abs(np.asarray(got_flat[k]) - ref.params[k])) <= TOL64, k
    # by default the table's rows are its last axis: its (first-axis) rows are not tested
    tx = adamp_jax.adamp(0.02, weight_decay=0.5, wd_ratio=0.3)
    got = one_step(tx, jax.tree.map(jnp.asarray, params), grads)
    ref_default = Reference("AdamP", {"t": flat["embed/table"]}, HPARAMS, axes={"t": (1,)})
    ref_default.step({"t": grads_flat["embed/table"]})
    assert np.max(np.abs(np.asarray(got["embed"]["table"]) - ref_default.params["t"])) <= TOL64


def test_never_project_leaves_and_low_rank_leaves() -> None:
    params = {"w": np.ones((4, 3)), "v": np.ones(3), "s": np.float64(1.0)}
    assert leaf_channel_axes({"w": None, "v": 0, "s": (0,)}, params) == [(), (), ()]
    assert leaf_channel_axes({"w": (), "v": None, "s": None}, params) == [(), (), ()]
    assert normalize_axes((-1, 0), 3) == (0, 2)


@pytest.mark.parametrize(
    "channel_axes, match",
    [
        ({"a": 0}, "structure of the parameters"),
        ({"w": 2, "b": None}, r"channel axis 2 \(leaf \['w'\]\) is invalid for a leaf of rank 2"),
        ({"w": (0, 1), "b": None}, "leave no axis for the rows"),
        ({"w": (1, -1), "b": None}, "repeat an axis"),
        ({"w": "last", "b": None}, "expected an int, a tuple of ints or None"),
    ],
)
def test_invalid_channel_axes_raise(channel_axes: Any, match: str) -> None:
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    tx = adamp_jax.adamp(1e-3, channel_axes=channel_axes)
    with pytest.raises(ValueError, match=match):
        tx.update(params, tx.init(params), params)


# -- Flax ---------------------------------------------------------------------------------

flax = pytest.importorskip("flax")
from flax import linen, nnx  # noqa: E402


class _Linen(linen.Module):
    @linen.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = linen.Embed(11, 8)(tokens)
        x = linen.MultiHeadDotProductAttention(num_heads=2)(x)
        x = linen.Conv(6, (3,))(x)
        return linen.Dense(3)(x)


#: Flax paths -> the channel axes the helper must give (normalised).
LINEN_AXES = {
    "Embed_0/embedding": (0,),
    "MultiHeadDotProductAttention_0/query/kernel": (1, 2),
    "MultiHeadDotProductAttention_0/key/kernel": (1, 2),
    "MultiHeadDotProductAttention_0/value/kernel": (1, 2),
    "MultiHeadDotProductAttention_0/query/bias": (),
    "MultiHeadDotProductAttention_0/out/kernel": (2,),
    "MultiHeadDotProductAttention_0/out/bias": (),
    "Conv_0/kernel": (2,),
    "Conv_0/bias": (),
    "Dense_0/kernel": (1,),
    "Dense_0/bias": (),
}


def _paths(tree: Any) -> list[str]:
    return [
        "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


@functools.cache
def _linen_params() -> Any:
    # jitted: one compilation instead of one per primitive of an eager init
    key = jax.random.key(0, impl="rbg")  # compiles faster than the default generator
    return jax.jit(_Linen().init)(key, jnp.zeros((1, 5), jnp.int32))["params"]


def test_flax_linen_paths_decide_the_axes() -> None:
    params = _linen_params()
    got = dict(zip(_paths(params), leaf_channel_axes(adamp_jax.flax_channel_axes, params)))
    for path, axes in LINEN_AXES.items():
        assert got[path] == axes, path
    assert all(
        v == (len(leaf.shape) - 1,) or v in LINEN_AXES.values()
        for v, leaf in zip(got.values(), jax.tree.leaves(params))
    )


@pytest.mark.usefixtures("x64")
def test_flax_helper_numbers_on_embed_and_attention_kernels() -> None:
    """Embed tables project per vocabulary row, q/k/v kernels per (head, head_dim):
    the reference's numbers on those tensors with those axes in front."""
    full = jax.tree.map(lambda x: np.asarray(x, np.float64), _linen_params())
    # the helper reads paths: a sub-tree with Flax's names is enough (and compiles faster)
    params = {
        "Embed_0": full["Embed_0"],
        "MultiHeadDotProductAttention_0": {
            "query": full["MultiHeadDotProductAttention_0"]["query"]
        },
    }
    embed = params["Embed_0"]["embedding"]
    query = params["MultiHeadDotProductAttention_0"]["query"]["kernel"]
    flat = {"embed": embed, "query": query}
    axes = {"embed": (0,), "query": (1, 2)}
    grads_flat = {k: forced_gradient(v, axes[k], "orthogonal") for k, v in flat.items()}
    ref = Reference("AdamP", flat, HPARAMS, axes=axes)
    ref.step(grads_flat)
    assert ref.branches == {"embed": "channel", "query": "channel"}
    grads = jax.tree.map(np.zeros_like, params)
    grads["Embed_0"]["embedding"] = grads_flat["embed"]
    grads["MultiHeadDotProductAttention_0"]["query"]["kernel"] = grads_flat["query"]
    tx = adamp_jax.adamp(
        0.02, weight_decay=0.5, wd_ratio=0.3, channel_axes=adamp_jax.flax_channel_axes
    )
    got = one_step(tx, jax.tree.map(jnp.asarray, params), grads)
    assert np.max(np.abs(np.asarray(got["Embed_0"]["embedding"]) - ref.params["embed"])) <= TOL64
    got_q = np.asarray(got["MultiHeadDotProductAttention_0"]["query"]["kernel"])
    assert np.max(np.abs(got_q - ref.params["query"])) <= TOL64


class _NNX(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(11, 8, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs
        )
        self.dense = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        return self.dense(self.attention(x))


def test_flax_nnx_state_and_optimizer() -> None:
    """NNX: the same axes from ``nnx.state`` (Variables) and from its pure arrays, and an
    ``nnx.Optimizer`` step equals the reference on the embedding table."""
    model = nnx.jit(lambda: _NNX(nnx.Rngs(jax.random.key(0, impl="rbg"))))()
    state = nnx.state(model, nnx.Param)
    with_variables = dict(
        zip(_paths(nnx.as_pure(state)), leaf_channel_axes(adamp_jax.flax_channel_axes, state))
    )
    pure = dict(
        zip(
            _paths(nnx.as_pure(state)),
            leaf_channel_axes(adamp_jax.flax_channel_axes, nnx.as_pure(state)),
        )
    )
    assert with_variables == pure
    assert pure["embed/embedding"] == (0,)
    assert pure["attention/query/kernel"] == pure["attention/value/kernel"] == (1, 2)
    assert pure["attention/out/kernel"] == (2,)
    assert pure["dense/kernel"] == (1,) and pure["dense/bias"] == ()

    table = np.asarray(model.embed.embedding[...])
    grad_table = forced_gradient(table, (0,), "orthogonal").astype(np.float32)
    ref = Reference("AdamP", {"t": table}, HPARAMS, axes={"t": (0,)})
    ref.step({"t": grad_table})
    tx = adamp_jax.adamp(
        0.02, weight_decay=0.5, wd_ratio=0.3, channel_axes=adamp_jax.flax_channel_axes
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model: _NNX, optimizer: nnx.Optimizer, g: jax.Array) -> None:
        grads = nnx.grad(lambda m: jnp.sum(m.embed.embedding[...] * g))(model)
        optimizer.update(model, grads)

    train_step(model, optimizer, jnp.asarray(grad_table))
    got = np.asarray(model.embed.embedding[...])
    assert np.max(np.abs(got - ref.params["t"])) <= 1e-4 * np.max(np.abs(ref.params["t"]))


# -- Equinox ------------------------------------------------------------------------------


@pytest.mark.usefixtures("x64")
def test_equinox_helper_uses_the_first_axis() -> None:
    eqx = pytest.importorskip("equinox")
    keys = jax.random.split(jax.random.key(0, impl="rbg"), 3)

    @eqx.filter_jit
    def build(keys: jax.Array) -> list[Any]:
        model = [
            eqx.nn.Conv2d(2, 4, 3, key=keys[0]),
            eqx.nn.Linear(6, 5, key=keys[1]),
            eqx.nn.Embedding(7, 3, key=keys[2]),
        ]
        return jax.tree.map(
            lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, model
        )

    model = build(keys)
    params = eqx.filter(model, eqx.is_inexact_array)
    axes = leaf_channel_axes(adamp_jax.equinox_channel_axes, params)
    shapes = [leaf.shape for leaf in jax.tree.leaves(params)]
    assert [(s, a) for s, a in zip(shapes, axes)] == [
        ((4, 2, 3, 3), (0,)),
        ((4, 1, 1), (0,)),
        ((5, 6), (0,)),
        ((5,), ()),
        ((7, 3), (0,)),
    ]
    # PyTorch layout: the reference's own layout, no axis moved
    weight = np.asarray(model[1].weight)
    grad_w = forced_gradient(weight, (0,), "orthogonal")
    ref = Reference(
        "SGDP", {"w": weight}, dict(lr=0.1, momentum=0.9, weight_decay=0.01), axes={"w": (0,)}
    )
    ref.step({"w": grad_w})
    assert ref.branches == {"w": "channel"}
    linear = params[1]
    grads = eqx.tree_at(lambda m: m.weight, jax.tree.map(jnp.zeros_like, linear), grad_w)
    tx = adamp_jax.sgdp(
        0.1, momentum=0.9, weight_decay=0.01, channel_axes=adamp_jax.equinox_channel_axes
    )
    got = one_step(tx, linear, grads)
    assert np.max(np.abs(np.asarray(got.weight) - ref.params["w"])) <= TOL64
