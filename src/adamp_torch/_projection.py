"""The half of an AdamP / SGDP step that both optimizers share: test, project, decay, apply.

The optimizer-specific half produces, for each tensor, the unprojected direction ``Z``
(AdamP: the whole Adam step ``-lr / bc1 * m / denom``; SGDP: the momentum direction).
What remains is, per output-channel row ``r`` of a parameter ``P`` (SPEC.md sections 1-3)::

    Z_r'  = Z_r - coef_r * P_r                     coef_r = <P_r, Z_r> / (|P_r| + eps)^2
    P_new = P * (1 - decay * ratio) + alpha * Z'
          = P * (1 - decay * ratio - alpha * coef) + alpha * Z

where ``coef`` is zero for rows of tensors that are not projected, and uses the whole
tensor as one row when the layer view was chosen. Every statistic the decision and the
projection need (``|P_r|``, ``|G_r|``, ``<P_r, G_r>``, ``<P_r, Z_r>``) is one reduction per
tensor; the decision itself, the layer-view sums and the coefficients are computed for all
tensors of a group at once on one flat vector of rows, with ``torch.where`` instead of
Python branches, so nothing is read back to the host. The update is then one pass over
each tensor.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._layout import Frame

__all__ = ["Plan", "Workspace", "project_and_apply"]

Scalar = float | Tensor


@dataclass(frozen=True)
class Plan:
    """Per-group constants: which rows belong to which tensor, and the thresholds."""

    frames: tuple[Frame, ...]
    rows: tuple[int, ...]
    segment: Tensor
    """``(total rows,)`` int64: the tensor each row belongs to."""
    projectable: Tensor
    """``(tensors,)`` bool: two or more dimensions."""
    channel_threshold: Tensor
    """``(tensors,)``: ``delta / sqrt(row length)``."""
    layer_threshold: Tensor
    """``(tensors,)``: ``delta / sqrt(numel)``."""

    @staticmethod
    def build(
        frames: Sequence[Frame], delta: float, dtype: torch.dtype, device: torch.device
    ) -> Plan:
        """Constants for ``frames`` (created on ``device``; cache them to avoid copies)."""
        rows = tuple(f.rows for f in frames)

        def threshold(n: int) -> float:
            return delta / math.sqrt(n) if n > 0 else math.inf

        counts = torch.tensor(rows, dtype=torch.int64, device=device)
        segment = torch.repeat_interleave(
            torch.arange(len(frames), device=device), counts, output_size=sum(rows)
        )
        return Plan(
            tuple(frames),
            rows,
            segment,
            torch.tensor([f.projectable for f in frames], dtype=torch.bool, device=device),
            torch.tensor([threshold(f.row_length) for f in frames], dtype=dtype, device=device),
            torch.tensor(
                [threshold(f.row_length * f.shape3[1]) for f in frames], dtype=dtype, device=device
            ),
        )


class Workspace:
    """Buffers and per-group constants an optimizer keeps between steps.

    Reusing scratch memory matters on CPU, where every fresh large temporary pays page
    faults. A workspace is not optimizer state: it is never saved and can be dropped at
    any time. Under ``torch.compile`` it is not used (the compiler plans memory itself).
    """

    def __init__(self) -> None:
        self._buffers: dict[Hashable, Tensor] = {}
        self._plans: dict[Hashable, Plan] = {}

    def at_least(
        self, key: Hashable, numel: int, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """A flat uninitialised buffer of at least ``numel`` elements (it only grows)."""
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = torch.empty((numel,), dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf

    def plan(
        self, frames: Sequence[Frame], delta: float, dtype: torch.dtype, device: torch.device
    ) -> Plan:
        """The :class:`Plan` for these frames, built once per distinct layout."""
        key = (tuple(frames), delta, dtype, device)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.build(frames, delta, dtype, device)
        return plan

    def clear(self) -> None:
        """Drop every buffer and constant."""
        self._buffers.clear()
        self._plans.clear()


def _row_statistics(
    frame: Frame, p: Tensor, g: Tensor, z: Tensor, scratch: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``|P_r|``, ``|G_r|``, ``<P_r, G_r>``, ``<P_r, Z_r>`` of one tensor's rows, ``(R,)`` each.

    Contiguous rows (the common case) take the inner products as a batched product of
    ``(R, 1, B)`` by ``(R, B, 1)`` views: it reads each input once and writes nothing large
    (eager torch has no reduction kernel over a product of two inputs; on CPU this is about
    1.5x faster than a product into a buffer followed by a sum). Other layouts put the
    products into ``scratch`` (a flat buffer at least as large as the tensor; a fresh
    temporary without one, which on CPU pays page faults) and sum them.
    """
    p_rows, g_rows, z_rows = frame.row_view(p), frame.row_view(g), frame.row_view(z)
    if frame.rows_first:
        dims: tuple[int, ...] = (1, 2)
        pg, pz = (torch.bmm(p_rows, y.transpose(1, 2)).view(-1) for y in (g_rows, z_rows))
    else:
        dims = (0, 2)
        product = None if scratch is None else scratch[: p.numel()].view(p_rows.shape)
        pg, pz = (torch.mul(p_rows, y, out=product).sum(dim=dims) for y in (g_rows, z_rows))
    return (
        torch.linalg.vector_norm(p_rows, dim=dims),
        torch.linalg.vector_norm(g_rows, dim=dims),
        pg,
        pz,
    )


def _as_tensor(value: Scalar, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.full((), value, dtype=like.dtype, device=like.device)


def project_and_apply(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    directions: Sequence[Tensor],
    plan: Plan,
    *,
    alpha: Scalar,
    decay: Scalar,
    wd_ratio: float,
    eps: float,
    project_direction: bool = False,
    scratch: Tensor | None = None,
) -> None:
    """Finish a step in place: ``P <- P * (1 - decay * ratio) + alpha * projected(Z)``.

    Args:
        params: the parameters as contiguous tensors in kernel shape (see ``_layout``),
            updated in place.
        grads: the raw gradients in the same layout (the scale-invariance test compares
            them with the weights).
        directions: the unprojected directions ``Z`` in the same layout.
        plan: row bookkeeping and thresholds for these tensors (:meth:`Plan.build`).
        alpha: factor on ``Z`` (``1`` for AdamP, whose ``Z`` already holds the step;
            ``-lr`` for SGDP). A float or a 0-dim tensor.
        decay: weight decay factor before the ratio (``lr * weight_decay``, or
            ``lr * weight_decay / (1 - momentum)`` for SGDP). A float or a 0-dim tensor.
        wd_ratio: factor on ``decay`` for tensors that are projected.
        eps: the eps of the cosine (``max(norm, eps)``) and of ``P / (|P| + eps)``.
        project_direction: also store the projected direction back into ``directions``
            (SGDP's authors variant, where the direction is the momentum buffer).
        scratch: optional flat buffer with at least as many elements as the largest
            projectable tensor, reused for the products of the row inner products.
    """
    frames = plan.frames
    like = params[0]
    zero = like.new_zeros(1)
    stats: list[list[Tensor]] = [[], [], [], []]
    for frame, p, g, z in zip(frames, params, grads, directions):
        values = _row_statistics(frame, p, g, z, scratch) if frame.projectable else (zero,) * 4
        for out, value in zip(stats, values):
            out.append(value)
    p_norm, g_norm, pg, pz = (torch.cat(s) for s in stats)
    seg = plan.segment
    count = len(frames)

    # Channel view: the largest |cos(G_r, P_r)| of each tensor against delta / sqrt(n).
    cos = pg.abs() / (p_norm.clamp_min(eps) * g_norm.clamp_min(eps))
    max_cos = like.new_zeros(count).scatter_reduce_(0, seg, cos, "amax")
    channel = plan.projectable & (max_cos < plan.channel_threshold)
    # Layer view: sums over a tensor's rows give the statistics of the flattened tensor.
    sums = like.new_zeros(count, 3).index_add_(0, seg, torch.stack((p_norm * p_norm, pg, pz), 1))
    layer_p_sq, layer_pg, layer_pz = sums.unbind(1)
    layer_g_norm = like.new_zeros(count).index_add_(0, seg, g_norm * g_norm).sqrt()
    layer_p_norm = layer_p_sq.sqrt()
    layer_cos = layer_pg.abs() / (layer_p_norm.clamp_min(eps) * layer_g_norm.clamp_min(eps))
    layer = plan.projectable & ~channel & (layer_cos < plan.layer_threshold)

    coef_channel = pz / (p_norm + eps).square()
    coef_layer = (layer_pz / (layer_p_norm + eps).square())[seg]
    coef = torch.where(channel[seg], coef_channel, torch.where(layer[seg], coef_layer, 0.0))
    ones = torch.ones_like(coef)
    ratio = torch.where((channel | layer)[seg], ones * wd_ratio, ones)
    multiplier = 1.0 - _as_tensor(decay, like) * ratio
    if not project_direction:
        multiplier = multiplier - _as_tensor(alpha, like) * coef

    unit_alpha = not isinstance(alpha, Tensor) and alpha == 1.0
    alpha_t = alpha if not isinstance(alpha, Tensor) else _as_tensor(alpha, like)
    fixed = [i for i, f in enumerate(frames) if not f.projectable]
    if fixed:
        # One-dimensional tensors are never projected: every one of them gets the same
        # factor ``1 - decay``, so they are updated in two batched calls, not one per tensor.
        _apply_unprojected(
            [params[i] for i in fixed], [directions[i] for i in fixed], decay, alpha_t, like
        )
    # With the direction projected in place and no weight decay, every factor is exactly 1.
    unit_factor = project_direction and not isinstance(decay, Tensor) and decay == 0.0
    factors = multiplier.split(plan.rows)
    shifts = coef.neg().split(plan.rows) if project_direction else factors
    for frame, p, z, m, c in zip(frames, params, directions, factors, shifts):
        if not frame.projectable:
            continue
        p, z, m = frame.row_view(p), frame.row_view(z), frame.column_view(m)
        if project_direction:
            z.addcmul_(p, frame.column_view(c))
        if unit_alpha:
            torch.addcmul(z, p, m, out=p)
            continue
        if not unit_factor:
            p.mul_(m)
        if isinstance(alpha_t, Tensor):
            p.addcmul_(z, alpha_t)
        else:
            p.add_(z, alpha=alpha_t)


def _apply_unprojected(
    params: list[Tensor], directions: list[Tensor], decay: Scalar, alpha: Scalar, like: Tensor
) -> None:
    """``P <- P * (1 - decay) + alpha * Z`` for tensors that are never projected."""
    if isinstance(decay, Tensor) or decay != 0.0:
        # A 0-dim tensor factor: on CPU, a float one costs a conversion per tensor.
        torch._foreach_mul_(params, 1.0 - _as_tensor(decay, like))
    if isinstance(alpha, Tensor):
        for p, z in zip(params, directions):
            p.addcmul_(z, alpha)
    else:
        torch._foreach_add_(params, directions, alpha=alpha)
