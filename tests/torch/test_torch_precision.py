"""Half precision, zero weights and gradients, AMP's GradScaler."""

from __future__ import annotations

import pytest
import torch

from adamp_torch import SGDP, AdamP
from helpers.torch_utils import CPU_PATHS, set_suite_grads, suite_tensors, use_cpu_path

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


# -- 16-bit storage against the reference: upcast, float32 math, round once -------------------

LOW = [torch.bfloat16, torch.float16]
#: (optimizer, hyperparameters) for every branch of the update rules.
RULES = {
    "AdamP": ("AdamP", dict(lr=2e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5,
                            delta=0.1, wd_ratio=0.1, nesterov=False)),
    "AdamP-nesterov": ("AdamP", dict(lr=2e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5,
                                     delta=0.1, wd_ratio=0.1, nesterov=True)),
    "SGDP-authors": ("SGDP", dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
                                  nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1,
                                  variant="authors")),
    "SGDP-paper-decay": ("SGDP", dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.05,
                                      nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1,
                                      variant="paper")),
    "SGDP-nesterov": ("SGDP", dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
                                   nesterov=True, eps=1e-8, delta=0.1, wd_ratio=0.1,
                                   variant="authors")),
}  # fmt: skip
#: (shape, gradient kind, branch the reference takes): every branch, short rows, a bias,
#: a channels_last weight (non-identity layout).
TENSORS = [
    ((8, 3, 3, 3), "row", "channel"),
    ((12, 20), "layer", "layer"),
    ((6, 40), "random", "none"),
    ((300, 1), "row", "channel"),
    ((64, 4), "random", "none"),
    ((9,), "random", "none"),
    ((6, 5, 2, 2), "row-cl", "channel"),
]
PATHS = [*CPU_PATHS, "single"]


def _low_inputs(dtype: torch.dtype, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights and gradients in ``dtype`` (the gradients made orthogonal, per row or to the
    whole tensor, in float64 before rounding)."""
    gen = torch.Generator().manual_seed(seed)
    params, grads = [], []
    for shape, kind, _ in TENSORS:
        p = torch.randn(shape, generator=gen, dtype=torch.float64)
        g = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.3
        rows = (p.shape[0], -1) if kind.startswith("row") else (1, -1)
        if kind != "random":
            pr, gr = p.reshape(rows), g.reshape(rows)
            gr -= (gr * pr).sum(1, keepdim=True) / (pr * pr).sum(1, keepdim=True) * pr
        p, g = p.to(dtype), g.to(dtype)
        if kind == "row-cl":
            p = p.contiguous(memory_format=torch.channels_last)
            g = g.contiguous(memory_format=torch.channels_last)
        params.append(p)
        grads.append(g)
    return params, grads


def _reference_step(
    optimizer: str, hp: dict, p: torch.Tensor, g: torch.Tensor, state: dict, step: int
) -> tuple[torch.Tensor, dict, str]:
    """One step of the NumPy reference in float32 on the upcast values, rounded to the
    storage dtype (the spec of a 16-bit step); ``step``: AdamP's count before it."""
    import numpy as np

    from adamp_core import functional as core

    dtype = p.dtype
    f32 = {k: v.float().numpy() for k, v in state.items()}
    pn, gn = p.float().numpy(), g.float().numpy()
    if optimizer == "AdamP":
        hp = dict(hp)
        res = core.adamp_step(
            pn, gn, core.AdamPState(step, f32["exp_avg"], f32["exp_avg_sq"]), **hp
        )
        new = {"exp_avg": res.state.exp_avg, "exp_avg_sq": res.state.exp_avg_sq}
    else:
        res = core.sgdp_step(pn, gn, core.SGDPState(f32["momentum"]), **hp)
        new = {"momentum": res.state.momentum_buffer}
    assert res.param.dtype == np.float32
    rounded = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in new.items()}
    return torch.from_numpy(np.ascontiguousarray(res.param)).to(dtype), rounded, res.branch


def _ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of ``x``'s dtype at each element (the subnormal spacing near zero)."""
    info = torch.finfo(x.dtype)
    mag = x.float().abs().clamp_min(info.smallest_normal)
    return torch.exp2(torch.floor(torch.log2(mag))) * info.eps


def _make(optimizer: str, hp: dict, params: list[torch.Tensor], path: str) -> torch.optim.Optimizer:
    cls = {"AdamP": AdamP, "SGDP": SGDP}[optimizer]
    kwargs = dict(hp)
    if optimizer == "AdamP":
        kwargs["betas"] = tuple(kwargs["betas"])
    if path == "single":
        kwargs["foreach"] = False
    return cls(params, **kwargs)


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each path: the C++ kernel (CPU default), decisions on the host, on the device, one
    tensor at a time."""
    if request.param != "single":
        use_cpu_path(monkeypatch, request.param)
    return str(request.param)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_step_is_the_rounded_float32_reference(
    rule: str, dtype: torch.dtype, path: str
) -> None:
    """One step from a random state: weights and state within 1 ulp of the storage dtype of
    the reference (upcast, float32 math, round once), on every branch and layout."""
    optimizer, hp = RULES[rule]
    params, grads = _low_inputs(dtype, seed=3)
    opt = _make(optimizer, hp, [p.clone().requires_grad_() for p in params], path)
    gen = torch.Generator().manual_seed(5)
    states, branches = [], []
    for p, g, q in zip(params, grads, opt.param_groups[0]["params"]):
        q.grad = g.clone()
        st = {}
        first = torch.randn(p.shape, generator=gen) * 0.1
        # a second moment that past gradients could have left (v >= m^2 up to a factor)
        values = dict(exp_avg=first, exp_avg_sq=(first.abs() + 0.05).square(), momentum=first)
        for key in ("exp_avg", "exp_avg_sq") if optimizer == "AdamP" else ("momentum",):
            st[key] = values[key].to(dtype).contiguous(memory_format=_format_of(p))
        states.append(st)
        opt.state[q].update({k: v.clone() for k, v in st.items()})
        if optimizer == "AdamP":
            opt.state[q]["step"] = torch.tensor(3.0)
    opt.step()
    for i, (p, g, st, q) in enumerate(zip(params, grads, states, opt.param_groups[0]["params"])):
        want, want_state, branch = _reference_step(optimizer, hp, p, g, st, 3)
        branches.append(branch)
        assert branch == TENSORS[i][2], (i, branch)
        assert q.dtype == dtype
        compared = [("param", q.detach(), want, p)]
        compared += [(k, opt.state[q][k], want_state[k], st[k]) for k in st]
        for name, got, ref, before in compared:
            assert got.dtype == dtype and torch.isfinite(got).all()
            err = (got.float() - ref.float()).abs()
            # float32 round-off of the terms matters only where they cancel (the projection
            # of a one-element row, a moment near zero): a few float32 ulps of their scale
            terms = max(float(t.float().abs().max()) for t in (ref, before, g))
            roundoff = 4 * torch.finfo(torch.float32).eps * terms
            worst = float((err / _ulp(ref)).max())
            assert (err <= _ulp(ref) + roundoff).all(), (rule, i, name, worst)


def _format_of(t: torch.Tensor) -> torch.memory_format:
    cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl and not t.is_contiguous() else torch.contiguous_format


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_20_steps_track_the_reference(
    rule: str, dtype: torch.dtype, path: str
) -> None:
    """20 steps against the reference's own rounded trajectory: within 2e-2 of the largest
    weight, every value finite (fp16 included: eps=1e-8 is not rounded to zero)."""
    optimizer, hp = RULES[rule]
    params, _ = _low_inputs(dtype, seed=11)
    opt = _make(optimizer, hp, [p.clone().requires_grad_() for p in params], path)
    keys = ("exp_avg", "exp_avg_sq") if optimizer == "AdamP" else ("momentum",)
    ref_p = [p.clone() for p in params]
    ref_state = [{k: torch.zeros_like(p) for k in keys} for p in params]
    for step in range(1, 21):
        _, grads = _low_inputs(dtype, seed=100 + step)
        grads[0].zero_()  # v stays 0 there: eps must survive
        for q, g in zip(opt.param_groups[0]["params"], grads):
            q.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            ref_p[i], ref_state[i], _ = _reference_step(
                optimizer, hp, ref_p[i], g, ref_state[i], step - 1
            )
    scale = max(float(r.float().abs().max()) for r in ref_p)
    for q, r in zip(opt.param_groups[0]["params"], ref_p):
        assert torch.isfinite(q).all()
        assert float((q.detach().float() - r.float()).abs().max()) <= 2e-2 * scale


def test_mixed_storage_is_refused_naming_the_parameter() -> None:
    """float32 weights with bfloat16 gradients: a clear error, not a silent cast."""
    w = torch.randn(4, 3, requires_grad=True)
    w.grad_dtype = None  # torch refuses such a gradient unless told to allow it
    w.grad = torch.randn(4, 3, dtype=torch.bfloat16)
    for opt in (AdamP([w], lr=1e-3), SGDP([w], lr=0.1)):
        with pytest.raises(ValueError, match=r"params'\]\[0\]|parameter"):
            opt.step()
