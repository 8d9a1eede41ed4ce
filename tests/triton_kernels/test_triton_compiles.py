"""The kernels as the GPU runs them: compiled (not interpreted) for an sm_90 target down to
a cubin, on a machine without a GPU. Runs in a child process without ``TRITON_INTERPRET``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton.language")

SCRIPT = r"""
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import adamp_torch._triton_kernels as K

assert not K.INTERPRETED
POINTERS = {"items_ptr": "*i64", "meta_ptr": "*i64", "ptrs_ptr": "*i64", "branch_ptr": "*i32",
            "lr_ptr": "*fp32"}


def compile(fn, dt, **constexprs):
    cd = "fp64" if dt == "fp64" else "fp32"
    constexprs.setdefault("CDT", tl.float64 if dt == "fp64" else tl.float32)
    if "DB" not in constexprs:
        constexprs.update(DT=K.DTYPES[dt], BR=16, BC=64)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = POINTERS.get(name, "*" + cd)
        else:
            signature[name] = "i64" if name == "n_slots" else "fp64"
    kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))
    assert kernel.asm["cubin"]
    print(fn.__name__, dt, "ok")


flags = dict(NESTEROV=False, MAXIMIZE=False, DEFER=False, LR_IS_PTR=False)
compile(K.adamp_stats, "fp32", **dict(flags, NESTEROV=True, LR_IS_PTR=True))
compile(K.adamp_decide, "fp64", DB=128, LR_IS_PTR=False)
compile(K.adamp_apply, "bf16", **dict(flags, NESTEROV=True, MAXIMIZE=True, DEFER=True))
compile(K.sgdp_stats, "fp16", **dict(flags, DEFER=True))
compile(K.sgdp_decide, "fp32", DB=128, LR_IS_PTR=True)
compile(K.sgdp_apply, "fp32", **dict(flags, PROJECT_BUFFER=True, DEFER=True))
"""


def test_kernels_compile_for_a_gpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert out.stdout.count(" ok") == 6, out.stdout
