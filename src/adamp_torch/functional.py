"""AdamP and SGDP over lists of tensors, laid out like ``torch.optim.adamw``.

:func:`adamp` and :func:`sgdp` update parameters and state in place. Each checks its
inputs, then picks one named implementation for every (device, dtype) batch:

* ``_single_tensor_adamp`` / ``_single_tensor_sgdp`` (``foreach=False``): one tensor at a
  time, line for line the reference :func:`adamp_core.functional.adamp_step` /
  ``sgdp_step``;
* ``_cpu`` (CPU, the default there): a C++ kernel compiled on first use, at most three
  passes over each tensor's memory in its own dtype (bfloat16 / float16 included);
* :func:`_host_split` (CPU, for what the C++ kernel does not take or when it cannot be
  built): the scale-invariance test is read on the host, where it already is; tensors it
  does not project are finished by torch's fused AdamW / SGD kernel in one pass, the
  others are projected as a batch;
* :func:`_multi_tensor` (CUDA, other accelerators, ``torch.compile``, or
  ``HOST_DECISIONS = False``): the same batch with every decision kept on the device;
* ``_triton`` (``fused`` on CUDA with triton installed, or on CPU under
  ``TRITON_INTERPRET=1``): three fused kernel launches per batch, for the tensors whose
  layout the kernels take (the others take the paths above in the same step).

DTensor parameters (FSDP2, tensor parallel) are stepped on their local shards by
:func:`_sharded_path`, which completes the sums of the test across ranks (``_sharded``).

The two batched paths share their control flow; AdamP and SGDP supply what differs (the
direction and the kernels that finish a tensor) as a :class:`_Rule`. The algorithm is
written out in ``docs/algorithm.md``. Axis 0 of each tensor is its output channel.

Memory: the batched paths run on sub-batches of at most :data:`_CHUNK_NUMEL` elements (or
one larger tensor), so every working copy, scratch buffer and temporary is bounded by
``max(chunk, largest tensor)``; the only full-size memory kept is the state. bfloat16 /
float16 storage keeps its state in that dtype; the math runs in float32 on working copies
of one sub-batch, rounded once on the way back, except for AdamP tensors the test does not
project, which torch's fused AdamW kernel updates in their storage (float32 math per
element, the same rounding) without copies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from adamp_core.validation import validate_variant

from . import _cpu, _sharded, _triton
from ._layout import Frame, Scalar, Slot, compute_dtype, is_compiling
from ._projection import (
    SHORT_ROW,
    Decision,
    Plan,
    Workspace,
    apply_update,
    cosine_from_sums,
    decay_in_place,
    decide,
    products_in_scratch,
    project_and_apply,
    project_in_place,
    shift_coefficients,
)

__all__ = ["HOST_DECISIONS", "Workspace", "adamp", "sgdp", "fused_adam_available"]

HOST_DECISIONS = True
"""Internal switch: on CPU, read the projection decisions on the host (the default).
``False`` sends CPU batches down the device path as well (the tests use it to check that
path without an accelerator)."""


def fused_adam_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused AdamW kernel can compute AdamP's moments for this group."""
    return device.type in ("cpu", "cuda") and dtype in (torch.float32, torch.float64)


def check_fused(fused: bool | None, nesterov: bool) -> None:
    """Reject ``fused=True`` with Nesterov: the fused AdamW kernel has no Nesterov form."""
    if fused and nesterov:
        raise ValueError("fused=True cannot be combined with nesterov=True")


# -- the reference path: one tensor at a time -------------------------------------------------


def _projection(
    param: Tensor, grad: Tensor, update: Tensor, *, delta: float, wd_ratio: float, eps: float
) -> tuple[Tensor, Tensor]:
    """:func:`adamp_core.functional.projection` for one tensor, decided with
    ``torch.where`` (no host sync). Returns the update and the weight decay ratio."""
    one = param.new_ones(())
    if param.dim() < 2:
        return update, one
    p, g, u = (x.reshape(param.shape[0], -1) for x in (param, grad, update))
    # Per-row sums of the channel view; the layer view's are their totals.
    pp, gg, pg, pu = (_row_dot(a, b) for a, b in ((p, p), (g, g), (p, g), (p, u)))
    channel = cosine_from_sums(pg, pp, gg, eps).amax() < delta / math.sqrt(p.shape[1])
    layer = cosine_from_sums(pg.sum(), pp.sum(), gg.sum(), eps) < delta / math.sqrt(p.numel())
    projected = channel | layer
    # u_r - p_hat_r <p_hat_r, u_r> with p_hat = p / (|p| + eps), over the chosen view's
    # rows: that is u_r - coef_r * p_r with coef = <p, u> / (|p| + eps)^2 (one pass)
    norm = torch.where(channel, pp.sqrt(), pp.sum().sqrt()) + eps
    coef = torch.where(channel, pu, pu.sum()) / norm.square()
    coef = torch.where(projected, coef, 0.0).unsqueeze(1)
    update = torch.addcmul(u, p, coef, value=-1).reshape(update.shape)
    return update, torch.where(projected, one * wd_ratio, one)


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``<a_r, b_r>`` for every row of two ``(R, n)`` tensors, as a batched product (on CPU
    about 3x faster than ``einsum`` or a product and a sum; nothing large is written)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(1).transpose(1, 2)).view(-1)


def _upcast(*tensors: Tensor) -> list[Tensor]:
    """The tensors in the dtype the math runs in: themselves, or float32 copies of 16-bit
    floats (written back by :func:`_write_back`)."""
    return [t.to(compute_dtype(t.dtype)) for t in tensors]


def _write_back(originals: Sequence[Tensor], results: Sequence[Tensor]) -> None:
    for original, result in zip(originals, results):
        if result is not original:
            original.copy_(result)


def _single_tensor_adamp(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for param, grad, exp_avg, exp_avg_sq, step in zip(
        params, grads, exp_avgs, exp_avg_sqs, state_steps
    ):
        p, g, m, v = _upcast(param, grad, exp_avg, exp_avg_sq)
        if maximize:
            g = -g
        step += 1
        t = _float64(step)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.sqrt().div_(bias_correction2.sqrt()).add_(eps)
        numer = beta1 * m + (1 - beta1) * g if nesterov else m
        update, ratio = _projection(p, g, numer / denom, delta=delta, wd_ratio=wd_ratio, eps=eps)
        if weight_decay > 0:
            p.mul_(1 - lr * weight_decay * ratio)
        p.sub_((lr / bias_correction1) * update)
        _write_back((param, exp_avg, exp_avg_sq), (p, m, v))


def _single_tensor_sgdp(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: Scalar,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    variant: str,
    maximize: bool,
) -> None:
    for param, grad, momentum_buffer in zip(params, grads, momentum_buffers):
        p, g, buf = _upcast(param, grad, momentum_buffer)
        if maximize:
            g = -g
        buf.mul_(momentum).add_(g, alpha=1 - dampening)
        direction = g + momentum * buf if nesterov else buf
        update, ratio = _projection(p, g, direction, delta=delta, wd_ratio=wd_ratio, eps=eps)
        if variant == "authors" and not nesterov:
            buf.copy_(update)
        if weight_decay > 0:
            p.mul_(1 - lr * weight_decay * ratio / (1 - momentum))
        p.sub_(lr * update)
        _write_back((param, momentum_buffer), (p, buf))


def _float64(steps: Tensor) -> Tensor:
    """Step counts in float64 (bias corrections must not round to float32); MPS has none."""
    return steps.to(torch.float32 if steps.device.type == "mps" else torch.float64)


# -- the batched paths --------------------------------------------------------------------------


_CHUNK_NUMEL = 1 << 22
"""Elements per sub-batch (:func:`_sub_batches`): every working copy and scratch buffer of
a step is bounded by ``max(this, largest tensor)``, not by the size of the model."""


def _sub_batches(
    params: Sequence[Tensor], index: Sequence[int], chunk: int | None = None
) -> list[list[int]]:
    """``index`` cut into consecutive runs of at most ``chunk`` (default
    :data:`_CHUNK_NUMEL`) elements; a larger tensor is a run of its own. Decisions are per
    tensor, so runs are independent; bounding them bounds every copy and scratch buffer of
    the batched paths."""
    return _runs([(i, params[i].numel()) for i in index], chunk)


def _runs(items: Sequence[tuple[int, int]], chunk: int | None = None) -> list[list[int]]:
    """The keys of ``(key, numel)`` items in consecutive runs of at most ``chunk`` (default
    :data:`_CHUNK_NUMEL`) elements, a larger item alone."""
    limit = _CHUNK_NUMEL if chunk is None else chunk
    runs: list[list[int]] = [[]]
    size = 0
    for key, n in items:
        if runs[-1] and size + n > limit:
            runs.append([])
            size = 0
        runs[-1].append(key)
        size += n
    return runs


def _whole_batch(params: Sequence[Tensor], index: Sequence[int], sharded: bool) -> bool:
    """Whether a batch runs whole rather than in sub-batches: DTensor batches (every rank
    must reduce the same tensors together), and float32/float64 batches on the host path,
    which need no working copies (AdamP bounds its direction scratch itself, see
    :meth:`_AdamPRule.finish_projected`) and would only pay the sub-batches' overhead."""
    first = params[index[0]]
    wide = compute_dtype(first.dtype) == first.dtype
    return sharded or (wide and _batched_path(first.device) is _host_split)


_SCREEN_MIN_ROWS = 1 << 12
"""Tensors with at least this many short rows are screened (:func:`_screened`)."""
_SCREEN_SAMPLE = 64
"""Rows a screen reads."""


def _screened(frame: Frame, param: Tensor, grad: Tensor, delta: float, eps: float) -> Frame:
    """``frame``, or its one-row form when ``param`` has many short rows and one of its
    first rows already fails the channel test (``max |cos| >= delta / sqrt(n)``: the
    channel view cannot pass, so only the layer view is left).

    With one row, the channel test and projection *are* the layer view's, so the outcome
    is unchanged, but the per-row statistics, as large as the tensor for rows of one
    element, are never computed. The sample's cosines are taken in float64 and must clear
    the threshold by a margin, so rounding cannot make the screen disagree with the test.
    """
    if not frame.projectable or frame.row_length > SHORT_ROW or frame.rows < _SCREEN_MIN_ROWS:
        return frame
    p = param[:_SCREEN_SAMPLE].reshape(min(_SCREEN_SAMPLE, frame.rows), -1).double()
    g = grad[:_SCREEN_SAMPLE].reshape(p.shape).double()
    norms = p.norm(dim=1).clamp_min(eps) * g.norm(dim=1).clamp_min(eps)
    cos = (p * g).sum(dim=1).abs() / norms
    if float(cos.max()) < delta / math.sqrt(frame.row_length) * (1 + 1e-3):
        return frame
    return dataclasses.replace(frame, shape3=(1, 1, frame.numel))


class _Batch:
    """One (device, dtype) batch of tensors brought into the kernel's layout (``_layout``).

    Working copies (other layouts, 16-bit storage) are views of one workspace buffer per
    role, as large as the batch: callers bound the batch (:func:`_sub_batches`).
    """

    def __init__(
        self,
        index: Sequence[int],
        params: Sequence[Tensor],
        workspace: Workspace | None,
        delta: float,
        screen: tuple[Sequence[Tensor], float] | None = None,
    ):
        """``screen``: the gradients and eps, to give tensors of many short rows whose
        channel test a sample of rows already fails the layer view alone
        (:func:`_screened`; it reads values on the host, so only for host decisions)."""
        self.index = list(index)
        first = params[self.index[0]]
        self.device = first.device
        self.dtype = compute_dtype(first.dtype)
        #: 16-bit storage: the math runs on float32 copies, rounded once when written back.
        self.low_precision = first.dtype != self.dtype
        compiling = is_compiling()
        self.frames = [Frame.of(params[i], compiling) for i in self.index]
        if screen is not None:
            grads, eps = screen
            self.frames = [
                _screened(f, params[i], grads[i], delta, eps)
                for f, i in zip(self.frames, self.index)
            ]
        self.workspace = None if compiling else workspace
        if self.workspace is not None:
            self.plan = self.workspace.plan(self.frames, delta, self.dtype, self.device)
        else:
            self.plan = Plan.build(self.frames, delta, self.dtype, self.device)
        self.written: dict[int, list[tuple[Slot, Frame]]] = {}
        self.p = self.bind(params, "param", write=True)

    def bind(
        self,
        tensors: Sequence[Tensor],
        role: str,
        write: bool,
        where: Sequence[int] | None = None,
        out: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """The batch's entries of ``tensors`` in kernel layout and compute dtype.

        Args:
            tensors: the caller's list (indexed like the parameters).
            role: names the workspace buffer that holds this list's working copies.
            write: write working copies back in :meth:`finish`.
            where: batch positions to bind (``None``: all); the others keep the caller's
                tensor, which the kernel must not read.
            out: a list from an earlier call to update in place (``None``: a new one).
        """
        if out is None:
            out = _pick(tensors, self.index)
        copies: list[Tensor] | None = None
        for k in range(len(self.index)) if where is None else where:
            tensor, frame = tensors[self.index[k]], self.frames[k]
            if frame.identity and tensor.dtype == self.dtype and tensor.is_contiguous():
                out[k] = tensor  # already in kernel layout: nothing to write back
                continue
            view = frame.kernel_view(tensor) if tensor.dtype == self.dtype else None
            if view is not None:
                out[k] = view
                continue
            if copies is None:
                copies = self.scratch(role)
            slot = Slot(tensor, frame, self.dtype, into=copies[k])
            if write:
                self.written.setdefault(k, []).append((slot, frame))
            out[k] = slot.data
        return out

    def storage(self, lists: Sequence[Sequence[Tensor]], k: int) -> list[Tensor] | None:
        """Position ``k`` of each of ``lists`` in kernel layout *in its own dtype* (views of
        the caller's memory, for kernels that read 16-bit storage themselves), or ``None``
        if one of them has no such view."""
        frame = self.frames[k]
        views = [frame.kernel_view(t[self.index[k]]) for t in lists]
        return None if any(v is None for v in views) else views  # type: ignore[return-value]

    def scratch(self, name: str, where: Sequence[int] | None = None) -> list[Tensor]:
        """One uninitialised kernel-layout tensor per entry, views of one flat buffer kept
        in the workspace (one buffer: one fill and no page faults after the first step).

        ``where``: only these positions get room, packed from the start of the buffer (the
        others get empty placeholders), for scratch used up before the next call.
        """
        chosen = range(len(self.frames)) if where is None else where
        sizes = [self.frames[k].numel for k in chosen]
        total = sum(sizes)
        if self.workspace is None:
            flat = torch.empty((total,), dtype=self.dtype, device=self.device)
        else:
            key = (name, self.dtype, self.device)
            flat = self.workspace.at_least(key, total, self.dtype, self.device)[:total]
        out = [flat[:0]] * len(self.frames)
        for k, part in zip(chosen, flat.split(sizes)):
            out[k] = part.view(self.frames[k].kernel_shape)
        return out

    def product_scratch(self) -> Tensor | None:
        """A flat buffer for the per-row products of short or ``(A, R, B)`` rows, as large
        as the largest such tensor; ``None`` (temporaries) without a workspace or such rows."""
        sizes = [f.numel for f in self.frames if products_in_scratch(f)]
        if self.workspace is None or not sizes:
            return None
        key = ("products", self.dtype, self.device)
        return self.workspace.at_least(key, max(sizes), self.dtype, self.device)

    def finish(self, where: Sequence[int] | None = None) -> None:
        """Write working copies back into the caller's tensors (positions ``where``;
        ``None``: all not yet written)."""
        for k in list(self.written) if where is None else where:
            for slot, frame in self.written.pop(k, ()):
                slot.write_back(frame)

    def discard(self, where: Sequence[int]) -> None:
        """Forget the working copies of positions ``where`` (updated in their own storage)."""
        for k in where:
            self.written.pop(k, None)


def _pick(tensors: Sequence[Tensor], positions: Sequence[int]) -> list[Tensor]:
    return [tensors[i] for i in positions]


def _pick_all(lists: Sequence[Sequence[Tensor]], positions: Sequence[int]) -> list[list[Tensor]]:
    """:func:`_pick` on each of ``lists``."""
    return [_pick(t, positions) for t in lists]


def _signed(grads: list[Tensor], maximize: bool) -> list[Tensor]:
    """The gradients, negated (new tensors) when maximizing."""
    return list(torch._foreach_neg(grads)) if maximize else grads


class _Rule:
    """What one optimizer supplies to the batched paths, for one batch.

    ``P <- P * (1 - decay * ratio) + alpha * projected(Z)``, with ``Z`` from
    :meth:`direction`; ``ratio`` is ``wd_ratio`` on projected tensors, else 1.
    """

    alpha: Scalar
    decay: Scalar
    wd_ratio: float
    eps: float
    #: SGDP's authors variant: the projected direction is stored (it is the buffer).
    project_direction: bool = False
    #: The test's outcome, set by :func:`_host_split`.
    decision: Decision

    def __init__(
        self,
        batch: _Batch,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        states: dict[str, Sequence[Tensor]],
    ):
        """``params``, ``grads`` and each of ``states`` (by workspace role) are the caller's
        lists, indexed like the parameters; the batch picks its entries."""
        self.batch = batch
        self._sources = {"param": params, "grad": grads, **states}
        self.g = batch.bind(grads, "grad", write=False)
        #: Each state list in kernel layout, bound on first use (:meth:`bind_state`).
        self.state = {role: _pick(t, batch.index) for role, t in states.items()}
        self._bound: set[int] = set()
        self.scratch = batch.product_scratch()

    def bind_state(self, where: Sequence[int]) -> None:
        """Bring the state of positions ``where`` into kernel layout (working copies,
        written back by :meth:`_Batch.finish`, only for the tensors a step reads)."""
        todo = [k for k in where if k not in self._bound]
        if todo:
            for role, state in self.state.items():
                self.batch.bind(self._sources[role], role, write=True, where=todo, out=state)
            self._bound.update(todo)

    def on_storage(self, where: Sequence[int]) -> tuple[list[int], list[list[Tensor]]]:
        """The positions of ``where`` whose parameter, gradient and state all have kernel
        views in their own dtype (:meth:`_Batch.storage`), and those views, one list per
        kind (parameters, gradients, then the states). For 16-bit batches: torch's fused
        kernels read and write that storage with float32 math per element (the reference's
        upcast, compute, round) in one pass, so the float32 copies of these are dropped."""
        lists = list(self._sources.values())
        taken: list[int] = []
        views: list[list[Tensor]] = [[] for _ in lists]
        for k in where:
            found = self.batch.storage(lists, k)
            if found is not None:
                taken.append(k)
                for out, view in zip(views, found):
                    out.append(view)
        self.batch.discard(taken)
        return taken, views

    @property
    def update(self) -> dict[str, Any]:
        """The update's factors, as keywords of ``apply_update`` / ``project_and_apply``."""
        return dict(
            alpha=self.alpha,
            decay=self.decay,
            wd_ratio=self.wd_ratio,
            project_direction=self.project_direction,
        )

    def direction(self, where: Sequence[int]) -> list[Tensor]:
        """Update the state of tensors ``where``; the unprojected ``Z`` of each (others unset)."""
        raise NotImplementedError

    def finish_unprojected(self, where: Sequence[int]) -> list[int]:
        """Finish tensors the test does not project with one fused kernel; the positions
        it could not take (they go through :meth:`finish_projected`)."""
        return list(where)

    def finish_projected(self, where: Sequence[int], projected: Sequence[int]) -> None:
        """Finish tensors ``where`` (of which ``projected`` are projected) from their
        direction, with the decision of :func:`_host_split`."""
        z = self.direction(where)
        batch = self.batch
        coef = shift_coefficients(
            z, batch.plan, self.decision, eps=self.eps, tensors=projected, scratch=self.scratch
        )
        apply_update(batch.p, z, batch.plan, self.decision, coef, tensors=where, **self.update)


def _multi_tensor(rule: _Rule) -> None:
    """Finish a batch with every decision on the device: no host sync."""
    batch = rule.batch
    z = rule.direction(range(len(batch.p)))
    project_and_apply(
        batch.p, rule.g, z, batch.plan, eps=rule.eps, scratch=rule.scratch, **rule.update
    )


def _host_split(rule: _Rule) -> None:
    """Decide on the host, finish unprojected tensors with a fused kernel, project the rest."""
    batch = rule.batch
    rule.decision = decide(batch.p, rule.g, batch.plan, eps=rule.eps, scratch=rule.scratch)
    projected = rule.decision.on_host()
    moved = [i for i, x in enumerate(projected) if x]
    kept = [i for i, x in enumerate(projected) if not x]
    rest = rule.finish_unprojected(kept) if kept else []
    todo = sorted(moved + rest)
    if todo:
        rule.finish_projected(todo, moved)


class _AdamPRule(_Rule):
    def __init__(
        self,
        batch: _Batch,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        exp_avgs: Sequence[Tensor],
        exp_avg_sqs: Sequence[Tensor],
        steps: list[Tensor],
        *,
        lr: Scalar,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        wd_ratio: float,
        nesterov: bool,
        maximize: bool,
        fused: bool,
    ):
        """``steps``: the batch's step counts, in batch order (the other lists: the
        caller's, see :class:`_Rule`)."""
        super().__init__(batch, params, grads, {"exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs})
        self.m, self.v, self.steps = self.state["exp_avg"], self.state["exp_avg_sq"], steps
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay, self.wd_ratio = weight_decay, wd_ratio
        self.nesterov, self.maximize, self.fused = nesterov, maximize, fused
        self.alpha = 1.0  # Z already holds -lr / bc1 * m / denom
        self.decay = lr * weight_decay

    def _fused_adamw(
        self,
        targets: list[Tensor],
        where: Sequence[int],
        weight_decay: float,
        tensors: Sequence[list[Tensor]] | None = None,
    ) -> None:
        """torch's fused AdamW on ``targets`` with the moments of tensors ``where``
        (``tensors``: their gradients and moments, if not the bound ones)."""
        g, m, v = tensors or (_pick(self.g, where), _pick(self.m, where), _pick(self.v, where))
        torch._fused_adamw_(
            targets,
            g,
            m,
            v,
            [],
            _pick(self.steps, where),
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            weight_decay=weight_decay,
            eps=self.eps,
            amsgrad=False,
            maximize=self.maximize,
        )

    def direction(self, where: Sequence[int]) -> list[Tensor]:
        self.bind_state(where)
        if self.fused:
            # The kernel adds the Adam step to its targets: zeroed scratch receives it.
            z = self.batch.scratch("adamp.direction", where)
            torch._foreach_zero_(_pick(z, where))
            self._fused_adamw(_pick(z, where), where, 0.0)
            return z
        z = list(self.batch.p)
        computed = _adam_direction(
            _signed(_pick(self.g, where), self.maximize),
            _pick(self.m, where),
            _pick(self.v, where),
            _pick(self.steps, where),
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            nesterov=self.nesterov,
        )
        for k, zk in zip(where, computed):
            z[k] = zk
        return z

    def finish_projected(self, where: Sequence[int], projected: Sequence[int]) -> None:
        # One chunk at a time: the direction scratch is bounded by the chunk (or the
        # largest tensor), not by the batch.
        chosen = set(projected)
        frames = self.batch.frames
        for part in _runs([(k, frames[k].numel) for k in where]):
            super().finish_projected(part, [k for k in part if k in chosen])

    def finish_unprojected(self, where: Sequence[int]) -> list[int]:
        if not self.fused:
            return list(where)
        # AdamP is exactly AdamW on tensors it does not project.
        if self.batch.low_precision:
            taken, (p, g, m, v) = self.on_storage(where)
            if taken:
                self._fused_adamw(p, taken, self.weight_decay, (g, m, v))
            return [k for k in where if k not in set(taken)]
        self.bind_state(where)
        self._fused_adamw(_pick(self.batch.p, where), where, self.weight_decay)
        return []


def _adam_direction(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    eps: float,
    nesterov: bool,
) -> list[Tensor]:
    """Update the moments; the Adam step ``-lr / bc1 * numer / denom`` of every tensor."""
    t = _float64(torch.stack([s.reshape(()) for s in steps]))
    bias_correction1 = 1 - torch.pow(beta1, t)
    bias_correction2 = 1 - torch.pow(beta2, t)
    neg_step_size = (-lr if not isinstance(lr, Tensor) else -lr.to(t)) / bias_correction1
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    # Per-tensor factors are rounded once to the tensors' dtype (what eager torch does with
    # a 0-dim operand; under torch.compile it keeps the math in that dtype).
    dtype = exp_avg_sqs[0].dtype
    torch._foreach_div_(denom, list(bias_correction2.sqrt().to(dtype).unbind(0)))
    torch._foreach_add_(denom, eps)
    if nesterov:
        numer = list(torch._foreach_mul(exp_avgs, beta1))
        torch._foreach_add_(numer, grads, alpha=1 - beta1)
    else:
        numer = exp_avgs
    direction = list(torch._foreach_div(numer, denom))
    torch._foreach_mul_(direction, list(neg_step_size.to(dtype).unbind(0)))
    return direction


_ONE_PASS_MIN_NUMEL = 1 << 14
"""Tensors at least this large get the one-pass momentum update (a call of their own)."""


def _momentum_update(
    buffers: list[Tensor], grads: list[Tensor], momentum: float, dampening: float
) -> None:
    """``buf <- momentum * buf + (1 - dampening) * g`` in place."""
    if dampening == 0:
        # One pass (``g + momentum * buf`` written over ``buf``) for large tensors; small
        # ones stay batched, where the per-call cost outweighs the extra pass.
        small = [i for i, b in enumerate(buffers) if b.numel() < _ONE_PASS_MIN_NUMEL]
        for i, b in enumerate(buffers):
            if b.numel() >= _ONE_PASS_MIN_NUMEL:
                torch.add(grads[i], b, alpha=momentum, out=b)
        buffers, grads = _pick(buffers, small), _pick(grads, small)
    if buffers:
        # A 0-dim tensor factor: on CPU, a float one costs a conversion per tensor.
        factor = torch.full((), momentum, dtype=buffers[0].dtype, device=buffers[0].device)
        torch._foreach_mul_(buffers, factor)
        torch._foreach_add_(buffers, grads, alpha=1 - dampening)


class _SGDPRule(_Rule):
    def __init__(
        self,
        batch: _Batch,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        buffers: Sequence[Tensor],
        *,
        lr: Scalar,
        momentum: float,
        dampening: float,
        weight_decay: float,
        nesterov: bool,
        eps: float,
        wd_ratio: float,
        variant: str,
        maximize: bool,
        fused: bool,
    ):
        super().__init__(batch, params, grads, {"momentum_buffer": buffers})
        self.buf = self.state["momentum_buffer"]
        self.fused = fused
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.eps = weight_decay, nesterov, eps
        self.wd_ratio, self.maximize = wd_ratio, maximize
        self.alpha = -lr if not isinstance(lr, Tensor) else lr.neg()
        self.decay = lr * (weight_decay / (1 - momentum))
        self.project_direction = variant == "authors" and not nesterov

    def direction(self, where: Sequence[int]) -> list[Tensor]:
        self.bind_state(where)
        signed, buffers = _signed(_pick(self.g, where), self.maximize), _pick(self.buf, where)
        _momentum_update(buffers, signed, self.momentum, self.dampening)
        if not self.nesterov:
            return self.buf
        z = list(self.buf)
        for i, zi in zip(where, torch._foreach_add(signed, buffers, alpha=self.momentum)):
            z[i] = zi
        return z

    def finish_unprojected(self, where: Sequence[int]) -> list[int]:
        # Without momentum the fused kernel leaves the buffer alone, which must hold the
        # gradient: those batches take the general path. 16-bit storage runs on the float32
        # copies: torch 2.13's CPU fused SGD kernel computes wrong values on 16-bit tensors.
        if self.momentum == 0.0 or not self.fused:
            return list(where)
        self.bind_state(where)
        params, grads, buffers = _pick_all((self.batch.p, self.g, self.buf), where)
        decay_in_place(params, self.decay)
        torch._fused_sgd_(
            params,
            grads,
            buffers,
            weight_decay=0.0,
            momentum=self.momentum,
            lr=self.lr,
            dampening=self.dampening,
            nesterov=self.nesterov,
            maximize=self.maximize,
            is_first_step=False,
        )
        return []

    def finish_projected(self, where: Sequence[int], projected: Sequence[int]) -> None:
        # (the one-pass finish below gives every tensor the projected tensors' decay)
        shortcut = self.momentum != 0.0 and self.project_direction and self.fused
        if not shortcut or len(where) != len(projected):
            super().finish_projected(where, projected)
            return
        # The buffer is projected in place; what is left is a momentum-free SGD step whose
        # coupled decay equals the decoupled one here: one fused pass.
        z = self.direction(where)
        batch = self.batch
        coef = shift_coefficients(
            z, batch.plan, self.decision, eps=self.eps, tensors=projected, scratch=self.scratch
        )
        project_in_place(z, batch.plan, self.decision, coef, tensors=where)
        torch._fused_sgd_(
            _pick(batch.p, where),
            _pick(z, where),
            [],
            weight_decay=self.weight_decay * self.wd_ratio / (1 - self.momentum),
            momentum=0.0,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=False,
        )


def _fused_kernels(device: torch.device) -> ModuleType | None:
    """The fused kernels that run on ``device`` (``None``: none do): the Triton kernels on
    CUDA, or on CPU when triton is interpreted there (``TRITON_INTERPRET=1``, for testing
    them); else on CPU the C++ kernel, where decisions are read on the host anyway."""
    if _triton.available(device):
        return _triton
    if _batched_path(device) is _host_split and _cpu.available(device):
        return _cpu
    return None


def _fused_split(
    fused: bool | None,
    sharded: bool,
    index: list[int],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *states: Sequence[Tensor],
) -> tuple[ModuleType | None, list[int], list[int]]:
    """Split a batch into the positions the fused kernels take and the others.

    Returns the kernel module (:func:`_fused_kernels`), the positions it takes and the
    rest. ``fused=None`` uses the kernels wherever they run, for every tensor they take;
    ``fused=True`` requires them: on CUDA for the whole batch, on CPU the C++ kernel must
    be available (tensors it does not take go to the other paths); ``False`` never uses
    them. DTensor shards never take them.
    """
    device = params[index[0]].device
    if sharded:
        if fused and device.type == "cuda":
            raise ValueError("fused=True: the Triton kernels do not take DTensor parameters")
        return None, [], index
    kernels = None if fused is False or is_compiling() else _fused_kernels(device)
    if kernels is None:
        if fused and device.type == "cuda":
            reason = _triton.import_error() or "they do not run on this device"
            raise RuntimeError(f"fused=True: the Triton kernels are unavailable ({reason})")
        if fused and device.type == "cpu" and _batched_path(device) is _host_split:
            reason = _cpu.import_error() or "ADAMP_TORCH_CPU_KERNEL=0"
            raise RuntimeError(f"fused=True: the fused CPU kernel is unavailable ({reason})")
        return None, [], index
    required = fused and device.type == "cuda"
    taken: list[int] = []
    rest: list[int] = []
    for i in index:
        unfit = kernels.unsupported_reason(params[i], grads[i], *(s[i] for s in states))
        if unfit is not None and required:
            raise ValueError(f"fused=True: params[{i}] cannot take the Triton kernels: {unfit}")
        (rest if unfit is not None else taken).append(i)
    return kernels, taken, rest


def _kernel_options(kernels: ModuleType, workspace: Workspace | None) -> dict[str, Any]:
    """What a fused kernel call takes besides the step's arguments: the Triton kernels'
    tables live in the workspace; the CPU kernel keeps none."""
    return {"workspace": _triton_workspace(workspace)} if kernels is _triton else {}


def _triton_workspace(workspace: Workspace | None) -> _triton.Workspace | None:
    return None if workspace is None else workspace.part("triton", _triton.Workspace)


# -- the public functions and their dispatch ------------------------------------------------------


def _batches(
    params: Sequence[Tensor], positions: Sequence[int], shardings: _Shardings
) -> list[list[int]]:
    """``positions`` grouped by the (device, dtype, device mesh) of their parameter."""
    groups: dict[tuple[torch.device, torch.dtype, object], list[int]] = {}
    for i in positions:
        mesh = _sharded.batch_key(shardings[i]) if shardings else None
        groups.setdefault((params[i].device, params[i].dtype, mesh), []).append(i)
    return list(groups.values())


#: Each parameter's :class:`~adamp_torch._sharded.Sharding` (``None``: no DTensor at all).
_Shardings = Sequence["_sharded.Sharding | None"] | None


def _sharded_path(rule: _Rule, shardings: Sequence[_sharded.Sharding | None], delta: float) -> None:
    """Finish a batch of DTensor shards: the sums the test and the projection need are
    completed across ranks (packed, one ``all_reduce`` per mesh dimension; for every
    group of a step at once inside :func:`~adamp_torch._sharded.one_reduction`), and every
    decision stays on the device."""
    batch = rule.batch
    z = rule.direction(range(len(batch.p)))
    stats = _sharded.Statistics(
        batch.p, rule.g, z, batch.plan, shardings, delta=delta, eps=rule.eps
    )

    def finish(stats: _sharded.Statistics) -> None:
        decision, coef = stats.decide()
        apply_update(batch.p, z, batch.plan, decision, coef, **rule.update)
        batch.finish()

    _sharded.submit(stats, finish)


def _is_sharded(shardings: _Shardings, index: Sequence[int]) -> bool:
    return bool(shardings) and shardings[index[0]] is not None  # type: ignore[index]


def _finish(rule: _Rule, index: Sequence[int], shardings: _Shardings, delta: float) -> None:
    """Run the batched path that fits the batch, then write working copies back."""
    if shardings and _is_sharded(shardings, index):
        _sharded_path(rule, [shardings[i] for i in index], delta)  # finishes the batch
        return
    _batched_path(rule.batch.device)(rule)
    rule.batch.finish()


def _localize(
    params: list[Tensor], others: Sequence[list[Tensor]]
) -> tuple[list[Tensor], list[list[Tensor]], _Shardings]:
    """DTensors replaced by their local shards (see ``_sharded``); no-op without them."""
    local = _sharded.localize(params, others)
    if local is None:
        return params, list(others), None
    return local


def _screen(
    params: Sequence[Tensor], part: Sequence[int], grads: Sequence[Tensor], eps: float
) -> tuple[Sequence[Tensor], float] | None:
    """What :class:`_Batch` screens short rows with: only where decisions are read on
    the host anyway (the screen reads a sample of values)."""
    return (grads, eps) if _batched_path(params[part[0]].device) is _host_split else None


def _batched_path(device: torch.device) -> Callable[[_Rule], None]:
    """Which batched path finishes a batch on ``device`` (``foreach=False`` aside)."""
    if device.type == "cpu" and HOST_DECISIONS and not is_compiling():
        return _host_split
    return _multi_tensor


def _check_inputs(
    name: str,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: dict[str, Sequence[Tensor]],
    steps: Sequence[Tensor] | None = None,
    shardings: _Shardings = None,
) -> list[int]:
    """Check every list against ``params``; the positions of tensors to update.

    Gradients and state must be shaped, typed and placed like their parameter (a fused
    kernel would otherwise write out of bounds); zero-size tensors are left alone, except
    empty shards of a sharded tensor, whose rank still takes part in the sums.
    """
    lists = {"grads": grads, **states}
    if any(len(t) != len(params) for t in (*lists.values(), *([] if steps is None else [steps]))):
        raise ValueError(f"{name}: all tensor lists must have the same length")
    for i, p in enumerate(params):
        for key, tensors in lists.items():
            t = tensors[i]
            if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device:
                raise ValueError(
                    f"{name}: {key}[{i}] is {_describe(t)} but params[{i}] is {_describe(p)}"
                )
    return [i for i, p in enumerate(params) if p.numel() > 0 or (shardings and shardings[i])]


def _describe(t: Tensor) -> str:
    return f"{t.dtype} of shape {tuple(t.shape)} on {t.device}"


def _scalar_lr(lr: float | Tensor) -> Scalar:
    """A one-element tensor lr as a 0-dim tensor (what the fused kernels take)."""
    return lr.reshape(()) if isinstance(lr, Tensor) else lr


def adamp(
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
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
    workspace: Workspace | None = None,
) -> None:
    """One AdamP step, in place (see :class:`adamp_torch.AdamP` for the algorithm).

    Args:
        params: parameters; axis 0 is the output channel. DTensors are stepped on their
            local shards, with the statistics of the test summed across ranks; every rank
            of their mesh must make the same call.
        grads: their gradients (dense; same shape, dtype, device and placements).
        exp_avgs: first moments ``m`` (updated).
        exp_avg_sqs: second moments ``v`` (updated).
        state_steps: step counts as 0-dim tensors on the parameters' devices, incremented
            here before use (float32 counts are exact up to 2**24 steps).
        lr: learning rate, a float or a one-element tensor.
        beta1, beta2: moment decay rates.
        eps: added to the bias-corrected ``sqrt(v)``; also the eps of the projection.
        weight_decay: decoupled weight decay, multiplied by ``wd_ratio`` on projected tensors.
        delta: scale-invariance threshold (``|cos| < delta / sqrt(row length)``).
        wd_ratio: weight decay factor for projected tensors.
        nesterov: Nesterov momentum (``beta1 * m + (1 - beta1) * g`` as numerator).
        maximize: ascend instead of descend.
        foreach: ``None``/``True``: one batch per (device, dtype); ``False``: one tensor
            at a time. Same numbers either way.
        fused: the fused kernels: ``None`` = where available (the Triton kernels on CUDA,
            the C++ kernel on CPU, else torch's fused AdamW kernel for the moments: not
            Nesterov, not under ``torch.compile``); ``False`` = foreach ops only; ``True`` =
            require them (on CUDA the Triton kernels, for every tensor; on CPU the C++
            kernel, for every tensor it takes).
        workspace: reusable scratch buffers and constants (see :class:`Workspace`); the
            optimizer classes keep one. ``None`` allocates per call.
    """
    params, (grads, exp_avgs, exp_avg_sqs), shardings = _localize(
        params, (grads, exp_avgs, exp_avg_sqs)
    )
    live = _check_inputs(
        "adamp",
        params,
        grads,
        {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs},
        state_steps,
        shardings,
    )
    check_fused(fused, nesterov)
    hparams: dict[str, Any] = dict(
        lr=_scalar_lr(lr),
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        wd_ratio=wd_ratio,
        nesterov=nesterov,
        maximize=maximize,
    )
    lists = (params, grads, exp_avgs, exp_avg_sqs, state_steps)
    for index in _batches(params, live, shardings):
        sharded = _is_sharded(shardings, index)
        if foreach is False and not sharded:
            _single_tensor_adamp(*_pick_all(lists, index), delta=delta, **hparams)
            continue
        kernels, taken, index = _fused_split(
            fused, sharded, index, params, grads, exp_avgs, exp_avg_sqs
        )
        if kernels is not None and taken:
            kernels.adamp_step(
                *_pick_all(lists, taken),
                delta=delta,
                **hparams,
                **_kernel_options(kernels, workspace),
            )
        if not index:
            continue
        device, dtype = params[index[0]].device, compute_dtype(params[index[0]].dtype)
        use_fused = (
            fused is not False
            and not nesterov
            and not is_compiling()
            and fused_adam_available(device, dtype)
        )
        if fused and not use_fused:
            raise RuntimeError("fused=True: torch's fused AdamW kernel is unavailable here")
        torch._foreach_add_(_pick(state_steps, index), 1)
        for part in (
            [index] if _whole_batch(params, index, sharded) else _sub_batches(params, index)
        ):
            screen = None if sharded else _screen(params, part, grads, eps)
            batch = _Batch(part, params, workspace, delta, screen)
            rule = _AdamPRule(
                batch,
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                _pick(state_steps, part),
                **hparams,
                fused=use_fused,
            )
            _finish(rule, part, shardings, delta)


def sgdp(
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
    variant: str = "authors",
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
    workspace: Workspace | None = None,
) -> None:
    """One SGDP step, in place (see :class:`adamp_torch.SGDP` for the algorithm).

    Args:
        params: parameters; axis 0 is the output channel (DTensors as in :func:`adamp`).
        grads: their gradients (dense; same shape, dtype, device and placements).
        momentum_buffers: momentum buffers (zeros before the first step; updated).
        lr: learning rate, a float or a one-element tensor.
        momentum: momentum factor.
        dampening: dampening of the gradient in the buffer.
        weight_decay: decoupled weight decay, scaled by ``wd_ratio / (1 - momentum)`` on
            projected tensors and by ``1 / (1 - momentum)`` elsewhere.
        nesterov: Nesterov momentum (direction ``g + momentum * buf``).
        eps: the projection's eps.
        delta: scale-invariance threshold.
        wd_ratio: weight decay factor for projected tensors.
        variant: ``"authors"`` (the authors' package: without Nesterov the momentum
            buffer itself is projected) or ``"paper"`` (Algorithm 1: only the update).
        maximize: ascend instead of descend.
        foreach: as in :func:`adamp`.
        fused: the fused kernels: ``None`` = where available (the Triton kernels on CUDA;
            on CPU the C++ kernel, else torch's fused SGD kernel for unprojected tensors
            when ``momentum > 0``); ``False`` = foreach ops only; ``True`` = require them
            (on CUDA the Triton kernels for every tensor, an error where impossible; on
            CPU the C++ kernel, for every tensor it takes).
        workspace: as in :func:`adamp`.
    """
    params, (grads, momentum_buffers), shardings = _localize(params, (grads, momentum_buffers))
    live = _check_inputs(
        "sgdp", params, grads, {"momentum_buffers": momentum_buffers}, shardings=shardings
    )
    validate_variant(variant)
    hparams: dict[str, Any] = dict(
        lr=_scalar_lr(lr),
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        eps=eps,
        wd_ratio=wd_ratio,
        variant=variant,
        maximize=maximize,
    )
    lists = (params, grads, momentum_buffers)
    for index in _batches(params, live, shardings):
        sharded = _is_sharded(shardings, index)
        if foreach is False and not sharded:
            _single_tensor_sgdp(*_pick_all(lists, index), delta=delta, **hparams)
            continue
        kernels, taken, index = _fused_split(fused, sharded, index, params, grads, momentum_buffers)
        if kernels is not None and taken:
            kernels.sgdp_step(
                *_pick_all(lists, taken),
                delta=delta,
                **hparams,
                **_kernel_options(kernels, workspace),
            )
        if not index:
            continue
        for part in (
            [index] if _whole_batch(params, index, sharded) else _sub_batches(params, index)
        ):
            screen = None if sharded else _screen(params, part, grads, eps)
            batch = _Batch(part, params, workspace, delta, screen)
            rule = _SGDPRule(
                batch, params, grads, momentum_buffers, **hparams, fused=fused is not False
            )
            _finish(rule, part, shardings, delta)
