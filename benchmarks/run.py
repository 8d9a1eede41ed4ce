"""Command line: ``python -m benchmarks [--quick] [--sets ...] [--threads N] ...``.

Times every torch optimizer (ours, torch.optim baselines, peers) in this process, then the Keras
optimizers in one subprocess per Keras backend, and writes ``<out>/<name>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import machine, report, shapes
from benchmarks.workload import GRAD_KINDS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETS = "resnet50,resnet18,many_small"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per optimizer per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument(
        "--sets",
        default=DEFAULT_SETS,
        help=f"comma list from {sorted(shapes.SETS)} (default {DEFAULT_SETS})",
    )
    ap.add_argument("--grads", default=",".join(GRAD_KINDS), help="random,orthogonal")
    ap.add_argument(
        "--select",
        default=None,
        help="time only the torch candidates whose label matches this regular expression "
        "(keep the baselines: ratios need them), e.g. 'ours \\w+\\(\\)|torch|authors'",
    )
    ap.add_argument(
        "--dtypes",
        default=None,
        help="storage dtypes of the torch weights, gradients and state, comma list from "
        "float32, bfloat16, float16 (default float32,bfloat16, float32 with --quick; each "
        "gets its own tables)",
    )
    ap.add_argument(
        "--keras",
        default="tensorflow,torch",
        help="Keras backends to run, or 'none' (default tensorflow,torch)",
    )
    ap.add_argument("--keras-model", default="resnet50", choices=("resnet50", "tiny"))
    ap.add_argument("--keras-rounds", type=int, default=None, help="default: --rounds")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch table")
    ap.add_argument(
        "--compile-sets",
        default="resnet50",
        help="sets on which our torch.compile(step) rows run, comma list or 'none' "
        "(default resnet50: compiling takes minutes per set on 2 CPUs; off with --quick)",
    )
    ap.add_argument(
        "--compile",
        default="AdamP",
        help="families that get a torch.compile(step) row: AdamP, SGDP, 'AdamP,SGDP' "
        "(default AdamP; SGDP's took over 10 minutes on ResNet-50 here)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny set, tiny Keras model, 2 rounds x 1 step",
    )
    ap.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="add the sections of an earlier results JSON to this report "
        "(e.g. a Keras run made in parallel); repeatable",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None, help="output file stem (default latest, quick)")
    a = ap.parse_args(argv)  # fmt: skip
    if a.quick:
        a.sets, a.rounds, a.steps, a.warmup, a.keras_model = "tiny", 2, 1, 1, "tiny"
        a.compile_sets = "none"
    a.dtypes = a.dtypes or ("float32" if a.quick else "float32,bfloat16")
    a.name = a.name or ("quick" if a.quick else "latest")
    a.keras_rounds = a.keras_rounds or a.rounds
    return a


def _torch_sections(a: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    import torch

    from benchmarks import torch_bench, torch_candidates

    torch.set_num_threads(a.threads)
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
        cuda_note = f"run on {torch.cuda.get_device_name(0)}"
    else:
        cuda_note = "not run (torch.cuda.is_available() is False on this machine)"
    sections = []
    for device in devices:
        for set_name in a.sets.split(","):
            fams = tuple(a.compile.split(",")) if set_name in a.compile_sets.split(",") else ()
            cands = torch_candidates.all_candidates(device, fams)
            if a.select:
                cands = [c for c in cands if re.search(a.select, c.label)]
            for dtype in a.dtypes.split(","):
                sections += torch_bench.run(set_name, a.grads.split(","), cands,
                                            rounds=a.rounds, steps=a.steps, warmup=a.warmup,
                                            device=device, dtype=dtype, log=_log)  # fmt: skip
    return sections, cuda_note


def _keras_sections(a: argparse.Namespace, backend: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "keras.json"
        cmd = [sys.executable, "-m", "benchmarks.keras_bench", "--backend", backend,
               "--model", a.keras_model, "--grads", a.grads, "--rounds", str(a.keras_rounds),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
               "--json-out", str(out)]  # fmt: skip
        env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(a.threads),
                   TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
        _log(f"keras {backend}: {shlex.join(cmd)}")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        _log(proc.stderr[-4000:])
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            return [{"framework": f"keras/{backend}", "status": "failed",
                     "error": f"exit {proc.returncode}\n{tail}"}]  # fmt: skip
        sections: list[dict[str, Any]] = json.loads(out.read_text())["sections"]
        return sections


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    info = machine.machine_info(a.threads)
    info["command"] = "python -m benchmarks " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    info["versions"] = machine.versions()
    for s in a.sets.split(","):
        shapes.build(s)  # fail early on an unknown set or a wrong total
    sections: list[dict[str, Any]] = []
    cuda_note = "not run (--no-torch)"
    if not a.no_torch:
        torch_secs, cuda_note = _torch_sections(a)
        sections += torch_secs
    if a.keras != "none":
        for backend in a.keras.split(","):
            sections += _keras_sections(a, backend)
    included = []
    for path in a.include:
        earlier = json.loads(path.read_text())
        for sec in earlier["sections"]:
            sec["from_run"] = earlier["machine"]["date_utc"]
        sections += earlier["sections"]
        included.append({"file": str(path), **{k: earlier["machine"].get(k) for k in
                         ("date_utc", "command", "loadavg_start", "loadavg_end")}})  # fmt: skip
        if cuda_note.startswith("not run (--no-torch)"):
            cuda_note = earlier.get("cuda", cuda_note)
    info["included_runs"] = included
    info["loadavg_end"] = machine.loadavg()
    verdicts = report.targets(sections, a.grads.split(","))
    payload = {"machine": info, "cuda": cuda_note, "targets": verdicts, "sections": sections}
    md, js = report.write(
        a.out, a.name, payload, report.render(info, sections, verdicts, cuda_note)
    )
    _log(f"wrote {md} and {js}")
    return 0
