"""The command-line app around the reference: ``python -m adamp_core check|demo``.

Also installed as the ``adamp-optimizers`` console script. The reference library
(validation, functional, optim, testing) imports nothing from here.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
