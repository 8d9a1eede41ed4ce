"""Run a function on several torch.distributed ranks (gloo, this machine only), bounded in time.

``run_ranks(fn, world)`` spawns ``world`` processes that join one gloo process group
through a ``file://`` rendezvous, calls ``fn(rank, world, *args)`` in each, and returns
their results in rank order. A rank that raises fails the call with its traceback; ranks
that do not finish within ``timeout`` seconds are killed and the call fails, so a hung
collective fails a test instead of hanging CI.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

#: Seconds a collective may wait before gloo gives up (well under the spawn timeout).
COLLECTIVE_TIMEOUT = 60


def _rank_main(
    fn: Callable[..., Any], rank: int, world: int, store: str, out: str, args: tuple[Any, ...]
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2-4 ranks share 2 cores
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT),
        )
        try:
            result: Any = ("ok", fn(rank, world, *args))
        finally:
            dist.destroy_process_group()
    except BaseException:
        result = ("error", traceback.format_exc())
    Path(out).write_bytes(pickle.dumps(result))


def run_ranks(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 300.0) -> list[Any]:
    """``[fn(rank, world, *args) for rank in range(world)]``, each in its own process.

    ``fn`` must be importable by name (a module-level function). Raises ``RuntimeError``
    with every failing rank's traceback, or on timeout.
    """
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        outs = [os.path.join(tmp, f"rank{r}.pkl") for r in range(world)]
        procs = [
            ctx.Process(target=_rank_main, args=(fn, r, world, store, outs[r], args))
            for r in range(world)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if hung:
            raise RuntimeError(f"ranks {hung} did not finish within {timeout:.0f} s")
        results, errors = [], []
        for r, out in enumerate(outs):
            if not os.path.exists(out):
                errors.append(f"rank {r} exited with code {procs[r].exitcode} and no result")
                continue
            status, value = pickle.loads(Path(out).read_bytes())
            if status == "error":
                errors.append(f"rank {r}:\n{value}")
            results.append(value)
        if errors:
            raise RuntimeError("\n".join(errors))
        return results
