"""Every bad hyperparameter gets a ValueError that names the argument and the value."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from adamp_core import SGDP, AdamP, validate_adamp_hparams, validate_sgdp_hparams

ADAMP_OK: dict[str, Any] = dict(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    delta=0.1,
    wd_ratio=0.1,
    nesterov=False,
)
SGDP_OK: dict[str, Any] = dict(
    lr=0.1,
    momentum=0.9,
    dampening=0.0,
    weight_decay=1e-4,
    nesterov=False,
    eps=1e-8,
    delta=0.1,
    wd_ratio=0.1,
    variant="authors",
)


@pytest.mark.parametrize(
    ("name", "value", "shown", "bad"),
    [
        ("lr", -1e-3, "lr", "-0.001"),
        ("lr", math.nan, "lr", "nan"),
        ("lr", math.inf, "lr", "inf"),
        ("lr", "0.1", "lr", "'0.1'"),
        ("betas", (1.0, 0.999), "betas[0]", "1.0"),
        ("betas", (0.9, -0.1), "betas[1]", "-0.1"),
        ("betas", (0.9,), "betas", "(0.9,)"),
        ("betas", 0.9, "betas", "0.9"),
        ("eps", -1e-8, "eps", "-1e-08"),
        ("weight_decay", -0.1, "weight_decay", "-0.1"),
        ("delta", -0.1, "delta", "-0.1"),
        ("wd_ratio", 1.5, "wd_ratio", "1.5"),
        ("wd_ratio", -0.1, "wd_ratio", "-0.1"),
        ("nesterov", 1, "nesterov", "1"),
    ],
)
def test_adamp_rejects(name: str, value: Any, shown: str, bad: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(shown)) as info:
        validate_adamp_hparams(**{**ADAMP_OK, name: value})
    assert str(info.value).endswith(f"got {bad}")
    with pytest.raises(ValueError, match="^" + re.escape(shown)):
        AdamP([np.zeros(3)], **{**ADAMP_OK, name: value})


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        (dict(lr=-0.1), "lr"),
        (dict(momentum=-0.5), "momentum"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=1.0, weight_decay=0.1), "momentum"),
        (dict(momentum=1.5), "momentum"),
        (dict(dampening=-0.1), "dampening"),
        (dict(dampening=1.1), "dampening"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(eps=-1.0), "eps"),
        (dict(delta=math.nan), "delta"),
        (dict(wd_ratio=2.0), "wd_ratio"),
        (dict(nesterov=True, momentum=0.0), "nesterov"),
        (dict(nesterov=True, dampening=0.1), "nesterov"),
        (dict(variant="timm"), "variant"),
    ],
)
def test_sgdp_rejects(changes: dict[str, Any], shown: str) -> None:
    with pytest.raises(ValueError, match=rf"^{shown}"):
        validate_sgdp_hparams(**{**SGDP_OK, **changes})
    with pytest.raises(ValueError, match=rf"^{shown}"):
        SGDP([np.zeros(3)], **{**SGDP_OK, **changes})


def test_momentum_one_with_weight_decay_is_a_value_error_not_zero_division() -> None:
    with pytest.raises(ValueError, match=r"1 - momentum"):
        SGDP([np.zeros((2, 2))], lr=0.1, momentum=1.0, weight_decay=0.1)


@pytest.mark.parametrize(
    "changes",
    [
        dict(lr=0.0),
        dict(eps=0.0),
        dict(wd_ratio=0.0),
        dict(wd_ratio=1.0),
        dict(delta=0.0),
        dict(betas=[0.0, 0.0]),
        dict(nesterov=True),
    ],
)
def test_adamp_accepts_boundaries(changes: dict[str, Any]) -> None:
    validate_adamp_hparams(**{**ADAMP_OK, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        dict(momentum=0.0, weight_decay=0.0),
        dict(dampening=1.0),
        dict(nesterov=True),
        dict(variant="paper"),
        dict(lr=None),
    ],
)
def test_sgdp_accepts(changes: dict[str, Any]) -> None:
    validate_sgdp_hparams(**{**SGDP_OK, **changes})
