"""GPU readiness of the fused Triton step (``adamp_torch._triton``): ``nox -s gpu``.

On a machine with a CUDA device, ``python -m benchmarks.gpu``:

1. checks the kernels there: ``python -m adamp_core check --backend torch-triton`` (every
   AdamP/SGDP x float32/float64 x branch row), bfloat16/float16 within one unit in the last
   place of "upcast, float32 math, round", no host sync inside a step
   (``torch.cuda.set_sync_debug_mode("error")`` around it, float and tensor lr), a step
   captured in a CUDA graph and replayed (equal to eager steps, lr changed between
   replays), and two runs bitwise equal;
2. times one step of the kernels against torch's fused AdamW / SGD (``torch._fused_adamw_``,
   ``torch._fused_sgd_`` on the same tensors) on ResNet-50, ViT-B/16 and GPT-2 shapes, in
   float32 and bfloat16, with random and projection-forcing gradients (eager launches and
   a CUDA-graph replay), and compares the optimizer state's bytes with torch's;
3. runs the Keras adapter on the GPU, once per Keras backend (``--keras``, default
   TensorFlow and JAX), each in a virtual environment of its own under ``--keras-envs``
   (default ``.nox/gpu-keras-<backend>``) so that TensorFlow and a CUDA torch never share
   a process: it installs the GPU build (``tensorflow[and-cuda]`` / ``jax[cuda12]``, at
   the versions ``constraints.txt`` pins for the CPU builds), keras, the test
   dependencies and a CPU torch (the cross-framework tests compare with ``adamp_torch``),
   runs ``tests/keras`` there, and times ``optimizer.apply(grads, variables)`` of
   ``adamp_tf.AdamP`` / ``SGDP`` against ``keras.optimizers.AdamW`` / ``SGD`` on
   ResNet-50's trainable variables (``benchmarks.keras_bench --device gpu``: XLA
   ``tf.function(jit_compile=True)`` on TensorFlow, ``jax.jit`` on JAX);
4. writes ``gpu-<device>.json`` / ``.md`` (under ``--out``, default ``benchmarks/results``)
   naming the GPU, and checks the targets: AdamP <= 1.6x fused AdamW, SGDP <= 1.8x fused
   SGD (graph replays), state bytes equal, the Keras tests pass (the Keras timings are
   reported, without a target).

Exit status: 0 when every check and target passes, 1 otherwise. Without a CUDA device it
prints "no CUDA device" and exits 0 (2 with ``--require-cuda``). ``--dry-run`` prints
what a run would do, with the exact commands of the Keras part, and runs nothing.

The kernels are called directly (the optimizers' dispatch does not use them yet).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import shapes

MODELS = ("resnet50", "vit_b16", "gpt2")
TARGETS = {"AdamP": 1.6, "SGDP": 1.8}
ROOT = Path(__file__).resolve().parents[1]
#: Keras backend -> (the CPU build constraints.txt pins, the GPU build installed instead)
KERAS_GPU_BUILDS = {
    "tensorflow": ("tensorflow-cpu", "tensorflow[and-cuda]"),
    "jax": ("jax", "jax[cuda12]"),
}
#: what tests/keras imports besides the backend (torch comes from the CPU wheel index)
KERAS_TEST_DEPS = ("keras", "pytest", "hypothesis", "adamp")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: float32 tests compare with float32/float64 references: no TF32 matmuls and convolutions
#: (the default on Ampere and later GPUs) while tests/keras runs
KERAS_TEST_ENV = {
    "tensorflow": {"NVIDIA_TF32_OVERRIDE": "0"},
    "jax": {"JAX_DEFAULT_MATMUL_PRECISION": "highest"},
}
STEP_TIMEOUT_S = 3600  # one install, test run or benchmark
ADAMP_H = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, delta=0.1)
ADAMP_H.update(wd_ratio=0.1, nesterov=False, maximize=False)
SGDP_H = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=False)
SGDP_H.update(eps=1e-8, delta=0.1, wd_ratio=0.1, variant="authors", maximize=False)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Timing:
    model: str
    dtype: str
    optimizer: str
    grads: str
    params: int
    ours_ms: float
    ours_graph_ms: float
    torch_fused_ms: float
    ratio: float
    """Graph replay of ours over torch's fused step."""
    state_bytes: int
    torch_state_bytes: int
    workspace_bytes: int


@dataclass
class KerasRun:
    """The Keras adapter on one backend: its tests and its optimizer-step timings."""

    backend: str
    passed: bool
    detail: str
    """The test summary line, or what failed."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One per (gradients, optimizer): keras_bench's row, summarised."""


@dataclass
class Report:
    device: str
    capability: str
    versions: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    keras: list[KerasRun] = field(default_factory=list)


# -- tensors ------------------------------------------------------------------------------------


def _tensors(
    model: str, dtype: Any, device: str, forcing: bool, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """Weights and gradients of a model's shapes; ``forcing``: each gradient row orthogonal to
    its weight row (every tensor with two or more dimensions takes the channel branch)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    params, grads = [], []
    for _, shape in shapes.build(model):
        p = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        g = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * 1e-2
        if forcing and len(shape) >= 2:
            pr, gr = p.reshape(shape[0], -1), g.reshape(shape[0], -1)
            coef = (pr * gr).sum(1, keepdim=True) / (pr * pr).sum(1, keepdim=True)
            g = (gr - coef * pr).reshape(shape)
        params.append(p.to(dtype))
        grads.append(g.to(dtype))
    return params, grads


class Step:
    """One optimizer over a list of tensors: ``kind`` is ``ours`` or ``torch``."""

    def __init__(self, optimizer: str, kind: str, params: list[Any], grads: list[Any]):
        import torch

        from adamp_torch import _triton

        self.optimizer, self.kind = optimizer, kind
        self.params = [p.clone() for p in params]
        self.grads = grads
        device = params[0].device
        self.state = [[torch.zeros_like(p) for p in params]]
        if optimizer == "AdamP":
            self.state.append([torch.zeros_like(p) for p in params])
        self.steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in params]
        self.workspace = _triton.Workspace()
        self.lr = torch.tensor(ADAMP_H["lr"] if optimizer == "AdamP" else SGDP_H["lr"])
        self.lr = self.lr.to(device)
        self._torch, self._triton = torch, _triton

    def __call__(self) -> None:
        torch, h = self._torch, dict(ADAMP_H if self.optimizer == "AdamP" else SGDP_H)
        h["lr"] = self.lr
        if self.kind == "ours" and self.optimizer == "AdamP":
            self._triton.adamp_step(
                self.params, self.grads, self.state[0], self.state[1], self.steps, **h,
                workspace=self.workspace,
            )  # fmt: skip
        elif self.kind == "ours":
            self._triton.sgdp_step(
                self.params, self.grads, self.state[0], **h, workspace=self.workspace
            )
        elif self.optimizer == "AdamP":
            torch._foreach_add_(self.steps, 1)  # as torch.optim.AdamW does before the kernel
            torch._fused_adamw_(
                self.params, self.grads, self.state[0], self.state[1], [], self.steps,
                lr=h["lr"], beta1=h["beta1"], beta2=h["beta2"], weight_decay=h["weight_decay"],
                eps=h["eps"], amsgrad=False, maximize=False,
            )  # fmt: skip
        else:
            torch._fused_sgd_(
                self.params, self.grads, self.state[0], weight_decay=h["weight_decay"],
                momentum=h["momentum"], lr=h["lr"], dampening=0.0, nesterov=False,
                maximize=False, is_first_step=False,
            )  # fmt: skip

    def state_bytes(self) -> int:
        tensors = [t for ts in self.state for t in ts]
        if self.optimizer == "AdamP":
            tensors += self.steps
        return sum(t.numel() * t.element_size() for t in tensors)

    def workspace_bytes(self) -> int:
        ws = self.workspace
        held = [*ws._pointers.values()]
        for layout in ws._layouts.values():
            held += [layout.items, layout.apply_items, layout.meta, layout.partials]
            held += [layout.coef, layout.decay, layout.branch]
        return sum(t.numel() * t.element_size() for t in held)


def _torch_state_bytes(optimizer: str, params: list[Any], grads: list[Any]) -> int:
    """Bytes of the state torch.optim.AdamW(fused=True) / SGD(fused=True) keeps."""
    import torch

    leaves = [p.clone().requires_grad_(True) for p in params]
    for leaf, g in zip(leaves, grads):
        leaf.grad = g
    if optimizer == "AdamP":
        opt: torch.optim.Optimizer = torch.optim.AdamW(leaves, lr=1e-3, fused=True)
    else:
        opt = torch.optim.SGD(leaves, lr=0.1, momentum=0.9, fused=True)
    opt.step()
    return sum(
        t.numel() * t.element_size()
        for st in opt.state.values()
        for t in st.values()
        if isinstance(t, torch.Tensor)
    )


# -- timing -------------------------------------------------------------------------------------


def _time_ms(fn: Callable[[], None], repeat: int) -> float:
    """Median milliseconds of ``fn`` (CUDA events), after a warm-up."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def _graph(fn: Callable[[], None]) -> Any:
    """A CUDA graph of ``fn`` (warmed up on a side stream first)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def bench(model: str, dtype_name: str, optimizer: str, forcing: bool, repeat: int) -> Timing:
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    params, grads = _tensors(model, dtype, "cuda", forcing)
    ours, theirs = Step(optimizer, "ours", params, grads), Step(optimizer, "torch", params, grads)
    ours_ms = _time_ms(ours, repeat)
    graph = _graph(ours)
    graph_ms = _time_ms(graph.replay, repeat)
    torch_graph = _graph(theirs)
    torch_ms = _time_ms(torch_graph.replay, repeat)
    timing = Timing(
        model, dtype_name, optimizer, "projection-forcing" if forcing else "random",
        sum(p.numel() for p in params), round(ours_ms, 4), round(graph_ms, 4), round(torch_ms, 4),
        round(graph_ms / torch_ms, 3), ours.state_bytes(),
        _torch_state_bytes(optimizer, params, grads), ours.workspace_bytes(),
    )  # fmt: skip
    del ours, theirs, graph, torch_graph, params, grads
    torch.cuda.empty_cache()
    return timing


# -- checks -------------------------------------------------------------------------------------


def _check(name: str, fn: Callable[[], str]) -> Check:
    """Run ``fn`` (returns a detail line, raises on failure) as a named check."""
    try:
        return Check(name, True, fn())
    except Exception as exc:  # a failed check is reported, the others still run
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def check_conformance() -> str:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run(
        [sys.executable, "-m", "adamp_core", "check", "--backend", "torch-triton"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    if out.returncode != 0 or "torch-triton" not in out.stdout:
        raise AssertionError(f"check exited {out.returncode}: {last}\n{out.stdout[-3000:]}")
    return last


def _ordered(x: Any) -> Any:
    import torch

    bits = x.view(torch.int16).to(torch.int32)
    return torch.where(bits < 0, -(bits & 0x7FFF), bits)


def check_low_precision(device: str = "cuda", model: str = "resnet50") -> str:
    """One step of each optimizer in bfloat16 and float16 on CUDA against the float32-math
    reference rounded to the storage dtype: at most one unit in the last place."""
    import torch

    from adamp_core import functional as ref
    from adamp_torch import _triton

    worst: dict[str, int] = {}
    for dtype in (torch.bfloat16, torch.float16):
        for optimizer in ("AdamP", "SGDP"):
            params, grads = _tensors(model, dtype, device, forcing=True, seed=1)
            params, grads = params[:12], grads[:12]
            got = [p.clone() for p in params]
            state = [[torch.zeros_like(p) for p in params] for _ in range(2)]
            if optimizer == "AdamP":
                steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in params]
                _triton.adamp_step(got, grads, state[0], state[1], steps, **ADAMP_H)
            else:
                _triton.sgdp_step(got, grads, state[0], **SGDP_H)
            ulps = 0
            for p, g, out in zip(params, grads, got):
                p32, g32 = p.float().cpu().numpy(), g.float().cpu().numpy()
                if optimizer == "AdamP":
                    h = {k: v for k, v in ADAMP_H.items() if k not in ("beta1", "beta2")}
                    h.pop("maximize")
                    want = ref.adamp_step(
                        p32, g32, ref.AdamPState.zeros_like(p32), betas=(0.9, 0.999), **h
                    ).param
                else:
                    h = {k: v for k, v in SGDP_H.items() if k != "maximize"}
                    want = ref.sgdp_step(p32, g32, ref.SGDPState.zeros_like(p32), **h).param
                want_t = torch.tensor(want).to(dtype)
                ulps = max(ulps, int((_ordered(out.cpu()) - _ordered(want_t)).abs().max()))
            worst[f"{optimizer} {dtype}"] = ulps
    if max(worst.values()) > 1:
        raise AssertionError(f"more than one ulp: {worst}")
    return f"worst ulps {worst}"


def check_no_sync() -> str:
    """Steps under ``set_sync_debug_mode("error")``: float lr and device lr, both optimizers
    (after one warm-up step that builds the tables)."""
    import torch

    done = []
    for optimizer in ("AdamP", "SGDP"):
        params, grads = _tensors("resnet50", torch.float32, "cuda", forcing=False)
        step = Step(optimizer, "ours", params, grads)
        step()
        torch.cuda.synchronize()
        for lr in (step.lr, float(step.lr.cpu())):
            step.lr = lr
            torch.cuda.set_sync_debug_mode("error")
            try:
                step()
                step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            done.append(f"{optimizer} lr={type(lr).__name__}")
    torch.cuda.synchronize()
    return "no sync in: " + ", ".join(done)


def check_graph() -> str:
    """A captured step replayed with the lr changed between replays equals eager steps."""
    import torch

    results = []
    for optimizer in ("AdamP", "SGDP"):
        params, grads = _tensors("resnet50", torch.float32, "cuda", forcing=True)
        eager, captured = (
            Step(optimizer, "ours", params, grads),
            Step(optimizer, "ours", params, grads),
        )
        graph = _graph(captured)  # runs three warm-up steps
        lrs = [1e-3, 5e-4, 2e-4]
        for _ in range(3):
            eager()
        for lr in lrs:
            captured.lr.fill_(lr)
            graph.replay()
            eager.lr.fill_(lr)
            eager()
        torch.cuda.synchronize()
        same = all(torch.equal(a, b) for a, b in zip(eager.params, captured.params))
        same &= all(torch.equal(a, b) for a, b in zip(eager.state[0], captured.state[0]))
        if not same:
            raise AssertionError(f"{optimizer}: graph replays differ from eager steps")
        if optimizer == "AdamP" and float(captured.steps[0]) != 6.0:
            raise AssertionError(f"step count {float(captured.steps[0])} after 6 steps")
        results.append(optimizer)
    return "graph replay == eager for " + ", ".join(results)


def check_determinism(device: str = "cuda", model: str = "vit_b16") -> str:
    import torch

    runs = []
    for _ in range(2):
        params, grads = _tensors(model, torch.float32, device, forcing=False)
        step = Step("AdamP", "ours", params, grads)
        for _ in range(3):
            step()
        runs.append(step.params)
    if not all(torch.equal(a, b) for a, b in zip(*runs)):
        raise AssertionError("two runs differ")
    return f"two runs bitwise equal ({model} shapes, 3 steps)"


# -- Keras adapter ------------------------------------------------------------------------------


def _pinned(name: str) -> str:
    """``name``'s version pinned in constraints.txt."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement.startswith(f"{name}=="):
            return requirement.split("==", 1)[1]
    raise ValueError(f"{name} is not pinned in constraints.txt")


def keras_commands(
    backend: str, envs: Path, json_out: Path
) -> list[tuple[list[str], dict[str, str]]]:
    """The Keras part's commands for ``backend``, run from the repository root, each with
    the environment variables it sets: create the environment, install a CPU torch, then
    the GPU build of the backend (same version as the CPU build's pin), keras and the
    test dependencies under constraints.txt, run tests/keras, time the optimizers."""
    cpu_build, gpu_build = KERAS_GPU_BUILDS[backend]
    python = str(envs / f"gpu-keras-{backend}" / "bin" / "python")
    keras_env = {"KERAS_BACKEND": backend}
    return [
        ([sys.executable, "-m", "venv", str(Path(python).parents[1])], {}),
        # first, from the CPU index: adamp (a test dependency) would pull a CUDA torch
        ([python, "-m", "pip", "install", "--index-url", TORCH_CPU_INDEX,
          f"torch=={_pinned('torch')}"], {}),
        ([python, "-m", "pip", "install", "-c", "constraints.txt", "-e", ".", *KERAS_TEST_DEPS,
          f"{gpu_build}=={_pinned(cpu_build)}"], {}),
        ([python, "-m", "pytest", "tests/keras", "-q", "-p", "no:cacheprovider"],
         {**keras_env, **KERAS_TEST_ENV[backend]}),
        ([python, "-m", "benchmarks.keras_bench", "--backend", backend, "--device", "gpu",
          "--model", "resnet50", "--json-out", str(json_out)], keras_env),
    ]  # fmt: skip


def _shown(cmd: list[str], env: dict[str, str]) -> str:
    """``cmd`` as a shell line, with its environment variables in front."""
    return " ".join([*(f"{k}={v}" for k, v in env.items()), shlex.join(cmd)])


def keras_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """keras_bench's JSON summarised: one row per (gradients, optimizer)."""
    rows = []
    for sec in data["sections"]:
        for row in sec["rows"]:
            rows.append({
                "backend": sec["framework"], "device": sec["device"], "step": sec["step"],
                "grads": sec["grad_kind"], "optimizer": row["label"], "status": row["status"],
                "median_ms": row.get("median_ms"), "ratio": row.get("ratio"),
                "baseline": row.get("baseline"), "reason": row.get("reason"),
            })  # fmt: skip
    return rows


def run_keras(backend: str, envs: Path) -> KerasRun:
    """Run :func:`keras_commands` for ``backend``; stop at the first that fails."""
    json_out = envs / f"gpu-keras-{backend}" / "keras_bench.json"
    summary = ""
    for cmd, extra in keras_commands(backend, envs, json_out):
        print(f"$ {_shown(cmd, extra)}", flush=True)
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env={**os.environ, **extra}, capture_output=True, text=True,
                timeout=STEP_TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return KerasRun(
                backend, False, f"timed out after {STEP_TIMEOUT_S} s: {shlex.join(cmd)}"
            )
        lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:])
            last = lines[-1] if lines else ""
            return KerasRun(backend, False, f"exit {proc.returncode}: {shlex.join(cmd)}: {last}")
        if cmd[1:3] == ["-m", "pytest"]:
            summary = f"tests/keras: {lines[-1] if lines else ''}"
    return KerasRun(backend, True, summary, keras_rows(json.loads(json_out.read_text())))


def plan(args: argparse.Namespace) -> str:
    """What a run with ``args`` does on a CUDA machine, with the Keras part's commands."""
    lines = ["dry run, nothing is run. On a machine with a CUDA device this would:"]
    if not args.skip_checks:
        lines.append(
            "- check the Triton kernels: python -m adamp_core check --backend torch-triton, "
            "bf16/fp16 within 1 ulp, no host sync in step(), CUDA graph capture and replay, "
            "determinism"
        )
    if args.models:
        lines.append(
            f"- time them against torch's fused AdamW/SGD on {', '.join(args.models)} shapes, "
            "float32 and bfloat16, random and projection-forcing gradients"
        )
    envs = Path(args.keras_envs).resolve()
    for backend in _keras_backends(args.keras):
        lines.append(f"- the Keras adapter on {backend}:")
        json_out = envs / f"gpu-keras-{backend}" / "keras_bench.json"
        lines += [f"  $ {_shown(cmd, env)}" for cmd, env in keras_commands(backend, envs, json_out)]
    lines.append(f"- write {Path(args.out) / 'gpu-<device>.json'} and .md, naming the GPU")
    return "\n".join(lines)


def _keras_backends(spec: str) -> list[str]:
    backends = [] if spec == "none" else [b for b in spec.split(",") if b]
    unknown = [b for b in backends if b not in KERAS_GPU_BUILDS]
    if unknown:
        raise SystemExit(
            f"--keras: unknown backend(s) {unknown}; choose from {list(KERAS_GPU_BUILDS)}"
        )
    return backends


# -- report -------------------------------------------------------------------------------------


def _markdown(report: Report) -> str:
    lines = [
        f"# Fused Triton step on {report.device}",
        "",
        f"Compute capability {report.capability}; "
        + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail.splitlines()[0] if c.detail else ''} |"  # noqa: E501
        for c in report.checks
    ]
    lines += [
        "",
        "## One step, ms (median; ratio = our graph replay / torch fused graph replay)",
        "",
        "| model | dtype | optimizer | gradients | params | ours eager | ours graph | torch fused "
        "| ratio | target | state bytes (ours / torch) | workspace bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report.timings:
        target = TARGETS[t.optimizer]
        verdict = "ok" if t.ratio <= target else "MISSED"
        lines.append(
            f"| {t.model} | {t.dtype} | {t.optimizer} | {t.grads} | {t.params:,} | "
            f"{t.ours_ms:.3f} | {t.ours_graph_ms:.3f} | {t.torch_fused_ms:.3f} | {t.ratio:.2f} | "
            f"<= {target} {verdict} | {t.state_bytes:,} / {t.torch_state_bytes:,} | "
            f"{t.workspace_bytes:,} |"
        )
    lines += _keras_markdown(report.keras)
    return "\n".join(lines)


def _keras_markdown(runs: list[KerasRun]) -> list[str]:
    """The Keras part's section: test results, then one step of each optimizer."""
    lines = ["", "## Keras adapter: tests, and one optimizer.apply on ResNet-50's variables", ""]
    if not runs:
        return [*lines, "Not run (--keras none).", ""]
    lines += [f"- {run.backend}: {'pass' if run.passed else 'FAIL'}, {run.detail}" for run in runs]
    lines += [
        "",
        "| backend | device | step | gradients | optimizer | median ms | vs Keras built-in |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for r in run.rows:
            ms = f"{r['median_ms']:.3f}" if r["median_ms"] is not None else r["status"]
            ratio = f"{r['ratio']:.2f}x {r['baseline']}" if r["ratio"] is not None else ""
            lines.append(
                f"| {r['backend']} | {r['device']} | {r['step']} | {r['grads']} | "
                f"{r['optimizer']} | {ms} | {ratio} |"
            )
    return [*lines, ""]


def _failures(report: Report) -> list[str]:
    out = [f"check {c.name}" for c in report.checks if not c.passed]
    out += [f"keras {run.backend}: {run.detail}" for run in report.keras if not run.passed]
    for t in report.timings:
        name = f"{t.model} {t.dtype} {t.optimizer} {t.grads}"
        if t.ratio > TARGETS[t.optimizer]:
            out.append(f"{name}: {t.ratio:.2f}x > {TARGETS[t.optimizer]}x")
        if t.state_bytes != t.torch_state_bytes:
            out.append(f"{name}: state {t.state_bytes} B != torch's {t.torch_state_bytes} B")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--out", default="benchmarks/results", help="where to write results")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeat", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--skip-checks", action="store_true", help="benchmark only")
    parser.add_argument("--require-cuda", action="store_true", help="exit 2 without CUDA")
    parser.add_argument(
        "--keras", default="tensorflow,jax", help="Keras backends to test and time, or none"
    )
    parser.add_argument(
        "--keras-envs", default=".nox", help="where the Keras environments are created"
    )
    parser.add_argument(
        "--dry-run", "--plan", action="store_true", help="print what would run, run nothing"
    )
    args = parser.parse_args(argv)
    keras_backends = _keras_backends(args.keras)
    if args.dry_run:
        print(plan(args))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to run (the GPU checks and benchmarks need one)")
        return 2 if args.require_cuda else 0
    os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels; set before triton loads
    import triton

    from adamp_torch import _triton

    if not _triton.available("cuda"):
        print("the Triton kernels are not available on this CUDA device")
        return 1
    name = torch.cuda.get_device_name()
    cap = ".".join(map(str, torch.cuda.get_device_capability()))
    versions = {"torch": torch.__version__, "triton": triton.__version__}
    versions["cuda"] = str(torch.version.cuda)
    report = Report(name, cap, versions)
    print(f"device: {name} (sm {cap})", flush=True)
    if not args.skip_checks:
        for check_name, fn in (
            ("conformance (check --backend torch-triton)", check_conformance),
            ("bf16/fp16 within 1 ulp", check_low_precision),
            ("no host sync in step()", check_no_sync),
            ("CUDA graph capture and replay", check_graph),
            ("determinism", check_determinism),
        ):
            started = time.perf_counter()
            report.checks.append(_check(check_name, fn))
            c = report.checks[-1]
            took = time.perf_counter() - started
            print(f"{'pass' if c.passed else 'FAIL'}  {c.name} ({took:.0f} s): {c.detail}")
    for model in args.models:
        for dtype in ("float32", "bfloat16"):
            for optimizer in ("AdamP", "SGDP"):
                for forcing in (False, True):
                    t = bench(model, dtype, optimizer, forcing, args.repeat)
                    report.timings.append(t)
                    print(
                        f"{model} {dtype} {optimizer} {t.grads}: ours {t.ours_graph_ms:.3f} ms "
                        f"(eager {t.ours_ms:.3f}), torch fused {t.torch_fused_ms:.3f} ms, "
                        f"{t.ratio:.2f}x",
                        flush=True,
                    )
    for backend in keras_backends:
        started = time.perf_counter()
        report.keras.append(run_keras(backend, Path(args.keras_envs).resolve()))
        run = report.keras[-1]
        took = time.perf_counter() - started
        print(f"{'pass' if run.passed else 'FAIL'}  keras {backend} ({took:.0f} s): {run.detail}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    (out / f"gpu-{slug}.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    (out / f"gpu-{slug}.md").write_text(_markdown(report))
    failures = _failures(report)
    print(f"results: {out / f'gpu-{slug}.md'}")
    print("PASSED" if not failures else "FAILED:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
