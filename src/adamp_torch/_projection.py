"""The half of an AdamP / SGDP step that both optimizers share: test, project, decay, apply.

The optimizer-specific half produces, for each tensor, the unprojected direction ``Z``
(AdamP: the whole Adam step ``-lr / bc1 * m / denom``; SGDP: the momentum direction).
What remains is, per output-channel row ``r`` of a parameter ``P`` (``docs/algorithm.md``)::

    Z_r'  = Z_r - coef_r * P_r                     coef_r = <P_r, Z_r> / (|P_r| + eps)^2
    P_new = P * (1 - decay * ratio) + alpha * Z'
          = P * (1 - decay * ratio - alpha * coef) + alpha * Z

where ``coef`` is zero for rows of tensors that are not projected, and uses the whole
tensor as one row when the layer view was chosen. Every statistic the decision and the
projection need (``|P_r|``, ``|G_r|``, ``<P_r, G_r>``, ``<P_r, Z_r>``) is one reduction per
tensor; the decision itself, the layer-view sums and the coefficients are computed for all
tensors of a group at once on one flat vector of rows, with ``torch.where`` instead of
Python branches, so nothing has to be read back to the host. The update is then one pass
over each tensor.

The work comes in pieces so that an optimizer can run them in either of two ways:

* :func:`decide` (the test, from ``P`` and ``G`` only), :func:`shift_coefficients`
  (``coef``, from ``<P_r, Z_r>``) and :func:`apply_update` (the pass over the tensors;
  :func:`project_in_place` when the projected direction is kept, as SGDP's buffer).
  :func:`project_and_apply` chains them with every decision left on the device: no host
  sync, fit for CUDA and for ``torch.compile``.
* With :meth:`Decision.on_host` the caller reads the per-tensor outcome back (free on
  CPU, where the values already are) and splits the tensors: the ones that are not
  projected need no ``<P_r, Z_r>`` and no per-row pass, so the optimizer finishes them
  with torch's fused one-pass AdamW / SGD kernels; only the projected ones go through
  :func:`shift_coefficients` and :func:`apply_update` (their ``tensors`` argument).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from ._layout import Frame, Scalar

T = TypeVar("T")

__all__ = [
    "Decision",
    "Plan",
    "Workspace",
    "apply_update",
    "cosine_from_sums",
    "decay_in_place",
    "decide",
    "project_and_apply",
    "project_in_place",
    "row_coefficients",
    "shift_coefficients",
]


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
        self._parts: dict[Hashable, Any] = {}

    def part(self, key: Hashable, make: Callable[[], T]) -> T:
        """A helper object kept with the workspace (the Triton kernels' tables), made by
        ``make`` on first use."""
        if key not in self._parts:
            self._parts[key] = make()
        return cast(T, self._parts[key])

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
        self._parts.clear()


SHORT_ROW = 16
"""Rows at most this long take a product and a sum instead of a batched matrix product:
one tiny product per row is mostly call overhead (about 50x a fused AdamW step on a
``(4M, 1)`` tensor)."""


def products_in_scratch(frame: Frame) -> bool:
    """Whether :func:`_row_dot` puts this tensor's products in scratch (a batched matrix
    product does not need any)."""
    return frame.projectable and (not frame.rows_first or frame.shape3[2] <= SHORT_ROW)


def _row_dot(frame: Frame, p_rows: Tensor, y_rows: Tensor, scratch: Tensor | None) -> Tensor:
    """``<P_r, Y_r>`` for every row of one tensor, shaped ``(R, 1, 1)`` (flatten after
    concatenating: one view instead of one per tensor), from :meth:`Frame.row_view` views.

    Contiguous rows (the common case) take the inner products as a batched product of
    ``(R, 1, B)`` by ``(R, B, 1)`` views: it reads each input once and writes nothing large
    (eager torch has no reduction kernel over a product of two inputs; on CPU this is about
    1.5x faster than a product into a buffer followed by a sum). Short rows and other
    layouts put the products into ``scratch`` (a flat buffer at least as large as the
    tensor; a fresh temporary without one, which on CPU pays page faults) and sum them.
    """
    if frame.rows_first and frame.shape3[2] > SHORT_ROW:
        # (transposing the (R, 1, B) view, not viewing as (R, B, 1): same memory, but
        # the strides of the transpose take a kernel about 2x faster on CPU)
        return torch.bmm(p_rows, y_rows.transpose(1, 2))
    product = None if scratch is None else scratch[: p_rows.numel()].view(p_rows.shape)
    product = torch.mul(p_rows, y_rows, out=product)
    if frame.rows_first:
        return product.sum(dim=2, keepdim=True)
    return product.sum(dim=(0, 2)).view(-1, 1, 1)


def _row_norm(frame: Frame, rows: Tensor) -> Tensor:
    """``|Y_r|`` for every row of one tensor, ``R`` values (flatten after concatenating),
    from a :meth:`Frame.row_view` view."""
    if frame.rows_first:  # one reduced dimension: a faster kernel than (1, 2)
        return torch.linalg.vector_norm(rows, dim=2)
    return torch.linalg.vector_norm(rows, dim=(0, 2)).view(-1, 1)


def _concat(parts: list[Tensor], like: Tensor) -> Tensor:
    """Per-row values of several tensors as one flat vector (empty without parts)."""
    return torch.cat(parts).view(-1) if parts else like.new_zeros(0)


def _per_tensor(per_row: Tensor, plan: Plan) -> tuple[Tensor, ...]:
    """A vector of per-row values split by tensor, each part shaped ``(R, 1, 1)`` (what
    :meth:`Frame.column_view` passes through for contiguous rows: no view per tensor)."""
    return per_row.view(-1, 1, 1).split(plan.rows)


def _as_tensor(value: Scalar, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.full((), value, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class Decision:
    """The scale-invariance test of one batch, on the device (see :func:`decide`)."""

    p_norm: Tensor
    """``(total rows,)``: ``|P_r|`` (only tensors with two or more dimensions have rows)."""
    channel: Tensor
    """``(tensors,)`` bool: projected with one row per output channel."""
    layer: Tensor
    """``(tensors,)`` bool: projected as one flattened row."""
    layer_p_norm: Tensor
    """``(tensors,)``: ``|P|`` of the whole tensor."""
    p_rows: tuple[Tensor | None, ...]
    """Each parameter's :meth:`Frame.row_view` (``None`` if not projectable), kept so that
    the later stages do not build them again."""

    @property
    def projected(self) -> Tensor:
        """``(tensors,)`` bool: projected by either view (weight decay scaled by the ratio)."""
        return self.channel | self.layer

    def rows(self, i: int) -> Tensor:
        """The row view of projectable parameter ``i``."""
        rows = self.p_rows[i]
        if rows is None:
            raise ValueError(f"tensor {i} of the batch is never projected: it has no rows")
        return rows

    def on_host(self) -> list[bool]:
        """Which tensors are projected, read back to the host.

        Free on CPU; on an accelerator it waits for the device (a host sync), and under
        ``torch.compile`` it breaks the graph, so callers use it on CPU only.
        """
        return [bool(x) for x in self.projected.tolist()]


def decide(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    plan: Plan,
    *,
    eps: float,
    scratch: Tensor | None = None,
) -> Decision:
    """Run the scale-invariance test for every tensor of a batch, on the device.

    Channel view: the largest ``|cos(G_r, P_r)|`` of a tensor against
    ``delta / sqrt(row length)``; failing that, the layer view: the cosine of the
    flattened tensors against ``delta / sqrt(numel)``. Tensors with fewer than two
    dimensions are never projected.

    Args:
        params: the parameters in kernel shape (see ``_layout``).
        grads: the raw gradients in the same layout.
        plan: row bookkeeping and thresholds for these tensors (:meth:`Plan.build`).
        eps: the cosine's ``max(norm, eps)``.
        scratch: optional flat buffer for the products of ``(A, R, B)`` row views.
    """
    like = params[0]
    stats: list[list[Tensor]] = [[], [], []]
    all_rows: list[Tensor | None] = []
    for frame, p, g in zip(plan.frames, params, grads):
        if not frame.projectable:  # no rows
            all_rows.append(None)
            continue
        p_rows, g_rows = frame.row_view(p), frame.row_view(g)
        all_rows.append(p_rows)
        stats[0].append(_row_norm(frame, p_rows))
        stats[1].append(_row_norm(frame, g_rows))
        stats[2].append(_row_dot(frame, p_rows, g_rows, scratch))
    p_norm, g_norm, pg = (_concat(s, like) for s in stats)
    seg = plan.segment
    count = len(plan.frames)

    cos = pg.abs() / (p_norm.clamp_min(eps) * g_norm.clamp_min(eps))
    max_cos = like.new_zeros(count).scatter_reduce_(0, seg, cos, "amax")
    channel = plan.projectable & (max_cos < plan.channel_threshold)
    # Layer view: sums over a tensor's rows give the statistics of the flattened tensor.
    sums = like.new_zeros(count, 3).index_add_(
        0, seg, torch.stack((p_norm * p_norm, g_norm * g_norm, pg), 1)
    )
    layer_p_norm, layer_g_norm = sums[:, 0].sqrt(), sums[:, 1].sqrt()
    layer_cos = sums[:, 2].abs() / (layer_p_norm.clamp_min(eps) * layer_g_norm.clamp_min(eps))
    layer = plan.projectable & ~channel & (layer_cos < plan.layer_threshold)
    return Decision(p_norm, channel, layer, layer_p_norm, tuple(all_rows))


def _selected(plan: Plan, tensors: Sequence[int] | None) -> Sequence[int]:
    return range(len(plan.frames)) if tensors is None else tensors


def shift_coefficients(
    directions: Sequence[Tensor],
    plan: Plan,
    decision: Decision,
    *,
    eps: float,
    tensors: Sequence[int] | None = None,
    scratch: Tensor | None = None,
) -> Tensor:
    """``coef`` of every row: how much of ``P_r`` the projection removes from ``Z_r``.

    ``<P_r, Z_r> / (|P_r| + eps)^2`` on rows of channel-projected tensors, the same ratio
    of the flattened tensor on every row of layer-projected ones, zero elsewhere.

    Args:
        directions: the unprojected directions ``Z`` in kernel shape (only the entries
            named by ``tensors`` are read).
        plan: as for :func:`decide`.
        decision: the outcome of :func:`decide` for the same tensors (it holds the
            weights' row views).
        eps: the projection's eps (``P / (|P| + eps)``).
        tensors: positions in the batch whose ``<P_r, Z_r>`` is computed (``None``: all);
            leave out tensors known not to be projected, their coefficients are zero.
        scratch: as for :func:`decide`.
    """
    like = decision.p_norm
    frames = plan.frames
    chosen = [i for i in _selected(plan, tensors) if frames[i].projectable]

    def dot(i: int) -> Tensor:
        return _row_dot(frames[i], decision.rows(i), frames[i].row_view(directions[i]), scratch)

    if len(chosen) == sum(f.projectable for f in frames):
        pz = _concat([dot(i) for i in chosen], like)
    else:  # a few tensors: the rows of the others stay zero
        pz = like.new_zeros(plan.segment.numel())
        parts = pz.split(plan.rows)
        for i in chosen:
            parts[i].copy_(dot(i).view(-1))
    layer_pz = like.new_zeros(len(plan.frames)).index_add_(0, plan.segment, pz)
    return row_coefficients(pz, layer_pz, decision, plan, eps=eps)


def row_coefficients(
    pz: Tensor, layer_pz: Tensor, decision: Decision, plan: Plan, *, eps: float
) -> Tensor:
    """``coef`` of every row from the sums ``<P_r, Z_r>`` (``pz``, per row) and ``<P, Z>``
    (``layer_pz``, per tensor): see :func:`shift_coefficients`."""
    seg = plan.segment
    coef_channel = pz / (decision.p_norm + eps).square()
    coef_layer = (layer_pz / (decision.layer_p_norm + eps).square())[seg]
    return torch.where(
        decision.channel[seg], coef_channel, torch.where(decision.layer[seg], coef_layer, 0.0)
    )


def cosine_from_sums(pg: Tensor, pp: Tensor, gg: Tensor, eps: float) -> Tensor:
    """``|cos|`` from the sums ``<p, g>``, ``|p|^2``, ``|g|^2`` (norms clamped at eps)."""
    return pg.abs() / (pp.sqrt().clamp_min(eps) * gg.sqrt().clamp_min(eps))


def apply_update(
    params: Sequence[Tensor],
    directions: Sequence[Tensor],
    plan: Plan,
    decision: Decision,
    coef: Tensor,
    *,
    alpha: Scalar,
    decay: Scalar,
    wd_ratio: float,
    project_direction: bool = False,
    tensors: Sequence[int] | None = None,
) -> None:
    """``P <- P * (1 - decay * ratio) + alpha * (Z - coef * P)`` in place, one pass per tensor.

    Args:
        params: the parameters in kernel shape, updated in place.
        directions: the unprojected directions ``Z`` in the same layout.
        plan: as for :func:`decide`.
        decision: the outcome of :func:`decide` (it sets ``ratio``: ``wd_ratio`` on
            projected tensors, 1 elsewhere).
        coef: per-row coefficients from :func:`shift_coefficients`.
        alpha: factor on ``Z`` (``1`` for AdamP, whose ``Z`` already holds the step;
            ``-lr`` for SGDP). A float or a 0-dim tensor.
        decay: weight decay factor before the ratio (``lr * weight_decay``, or
            ``lr * weight_decay / (1 - momentum)`` for SGDP). A float or a 0-dim tensor.
        wd_ratio: factor on ``decay`` for tensors that are projected.
        project_direction: also store the projected direction back into ``directions``
            (SGDP's authors variant, where the direction is the momentum buffer).
        tensors: positions in the batch to update (``None``: all).
    """
    like = params[0]
    frames = plan.frames
    seg = plan.segment
    ones = torch.ones_like(coef)
    ratio = torch.where(decision.projected[seg], ones * wd_ratio, ones)
    multiplier = 1.0 - _as_tensor(decay, like) * ratio
    if not project_direction:
        multiplier = multiplier - _as_tensor(alpha, like) * coef

    selected = _selected(plan, tensors)
    if project_direction:
        project_in_place(directions, plan, decision, coef, tensors=selected)
    unit_alpha = not isinstance(alpha, Tensor) and alpha == 1.0
    alpha_t = alpha if not isinstance(alpha, Tensor) else _as_tensor(alpha, like)
    fixed = [i for i in selected if not frames[i].projectable]
    if fixed:
        # One-dimensional tensors are never projected: every one of them gets the same
        # factor ``1 - decay``, so they are updated in two batched calls, not one per tensor.
        _apply_unprojected(
            [params[i] for i in fixed], [directions[i] for i in fixed], decay, alpha_t
        )
    # With the direction projected in place and no weight decay, every factor is exactly 1.
    unit_factor = project_direction and not isinstance(decay, Tensor) and decay == 0.0
    factors = _per_tensor(multiplier, plan)
    for i in selected:
        frame = frames[i]
        if not frame.projectable:
            continue
        p, z = decision.rows(i), frame.row_view(directions[i])
        m = frame.column_view(factors[i])
        if unit_alpha:
            torch.addcmul(z, p, m, out=p)
            continue
        if not unit_factor:
            p.mul_(m)
        if isinstance(alpha_t, Tensor):
            p.addcmul_(z, alpha_t)
        else:
            p.add_(z, alpha=alpha_t)


def project_in_place(
    directions: Sequence[Tensor],
    plan: Plan,
    decision: Decision,
    coef: Tensor,
    *,
    tensors: Sequence[int] | None = None,
) -> None:
    """``Z_r <- Z_r - coef_r * P_r`` in place for the selected tensors (``None``: all).

    SGDP's authors variant stores the projected direction: it is the momentum buffer.
    The weights ``P`` are the ones :func:`decide` saw (``decision``).
    """
    shifts = _per_tensor(coef.neg(), plan)
    for i in _selected(plan, tensors):
        frame = plan.frames[i]
        if frame.projectable:
            z = frame.row_view(directions[i])
            z.addcmul_(decision.rows(i), frame.column_view(shifts[i]))


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
    """Finish a step in place, every decision on the device (no host sync).

    :func:`decide`, :func:`shift_coefficients` and :func:`apply_update` over the whole
    batch; the arguments are theirs (``grads``: the raw gradients the test compares with
    the weights).
    """
    decision = decide(params, grads, plan, eps=eps, scratch=scratch)
    coef = shift_coefficients(directions, plan, decision, eps=eps, scratch=scratch)
    apply_update(
        params, directions, plan, decision, coef,
        alpha=alpha, decay=decay, wd_ratio=wd_ratio, project_direction=project_direction,
    )  # fmt: skip


def decay_in_place(params: list[Tensor], decay: Scalar) -> None:
    """``P <- P * (1 - decay)`` for every tensor, in one batched call (nothing if 0)."""
    if params and (isinstance(decay, Tensor) or decay != 0.0):
        # A 0-dim tensor factor: on CPU, a float one costs a conversion per tensor.
        torch._foreach_mul_(params, 1.0 - _as_tensor(decay, params[0]))


def _apply_unprojected(
    params: list[Tensor], directions: list[Tensor], decay: Scalar, alpha: Scalar
) -> None:
    """``P <- P * (1 - decay) + alpha * Z`` for tensors that are never projected."""
    decay_in_place(params, decay)
    if isinstance(alpha, Tensor):
        for p, z in zip(params, directions):
            p.addcmul_(z, alpha)
    else:
        torch._foreach_add_(params, directions, alpha=alpha)
