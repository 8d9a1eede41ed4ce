"""Bad input: sparse gradients, complex parameters, invalid hyperparameters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from adamp_core.validation import validate_adamp_hparams, validate_sgdp_hparams
from adamp_torch import SGDP, AdamP, functional

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
