"""The optimizers' dispatch under the interpreter: ``fused=None`` sends the tensors the
kernels take to them and the others (a transposed matrix) to the eager path in the same step;
``fused=False`` never uses them. Oracle: the NumPy reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton.language")

import adamp_core  # noqa: E402
from adamp_torch import SGDP, AdamP, _triton  # noqa: E402

CASES = [
    ("AdamP", {"lr": 0.01, "weight_decay": 0.1, "nesterov": True}),
    ("SGDP", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
]


def _tensors() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    conv = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    transposed = torch.randn(7, 3, generator=gen, dtype=torch.float64).t()
    vector = torch.randn(5, generator=gen, dtype=torch.float64)
    return [conv, transposed, vector]


def _gradients(weights: list[np.ndarray], step: int) -> list[np.ndarray]:
    # the conv tensor's rows are orthogonal to its weight rows: the channel branch
    w = weights[0].reshape(4, -1)
    noise = np.cos(np.arange(w.size, dtype=np.float64).reshape(w.shape) + step)
    ortho = noise - (noise * w).sum(1, keepdims=True) / (w * w).sum(1, keepdims=True) * w
    return [ortho.reshape(weights[0].shape)] + [np.sin(x + step) for x in weights[1:]]


@pytest.mark.parametrize(("name", "hparams"), CASES)
@pytest.mark.parametrize("fused", [None, False])
def test_dispatch_sends_what_the_kernels_take_to_them(
    name: str, hparams: dict[str, Any], fused: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _triton.available("cpu")
    taken: list[list[tuple[int, ...]]] = []
    kernel = getattr(_triton, f"{name.lower()}_step")

    def spy(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        taken.append([tuple(p.shape) for p in params])
        kernel(params, *args, **kwargs)

    monkeypatch.setattr(_triton, f"{name.lower()}_step", spy)
    params = [t.clone().requires_grad_() for t in _tensors()]
    ours = (AdamP if name == "AdamP" else SGDP)(params, fused=fused, **hparams)
    ref = getattr(adamp_core, name)([t.detach().numpy().copy() for t in params], **hparams)
    for step in range(3):
        for p, g in zip(params, _gradients([p.detach().numpy() for p in params], step)):
            p.grad = torch.from_numpy(g)
        ours.step()
        ref.step(_gradients(ref.params, step))
    assert ref.last_branches[0] == "channel"
    # the transposed matrix's rows are strided: the eager path takes it
    assert taken == ([[(4, 3, 2, 2), (5,)]] * 3 if fused is None else [])
    for p, r in zip(params, ref.params):
        assert float(np.max(np.abs(p.detach().numpy() - r))) <= 1e-12
