"""How one parameter's memory is seen by the kernel.

AdamP works on *rows*: one row per output channel (axis 0 of the tensor). The kernel
wants every per-element operation on contiguous memory and every per-row sum as one
reduction, whatever the tensor's strides are. So each parameter gets a :class:`Frame`:
its dimensions reordered into memory order (largest stride first, the *kernel shape*),
which for any dense tensor is a contiguous view. Folded further into ``(A, R, B)``,
where ``R`` is the size of axis 0 and ``A`` / ``B`` collect the dimensions stored outside
/ inside it, a row's sum is a reduction over dims ``(0, 2)``. A contiguous tensor is
``(1, R, n)`` (its kernel shape is its own shape); a ``channels_last`` convolution weight
is also ``(1, R, n)`` (axis 0 is outermost there too); a Keras kernel viewed in PyTorch
order (output channel innermost in memory) is ``(A, R, 1)``.

Tensors whose memory cannot be seen that way (gaps, overlaps, a dtype the math does
not run in, such as float16) get a contiguous working copy in the compute dtype that is
written back after the step: :class:`Slot` hides the difference. Working copies live in
scratch buffers as large as one bounded batch (``functional._sub_batches``), never as
large as the model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from adamp_core.functional import compute_dtype as core_compute_dtype

__all__ = ["Frame", "Scalar", "Slot", "compute_dtype", "is_compiling", "kernel_unfit"]

#: A learning rate or factor: a Python float or a 0-dim tensor.
Scalar = float | Tensor

_COMPUTE_DTYPES = {
    d: getattr(torch, core_compute_dtype(str(d).removeprefix("torch.")))
    for d in (torch.float16, torch.bfloat16)
}


def is_compiling() -> bool:
    """Whether the code is being traced by ``torch.compile`` (dynamo)."""
    return bool(torch.compiler.is_compiling())


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """:func:`adamp_core.functional.compute_dtype` for torch dtypes."""
    return _COMPUTE_DTYPES.get(dtype, dtype)


@dataclass(frozen=True)
class Frame:
    """Memory order and row folding of one parameter (see the module doc)."""

    shape: tuple[int, ...]
    """Sizes of the parameter."""
    perm: tuple[int, ...]
    """Dimensions of the parameter in memory order (outermost first)."""
    identity: bool
    """Whether ``perm`` is the identity (the kernel shape is the parameter's shape)."""
    kernel_shape: tuple[int, ...]
    """``shape`` permuted by ``perm``: the shape of the contiguous tensors the kernel uses."""
    shape3: tuple[int, int, int]
    """``(A, R, B)``: elements stored outside axis 0, rows, elements stored inside it."""
    projectable: bool
    """Whether the tensor has two or more dimensions (1-D tensors are never projected)."""

    @staticmethod
    def of(param: Tensor, compiling: bool | None = None) -> Frame:
        """The frame of ``param`` (from its sizes and strides; no data is read).

        ``compiling``: whether ``torch.compile`` is tracing (``None``: ask; callers that
        build many frames ask once).
        """
        if is_compiling() if compiling is None else compiling:  # dynamo: no caches
            return _build_frame(tuple(param.shape), param.stride())
        return _frame(tuple(param.shape), param.stride())

    @property
    def rows(self) -> int:
        """Number of rows the per-row statistics have for this tensor (0 if never projected)."""
        return self.shape3[1] if self.projectable else 0

    @property
    def row_length(self) -> int:
        """Elements per output-channel row (the ``n`` of ``delta / sqrt(n)``)."""
        return self.shape3[0] * self.shape3[2]

    @property
    def numel(self) -> int:
        return math.prod(self.shape3)

    def kernel_view(self, tensor: Tensor) -> Tensor | None:
        """``tensor`` in kernel shape sharing its memory, or ``None`` if impossible."""
        if self.identity and tensor.is_contiguous():  # the common case, kept cheap
            return tensor
        if tuple(tensor.shape) != self.shape:
            return None
        permuted = tensor.permute(self.perm)
        return permuted if permuted.is_contiguous() else None

    @property
    def rows_first(self) -> bool:
        """Whether rows are contiguous in memory (``A == 1``: the row view is ``(R, 1, B)``)."""
        return self.shape3[0] == 1

    def row_view(self, data: Tensor) -> Tensor:
        """Kernel-shape ``data`` as ``(R, 1, B)`` (rows contiguous, the shape of a batched
        row-by-column product) or ``(A, R, B)``."""
        a, r, b = self.shape3
        return data.view(r, 1, b) if a == 1 else data.view(a, r, b)

    def column_view(self, per_row: Tensor) -> Tensor:
        """Shape ``R`` per-row values (``(R,)`` or ``(R, 1, 1)``) to broadcast against
        :meth:`row_view`."""
        if self.rows_first:
            return per_row if per_row.dim() == 3 else per_row.view(-1, 1, 1)
        return per_row.view(-1, 1)


def _build_frame(shape: tuple[int, ...], stride: tuple[int, ...]) -> Frame:
    ndim = len(shape)
    if ndim < 2:
        ident = tuple(range(ndim))
        return Frame(shape, ident, True, shape, (1, 1, math.prod(shape)), False)
    # Sort by decreasing stride; size-1 dims have arbitrary strides and go last.
    perm = tuple(sorted(range(ndim), key=lambda d: (shape[d] == 1 and d != 0, -stride[d])))
    axis = perm.index(0)
    sizes = tuple(shape[d] for d in perm)
    return Frame(
        shape,
        perm,
        perm == tuple(range(ndim)),
        sizes,
        (math.prod(sizes[:axis]), shape[0], math.prod(sizes[axis + 1 :])),
        True,
    )


@functools.lru_cache(maxsize=4096)
def _frame(shape: tuple[int, ...], stride: tuple[int, ...]) -> Frame:
    return _build_frame(shape, stride)


class Slot:
    """One tensor as the kernel sees it: contiguous, in kernel shape and compute dtype.

    ``Slot(t, frame, dtype).data`` is ``t`` itself (or a permuted view of it) when ``t``
    already has that layout and dtype, else a working copy; :meth:`write_back` copies a
    working copy back into ``t`` (rounding to ``t``'s dtype) and does nothing for a view.
    ``into``: where the working copy goes (a kernel-shape tensor of ``dtype``, typically a
    view of a reused scratch buffer); a fresh tensor without it.
    """

    __slots__ = ("copied", "data", "target")

    def __init__(
        self, tensor: Tensor, frame: Frame, dtype: torch.dtype, into: Tensor | None = None
    ):
        self.target = tensor
        view = frame.kernel_view(tensor) if tensor.dtype == dtype else None
        self.copied = view is None
        if view is None:
            permuted = tensor.permute(frame.perm) if frame.perm else tensor
            if into is None:
                into = torch.empty(frame.kernel_shape, dtype=dtype, device=tensor.device)
            view = into.copy_(permuted)
        self.data: Tensor = view

    def write_back(self, frame: Frame) -> None:
        """Copy a working copy back into the original tensor (no-op for a view)."""
        if self.copied:
            permuted = self.target.permute(frame.perm) if frame.perm else self.target
            permuted.copy_(self.data)


# -- what the fused kernels take ----------------------------------------------------------

_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _rows_in_order(t: Tensor) -> bool:
    """Whether ``t``'s memory is its rows (axis 0) one after the other, each a dense block:
    the tensor with axis 0 first and the other axes by decreasing stride is contiguous."""
    if t.dim() < 2:
        return t.is_contiguous()
    strides = t.stride()
    rest = sorted(range(1, t.dim()), key=lambda d: -strides[d])
    return t.permute(0, *rest).is_contiguous()


def _same_strides(a: Tensor, b: Tensor) -> bool:
    """Same element order in memory (strides of size-1 dimensions do not matter)."""
    return (
        all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)
        and a.shape == b.shape
    )


def kernel_unfit(param: Tensor, grad: Tensor, *state: Tensor) -> str | None:
    """``None`` if a fused kernel (Triton or the CPU kernel) can walk ``param``, ``grad``
    and ``state`` as flat memory, else why not.

    Taken: a dense, non-empty float32/float64/bfloat16/float16 tensor whose rows (axis 0)
    are contiguous blocks in order (contiguous, or e.g. ``channels_last``), with a dense
    gradient and state tensors of the same device, dtype, shape and strides.
    """
    if param.dtype not in _KERNEL_DTYPES:
        return f"dtype {param.dtype}"
    if param.layout != torch.strided:
        return f"layout {param.layout}"
    if param.numel() == 0:
        return "empty tensor"
    if param.is_conj() or param.is_neg():
        return "conjugate or negative view"
    if not _rows_in_order(param):
        return "rows are not contiguous blocks in order (axis 0 not outermost)"
    others = [("grad", grad)] + [(f"state {i}", s) for i, s in enumerate(state)]
    for name, other in others:
        if other.layout != torch.strided or other.is_sparse:
            return f"{name} is not dense"
        if other.device != param.device or other.dtype != param.dtype:
            return f"{name} is {other.dtype} on {other.device}, not {param.dtype} on {param.device}"
        if not _same_strides(param, other):
            return f"{name} has other strides or shape than the parameter"
        if other.is_conj() or other.is_neg():
            return f"{name} is a conjugate or negative view"
    return None
