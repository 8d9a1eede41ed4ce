"""The PyTorch code paths as backends of the conformance suite (``adamp_core.testing``).

One :class:`~adamp_core.testing.Backend` per path, each running this package's
optimizer classes on CPU tensors of the suite's dtype:

* ``torch``: the defaults (on CPU the fused C++ kernel where it builds, else the batched
  path with torch's fused AdamW / SGD kernels where they apply);
* ``torch-single``: ``foreach=False``, one tensor at a time;
* ``torch-foreach``: ``fused=False``, foreach ops only (AdamP's Nesterov path);
* ``torch-compiled``: ``step()`` under ``torch.compile`` with a tensor learning rate
  (float64 only, to bound compile time).

A separate entry point, :func:`triton_backends`, announces ``torch-triton``: the fused
Triton kernels (``adamp_torch._triton``) called directly, never another path: on CUDA, or
on CPU when ``TRITON_INTERPRET=1`` is set (opt-in there: the interpreter is slow);
anywhere else it is listed as not checked. Another, :func:`fsdp2_backends`, announces
``torch-fsdp2``: the default path on DTensor parameters sharded over two gloo ranks that
it spawns on this machine, alternating ``Shard(0)`` (FSDP2) and ``Shard(1)`` (tensor
parallel) placements (opt-in: the ranks take seconds to start).

Importing this module does not import torch; the factories do, on first call.
"""

from __future__ import annotations

import atexit
import importlib.util
import multiprocessing as mp
import os
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from adamp_core.testing import Backend, OptimizerFactory

__all__ = [
    "Fsdp2UnderTest",
    "TorchUnderTest",
    "TritonUnavailable",
    "TritonUnderTest",
    "backends",
    "fsdp2_backends",
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


# -- torch-fsdp2: DTensor shards on spawned gloo ranks ---------------------------------------

#: Seconds a rank may take to answer (a hung collective fails the check instead of hanging).
_RANK_TIMEOUT = 120


def _placement(index: int, ndim: int) -> Any:
    """``Shard(1)`` (tensor parallel) for every other matrix, else ``Shard(0)`` (FSDP2)."""
    from torch.distributed.tensor import Shard

    return Shard(1) if ndim >= 2 and index % 2 else Shard(0)


def _serve(rank: int, world: int, store: str, conn: Any) -> None:
    """A rank's loop: build optimizers over DTensor shards, step them, return full weights."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    import adamp_torch

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=_RANK_TIMEOUT),
    )
    mesh = init_device_mesh("cpu", (world,))
    runs: dict[int, tuple[list[Any], Any]] = {}

    def shard(arrays: Sequence[np.ndarray]) -> list[Any]:
        return [
            distribute_tensor(
                torch.tensor(np.array(a)), mesh, [_placement(i, a.ndim)], src_data_rank=None
            )
            for i, a in enumerate(arrays)
        ]

    while True:
        command, run, payload = conn.recv()
        try:
            if command == "close":
                break
            if command == "new":
                optimizer, arrays, hparams = payload
                params = shard(arrays)
                runs[run] = (params, getattr(adamp_torch, optimizer)(params, **hparams))
                reply: Any = None
            elif command == "step":
                params, opt = runs[run]
                for p, g in zip(params, shard(payload)):
                    p.grad = g
                opt.step()
                reply = None
            else:  # "get": every rank gathers (a collective), rank 0 answers
                reply = [p.full_tensor().numpy() for p in runs[run][0]]
            conn.send(("ok", reply if rank == 0 else None))
        except Exception as exc:
            conn.send(("error", f"rank {rank}: {type(exc).__name__}: {exc}"))
    dist.destroy_process_group()


class _Ranks:
    """Two gloo ranks in child processes, driven by this process through pipes."""

    def __init__(self, world: int = 2):
        ctx = mp.get_context("spawn")
        self._dir = tempfile.TemporaryDirectory()
        store = os.path.join(self._dir.name, "store")
        self.conns, self.procs = [], []
        for rank in range(world):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(rank, world, store, child), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.runs = 0

    def call(self, command: str, run: int, payload: Any = None) -> Any:
        """Send a command to every rank; rank 0's answer."""
        for conn in self.conns:
            conn.send((command, run, payload))
        answers = []
        for rank, conn in enumerate(self.conns):
            if not conn.poll(_RANK_TIMEOUT):
                self.close()
                raise RuntimeError(f"rank {rank} did not answer within {_RANK_TIMEOUT} s")
            answers.append(conn.recv())
        errors = [value for status, value in answers if status == "error"]
        if errors:
            raise RuntimeError("; ".join(errors))
        return answers[0][1]

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            if proc.is_alive():
                try:
                    conn.send(("close", 0, None))
                except OSError:
                    pass
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
        self.procs = []
        self._dir.cleanup()


_RANKS: list[_Ranks] = []


def _ranks() -> _Ranks:
    """The ranks of this process, started on first use and stopped at exit."""
    if not _RANKS:
        _RANKS.append(_Ranks())
        atexit.register(_RANKS[0].close)
    return _RANKS[0]


class Fsdp2UnderTest:
    """An ``adamp_torch`` optimizer over DTensor shards on two spawned gloo ranks, behind
    the suite's interface (the weights it returns are gathered from the ranks)."""

    def __init__(self, optimizer: str, params: Sequence[np.ndarray], hparams: dict[str, Any]):
        self.ranks = _ranks()
        self.ranks.runs += 1
        self.run = self.ranks.runs
        self.ranks.call("new", self.run, (optimizer, [np.array(p) for p in params], hparams))

    def step(self, grads: Sequence[np.ndarray]) -> None:
        self.ranks.call("step", self.run, [np.asarray(g) for g in grads])

    def get_params(self) -> list[np.ndarray]:
        return list(self.ranks.call("get", self.run))


def fsdp2_backends() -> list[Backend]:
    """``torch-fsdp2`` (opt-in): see the module doc.

    Raises:
        ModuleNotFoundError: torch, or its distributed package with gloo, is missing.
    """
    if importlib.util.find_spec("torch") is None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        raise ModuleNotFoundError(
            "torch.distributed with the gloo backend is not available", name="torch.distributed"
        )
    return [Backend("torch-fsdp2", Fsdp2UnderTest, opt_in=True)]
