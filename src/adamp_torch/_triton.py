"""Fused Triton step for AdamP and SGDP: three launches per batch, no host sync.

What the optimizers' dispatch calls:

* :func:`available` ``(device) -> bool``: triton imports and the kernels run there (CUDA
  with compiled kernels; CPU through the interpreter, ``TRITON_INTERPRET=1`` set before
  triton was first imported).
* :func:`unsupported_reason` ``(param, grad, *state) -> str | None``: ``None`` when the
  kernels take this tensor, its gradient and its state tensors, else a short reason;
  such tensors go to the existing path in the same step.
* :func:`adamp_step` / :func:`sgdp_step`: one step, in place, over lists of tensors that
  share one device and dtype (the caller groups them), each accepted by
  :func:`unsupported_reason`. Same arguments and numbers as
  :func:`adamp_torch.functional.adamp` / :func:`~adamp_torch.functional.sgdp`.

Each call is three kernel launches whatever the number of tensors (two when no tensor
has two or more dimensions): statistics, decision, apply (see ``_triton_kernels``).
Storage may be float32, float64, bfloat16 or float16; the math runs in float32 (float64
for float64 storage) and each result is rounded once to the storage dtype, so a
low-precision step equals "upcast, fp32 math, round". With bfloat16/float16 storage the
apply pass recomputes the new state from the values the statistics pass read, instead of
reading back the rounded state (one more read, the reference's rounding).

Nothing is read back to the host: the learning rate may be a 0-dim tensor on the device,
the step counts are incremented on the device, and the tables the kernels need (work
items, per-tensor metadata, tensor addresses) and their O(rows) scratch are cached in a
:class:`Workspace`, keyed on the shapes and the addresses. After one warm-up step with the
same tensors a step allocates and copies nothing, so it can be captured in a CUDA graph.

Layout: axis 0 is the output channel; each tensor is seen as ``rows = shape[0]`` rows of
``numel / rows`` elements (one row for tensors with fewer than two dimensions, which are
never projected). A tensor is taken when its rows are contiguous blocks in that order
(contiguous, or e.g. ``channels_last``) and its gradient and state have the same strides.
"""

from __future__ import annotations

import importlib
import math
import os
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ._layout import Scalar, compute_dtype, kernel_unfit

__all__ = [
    "BRANCHES",
    "DEFAULT_TILING",
    "Plan",
    "Tiling",
    "Workspace",
    "adamp_step",
    "available",
    "import_error",
    "interpreted",
    "plan",
    "sgdp_step",
    "unsupported_reason",
]

#: Branch codes the decide pass writes (``branches`` argument): index -> name.
BRANCHES = ("none", "channel", "layer")

_DTYPES = {
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}
_LOW_PRECISION = (torch.bfloat16, torch.float16)


# -- triton, imported on first use -----------------------------------------------------------

_kernel_module: ModuleType | None = None
_import_error: str | None = None


def _kernels() -> ModuleType | None:
    """The kernel module, imported on first use (``None`` if triton does not import)."""
    global _kernel_module, _import_error
    if _kernel_module is None and _import_error is None:
        try:
            _kernel_module = importlib.import_module("adamp_torch._triton_kernels")
        except Exception as exc:  # triton missing or broken: the kernels are unavailable
            _import_error = f"{type(exc).__name__}: {exc}"
    return _kernel_module


def import_error() -> str | None:
    """Why the kernel module did not import (``None``: it did, or was not tried yet)."""
    return _import_error


def interpreted() -> bool:
    """Whether the kernels run (or, not yet imported, would run) in triton's interpreter.

    ``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is defined, so once the kernel
    module is imported its mode is fixed.
    """
    if _kernel_module is not None:
        return bool(_kernel_module.INTERPRETED)
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device | str) -> bool:
    """Whether the kernels can run on ``device``: triton imports, and the device is CUDA
    (compiled kernels) or CPU (interpreted kernels: ``TRITON_INTERPRET=1``). The
    interpreter is not used on CUDA tensors: the kernels read addresses from tables."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        return False
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False  # checked first: importing triton for nothing costs a second
    if _kernels() is None:
        return False
    if device.type == "cuda":
        return not interpreted() and torch.cuda.is_available()
    return interpreted()


def unsupported_reason(param: Tensor, grad: Tensor, *state: Tensor) -> str | None:
    """``None`` if the kernels take ``param`` with ``grad`` and ``state``, else why not:
    on a device where :func:`available`, the layouts of :func:`_layout.kernel_unfit`."""
    if not available(param.device):
        return f"no Triton kernels on {param.device} here"
    return kernel_unfit(param, grad, *state)


# -- plans: work items and per-tensor metadata -------------------------------------------------


@dataclass(frozen=True)
class Tiling:
    """Block sizes (powers of two). A work item is up to ``rows`` short rows, or a chunk of
    ``chunk_tiles * rows * cols`` elements of a row with at least ``rows * cols``."""

    rows: int = 16
    cols: int = 64
    chunk_tiles: int = 4
    decide_rows: int = 128
    """Rows per block in the decide pass."""

    @property
    def tile(self) -> int:
        return self.rows * self.cols


DEFAULT_TILING = Tiling()


def geometry(shape: Sequence[int]) -> tuple[int, int, bool]:
    """``(rows, row length, projectable)``: axis 0 is the rows of a tensor with two or
    more dimensions; anything else is one row that is never projected."""
    numel = math.prod(shape)
    if len(shape) >= 2:
        return shape[0], numel // shape[0] if shape[0] else 0, True
    return 1, numel, False


@dataclass(frozen=True)
class Plan:
    """Work items and metadata for a list of shapes (see ``_triton_kernels`` for fields)."""

    items: tuple[tuple[int, ...], ...]
    """Every tensor's work items (the statistics pass)."""
    apply_items: tuple[tuple[int, ...], ...]
    """The projectable tensors' work items (the apply pass)."""
    meta: tuple[tuple[int, ...], ...]
    slots: int
    """Partial-sum slots (rows x chunks over the projectable tensors)."""
    rows: int
    """Coefficient rows (over the projectable tensors)."""


def plan(shapes: Sequence[Sequence[int]], tiling: Tiling = DEFAULT_TILING) -> Plan:
    """The work items and metadata of tensors with these shapes (pure Python: testable
    for shapes far too large to allocate)."""
    br, bc, tile = tiling.rows, tiling.cols, tiling.tile
    chunk = tiling.chunk_tiles * tile
    items: list[tuple[int, ...]] = []
    apply_items: list[tuple[int, ...]] = []
    meta: list[tuple[int, ...]] = []
    slots = rows_total = 0
    for t, shape in enumerate(shapes):
        rows, row_len, projectable = geometry(tuple(shape))
        numel = rows * row_len
        own: list[tuple[int, ...]] = []
        base = slots if projectable else 0
        first_row = rows_total if projectable else 0
        finish = 0 if projectable else 1
        if row_len >= tile:  # a long row: chunks of `chunk` elements, tiles along the row
            chunks = -(-row_len // chunk)
            stored = 1 if projectable else 0
            for r in range(rows):
                for ci in range(chunks):
                    c0, c1 = ci * chunk, min(row_len, (ci + 1) * chunk)
                    own.append((
                        t, r * row_len + c0, bc, bc, tile, c1 - c0, br, -(-(c1 - c0) // tile),
                        base + r * chunks + ci, 0, stored, 1, finish, first_row + r, 0, 0,
                    ))  # fmt: skip
        else:  # short rows: up to `br` rows per item, one row per tile row
            chunks = 1
            n_iter = -(-row_len // bc)
            for r0 in range(0, rows, br):
                nr = min(br, rows - r0)
                own.append((
                    t, r0 * row_len, row_len, 0, bc, row_len, nr, n_iter,
                    base + r0, 1, nr if projectable else 0, 0, finish, first_row + r0, 1, 0,
                ))  # fmt: skip
        items += own
        meta.append((rows, row_len, chunks, base, first_row, int(projectable), numel, 0))
        if projectable:
            apply_items += own
            slots += rows * chunks
            rows_total += rows
    return Plan(tuple(items), tuple(apply_items), tuple(meta), slots, rows_total)


# -- workspace: device tables and scratch, cached ------------------------------------------------


def _to_device(values: list[int], device: torch.device) -> Tensor:
    """An int64 table on ``device`` (on CUDA through pinned memory: no host sync)."""
    host = torch.tensor(values, dtype=torch.int64)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def _flat(rows: Sequence[tuple[int, ...]]) -> list[int]:
    return [x for row in rows for x in row]


@dataclass
class _Layout:
    """Device tables and scratch of one (device, compute dtype, shapes, tiling)."""

    plan: Plan
    items: Tensor
    apply_items: Tensor
    meta: Tensor
    partials: Tensor
    """``4 * slots``: partial sums of PP, GG, PG, PU per (row, chunk)."""
    coef: Tensor
    """Per-row coefficient of the weight row subtracted from the update."""
    decay: Tensor
    """Per-tensor weight-decay factor."""
    branch: Tensor
    """Per-tensor branch code (int32, see :data:`BRANCHES`)."""


class Workspace:
    """Device tables and scratch kept between steps (least recently used are dropped).

    Not optimizer state: it may be dropped at any time. One workspace serves one stream
    at a time (calls with the same shapes share scratch).
    """

    def __init__(self, tiling: Tiling = DEFAULT_TILING, max_entries: int = 8) -> None:
        self.tiling = tiling
        self.max_entries = max_entries
        self._layouts: OrderedDict[Hashable, _Layout] = OrderedDict()
        self._pointers: OrderedDict[Hashable, Tensor] = OrderedDict()

    def _remember(self, cache: OrderedDict[Hashable, Any], key: Hashable, value: Any) -> None:
        cache[key] = value
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def layout(self, params: Sequence[Tensor], cdt: torch.dtype) -> _Layout:
        """The tables and scratch for these parameters' shapes."""
        device = params[0].device
        shapes = tuple(tuple(p.shape) for p in params)
        key = (device, cdt, shapes, self.tiling)
        found = self._layouts.get(key)
        if found is not None:
            self._layouts.move_to_end(key)
            return found
        p = plan(shapes, self.tiling)
        found = _Layout(
            p,
            _to_device(_flat(p.items), device),
            _to_device(_flat(p.apply_items) or [0], device),
            _to_device(_flat(p.meta), device),
            torch.empty(4 * max(p.slots, 1), dtype=cdt, device=device),
            torch.empty(max(p.rows, 1), dtype=cdt, device=device),
            torch.empty(len(shapes), dtype=cdt, device=device),
            torch.empty(len(shapes), dtype=torch.int32, device=device),
        )
        self._remember(self._layouts, key, found)
        return found

    def pointers(self, lists: Sequence[Sequence[Tensor]]) -> Tensor:
        """The address table of these tensors: one row per tensor, one column per list."""
        device = lists[0][0].device
        addresses = [t.data_ptr() for row in zip(*lists) for t in row]
        key = (device, len(lists), tuple(addresses))
        found = self._pointers.get(key)
        if found is None:
            found = _to_device(addresses, device)
            self._remember(self._pointers, key, found)
        else:
            self._pointers.move_to_end(key)
        return found

    def clear(self) -> None:
        """Drop every table and buffer."""
        self._layouts.clear()
        self._pointers.clear()


_DEFAULT_WORKSPACE = Workspace()


# -- the steps ------------------------------------------------------------------------------


def _check(
    name: str, params: Sequence[Tensor], *lists: Sequence[Tensor]
) -> tuple[ModuleType, torch.device, torch.dtype]:
    """Lengths, one device and dtype, and the kernel module."""
    for other in lists:
        if len(other) != len(params):
            raise ValueError(f"{name}: all tensor lists must have the same length")
    device, dtype = params[0].device, params[0].dtype
    if dtype not in _DTYPES:
        raise TypeError(f"{name}: dtype {dtype} is not supported by the Triton kernels")
    for p in params:
        if p.device != device or p.dtype != dtype:
            raise ValueError(f"{name}: tensors must share one device and dtype (group them)")
    k = _kernels()
    if k is None or not available(device):
        raise RuntimeError(
            f"{name}: the Triton kernels cannot run on {device}"
            + (f" ({_import_error})" if _import_error else "")
            + (
                "; on CPU they need TRITON_INTERPRET=1 set before triton is imported"
                if device.type == "cpu"
                else ""
            )
        )
    return k, device, dtype


def _lr_args(lr: Scalar, device: torch.device, fallback: Tensor) -> tuple[Tensor, float, bool]:
    """``(pointer, value, is_pointer)``: a tensor lr on the device is read there."""
    if not isinstance(lr, Tensor):
        return fallback, float(lr), False
    if lr.device == device:
        value = lr if lr.is_floating_point() else lr.to(torch.float64)
        return value, 0.0, True
    if lr.device.type == "cpu":
        return fallback, float(lr), False  # a host value: reading it syncs nothing
    return lr.to(device), 0.0, True


def _log(beta: float) -> float:
    """``log(beta)`` for the bias corrections ``1 - exp(t * log(beta))``."""
    return math.log(beta) if beta > 0 else -math.inf


def _branch_out(branches: Tensor | None, layout: _Layout, n: int) -> Tensor:
    if branches is None:
        return layout.branch
    if branches.dtype != torch.int32 or branches.numel() != n or not branches.is_contiguous():
        raise ValueError(f"branches must be a contiguous int32 tensor of {n} elements")
    return branches


def adamp_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
    maximize: bool,
    branches: Tensor | None = None,
    workspace: Workspace | None = None,
) -> None:
    """One AdamP step over tensors of one device and dtype, in place (three launches).

    Args:
        params, grads, exp_avgs, exp_avg_sqs: as in :func:`adamp_torch.functional.adamp`;
            every tensor accepted by :func:`unsupported_reason`.
        state_steps: 0-dim float32 step counts on the same device, incremented here
            before use.
        lr: a float, or a 0-dim tensor (read on the device when it is on the params'
            device; a CPU tensor's value is read on the host).
        beta1, beta2, eps, weight_decay, delta, wd_ratio, nesterov, maximize: as in
            :func:`adamp_torch.functional.adamp`.
        branches: optional contiguous int32 tensor of ``len(params)`` elements on the
            device; receives each tensor's branch (index into :data:`BRANCHES`).
        workspace: cached tables and scratch (default: one shared by the module).
    """
    if not params:
        return
    k, device, dtype = _check("adamp_step", params, grads, exp_avgs, exp_avg_sqs, state_steps)
    for s in state_steps:
        if s.dtype != torch.float32 or s.device != device or s.numel() != 1:
            raise ValueError("adamp_step: state_steps must be one-element float32 tensors")
    ws = workspace if workspace is not None else _DEFAULT_WORKSPACE
    cdt = compute_dtype(dtype)
    layout = ws.layout(params, cdt)
    ptrs = ws.pointers([params, grads, exp_avgs, exp_avg_sqs, state_steps])
    lr_ptr, lr_value, lr_is_ptr = _lr_args(lr, device, ptrs)
    n, tiling = len(params), ws.tiling
    dt, ct = k.DTYPES[_DTYPES[dtype]], k.DTYPES[_DTYPES[cdt]]
    defer = dtype in _LOW_PRECISION
    beta1, beta2 = float(beta1), float(beta2)
    common: dict[str, Any] = dict(DT=dt, CDT=ct, BR=tiling.rows, BC=tiling.cols)
    common.update(
        NESTEROV=bool(nesterov), MAXIMIZE=bool(maximize), DEFER=defer, LR_IS_PTR=lr_is_ptr
    )
    slots = max(layout.plan.slots, 1)
    k.adamp_stats[(len(layout.plan.items),)](
        layout.items, ptrs, layout.partials, slots, lr_ptr,
        lr_value, beta1, beta2, 1.0 - beta1, 1.0 - beta2, _log(beta1), _log(beta2),
        float(eps), float(weight_decay),
        **common,
    )  # fmt: skip
    k.adamp_decide[(n,)](
        layout.meta, ptrs, layout.partials, slots, layout.coef, layout.decay,
        _branch_out(branches, layout, n), lr_ptr, lr_value, float(eps), float(weight_decay),
        float(delta), float(wd_ratio),
        CDT=ct, DB=tiling.decide_rows, LR_IS_PTR=lr_is_ptr,
    )  # fmt: skip
    if layout.plan.apply_items:
        k.adamp_apply[(len(layout.plan.apply_items),)](
            layout.apply_items, ptrs, layout.coef, layout.decay, lr_ptr,
            lr_value, beta1, beta2, 1.0 - beta1, 1.0 - beta2, _log(beta1), _log(beta2),
            float(eps),
            **common,
        )  # fmt: skip


def sgdp_step(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    variant: str,
    maximize: bool,
    branches: Tensor | None = None,
    workspace: Workspace | None = None,
) -> None:
    """One SGDP step over tensors of one device and dtype, in place (three launches).

    Args:
        params, grads, momentum_buffers: as in :func:`adamp_torch.functional.sgdp`; every
            tensor accepted by :func:`unsupported_reason`.
        lr: a float or a 0-dim tensor (see :func:`adamp_step`).
        momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio, maximize: as in
            :func:`adamp_torch.functional.sgdp`.
        variant: ``"authors"`` (without Nesterov the buffer itself is projected) or
            ``"paper"`` (only the update is).
        branches, workspace: see :func:`adamp_step`.
    """
    if variant not in ("authors", "paper"):
        raise ValueError(f"variant must be 'authors' or 'paper', got {variant!r}")
    if not params:
        return
    k, device, dtype = _check("sgdp_step", params, grads, momentum_buffers)
    ws = workspace if workspace is not None else _DEFAULT_WORKSPACE
    cdt = compute_dtype(dtype)
    layout = ws.layout(params, cdt)
    ptrs = ws.pointers([params, grads, momentum_buffers])
    lr_ptr, lr_value, lr_is_ptr = _lr_args(lr, device, ptrs)
    n, tiling = len(params), ws.tiling
    dt, ct = k.DTYPES[_DTYPES[dtype]], k.DTYPES[_DTYPES[cdt]]
    project_buffer = variant == "authors" and not nesterov
    # Recomputing the buffer in the apply pass costs no more bytes unless only the plain
    # update is projected; low precision always recomputes (the reference's rounding).
    defer = dtype in _LOW_PRECISION or project_buffer or bool(nesterov)
    momentum = float(momentum)
    common: dict[str, Any] = dict(DT=dt, CDT=ct, BR=tiling.rows, BC=tiling.cols)
    common.update(
        NESTEROV=bool(nesterov), MAXIMIZE=bool(maximize), DEFER=defer, LR_IS_PTR=lr_is_ptr
    )
    slots = max(layout.plan.slots, 1)
    omd = 1.0 - float(dampening)
    k.sgdp_stats[(len(layout.plan.items),)](
        layout.items, ptrs, layout.partials, slots, lr_ptr,
        lr_value, momentum, omd, float(weight_decay),
        **common,
    )  # fmt: skip
    k.sgdp_decide[(n,)](
        layout.meta, layout.partials, slots, layout.coef, layout.decay,
        _branch_out(branches, layout, n), lr_ptr, lr_value, momentum, float(eps),
        float(weight_decay), float(delta), float(wd_ratio),
        CDT=ct, DB=tiling.decide_rows, LR_IS_PTR=lr_is_ptr,
    )  # fmt: skip
    if layout.plan.apply_items:
        k.sgdp_apply[(len(layout.plan.apply_items),)](
            layout.apply_items, ptrs, layout.coef, layout.decay, lr_ptr,
            lr_value, momentum, omd, PROJECT_BUFFER=project_buffer,
            **common,
        )  # fmt: skip
