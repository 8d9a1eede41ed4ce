"""adamp_torch: AdamP and SGDP for PyTorch, reproducing the NumPy reference ``adamp_core``.

``from adamp_torch import AdamP, SGDP`` replaces ``from adamp import AdamP, SGDP`` (the
authors' package): same arguments, defaults, numbers and checkpoint format, plus
``maximize``, ``foreach``, ``fused``, SGDP's ``variant``, tensor learning rates, any
memory layout and no host synchronisation in ``step()`` on accelerators (on CPU the
projection decisions are read on the host, so that unprojected tensors take torch's fused
one-pass kernels). The kernel is also available
as functions over lists of tensors in :mod:`adamp_torch.functional`.

Attributes are imported on first use, so that importing a light submodule (such as
:mod:`adamp_torch.conformance`, loaded by ``adamp-optimizers check``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .functional import adamp, sgdp
    from .optim import SGDP, AdamP

__all__ = ["AdamP", "SGDP", "adamp", "sgdp"]

_HOMES = {"AdamP": ".optim", "SGDP": ".optim", "adamp": ".functional", "sgdp": ".functional"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
