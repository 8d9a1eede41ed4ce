"""The 2-D toy reproduces the project page's final norms."""

from __future__ import annotations

import numpy as np
import pytest

from adamp_core.cli.toy import (
    TOY_ANGLE,
    format_toy_table,
    run_toy,
    run_toys,
    toy_loss_and_grad,
    toy_target,
)

# Final |w| after 500 iterations: the project page's numbers (two decimals), the
# paper-variant SGDP range it gives, and this project's measurement of the authors' variant.
MOMENTUM_NORMS = {0.9: 2.93, 0.95: 5.67, 0.99: 27.87}
AUTHORS_NORMS = {0.9: 1.18, 0.95: 1.30, 0.99: 1.84}


@pytest.fixture(scope="module")
def runs() -> dict[str, float]:
    return {r.label: r.final_norm for r in run_toys()}


def test_gradient_descent(runs: dict[str, float]) -> None:
    assert runs["GD"] == pytest.approx(1.02, abs=0.005)


@pytest.mark.parametrize(("momentum", "norm"), MOMENTUM_NORMS.items())
def test_heavy_ball_momentum_inflates_the_norm(runs, momentum: float, norm: float) -> None:
    assert runs[f"momentum {momentum:g}"] == pytest.approx(norm, abs=0.005)


@pytest.mark.parametrize("momentum", MOMENTUM_NORMS)
def test_sgdp_paper_variant_keeps_the_norm(runs, momentum: float) -> None:
    assert 1.12 <= runs[f"SGDP paper {momentum:g}"] <= 1.15


@pytest.mark.parametrize(("momentum", "norm"), AUTHORS_NORMS.items())
def test_sgdp_authors_variant(runs, momentum: float, norm: float) -> None:
    assert runs[f"SGDP authors {momentum:g}"] == pytest.approx(norm, abs=0.005)


@pytest.mark.parametrize("angle", [0.001, 0.05])
def test_numbers_barely_depend_on_the_unstated_angle(angle: float) -> None:
    for label, got in zip(
        ["GD", "momentum 0.9", "momentum 0.99", "SGDP paper 0.99"],
        [
            run_toy("GD", angle=angle),
            run_toy("momentum", 0.9, angle=angle),
            run_toy("momentum", 0.99, angle=angle),
            run_toy("SGDP", 0.99, "paper", angle=angle),
        ],
    ):
        ref = run_toy(got.method, got.momentum, got.variant)
        assert got.final_norm == pytest.approx(ref.final_norm, rel=3e-3), label


def test_gradient_matches_finite_differences() -> None:
    u = toy_target(TOY_ANGLE)
    rng = np.random.default_rng(3)
    for _ in range(5):
        w = rng.standard_normal((1, 2)) * 3
        _, grad = toy_loss_and_grad(w, u)
        h = 1e-6
        fd = [
            (toy_loss_and_grad(w + h * e, u)[0] - toy_loss_and_grad(w - h * e, u)[0]) / (2 * h)
            for e in np.eye(2).reshape(2, 1, 2)
        ]
        np.testing.assert_allclose(grad.ravel(), fd, rtol=1e-6, atol=1e-9)
        assert abs(np.sum(grad * w)) < 1e-12 * np.sum(w * w) + 1e-15  # scale-invariant


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_sgdp_runs_match_a_hand_written_projection(variant: str) -> None:
    """Oracle: tangent projection written out by hand (no eps), both variants."""
    u, lr, m = toy_target(TOY_ANGLE), 0.01, 0.95
    w, buf = np.array([0.0, 1.0]), np.zeros(2)
    for _ in range(500):
        _, g = toy_loss_and_grad(w, u)
        buf = m * buf + g
        n = w / np.linalg.norm(w)
        d = buf - n * (n @ buf)
        if variant == "authors":
            buf = d
        w = w - lr * d
    assert run_toy("SGDP", m, variant).final_norm == pytest.approx(np.linalg.norm(w), rel=1e-7)


def test_run_toy_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="variant"):
        run_toy("SGDP", 0.9)
    with pytest.raises(ValueError, match="unknown method"):
        run_toy("Adam", 0.9)  # type: ignore[arg-type]


def test_table_lists_every_run(runs) -> None:
    table = format_toy_table(run_toys())
    assert table.count("\n") == 1 + len(runs)
    assert "| momentum 0.99 | 27.87 |" in table and "| SGDP paper 0.9 | 1.13 |" in table
