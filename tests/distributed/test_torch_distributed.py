"""adamp_torch on DTensor parameters (FSDP2, tensor parallel, HSDP, FSDP2 + TP) and under
DDP, on gloo ranks spawned on this machine, against one process holding the full tensors.

Each spawn costs seconds (every rank imports torch), so one spawn per mesh runs every
scenario and configuration, and the tests below read its results.
"""

from __future__ import annotations

import pytest
import torch

from helpers import dist_workers as workers
from helpers.dist import run_ranks

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import adamp_torch  # noqa: E402

MESHES = {(2,): 2, (2, 2): 4}
ALL = [(mesh, s, c) for mesh in MESHES for s in workers.SCENARIOS[mesh] for c in workers.CONFIGS]


@pytest.fixture(scope="module")
def scenario_results() -> dict[tuple[int, ...], list[dict]]:
    return {
        mesh: run_ranks(workers.compare_scenarios, world, mesh, timeout=400)
        for mesh, world in MESHES.items()
    }


@pytest.fixture(scope="module")
def training_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks(workers.train_models, 2, str(tmp_path_factory.mktemp("dcp")), timeout=400)


@pytest.mark.parametrize(
    ("mesh", "scenario", "config"), ALL, ids=["/".join((s, c)) for _, s, c in ALL]
)
def test_sharded_step_equals_one_process(scenario_results, mesh, scenario, config):
    for rank, results in enumerate(scenario_results[mesh]):
        got = results[f"{scenario}/{config}"]
        assert got["diff"] <= 1e-12, f"rank {rank}"
        assert got["mismatches"] == [], f"rank {rank}: branches differ from the reference"


@pytest.mark.parametrize(
    ("mesh", "scenario"), [(m, s) for m in MESHES for s in workers.SCENARIOS[m]]
)
def test_functional_call_on_shards_equals_one_process(scenario_results, mesh, scenario):
    for results in scenario_results[mesh]:
        assert results[f"{scenario}/functional"] <= 1e-12


#: ``all_reduce`` calls per ``step()``: one per mesh dimension that shards a matrix, for
#: both of the workers' parameter groups together.
EXPECTED_ALL_REDUCES = {"fsdp2": 1, "tp": 1, "mixed": 1, "replicated": 0, "hsdp": 1, "fsdp2+tp": 2}


@pytest.mark.parametrize(
    ("mesh", "scenario"), [(m, s) for m in MESHES for s in workers.SCENARIOS[m]]
)
def test_one_packed_all_reduce_per_sharded_mesh_dim(scenario_results, mesh, scenario):
    expected = EXPECTED_ALL_REDUCES[scenario]
    for results in scenario_results[mesh]:
        for config in workers.CONFIGS:
            for counts in results[f"{scenario}/{config}"]["collectives"]:
                # nothing else: no all_gather of weights, no per-tensor collective
                assert counts == ({"c10d.allreduce_": expected} if expected else {}), config


@pytest.mark.parametrize("optimizer", list(workers.OPTIMIZERS))
def test_fsdp2_and_ddp_training_equal_one_process(training_results, optimizer):
    for results in training_results:
        assert results[f"fsdp2/{optimizer}"] <= 1e-12
        assert results[f"ddp/{optimizer}"] <= 1e-12
        # the model's BatchNorm- and LayerNorm-fed weights are projected, per row and whole
        assert {"channel", "layer"} <= set(results[f"branches/{optimizer}"])


@pytest.mark.parametrize("optimizer", list(workers.OPTIMIZERS))
def test_fsdp2_checkpoint_resumes_on_the_same_trajectory(training_results, optimizer):
    for results in training_results:
        assert results[f"resume/{optimizer}"] == 0.0
        assert results[f"resume-vs-single/{optimizer}"] <= 1e-12


def test_fsdp1_flat_parameter_is_refused():
    from torch.distributed.fsdp._flat_param import FlatParameter

    flat = FlatParameter(torch.zeros(12), requires_grad=True)
    with pytest.raises(ValueError, match=r"FSDP1 flat parameter.*fully_shard"):
        adamp_torch.AdamP([flat])
    with pytest.raises(ValueError, match=r"params'\]\[1\].*FSDP1 flat parameter"):
        adamp_torch.SGDP([torch.zeros(2, requires_grad=True), flat], lr=0.1)


def test_fsdp1_original_parameters_and_zero_partitions_are_refused():
    from torch.distributed.fsdp._common_utils import _set_fsdp_flattened

    view = torch.nn.Parameter(torch.zeros(6))
    _set_fsdp_flattened(view)  # what FSDP1 marks its flat views with (use_orig_params)
    with pytest.raises(ValueError, match="FSDP1 flat parameter"):
        adamp_torch.AdamP([view])
    zero = torch.nn.Parameter(torch.zeros(0))
    zero.ds_id = 3  # DeepSpeed ZeRO-3's mark on a partitioned parameter
    with pytest.raises(ValueError, match="DeepSpeed ZeRO"):
        adamp_torch.SGDP([zero], lr=0.1)


def test_shards_the_step_cannot_take_are_refused(training_results):
    for results in training_results:
        errors = results["errors"]
        assert "placed as (Shard(dim=1),) but its parameter as (Shard(dim=0),)" in (
            errors["grad-placement"] or ""
        )
        assert "not a pending reduction" in (errors["partial-param"] or "")
