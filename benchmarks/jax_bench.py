"""optax step benchmark: ``adamp_jax.adamp`` vs ``optax.adamw`` (and ``adamp_jax.sgdp`` vs
``optax.sgd``) under ``jax.jit``, on ResNet-50-sized parameters in Flax layout.

Run from the repository root, with JAX, optax and adamp_jax installed::

    python -m benchmarks.jax_bench                 # resnet50, random + orthogonal gradients
    python benchmarks/jax_bench.py --quick         # smoke run (tiny set, 2 rounds)
    python -m benchmarks --no-torch --keras none --include benchmarks/results/jax.json

The shapes come from :mod:`benchmarks.shapes` (PyTorch layout) and are transposed to Flax's:
Conv ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``, Dense ``(out, in)`` -> ``(in, out)``, so
the output channel is the last axis (the optimizers' default channel axes). Each optimizer's
step is one jitted function ``(params, state, grads) -> (params, state)`` (the update and
``optax.apply_updates``), called on the same inputs every time (nothing is donated, so
every step reads the same weights and orthogonal gradients stay orthogonal) and timed to
``block_until_ready``. Optimizers are interleaved over rounds in one process, in a rotated
order; reported: the median and quartiles of all timed steps, the ratio to the optax
baseline of the family in the same rounds, process CPU time per step, the first (compiling)
step, and the state size. The JSON (``machine`` + ``sections``) has the layout
``python -m benchmarks --include`` merges into its report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import machine, shapes

ROOT = Path(__file__).resolve().parents[1]
GRAD_KINDS = ("random", "orthogonal")
#: (label, family, factory name); the first of each family is its baseline.
CANDIDATES = (
    ("optax adamw", "AdamP", "adamw"),
    ("ours adamp_jax.adamp", "AdamP", "adamp"),
    ("optax sgd", "SGDP", "sgd"),
    ("ours adamp_jax.sgdp", "SGDP", "sgdp"),
)
BASELINE = {"AdamP": "optax adamw", "SGDP": "optax sgd"}


def flax_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The Flax layout of a PyTorch-layout shape: the output channel last."""
    if len(shape) == 4:
        out, cin, kh, kw = shape
        return (kh, kw, cin, out)
    if len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def make_params(set_name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights in Flax layout: He-normal for tensors of rank >= 2 (fan-in = the
    elements of one output channel), N(0, 0.1^2) for vectors."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.build(set_name):
        w = rng.standard_normal(flax_shape(shape), dtype=np.float32)
        if len(shape) >= 2:
            w *= math.sqrt(2.0 / max(1, math.prod(shape[1:])))
        else:
            w *= 0.1
        out[name] = w
    return out


def _rows(x: np.ndarray) -> np.ndarray:
    """One row per output channel (the last axis)."""
    return np.moveaxis(x, -1, 0).reshape(x.shape[-1], -1)


def make_grads(params: dict[str, np.ndarray], kind: str, seed: int = 1) -> dict[str, np.ndarray]:
    """``random`` N(0, 0.01^2) gradients, or the same with each output-channel row of every
    tensor of rank >= 2 made orthogonal to its weight row (the projection then fires)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, w in params.items():
        g = rng.standard_normal(w.shape) * 1e-2
        if kind == "orthogonal" and w.ndim >= 2:
            rw, rg = _rows(w.astype(np.float64)), _rows(g)
            rg = rg - (rg * rw).sum(1, keepdims=True) / (rw * rw).sum(1, keepdims=True) * rw
            g = np.moveaxis(rg.reshape(np.moveaxis(g, -1, 0).shape), 0, -1)
        out[name] = g.astype(w.dtype)
    return out


def census(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], delta: float = 0.1) -> str:
    """How many tensors the projection test (last axis = channel) fires on, in float64."""

    def passes(rw: np.ndarray, rg: np.ndarray) -> bool:
        nw = np.maximum(np.linalg.norm(rw, axis=1), 1e-8)
        ng = np.maximum(np.linalg.norm(rg, axis=1), 1e-8)
        return bool(np.max(np.abs((rw * rg).sum(1) / (nw * ng))) < delta / math.sqrt(rw.shape[1]))

    fired = candidates = 0
    for name, w in params.items():
        if w.ndim < 2:
            continue
        candidates += 1
        rw, rg = _rows(w.astype(np.float64)), _rows(grads[name].astype(np.float64))
        fired += passes(rw, rg) or passes(rw.reshape(1, -1), rg.reshape(1, -1))
    return f"projection fires on {fired}/{candidates} kernels with 2+ dims (last axis = channel)"


def _factory(name: str) -> Any:
    import optax

    import adamp_jax

    return {
        "adamw": lambda: optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2),
        "adamp": lambda: adamp_jax.adamp(1e-3, weight_decay=1e-2),
        # decoupled decay, as SGDP's: add_decayed_weights after the momentum would be coupled
        "sgd": lambda: optax.chain(
            optax.trace(decay=0.9), optax.add_decayed_weights(1e-4), optax.scale(-0.1)
        ),
        "sgdp": lambda: adamp_jax.sgdp(0.1, momentum=0.9, weight_decay=1e-4),
    }[name]()


def _jitted_step(tx: Any) -> Callable[..., Any]:
    import jax
    import optax

    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def _finish(rows: list[dict[str, Any]]) -> None:
    medians = {}
    for row in rows:
        if row["times_ms"]:
            row["median_ms"] = statistics.median(row["times_ms"])
            row["median_cpu_ms"] = statistics.median(row["cpu_ms"])
            if len(row["times_ms"]) > 1:
                q = statistics.quantiles(row["times_ms"], n=4, method="inclusive")
                row["p25_ms"], row["p75_ms"] = q[0], q[2]
            medians[row["label"]] = row["median_ms"]
    for row in rows:
        row["baseline"] = BASELINE[row["family"]]
        if row["label"] in medians and row["baseline"] in medians:
            row["ratio"] = medians[row["label"]] / medians[row["baseline"]]


def run(
    set_name: str,
    kinds: list[str],
    rounds: int,
    steps: int,
    warmup: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One section per gradient kind; all optimizers timed interleaved in this process."""
    import jax

    params_np = make_params(set_name)
    params = {k: jax.device_put(v) for k, v in params_np.items()}
    total = int(sum(v.size for v in params_np.values()))
    sections = []
    for kind in kinds:
        grads_np = make_grads(params_np, kind)
        grads = {k: jax.device_put(v) for k, v in grads_np.items()}
        load_start = machine.loadavg()
        live = []
        for label, family, name in CANDIDATES:
            tx = _factory(name)
            state = jax.jit(tx.init)(params)
            step = _jitted_step(tx)
            row: dict[str, Any] = {
                "label": label,
                "family": family,
                "status": "ok",
                "reason": None,
                "times_ms": [],
                "cpu_ms": [],
                "step_peak_bytes": None,
                "notes": [],
                "warmup_s": [],
            }
            for _ in range(max(1, warmup)):
                t0 = time.perf_counter()
                jax.block_until_ready(step(params, state, grads))
                row["warmup_s"].append(time.perf_counter() - t0)
            row["first_step_s"] = row["warmup_s"][0]
            row["state_bytes_per_param"] = sum(x.nbytes for x in jax.tree.leaves(state)) / total
            log(f"  {label} ({kind}): first step (compiles) {row['first_step_s']:.2f}s")
            live.append((row, step, state))
        for r in range(rounds):
            k = r % len(live)
            for row, step, state in live[k:] + live[:k]:
                for _ in range(steps):
                    c0, t0 = time.process_time(), time.perf_counter()
                    jax.block_until_ready(step(params, state, grads))
                    row["times_ms"].append((time.perf_counter() - t0) * 1e3)
                    row["cpu_ms"].append((time.process_time() - c0) * 1e3)
            log(f"  round {r + 1}/{rounds} done (load {machine.loadavg()})")
        rows = [row for row, _, _ in live]
        _finish(rows)
        sections.append(
            {
                "framework": "jax/optax",
                "device": "cpu",
                "set": f"{set_name} (Flax layout)",
                "grad_kind": kind,
                "params": total,
                "tensors": len(params_np),
                "census": census(params_np, grads_np),
                "step": "jax.jit(update + apply_updates)",
                "rounds": rounds,
                "steps_per_round": steps,
                "warmup": warmup,
                "loadavg_start": load_start,
                "loadavg_end": machine.loadavg(),
                "rows": rows,
            }
        )
    return sections


def render(info: dict[str, Any], sections: list[dict[str, Any]]) -> str:
    """A Markdown report: the machine, then one table per section."""
    lines = [
        "# optax step benchmark (adamp_jax)",
        "",
        f"- Date (UTC): {info['date_utc']}; command: `{info['command']}`",
        f"- Machine: {info['cpu_model']}, {info['usable_cpus']} usable CPUs; "
        f"{info['platform']}; Python {info['python']}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items() if v)}",
        f"- Load average (1/5/15 min): start {info['loadavg_start']}, end {info['loadavg_end']}",
        "",
    ]
    for sec in sections:
        lines += [
            f"## {sec['set']} ({sec['params']:,} params, {sec['tensors']} tensors), "
            f"{sec['grad_kind']} gradients",
            "",
            f"{sec['census']}. {sec['rounds']} rounds x {sec['steps_per_round']} timed steps "
            f"per optimizer, interleaved; load {sec['loadavg_start']} -> {sec['loadavg_end']}.",
            "",
            "| optimizer | median ms | IQR ms | x baseline | CPU ms | state B/param | 1st step s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sec["rows"]:
            iqr = f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f}" if "p25_ms" in r else ""
            lines.append(
                f"| {r['label']} | {r['median_ms']:.1f} | {iqr} | {r.get('ratio', 0):.2f} | "
                f"{r['median_cpu_ms']:.1f} | {r['state_bytes_per_param']:.1f} | "
                f"{r['first_step_s']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="resnet50", choices=sorted(shapes.SETS))
    ap.add_argument("--grads", default=",".join(GRAD_KINDS), help="random,orthogonal")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per optimizer per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiles)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny set, 2 rounds x 1 step")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None, help="output file stem (default jax, jax-quick)")
    a = ap.parse_args(argv)
    if a.quick:
        a.set, a.rounds, a.steps, a.warmup = "tiny", 2, 1, 1
    name = a.name or ("jax-quick" if a.quick else "jax")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    info = machine.machine_info(os.cpu_count() or 0)
    info["command"] = "python -m benchmarks.jax_bench " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    info["versions"] = {k: v for k, v in machine.versions().items() if k in ("jax", "numpy")}
    from importlib.metadata import version

    info["versions"]["optax"] = version("optax")
    sections = run(a.set, a.grads.split(","), a.rounds, a.steps, a.warmup, log)
    info["loadavg_end"] = machine.loadavg()
    a.out.mkdir(parents=True, exist_ok=True)
    md, js = a.out / f"{name}.md", a.out / f"{name}.json"
    md.write_text(render(info, sections))
    js.write_text(json.dumps({"machine": info, "sections": sections}, indent=1, default=str))
    log(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
