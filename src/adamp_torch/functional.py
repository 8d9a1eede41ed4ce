"""AdamP and SGDP as functions over lists of tensors, in the style of ``torch.optim.adamw``.

Everything is updated in place: parameters, moments, momentum buffers and step counts.
Axis 0 of each tensor is its output channel. Tensors may be any strided layout
(``channels_last``, transposed or permuted views); updates land in the tensors given.
Float16 and bfloat16 tensors are updated with float32 math and rounded once at the end.

Tensors are grouped by (device, dtype); each group is processed as a batch (``foreach``
``None`` or ``True``) or one tensor at a time (``foreach=False``). Both run the same
code: the one-at-a-time path is the batched path called with lists of length one.

On CUDA (and any accelerator) and under ``torch.compile`` nothing is read back to the
host: the projection test is decided on the device with ``torch.where``. On CPU, where
reading a value costs nothing, the per-tensor outcome of the test is read back, and the
tensors it leaves unprojected are finished by torch's fused AdamW / SGD kernels in one
pass instead of going through the projection (same numbers, fewer passes over memory).
``lr`` may be a float or a 0-dim tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._layout import Frame, Slot, compute_dtype, is_compiling
from ._projection import (
    Decision,
    Plan,
    Workspace,
    apply_update,
    decay_in_place,
    decide,
    project_and_apply,
    project_in_place,
    shift_coefficients,
)

__all__ = ["Workspace", "adamp", "sgdp", "fused_adam_available"]

Scalar = float | Tensor


def fused_adam_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused AdamW kernel can compute AdamP's moments for this group."""
    return device.type in ("cpu", "cuda") and dtype in (torch.float32, torch.float64)


def _host_decisions(device: torch.device) -> bool:
    """Whether a batch on ``device`` reads its projection decisions back to the host.

    Only on CPU (the values are already there) and never while ``torch.compile`` traces
    (a graph break). Elsewhere the device-side path runs: no host sync.
    """
    return device.type == "cpu" and not is_compiling()


def _split(decision: Decision) -> tuple[list[int], list[int]]:
    """Positions of the projected and of the unprojected tensors, read on the host."""
    projected = decision.on_host()
    return (
        [i for i, x in enumerate(projected) if x],
        [i for i, x in enumerate(projected) if not x],
    )


def _pick(tensors: Sequence[Tensor], positions: Sequence[int]) -> list[Tensor]:
    return [tensors[i] for i in positions]


def _check_lists(name: str, first: Sequence[Tensor], *others: Sequence[Tensor]) -> None:
    for other in others:
        if len(other) != len(first):
            raise ValueError(f"{name}: all tensor lists must have the same length")


def _batches(params: Sequence[Tensor], foreach: bool | None) -> list[list[int]]:
    """Indices grouped by (device, dtype); split into singletons when ``foreach=False``."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    if foreach is False:
        return [[i] for idx in groups.values() for i in idx]
    return list(groups.values())


class _Batch:
    """One batch of tensors brought into the kernel's layout (see ``_layout``)."""

    def __init__(
        self,
        index: Sequence[int],
        params: Sequence[Tensor],
        workspace: Workspace | None,
        delta: float,
    ):
        self.index = list(index)
        first = params[self.index[0]]
        self.device = first.device
        self.dtype = compute_dtype(first.dtype)
        compiling = is_compiling()
        self.frames = [Frame.of(params[i], compiling) for i in self.index]
        self.workspace = None if compiling else workspace
        if self.workspace is not None:
            self.plan = self.workspace.plan(self.frames, delta, self.dtype, self.device)
        else:
            self.plan = Plan.build(self.frames, delta, self.dtype, self.device)
        self.written: list[tuple[Slot, Frame]] = []

    def bind(self, tensors: Sequence[Tensor], write: bool) -> list[Tensor]:
        """The batch's entries of ``tensors`` in kernel layout (written back if ``write``)."""
        out = []
        for i, frame in zip(self.index, self.frames):
            tensor = tensors[i]
            if frame.identity and tensor.dtype == self.dtype and tensor.is_contiguous():
                out.append(tensor)  # already in kernel layout: no slot, nothing to write back
                continue
            slot = Slot(tensor, frame, self.dtype)
            if write and slot.copied:
                self.written.append((slot, frame))
            out.append(slot.data)
        return out

    def scratch(self, name: str) -> list[Tensor]:
        """One kernel-layout tensor per entry, views of one flat buffer reused between steps.

        One flat buffer is cheaper than many small ones (a single fill, no page faults
        after the first step); it only grows, so memory stays bounded whichever subset of
        parameters has gradients. The contents are uninitialised.
        """
        sizes = [f.numel for f in self.frames]
        shape = (sum(sizes),)
        if self.workspace is None:
            flat = torch.empty(shape, dtype=self.dtype, device=self.device)
        else:
            key = (name, self.dtype, self.device)
            flat = self.workspace.at_least(key, shape[0], self.dtype, self.device)[: shape[0]]
        return [part.view(f.kernel_shape) for part, f in zip(flat.split(sizes), self.frames)]

    def product_scratch(self) -> Tensor | None:
        """A flat buffer for the per-row products of ``(A, R, B)`` row views (as large as
        the largest such tensor), kept in the workspace; ``None`` (use temporaries) without
        one, when compiling, or when every row is contiguous (no product is stored then)."""
        sizes = [f.numel for f in self.frames if f.projectable and f.shape3[0] != 1]
        if self.workspace is None or not sizes:
            return None
        key = ("products", self.dtype, self.device)
        return self.workspace.at_least(key, max(sizes), self.dtype, self.device)

    def finish(self) -> None:
        """Write working copies back into the caller's tensors."""
        for slot, frame in self.written:
            slot.write_back(frame)


def _steps_as_float64(steps: Sequence[Tensor], device: torch.device) -> Tensor:
    """The step counts as one float64 vector (bias corrections must not round to float32)."""
    dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.stack([s.reshape(()) for s in steps]).to(dtype)


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
    device: torch.device,
) -> list[Tensor]:
    """Update the moments and return the Adam step ``-lr / bc1 * numer / denom`` per tensor."""
    t = _steps_as_float64(steps, device)
    bias_correction1 = 1 - torch.pow(beta1, t)
    bias_correction2 = 1 - torch.pow(beta2, t)
    neg_step_size = (-lr if not isinstance(lr, Tensor) else -lr.to(t)) / bias_correction1
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    # The per-tensor factors are computed in float64 and rounded once to the tensors'
    # dtype (what eager torch does with a 0-dim operand anyway; under torch.compile it
    # keeps the elementwise math in that dtype instead of promoting it).
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
    """One AdamP step (the authors' package 0.3.0, SPEC.md section 1), in place.

    Args:
        params: parameters; axis 0 is the output channel.
        grads: their gradients (dense, same shapes).
        exp_avgs: first moments ``m`` (updated).
        exp_avg_sqs: second moments ``v`` (updated).
        state_steps: step counts as 0-dim tensors on the parameters' devices, incremented
            here before use (float32 counts are exact up to 2**24 steps).
        lr: learning rate, a float or a 0-dim tensor.
        beta1, beta2: moment decay rates.
        eps: added to the bias-corrected ``sqrt(v)``; also the eps of the projection.
        weight_decay: decoupled weight decay, multiplied by ``wd_ratio`` on projected tensors.
        delta: scale-invariance threshold (``|cos| < delta / sqrt(row length)``).
        wd_ratio: weight decay factor for projected tensors.
        nesterov: Nesterov momentum (``beta1 * m + (1 - beta1) * g`` as numerator).
        maximize: ascend instead of descend.
        foreach: ``None``/``True``: one batch per (device, dtype); ``False``: one tensor
            at a time. Same numbers either way.
        fused: compute the moments with torch's fused AdamW kernel (weight decay 0),
            ``None`` = when available (not Nesterov, CPU or CUDA, not under
            ``torch.compile``); ``False`` = use foreach ops; ``True`` = require it.
        workspace: reusable scratch buffers and constants (see :class:`Workspace`); the
            optimizer classes keep one. ``None`` allocates per call.
    """
    _check_lists("adamp", params, grads, exp_avgs, exp_avg_sqs, state_steps)
    if fused and nesterov:
        raise ValueError("fused=True cannot be combined with nesterov=True")
    for index in _batches(params, foreach):
        batch = _Batch(index, params, workspace, delta)
        use_fused = (
            fused is not False
            and not nesterov
            and not is_compiling()
            and fused_adam_available(batch.device, batch.dtype)
        )
        if fused and not use_fused:
            raise RuntimeError("fused=True: torch's fused AdamW kernel is unavailable here")
        p = batch.bind(params, write=True)
        g = batch.bind(grads, write=False)
        m = batch.bind(exp_avgs, write=True)
        v = batch.bind(exp_avg_sqs, write=True)
        steps = [state_steps[i] for i in batch.index]
        torch._foreach_add_(steps, 1)
        _adamp_batch(
            batch, p, g, m, v, steps,
            lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            wd_ratio=wd_ratio, nesterov=nesterov, maximize=maximize, use_fused=use_fused,
        )  # fmt: skip
        batch.finish()


def _adamp_batch(
    batch: _Batch,
    p: list[Tensor],
    g: list[Tensor],
    m: list[Tensor],
    v: list[Tensor],
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
    use_fused: bool,
) -> None:
    """The AdamP step of one batch in kernel layout (steps already incremented)."""
    scratch = batch.product_scratch()
    decay = lr * weight_decay
    everything = range(len(p))

    def fused_moments(targets: list[Tensor], where: Sequence[int], wd: float) -> None:
        """torch's fused AdamW on ``targets`` with the moments of tensors ``where``."""
        torch._fused_adamw_(
            targets, _pick(g, where), _pick(m, where), _pick(v, where), [],
            _pick(steps, where), lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd,
            eps=eps, amsgrad=False, maximize=maximize,
        )  # fmt: skip

    def direction(where: Sequence[int]) -> list[Tensor]:
        """The Adam step ``Z`` of every tensor (entries outside ``where`` unset)."""
        if not use_fused:
            return _adam_direction(
                _signed(g, maximize), m, v, steps, lr=lr, beta1=beta1, beta2=beta2,
                eps=eps, nesterov=nesterov, device=batch.device,
            )  # fmt: skip
        z = batch.scratch("adamp.direction")
        torch._foreach_zero_(_pick(z, where))
        fused_moments(_pick(z, where), where, 0.0)  # weight decay is applied later
        return z

    if not _host_decisions(batch.device):
        z = direction(everything)
        project_and_apply(
            p, g, z, batch.plan,
            alpha=1.0, decay=decay, wd_ratio=wd_ratio, eps=eps, scratch=scratch,
        )  # fmt: skip
        return
    decision = decide(p, g, batch.plan, eps=eps, scratch=scratch)
    moved, kept = _split(decision)
    if use_fused and kept:
        # Unprojected tensors: AdamP is exactly AdamW there, one fused pass each.
        fused_moments(_pick(p, kept), kept, weight_decay)
    todo = moved if use_fused else everything
    if todo:
        z = direction(todo)
        coef = shift_coefficients(z, batch.plan, decision, eps=eps, tensors=moved, scratch=scratch)
        apply_update(
            p, z, batch.plan, decision, coef,
            alpha=1.0, decay=decay, wd_ratio=wd_ratio, tensors=todo,
        )  # fmt: skip


def _signed(grads: list[Tensor], maximize: bool) -> list[Tensor]:
    """The gradients, negated (new tensors) when maximizing."""
    return list(torch._foreach_neg(grads)) if maximize else grads


_ONE_PASS_MIN_NUMEL = 1 << 14
"""Tensors at least this large get the one-pass momentum update (a call of their own)."""


def _momentum_update(
    buffers: list[Tensor], grads: list[Tensor], momentum: float, dampening: float
) -> None:
    """``buf <- momentum * buf + (1 - dampening) * g`` in place.

    Without dampening this is one pass per tensor (``g + momentum * buf`` written over
    ``buf``) instead of a scaling pass and an accumulating pass.
    """
    if dampening == 0:
        # Small tensors stay batched: there the per-call cost outweighs the extra pass.
        small = [i for i, b in enumerate(buffers) if b.numel() < _ONE_PASS_MIN_NUMEL]
        large = [i for i, b in enumerate(buffers) if b.numel() >= _ONE_PASS_MIN_NUMEL]
        for i in large:
            torch.add(grads[i], buffers[i], alpha=momentum, out=buffers[i])
        buffers = [buffers[i] for i in small]
        grads = [grads[i] for i in small]
    if buffers:
        # A 0-dim tensor factor: on CPU, a float one costs a conversion per tensor.
        factor = torch.full((), momentum, dtype=buffers[0].dtype, device=buffers[0].device)
        torch._foreach_mul_(buffers, factor)
        torch._foreach_add_(buffers, grads, alpha=1 - dampening)


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
    workspace: Workspace | None = None,
) -> None:
    """One SGDP step (SPEC.md section 3), in place.

    Args:
        params: parameters; axis 0 is the output channel.
        grads: their gradients (dense, same shapes).
        momentum_buffers: momentum buffers (zeros before the first step; updated).
        lr: learning rate, a float or a 0-dim tensor.
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
        workspace: as in :func:`adamp`.
    """
    _check_lists("sgdp", params, grads, momentum_buffers)
    if variant not in ("authors", "paper"):
        raise ValueError(f"variant must be 'authors' or 'paper', got {variant!r}")
    for index in _batches(params, foreach):
        batch = _Batch(index, params, workspace, delta)
        p = batch.bind(params, write=True)
        g = batch.bind(grads, write=False)
        buf = batch.bind(momentum_buffers, write=True)
        _sgdp_batch(
            batch, p, g, buf,
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, eps=eps, wd_ratio=wd_ratio, variant=variant, maximize=maximize,
        )  # fmt: skip
        batch.finish()


def _sgdp_batch(
    batch: _Batch,
    p: list[Tensor],
    g: list[Tensor],
    buf: list[Tensor],
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
) -> None:
    """The SGDP step of one batch in kernel layout."""
    decay = lr * (weight_decay / (1 - momentum))
    alpha: Scalar = -lr if not isinstance(lr, Tensor) else lr.neg()
    project_direction = variant == "authors" and not nesterov
    scratch = batch.product_scratch()

    def direction(where: Sequence[int]) -> list[Tensor]:
        """Update the momentum buffers of tensors ``where``; the direction of every
        tensor (entries outside ``where`` are stale)."""
        signed, buffers = _signed(_pick(g, where), maximize), _pick(buf, where)
        _momentum_update(buffers, signed, momentum, dampening)
        if not nesterov:
            return buf
        z = list(buf)
        for i, zi in zip(where, torch._foreach_add(signed, buffers, alpha=momentum)):
            z[i] = zi
        return z

    if not _host_decisions(batch.device):
        project_and_apply(
            p, g, direction(range(len(p))), batch.plan,
            alpha=alpha, decay=decay, wd_ratio=wd_ratio, eps=eps,
            project_direction=project_direction, scratch=scratch,
        )  # fmt: skip
        return
    decision = decide(p, g, batch.plan, eps=eps, scratch=scratch)
    moved, kept = _split(decision)
    # With momentum, torch's fused SGD kernel finishes what is not projected; without
    # it that kernel leaves the buffer alone, which must hold the gradient.
    fused = momentum != 0.0
    if fused and kept:
        # Unprojected tensors: SGDP is SGD with decoupled weight decay there; one fused
        # pass does the momentum, Nesterov and the update.
        kept_p = _pick(p, kept)
        decay_in_place(kept_p, decay)
        torch._fused_sgd_(
            kept_p, _pick(g, kept), _pick(buf, kept), weight_decay=0.0, momentum=momentum,
            lr=lr, dampening=dampening, nesterov=nesterov, maximize=maximize,
            is_first_step=False,
        )  # fmt: skip
    todo = moved if fused else list(range(len(p)))
    if not todo:
        return
    z = direction(todo)
    coef = shift_coefficients(z, batch.plan, decision, eps=eps, tensors=moved, scratch=scratch)
    if fused and project_direction:
        # Projected tensors with the buffer projected in place: what is left is an SGD
        # step without momentum whose (coupled) weight decay is the decoupled one here,
        # P * (1 - lr * wd * wd_ratio / (1 - momentum)) - lr * Z, one fused pass.
        project_in_place(z, batch.plan, decision, coef, tensors=moved)
        torch._fused_sgd_(
            _pick(p, moved), _pick(z, moved), [],
            weight_decay=weight_decay * wd_ratio / (1 - momentum), momentum=0.0, lr=lr,
            dampening=0.0, nesterov=False, maximize=False, is_first_step=False,
        )  # fmt: skip
        return
    apply_update(
        p, z, batch.plan, decision, coef,
        alpha=alpha, decay=decay, wd_ratio=wd_ratio,
        project_direction=project_direction, tensors=todo,
    )  # fmt: skip
