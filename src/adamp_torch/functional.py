"""AdamP and SGDP over lists of tensors, laid out like ``torch.optim.adamw``.

:func:`adamp` and :func:`sgdp` update parameters and state in place. Each checks its
inputs, then picks one named implementation for every (device, dtype) batch:

* ``_single_tensor_adamp`` / ``_single_tensor_sgdp`` (``foreach=False``): one tensor at a
  time, line for line the reference :func:`adamp_core.functional.adamp_step` /
  ``sgdp_step``;
* :func:`_host_split` (CPU): the scale-invariance test is read on the host, where it
  already is; tensors it does not project are finished by torch's fused AdamW / SGD
  kernel in one pass, the others are projected as a batch;
* :func:`_multi_tensor` (CUDA, other accelerators, ``torch.compile``, or
  ``HOST_DECISIONS = False``): the same batch with every decision kept on the device;
* ``_triton`` (``fused`` on CUDA with triton installed, or on CPU under
  ``TRITON_INTERPRET=1``): three fused kernel launches per batch, for the tensors whose
  layout the kernels take (the others take the paths above in the same step).

The two batched paths share their control flow; AdamP and SGDP supply what differs (the
direction and the kernels that finish a tensor) as a :class:`_Rule`. The algorithm is
written out in ``docs/algorithm.md``. Axis 0 of each tensor is its output channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adamp_core.validation import validate_variant

from . import _triton
from ._layout import Frame, Scalar, Slot, compute_dtype, is_compiling
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
    channel = _cosine(pg, pp, gg, eps).amax() < delta / math.sqrt(p.shape[1])
    layer = _cosine(pg.sum(), pp.sum(), gg.sum(), eps) < delta / math.sqrt(p.numel())
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


def _cosine(pg: Tensor, pp: Tensor, gg: Tensor, eps: float) -> Tensor:
    """``|cos|`` from the sums ``<p, g>``, ``|p|^2``, ``|g|^2`` (norms clamped at eps)."""
    return pg.abs() / (pp.sqrt().clamp_min(eps) * gg.sqrt().clamp_min(eps))


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


class _Batch:
    """One (device, dtype) batch of tensors brought into the kernel's layout (``_layout``)."""

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
        self.p = self.bind(params, write=True)

    def bind(self, tensors: Sequence[Tensor], write: bool) -> list[Tensor]:
        """The batch's entries of ``tensors`` in kernel layout (written back if ``write``)."""
        out = []
        for i, frame in zip(self.index, self.frames):
            tensor = tensors[i]
            if frame.identity and tensor.dtype == self.dtype and tensor.is_contiguous():
                out.append(tensor)  # already in kernel layout: nothing to write back
                continue
            slot = Slot(tensor, frame, self.dtype)
            if write and slot.copied:
                self.written.append((slot, frame))
            out.append(slot.data)
        return out

    def scratch(self, name: str) -> list[Tensor]:
        """One uninitialised kernel-layout tensor per entry, views of one flat buffer kept
        in the workspace (one buffer: one fill and no page faults after the first step)."""
        sizes = [f.numel for f in self.frames]
        total = sum(sizes)
        if self.workspace is None:
            flat = torch.empty((total,), dtype=self.dtype, device=self.device)
        else:
            key = (name, self.dtype, self.device)
            flat = self.workspace.at_least(key, total, self.dtype, self.device)[:total]
        return [part.view(f.kernel_shape) for part, f in zip(flat.split(sizes), self.frames)]

    def product_scratch(self) -> Tensor | None:
        """A flat buffer for the per-row products of ``(A, R, B)`` row views, as large as
        the largest such tensor; ``None`` (temporaries) without a workspace or such rows."""
        sizes = [f.numel for f in self.frames if f.projectable and f.shape3[0] != 1]
        if self.workspace is None or not sizes:
            return None
        key = ("products", self.dtype, self.device)
        return self.workspace.at_least(key, max(sizes), self.dtype, self.device)

    def finish(self) -> None:
        """Write working copies back into the caller's tensors."""
        for slot, frame in self.written:
            slot.write_back(frame)


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

    def __init__(self, batch: _Batch, grads: list[Tensor]):
        self.batch = batch
        self.g = grads
        self.scratch = batch.product_scratch()

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

    def finish_unprojected(self, where: Sequence[int]) -> bool:
        """Finish tensors the test does not project with one fused kernel; ``False`` if
        this batch has no such kernel (then they go through :meth:`finish_projected`)."""
        return False

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
    if kept and rule.finish_unprojected(kept):
        todo = moved
    else:
        todo = list(range(len(projected)))
    if todo:
        rule.finish_projected(todo, moved)


class _AdamPRule(_Rule):
    def __init__(
        self,
        batch: _Batch,
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
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
        super().__init__(batch, grads)
        self.m, self.v, self.steps = exp_avgs, exp_avg_sqs, steps
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay, self.wd_ratio = weight_decay, wd_ratio
        self.nesterov, self.maximize, self.fused = nesterov, maximize, fused
        self.alpha = 1.0  # Z already holds -lr / bc1 * m / denom
        self.decay = lr * weight_decay

    def _fused_adamw(
        self, targets: list[Tensor], where: Sequence[int], weight_decay: float
    ) -> None:
        """torch's fused AdamW on ``targets`` with the moments of tensors ``where``."""
        torch._fused_adamw_(
            targets,
            _pick(self.g, where),
            _pick(self.m, where),
            _pick(self.v, where),
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
        if self.fused:
            # The kernel adds the Adam step to its targets: zeroed scratch receives it.
            z = self.batch.scratch("adamp.direction")
            torch._foreach_zero_(_pick(z, where))
            self._fused_adamw(_pick(z, where), where, 0.0)
            return z
        return _adam_direction(
            _signed(self.g, self.maximize),
            self.m,
            self.v,
            self.steps,
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            nesterov=self.nesterov,
        )

    def finish_unprojected(self, where: Sequence[int]) -> bool:
        if not self.fused:
            return False
        # AdamP is exactly AdamW on tensors it does not project.
        self._fused_adamw(_pick(self.batch.p, where), where, self.weight_decay)
        return True


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
        grads: list[Tensor],
        buffers: list[Tensor],
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
        super().__init__(batch, grads)
        self.buf = buffers
        self.fused = fused
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.eps = weight_decay, nesterov, eps
        self.wd_ratio, self.maximize = wd_ratio, maximize
        self.alpha = -lr if not isinstance(lr, Tensor) else lr.neg()
        self.decay = lr * (weight_decay / (1 - momentum))
        self.project_direction = variant == "authors" and not nesterov

    def direction(self, where: Sequence[int]) -> list[Tensor]:
        signed, buffers = _signed(_pick(self.g, where), self.maximize), _pick(self.buf, where)
        _momentum_update(buffers, signed, self.momentum, self.dampening)
        if not self.nesterov:
            return self.buf
        z = list(self.buf)
        for i, zi in zip(where, torch._foreach_add(signed, buffers, alpha=self.momentum)):
            z[i] = zi
        return z

    def finish_unprojected(self, where: Sequence[int]) -> bool:
        # Without momentum the fused kernel leaves the buffer alone, which must hold the
        # gradient: those batches take the general path.
        if self.momentum == 0.0 or not self.fused:
            return False
        params = _pick(self.batch.p, where)
        decay_in_place(params, self.decay)
        torch._fused_sgd_(
            params,
            _pick(self.g, where),
            _pick(self.buf, where),
            weight_decay=0.0,
            momentum=self.momentum,
            lr=self.lr,
            dampening=self.dampening,
            nesterov=self.nesterov,
            maximize=self.maximize,
            is_first_step=False,
        )
        return True

    def finish_projected(self, where: Sequence[int], projected: Sequence[int]) -> None:
        if self.momentum == 0.0 or not self.project_direction or not self.fused:
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


def _fused_split(
    fused: bool | None,
    index: list[int],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *states: Sequence[Tensor],
) -> tuple[list[int], list[int]]:
    """Split a batch into the positions the Triton kernels take and the others.

    ``fused=None`` uses the kernels where they run (CUDA with triton; CPU only under
    ``TRITON_INTERPRET=1``) for every tensor they take; ``fused=True`` on CUDA requires
    them for the whole batch; ``False`` never uses them.
    """
    device = params[index[0]].device
    if fused is False or is_compiling() or not _triton.available(device):
        if fused and device.type == "cuda":
            reason = _triton.import_error() or "they do not run on this device"
            raise RuntimeError(f"fused=True: the Triton kernels are unavailable ({reason})")
        return [], index
    taken: list[int] = []
    rest: list[int] = []
    for i in index:
        unfit = _triton.unsupported_reason(params[i], grads[i], *(s[i] for s in states))
        if unfit is not None and fused and device.type == "cuda":
            raise ValueError(f"fused=True: params[{i}] cannot take the Triton kernels: {unfit}")
        (rest if unfit is not None else taken).append(i)
    return taken, rest


def _triton_workspace(workspace: Workspace | None) -> _triton.Workspace | None:
    return None if workspace is None else workspace.part("triton", _triton.Workspace)


# -- the public functions and their dispatch ------------------------------------------------------


def _batches(params: Sequence[Tensor], positions: Sequence[int]) -> list[list[int]]:
    """``positions`` grouped by the (device, dtype) of their parameter."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i in positions:
        groups.setdefault((params[i].device, params[i].dtype), []).append(i)
    return list(groups.values())


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
) -> list[int]:
    """Check every list against ``params``; the positions of tensors with elements.

    Gradients and state must be shaped, typed and placed like their parameter (a fused
    kernel would otherwise write out of bounds); zero-size tensors are left alone.
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
    return [i for i, p in enumerate(params) if p.numel() > 0]


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
        params: parameters; axis 0 is the output channel.
        grads: their gradients (dense; same shape, dtype and device).
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
            or torch's fused AdamW kernel for the moments: not Nesterov, not under
            ``torch.compile``); ``False`` = foreach ops only; ``True`` = require them (on
            CUDA the Triton kernels, for every tensor).
        workspace: reusable scratch buffers and constants (see :class:`Workspace`); the
            optimizer classes keep one. ``None`` allocates per call.
    """
    live = _check_inputs(
        "adamp", params, grads, {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}, state_steps
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
    for index in _batches(params, live):
        if foreach is False:
            _single_tensor_adamp(*_pick_all(lists, index), delta=delta, **hparams)
            continue
        taken, index = _fused_split(fused, index, params, grads, exp_avgs, exp_avg_sqs)
        if taken:
            workspace_ = _triton_workspace(workspace)
            _triton.adamp_step(
                *_pick_all(lists, taken), delta=delta, **hparams, workspace=workspace_
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
        batch = _Batch(index, params, workspace, delta)
        steps = _pick(state_steps, index)
        torch._foreach_add_(steps, 1)
        rule = _AdamPRule(
            batch,
            batch.bind(grads, write=False),
            batch.bind(exp_avgs, write=True),
            batch.bind(exp_avg_sqs, write=True),
            steps,
            **hparams,
            fused=use_fused,
        )
        _batched_path(batch.device)(rule)
        batch.finish()


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
        params: parameters; axis 0 is the output channel.
        grads: their gradients (dense; same shape, dtype and device).
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
            on CPU torch's fused SGD kernel for unprojected tensors when ``momentum > 0``);
            ``False`` = foreach ops only; ``True`` = on CUDA the Triton kernels for every
            tensor (an error where impossible; on CPU the same as ``None``).
        workspace: as in :func:`adamp`.
    """
    live = _check_inputs("sgdp", params, grads, {"momentum_buffers": momentum_buffers})
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
    for index in _batches(params, live):
        if foreach is False:
            _single_tensor_sgdp(*_pick_all(lists, index), delta=delta, **hparams)
            continue
        taken, index = _fused_split(fused, index, params, grads, momentum_buffers)
        if taken:
            workspace_ = _triton_workspace(workspace)
            _triton.sgdp_step(
                *_pick_all(lists, taken), delta=delta, **hparams, workspace=workspace_
            )
        if not index:
            continue
        batch = _Batch(index, params, workspace, delta)
        rule = _SGDPRule(
            batch,
            batch.bind(grads, write=False),
            batch.bind(momentum_buffers, write=True),
            **hparams,
            fused=fused is not False,
        )
        _batched_path(batch.device)(rule)
        batch.finish()
