"""Behaviour of the NumPy optimizers: in-place updates, dtypes, gradient checks, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from adamp_core import SGDP, AdamP
from adamp_core.functional import AdamPState, adamp_step

OPTIMIZERS = [
    pytest.param(lambda ps, **kw: AdamP(ps, lr=0.01, weight_decay=0.1, **kw), id="AdamP"),
    pytest.param(
        lambda ps, **kw: SGDP(ps, lr=0.1, momentum=0.9, weight_decay=0.1, **kw), id="SGDP"
    ),
]


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_in_place_and_keeps_dtype(make, dtype) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 2)).astype(dtype)
    s = np.array(1.5, dtype=dtype)  # 0-d parameters are allowed, never projected
    before = w.copy()
    opt = make([w, s])
    opt.step([rng.standard_normal(w.shape).astype(dtype), np.array(0.5, dtype=dtype)])
    assert w.dtype == dtype and s.dtype == dtype
    assert not np.array_equal(w, before)
    assert s != 1.5
    state = opt.state[0]
    arrays = (
        [state.exp_avg, state.exp_avg_sq]
        if isinstance(state, AdamPState)
        else [state.momentum_buffer]
    )  # type: ignore[union-attr]
    assert all(a.dtype == dtype for a in arrays)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_none_gradient_skips_the_parameter(make) -> None:
    a, b = np.ones((2, 3)), np.ones(4)
    opt = make([a, b])
    opt.step([None, np.full(4, 0.5)])
    np.testing.assert_array_equal(a, np.ones((2, 3)))
    assert opt.state[0] is None and opt.last_branches == [None, "none"]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_gradient_mismatches_raise_before_any_update(make) -> None:
    a, b = np.ones((2, 3)), np.ones(4)
    opt = make([a, b])
    with pytest.raises(ValueError, match="expected 2 gradients, got 1"):
        opt.step([np.ones((2, 3))])
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(5,\), its parameter \(4,\)"):
        opt.step([np.ones((2, 3)), np.ones(5)])
    with pytest.raises(ValueError, match=r"grads\[1\] has dtype float32"):
        opt.step([np.ones((2, 3)), np.ones(4, np.float32)])
    with pytest.raises(ValueError, match=r"grads\[0\] must be a numpy.ndarray"):
        opt.step([[1.0, 2.0], np.ones(4)])
    np.testing.assert_array_equal(a, 1.0)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_nonfinite_policy(make) -> None:
    a = np.ones((2, 3))
    bad = np.array([[np.nan, 0, 0], [0, 0, 0]])
    strict = make([a], check_finite=True)
    with pytest.raises(ValueError, match=r"grads\[0\] contains NaN or infinity"):
        strict.step([bad])
    np.testing.assert_array_equal(a, 1.0)
    # default: propagate, as PyTorch and the authors do (NaN fails the cosine test -> none)
    lax = make([a])
    lax.step([bad])
    assert np.isnan(a[0, 0]) and lax.last_branches == ["none"]


@pytest.mark.parametrize(
    "params",
    [[np.ones(3, np.int64)], [np.ones(3, np.float16)], [[1.0, 2.0]], []],
    ids=["int", "float16", "list", "empty"],
)
def test_bad_params_rejected(params) -> None:
    with pytest.raises(ValueError, match="params"):
        AdamP(params)


def test_read_only_param_rejected() -> None:
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGDP([w], lr=0.1)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_zero_weights_and_zero_gradients_stay_finite(make) -> None:
    # Zero weights: cos = 0, the projection is a no-op (Pn = 0), wd_ratio still applies.
    # Zero gradient: AdamP's update is 0 / (0 + eps) = 0.
    w, z = np.zeros((3, 4)), np.ones((3, 4))
    opt = make([w, z])
    opt.step([np.ones((3, 4)), np.zeros((3, 4))])
    assert opt.last_branches == ["channel", "channel"]
    assert np.all(w != 0)  # the zero weights moved
    for _ in range(3):
        opt.step([np.ones((3, 4)), np.zeros((3, 4))])
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(z))
    assert opt.last_branches[1] == "channel"


def test_functional_is_pure() -> None:
    p = np.arange(6.0).reshape(2, 3)
    g = np.ones((2, 3))
    state = AdamPState.zeros_like(p)
    p0, g0 = p.copy(), g.copy()
    result = adamp_step(
        p,
        g,
        state,
        lr=0.1,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.1,
        delta=0.1,
        wd_ratio=0.1,
        nesterov=False,
    )
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(g, g0)
    assert state.step == 0 and not state.exp_avg.any()
    assert result.state.step == 1 and not np.array_equal(result.param, p)
