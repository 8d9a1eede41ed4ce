"""How one parameter's memory is seen by the kernel: a 3-D ``(A, R, B)`` frame.

AdamP works on *rows*: one row per output channel (axis 0 of the tensor). The kernel
wants every per-element operation on contiguous memory and every per-row sum as one
reduction, whatever the tensor's strides are. So each parameter gets a :class:`Frame`:
its dimensions reordered into memory order (largest stride first), then folded into
``(A, R, B)`` where ``R`` is the size of axis 0 and ``A`` / ``B`` collect the dimensions
stored outside / inside it. A contiguous tensor is ``(1, R, n)``; a ``channels_last``
convolution weight is also ``(1, R, n)`` (axis 0 is outermost there too); a Keras
kernel viewed in PyTorch order (output channel innermost in memory) is ``(A, R, 1)``.
A row's sum is a reduction over dims ``(0, 2)`` in every case.

Tensors whose memory cannot be seen that way (gaps, overlaps, a dtype the math does
not run in, such as float16) get a contiguous working copy in the compute dtype that is
written back after the step: :class:`Slot` hides the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Frame", "Slot", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 stays, every other float type uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class Frame:
    """Memory order and ``(A, R, B)`` folding of one parameter (see the module doc)."""

    shape: tuple[int, ...]
    """Sizes of the parameter."""
    perm: tuple[int, ...]
    """Dimensions of the tensor in memory order (outermost first)."""
    shape3: tuple[int, int, int]
    """``(A, R, B)``: elements stored outside axis 0, rows, elements inside axis 0."""
    projectable: bool
    """Whether the tensor has two or more dimensions (1-D tensors are never projected)."""

    @staticmethod
    def of(param: Tensor) -> Frame:
        """The frame of ``param`` (from its sizes and strides; no data is read)."""
        if param.ndim < 2:
            return Frame(tuple(param.shape), tuple(range(param.ndim)), (1, 1, param.numel()), False)
        # Stable sort by decreasing stride; size-1 dims have arbitrary strides and go last.
        perm = tuple(
            sorted(
                range(param.ndim),
                key=lambda d: (param.shape[d] == 1 and d != 0, -param.stride(d)),
            )
        )
        axis = perm.index(0)
        sizes = [param.shape[d] for d in perm]
        return Frame(
            tuple(param.shape),
            perm,
            (math.prod(sizes[:axis]), param.shape[0], math.prod(sizes[axis + 1 :])),
            True,
        )

    @property
    def rows(self) -> int:
        """Number of rows the per-row statistics have for this tensor (1 if not projected)."""
        return self.shape3[1] if self.projectable else 1

    @property
    def row_length(self) -> int:
        """Elements per output-channel row (the ``n`` of ``delta / sqrt(n)``)."""
        return self.shape3[0] * self.shape3[2]

    def view3(self, tensor: Tensor) -> Tensor | None:
        """``tensor`` as an ``(A, R, B)`` view sharing its memory, or ``None`` if impossible."""
        if tuple(tensor.shape) != self.shape:
            return None
        permuted = tensor.permute(self.perm) if self.perm else tensor
        if not permuted.is_contiguous():
            return None
        return permuted.view(self.shape3)

    def broadcast_rows(self, per_row: Tensor) -> Tensor:
        """Shape a per-row vector (or a single value) to broadcast against ``(A, R, B)``."""
        if self.projectable:
            return per_row.view(1, self.shape3[1], 1)
        return per_row.view(1, 1, 1)


class Slot:
    """One tensor as the kernel sees it: a contiguous ``(A, R, B)`` array in compute dtype.

    ``Slot(t, frame, dtype).data`` is a view of ``t`` when ``t`` already has that layout
    and dtype, else a working copy; :meth:`write_back` copies a working copy back into
    ``t`` (rounding to ``t``'s dtype) and does nothing for a view.
    """

    __slots__ = ("copied", "data", "target")

    def __init__(self, tensor: Tensor, frame: Frame, dtype: torch.dtype):
        self.target = tensor
        view = frame.view3(tensor) if tensor.dtype == dtype else None
        self.copied = view is None
        if view is None:
            permuted = tensor.permute(frame.perm) if frame.perm else tensor
            view = permuted.to(dtype=dtype, memory_format=torch.contiguous_format)
            view = view.reshape(frame.shape3)
        self.data: Tensor = view

    def write_back(self, frame: Frame) -> None:
        """Copy a working copy back into the original tensor (no-op for a view)."""
        if self.copied:
            permuted = self.target.permute(frame.perm) if frame.perm else self.target
            permuted.copy_(self.data.view(permuted.shape))
