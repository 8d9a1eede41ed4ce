"""Interleaved, in-process timing of torch optimizer steps on one parameter set.

All candidates share one set of weights and gradients. Before every step (untimed) the weights
are copied back from a master copy, so every optimizer sees the same weights and gradients each
step (orthogonal gradients stay orthogonal) while its own state evolves. Each candidate gets
``warmup`` untimed steps (the first is reported: state allocation, and compilation for compiled
paths), then ``rounds`` rounds; in each round every candidate, in a rotated order, takes
``steps`` timed steps. The reported time is the median over all timed steps.

After timing, every candidate takes one more step from the master weights and its result is
compared with the authors' optimizer of its family (same number of steps for everyone), as a
sanity check that a fast path computes the same thing.
"""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks import shapes as shape_sets
from benchmarks import workload
from benchmarks.machine import PeakRss, loadavg
from benchmarks.torch_candidates import BASELINE, REFERENCE, Candidate


@dataclass
class Row:
    """One optimizer's measurements on one (device, set, gradient kind)."""

    label: str
    family: str
    role: str
    status: str = "ok"  # "ok" | "unavailable" | "failed"
    reason: str | None = None
    times_ms: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    warmup_s: list[float] = field(default_factory=list)
    state_bytes: int | None = None
    step_peak_bytes: int | None = None
    max_rel_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self, total_params: int) -> dict[str, Any]:
        d: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("label", "family", "role", "status", "reason", "first_step_s", "warmup_s",
                      "state_bytes", "step_peak_bytes", "max_rel_diff", "notes", "times_ms")
        }  # fmt: skip
        if self.times_ms:
            q = statistics.quantiles(self.times_ms, n=4) if len(self.times_ms) > 1 else None
            d["median_ms"] = statistics.median(self.times_ms)
            d["p25_ms"], d["p75_ms"] = (q[0], q[2]) if q else (None, None)
        if self.state_bytes is not None:
            d["state_bytes_per_param"] = self.state_bytes / total_params
        return d


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the distinct tensor storages held in ``opt.state`` (moments, buffers, steps,
    and any scratch an implementation keeps there)."""
    seen: dict[int, int] = {}
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                seen[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
    return sum(seen.values())


class _Clock:
    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class _Bench:
    def __init__(self, params: list[torch.Tensor], grads: list[torch.Tensor], device: str):
        self.params, self.grads = params, grads
        self.master = [p.detach().clone() for p in params]
        self.master_grads = [g.clone() for g in grads]
        for p, g in zip(params, grads):
            p.grad = g
        self.clock = _Clock(device)
        self.cuda = device.startswith("cuda")
        self.peak = PeakRss() if not self.cuda else None

    def restore(self, grads_too: bool) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.master)
            if grads_too:
                torch._foreach_copy_(self.grads, self.master_grads)

    def grads_changed(self) -> bool:
        return not all(torch.equal(g, m) for g, m in zip(self.grads, self.master_grads))

    def timed_step(self, opt: torch.optim.Optimizer, grads_too: bool) -> tuple[float, int | None]:
        self.restore(grads_too)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        elif self.peak is not None:
            self.peak.start()
        t0 = self.clock.now()
        opt.step()
        t1 = self.clock.now()
        if self.cuda:
            extra: int | None = torch.cuda.max_memory_allocated() - base
        else:
            extra = self.peak.stop() if self.peak is not None else None
        return (t1 - t0), extra


def _check_no_host_sync(bench: _Bench, opt: torch.optim.Optimizer) -> str:
    """Run one step with torch.cuda.set_sync_debug_mode("error"); report what happened."""
    bench.restore(False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
        verdict = "no host sync (set_sync_debug_mode('error') passed)"
    except RuntimeError as exc:
        verdict = f"HOST SYNC: {str(exc).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return verdict


def run(
    set_name: str,
    grad_kind: str,
    candidates: list[Candidate],
    *,
    rounds: int,
    steps: int,
    warmup: int,
    device: str = "cpu",
    log: Any = print,
) -> dict[str, Any]:
    """Time every candidate on ``set_name`` with ``grad_kind`` gradients; return a JSON-able
    section (rows, medians, ratios against the family baselines, census, load)."""
    shapes = shape_sets.build(set_name)
    params = workload.make_params(shapes, device=device)
    grads = workload.make_grads(params, grad_kind)
    census = workload.projection_census(params, grads)
    total = shape_sets.total(shapes)
    bench = _Bench(params, grads, device)
    load_start = loadavg()
    rows: list[Row] = []
    live: list[tuple[Row, torch.optim.Optimizer, bool]] = []

    for cand in candidates:
        row = Row(cand.label, cand.family, cand.role, notes=list(cand.notes))
        rows.append(row)
        if cand.unavailable is not None or cand.factory is None:
            row.status, row.reason = "unavailable", cand.unavailable or "no factory"
            continue
        try:
            opt = cand.factory(params)
            mutates = False
            for i in range(max(1, warmup)):
                dt, _ = bench.timed_step(opt, mutates)
                row.warmup_s.append(dt)
                if i == 0:
                    row.first_step_s = dt
                    if bench.grads_changed():
                        mutates = True
                        row.notes.append("modifies p.grad in place (grads restored every step)")
                        bench.restore(True)
            row.state_bytes = _state_bytes(opt)
        except Exception as exc:
            row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
            log(f"  {cand.label}: FAILED\n" + traceback.format_exc(limit=3))
            bench.restore(True)
            continue
        live.append((row, opt, mutates))
        log(f"  {cand.label}: first step {row.first_step_s:.3f}s")

    for r in range(rounds):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for row, opt, mutates in order:
            for _ in range(steps):
                dt, extra = bench.timed_step(opt, mutates)
                row.times_ms.append(dt * 1e3)
                if extra is not None:
                    row.step_peak_bytes = max(row.step_peak_bytes or 0, extra)
        log(f"  round {r + 1}/{rounds} done (load {loadavg()})")

    _agreement(bench, live)
    if bench.cuda:
        for row, opt, _ in live:
            if row.role == "ours":
                row.notes.append(_check_no_host_sync(bench, opt))

    medians = {row.label: statistics.median(row.times_ms) for row, _, _ in live if row.times_ms}
    out_rows = []
    for row in rows:
        d = row.summary(total)
        base = BASELINE[row.family]
        d["baseline"] = base
        if row.label in medians and base in medians:
            d["ratio"] = medians[row.label] / medians[base]
        out_rows.append(d)
    del live
    gc.collect()
    return {
        "framework": "torch",
        "device": device,
        "set": set_name,
        "grad_kind": grad_kind,
        "params": total,
        "tensors": len(shapes),
        "census": census.describe(),
        "rounds": rounds,
        "steps_per_round": steps,
        "warmup": warmup,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "rows": out_rows,
    }


def _agreement(bench: _Bench, live: list[tuple[Row, torch.optim.Optimizer, bool]]) -> None:
    """One more step for everyone from the master weights, references first; then
    max |result - authors' result| / max |authors' result| per family. (AdamW/SGD rows show how
    far plain AdamW/SGD lands from AdamP/SGDP on these gradients.)"""
    refs: dict[str, list[torch.Tensor]] = {}
    order = sorted(live, key=lambda item: item[0].label != REFERENCE[item[0].family])
    for row, opt, mutates in order:
        bench.restore(mutates)
        try:
            opt.step()
        except Exception as exc:
            row.notes.append(f"agreement step failed: {type(exc).__name__}: {exc}")
            continue
        if row.label == REFERENCE[row.family]:
            refs[row.family] = [p.detach().clone() for p in bench.params]
            continue
        ref = refs.get(row.family)
        if ref is not None:
            with torch.no_grad():
                scale = max(float(r.abs().max()) for r in ref)
                diff = max(float((p - r).abs().max()) for p, r in zip(bench.params, ref))
            row.max_rel_diff = diff / scale
    bench.restore(True)
