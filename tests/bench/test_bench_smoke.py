"""Smoke tests of the benchmark harness: shapes, gradient kinds, and one ``--quick`` run end to
end. Nothing here is timed or asserts a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import shapes

ROOT = Path(__file__).resolve().parents[2]

# Published parameter counts (torchvision model docs; GPT-2 small with tied embeddings).
PUBLISHED = {
    "resnet50": 25_557_032,
    "resnet18": 11_689_512,
    "vit_b16": 86_567_656,
    "gpt2": 124_439_808,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_architecture_totals_match_published_counts(name: str) -> None:
    assert shapes.total(shapes.build(name)) == PUBLISHED[name]


def test_resnet50_structure() -> None:
    params = dict(shapes.build("resnet50"))
    assert len(params) == 161  # 53 convolutions, 53 norms x 2, fc weight and bias
    assert params["conv1.weight"] == (64, 3, 7, 7)
    assert params["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert params["layer2.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert params["fc.weight"] == (1000, 2048)
    assert sum(len(s) >= 2 for s in params.values()) == 54


def test_wrong_total_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(shapes.EXPECTED_TOTALS, "resnet18", 1)
    with pytest.raises(ValueError, match="expected 1"):
        shapes.build("resnet18")


def test_orthogonal_gradients_force_projection_and_random_mostly_do_not() -> None:
    torch = pytest.importorskip("torch")
    from benchmarks import workload

    params = workload.make_params(shapes.build("resnet18"))
    ortho = workload.make_grads(params, "orthogonal")
    census = workload.projection_census(params, ortho)
    assert census.projected_tensors == census.candidate_tensors == 21
    for p, g in zip(params, ortho):
        if p.dim() >= 2:
            rp, rg = p.reshape(p.shape[0], -1).double(), g.reshape(p.shape[0], -1).double()
            cos = (rp * rg).sum(1) / (rp.norm(dim=1) * rg.norm(dim=1))
            assert float(cos.abs().max()) < 1e-5  # float32 rounding of an exact zero
    rand = workload.projection_census(params, workload.make_grads(params, "random"))
    assert rand.projected_tensors < rand.candidate_tensors // 2
    assert torch.equal(ortho[1], workload.make_grads(params, "orthogonal")[1])  # deterministic


def test_quick_run_writes_tables(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path),
           "--keras", "tensorflow"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "quick.json").read_text())
    md = (tmp_path / "quick.md").read_text()
    assert data["machine"]["threads"] == 2 and data["machine"]["cpu_model"]
    frameworks = [s["framework"] for s in data["sections"]]
    assert frameworks.count("torch") == 2 and frameworks.count("keras/tensorflow") == 2
    for sec in data["sections"]:
        labels = {r["label"]: r for r in sec["rows"]}
        base = "keras AdamW" if sec["framework"].startswith("keras") else "torch AdamW(fused=True)"
        assert labels[base]["status"] == "ok" and labels[base]["ratio"] == 1.0
        for r in sec["rows"]:
            assert r["status"] in ("ok", "unavailable", "failed")
            assert (r["status"] == "ok") == (r.get("median_ms") is not None)
            assert r["status"] == "ok" or r["reason"]  # never dropped silently
        assert f"| {base} |" in md
    peers = {r["label"] for r in data["sections"][0]["rows"]}
    assert {"authors adamp.AdamP", "timm AdamP", "pytorch_optimizer SGDP(foreach=True)"} <= peers
    assert "## Targets" in md and "CUDA:" in md


def test_distributed_benchmark_runs_on_two_ranks(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks.distributed", "--set", "tiny", "--rounds", "1",
           "--warmup", "1", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "distributed.json").read_text())
    assert sorted(data) == ["fsdp2/orthogonal", "fsdp2/random", "tp/orthogonal", "tp/random"]
    for times in data.values():
        assert set(times) == {"AdamW(fused)", "AdamW(foreach)", "AdamP", "SGD(foreach)", "SGDP"}
        assert all(t > 0 for t in times.values())
    assert "| fsdp2/orthogonal |" in (tmp_path / "distributed.md").read_text()


def test_memory_benchmark_runs_in_fresh_processes() -> None:
    """Each reading is its own process; ours keeps no more than torch's fused optimizer
    beyond the state (a tiny model: a few pages of tolerance)."""
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks.memory", "--set", "tiny", "--dtypes", "float32",
           "--steps", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| float32 |")]
    labels = [line.split("|")[2].strip() for line in rows]
    assert labels == ["ours AdamP()", "torch AdamW(fused=True)", "ours SGDP()",
                      "torch SGD(fused=True)"]  # fmt: skip
    states = [float(line.split("|")[3]) for line in rows]
    assert states == [8.0, 8.0, 4.0, 4.0]
