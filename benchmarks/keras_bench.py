"""Keras optimizer-step benchmark, one Keras backend per process.

Run by :mod:`benchmarks.run` as ``KERAS_BACKEND=<backend> python -m benchmarks.keras_bench
--backend <backend> --json-out FILE ...``. Times ``optimizer.apply(grads, variables)`` on the
trainable variables of one model (``keras.applications.ResNet50(weights=None)``, or a tiny CNN
for smoke runs) for Keras's AdamW and SGD and ``adamp_tf``'s AdamP and SGDP, interleaved over
rounds, with the same restore-before-every-step scheme as the torch benchmark. On TensorFlow
the step is a ``tf.function(jit_compile=True)`` (XLA); on JAX, ``jax.jit`` of
``optimizer.stateless_apply`` (what a Keras train step compiles); on the torch backend it runs
eagerly (Keras has no compiled optimizer step there). Gradients: ``random`` or ``orthogonal``
to every output-channel slice (the LAST axis of Conv/Dense kernels).

``--device gpu`` requires the backend to see a GPU (``benchmarks.gpu`` runs it in an
environment with GPU builds) and names it in the output. Every timed step ends by waiting
for the device, so asynchronous GPU work is inside the timing.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.machine import PeakRss, loadavg

BACKENDS = ("tensorflow", "jax", "torch")
DEVICES = ("cpu", "gpu")
FAMILIES = {"AdamP": "AdamW", "SGDP": "SGD"}  # ours -> Keras built-in baseline


def _set_threads(backend: str, threads: int) -> None:
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def device_name(backend: str, device: str) -> str:
    """What the step runs on: ``"cpu"``, or the GPU's name on ``device="gpu"``.

    Raises:
        RuntimeError: ``device="gpu"`` and the backend sees no GPU (a CPU-only build).
    """
    if device == "cpu":
        return "cpu"
    name = None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        name = gpus[0].device_kind if gpus else None
    else:
        import torch

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if name is None:
        raise RuntimeError(f"--device gpu: the {backend} backend sees no GPU")
    return str(name)


def _sync(backend: str) -> Callable[[list[Any]], None]:
    """``sync(variables)``: wait until the device has finished all work queued so far."""
    if backend == "tensorflow":
        import tensorflow as tf

        return lambda variables: tf.test.experimental.sync_devices()
    if backend == "jax":
        import jax

        return lambda variables: jax.block_until_ready([v.value for v in variables])
    import torch

    if torch.cuda.is_available():
        return lambda variables: torch.cuda.synchronize()
    return lambda variables: None


def _model(name: str) -> Any:
    import keras

    if name == "resnet50":
        return keras.applications.ResNet50(weights=None)
    if name == "tiny":
        return keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Flatten(),
                keras.layers.Dense(10),
            ]
        )
    raise ValueError(f"unknown Keras model {name!r}")


def keras_grads(weights: list[np.ndarray], kind: str, seed: int = 1) -> list[np.ndarray]:
    """``random`` N(0, 0.01^2) gradients, or the same made orthogonal to every last-axis slice
    of each weight with 2+ dims (Keras kernels keep the output channel last)."""
    rng = np.random.default_rng(seed)
    out = []
    for w in weights:
        g = rng.standard_normal(w.shape) * 1e-2
        if kind == "orthogonal" and w.ndim >= 2:
            rows_w = np.moveaxis(w.astype(np.float64), -1, 0).reshape(w.shape[-1], -1)
            rows_g = np.moveaxis(g, -1, 0).reshape(w.shape[-1], -1)
            coef = (rows_g * rows_w).sum(1, keepdims=True) / (rows_w * rows_w).sum(1, keepdims=True)
            rows_g = rows_g - coef * rows_w
            g = np.moveaxis(rows_g.reshape(np.moveaxis(g, -1, 0).shape), 0, -1)
        out.append(g.astype(w.dtype))
    return out


def keras_census(weights: list[np.ndarray], grads: list[np.ndarray], delta: float = 0.1) -> str:
    """The authors' projection test with the last axis as the channel axis (float64)."""

    def passes(rw: np.ndarray, rg: np.ndarray) -> bool:
        nw = np.maximum(np.linalg.norm(rw, axis=1), 1e-8)
        ng = np.maximum(np.linalg.norm(rg, axis=1), 1e-8)
        cos = np.abs((rw * rg).sum(1) / (nw * ng))
        return bool(cos.max() < delta / np.sqrt(rw.shape[1]))

    fired = cands = 0
    for w, g in zip(weights, grads):
        if w.ndim < 2:
            continue
        cands += 1
        rw = np.moveaxis(w.astype(np.float64), -1, 0).reshape(w.shape[-1], -1)
        rg = np.moveaxis(g.astype(np.float64), -1, 0).reshape(w.shape[-1], -1)
        fired += passes(rw, rg) or passes(rw.reshape(1, -1), rg.reshape(1, -1))
    return f"projection fires on {fired}/{cands} kernels with 2+ dims (last axis = channel)"


def _optimizers() -> list[tuple[str, str, Callable[[], Any] | None, str | None]]:
    """(label, family, factory or None, why unavailable)."""
    import keras

    adam = {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}
    sgd = {"learning_rate": 0.1, "momentum": 0.9}
    out: list[tuple[str, str, Callable[[], Any] | None, str | None]] = [
        ("keras AdamW", "AdamP", lambda: keras.optimizers.AdamW(weight_decay=1e-2, **adam), None),
        ("keras SGD", "SGDP", lambda: keras.optimizers.SGD(weight_decay=1e-4, **sgd), None),
    ]
    mod: Any = None
    try:
        mod = importlib.import_module("adamp_tf")
        missing = [n for n in ("AdamP", "SGDP") if not hasattr(mod, n)]
        why = f"adamp_tf has no {', '.join(missing)}" if missing else None
    except Exception as exc:
        missing, why = ["AdamP", "SGDP"], f"{type(exc).__name__}: {exc}"
    for name, kw, wd in (("AdamP", adam, 1e-2), ("SGDP", sgd, 1e-4)):
        if name in missing:
            out.append((f"ours adamp_tf.{name}", name, None, f"missing ({why})"))
        else:
            out.append(
                (
                    f"ours adamp_tf.{name}",
                    name,
                    functools.partial(getattr(mod, name), weight_decay=wd, **kw),
                    None,
                )
            )
    return out  # fmt: skip


def run(backend: str, model_name: str, kinds: list[str], rounds: int, steps: int,
        warmup: int, threads: int, log: Callable[[str], None],
        device: str = "cpu") -> list[dict[str, Any]]:  # fmt: skip
    """Time every optimizer on ``model_name``'s variables; one section per gradient kind."""
    import keras

    _set_threads(backend, threads)
    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()!r}, expected {backend!r}")
    where = device_name(backend, device)
    sync = _sync(backend)
    model = _model(model_name)
    variables = list(model.trainable_variables)
    weights = [keras.ops.convert_to_numpy(v.value) for v in variables]
    masters = [keras.ops.convert_to_tensor(w) for w in weights]
    total = int(sum(w.size for w in weights))
    grads_np = {kind: keras_grads(weights, kind) for kind in kinds}
    grads = {kind: [keras.ops.convert_to_tensor(g) for g in grads_np[kind]] for kind in kinds}
    current: list[list[Any]] = [grads[kinds[0]]]  # the gradients every step function reads
    peak = PeakRss()

    def restore() -> None:
        for v, m in zip(variables, masters):
            v.assign(m)

    def timed(step: Callable[[], Any]) -> tuple[float, int | None]:
        restore()
        sync(variables)
        peak.start()
        t0 = time.perf_counter()
        step()
        sync(variables)
        dt = time.perf_counter() - t0
        return dt, peak.stop()

    def new_row(label: str, family: str, why: str | None) -> dict[str, Any]:
        return {"label": label, "family": family, "status": "ok", "reason": why,
                "times_ms": [], "step_peak_bytes": None, "notes": []}  # fmt: skip

    sections = []
    live: list[tuple[dict[str, Any], Callable[[], Any]]] = []
    dead: list[dict[str, Any]] = []
    for index, kind in enumerate(kinds):
        current[0] = grads[kind]
        load_start = loadavg()
        if index == 0:
            for label, family, factory, why in _optimizers():
                row = new_row(label, family, why)
                if factory is None:
                    row["status"] = "unavailable"
                    dead.append(row)
                    continue
                try:
                    opt = factory()
                    step = _step_fn(backend, opt, variables, current)
                    row["warmup_s"] = [timed(step)[0] for _ in range(max(1, warmup))]
                    row["state_bytes"] = int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize
                                                 for v in opt.variables))  # fmt: skip
                except Exception as exc:
                    row["status"] = "failed"
                    row["reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    log(f"  {label}: FAILED\n{traceback.format_exc(limit=3)}")
                    restore()
                    dead.append(row)
                    continue
                live.append((row, step))
        else:
            carried = []
            for old, step in live:
                row = new_row(old["label"], old["family"], None)
                row["state_bytes"] = old["state_bytes"]
                row["warmup_s"] = [timed(step)[0]]
                carried.append((row, step))
            live = carried
        for row, _ in live:
            row["first_step_s"] = row["warmup_s"][0]
            row["state_bytes_per_param"] = row["state_bytes"] / total
            log(f"  {row['label']} ({kind}): first step {row['first_step_s']:.3f}s")
        for r in range(rounds):
            k = r % max(1, len(live))
            for row, step in live[k:] + live[:k]:
                for _ in range(steps):
                    dt, extra = timed(step)
                    row["times_ms"].append(dt * 1e3)
                    if extra is not None:
                        row["step_peak_bytes"] = max(row["step_peak_bytes"] or 0, extra)
            log(f"  round {r + 1}/{rounds} done (load {loadavg()})")
        restore()
        rows = [row for row, _ in live] + [dict(d) for d in dead]
        _finish_rows(rows)
        sections.append({
            "framework": f"keras/{backend}",
            "device": where,
            "set": f"keras {model_name}",
            "grad_kind": kind,
            "params": total,
            "tensors": len(variables),
            "census": keras_census(weights, grads_np[kind]),
            "carried_over": index > 0,
            "step": STEP_KIND[backend],
            "rounds": rounds,
            "steps_per_round": steps,
            "warmup": warmup if index == 0 else 1,
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "rows": rows,
        })  # fmt: skip
    return sections


STEP_KIND = {
    "tensorflow": "tf.function(jit_compile=True)",
    "jax": "jax.jit(stateless_apply)",
    "torch": "eager",
}


def _step_fn(backend: str, opt: Any, variables: list[Any], current: list[Any]) -> Callable[[], Any]:
    """A no-argument step applying ``current[0]`` (the gradients) to ``variables``."""
    opt.build(variables)
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda gs: opt.apply(gs, variables), jit_compile=True)
        return lambda: fn(current[0])
    if backend == "jax":
        import jax

        stateless = jax.jit(opt.stateless_apply)

        def step() -> None:
            weights, state = stateless(
                [v.value for v in opt.variables], current[0], [v.value for v in variables]
            )
            for var, value in zip([*variables, *opt.variables], [*weights, *state]):
                var.assign(value)

        return step
    return lambda: opt.apply(current[0], variables)


def _finish_rows(rows: list[dict[str, Any]]) -> None:
    """Medians, quartiles and ratios against the Keras built-in of each family."""
    medians = {}
    for row in rows:
        if row["times_ms"]:
            row["median_ms"] = statistics.median(row["times_ms"])
            if len(row["times_ms"]) > 1:
                q = statistics.quantiles(row["times_ms"], n=4, method="inclusive")
                row["p25_ms"], row["p75_ms"] = q[0], q[2]
            medians[row["label"]] = row["median_ms"]
    for row in rows:
        base = "keras " + FAMILIES[row["family"]]
        row["baseline"] = base
        if row["label"] in medians and base in medians:
            row["ratio"] = medians[row["label"]] / medians[base]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=BACKENDS, required=True)
    ap.add_argument("--model", default="resnet50", choices=("resnet50", "tiny"))
    ap.add_argument("--grads", default="random,orthogonal")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=DEVICES, default="cpu", help="gpu: require a GPU")
    ap.add_argument("--json-out", required=True)
    a = ap.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != a.backend:
        print(f"set KERAS_BACKEND={a.backend} (the backend is fixed at import)", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    sections = run(a.backend, a.model, a.grads.split(","), a.rounds, a.steps, a.warmup,
                   a.threads, log, a.device)  # fmt: skip
    with open(a.json_out, "w") as fh:
        json.dump({"sections": sections}, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
