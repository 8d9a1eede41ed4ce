"""Hypothesis properties of the projection that hold for any input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from adamp_core.functional import projection

# zeros, or magnitudes in [1e-3, 10]: no denormals, whose round-off says nothing here
finite = st.one_of(st.just(0.0), st.floats(1e-3, 10), st.floats(-10, -1e-3))
EPS = 1e-8  # the default; eps=0 turns a zero row into 0/0, as in the authors' code
shapes = st.tuples(st.integers(1, 5), st.integers(2, 6))


@st.composite
def weights_and_updates(draw):
    shape = draw(shapes)
    p = draw(arrays(np.float64, shape, elements=finite))
    u = draw(arrays(np.float64, shape, elements=finite))
    return p, u


def _orthogonal_rows(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    sq = np.sum(p * p, axis=1, keepdims=True)
    coef = np.divide(np.sum(r * p, axis=1, keepdims=True), sq, out=np.zeros_like(sq), where=sq > 0)
    return r - coef * p


@settings(max_examples=200, deadline=None)
@given(weights_and_updates(), st.integers(0, 2**31 - 1))
def test_channel_projection_leaves_no_radial_part(pu, seed) -> None:
    p, u = pu
    rng = np.random.default_rng(seed)
    g = _orthogonal_rows(p, rng.standard_normal(p.shape))
    out = projection(p, g, u, delta=0.1, wd_ratio=0.25, eps=EPS)
    norms = np.linalg.norm(p, axis=1)
    if out.branch == "channel":
        assert out.ratio == 0.25
        # <p_hat, u'> = <p_hat, u> (1 - |p|^2 / (|p| + eps)^2): about 2 eps / |p| of |u|
        safe = np.maximum(norms, 1e-300)
        radial = np.abs(np.sum(out.update * p, axis=1)) / safe
        u_norm = np.linalg.norm(u, axis=1)
        assert np.all(radial <= u_norm * (1e-9 + np.minimum(1.0, 3 * EPS / safe)))
        # the tangential part is untouched: u - out.update is parallel to p per row
        diff = u - out.update
        assert np.allclose(_orthogonal_rows(p, diff), 0, atol=1e-9 * (np.abs(u).max() + 1))
    else:
        # only possible when a row's cosine did not vanish in float64 round-off
        assert out.branch in ("layer", "none")


@settings(max_examples=200, deadline=None)
@given(weights_and_updates(), st.floats(0.1, 10))
def test_decision_is_invariant_to_weight_scale(pu, c) -> None:
    # the decision compares a scale-free cosine with a fixed threshold, and the projection
    # uses the unit weight row: scaling the weights changes neither (up to eps / |p|)
    p, g = pu
    u = np.ones_like(p)
    a = projection(p, g, u, delta=0.1, wd_ratio=0.1, eps=EPS)
    b = projection(c * p, g, u, delta=0.1, wd_ratio=0.1, eps=EPS)
    if a.branch != b.branch:
        # allowed only on a knife edge: recompute the channel cosine and check closeness
        rows = p.reshape(p.shape[0], -1)
        grows = g.reshape(g.shape[0], -1)
        cos = np.abs(np.sum(rows * grows, 1)) / (
            np.linalg.norm(rows, axis=1) * np.linalg.norm(grows, axis=1) + 1e-300
        )
        thr = 0.1 / np.sqrt(rows.shape[1])
        assert np.min(np.abs(cos - thr)) < 1e-9
    else:
        # each projected row differs by at most ~2 eps / |p_row| (times |u| = sqrt(n))
        norms = np.linalg.norm(p.reshape(p.shape[0], -1), axis=1) * min(c, 1.0)
        smallest = norms[norms > 0].min() if np.any(norms > 0) else 1.0
        atol = 3 * EPS / smallest * np.sqrt(p[0].size) + 1e-12
        np.testing.assert_allclose(a.update, b.update, rtol=0, atol=atol)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=finite))
def test_vectors_are_never_projected(v) -> None:
    out = projection(v, v, v, delta=1e9, wd_ratio=0.1, eps=1e-8)
    assert out.branch == "none" and out.ratio == 1.0 and out.update is v
