"""Inputs users really have: groups, closures, schedules, layouts, half precision, AMP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import adamp_core
from adamp_core.testing import CASES, FLOAT64_ABS_TOL, case_gradient, initial_params
from adamp_torch import SGDP, AdamP, functional
from helpers.torch_utils import set_suite_grads, suite_tensors

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _reference_run(
    name: str, cases: list, hparams: dict[str, Any], steps: int, lrs: list[float] | None = None
) -> list[np.ndarray]:
    params = [p.copy() for p in initial_params(cases)]
    opt = getattr(adamp_core, name)(params, **hparams)
    for step in range(steps):
        if lrs is not None:
            opt.hparams["lr"] = lrs[step]
        opt.step([case_gradient(c, p, step) for c, p in zip(cases, opt.params)])
    return opt.params


def _max_diff(ours: list[torch.Tensor], ref: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(p.detach().cpu().numpy() - r))) for p, r in zip(ours, ref))


def test_param_groups_with_their_own_delta_wd_ratio_nesterov() -> None:
    first, second = list(CASES[:5]), list(CASES[5:])
    hp_first = dict(lr=0.02, weight_decay=0.5, delta=0.2, wd_ratio=0.3, nesterov=True)
    hp_second = dict(lr=0.01, weight_decay=0.1, delta=0.05, wd_ratio=0.7, nesterov=False)
    a, b = suite_tensors(cases=first), suite_tensors(cases=second)
    opt = AdamP(
        [dict(params=a, **hp_first), dict(params=b, delta=0.05, wd_ratio=0.7, lr=0.01)],
        weight_decay=0.1,
    )
    for step in range(20):
        set_suite_grads(a, step, first)
        set_suite_grads(b, step, second)
        opt.step()
    assert _max_diff(a, _reference_run("AdamP", first, hp_first, 20)) <= FLOAT64_ABS_TOL
    assert _max_diff(b, _reference_run("AdamP", second, hp_second, 20)) <= FLOAT64_ABS_TOL


def test_sgdp_param_groups_with_their_own_variant() -> None:
    first, second = list(CASES[:5]), list(CASES[5:])
    hp = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    a, b = suite_tensors(cases=first), suite_tensors(cases=second)
    opt = SGDP([dict(params=a, variant="paper"), dict(params=b, wd_ratio=0.5)], **hp)
    for step in range(20):
        set_suite_grads(a, step, first)
        set_suite_grads(b, step, second)
        opt.step()
    ref_a = _reference_run("SGDP", first, dict(hp, variant="paper"), 20)
    ref_b = _reference_run("SGDP", second, dict(hp, wd_ratio=0.5), 20)
    assert _max_diff(a, ref_a) <= FLOAT64_ABS_TOL
    assert _max_diff(b, ref_b) <= FLOAT64_ABS_TOL


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_closure_is_evaluated_with_grad_and_its_loss_returned(name: str) -> None:
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, 4, dtype=torch.float64)
    target = w.detach().clone()
    opt = {"AdamP": AdamP, "SGDP": SGDP}[name]([w], lr=0.05)

    def closure() -> float:
        opt.zero_grad()
        loss = ((x @ w.t()) ** 2).sum()
        loss.backward()
        return float(loss.detach())

    expected_grad = 2 * (x @ target.t()).t() @ x
    loss = opt.step(closure)
    assert loss == pytest.approx(float(((x @ target.t()) ** 2).sum()))
    torch.testing.assert_close(w.grad, expected_grad)
    ref = getattr(adamp_core, name)([target.numpy().copy()], lr=0.05)
    ref.step([expected_grad.numpy()])
    assert float((w.detach() - torch.from_numpy(ref.params[0])).abs().max()) <= 1e-12


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_scheduler_follows_the_reference(tensor_lr: bool) -> None:
    params = suite_tensors()
    lr: float | torch.Tensor = torch.tensor(0.02, dtype=torch.float64) if tensor_lr else 0.02
    opt = AdamP(params, lr=lr, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    lrs = []
    for step in range(20):
        lrs.append(float(opt.param_groups[0]["lr"]))
        set_suite_grads(params, step)
        opt.step()
        sched.step()
    assert len(set(lrs)) > 10
    ref = _reference_run("AdamP", list(CASES), dict(lr=0.02, weight_decay=0.5), 20, lrs)
    assert _max_diff(params, ref) <= FLOAT64_ABS_TOL


def _layouts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    conv = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    return {
        "channels_last": conv.contiguous(memory_format=torch.channels_last),
        "transposed": torch.randn(5, 8, generator=g, dtype=torch.float64).t(),
        "keras_kernel": torch.randn(3, 3, 4, 6, generator=g, dtype=torch.float64).permute(
            3, 2, 0, 1
        ),
        "strided_slice": torch.randn(12, 10, generator=g, dtype=torch.float64)[::2, 1:8],
        "strided_vector": torch.randn(20, generator=g, dtype=torch.float64)[::3],
    }


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
@pytest.mark.parametrize("layout", sorted(_layouts()))
@pytest.mark.parametrize("orthogonal", [True, False])
def test_any_memory_layout_updates_in_place_like_contiguous(
    name: str, layout: str, orthogonal: bool
) -> None:
    """channels_last, transposed, permuted (Keras order), strided: same numbers, same tensor."""
    base = _layouts()[layout]
    weird = base.clone(memory_format=torch.preserve_format)
    if layout in ("keras_kernel", "strided_slice", "strided_vector"):
        weird = base  # views of larger storage: keep them as views
    plain = base.detach().clone().contiguous()
    initial = plain.clone()
    assert torch.equal(weird, plain)
    ptr, strides = weird.data_ptr(), weird.stride()
    hp = dict(lr=0.05, weight_decay=0.3)
    if name == "SGDP":
        hp["momentum"] = 0.9
    state: dict[str, list[torch.Tensor]] = {"weird": [], "plain": []}
    g = torch.Generator().manual_seed(2)
    for _ in range(8):
        grad = torch.randn(plain.shape, generator=g, dtype=torch.float64)
        if orthogonal and plain.ndim > 1:
            rows_p, rows_g = plain.reshape(plain.shape[0], -1), grad.reshape(plain.shape[0], -1)
            rows_g -= rows_p * (
                (rows_p * rows_g).sum(1, keepdim=True) / rows_p.square().sum(1, keepdim=True)
            )
        for key, p in (("weird", weird), ("plain", plain)):
            g_in = grad.clone() if key == "plain" else torch.empty_like(p).copy_(grad)
            st = state[key]
            if not st:
                st += [
                    torch.zeros_like(p),
                    torch.zeros_like(p),
                    torch.zeros((), dtype=torch.float32),
                ]
            if name == "AdamP":
                functional.adamp(
                    [p], [g_in], [st[0]], [st[1]], [st[2]], lr=hp["lr"], beta1=0.9,
                    beta2=0.999, eps=1e-8, weight_decay=hp["weight_decay"], delta=0.1,
                    wd_ratio=0.1, nesterov=False,
                )  # fmt: skip
            else:
                functional.sgdp(
                    [p], [g_in], [st[0]], lr=hp["lr"], momentum=0.9, dampening=0.0,
                    weight_decay=hp["weight_decay"], nesterov=False, eps=1e-8, delta=0.1,
                    wd_ratio=0.1,
                )  # fmt: skip
    assert weird.data_ptr() == ptr and weird.stride() == strides
    assert float((weird - plain).abs().max()) <= 1e-13
    assert not torch.equal(weird, initial)  # it did move


def test_non_contiguous_parameter_matches_reference() -> None:
    """The authors' .view() fails on these (their issue #17); ours matches the reference."""
    cases = [c for c in CASES if len(c.shape) == 4]
    params = [
        torch.tensor(p).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        for p in initial_params(cases)
    ]
    opt = AdamP(params, lr=0.02, weight_decay=0.5)
    for step in range(20):
        set_suite_grads(params, step, cases)
        opt.step()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in params)
    ref = _reference_run("AdamP", cases, dict(lr=0.02, weight_decay=0.5), 20)
    assert _max_diff(params, ref) <= FLOAT64_ABS_TOL


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


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_maximize_equals_minimizing_the_negated_gradient(name: str) -> None:
    cls = {"AdamP": AdamP, "SGDP": SGDP}[name]
    hp = dict(lr=0.05, weight_decay=0.1)
    if name == "SGDP":
        hp["momentum"] = 0.9
    up, down = suite_tensors(), suite_tensors()
    opt_up, opt_down = cls(up, maximize=True, **hp), cls(down, **hp)
    for step in range(10):
        set_suite_grads(up, step)
        for u, d in zip(up, down):
            d.grad = -u.grad
        opt_up.step()
        opt_down.step()
    for u, d in zip(up, down):
        assert float((u - d).abs().max()) <= 1e-13


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


def test_mixed_dtypes_in_one_group_each_match_the_reference() -> None:
    cases = list(CASES)
    params = [
        torch.tensor(p, dtype=torch.float64 if i % 2 else torch.float32, requires_grad=True)
        for i, p in enumerate(initial_params(cases))
    ]
    opt = SGDP(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(20):
        set_suite_grads(params, step, cases)
        opt.step()
    ref = _reference_run("SGDP", cases, dict(lr=0.1, momentum=0.9, weight_decay=0.01), 20)
    for i, (p, r) in enumerate(zip(params, ref)):
        diff = float(np.max(np.abs(p.detach().double().numpy() - r)))
        assert diff <= (FLOAT64_ABS_TOL if i % 2 else 1e-4 * max(1.0, np.abs(r).max())), i


def test_parameters_without_grad_are_skipped_and_scalars_work() -> None:
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    s = torch.tensor(1.5, requires_grad=True)
    empty = torch.zeros(0, 3, requires_grad=True)
    opt = AdamP([a, b, s, empty], lr=0.1, weight_decay=0.1)
    a.grad, s.grad, empty.grad = torch.randn(3, 2), torch.tensor(0.5), torch.zeros(0, 3)
    before_b = b.detach().clone()
    opt.step()
    assert torch.equal(b, before_b) and b not in opt.state
    ref = adamp_core.AdamP([np.array(1.5)], lr=0.1, weight_decay=0.1)
    ref.step([np.array(0.5)])
    assert float(s) == pytest.approx(float(ref.params[0]), abs=1e-6)


def test_foreach_false_gives_the_same_numbers() -> None:
    a, b = suite_tensors(), suite_tensors()
    opt_a, opt_b = (
        AdamP(a, lr=0.02, weight_decay=0.5),
        AdamP(b, lr=0.02, weight_decay=0.5, foreach=False),
    )
    for step in range(10):
        set_suite_grads(a, step)
        for x, y in zip(a, b):
            y.grad = x.grad.clone()
        opt_a.step()
        opt_b.step()
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) <= 1e-14


@CUDA
@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_cuda_matches_reference_and_never_syncs(name: str) -> None:
    from adamp_core.testing import FLOAT32_REL_TOL, run_conformance, summarize
    from adamp_torch.conformance import make_factory

    results = run_conformance(make_factory(device="cuda"), backend="torch-cuda", optimizers=[name])
    assert not {r.error for r in results if r.error}
    for row in summarize(results):
        tol = FLOAT64_ABS_TOL if row.dtype == "float64" else FLOAT32_REL_TOL
        assert (row.max_abs if row.dtype == "float64" else row.max_rel) <= tol, row
    params = [p.cuda().detach().requires_grad_(True) for p in suite_tensors(torch.float32)]
    opt = {"AdamP": AdamP, "SGDP": SGDP}[name](params, lr=0.01, weight_decay=0.1)
    set_suite_grads(params, 0)
    opt.step()  # state created (allocation may sync); the steady state must not
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            for p in params:
                p.grad.mul_(0.5)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(
    ("name", "hparams", "kernel"),
    [
        ("AdamP", {"lr": 0.01, "weight_decay": 0.1}, "_fused_adamw_"),
        ("SGDP", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, "_fused_sgd_"),
    ],
)
def test_cpu_skips_the_projection_work_for_unprojected_tensors(
    name: str, hparams: dict[str, Any], kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU the decision is read on the host: only the projected tensor gets the
    <P_r, Z_r> reductions, the others are finished by torch's fused kernel; the numbers
    still match the reference."""
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(6, 10, generator=gen, dtype=torch.float64) for _ in range(2)]
    weights.append(torch.randn(6, generator=gen, dtype=torch.float64))
    noise = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in weights]

    def gradients(current: list[np.ndarray]) -> list[np.ndarray]:
        # tensor 0: every row orthogonal to its weight row (channel projection);
        # tensor 1: the weights themselves (|cos| = 1: no projection); tensor 2: a vector.
        w0, n0 = current[0], noise[0].numpy()
        ortho = n0 - (n0 * w0).sum(1, keepdims=True) / (w0 * w0).sum(1, keepdims=True) * w0
        return [ortho, current[1].copy(), noise[2].numpy()]

    projected_asked: list[list[int]] = []
    fused_sizes: list[list[tuple[int, ...]]] = []
    real_shift = functional.shift_coefficients
    real_kernel = getattr(torch, kernel)

    def shift_spy(*args: Any, tensors: Any = None, **kwargs: Any) -> torch.Tensor:
        projected_asked.append(list(tensors))
        return real_shift(*args, tensors=tensors, **kwargs)

    def kernel_spy(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        fused_sizes.append([tuple(p.shape) for p in params])
        real_kernel(params, *args, **kwargs)

    monkeypatch.setattr(functional, "shift_coefficients", shift_spy)
    monkeypatch.setattr(torch, kernel, kernel_spy)
    params = [w.clone().requires_grad_() for w in weights]
    opt = getattr(adamp_core, name)([w.numpy().copy() for w in weights], **hparams)
    ours = (AdamP if name == "AdamP" else SGDP)(params, **hparams)
    for _ in range(3):
        for p, g in zip(params, gradients([p.detach().numpy() for p in params])):
            p.grad = torch.from_numpy(g)
        ours.step()
        opt.step(gradients(opt.params))
        assert opt.last_branches[:2] == ["channel", "none"]
    assert projected_asked == [[0]] * 3
    # each step: the unprojected matrix and the vector in one fused call, and one more
    # for the projected matrix (AdamP: its Adam step, into a buffer; SGDP: the update)
    assert fused_sizes == [[(6, 10), (6,)], [(6, 10)]] * 3
    assert _max_diff(params, opt.params) <= FLOAT64_ABS_TOL
