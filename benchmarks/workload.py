"""Parameters and gradients for the torch benchmark, built from :mod:`benchmarks.shapes`.

Two gradient kinds:

* ``random``: i.i.d. normal. AdamP/SGDP rarely project on these (|cos| is about 1/sqrt(n),
  the threshold is delta/sqrt(n)), so they time the non-projecting path.
* ``orthogonal``: normal, then every output-channel row (axis 0, the rest flattened) of every
  tensor with two or more dimensions has its component along the weight row removed, so the
  channel-view cosine is ~0 and the projection fires on every such tensor (the costly path).

The benchmark restores the weights before every timed step, so the gradients stay orthogonal to
the weights an optimizer sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchmarks.shapes import ParamList

GRAD_KINDS = ("random", "orthogonal")


def make_params(shapes: ParamList, *, device: str = "cpu", seed: int = 0) -> list[torch.Tensor]:
    """fp32 weights: He-normal for tensors with 2+ dims (fan-in = elements per output row), and
    N(0, 0.1^2) for 1-D tensors (norm scales and biases; their values do not change the cost)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for _, shape in shapes:
        t = torch.randn(shape, generator=gen, dtype=torch.float32)
        if len(shape) >= 2:
            t.mul_(math.sqrt(2.0 / max(1, t[0].numel())))
        else:
            t.mul_(0.1)
        params.append(t.to(device))
    return params


def make_grads(
    params: list[torch.Tensor], kind: str, *, seed: int = 1, scale: float = 1e-2
) -> list[torch.Tensor]:
    """Gradients of the given ``kind`` (see the module docstring), ``scale`` times N(0, 1)."""
    if kind not in GRAD_KINDS:
        raise ValueError(f"unknown gradient kind {kind!r}; choose from {GRAD_KINDS}")
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for p in params:
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale
        if kind == "orthogonal" and p.dim() >= 2:
            rows_p = p.detach().cpu().double().reshape(p.shape[0], -1)
            rows_g = g.view(p.shape[0], -1)
            coef = (rows_g * rows_p).sum(1, keepdim=True) / (rows_p * rows_p).sum(1, keepdim=True)
            rows_g -= coef * rows_p
        grads.append(g.to(dtype=p.dtype, device=p.device))
    return grads


@dataclass(frozen=True)
class ProjectionCensus:
    """How many tensors the AdamP/SGDP test would project for these (weights, gradients)."""

    projected_tensors: int
    candidate_tensors: int  # tensors with 2+ dimensions (1-D tensors are never projected)
    projected_params: int
    total_params: int

    def describe(self) -> str:
        share = self.projected_params / max(1, self.total_params)
        return (
            f"projection fires on {self.projected_tensors}/{self.candidate_tensors} "
            f"tensors with 2+ dims ({share:.0%} of parameters)"
        )


def _view_passes(rows_p: torch.Tensor, rows_g: torch.Tensor, delta: float, eps: float) -> bool:
    n = rows_p.shape[1]
    norm_p = rows_p.norm(dim=1).clamp_min(eps)
    norm_g = rows_g.norm(dim=1).clamp_min(eps)
    cos = ((rows_p * rows_g).sum(1) / (norm_p * norm_g)).abs()
    return bool(cos.max() < delta / math.sqrt(n))


def projection_census(
    params: list[torch.Tensor], grads: list[torch.Tensor], *, delta: float = 0.1, eps: float = 1e-8
) -> ProjectionCensus:
    """Apply the authors' test (channel view, then layer view; docs/algorithm.md) in float64."""
    fired = candidates = fired_params = 0
    for p, g in zip(params, grads):
        if p.dim() < 2:
            continue
        candidates += 1
        rp = p.detach().cpu().double().reshape(p.shape[0], -1)
        rg = g.detach().cpu().double().reshape(p.shape[0], -1)
        if _view_passes(rp, rg, delta, eps) or _view_passes(
            rp.reshape(1, -1), rg.reshape(1, -1), delta, eps
        ):
            fired += 1
            fired_params += p.numel()
    return ProjectionCensus(fired, candidates, fired_params, sum(p.numel() for p in params))
