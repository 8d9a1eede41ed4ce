"""The PyTorch code paths as backends of the conformance suite (``adamp_core.testing``).

One :class:`~adamp_core.testing.Backend` per path, each running this package's
optimizer classes on CPU tensors of the suite's dtype:

* ``torch``: the defaults (batched; torch's fused AdamW / SGD kernels where they apply);
* ``torch-single``: ``foreach=False``, one tensor at a time;
* ``torch-foreach``: ``fused=False``, foreach ops only (AdamP's Nesterov path);
* ``torch-compiled``: ``step()`` under ``torch.compile`` with a tensor learning rate
  (float64 only, to bound compile time).

A separate entry point, :func:`triton_backends`, announces ``torch-triton``: the fused
Triton kernels (``adamp_torch._triton``) called directly, never another path: on CUDA, or
on CPU when ``TRITON_INTERPRET=1`` is set (opt-in there: the interpreter is slow);
anywhere else it is listed as not checked.

Importing this module does not import torch; the factories do, on first call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from adamp_core.testing import Backend, OptimizerFactory

__all__ = [
    "TorchUnderTest",
    "TritonUnavailable",
    "TritonUnderTest",
    "backends",
    "make_factory",
    "make_triton_factory",
    "triton_backends",
]


class TorchUnderTest:
    """An ``adamp_torch`` optimizer behind the suite's ``step(grads)`` / ``get_params()``.

    Args:
        optimizer: ``"AdamP"`` or ``"SGDP"``.
        params: initial weights (copied into CPU tensors of the same dtype).
        hparams: keyword arguments in ``adamp_core``'s names (the same as ours).
        options: extra constructor keywords (``foreach``, ``fused``).
        compiled: run ``step()`` through ``torch.compile`` with a tensor learning rate.
        device: where the tensors live (default ``"cpu"``).
    """

    def __init__(
        self,
        optimizer: str,
        params: Sequence[np.ndarray],
        hparams: dict[str, Any],
        *,
        options: dict[str, Any] | None = None,
        compiled: bool = False,
        device: str = "cpu",
    ):
        import torch

        import adamp_torch

        self._torch = torch
        self.device = device
        self.params = [torch.tensor(np.array(p), device=device, requires_grad=True) for p in params]
        hparams = dict(hparams, **(options or {}))
        if compiled:
            hparams["lr"] = torch.tensor(float(hparams["lr"]), dtype=torch.float64, device=device)
        self.optimizer = getattr(adamp_torch, optimizer)(self.params, **hparams)
        self._step = torch.compile(self.optimizer.step) if compiled else self.optimizer.step

    def step(self, grads: Sequence[np.ndarray]) -> None:
        for p, g in zip(self.params, grads):
            p.grad = self._torch.tensor(np.asarray(g), device=self.device)
        self._step()

    def get_params(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in self.params]


def make_factory(
    options: dict[str, Any] | None = None, *, compiled: bool = False, device: str = "cpu"
) -> OptimizerFactory:
    """A conformance-suite factory for :class:`TorchUnderTest` with these settings."""

    def factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
        return TorchUnderTest(
            optimizer, params, hparams, options=options, compiled=compiled, device=device
        )

    return factory


def backends() -> list[Backend]:
    """One backend per code path (see the module doc).

    Raises:
        ModuleNotFoundError: torch is not installed (the check lists this backend as
            "not checked" rather than failing it).
    """
    if importlib.util.find_spec("torch") is None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    return [
        Backend("torch", make_factory()),
        Backend("torch-single", make_factory({"foreach": False})),
        Backend("torch-foreach", make_factory({"fused": False})),
        # float64 only and opt-in: each run compiles a graph (~40 s cold on 2 CPU cores)
        Backend("torch-compiled", make_factory(compiled=True), dtypes=("float64",), opt_in=True),
    ]


class TritonUnavailable(ModuleNotFoundError):
    """The Triton kernels cannot run here; the check lists ``torch-triton`` as not checked."""


class TritonUnderTest:
    """The Triton kernels (``adamp_torch._triton``) behind the suite's interface, called
    directly: the hyperparameters are completed and checked by ``adamp_core``'s optimizer
    of the same name, the state lives in tensors on ``device``.
    """

    def __init__(
        self, optimizer: str, params: Sequence[np.ndarray], hparams: dict[str, Any], device: str
    ):
        import torch

        from adamp_core import optim

        from . import _triton

        core = {"AdamP": optim.AdamP, "SGDP": optim.SGDP}[optimizer]
        self.hparams = dict(core([np.array(p) for p in params], **hparams).hparams)
        self.optimizer = optimizer
        self.device = device
        self._torch, self._triton = torch, _triton
        self.params = [torch.tensor(np.array(p), device=device) for p in params]
        self.state = [[torch.zeros_like(p) for p in self.params]]
        if optimizer == "AdamP":
            self.state.append([torch.zeros_like(p) for p in self.params])
            zero = torch.zeros((), dtype=torch.float32, device=device)
            self.steps = [zero.clone() for _ in self.params]
        self.workspace = _triton.Workspace()

    def step(self, grads: Sequence[np.ndarray]) -> None:
        g = [self._torch.tensor(np.asarray(x), device=self.device) for x in grads]
        h = self.hparams
        if self.optimizer == "AdamP":
            self._triton.adamp_step(
                self.params, g, self.state[0], self.state[1], self.steps,
                lr=h["lr"], beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"],
                weight_decay=h["weight_decay"], delta=h["delta"], wd_ratio=h["wd_ratio"],
                nesterov=h["nesterov"], maximize=False, workspace=self.workspace,
            )  # fmt: skip
        else:
            self._triton.sgdp_step(
                self.params, g, self.state[0],
                lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                weight_decay=h["weight_decay"], nesterov=h["nesterov"], eps=h["eps"],
                delta=h["delta"], wd_ratio=h["wd_ratio"], variant=h["variant"],
                maximize=False, workspace=self.workspace,
            )  # fmt: skip

    def get_params(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in self.params]


def make_triton_factory(device: str) -> OptimizerFactory:
    """A conformance-suite factory for :class:`TritonUnderTest` on ``device``."""

    def factory(optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]) -> Any:
        return TritonUnderTest(optimizer, params, hparams, device)

    return factory


def triton_backends() -> list[Backend]:
    """``torch-triton``: on CUDA with compiled kernels; on CPU with ``TRITON_INTERPRET=1``
    (opt-in: about 0.5 s a step there).

    Raises:
        ModuleNotFoundError: torch or triton is not installed.
        TritonUnavailable: neither a CUDA device nor ``TRITON_INTERPRET=1`` (both are
            listed as not checked rather than failed).
    """
    for module in ("torch", "triton"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    from . import _triton

    for device, opt_in in (("cuda", False), ("cpu", True)):
        if _triton.available(device):
            return [Backend("torch-triton", make_triton_factory(device), opt_in=opt_in)]
    if _triton.import_error() is not None:
        raise ModuleNotFoundError(
            f"triton does not import: {_triton.import_error()}", name="triton"
        )
    raise TritonUnavailable(
        "the Triton kernels need a CUDA device, or TRITON_INTERPRET=1 to run them on CPU "
        "through triton's interpreter",
        name="triton",
    )
