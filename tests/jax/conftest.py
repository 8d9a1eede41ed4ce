"""Set up JAX for the adamp_jax tests: 4 virtual CPU devices (the sharding tests), and
make the repository's ``benchmarks`` package importable (the benchmark smoke test).

The device count must be fixed before JAX creates its CPU backend; nox runs this folder
in a pytest process of its own so that nothing else has touched JAX first.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    jax.config.update("jax_num_cpu_devices", 4)
except RuntimeError:  # the backend already exists (jax used earlier in this process)
    pass


@pytest.fixture
def x64() -> Iterator[None]:
    """float64 arrays for the duration of one test (JAX's x64 mode)."""
    with jax.enable_x64(True):
        yield
