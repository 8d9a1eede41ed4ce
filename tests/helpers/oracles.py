"""Wrappers that put independent implementations behind the conformance-suite factory.

``authors_factory`` runs the authors' package ``adamp`` 0.3.0 (with torch on the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class AuthorsUnderTest:
    """The authors' ``adamp.AdamP`` / ``adamp.SGDP`` as an ``OptimizerUnderTest``."""

    def __init__(self, optimizer: str, params: list[np.ndarray], hparams: dict[str, Any]):
        import adamp
        import torch

        hparams = dict(hparams)
        if hparams.pop("variant", "authors") != "authors":
            raise NotImplementedError("the authors' package has no paper variant")
        self.params = [torch.tensor(p, requires_grad=True) for p in params]
        self.optimizer = getattr(adamp, optimizer)(self.params, **hparams)

    def step(self, grads: Sequence[np.ndarray]) -> None:
        import torch

        for p, g in zip(self.params, grads):
            p.grad = torch.tensor(np.asarray(g))
        self.optimizer.step()

    def get_params(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.params]


def authors_configs() -> dict[str, dict[str, dict[str, Any]]]:
    """The suite's configurations minus the ones the authors' package cannot express."""
    from adamp_core.testing import CONFIGS

    return {
        opt: {name: hp for name, hp in configs.items() if hp.get("variant", "authors") == "authors"}
        for opt, configs in CONFIGS.items()
    }
