"""Peak memory of the first optimizer steps, each optimizer in a fresh process.

Command line: ``python -m benchmarks.memory [--set resnet50] [--dtypes float32,bfloat16]
[--steps 4] [--grads orthogonal]``.

For every (dtype, optimizer) a new Python process builds the parameter set and its
gradients, then records its RSS before the optimizer exists and its peak RSS (``VmHWM``,
reset to the RSS at that moment) after ``--steps`` steps (Linux only). The growth, less
the state the optimizer must keep (its ``optimizer.state`` tensors), is what the steps
cost beyond the state: working copies, scratch and temporaries (memory the allocator
already holds is reused without growing the RSS, so only differences between optimizers
mean much). Reported in bytes per parameter, with the difference to torch's
fused optimizer of the same family. Our CPU kernel is built (or loaded) before the first
reading, so its one-off code size is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

OPTIMIZERS = {
    "ours AdamP()": ("AdamP", "adamp_torch", "AdamP", {}),
    "torch AdamW(fused=True)": ("AdamP", "torch.optim", "AdamW", {"fused": True}),
    "ours SGDP()": ("SGDP", "adamp_torch", "SGDP", {"momentum": 0.9}),
    "torch SGD(fused=True)": ("SGDP", "torch.optim", "SGD", {"momentum": 0.9, "fused": True}),
}
BASELINE = {"AdamP": "torch AdamW(fused=True)", "SGDP": "torch SGD(fused=True)"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _reset_peak() -> None:
    """Make the peak RSS (``VmHWM``) the current RSS (Linux: ``clear_refs`` value 5), so
    that building the inputs does not hide the steps' peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(label: str, set_name: str, dtype: str, steps: int, grads: str) -> dict[str, Any]:
    """One reading, in this process (run it in a fresh one)."""
    import gc
    import importlib

    import torch

    from adamp_torch import _cpu
    from benchmarks import shapes, workload

    torch.set_num_threads(2)
    if _cpu.enabled():
        _cpu.build()
    family, module, name, kwargs = OPTIMIZERS[label]
    params = [p.to(getattr(torch, dtype)).requires_grad_() for p in workload.make_params(
        shapes.build(set_name))]  # fmt: skip
    gradients = workload.make_grads([p.detach() for p in params], grads)
    for p, g in zip(params, gradients):
        p.grad = g
    gc.collect()
    _reset_peak()
    before = _status_kib("VmRSS")
    opt = getattr(importlib.import_module(module), name)(params, lr=1e-3, **kwargs)
    for _ in range(steps):
        opt.step()
    after = _status_kib("VmHWM")
    state = sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )
    n = sum(p.numel() for p in params)
    growth = (after - before) * 1024
    return dict(
        label=label,
        family=family,
        dtype=dtype,
        params=n,
        state_b_per_param=state / n,
        growth_b_per_param=growth / n,
        beyond_state_b_per_param=(growth - state) / n,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="resnet50")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--grads", default="orthogonal")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one reading as JSON
    args = ap.parse_args(argv)
    if args.one:
        label, dtype = args.one.split("|")
        print(json.dumps(measure(label, args.set, dtype, args.steps, args.grads)))
        return 0
    # glibc: every block of 64 KiB or more its own mapping, unmapped when freed, so that
    # freed inputs are not reused by the steps (the RSS growth is then what they touch).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    rows = []
    for dtype in args.dtypes.split(","):
        for label in OPTIMIZERS:
            cmd = [sys.executable, "-m", "benchmarks.memory", "--set", args.set, "--steps",
                   str(args.steps), "--grads", args.grads, "--one", f"{label}|{dtype}"]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    by_key = {(r["dtype"], r["label"]): r for r in rows}
    print(f"Peak RSS over the first {args.steps} steps, {args.set}, {args.grads} gradients, "
          "each optimizer in a fresh process (bytes per parameter)\n")  # fmt: skip
    print("| dtype | optimizer | state | peak growth | beyond state | extra over fused |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = by_key[(r["dtype"], BASELINE[r["family"]])]
        extra = r["beyond_state_b_per_param"] - base["beyond_state_b_per_param"]
        print(f"| {r['dtype']} | {r['label']} | {r['state_b_per_param']:.2f} | "
              f"{r['growth_b_per_param']:.2f} | {r['beyond_state_b_per_param']:+.2f} | "
              f"{extra:+.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
