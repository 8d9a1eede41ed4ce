"""What each rank runs in the distributed tests (module-level: spawned processes import it).

The oracle is one process holding the full tensors: the same optimizer class on plain
float64 tensors fed the same gradients, and the NumPy reference's choice of branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from adamp_core import functional as core
from adamp_core.testing import CASES, Case, case_gradient, initial_params

#: The suite's tensors plus ones that leave ranks without rows or columns.
DIST_CASES: tuple[Case, ...] = (
    *CASES,
    Case("one-row", (1, 12), "orthogonal", "channel"),
    Case("three-rows", (3, 2, 2), "layer", "layer"),
)

#: (optimizer, hyperparameters of the first group, changes for the second group).
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "adamp": ("AdamP", dict(lr=0.02)),
    "adamp-wd": ("AdamP", dict(lr=0.02, weight_decay=0.5)),
    "adamp-nesterov-wd": ("AdamP", dict(lr=0.02, nesterov=True, weight_decay=0.5)),
    "adamp-maximize": ("AdamP", dict(lr=0.02, weight_decay=0.1, maximize=True)),
    "sgdp": ("SGDP", dict(lr=0.1)),
    "sgdp-momentum-wd": ("SGDP", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgdp-nesterov-wd": ("SGDP", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sgdp-paper-wd": ("SGDP", dict(lr=0.1, momentum=0.9, weight_decay=0.01, variant="paper")),
    "sgdp-dampening-maximize": (
        "SGDP",
        dict(lr=0.1, momentum=0.9, dampening=0.3, maximize=True),
    ),
}
SECOND_GROUP = dict(wd_ratio=0.3, delta=0.2)
STEPS = 4


def _placements(scenario: str, case: Case, mesh_ndim: int) -> list[Any]:
    """The placements of ``case``'s tensor in ``scenario`` (see :data:`SCENARIOS`)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    matrix = len(case.shape) >= 2
    index = DIST_CASES.index(case)
    if scenario == "fsdp2":
        return [Shard(0)]
    if scenario == "tp":  # ColwiseParallel shards dim 0, RowwiseParallel dim 1
        return [Shard(1) if matrix and index % 2 else Shard(0)]
    if scenario == "mixed":
        return [(Shard(0), Shard(1) if matrix else Shard(0), Replicate())[index % 3]]
    if scenario == "replicated":
        return [Replicate()]
    if scenario == "hsdp":
        return [Replicate(), Shard(0)]
    if scenario == "fsdp2+tp":
        if matrix and index % 2:  # RowwiseParallel weight, then FSDP2 on dim 0
            return [Shard(0), Shard(1)]
        return [_StridedShard(0, split_factor=2), Shard(0)]  # ColwiseParallel + FSDP2
    raise ValueError(scenario)


#: Scenario names by mesh shape.
SCENARIOS: dict[tuple[int, ...], tuple[str, ...]] = {
    (2,): ("fsdp2", "tp", "mixed", "replicated"),
    (2, 2): ("hsdp", "fsdp2+tp"),
}


def _branch(param: np.ndarray, grad: np.ndarray, hp: dict[str, Any]) -> str:
    """The branch the reference takes for these full tensors."""
    return core.projection(
        param, grad, param, delta=hp.get("delta", 0.1), wd_ratio=0.1, eps=1e-8
    ).branch


class _Spy:
    """Records the decisions of the sharded path on this rank."""

    def __init__(self) -> None:
        from adamp_torch._sharded import Statistics

        self.cls = Statistics
        self.original = Statistics.decide
        self.calls: list[list[str]] = []

    def __enter__(self) -> _Spy:
        original, calls = self.original, self.calls

        def spy(stats: Any) -> Any:
            decision, coef = original(stats)
            channel, layer = decision.channel.tolist(), decision.layer.tolist()
            calls.append(
                ["channel" if c else "layer" if lay else "none" for c, lay in zip(channel, layer)]
            )
            return decision, coef

        self.cls.decide = spy  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.decide = self.original  # type: ignore[method-assign]


def _groups(params: list[torch.Tensor], hp: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        dict(params=params[0::2], **hp),
        dict(params=params[1::2], **dict(hp, **SECOND_GROUP)),
    ]


def _order() -> list[int]:
    """Tensor positions in the order the optimizer's two groups visit them."""
    n = len(DIST_CASES)
    return [*range(0, n, 2), *range(1, n, 2)]


def compare_scenarios(rank: int, world: int, mesh_shape: tuple[int, ...]) -> dict[str, Any]:
    """Every scenario of ``mesh_shape`` x every config: the worst difference from one
    process, the decisions on this rank that differ from the reference's branch, and the
    collectives of each ``step()`` (torch's ``CommDebugMode``)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor
    from torch.distributed.tensor.debug import CommDebugMode

    import adamp_torch

    mesh = init_device_mesh("cpu", mesh_shape)
    start = [torch.tensor(p) for p in initial_params(DIST_CASES, seed=3)]
    results: dict[str, Any] = {}
    for scenario in SCENARIOS[mesh_shape]:
        placements = [_placements(scenario, c, len(mesh_shape)) for c in DIST_CASES]

        def shard(tensors: list[torch.Tensor], placements: list[Any] = placements) -> list[Any]:
            return [
                distribute_tensor(t, mesh, pl, src_data_rank=None)
                for t, pl in zip(tensors, placements)
            ]

        for name, (optimizer, hp) in CONFIGS.items():
            cls = getattr(adamp_torch, optimizer)
            full = [p.clone() for p in start]
            sharded = shard([p.clone() for p in start])
            one = cls(_groups(full, hp), lr=hp["lr"])
            many = cls(_groups(sharded, hp), lr=hp["lr"])
            mismatches: list[str] = []
            collectives: list[dict[str, int]] = []
            for step in range(STEPS):
                grads = [
                    torch.tensor(case_gradient(c, p.numpy(), step, seed=3))
                    for c, p in zip(DIST_CASES, full)
                ]
                expected = [
                    _branch(full[i].numpy(), grads[i].numpy(), hp if i % 2 == 0 else SECOND_GROUP)
                    for i in _order()
                ]
                for p, g in zip(full, grads):
                    p.grad = g.clone()
                for p, g in zip(sharded, shard(grads)):
                    p.grad = g
                one.step()
                with _Spy() as spy, CommDebugMode() as comm:
                    many.step()
                collectives.append({str(op): n for op, n in comm.get_comm_counts().items()})
                got = [b for call in spy.calls for b in call]
                if got != expected:
                    mismatches.append(f"step {step}: {got} != {expected}")
            diff = max(
                float((s.full_tensor() - f).abs().max()) if f.numel() else 0.0
                for s, f in zip(sharded, full)
            )
            results[f"{scenario}/{name}"] = dict(
                diff=diff, mismatches=mismatches, collectives=collectives
            )
        results[f"{scenario}/functional"] = _functional_gap(start, shard)
    return results


def _functional_gap(start: list[torch.Tensor], shard: Callable[..., list[Any]]) -> float:
    """One call of ``adamp_torch.functional.adamp`` (outside an optimizer's step) on
    shards against the same call on full tensors."""
    from adamp_torch import functional

    grads = [
        torch.tensor(case_gradient(c, p.numpy(), 0, seed=3)) for c, p in zip(DIST_CASES, start)
    ]
    hp = dict(
        lr=0.02, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.5, delta=0.1,
        wd_ratio=0.1, nesterov=False,
    )  # fmt: skip
    gaps = []
    full = [p.clone() for p in start]
    sharded = shard([p.clone() for p in start])
    for params, g in ((full, grads), (sharded, shard(grads))):
        zeros = [torch.zeros_like(p) for p in params]
        steps = [torch.zeros(()) for _ in params]
        functional.adamp(params, g, zeros, [z.clone() for z in zeros], steps, **hp)
    for s, f in zip(sharded, full):
        gaps.append(float((s.full_tensor() - f).abs().max()) if f.numel() else 0.0)
    return max(gaps)


def _model(seed: int = 0) -> torch.nn.Module:
    """Conv, BatchNorm, Linear and LayerNorm layers whose rows split unevenly over 2 ranks
    (and a 1-row Linear that leaves a rank without rows), in float64."""
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False),  # a bias before BatchNorm has a pure-noise gradient
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
        nn.LayerNorm(5),
        nn.Linear(5, 3),
        nn.Linear(3, 1),
    ).double()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 3, 6, 6, generator=gen, dtype=torch.float64)
    return x, torch.randn(8, 1, generator=gen, dtype=torch.float64)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        x, y = _batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _fsdp2(model: torch.nn.Module, mesh: Any) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _gap(wrapped: torch.nn.Module, single: torch.nn.Module) -> float:
    """Largest difference between the (gathered) weights of two models."""
    from torch.distributed.tensor import DTensor

    def full(t: torch.Tensor) -> torch.Tensor:
        return (t.full_tensor() if isinstance(t, DTensor) else t).detach()

    return max(
        float((full(a) - full(b)).abs().max())
        for a, b in zip(wrapped.parameters(), single.parameters())
    )


OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "AdamP": ("AdamP", dict(lr=0.01, weight_decay=0.1)),
    "SGDP": ("SGDP", dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
}


def train_models(rank: int, world: int, checkpoint_dir: str) -> dict[str, Any]:
    """FSDP2 and DDP training against one process, and a checkpoint round trip under
    FSDP2 (``torch.distributed.checkpoint``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.nn.parallel import DistributedDataParallel

    import adamp_torch

    mesh = init_device_mesh("cpu", (world,))
    out: dict[str, Any] = {}
    for name, (cls_name, hp) in OPTIMIZERS.items():
        cls = getattr(adamp_torch, cls_name)
        single = _model()
        _train(single, cls(single.parameters(), **hp), range(5))

        sharded = _fsdp2(_model(), mesh)
        with _Spy() as spy:
            _train(sharded, cls(sharded.parameters(), **hp), range(5))
        out[f"fsdp2/{name}"] = _gap(sharded, single)
        out[f"branches/{name}"] = sorted({b for call in spy.calls for b in call})

        ddp = DistributedDataParallel(_model())
        _train(ddp, cls(ddp.parameters(), **hp), range(5))
        out[f"ddp/{name}"] = _gap(ddp.module, single)

        # Save after 3 steps, train 2 more; a fresh model and optimizer loaded from the
        # checkpoint must land on the same weights.
        first = _fsdp2(_model(), mesh)
        opt = cls(first.parameters(), **hp)
        _train(first, opt, range(3))
        model_sd, optim_sd = get_state_dict(first, opt)
        path = f"{checkpoint_dir}/{name}"
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
        _train(first, opt, range(3, 5))

        second = _fsdp2(_model(seed=1), mesh)
        opt2 = cls(second.parameters(), **hp)
        model_sd, optim_sd = get_state_dict(second, opt2)
        loaded = {"model": model_sd, "optim": optim_sd}
        dcp.load(loaded, checkpoint_id=path)
        set_state_dict(
            second, opt2, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
        )
        _train(second, opt2, range(3, 5))
        out[f"resume/{name}"] = _gap(second, first)
        out[f"resume-vs-single/{name}"] = _gap(second, single)
    out["errors"] = _refusals(mesh)
    return out


def _refusals(mesh: Any) -> dict[str, str | None]:
    """The errors a step raises for shards it cannot take (``None``: none was raised)."""
    from torch.distributed.tensor import DTensor, Partial, Shard, distribute_tensor

    import adamp_torch

    def attempt(param: Any, grad: Any) -> str | None:
        param.grad = grad
        before = param.to_local().clone()
        try:
            adamp_torch.AdamP([param], lr=0.1).step()
        except ValueError as exc:
            assert torch.equal(param.to_local(), before)  # refused before any update
            return str(exc)
        return None

    full = torch.randn(4, 6, dtype=torch.float64)
    rows = distribute_tensor(full, mesh, [Shard(0)], src_data_rank=None)
    columns = distribute_tensor(full, mesh, [Shard(1)], src_data_rank=None)
    pending = DTensor.from_local(full.clone(), mesh, [Partial()])
    return {
        "grad-placement": attempt(rows, columns),
        "partial-param": attempt(pending, pending.clone()),
    }
