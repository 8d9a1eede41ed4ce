"""The PyTorch code paths as backends of the conformance suite (``adamp_core.testing``).

One :class:`~adamp_core.testing.Backend` per path, each running this package's
optimizer classes on CPU tensors of the suite's dtype:

* ``torch``: the defaults (batched; AdamP's moments by torch's fused AdamW kernel);
* ``torch-single``: ``foreach=False``, one tensor at a time;
* ``torch-foreach``: ``fused=False``, AdamP's moments by foreach ops (its Nesterov path;
  SGDP always uses them, so for SGDP this equals ``torch``);
* ``torch-compiled``: ``step()`` under ``torch.compile`` with a tensor learning rate
  (float64 only, to bound compile time).

Importing this module does not import torch; the factories do, on first call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from adamp_core.testing import Backend, OptimizerFactory

__all__ = ["TorchUnderTest", "backends", "make_factory"]


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
        options = dict(options or {})
        if optimizer == "SGDP":
            options.pop("fused", None)  # SGDP has a single moment path
        hparams = dict(hparams, **options)
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
