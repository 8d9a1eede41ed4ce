"""Step time on DTensor shards: ``python -m benchmarks.distributed``.

Spawns ``--ranks`` gloo processes on this machine (one thread each), shards a parameter
set (default ResNet-50 shapes) over them, ``Shard(0)`` for every tensor (FSDP2's layout)
or ``Shard(1)`` for every matrix (tensor parallel), and times ``step()`` of
``adamp_torch.AdamP`` / ``SGDP`` against ``torch.optim.AdamW`` (fused and foreach) and
``SGD`` (foreach: torch's fused SGD has no DTensor rule) on the same shards, with random
and projection-forcing gradients. Rounds rotate the optimizers; the report is the median
over rounds of the slowest rank's time (every rank waits for the slowest at the
collective). Writes ``distributed.md`` / ``.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

PLACEMENTS = ("fsdp2", "tp")


def _optimizers(params: list[Any]) -> dict[str, Any]:
    import torch

    import adamp_torch

    return {
        "AdamW(fused)": torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True),
        "AdamW(foreach)": torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=True),
        "AdamP": adamp_torch.AdamP(params, lr=1e-3, weight_decay=0.01),
        "SGD(foreach)": torch.optim.SGD(
            params, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=True
        ),
        "SGDP": adamp_torch.SGDP(params, lr=0.1, momentum=0.9, weight_decay=0.01),
    }


def _rank(rank: int, world: int, store: str, args: argparse.Namespace, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from benchmarks.shapes import build
    from benchmarks.workload import make_grads, make_params

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
        timeout=timedelta(seconds=300),
    )  # fmt: skip
    mesh = init_device_mesh("cpu", (world,))
    full = make_params(build(args.set))
    results: dict[str, Any] = {}
    for placement in PLACEMENTS:

        def place(t: torch.Tensor, placement: str = placement) -> list[Any]:
            return [Shard(1) if placement == "tp" and t.dim() >= 2 else Shard(0)]

        params = [distribute_tensor(p, mesh, place(p), src_data_rank=None) for p in full]
        for kind in ("random", "orthogonal"):
            grads = [
                distribute_tensor(g, mesh, place(g), src_data_rank=None)
                for g in make_grads(full, kind)
            ]
            master = [p.to_local().clone() for p in params]
            opts = _optimizers(params)
            times: dict[str, list[float]] = {name: [] for name in opts}
            for round_ in range(args.warmup + args.rounds):
                names = list(opts)
                names = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in names:
                    for p, g, m in zip(params, grads, master):
                        p.to_local().copy_(m)
                        p.grad = g
                    dist.barrier()
                    start = time.perf_counter()
                    opts[name].step()
                    elapsed = torch.tensor(time.perf_counter() - start)
                    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank
                    if round_ >= args.warmup:
                        times[name].append(float(elapsed))
            results[f"{placement}/{kind}"] = {n: statistics.median(t) for n, t in times.items()}
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(results))


def _table(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        f"# DTensor step time: {args.set} shapes on {args.ranks} gloo CPU ranks "
        f"(1 thread each), median of {args.rounds} rounds, slowest rank",
        "",
        "| placement / gradients | AdamW(fused) ms | AdamW(foreach) ms | AdamP ms "
        "| AdamP / AdamW(fused) | SGD(foreach) ms | SGDP ms | SGDP / SGD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, t in results.items():
        fused, foreach, adamp = t["AdamW(fused)"], t["AdamW(foreach)"], t["AdamP"]
        sgd, sgdp = t["SGD(foreach)"], t["SGDP"]
        lines.append(
            f"| {key} | {fused * 1e3:.1f} | {foreach * 1e3:.1f} | {adamp * 1e3:.1f} "
            f"| {adamp / fused:.2f}x | {sgd * 1e3:.1f} | {sgdp * 1e3:.1f} | {sgdp / sgd:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="resnet50", help="parameter set (benchmarks.shapes)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        procs = [
            ctx.Process(target=_rank, args=(r, args.ranks, f"{tmp}/store", args, out))
            for r in range(args.ranks)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            print(f"a rank failed: exit codes {[p.exitcode for p in procs]}")
            return 1
        results = json.loads(Path(out).read_text())
    table = _table(results, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "distributed.md").write_text(table)
    Path(args.out, "distributed.json").write_text(json.dumps(results, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
