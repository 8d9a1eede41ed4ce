# Kernel parameters carry no Python type hints: triton reads their annotations itself.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
"""Triton kernels of the fused AdamP / SGDP step; the host side is ``adamp_torch._triton``.

Importing this module imports triton, and ``triton.jit`` reads ``TRITON_INTERPRET`` when
the kernels below are defined: set it before the first import to run them on CPU tensors.

A step is three launches over every tensor of a (device, dtype) batch:

1. ``*_stats``, one program per work item (up to ``BR`` short rows, or one chunk of a
   long row): updates the state, or with ``DEFER`` leaves that to the apply pass, and
   writes per-(row, chunk) partial sums of ``P*P``, ``G*G``, ``P*G`` and ``P*U`` (``U``:
   the unprojected update). Tensors that are never projected are finished here.
2. ``*_decide``, one program per tensor: adds the partial sums in a fixed order, takes the
   channel / layer / none decision, and writes a coefficient per row, the decay factor
   and the branch.
3. ``*_apply``, the work items of the projectable tensors: ``P <- P * decay - step * (U -
   coef_row * P)`` (and SGDP's buffer where it is kept projected).

Tables (built by the host, int64): ``items`` (:data:`ITEM_FIELDS` per work item, see
:data:`ITEM`), ``meta`` (:data:`META_FIELDS` per tensor, see :data:`META`) and ``ptrs``
(the addresses of each tensor's parameter, gradient and state, one row per tensor).
Float hyperparameters arrive as float64 and are rounded once to the compute dtype ``CDT``
(float64 for float64 storage, float32 otherwise); storage is loaded and stored as ``DT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar, cast

import triton
import triton.language as tl

__all__ = [
    "DTYPES",
    "INTERPRETED",
    "ITEM",
    "ITEM_FIELDS",
    "META",
    "META_FIELDS",
    "adamp_apply",
    "adamp_decide",
    "adamp_stats",
    "sgdp_apply",
    "sgdp_decide",
    "sgdp_stats",
    "tile_offsets",
]

F = TypeVar("F", bound=Callable[..., object])

ITEM = (
    "tensor",  # index into ptrs / meta / decay
    "offset",  # element offset of tile element (0, 0): first row * row length + first column
    "row_step",  # elements between tile rows: the row length (short rows) or BC (a long row)
    "col_step",  # columns between tile rows within the row: 0 (short rows) or BC
    "advance",  # columns per iteration: BC (short rows) or BR * BC (a long row)
    "columns",  # columns the item covers in its row(s)
    "tile_rows",  # valid tile rows: the item's rows (short rows) or BR
    "iterations",
    "slot",  # first partial-sum slot: first row * chunks + chunk (after the tensor's base)
    "slot_step",  # slots between stored rows: 1 (short rows; one chunk) or 0
    "store_rows",  # partial sums stored: the item's rows, 1 (a long row), 0 (not projectable)
    "long",  # 1: the whole tile is one row's chunk (its sums add up to one slot)
    "finish",  # 1: never projected, the statistics pass writes the result
    "coef",  # coefficient row of tile row 0
    "coef_step",  # coefficient rows between tile rows: 1 (short rows) or 0
    "unused",
)
"""Fields of a work item, in order."""
ITEM_FIELDS = len(ITEM)

META = ("rows", "row_length", "chunks", "slot", "coef", "projectable", "numel", "unused")
"""Fields of a tensor's metadata, in order (``slot`` / ``coef``: its first partial slot
and coefficient row)."""
META_FIELDS = len(META)

DTYPES = {"fp32": tl.float32, "fp64": tl.float64, "bf16": tl.bfloat16, "fp16": tl.float16}
"""Triton dtypes by short name (the host maps torch dtypes to these names)."""

_ITEM = tl.constexpr(ITEM_FIELDS)
_META = tl.constexpr(META_FIELDS)
_NONE = tl.constexpr(0)
_CHANNEL = tl.constexpr(1)
_LAYER = tl.constexpr(2)


def _interpreting() -> bool:
    """Whether ``triton.jit`` defines interpreted kernels (``TRITON_INTERPRET=1``)."""
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # a triton without knobs reads the variable itself
        return os.environ.get("TRITON_INTERPRET") == "1"


_INTERPRETING = _interpreting()


def _device_function(fn: F) -> F:
    """``triton.jit`` for a helper of the kernels; under the interpreter, the plain function
    (it runs inside the kernel's patched language scope; the interpreter would patch the
    language again on every call of a jit helper, about 3 ms a call, per program)."""
    if _INTERPRETING:
        return fn
    return cast(F, triton.jit(fn))


_SUM_COMBINE = getattr(getattr(tl, "standard", None), "_sum_combine", None)

if _INTERPRETING and _SUM_COMBINE is not None:

    def _sum(x, axis):
        """``tl.sum`` through the interpreter's NumPy reduction (``tl.sum`` itself is a
        jit function there: see :func:`_device_function`)."""
        return tl.reduce(x, axis, _SUM_COMBINE)

else:

    @triton.jit
    def _sum(x, axis: tl.constexpr):
        return tl.sum(x, axis=axis)


if _INTERPRETING:

    def _to_storage(x, DT):
        """``x.to(DT)``, rounding to nearest even: the interpreter truncates float32 to
        bfloat16 (compiled kernels round to nearest even), so that case rounds here."""
        if DT == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            rounded = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
            return tl.where(x != x, x.to(tl.bfloat16), rounded)
        return x.to(DT)

else:

    @triton.jit
    def _to_storage(x, DT: tl.constexpr):
        return x.to(DT)


# -- shared pieces ------------------------------------------------------------------------


@_device_function
def tile_offsets(offset, row_step, col_step, tile_rows, BR: tl.constexpr, BC: tl.constexpr):
    """int64 ``(element offsets, columns within the item, valid rows)`` of a work item's
    first tile, shaped ``(BR, BC)``, ``(BR, BC)``, ``(BR, 1)``; iteration ``k`` adds
    ``k * advance`` to the first two."""
    i = tl.arange(0, BR)[:, None].to(tl.int64)
    j = tl.arange(0, BC)[None, :].to(tl.int64)
    return offset + i * row_step + j, i * col_step + j, i < tile_rows


@_device_function
def _masked_by(mask, flag):
    """``mask & flag`` for a block mask and a scalar flag (in the interpreter, ``&`` of a
    block and a broadcast scalar bool is not a valid mask)."""
    return tl.where(flag, mask, False)


@_device_function
def _learning_rate(lr_ptr, lr, LR_IS_PTR: tl.constexpr):
    """The learning rate as float64: read on the device (a 0-dim tensor) or an argument."""
    if LR_IS_PTR:
        value = tl.load(lr_ptr).to(tl.float64)
    else:
        value = tl.full([], lr, tl.float64)
    return value


@_device_function
def _adam_scalars(step, lr, log_beta1, log_beta2, CDT: tl.constexpr):
    """``lr / bc1`` and ``sqrt(bc2)`` at step ``step`` (float64, then rounded), with
    ``beta ** t = exp(t * log(beta))`` (``log(0) = -inf`` gives 0)."""
    t = step.to(tl.float64)
    bias_correction1 = 1.0 - tl.exp(t * tl.full([], log_beta1, tl.float64))
    bias_correction2 = 1.0 - tl.exp(t * tl.full([], log_beta2, tl.float64))
    return (lr / bias_correction1).to(CDT), tl.sqrt(bias_correction2).to(CDT)


@_device_function
def _adam_update(g, m, v, b1, b2, omb1, omb2, eps, sqrt_bc2, NESTEROV: tl.constexpr):
    """New moments and the unprojected update ``U`` (the authors' operation order)."""
    m = m * b1 + omb1 * g
    v = v * b2 + omb2 * (g * g)
    denom = tl.sqrt(v) / sqrt_bc2 + eps
    if NESTEROV:
        u = (b1 * m + omb1 * g) / denom
    else:
        u = m / denom
    return m, v, u


@_device_function
def _store_partials(
    part_ptr, n_slots, slot, slot_step, store_rows, long, pp, gg, pg, pu, BR: tl.constexpr
):
    """Write a work item's sums: one per row (short rows) or one for the chunk (long)."""
    i = tl.arange(0, BR).to(tl.int64)
    at = part_ptr + slot + i * slot_step
    mask = i < store_rows
    is_long = long != 0
    rows_pp = _sum(pp, 1)
    rows_gg = _sum(gg, 1)
    rows_pg = _sum(pg, 1)
    rows_pu = _sum(pu, 1)
    tl.store(at, tl.where(is_long, _sum(rows_pp, 0), rows_pp), mask=mask)
    tl.store(at + n_slots, tl.where(is_long, _sum(rows_gg, 0), rows_gg), mask=mask)
    tl.store(at + 2 * n_slots, tl.where(is_long, _sum(rows_pg, 0), rows_pg), mask=mask)
    tl.store(at + 3 * n_slots, tl.where(is_long, _sum(rows_pu, 0), rows_pu), mask=mask)


@_device_function
def _finish_sums(
    part_ptr, n_slots, coef_ptr, meta_ptr, t, delta, eps, DB: tl.constexpr, CDT: tl.constexpr
):
    """Finish tensor ``t``'s sums, decide its branch, write its per-row coefficients.

    Returns the branch code. Row blocks of ``DB`` rows are added chunk by chunk in a fixed
    order (deterministic); a tensor that is not projectable has no rows here.
    """
    meta = meta_ptr + t * _META
    rows = tl.load(meta)
    row_len = tl.load(meta + 1)
    chunks = tl.load(meta + 2)
    part = part_ptr + tl.load(meta + 3)
    coef_at = coef_ptr + tl.load(meta + 4)
    proj = tl.load(meta + 5)
    numel = tl.load(meta + 6)
    eps_c = tl.full([], eps, CDT)
    n_rows = rows * proj
    delta64 = tl.full([], delta, tl.float64)
    thr_channel = (delta64 / tl.sqrt(row_len.to(tl.float64))).to(CDT)
    thr_layer = (delta64 / tl.sqrt(numel.to(tl.float64))).to(CDT)
    failing = tl.full([], 0, tl.int32)
    tot_pp = tl.full([], 0.0, CDT)
    tot_gg = tl.full([], 0.0, CDT)
    tot_pg = tl.full([], 0.0, CDT)
    tot_pu = tl.full([], 0.0, CDT)
    for r_start in range(0, n_rows, DB):
        r = r_start + tl.arange(0, DB).to(tl.int64)
        live = r < n_rows
        pp = tl.full([DB], 0.0, CDT)
        gg = tl.full([DB], 0.0, CDT)
        pg = tl.full([DB], 0.0, CDT)
        pu = tl.full([DB], 0.0, CDT)
        for c in range(0, chunks):
            at = part + r * chunks + c
            pp += tl.load(at, mask=live, other=0.0)
            gg += tl.load(at + n_slots, mask=live, other=0.0)
            pg += tl.load(at + 2 * n_slots, mask=live, other=0.0)
            pu += tl.load(at + 3 * n_slots, mask=live, other=0.0)
        cos = tl.abs(pg) / (tl.maximum(tl.sqrt(pp), eps_c) * tl.maximum(tl.sqrt(gg), eps_c))
        # NaN never passes: count the rows whose cosine is not below the threshold
        failing += _sum(tl.where(live & (cos < thr_channel), 0, tl.where(live, 1, 0)), 0)
        tot_pp += _sum(pp, 0)
        tot_gg += _sum(gg, 0)
        tot_pg += _sum(pg, 0)
        tot_pu += _sum(pu, 0)
    projectable = proj != 0
    channel = projectable & (failing == 0)
    p_norm = tl.sqrt(tot_pp)
    layer_cos = tl.abs(tot_pg) / (tl.maximum(p_norm, eps_c) * tl.maximum(tl.sqrt(tot_gg), eps_c))
    layer = projectable & (failing != 0) & (layer_cos < thr_layer)
    layer_coef = tot_pu / ((p_norm + eps_c) * (p_norm + eps_c))
    for r_start in range(0, n_rows, DB):
        r = r_start + tl.arange(0, DB).to(tl.int64)
        live = r < n_rows
        pp = tl.full([DB], 0.0, CDT)
        pu = tl.full([DB], 0.0, CDT)
        for c in range(0, chunks):
            at = part + r * chunks + c
            pp += tl.load(at, mask=live, other=0.0)
            pu += tl.load(at + 3 * n_slots, mask=live, other=0.0)
        norm = tl.sqrt(pp)
        channel_coef = pu / ((norm + eps_c) * (norm + eps_c))
        coef = tl.where(channel, channel_coef, tl.where(layer, layer_coef, 0.0))
        tl.store(coef_at + r, coef.to(CDT), mask=live)
    return tl.where(channel, _CHANNEL, tl.where(layer, _LAYER, _NONE))


# -- AdamP --------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["n_slots"])
def adamp_stats(
    items_ptr, ptrs_ptr, part_ptr, n_slots, lr_ptr,
    lr: tl.float64, beta1: tl.float64, beta2: tl.float64, omb1: tl.float64,
    omb2: tl.float64, log_beta1: tl.float64, log_beta2: tl.float64, eps: tl.float64,
    weight_decay: tl.float64,
    DT: tl.constexpr, CDT: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, DEFER: tl.constexpr,
    LR_IS_PTR: tl.constexpr,
):  # fmt: skip
    """Pass 1 of AdamP: moments, partial sums; tensors that are never projected finish."""
    item = items_ptr + tl.program_id(0).to(tl.int64) * _ITEM
    ptrs = ptrs_ptr + tl.load(item) * 5
    p_ptr = tl.load(ptrs).to(tl.pointer_type(DT))
    g_ptr = tl.load(ptrs + 1).to(tl.pointer_type(DT))
    m_ptr = tl.load(ptrs + 2).to(tl.pointer_type(DT))
    v_ptr = tl.load(ptrs + 3).to(tl.pointer_type(DT))
    s_ptr = tl.load(ptrs + 4).to(tl.pointer_type(tl.float32))
    offs, cols, rows_ok = tile_offsets(
        tl.load(item + 1), tl.load(item + 2), tl.load(item + 3), tl.load(item + 6), BR, BC
    )
    advance = tl.load(item + 4)
    columns = tl.load(item + 5)
    finish = tl.load(item + 12) != 0
    lr64 = _learning_rate(lr_ptr, lr, LR_IS_PTR)
    # the step count is incremented by the decide pass, which runs after this one
    step_size, sqrt_bc2 = _adam_scalars(tl.load(s_ptr) + 1.0, lr64, log_beta1, log_beta2, CDT)
    decay = (1.0 - lr64 * weight_decay).to(CDT)
    b1 = tl.full([], beta1, CDT)
    b2 = tl.full([], beta2, CDT)
    c1 = tl.full([], omb1, CDT)
    c2 = tl.full([], omb2, CDT)
    eps_c = tl.full([], eps, CDT)
    acc_pp = tl.full([BR, BC], 0.0, CDT)
    acc_gg = tl.full([BR, BC], 0.0, CDT)
    acc_pg = tl.full([BR, BC], 0.0, CDT)
    acc_pu = tl.full([BR, BC], 0.0, CDT)
    for it in range(0, tl.load(item + 7)):
        shift = it * advance
        mask = rows_ok & (cols + shift < columns)
        at = offs + shift
        p = tl.load(p_ptr + at, mask=mask, other=0.0).to(CDT)
        g = tl.load(g_ptr + at, mask=mask, other=0.0).to(CDT)
        if MAXIMIZE:
            g = -g
        m = tl.load(m_ptr + at, mask=mask, other=0.0).to(CDT)
        v = tl.load(v_ptr + at, mask=mask, other=0.0).to(CDT)
        m, v, u = _adam_update(g, m, v, b1, b2, c1, c2, eps_c, sqrt_bc2, NESTEROV)
        if DEFER:
            state_mask = _masked_by(mask, finish)
        else:
            state_mask = mask
        tl.store(m_ptr + at, _to_storage(m, DT), mask=state_mask)
        tl.store(v_ptr + at, _to_storage(v, DT), mask=state_mask)
        tl.store(
            p_ptr + at, _to_storage(p * decay - step_size * u, DT), mask=_masked_by(mask, finish)
        )
        acc_pp += p * p
        acc_gg += g * g
        acc_pg += p * g
        acc_pu += tl.where(mask, p * u, 0.0)
    _store_partials(
        part_ptr, n_slots, tl.load(item + 8), tl.load(item + 9), tl.load(item + 10),
        tl.load(item + 11), acc_pp, acc_gg, acc_pg, acc_pu, BR,
    )  # fmt: skip


@triton.jit(do_not_specialize=["n_slots"])
def adamp_decide(
    meta_ptr, ptrs_ptr, part_ptr, n_slots, coef_ptr, decay_ptr, branch_ptr,
    lr_ptr, lr: tl.float64, eps: tl.float64, weight_decay: tl.float64,
    delta: tl.float64, wd_ratio: tl.float64,
    CDT: tl.constexpr, DB: tl.constexpr, LR_IS_PTR: tl.constexpr,
):  # fmt: skip
    """Pass 2 of AdamP, one program per tensor: step count, decision, coefficients, decay."""
    t = tl.program_id(0).to(tl.int64)
    s_ptr = tl.load(ptrs_ptr + t * 5 + 4).to(tl.pointer_type(tl.float32))
    tl.store(s_ptr, tl.load(s_ptr) + 1.0)
    branch = _finish_sums(part_ptr, n_slots, coef_ptr, meta_ptr, t, delta, eps, DB, CDT)
    lr64 = _learning_rate(lr_ptr, lr, LR_IS_PTR)
    ratio = tl.where(branch != _NONE, tl.full([], wd_ratio, tl.float64), 1.0)
    tl.store(decay_ptr + t, (1.0 - lr64 * weight_decay * ratio).to(CDT))
    tl.store(branch_ptr + t, branch.to(tl.int32))


@triton.jit
def adamp_apply(
    items_ptr, ptrs_ptr, coef_ptr, decay_ptr, lr_ptr,
    lr: tl.float64, beta1: tl.float64, beta2: tl.float64, omb1: tl.float64,
    omb2: tl.float64, log_beta1: tl.float64, log_beta2: tl.float64, eps: tl.float64,
    DT: tl.constexpr, CDT: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, DEFER: tl.constexpr,
    LR_IS_PTR: tl.constexpr,
):  # fmt: skip
    """Pass 3 of AdamP over the projectable tensors' work items: the weights (and, with
    ``DEFER``, the moments, computed again from the values pass 1 read)."""
    item = items_ptr + tl.program_id(0).to(tl.int64) * _ITEM
    t = tl.load(item)
    ptrs = ptrs_ptr + t * 5
    p_ptr = tl.load(ptrs).to(tl.pointer_type(DT))
    g_ptr = tl.load(ptrs + 1).to(tl.pointer_type(DT))
    m_ptr = tl.load(ptrs + 2).to(tl.pointer_type(DT))
    v_ptr = tl.load(ptrs + 3).to(tl.pointer_type(DT))
    s_ptr = tl.load(ptrs + 4).to(tl.pointer_type(tl.float32))
    offs, cols, rows_ok = tile_offsets(
        tl.load(item + 1), tl.load(item + 2), tl.load(item + 3), tl.load(item + 6), BR, BC
    )
    advance = tl.load(item + 4)
    columns = tl.load(item + 5)
    lr64 = _learning_rate(lr_ptr, lr, LR_IS_PTR)
    step_size, sqrt_bc2 = _adam_scalars(tl.load(s_ptr), lr64, log_beta1, log_beta2, CDT)
    b1 = tl.full([], beta1, CDT)
    b2 = tl.full([], beta2, CDT)
    c1 = tl.full([], omb1, CDT)
    c2 = tl.full([], omb2, CDT)
    eps_c = tl.full([], eps, CDT)
    decay = tl.load(decay_ptr + t)
    coef_rows = tl.load(item + 13) + tl.arange(0, BR)[:, None].to(tl.int64) * tl.load(item + 14)
    coef = tl.load(coef_ptr + coef_rows, mask=rows_ok, other=0.0)
    for it in range(0, tl.load(item + 7)):
        shift = it * advance
        mask = rows_ok & (cols + shift < columns)
        at = offs + shift
        p = tl.load(p_ptr + at, mask=mask, other=0.0).to(CDT)
        m = tl.load(m_ptr + at, mask=mask, other=0.0).to(CDT)
        v = tl.load(v_ptr + at, mask=mask, other=0.0).to(CDT)
        if DEFER:
            g = tl.load(g_ptr + at, mask=mask, other=0.0).to(CDT)
            if MAXIMIZE:
                g = -g
            m, v, u = _adam_update(g, m, v, b1, b2, c1, c2, eps_c, sqrt_bc2, NESTEROV)
            tl.store(m_ptr + at, _to_storage(m, DT), mask=mask)
            tl.store(v_ptr + at, _to_storage(v, DT), mask=mask)
        else:
            denom = tl.sqrt(v) / sqrt_bc2 + eps_c
            if NESTEROV:
                g = tl.load(g_ptr + at, mask=mask, other=0.0).to(CDT)
                if MAXIMIZE:
                    g = -g
                u = (b1 * m + c1 * g) / denom
            else:
                u = m / denom
        tl.store(p_ptr + at, _to_storage(p * decay - step_size * (u - coef * p), DT), mask=mask)


# -- SGDP ---------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["n_slots"])
def sgdp_stats(
    items_ptr, ptrs_ptr, part_ptr, n_slots, lr_ptr,
    lr: tl.float64, momentum: tl.float64, omd: tl.float64, weight_decay: tl.float64,
    DT: tl.constexpr, CDT: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, DEFER: tl.constexpr,
    LR_IS_PTR: tl.constexpr,
):  # fmt: skip
    """Pass 1 of SGDP: momentum buffer, partial sums; tensors never projected finish."""
    item = items_ptr + tl.program_id(0).to(tl.int64) * _ITEM
    ptrs = ptrs_ptr + tl.load(item) * 3
    p_ptr = tl.load(ptrs).to(tl.pointer_type(DT))
    g_ptr = tl.load(ptrs + 1).to(tl.pointer_type(DT))
    b_ptr = tl.load(ptrs + 2).to(tl.pointer_type(DT))
    offs, cols, rows_ok = tile_offsets(
        tl.load(item + 1), tl.load(item + 2), tl.load(item + 3), tl.load(item + 6), BR, BC
    )
    advance = tl.load(item + 4)
    columns = tl.load(item + 5)
    finish = tl.load(item + 12) != 0
    lr64 = _learning_rate(lr_ptr, lr, LR_IS_PTR)
    mom = tl.full([], momentum, CDT)
    damp = tl.full([], omd, CDT)
    lr_c = lr64.to(CDT)
    decay = (1.0 - lr64 * weight_decay / (1.0 - tl.full([], momentum, tl.float64))).to(CDT)
    acc_pp = tl.full([BR, BC], 0.0, CDT)
    acc_gg = tl.full([BR, BC], 0.0, CDT)
    acc_pg = tl.full([BR, BC], 0.0, CDT)
    acc_pd = tl.full([BR, BC], 0.0, CDT)
    for it in range(0, tl.load(item + 7)):
        shift = it * advance
        mask = rows_ok & (cols + shift < columns)
        at = offs + shift
        p = tl.load(p_ptr + at, mask=mask, other=0.0).to(CDT)
        g = tl.load(g_ptr + at, mask=mask, other=0.0).to(CDT)
        if MAXIMIZE:
            g = -g
        b = tl.load(b_ptr + at, mask=mask, other=0.0).to(CDT)
        b = b * mom + damp * g
        if NESTEROV:
            d = g + mom * b
        else:
            d = b
        if DEFER:
            state_mask = _masked_by(mask, finish)
        else:
            state_mask = mask
        tl.store(b_ptr + at, _to_storage(b, DT), mask=state_mask)
        tl.store(p_ptr + at, _to_storage(p * decay - lr_c * d, DT), mask=_masked_by(mask, finish))
        acc_pp += p * p
        acc_gg += g * g
        acc_pg += p * g
        acc_pd += p * d
    _store_partials(
        part_ptr, n_slots, tl.load(item + 8), tl.load(item + 9), tl.load(item + 10),
        tl.load(item + 11), acc_pp, acc_gg, acc_pg, acc_pd, BR,
    )  # fmt: skip


@triton.jit(do_not_specialize=["n_slots"])
def sgdp_decide(
    meta_ptr, part_ptr, n_slots, coef_ptr, decay_ptr, branch_ptr, lr_ptr,
    lr: tl.float64, momentum: tl.float64, eps: tl.float64, weight_decay: tl.float64,
    delta: tl.float64, wd_ratio: tl.float64,
    CDT: tl.constexpr, DB: tl.constexpr, LR_IS_PTR: tl.constexpr,
):  # fmt: skip
    """Pass 2 of SGDP, one program per tensor: decision, coefficients, decay."""
    t = tl.program_id(0).to(tl.int64)
    branch = _finish_sums(part_ptr, n_slots, coef_ptr, meta_ptr, t, delta, eps, DB, CDT)
    lr64 = _learning_rate(lr_ptr, lr, LR_IS_PTR)
    ratio = tl.where(branch != _NONE, tl.full([], wd_ratio, tl.float64), 1.0)
    one_minus_momentum = 1.0 - tl.full([], momentum, tl.float64)
    decay = 1.0 - lr64 * weight_decay * ratio / one_minus_momentum
    tl.store(decay_ptr + t, decay.to(CDT))
    tl.store(branch_ptr + t, branch.to(tl.int32))


@triton.jit
def sgdp_apply(
    items_ptr, ptrs_ptr, coef_ptr, decay_ptr, lr_ptr,
    lr: tl.float64, momentum: tl.float64, omd: tl.float64,
    DT: tl.constexpr, CDT: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, DEFER: tl.constexpr,
    PROJECT_BUFFER: tl.constexpr, LR_IS_PTR: tl.constexpr,
):  # fmt: skip
    """Pass 3 of SGDP over the projectable tensors' work items: the weights, and the
    buffer (projected with ``PROJECT_BUFFER``, else as updated, when ``DEFER``)."""
    item = items_ptr + tl.program_id(0).to(tl.int64) * _ITEM
    t = tl.load(item)
    ptrs = ptrs_ptr + t * 3
    p_ptr = tl.load(ptrs).to(tl.pointer_type(DT))
    g_ptr = tl.load(ptrs + 1).to(tl.pointer_type(DT))
    b_ptr = tl.load(ptrs + 2).to(tl.pointer_type(DT))
    offs, cols, rows_ok = tile_offsets(
        tl.load(item + 1), tl.load(item + 2), tl.load(item + 3), tl.load(item + 6), BR, BC
    )
    advance = tl.load(item + 4)
    columns = tl.load(item + 5)
    lr_c = _learning_rate(lr_ptr, lr, LR_IS_PTR).to(CDT)
    mom = tl.full([], momentum, CDT)
    damp = tl.full([], omd, CDT)
    decay = tl.load(decay_ptr + t)
    coef_rows = tl.load(item + 13) + tl.arange(0, BR)[:, None].to(tl.int64) * tl.load(item + 14)
    coef = tl.load(coef_ptr + coef_rows, mask=rows_ok, other=0.0)
    for it in range(0, tl.load(item + 7)):
        shift = it * advance
        mask = rows_ok & (cols + shift < columns)
        at = offs + shift
        p = tl.load(p_ptr + at, mask=mask, other=0.0).to(CDT)
        b = tl.load(b_ptr + at, mask=mask, other=0.0).to(CDT)
        if DEFER or NESTEROV:
            g = tl.load(g_ptr + at, mask=mask, other=0.0).to(CDT)
            if MAXIMIZE:
                g = -g
        if DEFER:
            b = b * mom + damp * g
        if NESTEROV:
            d = g + mom * b
        else:
            d = b
        d = d - coef * p
        if PROJECT_BUFFER:
            tl.store(b_ptr + at, _to_storage(d, DT), mask=mask)
        elif DEFER:
            tl.store(b_ptr + at, _to_storage(b, DT), mask=mask)
        tl.store(p_ptr + at, _to_storage(p * decay - lr_c * d, DT), mask=mask)


INTERPRETED: bool = type(adamp_stats).__name__ == "InterpretedFunction"
"""Whether these kernels were defined under ``TRITON_INTERPRET=1`` (they run on CPU)."""
