"""One or two steps of tiny cases, with the expected numbers worked out by hand.

These do not depend on the authors' package being right. Derivations are in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest

from adamp_core import SGDP, AdamP


def test_adamp_one_step_channel_projection_and_decay() -> None:
    # Rows of p have norm 5; rows of g are orthogonal to them -> channel branch.
    # Step 1, eps=0: m = 0.1 g, v = 0.001 g^2, bc1 = 0.1, bc2 = 0.001, so
    # denom = |g| and u = 0.1 sign(g); the step size lr/bc1 = 1.
    # Row 0: u = [.1, -.1], Pn = [.6, .8], <Pn,u> = -.02 -> u' = [.112, -.084].
    # Row 1: u = [.1, .1],  Pn = [.8, -.6], <Pn,u> = .02 -> u' = [.084, .112].
    # Decay factor 1 - lr*wd*wd_ratio = 1 - 0.1*0.5*0.1 = 0.995.
    # 1-D vector: u = [.1, -.1], never projected, decay 1 - 0.1*0.5 = 0.95.
    w = np.array([[3.0, 4.0], [4.0, -3.0]])
    b = np.array([1.0, 2.0])
    opt = AdamP([w, b], lr=0.1, eps=0.0, weight_decay=0.5)
    opt.step([np.array([[4.0, -3.0], [3.0, 4.0]]), np.array([1.0, -1.0])])
    expected_w = np.array(
        [[3 * 0.995 - 0.112, 4 * 0.995 + 0.084], [4 * 0.995 - 0.084, -3 * 0.995 - 0.112]]
    )
    np.testing.assert_allclose(w, expected_w, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b, [0.95 - 0.1, 1.9 + 0.1], rtol=0, atol=1e-14)
    assert opt.last_branches == ["channel", "none"]
    # The projected update is orthogonal to each weight row: with no decay the row norm
    # could only grow by the second-order term; here we check the radial part is zero.
    u = np.array([[0.112, -0.084], [0.084, 0.112]])
    np.testing.assert_allclose(np.sum(u * np.array([[3, 4], [4, -3]]), axis=1), 0, atol=1e-15)


def test_adamp_aligned_gradient_is_plain_adamw() -> None:
    # g parallel to p: |cos| = 1, nothing projected, full decay 1 - 0.1*0.5 = 0.95,
    # u = 0.1 sign(g) (eps=0) and lr/bc1 = 1, so p = 0.95 p - 0.1 sign(g).
    w = np.array([[3.0, 4.0], [1.0, 2.0]])
    opt = AdamP([w], lr=0.1, eps=0.0, weight_decay=0.5)
    opt.step([w.copy()])
    np.testing.assert_allclose(w, [[2.85 - 0.1, 3.8 - 0.1], [0.95 - 0.1, 1.9 - 0.1]], atol=1e-14)
    assert opt.last_branches == ["none"]


def test_adamp_nesterov_two_steps() -> None:
    # 1-D, eps=0, b1=0.5, b2=0.75, g1=2, g2=1 (scalars in a 1-element vector).
    # t=1: m=1, v=1, bc1=.5, bc2=.25, denom=1/.5=2, numer = .5*1+.5*2 = 1.5, u=.75,
    #      p = 1 - lr/bc1*u = 1 - .2*.75 = .85 (lr=.1).
    # t=2: m=.5+.5=1, v=.75+.25=1, bc1=.75, bc2=1-.5625=.4375, denom=1/sqrt(.4375),
    #      numer=.5*1+.5*1=1, u=sqrt(.4375), p = .85 - (.1/.75)*sqrt(.4375).
    p = np.array([1.0])
    opt = AdamP([p], lr=0.1, betas=(0.5, 0.75), eps=0.0, nesterov=True)
    opt.step([np.array([2.0])])
    np.testing.assert_allclose(p, [0.85], atol=1e-15)
    opt.step([np.array([1.0])])
    np.testing.assert_allclose(p, [0.85 - (0.1 / 0.75) * np.sqrt(0.4375)], atol=1e-15)


@pytest.mark.parametrize("variant", ["authors", "paper"])
def test_sgdp_two_steps_and_the_variants(variant: str) -> None:
    # p = [[3, 4]] (one channel row), lr .1, momentum .5.
    # t=1: g=[4,-3] orthogonal -> buf=[4,-3] has no radial part: p = [2.6, 4.3].
    # t=2: g=[4.3,-2.6] orthogonal to p. buf = .5*[4,-3] + g = [6.3, -4.1].
    #      <p,buf> = 16.38 - 17.63 = -1.25, |p|^2 = 25.25 (eps negligible at 1e-16 here
    #      only because we set eps=0), radial = (-1.25/25.25) p.
    #      d = buf - radial; p = p - .1 d. Authors: buf := d. Paper: buf stays [6.3, -4.1].
    w = np.array([[3.0, 4.0]])
    opt = SGDP([w], lr=0.1, momentum=0.5, eps=0.0, variant=variant)
    opt.step([np.array([[4.0, -3.0]])])
    np.testing.assert_allclose(w, [[2.6, 4.3]], atol=1e-15)
    opt.step([np.array([[4.3, -2.6]])])
    radial = (-1.25 / 25.25) * np.array([2.6, 4.3])
    d = np.array([6.3, -4.1]) - radial
    np.testing.assert_allclose(w, [[2.6, 4.3] - 0.1 * d], atol=1e-14)
    assert opt.last_branches == ["channel"]
    buf = opt.state[0].momentum_buffer  # type: ignore[union-attr]
    expected_buf = d if variant == "authors" else np.array([6.3, -4.1])
    np.testing.assert_allclose(buf, [expected_buf], atol=1e-14)


def test_sgdp_weight_decay_divided_by_one_minus_momentum() -> None:
    # Aligned gradient (no projection): decay factor 1 - lr*wd/(1-m) = 1 - .1*.2/.5 = .96,
    # buf = g (first step), p = .96 p - .1 g with g = p: p = .86 p.
    # Orthogonal gradient on the other tensor: factor 1 - .1*.2*.1/.5 = .996.
    a = np.array([[1.0, 2.0]])
    c = np.array([[3.0, 4.0]])
    opt = SGDP([a, c], lr=0.1, momentum=0.5, weight_decay=0.2, eps=0.0)
    opt.step([a.copy(), np.array([[4.0, -3.0]])])
    np.testing.assert_allclose(a, [[0.86, 1.72]], atol=1e-15)
    np.testing.assert_allclose(c, [[3 * 0.996 - 0.4, 4 * 0.996 + 0.3]], atol=1e-15)
    assert opt.last_branches == ["none", "channel"]


def test_layer_branch_hand_case() -> None:
    # p rows [1,0] and [0,1]; g rows [1,0] and [0,-1]: each row is parallel to its weight
    # row (channel |cos| = 1 fails) but the flattened vectors are orthogonal (1 - 1 = 0),
    # so the layer view passes. SGDP, lr 1, no momentum, eps 0: d = g, Pn = p/sqrt(2),
    # <Pn, d> = 0, so d is unchanged and p = p - g = [[0, 0], [0, 2]].
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    opt = SGDP([w], lr=1.0, eps=0.0)
    opt.step([np.array([[1.0, 0.0], [0.0, -1.0]])])
    np.testing.assert_allclose(w, [[0.0, 0.0], [0.0, 2.0]], atol=1e-15)
    assert opt.last_branches == ["layer"]
