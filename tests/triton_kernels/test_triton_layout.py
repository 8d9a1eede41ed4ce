"""Shapes, layouts, plans and int64 offsets, launches, caching, determinism, host syncs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton.language")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton_helpers import ADAMP_DEFAULTS, SGDP_DEFAULTS, Kernels, Reference  # noqa: E402

from adamp_core.testing import FLOAT64_ABS_TOL  # noqa: E402
from adamp_torch import _triton  # noqa: E402
from adamp_torch import _triton_kernels as K  # noqa: E402

SMALL_TILES = _triton.Tiling(rows=2, cols=4, chunk_tiles=2, decide_rows=4)
"""Tiny blocks: short rows, long rows in several chunks and several row blocks in the
decide pass, on tensors small enough for the interpreter."""


def _grads(shapes: list[tuple[int, ...]], params: list[np.ndarray], step: int) -> list[Any]:
    """Gradients that take each branch: rows orthogonal to their weight rows for tensors
    with an even number of rows, the weight plus noise otherwise."""
    rng = np.random.default_rng(step)
    out = []
    for shape, p in zip(shapes, params):
        noise = np.asarray(rng.standard_normal(shape))
        if len(shape) >= 2 and shape[0] % 2 == 0:
            rows, prow = noise.reshape(shape[0], -1), p.reshape(shape[0], -1)
            coef = np.sum(rows * prow, axis=1, keepdims=True) / np.sum(prow * prow, axis=1)[:, None]
            out.append((rows - coef * prow).reshape(shape))
        else:
            out.append(p + 0.5 * noise)
    return out


def _compare(
    optimizer: str,
    shapes: list[tuple[int, ...]],
    tiling: _triton.Tiling,
    steps: int = 2,
    **hparams: Any,
) -> list[str]:
    rng = np.random.default_rng(1)
    start = [np.asarray(rng.standard_normal(s)) for s in shapes]
    defaults = ADAMP_DEFAULTS if optimizer == "AdamP" else SGDP_DEFAULTS
    h = dict(defaults, weight_decay=0.1, **hparams)
    reference = Reference(optimizer, [p.copy() for p in start], dict(h))
    kernels = Kernels(optimizer, [torch.tensor(p) for p in start], dict(h))
    kernels.workspace = _triton.Workspace(tiling)
    for step in range(steps):
        reference.step(_grads(shapes, reference.params, step))
        kernels.step(
            [torch.tensor(g) for g in _grads(shapes, [p.numpy() for p in kernels.params], step)]
        )
        assert kernels.branches == reference.branches
    for got, want in zip(kernels.params, reference.params):
        assert float(np.max(np.abs(got.numpy() - want))) <= FLOAT64_ABS_TOL
    return reference.branches


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_one_row_many_rows_long_rows_vectors(optimizer: str) -> None:
    shapes = [(1, 9), (2, 3), (22, 3), (3, 19), (4, 37), (30,), (5,), ()]
    branches = _compare(optimizer, shapes, SMALL_TILES, nesterov=optimizer == "AdamP")
    assert branches[2] == "channel" and branches[4] == "channel"  # many rows; long rows
    assert branches[5:] == ["none"] * 3
    plan = _triton.plan(shapes, SMALL_TILES)
    assert max(m[2] for m in plan.meta) > 1  # rows in several chunks
    assert max(m[0] for m in plan.meta) > SMALL_TILES.decide_rows  # several row blocks


def test_default_tiles_long_rows() -> None:
    _compare("AdamP", [(2, 1100), (2, 40)], _triton.DEFAULT_TILING, steps=1)


def test_plan_offsets_are_exact_past_two_to_the_31() -> None:
    """A 50k-row embedding and a 2.8e9-element tensor: offsets are exact Python ints,
    and the device tables that hold them are int64."""
    plan = _triton.plan([(50257, 768)])
    assert len(plan.items) == -(-50257 // _triton.DEFAULT_TILING.rows)
    assert plan.slots == plan.rows == 50257
    tiling = _triton.Tiling(chunk_tiles=16)  # 16384-element chunks: 3 per row here
    plan = _triton.plan([(5, 3), (70000, 40000)], tiling)
    last = max(plan.items, key=lambda it: it[1])
    assert last[1] == 69999 * 40000 + 2 * 16384 and last[1] > 2**31
    assert plan.meta[1][:5] == (70000, 40000, 3, 5, 5)
    assert plan.slots == 5 + 70000 * 3
    layout = _triton.Workspace().layout([torch.zeros(3, 4)], torch.float32)
    assert layout.items.dtype == layout.meta.dtype == torch.int64


@triton.jit
def _offsets_probe(
    out_ptr, offset, row_step, col_step, tile_rows, BR: tl.constexpr, BC: tl.constexpr
):
    offs, cols, rows_ok = K.tile_offsets(offset, row_step, col_step, tile_rows, BR, BC)
    i = tl.arange(0, BR)[:, None] * BC + tl.arange(0, BC)[None, :]
    tl.store(out_ptr + i, offs)
    tl.store(out_ptr + BR * BC + i, cols)
    tl.store(out_ptr + 2 * BR * BC + i, tl.broadcast_to(rows_ok, (BR, BC)).to(tl.int64))


def test_kernel_offsets_are_int64() -> None:
    """The kernels' offset arithmetic (``tile_offsets``) past 2**31, without the memory."""
    offset, row_step = 69998 * 40000 + 8, 40000
    out = torch.zeros(3 * 4 * 8, dtype=torch.int64)
    _offsets_probe[(1,)](out, offset, row_step, 0, 3, BR=4, BC=8)
    offs, cols, ok = out.view(3, 4, 8).numpy()
    i, j = np.arange(4)[:, None], np.arange(8)[None, :]
    assert np.array_equal(offs, offset + i * row_step + j)
    assert offs.max() > 2**31
    assert np.array_equal(cols, np.broadcast_to(j, (4, 8)))
    assert np.array_equal(ok, np.broadcast_to(i < 3, (4, 8)))


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the kernels launched, in order (each jit function wrapped)."""
    seen: list[str] = []
    names: list[str] = []

    class Counted:
        def __init__(self, name: str, fn: Any):
            self.name, self.fn = name, fn

        def __getitem__(self, grid: Any) -> Any:
            seen.append(self.name)
            return self.fn[grid]

    for name in ("adamp_stats", "adamp_decide", "adamp_apply"):
        names.append(name)
    for name in names + [n.replace("adamp", "sgdp") for n in names]:
        monkeypatch.setattr(K, name, Counted(name, getattr(K, name)))
    yield seen


def _kernels(optimizer: str, n: int, dims: int = 2) -> tuple[Kernels, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(n)
    shape = (2, 3) if dims == 2 else (3,)
    params = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(n)]
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(n)]
    defaults = ADAMP_DEFAULTS if optimizer == "AdamP" else SGDP_DEFAULTS
    return Kernels(optimizer, params, dict(defaults)), grads


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_launch_count_does_not_depend_on_tensor_count(optimizer: str, launches: list[str]) -> None:
    counts = []
    for n in (1, 7):
        kernels, grads = _kernels(optimizer, n)
        launches.clear()
        kernels.step(grads)
        counts.append(len(launches))
    assert counts == [3, 3]
    kernels, grads = _kernels(optimizer, 5, dims=1)
    launches.clear()
    kernels.step(grads)
    assert len(launches) == 2  # nothing to project: no apply pass


def test_no_host_reads_and_no_new_tables_after_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """After one step with the same tensors, a step builds no table and reads no tensor
    value on the host (what CUDA-graph capture and sync-free steps need)."""
    kernels, grads = _kernels("AdamP", 3)
    kernels.hparams["lr"] = torch.tensor(0.01, dtype=torch.float64)
    kernels.step(grads)
    built: list[int] = []
    to_device = _triton._to_device
    monkeypatch.setattr(_triton, "_to_device", lambda v, d: built.append(1) or to_device(v, d))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a tensor value was read on the host")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    kernels.step(grads)
    monkeypatch.undo()
    assert not built
    assert [float(s) for s in kernels.steps] == [2.0] * 3


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_two_runs_are_bitwise_equal(optimizer: str) -> None:
    out = []
    for _ in range(2):
        kernels, grads = _kernels(optimizer, 4)
        kernels.hparams["weight_decay"] = 0.1
        for _ in range(2):
            kernels.step(grads)
        out.append([*kernels.params, *kernels.state[0]])
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_channels_last_is_taken_and_matches_contiguous() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    g = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    cl = [p.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)]
    assert not cl[0].is_contiguous()
    assert _triton.unsupported_reason(cl[0], cl[1], torch.zeros_like(cl[0])) is None
    out = []
    for x, y in ([p.clone(), g], cl):
        kernels = Kernels("SGDP", [x.clone()], dict(SGDP_DEFAULTS, weight_decay=0.1))
        kernels.step([y])
        out.append(kernels.params[0].contiguous())
    assert torch.equal(out[0], out[1])


def test_unsupported_reasons() -> None:
    p = torch.zeros(4, 6)
    assert _triton.unsupported_reason(p, torch.zeros(4, 6), torch.zeros(4, 6)) is None
    cases = {
        "dtype": (torch.zeros(4, 6, dtype=torch.int32), torch.zeros(4, 6, dtype=torch.int32)),
        "empty": (torch.zeros(0, 6), torch.zeros(0, 6)),
        "axis 0": (torch.zeros(6, 4).t(), torch.zeros(6, 4).t()),
        "strides": (p, torch.zeros(6, 4).t()),
        "dtype of grad": (p, torch.zeros(4, 6, dtype=torch.float64)),
        "sparse": (p, torch.zeros(4, 6).to_sparse()),
        "stepped vector": (torch.zeros(8)[::2], torch.zeros(8)[::2]),
    }
    for name, (param, grad) in cases.items():
        assert _triton.unsupported_reason(param, grad) is not None, name
    z = torch.zeros(2, 3, dtype=torch.complex64)
    assert _triton.unsupported_reason(z, z)


def test_available() -> None:
    assert _triton.available("cpu")
    assert _triton.interpreted()
    assert not _triton.available("cuda")
    assert not _triton.available("meta")


SGDP_ARGS: dict[str, Any] = dict(
    lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, eps=1e-8,
    delta=0.1, wd_ratio=0.1, maximize=False,
)  # fmt: skip


def test_bad_arguments() -> None:
    p, g = [torch.zeros(2, 3)], [torch.zeros(2, 3)]
    with pytest.raises(ValueError, match="variant"):
        _triton.sgdp_step(p, g, [torch.zeros(2, 3)], variant="x", **SGDP_ARGS)
    with pytest.raises(ValueError, match="same length"):
        _triton.sgdp_step(p, [], [], variant="paper", **SGDP_ARGS)
    with pytest.raises(ValueError, match="float32"):
        _triton.adamp_step(
            p, g, [torch.zeros(2, 3)], [torch.zeros(2, 3)], [torch.zeros((), dtype=torch.int64)],
            lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
            nesterov=False, maximize=False,
        )  # fmt: skip
