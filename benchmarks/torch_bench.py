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
from collections.abc import Callable
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
    cpu_ms: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    warmup_s: list[float] = field(default_factory=list)
    state_bytes: int | None = None
    scratch_bytes: int | None = None
    step_peak_bytes: int | None = None
    max_rel_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self, total_params: int) -> dict[str, Any]:
        d: dict[str, Any] = dict(vars(self))
        if self.times_ms:
            q = (
                statistics.quantiles(self.times_ms, n=4, method="inclusive")
                if len(self.times_ms) > 1
                else None
            )
            d["median_ms"] = statistics.median(self.times_ms)
            d["p25_ms"], d["p75_ms"] = (q[0], q[2]) if q else (None, None)
            d["median_cpu_ms"] = statistics.median(self.cpu_ms)
        for key in ("state_bytes", "scratch_bytes", "step_peak_bytes"):
            value = getattr(self, key)
            if value is not None:
                d[f"{key}_per_param"] = value / total_params
        return d


def _state_bytes(opt: torch.optim.Optimizer, exclude: set[int]) -> tuple[int, int]:
    """(state, kept scratch): bytes of the distinct tensor storages reachable from the
    optimizer's ``state``, then of the others reachable from the object (scratch buffers or
    caches it keeps in attributes), excluding the storages in ``exclude`` (the weights and
    gradients). Containers and plain objects are followed a few levels deep; torch modules'
    internals are not."""
    state = _reachable([(opt.state, 0)], exclude)
    rest = _reachable([(vars(opt), 0)], exclude | set(state))
    return sum(state.values()), sum(rest.values())


def _reachable(stack: list[tuple[Any, int]], exclude: set[int]) -> dict[int, int]:
    """Bytes of each tensor storage reachable from the objects on ``stack``, by address."""
    seen: dict[int, int] = {}
    visited: set[int] = set()
    while stack:
        obj, depth = stack.pop()
        if id(obj) in visited or depth > 6:
            continue
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in exclude:
                seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            stack += [(v, depth + 1) for v in obj.values()]
            stack += [(k, depth + 1) for k in obj if isinstance(k, torch.Tensor)]
        elif isinstance(obj, (list, tuple, set)):
            stack += [(v, depth + 1) for v in obj]
        elif hasattr(obj, "__dict__") and not type(obj).__module__.startswith("torch"):
            stack.append((vars(obj), depth + 1))
        elif hasattr(obj, "__slots__"):
            stack += [(getattr(obj, n), depth + 1) for n in obj.__slots__ if hasattr(obj, n)]
    return seen


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
        self.storages = {t.untyped_storage().data_ptr() for t in [*params, *grads]}

    def restore(self, grads_too: bool) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.master)
            if grads_too:
                torch._foreach_copy_(self.grads, self.master_grads)

    def load_grads(self, grads: list[torch.Tensor]) -> None:
        """Make ``grads`` the gradients (copied into the same tensors, so nothing that holds
        them, compiled code included, sees a new object)."""
        with torch.no_grad():
            torch._foreach_copy_(self.master_grads, grads)
            torch._foreach_copy_(self.grads, grads)

    def grads_changed(self) -> bool:
        return not all(torch.equal(g, m) for g, m in zip(self.grads, self.master_grads))

    def timed_step(
        self, step: Callable[[], Any], grads_too: bool
    ) -> tuple[float, float, int | None]:
        """(wall seconds, process CPU seconds, transient bytes) of one ``step()``."""
        self.restore(grads_too)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        elif self.peak is not None:
            self.peak.start()
        c0 = time.process_time()
        t0 = self.clock.now()
        step()
        t1 = self.clock.now()
        c1 = time.process_time()
        if self.cuda:
            extra: int | None = torch.cuda.max_memory_allocated() - base
        else:
            extra = self.peak.stop() if self.peak is not None else None
        return (t1 - t0), (c1 - c0), extra


def _check_no_host_sync(bench: _Bench, step: Callable[[], Any]) -> str:
    """Run one step with torch.cuda.set_sync_debug_mode("error"); report what happened."""
    bench.restore(False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        verdict = "no host sync (set_sync_debug_mode('error') passed)"
    except RuntimeError as exc:
        verdict = f"HOST SYNC: {str(exc).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return verdict


@dataclass
class _Live:
    """A constructed optimizer: its step callable and its row in the current section."""

    cand: Candidate
    step: Callable[[], Any]
    mutates_grads: bool
    state_bytes: int | None
    scratch_bytes: int | None
    row: Row


def _start(cand: Candidate, bench: _Bench, warmup: int, log: Any) -> tuple[Row, _Live | None]:
    """Construct ``cand`` and take its warm-up steps; a row saying why when it cannot."""
    row = Row(cand.label, cand.family, cand.role, notes=list(cand.notes))
    if cand.unavailable is not None or cand.factory is None:
        row.status, row.reason = "unavailable", cand.unavailable or "no factory"
        return row, None
    try:
        opt = cand.factory(bench.params)
        step: Callable[[], Any] = torch.compile(opt.step) if cand.compiled else opt.step
        mutates = False
        for i in range(max(1, warmup)):
            dt, _, _ = bench.timed_step(step, mutates)
            row.warmup_s.append(dt)
            if i == 0 and bench.grads_changed():
                mutates = True
                row.notes.append("modifies p.grad in place (grads restored every step)")
                bench.restore(True)
        row.first_step_s = row.warmup_s[0]
        row.state_bytes, row.scratch_bytes = _state_bytes(opt, bench.storages)
        if cand.compiled:
            secs = " + ".join(f"{t:.1f}" for t in row.warmup_s)
            row.notes.append(f"compiles in its warm-up steps: {secs} s")
    except Exception as exc:
        row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
        log(f"  {cand.label}: FAILED\n" + traceback.format_exc(limit=3))
        bench.restore(True)
        return row, None
    log(f"  {cand.label}: first step {row.first_step_s:.3f}s")
    return row, _Live(cand, step, mutates, row.state_bytes, row.scratch_bytes, row)


def _carry_over(live: _Live, bench: _Bench, kind: str) -> Row:
    """A fresh row for ``live`` on new gradients, after one untimed step on them."""
    row = Row(live.cand.label, live.cand.family, live.cand.role, notes=list(live.cand.notes))
    row.state_bytes, row.scratch_bytes = live.state_bytes, live.scratch_bytes
    dt, _, _ = bench.timed_step(live.step, live.mutates_grads)
    row.first_step_s = dt
    row.warmup_s = [dt]
    if live.cand.compiled:
        row.notes.append(f"first step on {kind} gradients (recompilation, if any): {dt:.1f} s")
    if live.mutates_grads:
        row.notes.append("modifies p.grad in place (grads restored every step)")
    live.row = row
    return row


def run(
    set_name: str,
    grad_kinds: list[str],
    candidates: list[Candidate],
    *,
    rounds: int,
    steps: int,
    warmup: int,
    device: str = "cpu",
    dtype: str = "float32",
    log: Any = print,
) -> list[dict[str, Any]]:
    """Time every candidate on ``set_name``, one section per gradient kind (JSON-able: rows,
    medians, ratios against the family baselines, projection census, load). ``dtype``: the
    storage dtype of weights and gradients (so of every optimizer's state).

    The optimizers are built once and carried from one gradient kind to the next (the same
    objects, so a compiled step compiles once); each later kind starts with one untimed step.
    """
    shapes = shape_sets.build(set_name)
    total = shape_sets.total(shapes)
    params = [p.to(getattr(torch, dtype)) for p in workload.make_params(shapes, device=device)]
    grads_by_kind = {k: workload.make_grads(params, k) for k in grad_kinds}
    bench = _Bench(params, [g.clone() for g in grads_by_kind[grad_kinds[0]]], device)
    sections = []
    live: list[_Live] = []
    dead: list[Row] = []
    for index, kind in enumerate(grad_kinds):
        bench.load_grads(grads_by_kind[kind])
        census = workload.projection_census(params, grads_by_kind[kind])
        load_start = loadavg()
        log(f"torch {device} {set_name} {dtype} {kind}: {census.describe()}")
        if index == 0:
            for cand in candidates:
                row, started = _start(cand, bench, warmup, log)
                if started is None:
                    dead.append(row)
                else:
                    live.append(started)
            rows = [lv.row for lv in live] + dead
        else:
            rows = [_carry_over(lv, bench, kind) for lv in live] + dead
        order = [c.label for c in candidates]
        rows.sort(key=lambda r: order.index(r.label))
        _time_rounds(bench, live, rounds, steps, log)
        for lv in live:  # kept scratch can grow with the gradients (projected tensors)
            opt = getattr(lv.step, "__self__", None)
            if isinstance(opt, torch.optim.Optimizer):
                lv.row.state_bytes, lv.row.scratch_bytes = _state_bytes(opt, bench.storages)
        _agreement(bench, live)
        if bench.cuda:
            for lv in live:
                if lv.row.role == "ours":
                    lv.row.notes.append(_check_no_host_sync(bench, lv.step))
        sections.append(
            {
                "framework": "torch",
                "device": device,
                "set": set_name,
                "dtype": dtype,
                "grad_kind": kind,
                "params": total,
                "tensors": len(shapes),
                "census": census.describe(),
                "carried_over": index > 0,
                "rounds": rounds,
                "steps_per_round": steps,
                "warmup": warmup if index == 0 else 1,
                "loadavg_start": load_start,
                "loadavg_end": loadavg(),
                "rows": _summaries(rows, total),
            }
        )
    del live
    gc.collect()
    return sections


def _time_rounds(bench: _Bench, live: list[_Live], rounds: int, steps: int, log: Any) -> None:
    for r in range(rounds):
        k = r % len(live) if live else 0
        for lv in live[k:] + live[:k]:
            for _ in range(steps):
                dt, cpu, extra = bench.timed_step(lv.step, lv.mutates_grads)
                lv.row.times_ms.append(dt * 1e3)
                lv.row.cpu_ms.append(cpu * 1e3)
                if extra is not None:
                    lv.row.step_peak_bytes = max(lv.row.step_peak_bytes or 0, extra)
        log(f"  round {r + 1}/{rounds} done (load {loadavg()})")


def _summaries(rows: list[Row], total: int) -> list[dict[str, Any]]:
    medians = {r.label: statistics.median(r.times_ms) for r in rows if r.times_ms}
    out = []
    for row in rows:
        d = row.summary(total)
        d["baseline"] = base = BASELINE[row.family]
        if row.label in medians and base in medians:
            d["ratio"] = medians[row.label] / medians[base]
        out.append(d)
    return out


def _agreement(bench: _Bench, live: list[_Live]) -> None:
    """One more step for everyone from the master weights, references first; then
    max |result - authors' result| / max |authors' result| per family. (AdamW/SGD rows show how
    far plain AdamW/SGD lands from AdamP/SGDP on these gradients.)"""
    refs: dict[str, list[torch.Tensor]] = {}
    order = sorted(live, key=lambda lv: lv.row.label != REFERENCE[lv.row.family])
    for lv in order:
        row = lv.row
        bench.restore(lv.mutates_grads)
        try:
            lv.step()
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
