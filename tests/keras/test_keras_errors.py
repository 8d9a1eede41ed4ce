"""The Keras adapter's error-input table and zero-size policy (run once per KERAS_BACKEND).

Every row is refused with its exception and message, and leaves its target bit-identical:
the model variables, the optimizer's variables (iterations, learning rate, moments), its
hyperparameters, whether it is built and its per-variable decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest

import adamp_tf
from adamp_tf.conformance import KerasUnderTest
from helpers.error_inputs import ErrorInput, as_params, assert_bit_identical, expect_refused
from helpers.keras_utils import DTYPES, compiled_apply, to_numpy

CLASSES = {"AdamP": adamp_tf.AdamP, "SGDP": adamp_tf.SGDP}
HPARAMS = (
    "beta_1", "beta_2", "epsilon", "delta", "wd_ratio", "nesterov", "momentum", "dampening",
    "variant", "weight_decay", "channel_axes", "_excluded_names",
)  # fmt: skip


@dataclass
class Target:
    """What a row acts on: model variables and (for build and step rows) an optimizer."""

    variables: list[Any]
    optimizer: Any = None


def snapshot(target: Target) -> Any:
    opt = target.optimizer
    data: dict[str, Any] = {"variables": [to_numpy(v) for v in target.variables]}
    if opt is not None:
        data["optimizer"] = {
            "built": bool(opt.built),
            "variables": [(str(v.path), to_numpy(v)) for v in opt.variables],
            "hparams": {k: repr(getattr(opt, k, None)) for k in HPARAMS},
            "axes_of": list(opt._axes_of),
            "decay_of": list(opt._decay_of),
        }
    return data


def _variables(*shapes: tuple[int, ...], dtype: str = "float32") -> list[Any]:
    rng = np.random.default_rng(0)
    return [
        keras.Variable(rng.standard_normal(s).astype(dtype), name=f"kernel{i}")
        for i, s in enumerate(shapes)
    ]


def _fresh() -> Target:
    return Target(_variables((3, 4), (5,)))


def _unbuilt(name: str, **kw: Any) -> Any:
    """An optimizer not yet built, over a (3, 4) kernel and a (5,) vector."""
    return lambda: Target(_variables((3, 4), (5,)), CLASSES[name](**_defaults(name, kw)))


def _stepped(name: str, **kw: Any) -> Any:
    """An optimizer built over a (3, 4) kernel and a (5,) vector that took one step."""

    def make() -> Target:
        variables = _variables((3, 4), (5,))
        opt = CLASSES[name](**_defaults(name, kw))
        grads = [np.full(v.shape, 0.1, "float32") for v in variables]
        opt.apply_gradients(zip(grads, variables))
        return Target(variables, opt)

    return make


def _defaults(name: str, kw: dict[str, Any]) -> dict[str, Any]:
    base = {"weight_decay": 0.1} if name == "AdamP" else {"momentum": 0.9, "weight_decay": 0.1}
    return {**base, **kw}


def _apply(*shapes: tuple[int, ...] | None) -> Any:
    """Apply gradients of ``shapes`` (``None``: the variable's own shape)."""

    def call(t: Target) -> None:
        grads = [
            np.full(v.shape if s is None else s, 0.1, "float32")
            for v, s in zip(t.variables, shapes)
        ]
        t.optimizer.apply_gradients(zip(grads, t.variables))

    return call


def _construct(name: str, **kw: Any) -> Any:
    return lambda t: CLASSES[name](**kw)


AXES_TYPE = r"axes must be None, an int or a list/tuple of ints"
NOT_OVERRIDE = r"channel_axes must be None, a mapping \{regex: axes\} or a callable"
FLOAT_ONLY = r"updates floating-point variables only .*variable '\w+' has dtype "


def _rows(name: str) -> list[ErrorInput[Target]]:
    c = _construct
    at_build = r"for variable 'kernel0' of shape \(3, 4\): "
    rows: list[ErrorInput[Target]] = [
        # -- channel_axes: refused in the constructor ---------------------------------------
        ErrorInput("channel-axes-str", "a string", c(name, channel_axes="kernel"), ValueError,
                   NOT_OVERRIDE + ", got 'kernel'", make=_fresh),
        ErrorInput("channel-axes-float", "a float", c(name, channel_axes=1.5), ValueError,
                   NOT_OVERRIDE + ", got 1.5", make=_fresh),
        ErrorInput("channel-axes-numpy-int", "a NumPy integer", c(name, channel_axes=np.int64(0)),
                   ValueError, NOT_OVERRIDE, make=_fresh),
        ErrorInput("channel-axes-list", "a list of axes (for which variable?)",
                   c(name, channel_axes=[0]), ValueError, NOT_OVERRIDE, make=_fresh),
        ErrorInput("channel-axes-tuple", "a tuple of axes", c(name, channel_axes=(0,)),
                   ValueError, NOT_OVERRIDE, make=_fresh),
        ErrorInput("channel-axes-value-str", "a mapping value '0' (a string, not an axis)",
                   c(name, channel_axes={"kernel": "0"}), ValueError,
                   r"channel_axes\['kernel'\]: " + AXES_TYPE + r", got str '0'", make=_fresh),
        ErrorInput("channel-axes-value-float", "a mapping value 1.0",
                   c(name, channel_axes={"kernel": 1.0}), ValueError,
                   r"channel_axes\['kernel'\]: " + AXES_TYPE + r", got float 1.0", make=_fresh),
        ErrorInput("channel-axes-value-numpy-float", "a mapping value np.float64(1)",
                   c(name, channel_axes={"kernel": np.float64(1)}), ValueError,
                   r"channel_axes\['kernel'\]: " + AXES_TYPE, make=_fresh),
        ErrorInput("channel-axes-value-bool", "a mapping value True",
                   c(name, channel_axes={"kernel": True}), ValueError,
                   r"channel_axes\['kernel'\]: " + AXES_TYPE + r", got bool True", make=_fresh),
        ErrorInput("channel-axes-value-list-str", "a list holding a string",
                   c(name, channel_axes={"kernel": [0, "a"]}), ValueError,
                   r"channel_axes\['kernel'\]: axes must be integers, got 'a' in \[0, 'a'\]",
                   make=_fresh),
        ErrorInput("channel-axes-value-list-float", "a list holding a float",
                   c(name, channel_axes={"kernel": [1.0]}), ValueError,
                   r"channel_axes\['kernel'\]: axes must be integers, got 1.0", make=_fresh),
        ErrorInput("channel-axes-value-set", "a set (unordered)",
                   c(name, channel_axes={"kernel": {0}}), ValueError,
                   r"channel_axes\['kernel'\]: " + AXES_TYPE + r", got set", make=_fresh),
        ErrorInput("channel-axes-value-dict", "a dict",
                   c(name, channel_axes={"kernel": {"a": 1}}), ValueError,
                   r"channel_axes\['kernel'\]: " + AXES_TYPE + r", got dict", make=_fresh),
        ErrorInput("channel-axes-key-int", "an int key (not a regex)",
                   c(name, channel_axes={1: 0}), ValueError,
                   r"channel_axes keys must be regular expressions \(str\), got 1", make=_fresh),
        ErrorInput("channel-axes-key-bad-regex", "a key that is no regex",
                   c(name, channel_axes={"conv[": 0}), ValueError,
                   r"channel_axes key 'conv\[' is not a valid regular expression", make=_fresh),
        # -- channel_axes: refused in build(), naming the variable ---------------------------
        ErrorInput("channel-axes-out-of-range", "axis 5 of a rank-2 variable",
                   _apply(None, None), ValueError,
                   r"channel_axes\['kernel0'\] gave 5 " + at_build + "channel axis 5 is invalid",
                   make=_unbuilt(name, channel_axes={"kernel0": 5})),
        ErrorInput("channel-axes-negative-out-of-range", "axis -3 of a rank-2 variable",
                   _apply(None, None), ValueError,
                   r"channel_axes\['kernel0'\] gave -3 " + at_build + "channel axis -3",
                   make=_unbuilt(name, channel_axes={"kernel0": -3})),
        ErrorInput("channel-axes-duplicate", "axes 1 and -1 (the same axis)", _apply(None, None),
                   ValueError, r"gave \[1, -1\] " + at_build + r"channel axes \[1, -1\] repeat",
                   make=_unbuilt(name, channel_axes={"kernel0": [1, -1]})),
        ErrorInput("channel-axes-every-axis", "every axis (no row left)", _apply(None, None),
                   ValueError, at_build + r"channel axes \[0, 1\] leave no axis for the rows",
                   make=_unbuilt(name, channel_axes={"kernel0": [0, 1]})),
        ErrorInput("channel-axes-callable-str", "a callable returning a string",
                   _apply(None, None), ValueError,
                   r"channel_axes callable \S+ gave 'last' " + at_build + AXES_TYPE,
                   make=_unbuilt(name, channel_axes=lambda v: "last")),
        ErrorInput("channel-axes-callable-float", "a callable returning a float",
                   _apply(None, None), ValueError,
                   r"channel_axes callable \S+ gave 1.0 " + at_build + AXES_TYPE,
                   make=_unbuilt(name, channel_axes=lambda v: 1.0)),
        ErrorInput("channel-axes-callable-set", "a callable returning a set", _apply(None, None),
                   ValueError, r"channel_axes callable \S+ gave \{1\} " + at_build + AXES_TYPE,
                   make=_unbuilt(name, channel_axes=lambda v: {1})),
        ErrorInput("channel-axes-callable-out-of-range", "a callable returning axis 7",
                   _apply(None, None), ValueError, at_build + "channel axis 7 is invalid",
                   make=_unbuilt(name, channel_axes=lambda v: 7)),
        ErrorInput("channel-axes-callable-vector", "a callable returning a string for a "
                   "vector (types are checked whatever the rank)", _apply(None, None),
                   ValueError, r"for variable 'kernel1' of shape \(5,\): " + AXES_TYPE,
                   make=_unbuilt(name, channel_axes=lambda v: None if len(v.shape) > 1 else "x")),
        # -- variables and gradients --------------------------------------------------------
        ErrorInput("int32-variable", "an integer variable (updates would be truncated)",
                   lambda t: t.optimizer.apply_gradients(
                       [(np.ones((3, 4), "int32"), t.variables[0])]),
                   ValueError, FLOAT_ONLY + "int32", make=lambda: _int_target(name, "int32")),
        ErrorInput("int64-variable", "an int64 variable (int32 on JAX without x64)",
                   lambda t: t.optimizer.build(t.variables), ValueError, FLOAT_ONLY + "int",
                   make=lambda: _int_target(name, "int64")),
        ErrorInput("bool-variable", "a boolean variable",
                   lambda t: t.optimizer.build(t.variables), ValueError, FLOAT_ONLY + "bool",
                   make=lambda: _int_target(name, "bool")),
        ErrorInput("grad-transposed", "a transposed gradient", _apply((4, 3), None), ValueError,
                   r"the gradient of variable 'kernel0' has shape \(4, 3\), the variable \(3, 4\)",
                   make=_stepped(name)),
        ErrorInput("grad-broadcastable", "a (1, 4) gradient for a (3, 4) variable (would "
                   "broadcast silently)", _apply((1, 4), None), ValueError,
                   r"the gradient of variable 'kernel0' has shape \(1, 4\)", make=_stepped(name)),
        ErrorInput("grad-scalar", "a scalar gradient", _apply(None, ()), ValueError,
                   r"the gradient of variable 'kernel1' has shape \(\), the variable \(5,\)",
                   make=_stepped(name)),
        ErrorInput("grad-first-build", "a wrong shape on the very first step (not built yet)",
                   _apply(None, (6,)), ValueError,
                   r"the gradient of variable 'kernel1' has shape \(6,\)", make=_unbuilt(name)),
        ErrorInput("grad-count", "one gradient for two variables",
                   lambda t: t.optimizer.apply([np.ones((3, 4), "float32")], t.variables),
                   ValueError, r"got 1 gradients for 2 variables", make=_stepped(name)),
        ErrorInput("grad-count-built", "one gradient for a built optimizer of two",
                   lambda t: t.optimizer.apply([np.ones((3, 4), "float32")]), ValueError,
                   r"got 1 gradients for 2 variables", make=_stepped(name)),
        # -- hyperparameters and flags (the core's shared validation) -----------------------
        ErrorInput("nesterov-str", "nesterov='no'", c(name, nesterov="no"), ValueError,
                   r"^nesterov must be a bool, got 'no'", make=_fresh),
        ErrorInput("nesterov-none", "nesterov=None", c(name, nesterov=None), ValueError,
                   r"^nesterov must be a bool, got None", make=_fresh),
        ErrorInput("learning-rate-negative", "learning_rate < 0", c(name, learning_rate=-0.1),
                   ValueError, r"^lr must be in", make=_fresh),
        ErrorInput("learning-rate-str", "learning_rate '0.1'", c(name, learning_rate="0.1"),
                   ValueError, r"^lr must be a real number, got '0.1'", make=_fresh),
        ErrorInput("learning-rate-bool", "learning_rate True", c(name, learning_rate=True),
                   ValueError, r"^lr must be a real number, got True", make=_fresh),
        ErrorInput("learning-rate-nan", "learning_rate NaN", c(name, learning_rate=float("nan")),
                   ValueError, r"^lr must not be NaN", make=_fresh),
        ErrorInput("epsilon-negative", "epsilon < 0", c(name, epsilon=-1.0), ValueError,
                   r"^eps must be in", make=_fresh),
        ErrorInput("weight-decay-negative", "weight_decay < 0", c(name, weight_decay=-1.0),
                   ValueError, r"^weight_decay must be in", make=_fresh),
        ErrorInput("delta-nan", "delta NaN", c(name, delta=float("nan")), ValueError,
                   r"^delta must not be NaN", make=_fresh),
        ErrorInput("wd-ratio-above-one", "wd_ratio 2", c(name, wd_ratio=2.0), ValueError,
                   r"^wd_ratio must be in \[0, 1\]", make=_fresh),
        ErrorInput("exclude-str", "exclude_from_weight_decay='bias' (each letter a pattern)",
                   c(name, exclude_from_weight_decay="bias"), ValueError,
                   r"exclude_from_weight_decay must be a list of variable-name patterns",
                   make=_fresh),
        ErrorInput("exclude-int", "exclude_from_weight_decay=5",
                   c(name, exclude_from_weight_decay=5), ValueError,
                   r"exclude_from_weight_decay must be a list .*got 5", make=_fresh),
        ErrorInput("exclude-non-str", "a pattern that is not a string",
                   c(name, exclude_from_weight_decay=["bias", 3]), ValueError,
                   r"exclude_from_weight_decay patterns must be str, got 3", make=_fresh),
        ErrorInput("exclude-bad-regex", "a pattern that is no regex",
                   c(name, exclude_from_weight_decay=["(bias"]), ValueError,
                   r"exclude_from_weight_decay pattern '\(bias' is not a valid regular",
                   make=_fresh),
        ErrorInput("unknown-keyword", "an argument neither Keras nor we know",
                   c(name, maximize=True), (TypeError, ValueError), r"maximize", make=_fresh),
    ]  # fmt: skip
    if name == "AdamP":
        rows += [
            ErrorInput("beta-1-one", "beta_1 = 1", c(name, beta_1=1.0), ValueError,
                       r"^betas\[0\] must be in \[0, 1\)", make=_fresh),
            ErrorInput("beta-2-negative", "beta_2 < 0", c(name, beta_2=-0.1), ValueError,
                       r"^betas\[1\] must be in", make=_fresh),
            ErrorInput("beta-1-none", "beta_1 None", c(name, beta_1=None), ValueError,
                       r"^betas\[0\] must be a real number, got None", make=_fresh),
        ]  # fmt: skip
    else:
        rows += [
            ErrorInput("momentum-one", "momentum 1", c(name, momentum=1.0), ValueError,
                       r"^momentum must be in \[0, 1\)", make=_fresh),
            ErrorInput("dampening-above-one", "dampening 2", c(name, dampening=2.0), ValueError,
                       r"^dampening must be in", make=_fresh),
            ErrorInput("nesterov-without-momentum", "Nesterov with momentum 0",
                       c(name, nesterov=True), ValueError, r"^nesterov=True requires momentum > 0",
                       make=_fresh),
            ErrorInput("variant-unknown", "variant 'timm'", c(name, variant="timm"), ValueError,
                       r"^variant must be one of \('authors', 'paper'\), got 'timm'",
                       make=_fresh),
            ErrorInput("variant-int", "variant 1", c(name, variant=1), ValueError,
                       r"^variant must be one of .*got 1", make=_fresh),
            ErrorInput("variant-none", "variant None", c(name, variant=None), ValueError,
                       r"^variant must be one of .*got None", make=_fresh),
        ]  # fmt: skip
    return [
        ErrorInput(f"{name}-{r.id}", r.description, r.call, r.error, r.match, r.make) for r in rows
    ]


def _int_target(name: str, dtype: str) -> Target:
    # not trainable: Keras' torch backend refuses trainable integer variables itself
    v = keras.Variable(np.ones((3, 4), dtype), name="counts", trainable=False)
    return Target([v], CLASSES[name](**_defaults(name, {})))


TABLE = _rows("AdamP") + _rows("SGDP")


@pytest.mark.parametrize("row", as_params(TABLE))
def test_refused_and_nothing_changed(row: ErrorInput[Target]) -> None:
    expect_refused(row, snapshot)


def test_the_table_covers_both_optimizers() -> None:
    assert len(TABLE) >= 100


# -- what stays accepted --------------------------------------------------------------------


def test_integer_like_axes_are_accepted() -> None:
    """NumPy integers are integers (``operator.index``); a single int stays an int in the
    config, a sequence becomes a list of ints."""
    v = _variables((3, 4, 5))[0]
    for spec, axes in ((np.int64(0), (0,)), ([np.int32(-1)], (2,)), (range(2), (0, 1))):
        opt = adamp_tf.AdamP(channel_axes={"kernel": spec})
        opt.build([v])
        assert opt.variable_channel_axes(v) == axes
    config = adamp_tf.AdamP(channel_axes={"a": np.int64(1), "b": (np.int64(2),)}).get_config()
    assert config["channel_axes"] == {"a": 1, "b": [2]}
    assert type(config["channel_axes"]["a"]) is int


def test_a_tuple_of_patterns_is_accepted() -> None:
    opt = adamp_tf.SGDP(exclude_from_weight_decay=("bias", "gamma"))
    assert opt.get_config()["exclude_from_weight_decay"] == ["bias", "gamma"]


# -- zero-size variables: a no-op on every backend, eager and compiled ------------------------

ZERO_SHAPES = [(3, 0), (0, 3), (0,), (2, 0, 3), (0, 0), (3, 3, 0, 8)]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_size_variables_are_a_no_op(name: str, dtype: str, compiled: bool) -> None:
    rng = np.random.default_rng(3)
    kw = _defaults(name, {"nesterov": True} if name == "SGDP" else {})
    empties = [
        keras.Variable(np.zeros(s, dtype), name=f"empty{i}") for i, s in enumerate(ZERO_SHAPES)
    ]
    start = rng.standard_normal((3, 3, 4, 8)).astype(dtype)
    full, alone = keras.Variable(start, name="kernel"), keras.Variable(start, name="kernel")
    opt, ref = CLASSES[name](**kw), CLASSES[name](**kw)
    opt.build([*empties, full])
    ref.build([alone])
    apply = compiled_apply(opt, [*empties, full]) if compiled else None
    apply_ref = compiled_apply(ref, [alone]) if compiled else None
    for _ in range(3):
        g = rng.standard_normal(start.shape).astype(dtype)
        grads = [np.zeros(s, dtype) for s in ZERO_SHAPES]
        if compiled:
            apply([keras.ops.convert_to_tensor(x) for x in [*grads, g]])
            apply_ref([keras.ops.convert_to_tensor(g)])
        else:
            opt.apply_gradients(zip([*grads, g], [*empties, full]))
            ref.apply_gradients([(g, alone)])
    for v, s in zip(empties, ZERO_SHAPES):
        assert tuple(v.shape) == s and to_numpy(v).shape == s
    # the non-empty variable moves exactly as it does without the empty ones
    if compiled:
        np.testing.assert_allclose(to_numpy(full), to_numpy(alone), rtol=1e-6, atol=1e-7)
    else:
        assert_bit_identical(to_numpy(full), to_numpy(alone))
    assert not np.array_equal(to_numpy(full), start)


@pytest.mark.parametrize("name", CLASSES)
def test_zero_size_in_the_conformance_layout(name: str) -> None:
    """Through the conformance wrapper (axis 0 channels, compiled where the backend
    compiles), next to a normal tensor."""
    params = [np.zeros((0, 4), "float32"), np.ones((3, 4), "float32")]
    runner = KerasUnderTest(name, params, {"lr": 0.1})
    runner.step([np.zeros((0, 4), "float32"), np.full((3, 4), 0.5, "float32")])
    got = runner.get_params()
    assert got[0].shape == (0, 4) and np.all(np.isfinite(got[1]))
    assert not np.array_equal(got[1], params[1])
