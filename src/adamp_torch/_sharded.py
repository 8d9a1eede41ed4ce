"""Sharded parameters (DTensor: FSDP2, tensor parallel, HSDP, and mixes of them).

A step works on each rank's local shard. The per-element math needs nothing else; the
scale-invariance test and the projection need sums over whole rows and whole tensors
(``docs/algorithm.md``), which are completed across ranks here:

* a placement ``Shard(d)`` with ``d >= 1`` (``RowwiseParallel``, ``Shard(1)``) splits every
  row, so the per-row sums ``<P_r, P_r>``, ``<G_r, G_r>``, ``<P_r, G_r>``, ``<P_r, Z_r>``
  are summed over that mesh dimension;
* ``Shard(0)`` / ``_StridedShard(0)`` (FSDP2, ``ColwiseParallel``) gives each rank whole
  rows, so only the per-tensor values are summed over it: the number of rows that fail
  the channel test (exact, and zero on a rank without rows) and the layer view's sums;
* ``Replicate`` (HSDP's replica dimension) is never reduced over: every replica already
  holds the same values.

The partial sums of every tensor are packed into one buffer per mesh dimension and reduced
with one ``all_reduce`` each (for all parameter groups of a step together, inside
:func:`one_reduction`), so every rank reaches the same decisions, with thresholds from the
global shapes. No weight is gathered and nothing is read on the host.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ._layout import Frame
from ._projection import Decision, Plan, _row_dot, cosine_from_sums, row_coefficients

__all__ = [
    "Sharding",
    "Statistics",
    "complete",
    "is_flat_shard",
    "localize",
    "one_reduction",
    "submit",
]


@dataclass(frozen=True)
class Sharding:
    """Where one parameter's statistics must be summed (see the module doc)."""

    mesh: Any
    """The parameter's ``DeviceMesh``."""
    shape: tuple[int, ...]
    """The global shape (thresholds use it, never the local shard's)."""
    row_dims: tuple[int, ...]
    """Mesh dimensions that split each row: per-row sums are summed over them."""
    tensor_dims: tuple[int, ...]
    """Mesh dimensions that split the rows among ranks: per-tensor values are summed."""


def _is_dtensor(t: Tensor) -> bool:
    # Checked by type before importing DTensor: plain tensors stay on the fast path.
    return type(t) not in (Tensor, torch.nn.Parameter) and _dtensor_type() in type(t).__mro__


def _dtensor_type() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


def is_flat_shard(t: Tensor) -> str | None:
    """Why ``t`` is a flattened shard that projection cannot use, or ``None``.

    FSDP1 (``FlatParameter``, and the original parameters it turns into views of a flat
    shard) and DeepSpeed ZeRO (partitioned parameters) hand the optimizer 1-D slices of
    several weights: the per-row test would silently never apply.
    """
    if getattr(t, "_is_flat_param", False) or getattr(t, "_fsdp_flattened", False):
        return "it belongs to an FSDP1 flat parameter"
    if hasattr(t, "ds_id"):
        return "it is a DeepSpeed ZeRO partitioned parameter"
    return None


def _sharding(p: Tensor) -> Sharding:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    row_dims: list[int] = []
    tensor_dims: list[int] = []
    for mesh_dim, placement in enumerate(p.placements):  # type: ignore[attr-defined]
        if isinstance(placement, (Shard, _StridedShard)):
            (tensor_dims if placement.dim == 0 else row_dims).append(mesh_dim)
        elif not isinstance(placement, Replicate):
            raise ValueError(
                f"AdamP/SGDP cannot step a parameter placed as {placement} (a parameter "
                "must be sharded or replicated, not a pending reduction)"
            )
    return Sharding(p.device_mesh, tuple(p.shape), tuple(row_dims), tuple(tensor_dims))  # type: ignore[attr-defined]


def localize(
    params: Sequence[Tensor], others: Sequence[Sequence[Tensor]]
) -> tuple[list[Tensor], list[list[Tensor]], list[Sharding | None]] | None:
    """The local shards of DTensor parameters and of their gradients and state.

    Returns ``None`` when no parameter is a DTensor; otherwise the parameters and each
    list of ``others`` with DTensors replaced by their local tensors (same memory: the
    step updates them in place), and each parameter's :class:`Sharding` (``None`` for a
    plain tensor).

    Raises:
        ValueError: a gradient or state tensor is not placed like its parameter, or a
            parameter has a placement that is not ``Shard`` or ``Replicate``.
    """
    if not any(_is_dtensor(p) for p in params):
        return None
    shardings: list[Sharding | None] = []
    local_params = []
    for p in params:
        if not _is_dtensor(p):
            shardings.append(None)
            local_params.append(p)
            continue
        shardings.append(_sharding(p))
        local_params.append(p.to_local())  # type: ignore[attr-defined]
    local_others = []
    for tensors in others:
        local = []
        for i, (p, t) in enumerate(zip(params, tensors)):
            if _is_dtensor(p) != _is_dtensor(t) or (
                _is_dtensor(p) and (t.placements != p.placements or t.device_mesh != p.device_mesh)  # type: ignore[attr-defined]
            ):
                raise ValueError(
                    f"tensor {i}: a gradient or state tensor is placed as "
                    f"{_placement(t)} but its parameter as {_placement(p)}"
                )
            local.append(t.to_local() if _is_dtensor(t) else t)  # type: ignore[attr-defined]
        local_others.append(local)
    return local_params, local_others, shardings


def _placement(t: Tensor) -> str:
    return str(tuple(t.placements)) if _is_dtensor(t) else "a plain tensor"  # type: ignore[attr-defined]


def batch_key(sharding: Sharding | None) -> object:
    """What tensors decided together must share: one device mesh per batch."""
    return None if sharding is None else id(sharding.mesh)


def _all_reduce(buffer: Tensor, mesh: Any, mesh_dim: int) -> None:
    dist.all_reduce(buffer, group=mesh.get_group(mesh_dim))


def _thresholds(frame: Frame, sharding: Sharding | None, delta: float) -> tuple[float, float]:
    """``delta / sqrt(row length)`` and ``delta / sqrt(numel)`` of the global tensor."""
    shape = frame.shape if sharding is None else sharding.shape
    numel = math.prod(shape)
    if numel == 0:
        return math.inf, math.inf
    return delta / math.sqrt(numel // shape[0]), delta / math.sqrt(numel)


class Statistics:
    """The partial sums of one batch of local shards: per row ``(R, 4)`` =
    ``<P,P>, <G,G>, <P,G>, <P,Z>`` for each projectable tensor, and per tensor ``(5,)`` =
    rows failing the channel test, then the four sums over the rows. :func:`complete`
    sums them over the ranks; :meth:`decide` then gives the decision and coefficients.

    ``params``, ``grads`` and ``directions`` are local shards in kernel layout; ``plan``
    was built from their frames (its thresholds are not used: the global shapes set them).
    Every rank of the mesh must build these with the same tensors in the same order.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        directions: Sequence[Tensor],
        plan: Plan,
        shardings: Sequence[Sharding | None],
        *,
        delta: float,
        eps: float,
    ):
        self.plan, self.eps = plan, eps
        like = params[0]
        self.like = like
        self.rows: dict[int, Tensor] = {}
        self.totals: dict[int, Tensor] = {}
        self.channel_threshold: dict[int, float] = {}
        self.layer_threshold = torch.full(
            (len(plan.frames),), math.inf, dtype=like.dtype, device=like.device
        )
        p_rows: list[Tensor | None] = []
        for i, frame in enumerate(plan.frames):
            if not frame.projectable:
                p_rows.append(None)
                continue
            p, g = frame.row_view(params[i]), frame.row_view(grads[i])
            z = frame.row_view(directions[i])
            p_rows.append(p)
            pairs = ((p, p), (g, g), (p, g), (p, z))
            self.rows[i] = torch.stack([_row_dot(frame, a, b, None).view(-1) for a, b in pairs], 1)
            self.channel_threshold[i], self.layer_threshold[i] = _thresholds(
                frame, shardings[i], delta
            )
        self.p_rows = tuple(p_rows)
        self.mesh: Any = next((s.mesh for s in shardings if s is not None), None)
        #: Mesh dimensions each tensor's per-row / per-tensor sums still need a sum over.
        self.row_todo = {i: set(_dims(shardings[i], "row")) for i in self.rows}
        self.total_todo = {i: set(_dims(shardings[i], "tensor")) for i in self.rows}
        self._totals_of_complete_rows()

    def _totals_of_complete_rows(self) -> None:
        for i, todo in self.row_todo.items():
            if todo or i in self.totals:
                continue
            pp, gg, pg, _ = self.rows[i].unbind(1)
            # "not below" rather than "at or above": a NaN cosine fails the test, as in
            # the reference, where ``max(cos) < threshold`` is then false.
            fails = ~(cosine_from_sums(pg, pp, gg, self.eps) < self.channel_threshold[i])
            sums = self.rows[i].sum(0)
            self.totals[i] = torch.cat((fails.sum().to(sums.dtype).view(1), sums))

    def pending(self, mesh_dim: int) -> list[tuple[dict[int, Tensor], int]]:
        """The sums ready for a sum over ``mesh_dim``: ``(store, tensor)`` pairs."""
        parts = [(self.rows, i) for i, dims in self.row_todo.items() if mesh_dim in dims]
        parts += [
            (self.totals, i)
            for i, dims in self.total_todo.items()
            if mesh_dim in dims and i in self.totals
        ]
        return parts

    def reduced(self, store: dict[int, Tensor], i: int, mesh_dim: int) -> None:
        (self.row_todo if store is self.rows else self.total_todo)[i].discard(mesh_dim)
        self._totals_of_complete_rows()

    @property
    def done(self) -> bool:
        return not any(self.row_todo.values()) and not any(self.total_todo.values())

    def decide(self) -> tuple[Decision, Tensor]:
        """The test and the per-row coefficients (as :func:`~adamp_torch._projection.decide`
        and :func:`~adamp_torch._projection.shift_coefficients`) from the complete sums."""
        plan, eps, like = self.plan, self.eps, self.like
        zeros = like.new_zeros((len(plan.frames), 5))
        totals = torch.stack([self.totals.get(i, zeros[i]) for i in range(len(plan.frames))])
        fails, layer_pp, layer_gg, layer_pg, layer_pz = totals.unbind(1)
        channel = plan.projectable & (fails == 0)
        layer_cos = cosine_from_sums(layer_pg, layer_pp, layer_gg, eps)
        layer = plan.projectable & ~channel & (layer_cos < self.layer_threshold)
        ordered = [self.rows[i] for i in sorted(self.rows)]
        per_row = torch.cat(ordered) if ordered else like.new_zeros((0, 4))
        decision = Decision(per_row[:, 0].sqrt(), channel, layer, layer_pp.sqrt(), self.p_rows)
        return decision, row_coefficients(per_row[:, 3], layer_pz, decision, plan, eps=eps)


def _dims(sharding: Sharding | None, kind: str) -> tuple[int, ...]:
    if sharding is None:
        return ()
    return sharding.row_dims if kind == "row" else sharding.tensor_dims


def complete(batches: Sequence[Statistics]) -> None:
    """Sum the partial statistics of ``batches`` over the ranks that hold other parts of
    each tensor: for each device mesh, one packed ``all_reduce`` per mesh dimension
    (more only for unusual mixes of placements)."""
    meshes: dict[int, list[Statistics]] = {}
    for stats in batches:
        if stats.mesh is not None:
            meshes.setdefault(id(stats.mesh), []).append(stats)
    for group in meshes.values():
        mesh = group[0].mesh
        # Dimensions that split rows first: the per-tensor totals need complete rows.
        order = sorted(
            range(mesh.ndim),
            key=lambda d: all(d not in dims for s in group for dims in s.row_todo.values()),
        )
        while not all(s.done for s in group):
            for mesh_dim in order:
                parts = [(s, store, i) for s in group for store, i in s.pending(mesh_dim)]
                if not parts:
                    continue
                buffer = torch.cat([store[i].reshape(-1) for _, store, i in parts])
                _all_reduce(buffer, mesh, mesh_dim)
                sizes = [store[i].numel() for _, store, i in parts]
                for (stats, store, i), piece in zip(parts, buffer.split(sizes)):
                    store[i] = piece.view_as(store[i])
                    stats.reduced(store, i, mesh_dim)


_deferred = threading.local()


@contextmanager
def one_reduction() -> Iterator[None]:
    """Within this context :func:`submit` holds batches back; at its end they are completed
    together (one ``all_reduce`` per mesh dimension for all of them, e.g. for every
    parameter group of a step), then finished in submission order."""
    if getattr(_deferred, "pending", None) is not None:  # nested: the outer one completes
        yield
        return
    _deferred.pending = []
    try:
        yield
        pending: list[tuple[Statistics, Callable[[Statistics], None]]] = _deferred.pending
    finally:
        _deferred.pending = None
    complete([stats for stats, _ in pending])
    for stats, finish in pending:
        finish(stats)


def submit(stats: Statistics, finish: Callable[[Statistics], None]) -> None:
    """Complete ``stats`` and call ``finish`` with them: now, or at the end of the
    enclosing :func:`one_reduction`."""
    pending = getattr(_deferred, "pending", None)
    if pending is None:
        complete([stats])
        finish(stats)
    else:
        pending.append((stats, finish))
