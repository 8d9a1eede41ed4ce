"""Half precision, zero weights and gradients, AMP's GradScaler."""

from __future__ import annotations

import pytest
import torch

from adamp_torch import SGDP, AdamP
from helpers.torch_utils import set_suite_grads, suite_tensors

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_in_float32_without_nan(name: str, dtype: torch.dtype) -> None:
    """Pure float16/bfloat16 params: eps=1e-8 would round to 0 in float16 (0/0 = NaN)."""
    cls = {"AdamP": AdamP, "SGDP": SGDP}[name]
    hp = dict(lr=0.02, weight_decay=0.5) if name == "AdamP" else dict(lr=0.1, momentum=0.9)
    half = suite_tensors(dtype)
    single = [p.detach().to(dtype).float().requires_grad_(True) for p in half]
    opt_half, opt_single = cls(half, **hp), cls(single, **hp)
    for step in range(10):
        set_suite_grads(single, step)
        for h, s in zip(half, single):
            h.grad = s.grad.to(dtype)
            s.grad = h.grad.float()  # both see the same (rounded) gradient
        # one parameter gets an all-zero gradient: v stays 0 where eps matters
        half[0].grad.zero_()
        single[0].grad.zero_()
        opt_half.step()
        opt_single.step()
        for h, s in zip(half, single):
            assert h.dtype == dtype
            assert torch.isfinite(h).all()
            scale = float(s.detach().abs().max()) + 1e-3
            tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
            assert float((h.float() - s).abs().max()) <= tol * scale * (step + 1)
            s.data.copy_(h.float())  # keep trajectories together (compare one step each)
    for key in opt_half.state[half[0]]:
        if key != "step":
            assert opt_half.state[half[0]][key].dtype == dtype


def test_authors_float16_nan_case_is_finite_here() -> None:
    w = torch.randn(4, 3, dtype=torch.float16, requires_grad=True)
    b = torch.randn(4, dtype=torch.float16, requires_grad=True)
    opt = AdamP([w, b], lr=1e-3)
    for _ in range(3):
        w.grad = torch.zeros_like(w)
        b.grad = torch.zeros_like(b)
        b.grad[0] = 1.0
        opt.step()
    assert torch.isfinite(w).all() and torch.isfinite(b).all()


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_zero_weights_and_zero_grads_give_no_nan(name: str) -> None:
    cls = {"AdamP": AdamP, "SGDP": SGDP}[name]
    params = [
        torch.zeros(4, 3, 3, 3, requires_grad=True),
        torch.zeros(5, 6, requires_grad=True),
        torch.zeros(5, requires_grad=True),
        torch.randn(3, 4, requires_grad=True),
    ]
    opt = cls(params, lr=0.1, weight_decay=0.1)
    for step in range(3):
        for i, p in enumerate(params):
            p.grad = torch.zeros_like(p) if i % 2 == 0 or step == 0 else torch.randn_like(p)
        opt.step()
    for p in params:
        assert torch.isfinite(p).all()
    for st in opt.state.values():
        for v in st.values():
            assert torch.isfinite(v).all()


def test_grad_scaler_steps_like_unscaled_training() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4)
    )
    model(torch.randn(2, 3, 8, 8))
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(288, 4)
    )
    twin.load_state_dict(model.state_dict())
    opt, opt_twin = AdamP(model.parameters(), lr=0.01), AdamP(twin.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for _ in range(5):
        x = torch.randn(4, 3, 8, 8)
        opt.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        scaler.step(opt)
        scaler.update()
        opt_twin.zero_grad()
        twin(x).square().mean().backward()
        opt_twin.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # an inf gradient makes the scaler skip the step entirely
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    scaler.scale(model(torch.full((1, 3, 8, 8), float("inf"))).sum()).backward()
    scaler.step(opt)
    scaler.update()
    for a, b in zip(model.parameters(), before):
        assert torch.equal(a, b)
