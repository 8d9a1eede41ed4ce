"""Keras integration: validation, config, base-class arguments, compiled fit, bf16,
mixed precision, sparse gradients. Oracle: adamp_core (tensor by tensor)."""

from __future__ import annotations

import copy

import keras
import ml_dtypes
import numpy as np
import pytest

import adamp_tf
from adamp_core.testing import Case, case_gradient
from adamp_core.validation import validate_adamp_hparams, validate_sgdp_hparams
from helpers.keras_utils import BACKEND, Reference, compiled_apply, core_defaults, to_numpy

ADAMP_DEFAULTS = core_defaults("AdamP")
SGDP_DEFAULTS = {**core_defaults("SGDP"), "lr": 0.01}


def _core_message(fn, defaults, **changes) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as info:
        fn(**{**defaults, **changes})
    return str(info.value)


@pytest.mark.parametrize(
    "cls, kwargs, core",
    [
        (adamp_tf.AdamP, dict(beta_1=1.0), dict(betas=(1.0, 0.999))),
        (adamp_tf.AdamP, dict(learning_rate=-1.0), dict(lr=-1.0)),
        (adamp_tf.AdamP, dict(wd_ratio=2.0), dict(wd_ratio=2.0)),
        (adamp_tf.AdamP, dict(epsilon=-1.0), dict(eps=-1.0)),
        (adamp_tf.AdamP, dict(nesterov=1), dict(nesterov=1)),
        (adamp_tf.SGDP, dict(momentum=1.0), dict(momentum=1.0)),
        (adamp_tf.SGDP, dict(nesterov=True), dict(nesterov=True)),
        (adamp_tf.SGDP, dict(variant="timm"), dict(variant="timm")),
        (adamp_tf.SGDP, dict(delta=float("nan")), dict(delta=float("nan"))),
    ],
)
def test_invalid_hyperparameters_use_core_validation(cls, kwargs, core) -> None:  # type: ignore[no-untyped-def]
    fn, defaults = (
        (validate_adamp_hparams, ADAMP_DEFAULTS)
        if cls is adamp_tf.AdamP
        else (validate_sgdp_hparams, SGDP_DEFAULTS)
    )
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert str(info.value) == _core_message(fn, defaults, **core)


def test_schedule_learning_rate_is_accepted() -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert adamp_tf.SGDP(learning_rate=schedule).get_config()["learning_rate"]["class_name"]


def test_config_round_trip() -> None:
    opt = adamp_tf.AdamP(
        learning_rate=keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5),
        beta_1=0.8,
        epsilon=1e-6,
        weight_decay=0.2,
        delta=0.2,
        wd_ratio=0.3,
        nesterov=True,
        channel_axes={"embed": 0, "dw": [-2, -1], "head": None},
        exclude_from_weight_decay=["bias", "gamma"],
        clipnorm=1.0,
        use_ema=True,
        gradient_accumulation_steps=3,
        loss_scale_factor=4.0,
        name="opt",
    )
    config = opt.get_config()
    again = adamp_tf.AdamP.from_config(copy.deepcopy(config))  # Keras mutates it
    assert again.get_config() == config
    assert config["exclude_from_weight_decay"] == ["bias", "gamma"]
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is adamp_tf.AdamP and restored.get_config() == config
    sgdp = adamp_tf.SGDP(learning_rate=0.1, momentum=0.9, dampening=0.1, variant="paper")
    again = keras.optimizers.deserialize(keras.optimizers.serialize(sgdp))
    assert type(again) is adamp_tf.SGDP and again.get_config() == sgdp.get_config()


# -- base-class arguments, against the core fed the gradients Keras would apply ----------
def _dense_vars(dtype: str = "float32") -> list[keras.Variable]:
    layer = keras.layers.Dense(6, name="dense", dtype=dtype)
    layer.build((1, 8))
    return [layer.kernel, layer.bias]


def _grads(params_torch: list[np.ndarray], step: int) -> list[np.ndarray]:
    cases = [
        Case("k", params_torch[0].shape, "orthogonal", "channel"),
        Case("b", params_torch[1].shape, "aligned", "none"),
    ]
    return [
        case_gradient(c, p.astype(np.float64), step).astype(np.float32)
        for c, p in zip(cases, params_torch)
    ]


def _run(
    opt: keras.optimizers.Optimizer, steps: int, transform, hp: dict, scale: float = 1.0, lr_at=None
) -> None:  # type: ignore[no-untyped-def]
    """Train Keras and the core side by side; ``transform(grads, step)`` gives the core's
    gradients (what Keras does to the gradients before the update), or None to skip."""
    variables = _dense_vars()
    rng = np.random.default_rng(3)
    for v in variables:
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    torch_layout = [to_numpy(variables[0].value).T, to_numpy(variables[1].value)]
    core = Reference(type(opt).__name__, torch_layout, hp)
    opt.build(variables)
    apply = compiled_apply(opt, variables)
    pending = []
    for step in range(steps):
        g = _grads([core.params[0], core.params[1]], step)
        pending.append(g)
        apply(
            [keras.ops.convert_to_tensor(g[0].T * scale), keras.ops.convert_to_tensor(g[1] * scale)]
        )
        core_grads = transform(pending, step)
        if core_grads is not None:
            if lr_at is not None:
                core.hparams["lr"] = lr_at(step)
            core.step(core_grads)
            pending = []
        got = [to_numpy(variables[0].value).T, to_numpy(variables[1].value)]
        for a, b in zip(got, core.params):
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * np.max(np.abs(b)))


def _last(pending, step):  # type: ignore[no-untyped-def]
    return pending[-1]


def test_clipnorm() -> None:
    def clip(pending, step):  # type: ignore[no-untyped-def]
        return [g * min(1.0, 0.5 / np.linalg.norm(g)) for g in pending[-1]]

    _run(adamp_tf.AdamP(learning_rate=0.02, clipnorm=0.5), 5, clip, dict(lr=0.02))


def test_global_clipnorm() -> None:
    def clip(pending, step):  # type: ignore[no-untyped-def]
        total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in pending[-1]))
        return [g * min(1.0, 0.5 / total) for g in pending[-1]]

    _run(
        adamp_tf.SGDP(learning_rate=0.1, momentum=0.9, global_clipnorm=0.5),
        5,
        clip,
        dict(lr=0.1, momentum=0.9),
    )


def test_clipvalue() -> None:
    def clip(pending, step):  # type: ignore[no-untyped-def]
        return [np.clip(g, -0.3, 0.3) for g in pending[-1]]

    _run(adamp_tf.AdamP(learning_rate=0.02, clipvalue=0.3), 5, clip, dict(lr=0.02))


def test_loss_scale_factor() -> None:
    _run(
        adamp_tf.AdamP(learning_rate=0.02, weight_decay=0.1, loss_scale_factor=8.0),
        5,
        _last,
        dict(lr=0.02, weight_decay=0.1),
        scale=8.0,
    )


def test_gradient_accumulation() -> None:
    def mean_every_2(pending, step):  # type: ignore[no-untyped-def]
        if len(pending) < 2:
            return None
        return [(a + b) / 2 for a, b in zip(*pending)]

    _run(
        adamp_tf.AdamP(learning_rate=0.02, weight_decay=0.1, gradient_accumulation_steps=2),
        6,
        mean_every_2,
        dict(lr=0.02, weight_decay=0.1),
    )


def test_learning_rate_schedule() -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    _run(
        adamp_tf.SGDP(learning_rate=schedule, momentum=0.9, weight_decay=0.1),
        5,
        _last,
        dict(lr=0.1, momentum=0.9, weight_decay=0.1),
        lr_at=lambda s: 0.1 * 0.5 ** (s / 2),
    )


def test_use_ema() -> None:
    variables = _dense_vars()
    opt = adamp_tf.AdamP(learning_rate=0.02, use_ema=True, ema_momentum=0.5)
    opt.build(variables)
    ema = None
    for step in range(4):
        grads = [keras.ops.ones(v.shape) * (step + 1) for v in variables]
        opt.apply(grads, variables)
        now = [to_numpy(v.value) for v in variables]
        ema = now if ema is None else [0.5 * e + 0.5 * n for e, n in zip(ema, now)]
    opt.finalize_variable_values(variables)
    for v, e in zip(variables, ema):
        np.testing.assert_allclose(to_numpy(v.value), e, rtol=1e-6)


def test_exclude_from_weight_decay_and_no_base_decay() -> None:
    """Bias excluded: plain step; kernel: decay scaled by the projection ratio only once."""
    opt = adamp_tf.AdamP(learning_rate=0.02, weight_decay=0.5, wd_ratio=0.2)
    opt.exclude_from_weight_decay(var_names=["bias"])
    variables = _dense_vars()
    rng = np.random.default_rng(5)
    for v in variables:
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    params = [to_numpy(variables[0].value).T, to_numpy(variables[1].value)]
    core = Reference(
        "AdamP", params, dict(lr=0.02, weight_decay=0.5, wd_ratio=0.2), no_decay=[False, True]
    )
    for step in range(3):
        g = _grads(core.params, step)
        opt.apply(
            [keras.ops.convert_to_tensor(g[0].T), keras.ops.convert_to_tensor(g[1])], variables
        )
        core.step(g)
        assert core.branches == ["channel", "none"]
    np.testing.assert_allclose(to_numpy(variables[0].value).T, core.params[0], atol=2e-6)
    np.testing.assert_allclose(to_numpy(variables[1].value), core.params[1], atol=2e-6)


# -- compiled training ----------------------------------------------------------------
def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    # no conv bias before BatchNorm: its gradient is pure round-off, which Adam-type
    # updates amplify to +-lr, so compiled and eager runs would differ there by design
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 6, 6, 2)).astype("float32"), rng.integers(0, 3, 16)


@pytest.mark.parametrize("cls", [adamp_tf.AdamP, adamp_tf.SGDP])
def test_fit_jit_compile_matches_eager(cls) -> None:  # type: ignore[no-untyped-def]
    x, y = _data()
    weights = []
    for jit in [True, False] if BACKEND != "torch" else [False]:
        model = _model()
        model.compile(
            optimizer=cls(learning_rate=0.05, weight_decay=0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]
        weights.append([to_numpy(w) for w in model.weights])
    for a, b in zip(weights[0], weights[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- precision ------------------------------------------------------------------------
def test_bfloat16_variables_update_in_float32() -> None:
    """bf16 weights: the step is computed in float32 from the bf16 values and rounded."""
    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(9)
    start = rng.standard_normal((12, 8)).astype(bf16)  # Keras layout (in, out)
    v = keras.Variable(start, dtype="bfloat16", name="kernel")
    opt = adamp_tf.AdamP(learning_rate=0.02, weight_decay=0.1)
    opt.build([v])
    param = start.astype(np.float32).T
    ref = Reference("AdamP", [param], dict(lr=0.02, weight_decay=0.1))
    for step in range(4):
        g = (
            case_gradient(
                Case("k", (8, 12), "orthogonal", "channel"), param.astype(np.float64), step
            )
            .astype(bf16)
            .astype(np.float32)
        )
        opt.apply([keras.ops.convert_to_tensor(g.T.astype(bf16))], [v])
        ref.step([g])
        assert ref.branches == ["channel"]
        # the reference's state and weights, rounded to bf16 as Keras stores them
        ref.params[0] = ref.params[0].astype(bf16).astype(np.float32)
        st = ref.state[0]
        ref.state[0] = type(st)(
            st.step,
            st.exp_avg.astype(bf16).astype(np.float32),
            st.exp_avg_sq.astype(bf16).astype(np.float32),
        )
        param = ref.params[0]
        got = to_numpy(v.value).astype(np.float32).T
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, param, rtol=0, atol=2**-7 * np.max(np.abs(param)))


def test_loss_scale_optimizer_skips_non_finite_steps() -> None:
    variables = _dense_vars()
    lso = keras.optimizers.LossScaleOptimizer(adamp_tf.AdamP(learning_rate=0.02))
    lso.build(variables)
    apply = compiled_apply(lso, variables)  # JAX: LossScaleOptimizer needs stateless_apply
    finite = [keras.ops.ones(v.shape) for v in variables]
    apply(finite)
    before = [to_numpy(v.value) for v in variables]
    state = [to_numpy(v.value) for v in lso.inner_optimizer.variables]
    bad = [keras.ops.full(v.shape, float("inf")) for v in variables]
    apply(bad)
    for a, b in zip(before, variables):
        np.testing.assert_array_equal(a, to_numpy(b.value))
    for a, b in zip(state, lso.inner_optimizer.variables):
        np.testing.assert_array_equal(a, to_numpy(b.value))
    apply(finite)
    assert not np.array_equal(before[0], to_numpy(variables[0].value))


def test_mixed_float16_fit() -> None:
    x, y = _data()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _model()
        model.compile(
            optimizer=adamp_tf.AdamP(learning_rate=0.05, weight_decay=0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(np.all(np.isfinite(to_numpy(w))) for w in model.weights)
