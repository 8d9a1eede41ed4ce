"""Shared helpers of the Triton kernel tests (imported as a plain module)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adamp_core import functional as ref
from adamp_core.testing import CASES, Case, case_gradient, initial_params
from adamp_torch import _triton

ADAMP_DEFAULTS: dict[str, Any] = dict(
    lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
    nesterov=False,
)  # fmt: skip
SGDP_DEFAULTS: dict[str, Any] = dict(
    lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, eps=1e-8,
    delta=0.1, wd_ratio=0.1, variant="authors",
)  # fmt: skip

#: One case per branch plus a vector: the smallest set that takes every path.
SMALL_CASES: tuple[Case, ...] = tuple(
    c for c in CASES if c.name in ("conv-channel", "linear-layer", "linear-none", "vector")
)


@dataclass
class Reference:
    """The NumPy reference (``adamp_core.functional``) on float64/float32 arrays."""

    optimizer: str
    params: list[np.ndarray]
    hparams: dict[str, Any]
    state: list[Any] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        cls = ref.AdamPState if self.optimizer == "AdamP" else ref.SGDPState
        self.state = [cls.zeros_like(p) for p in self.params]

    def step(self, grads: Sequence[np.ndarray], **override: Any) -> None:
        h = dict(self.hparams, **override)
        self.branches = []
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.optimizer == "AdamP":
                out = ref.adamp_step(p, g, self.state[i], **h)
            else:
                out = ref.sgdp_step(p, g, self.state[i], **h)
            self.params[i], self.state[i] = out.param, out.state
            self.branches.append(out.branch)


@dataclass
class Kernels:
    """Tensors and state for :func:`_triton.adamp_step` / :func:`_triton.sgdp_step`."""

    optimizer: str
    params: list[torch.Tensor]
    hparams: dict[str, Any]
    maximize: bool = False

    def __post_init__(self) -> None:
        self.state = [[torch.zeros_like(p) for p in self.params]]
        if self.optimizer == "AdamP":
            self.state.append([torch.zeros_like(p) for p in self.params])
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]
        self.branch_codes = torch.zeros(len(self.params), dtype=torch.int32)
        self.workspace = _triton.Workspace()

    @property
    def branches(self) -> list[str]:
        return [_triton.BRANCHES[i] for i in self.branch_codes.tolist()]

    def step(self, grads: Sequence[torch.Tensor], **override: Any) -> None:
        h = dict(self.hparams, **override)
        common = dict(branches=self.branch_codes, workspace=self.workspace)
        if self.optimizer == "AdamP":
            beta1, beta2 = h.pop("betas")
            _triton.adamp_step(
                self.params, list(grads), self.state[0], self.state[1], self.steps,
                beta1=beta1, beta2=beta2, maximize=self.maximize, **h, **common,
            )  # fmt: skip
        else:
            _triton.sgdp_step(
                self.params, list(grads), self.state[0], maximize=self.maximize, **h, **common
            )


def start(cases: Sequence[Case] = SMALL_CASES, dtype: Any = np.float64) -> list[np.ndarray]:
    return [p.astype(dtype) for p in initial_params(cases)]


def grads_for(
    cases: Sequence[Case], params: Sequence[np.ndarray], step: int, dtype: Any
) -> list[np.ndarray]:
    """The suite's gradients at these weights."""
    return [
        case_gradient(c, np.asarray(p, dtype=np.float64), step).astype(dtype)
        for c, p in zip(cases, params)
    ]


def run_pair(
    optimizer: str,
    hparams: dict[str, Any],
    *,
    steps: int = 4,
    cases: Sequence[Case] = SMALL_CASES,
    maximize: bool = False,
    per_step: dict[int, dict[str, Any]] | None = None,
) -> tuple[float, list[list[str]], list[list[str]]]:
    """Run the kernels and the reference side by side in float64 (each fed the suite's
    gradients at its own weights; with ``maximize`` the kernels get the negated gradients,
    so both follow the same trajectory).

    Returns the worst absolute weight difference and both branch histories.
    ``per_step`` overrides hyperparameters at given steps (in both).
    """
    reference = Reference(optimizer, start(cases), dict(hparams))
    kernels = Kernels(optimizer, [torch.tensor(p) for p in start(cases)], dict(hparams), maximize)
    worst, ref_branches, got_branches = 0.0, [], []
    for step in range(steps):
        override = (per_step or {}).get(step, {})
        g_ref = grads_for(cases, reference.params, step, np.float64)
        g_got = grads_for(cases, [p.numpy() for p in kernels.params], step, np.float64)
        if maximize:
            g_got = [-g for g in g_got]
        reference.step(g_ref, **override)
        kernels.step([torch.tensor(g) for g in g_got], **override)
        ref_branches.append(reference.branches)
        got_branches.append(kernels.branches)
        for a, b in zip(kernels.params, reference.params):
            worst = max(worst, float(np.max(np.abs(a.numpy() - b))))
    return worst, ref_branches, got_branches
