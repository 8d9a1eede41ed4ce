"""adamp_core: the NumPy reference for AdamP and SGDP (Heo et al., ICLR 2021).

This package defines the math every adapter reproduces: hyperparameter validation
(:mod:`adamp_core.validation`), the update rules as pure functions
(:mod:`adamp_core.functional`), NumPy optimizers (:class:`AdamP`, :class:`SGDP`) and the
conformance suite (:mod:`adamp_core.testing`). It depends on NumPy only.
"""

from .functional import BRANCHES, Branch
from .optim import SGDP, AdamP
from .validation import SGDP_VARIANTS, validate_adamp_hparams, validate_sgdp_hparams

__version__ = "0.1.0"

__all__ = [
    "AdamP",
    "SGDP",
    "Branch",
    "BRANCHES",
    "SGDP_VARIANTS",
    "validate_adamp_hparams",
    "validate_sgdp_hparams",
    "__version__",
]
