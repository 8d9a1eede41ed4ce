"""Fused CPU step for AdamP and SGDP: a C++ kernel, compiled on first use.

What the optimizers' dispatch calls (the same interface as ``_triton``):

* :func:`available` ``(device) -> bool``: a CPU device, the kernel enabled, and built (the
  first call builds it, or loads the cached build);
* :func:`unsupported_reason` ``(param, grad, *state) -> str | None``;
* :func:`adamp_step` / :func:`sgdp_step`: one step, in place, over tensors of one dtype.

Per tensor the kernel makes at most three passes over memory (see ``csrc/fused_cpu.cpp``):
the sums of the scale-invariance test, for the layer branch ``<P, U>``, then moments and
weights in one pass, with float32 math (float64 for float64 storage) and one rounding of
each result to the storage dtype (bfloat16 / float16 included: no working copies).

The build uses ``torch.utils.cpp_extension`` (a C++ compiler with OpenMP and ``_Float16``,
such as GCC 12, and ninja) and is cached under ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), keyed on the source, the torch version and this CPU's
instruction set (it is compiled with ``-march=native``). If it cannot be built, the
optimizers warn once and use their other CPU paths; ``ADAMP_TORCH_CPU_KERNEL=0`` turns the
kernel off without trying.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from adamp_core.validation import validate_variant

from ._layout import Scalar, kernel_unfit

__all__ = ["BRANCHES", "adamp_step", "available", "build", "import_error", "sgdp_step"]

#: Branch codes written into ``branches``: index -> name (as in ``_triton``).
BRANCHES = ("none", "channel", "layer")

_SOURCE = Path(__file__).with_name("csrc") / "fused_cpu.cpp"
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ops" once built, "error" once failed


def _fingerprint() -> str:
    """What a build depends on besides its source and flags (which torch hashes itself):
    the torch version and this CPU's instruction set (``-march=native``)."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        cpu += platform.processor()
    return hashlib.sha256(f"{torch.__version__}|{cpu}".encode()).hexdigest()[:12]


def build() -> None:
    """Build (or load the cached build of) the kernel now.

    Raises:
        RuntimeError: it cannot be built here, with the compiler's reason.
    """
    with _lock:
        if "ops" in _state:
            return
        if "error" in _state:
            raise RuntimeError(str(_state["error"]))
        from torch.utils import cpp_extension

        try:
            cpp_extension.load(
                name=f"adamp_cpu_{_fingerprint()}",
                sources=[str(_SOURCE)],
                extra_cflags=_FLAGS,
                extra_ldflags=["-fopenmp"],
                is_python_module=False,
            )
            _state["ops"] = torch.ops.adamp_cpu
        except Exception as exc:  # no compiler, no ninja, an unsupported platform
            _state["error"] = f"{type(exc).__name__}: {exc}".strip()
            raise RuntimeError(str(_state["error"])) from exc


def import_error() -> str | None:
    """Why the kernel could not be built (``None``: it was, or was not tried yet)."""
    error = _state.get("error")
    return None if error is None else str(error)


def enabled() -> bool:
    """Whether the kernel may be used: ``ADAMP_TORCH_CPU_KERNEL`` is not ``0``."""
    return os.environ.get("ADAMP_TORCH_CPU_KERNEL", "1") != "0"


def available(device: torch.device | str) -> bool:
    """Whether the kernel runs on ``device``: a CPU device, :func:`enabled`, and built.
    A failed build warns once; later calls answer ``False`` at once."""
    if torch.device(device).type != "cpu" or not enabled():
        return False
    if "ops" in _state:
        return True
    if "error" in _state:
        return False
    try:
        build()
    except RuntimeError as exc:
        warnings.warn(
            f"adamp_torch: the fused CPU kernel could not be built ({exc}); the optimizers "
            "use their other CPU paths (same numbers, slower). Set "
            "ADAMP_TORCH_CPU_KERNEL=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def unsupported_reason(param: Tensor, grad: Tensor, *state: Tensor) -> str | None:
    """``None`` if the kernel takes ``param`` with ``grad`` and ``state``, else why not
    (a CPU tensor in one of the layouts of ``_layout.kernel_unfit``)."""
    if param.device.type != "cpu":
        return f"the CPU kernel does not run on {param.device}"
    return kernel_unfit(param, grad, *state)


def _ops() -> object:
    if not available("cpu"):
        raise RuntimeError(f"the fused CPU kernel is unavailable ({import_error() or 'disabled'})")
    return _state["ops"]


def adamp_step(
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
    branches: Tensor | None = None,
) -> None:
    """One AdamP step over CPU tensors of one dtype, in place.

    Args:
        params, grads, exp_avgs, exp_avg_sqs: as in :func:`adamp_torch.functional.adamp`;
            every tensor accepted by :func:`unsupported_reason` (the kernel checks the
            layout again and raises ``RuntimeError`` before touching anything).
        state_steps: one-element float32 step counts, incremented here before use.
        lr, beta1, beta2, eps, weight_decay, delta, wd_ratio, nesterov, maximize: as in
            :func:`adamp_torch.functional.adamp` (a tensor lr is read on the host).
        branches: optional contiguous int32 tensor of ``len(params)`` elements; receives
            each tensor's branch (index into :data:`BRANCHES`).
    """
    if not params:
        return
    _ops().adamp_step(  # type: ignore[attr-defined]
        params, grads, exp_avgs, exp_avg_sqs, state_steps, float(lr), float(beta1),
        float(beta2), float(eps), float(weight_decay), float(delta), float(wd_ratio),
        bool(nesterov), bool(maximize), _branch_out(branches, len(params)),
    )  # fmt: skip


def sgdp_step(
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
    branches: Tensor | None = None,
) -> None:
    """One SGDP step over CPU tensors of one dtype, in place.

    Args:
        params, grads, momentum_buffers: as in :func:`adamp_torch.functional.sgdp`; every
            tensor accepted by :func:`unsupported_reason`.
        lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio, maximize:
            as in :func:`adamp_torch.functional.sgdp`.
        variant: ``"authors"`` (without Nesterov the buffer itself is projected) or
            ``"paper"`` (only the update is).
        branches: see :func:`adamp_step`.
    """
    validate_variant(variant)
    if not params:
        return
    _ops().sgdp_step(  # type: ignore[attr-defined]
        params, grads, momentum_buffers, float(lr), float(momentum), float(dampening),
        float(weight_decay), bool(nesterov), float(eps), float(delta), float(wd_ratio),
        variant == "authors" and not nesterov, bool(maximize),
        _branch_out(branches, len(params)),
    )  # fmt: skip


def _branch_out(branches: Tensor | None, n: int) -> Tensor | None:
    if branches is not None and (
        branches.dtype != torch.int32
        or branches.numel() != n
        or not branches.is_contiguous()
        or branches.device.type != "cpu"
    ):
        raise ValueError(f"branches must be a contiguous int32 CPU tensor of {n} elements")
    return branches
