"""Memory: the only full-size memory an optimizer keeps is its state.

Every working copy and scratch buffer lives in the optimizer's workspace and is bounded by
``max(chunk, largest tensor)`` (``functional._CHUNK_NUMEL``), whatever the model's size;
cutting a step into such chunks changes no number.
"""

from __future__ import annotations

import math

import pytest
import torch

import adamp_torch.functional
from adamp_torch import SGDP, AdamP
from helpers.torch_utils import use_cpu_path

CHUNK = 600
#: Model shapes: many tensors whose total is far above CHUNK, one above it on its own,
#: short rows, a channels_last weight.
SHAPES = [(16, 3, 3, 3), (32, 16), (32,), (700, 1), (40, 4), (8, 8, 3, 3), (64, 6), (5,)]


def _model(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).to(dtype) for s in SHAPES]
    params[5] = params[5].contiguous(memory_format=torch.channels_last)
    return [p.requires_grad_() for p in params]


def _grads(params: list[torch.Tensor], step: int, orthogonal: bool) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if orthogonal and p.dim() > 1:
            rp = p.detach().double().reshape(p.shape[0], -1)
            rg = g.view(p.shape[0], -1)
            rg -= (rg * rp).sum(1, keepdim=True) / (rp * rp).sum(1, keepdim=True) * rp
        p.grad = g.to(p.dtype).contiguous(memory_format=_format(p))


def _format(p: torch.Tensor) -> torch.memory_format:
    cl = p.dim() == 4 and not p.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _make(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if name == "AdamP":
        return AdamP(params, lr=1e-2, weight_decay=0.1)
    return SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def _run(name: str, dtype: torch.dtype, orthogonal: bool, steps: int = 3):
    params = _model(dtype)
    opt = _make(name, params)
    for step in range(steps):
        _grads(params, step, orthogonal)
        opt.step()
    return params, opt


def _scratch_numels(opt: torch.optim.Optimizer) -> list[int]:
    """Element counts of every buffer the optimizer's workspaces keep."""
    return [b.numel() for ws in opt._workspaces.values() for b in ws._buffers.values()]


@pytest.fixture(params=["host", "device"])
def decisions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The composite paths, which keep scratch (the C++ kernel keeps none: see
    ``test_torch_cpu_kernel``)."""
    use_cpu_path(monkeypatch, request.param)
    return str(request.param)


@pytest.mark.parametrize("orthogonal", [False, True], ids=["random", "orthogonal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_scratch_is_bounded_by_the_chunk_or_the_largest_tensor(
    name: str,
    dtype: torch.dtype,
    orthogonal: bool,
    decisions: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept scratch: no buffer above max(chunk, largest tensor), far below the model; and
    the weights equal those of an unchunked step (chunks are independent)."""
    whole, _ = _run(name, dtype, orthogonal)
    monkeypatch.setattr(adamp_torch.functional, "_CHUNK_NUMEL", CHUNK)
    chunked, opt = _run(name, dtype, orthogonal)
    bound = max(CHUNK, max(math.prod(s) for s in SHAPES))
    total = sum(math.prod(s) for s in SHAPES)
    numels = _scratch_numels(opt)
    assert max(numels, default=0) <= bound < total
    if dtype != torch.float32 or (name == "AdamP" and orthogonal):
        assert numels  # 16-bit copies, or AdamP's projected directions, need scratch
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)


@pytest.mark.parametrize("path", ["kernel", "host"])
@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_state_is_the_only_full_size_memory_in_16_bit(
    name: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bfloat16: the state stays bfloat16 (as torch's own optimizers keep it); the C++
    kernel keeps no scratch, and the composite path's (float32 working copies) is bounded
    by the chunk, not by the model."""
    use_cpu_path(monkeypatch, path)
    params, opt = _run(name, torch.bfloat16, orthogonal=True)
    total = sum(p.numel() for p in params)
    for p in params:
        for key, value in opt.state[p].items():
            if key != "step":
                assert value.dtype == torch.bfloat16 and value.shape == p.shape
    chunk = adamp_torch.functional._CHUNK_NUMEL
    assert total < chunk
    if path == "kernel":
        assert _scratch_numels(opt) == []
    else:  # a model below one chunk is one sub-batch: a scratch buffer holds at most it
        assert 0 < max(_scratch_numels(opt)) <= total


def test_sub_batches_cut_at_the_chunk() -> None:
    sizes = [300, 300, 100, 900, 50, 50, 600]
    params = [torch.empty(n) for n in sizes]
    runs = adamp_torch.functional._sub_batches(params, range(len(sizes)), 600)
    assert runs == [[0, 1], [2], [3], [4, 5], [6]]
    for run in runs:
        assert sum(sizes[i] for i in run) <= max(600, *(sizes[i] for i in run))


# -- tall tensors of short rows: the screen that skips per-row statistics --------------------


@pytest.mark.parametrize("shape", [(5000, 1), (5000, 4), (5000, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("kind", ["random", "layer", "zero-head"])
@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
@pytest.mark.parametrize("path", ["kernel", "host"])
def test_short_rows_match_the_authors(
    shape: tuple[int, ...], kind: str, name: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float64, 3 steps, against the authors' adamp 0.3.0 (to 1e-12): a random gradient
    (the screen drops the channel view, the layer test decides), one orthogonal to the
    whole tensor (the layer view projects), and one whose first rows are zero (the sampled
    rows pass the channel test: no screening). The C++ kernel stops testing rows where one
    fails instead."""
    import adamp

    use_cpu_path(monkeypatch, path)
    gen = torch.Generator().manual_seed(7)
    start = torch.randn(shape, generator=gen, dtype=torch.float64)
    ours = start.clone().requires_grad_()
    theirs = start.clone().requires_grad_()
    hp = dict(lr=1e-2, weight_decay=0.1)
    if name == "SGDP":
        hp = dict(lr=0.1, momentum=0.9, weight_decay=0.1)
    opt = {"AdamP": AdamP, "SGDP": SGDP}[name]([ours], **hp)
    ref = getattr(adamp, name)([theirs], **hp)
    for _ in range(3):
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        if kind == "layer":
            p = theirs.detach()
            g -= (g * p).sum() / (p * p).sum() * p
        if kind == "zero-head":
            g[:100] = 0
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert float((ours - theirs).abs().max()) <= 1e-12
