"""The parts of ``benchmarks.gpu`` that run without a GPU: the dry run's commands for the
Keras adapter, the "no CUDA device" exit, and the Keras timing (``keras_bench`` on JAX, on
CPU with a tiny model) feeding the GPU report's Keras table. Nothing here asserts a speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import gpu

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[name] = version
    return pins


def test_dry_run_prints_each_backends_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu.main(["--dry-run", "--keras-envs", str(tmp_path), "--out", "results"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run, nothing is run.")
    pins = _pins()
    for backend, build, no_tf32 in (
        (
            "tensorflow",
            f"'tensorflow[and-cuda]=={pins['tensorflow-cpu']}'",
            "NVIDIA_TF32_OVERRIDE=0",
        ),
        ("jax", f"'jax[cuda12]=={pins['jax']}'", "JAX_DEFAULT_MATMUL_PRECISION=highest"),
    ):
        python = f"{tmp_path}/gpu-keras-{backend}/bin/python"
        commands = [line[4:] for line in out.splitlines() if f"gpu-keras-{backend}" in line]
        assert commands == [
            f"{sys.executable} -m venv {tmp_path}/gpu-keras-{backend}",
            f"{python} -m pip install --index-url https://download.pytorch.org/whl/cpu "
            f"torch=={pins['torch']}",
            f"{python} -m pip install -c constraints.txt -e . keras pytest hypothesis adamp "
            + build,
            f"KERAS_BACKEND={backend} {no_tf32} {python} -m pytest tests/keras -q "
            "-p no:cacheprovider",
            f"KERAS_BACKEND={backend} {python} -m benchmarks.keras_bench --backend {backend} "
            f"--device gpu --model resnet50 --json-out "
            f"{tmp_path}/gpu-keras-{backend}/keras_bench.json",
        ]
    assert "torch-triton" in out and "results/gpu-<device>.json" in out


def test_dry_run_honours_keras_none_and_refuses_unknown_backends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert gpu.main(["--dry-run", "--keras", "none", "--skip-checks"]) == 0
    out = capsys.readouterr().out
    assert "keras" not in out.lower() and "torch-triton" not in out
    with pytest.raises(SystemExit, match="unknown backend"):
        gpu.main(["--dry-run", "--keras", "tensorflow,cntk"])


def test_without_cuda_it_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert gpu.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert gpu.main(["--require-cuda"]) == 2


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_keras_jax_timing_fills_the_report_table(tmp_path: Path) -> None:
    out = tmp_path / "keras.json"
    cmd = [sys.executable, "-m", "benchmarks.keras_bench", "--backend", "jax", "--model", "tiny",
           "--grads", "orthogonal", "--rounds", "1", "--steps", "2", "--warmup", "1",
           "--json-out", str(out)]  # fmt: skip
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (section,) = data["sections"]
    assert section["step"] == "jax.jit(stateless_apply)" and section["device"] == "cpu"
    assert section["census"].startswith("projection fires on 2/2 kernels")
    rows = gpu.keras_rows(data)
    assert [r["optimizer"] for r in rows] == [
        "keras AdamW", "keras SGD", "ours adamp_tf.AdamP", "ours adamp_tf.SGDP",
    ]  # fmt: skip
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows)
    assert [r["baseline"] for r in rows] == ["keras AdamW", "keras SGD"] * 2
    assert rows[0]["ratio"] == rows[1]["ratio"] == 1.0
    md = "\n".join(gpu._keras_markdown([gpu.KerasRun("jax", True, "tests/keras: ok", rows)]))
    assert "| keras/jax | cpu | jax.jit(stateless_apply) | orthogonal | ours adamp_tf.SGDP |" in md
    assert "- jax: pass, tests/keras: ok" in md
