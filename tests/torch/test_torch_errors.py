"""Bad input: the error-input table, sparse gradients, complex and integer parameters,
invalid hyperparameters, copies, zero-size parameters."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch

from adamp_core.validation import validate_adamp_hparams, validate_sgdp_hparams
from adamp_torch import SGDP, AdamP, functional
from helpers.error_inputs import ErrorInput, as_params, expect_refused

ADAMP_DEFAULTS = dict(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, delta=0.1, wd_ratio=0.1,
    nesterov=False,
)  # fmt: skip
SGDP_DEFAULTS = dict(
    lr=0.1, momentum=0, dampening=0, weight_decay=0, nesterov=False, eps=1e-8, delta=0.1,
    wd_ratio=0.1, variant="authors",
)  # fmt: skip

ADAMP_BAD = [
    dict(lr=-1.0), dict(betas=(1.0, 0.999)), dict(betas=(0.9,)), dict(eps=-1e-8),
    dict(weight_decay=-0.1), dict(delta=-0.1), dict(wd_ratio=1.5), dict(nesterov=1),
    dict(lr=float("nan")),
]  # fmt: skip
SGDP_BAD = [
    dict(lr=-0.1), dict(momentum=1.0), dict(momentum=-0.1), dict(dampening=2.0),
    dict(wd_ratio=-0.5), dict(nesterov=True), dict(nesterov=True, momentum=0.9, dampening=0.1),
    dict(variant="timm"), dict(delta=float("inf")),
]  # fmt: skip


def _core_message(validate: Any, defaults: dict[str, Any], bad: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as info:
        validate(**dict(defaults, **bad))
    return str(info.value)


@pytest.mark.parametrize("bad", ADAMP_BAD, ids=str)
def test_adamp_rejects_what_the_core_rejects(bad: dict[str, Any]) -> None:
    message = _core_message(validate_adamp_hparams, ADAMP_DEFAULTS, bad)
    with pytest.raises(ValueError) as info:
        AdamP([torch.zeros(2, requires_grad=True)], **bad)
    assert str(info.value) == message


@pytest.mark.parametrize("bad", SGDP_BAD, ids=str)
def test_sgdp_rejects_what_the_core_rejects(bad: dict[str, Any]) -> None:
    message = _core_message(validate_sgdp_hparams, SGDP_DEFAULTS, bad)
    kwargs = dict(bad)
    lr = kwargs.pop("lr", 0.1)
    with pytest.raises(ValueError) as info:
        SGDP([torch.zeros(2, requires_grad=True)], lr, **kwargs)
    assert str(info.value) == message


def test_sgdp_lr_is_required() -> None:
    with pytest.raises(TypeError):
        SGDP([torch.zeros(2, requires_grad=True)])  # type: ignore[call-arg]


def test_invalid_param_group_override_is_rejected() -> None:
    opt = AdamP([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="wd_ratio"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "wd_ratio": 2.0})
    with pytest.raises(ValueError, match="delta"):
        AdamP([{"params": [torch.zeros(3, requires_grad=True)], "delta": -1.0}])


@pytest.mark.parametrize(
    "lr",
    [
        torch.tensor(-0.1),
        torch.tensor(float("nan")),
        torch.tensor(float("inf")),
        torch.tensor([0.1, 0.2]),
        torch.tensor(1),
    ],
)
def test_invalid_tensor_lr_is_rejected(lr: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="lr"):
        AdamP([torch.zeros(2, requires_grad=True)], lr=lr)


def test_fused_with_nesterov_is_rejected() -> None:
    with pytest.raises(ValueError, match="fused"):
        AdamP([torch.zeros(2, requires_grad=True)], nesterov=True, fused=True)


@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_sparse_gradient_error_names_the_parameter(cls: type[torch.optim.Optimizer]) -> None:
    model = torch.nn.ModuleDict(
        {"proj": torch.nn.Linear(3, 3), "embed": torch.nn.Embedding(10, 4, sparse=True)}
    )
    opt = cls(model.named_parameters(), lr=0.1)
    model["embed"](torch.tensor([1, 2])).sum().backward()
    with pytest.raises(
        RuntimeError, match=r"sparse gradient.*'embed\.weight'|'embed\.weight'.*sparse"
    ):
        opt.step()
    unnamed = cls(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match=r"sparse.*param_groups\[0\]\['params'\]\[2\]"):
        unnamed.step()


@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_complex_parameter_error_names_the_parameter(cls: type[torch.optim.Optimizer]) -> None:
    z = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.complex64))
    w = torch.nn.Parameter(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"complex.*'z'.*complex64"):
        cls([("w", w), ("z", z)], lr=0.1)


def test_functional_checks_list_lengths() -> None:
    p = [torch.zeros(2)]
    with pytest.raises(ValueError, match="same length"):
        functional.adamp(
            p, [torch.zeros(2)], [], [torch.zeros(2)], [torch.zeros(())], lr=0.1, beta1=0.9,
            beta2=0.99, eps=1e-8, weight_decay=0, delta=0.1, wd_ratio=0.1, nesterov=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="variant"):
        functional.sgdp(
            p, [torch.zeros(2)], [torch.zeros(2)], lr=0.1, momentum=0.9, dampening=0,
            weight_decay=0, nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1, variant="x",
        )  # fmt: skip


# -- the error-input table: each refused call leaves the optimizer exactly as it was ----------


Built = tuple[torch.optim.Optimizer, Callable[[], object]]
"""What a row's ``make`` returns: the optimizer (after one step) and the refused call."""


def _row(id: str, description: str, make: Callable[[], Built], error: type, match: str) -> Any:
    return ErrorInput(id, description, lambda built: built[1](), error, match, make=make)


def _named(cls: type, shape: tuple[int, ...] = (4, 3), **hparams: Any) -> Any:
    w = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(shape[0], dtype=torch.float64))
    opt = cls([("w", w), ("b", b)], **{"lr": 0.1, **hparams})
    for p in (w, b):
        p.grad = torch.randn_like(p)
    opt.step()  # state exists: a refused call must not touch it
    for p in (w, b):
        p.grad = torch.randn_like(p)
    return opt, w, b


def _resized(cls: type, **hparams: Any) -> tuple[Any, Callable[[], object]]:
    opt, w, _ = _named(cls, **hparams)
    w.data = torch.randn(8, 5, dtype=torch.float64)
    w.grad = torch.randn(8, 5, dtype=torch.float64)
    return opt, opt.step


def _bf16_grad(cls: type) -> Any:
    opt, w, _ = _named(cls)
    w.grad_dtype = None  # what mixed-precision setups do to store a bf16 gradient
    w.grad = w.grad.bfloat16()
    return opt, opt.step


def _group(cls: type, extra: torch.Tensor | None = None, **override: Any) -> Any:
    opt, _, _ = _named(cls)
    if extra is None:
        extra = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    return opt, lambda: opt.add_param_group({"params": [("extra", extra)], **override})


def _load(cls: type, state: Callable[[Any], dict[str, Any]]) -> Any:
    opt, _, _ = _named(cls)
    return opt, lambda: opt.load_state_dict(state(opt))


def _torch_sgd_state(opt: Any) -> dict[str, Any]:
    params = [p.detach().clone().requires_grad_() for g in opt.param_groups for p in g["params"]]
    sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.randn_like(p)
    sgd.step()
    return sgd.state_dict()


def _without(key: str) -> Callable[[Any], dict[str, Any]]:
    def state(opt: Any) -> dict[str, Any]:
        sd = copy.deepcopy(opt.state_dict())
        del sd["state"][0][key]
        return sd

    return state


def _functional_state_mismatch() -> Any:
    opt, w, _ = _named(AdamP)
    m = torch.zeros(5, 3, dtype=torch.float64)

    def call() -> None:
        functional.adamp(
            [w.data],
            [w.grad],
            [m],
            [torch.zeros_like(w)],
            [torch.zeros(())],
            lr=0.1,
            beta1=0.9,
            beta2=0.99,
            eps=1e-8,
            weight_decay=0,
            delta=0.1,
            wd_ratio=0.1,
            nesterov=False,
        )

    return opt, call


ERROR_INPUTS = [
    *(
        _row(
            f"{c.__name__}-resized-parameter",
            "p.data resized",
            partial(_resized, c, **h),
            ValueError,
            m,
        )
        for c, h, m in [
            (AdamP, {}, r"exp_avg of parameter 'w'.*shape \(4, 3\).*shape \(8, 5\)"),
            (SGDP, {"momentum": 0.9}, r"momentum of parameter 'w'.*shape \(4, 3\)"),
        ]
    ),
    *(
        _row(
            f"{c.__name__}-bf16-grad-of-fp64-param",
            "a bfloat16 gradient on a float64 parameter",
            partial(_bf16_grad, c),
            ValueError,
            r"gradient of parameter 'w'.*bfloat16.*float64",
        )
        for c in (AdamP, SGDP)
    ),
    *(
        _row(
            f"{c.__name__}-group-{k}",
            f"add_param_group with {k}={v!r}",
            partial(_group, c, **{k: v}),
            ValueError,
            m,
        )
        for c in (AdamP, SGDP)
        for k, v, m in [
            ("wd_ratio", 2.0, "wd_ratio"),
            ("maximize", "no", "maximize must be a bool"),
            ("foreach", "yes", "foreach must be a bool or None"),
            ("fused", 1, "fused must be a bool or None"),
            ("lr", torch.tensor([0.1, 0.2]), "lr must be a float or a one-element"),
        ]
    ),
    *(
        _row(
            f"{c.__name__}-group-int64-param",
            "add_param_group with an integer parameter",
            partial(_group, c, torch.zeros(3, dtype=torch.int64)),
            ValueError,
            r"floating-point parameters only: parameter 'extra'.*int64",
        )
        for c in (AdamP, SGDP)
    ),
    _row(
        "SGDP-loads-torch-SGD-state",
        "torch.optim.SGD's state dict loaded into SGDP",
        partial(_load, SGDP, _torch_sgd_state),
        ValueError,
        r"parameter 'w'.*no 'momentum'.*momentum_buffer.*another optimizer",
    ),
    _row(
        "AdamP-loads-state-without-exp_avg_sq",
        "a state dict missing a state key",
        partial(_load, AdamP, _without("exp_avg_sq")),
        ValueError,
        r"parameter 'w'.*no 'exp_avg_sq'",
    ),
    _row(
        "functional-state-of-another-shape",
        "functional.adamp with a moment shaped unlike its parameter",
        _functional_state_mismatch,
        ValueError,
        r"exp_avgs\[0\] is torch.float64 of shape \(5, 3\).*params\[0\]",
    ),
]


def _plain(x: Any) -> Any:
    """Tensors as NumPy arrays, recursively (what ``assert_bit_identical`` compares)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().copy()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def _snapshot(built: Built) -> Any:
    opt = built[0]
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return _plain([params, opt.state_dict(), groups])


@pytest.mark.parametrize("row", as_params(ERROR_INPUTS))
def test_error_inputs_are_refused_and_change_nothing(row: ErrorInput[Built]) -> None:
    expect_refused(row, snapshot=_snapshot)


def test_integer_parameters_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"floating-point parameters only.*torch.int64"):
        AdamP([torch.zeros(3, dtype=torch.int64)])
    with pytest.raises(ValueError, match=r"floating-point parameters only.*torch.bool"):
        SGDP([torch.zeros(3, dtype=torch.bool)], lr=0.1)


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_a_resized_parameter_raises_in_a_subprocess_instead_of_corrupting_memory(
    name: str,
) -> None:
    """Before the checks, the fused kernels wrote through state of the old size: the
    process died of heap corruption (exit 134). Now it is a Python exception."""
    code = textwrap.dedent(
        f"""
        import torch
        from adamp_torch import {name}
        w = torch.nn.Parameter(torch.randn(64, 32))
        opt = {name}([w], lr=0.1, momentum=0.9) if "{name}" == "SGDP" else {name}([w])
        w.grad = torch.randn_like(w); opt.step()
        w.data = torch.randn(512, 256); w.grad = torch.randn(512, 256)
        try:
            opt.step()
        except ValueError as exc:
            print("refused:", exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "shape (64, 32)" in done.stdout


@pytest.mark.parametrize("cls", [AdamP, SGDP])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copied_optimizer_steps_like_the_original(cls: type, how: str) -> None:
    opt, w, b = _named(cls, momentum=0.9) if cls is SGDP else _named(cls)
    twin = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    for p, q in zip((w, b), twin_params):
        q.grad = p.grad.clone()
    opt.step()
    twin.step()
    for p, q in zip((w, b), twin_params):
        assert torch.equal(p, q)


@pytest.mark.parametrize("foreach", [None, False])
def test_a_one_element_lr_tensor_steps_like_the_float(foreach: bool | None) -> None:
    runs = []
    for lr in (0.1, torch.tensor([0.1], dtype=torch.float64)):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3))
        opt = SGDP([w], lr=lr, momentum=0.9, weight_decay=0.1, foreach=foreach)
        for step in range(3):
            w.grad = torch.cos(w.detach() * (step + 1))
            opt.step()
        runs.append(w.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("cls", [AdamP, SGDP])
@pytest.mark.parametrize("shape", [(3, 0), (0, 3), (0,)])
def test_zero_size_parameters_are_a_no_op(cls: type, shape: tuple[int, ...]) -> None:
    empty = torch.nn.Parameter(torch.zeros(shape))
    w = torch.nn.Parameter(torch.ones(4, 3))
    opt = cls([empty, w], lr=0.1)
    ref = torch.nn.Parameter(torch.ones(4, 3))
    ref_opt = cls([ref], lr=0.1)
    for p in (empty, w, ref):
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    ref_opt.step()
    assert empty.shape == shape
    assert torch.equal(w, ref)
