"""The paper's 2-D toy: momentum inflates the norm of a scale-invariant weight, SGDP does not.

The loss ``|w/|w| - u|^2`` depends only on the direction of ``w`` (it is scale-invariant),
so its gradient is always orthogonal to ``w``. Plain gradient descent still grows ``|w|``
a little (each step is a tangent move), heavy-ball momentum grows it a lot (the buffer
remembers old tangents, which point outwards once ``w`` has turned), and SGDP removes the
radial part of each update, keeping ``|w|`` close to where it started.

Setup (the project page of Heo et al., ICLR 2021): ``w0 = (0, 1)``, target
``u = (sin e, -cos e)`` nearly opposite to ``w0``, learning rate 0.01, 500 iterations.
The page does not state ``e``; every ``e`` in ``[0.011, 0.0145]`` rad reproduces all its
two-decimal numbers (GD 1.02; momentum 0.9/0.95/0.99: 2.93/5.67/27.87), so
:data:`TOY_ANGLE` = 0.0125 rad (about 0.72 degrees). The results barely depend on ``e``:
from 0.001 to 0.1 rad they move by less than 0.3 %.

SGDP runs through :class:`adamp_core.SGDP` on a ``(1, 2)``-shaped weight (a 1-D weight is
never projected), in both variants: ``"paper"`` (only the update is projected) and
``"authors"`` (the momentum buffer itself is projected, as in the authors' code).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from ..optim import SGDP

__all__ = [
    "TOY_ANGLE",
    "TOY_LR",
    "TOY_ITERATIONS",
    "TOY_MOMENTA",
    "PAPER_TOY_NORMS",
    "ToyRun",
    "toy_target",
    "toy_loss_and_grad",
    "run_toy",
    "run_toys",
    "format_toy_table",
]

#: Angle ``e`` (radians) between the target ``u`` and ``-w0``; see the module docstring.
TOY_ANGLE = 0.0125
TOY_LR = 0.01
TOY_ITERATIONS = 500
TOY_MOMENTA: tuple[float, ...] = (0.9, 0.95, 0.99)

Method = Literal["GD", "momentum", "SGDP"]

#: Final ``|w|`` the project page reports, keyed like :attr:`ToyRun.label`. The page
#: gives a range for the paper-variant SGDP. The authors'-code values are not on the
#: page: they are this project's own measurement of the authors' code, listed for comparison.
PAPER_TOY_NORMS: dict[str, str] = {
    "GD": "1.02",
    "momentum 0.9": "2.93",
    "momentum 0.95": "5.67",
    "momentum 0.99": "27.87",
    "SGDP paper 0.9": "1.12-1.15",
    "SGDP paper 0.95": "1.12-1.15",
    "SGDP paper 0.99": "1.12-1.15",
    "SGDP authors 0.9": "(1.18)",
    "SGDP authors 0.95": "(1.30)",
    "SGDP authors 0.99": "(1.84)",
}


@dataclass(frozen=True)
class ToyRun:
    """One optimizer on the toy problem.

    ``norms[i]`` and ``losses[i]`` are ``|w|`` and the loss after ``i`` iterations
    (``i = 0`` is the start), so each list has ``iterations + 1`` entries.
    """

    method: Method
    momentum: float
    variant: str | None
    norms: list[float] = field(repr=False)
    losses: list[float] = field(repr=False)

    @property
    def label(self) -> str:
        """``"GD"``, ``"momentum 0.9"``, ``"SGDP paper 0.9"``, ..."""
        if self.method == "GD":
            return "GD"
        if self.method == "momentum":
            return f"momentum {self.momentum:g}"
        return f"SGDP {self.variant} {self.momentum:g}"

    @property
    def final_norm(self) -> float:
        return self.norms[-1]

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(label=self.label, final_norm=self.final_norm, final_loss=self.final_loss)
        return out


def toy_target(angle: float = TOY_ANGLE) -> np.ndarray:
    """The target direction ``u = (sin angle, -cos angle)``."""
    return np.array([np.sin(angle), -np.cos(angle)])


def toy_loss_and_grad(w: np.ndarray, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss ``|w/|w| - u|^2`` and its gradient ``-2 (u - (w.u) w/|w|^2) / |w|`` (any shape)."""
    norm = float(np.linalg.norm(w))
    direction = w / norm
    loss = float(np.sum((direction - u) ** 2))
    grad = -2.0 * (u - direction * np.sum(direction * u)) / norm
    return loss, grad


def run_toy(
    method: Method,
    momentum: float = 0.0,
    variant: str | None = None,
    *,
    lr: float = TOY_LR,
    iterations: int = TOY_ITERATIONS,
    angle: float = TOY_ANGLE,
) -> ToyRun:
    """Run one optimizer on the toy problem from ``w0 = (0, 1)``.

    Args:
        method: ``"GD"`` (plain gradient descent), ``"momentum"`` (heavy ball:
            ``buf = momentum*buf + g; w -= lr*buf``, as torch.optim.SGD) or ``"SGDP"``
            (:class:`adamp_core.SGDP` with ``momentum`` and ``variant``).
        momentum: momentum factor (ignored for ``"GD"``). Default ``0``.
        variant: SGDP variant, ``"paper"`` or ``"authors"`` (``"SGDP"`` only).
        lr: learning rate. Default :data:`TOY_LR` (0.01).
        iterations: number of steps. Default :data:`TOY_ITERATIONS` (500).
        angle: the target's angle ``e``. Default :data:`TOY_ANGLE`.
    """
    u = toy_target(angle)
    w = np.array([[0.0, 1.0]])  # (1, 2): one output channel of two elements
    norms, losses = [float(np.linalg.norm(w))], [toy_loss_and_grad(w, u)[0]]
    if method == "SGDP":
        if variant is None:
            raise ValueError("SGDP needs variant='paper' or variant='authors'")
        opt = SGDP([w], lr=lr, momentum=momentum, variant=variant)
    elif method == "GD":
        momentum, variant = 0.0, None
    elif method != "momentum":
        raise ValueError(f"unknown method {method!r}: expected 'GD', 'momentum' or 'SGDP'")
    buf = np.zeros_like(w)
    for _ in range(iterations):
        _, grad = toy_loss_and_grad(w, u)
        if method == "SGDP":
            opt.step([grad])
        else:
            buf = momentum * buf + grad
            w -= lr * buf
        loss, _ = toy_loss_and_grad(w, u)
        norms.append(float(np.linalg.norm(w)))
        losses.append(loss)
    return ToyRun(method, float(momentum), variant, norms, losses)


def run_toys(
    momenta: tuple[float, ...] = TOY_MOMENTA,
    *,
    iterations: int = TOY_ITERATIONS,
    angle: float = TOY_ANGLE,
) -> list[ToyRun]:
    """GD, then heavy-ball momentum, paper-variant SGDP and authors-variant SGDP at ``momenta``."""
    runs = [run_toy("GD", iterations=iterations, angle=angle)]
    runs += [run_toy("momentum", m, iterations=iterations, angle=angle) for m in momenta]
    for variant in ("paper", "authors"):
        runs += [run_toy("SGDP", m, variant, iterations=iterations, angle=angle) for m in momenta]
    return runs


def format_toy_table(runs: list[ToyRun]) -> str:
    """A markdown table: run, final ``|w|``, final loss, and the project page's ``|w|``."""
    lines = ["| run | final norm of w | final loss | project page |", "|---|---:|---:|---:|"]
    for r in runs:
        expected = PAPER_TOY_NORMS.get(r.label, "") if len(r.norms) == TOY_ITERATIONS + 1 else ""
        lines.append(f"| {r.label} | {r.final_norm:.2f} | {r.final_loss:.1e} | {expected} |")
    return "\n".join(lines)
