"""The public conformance suite (adamp_core.testing) against the Keras optimizers.

The suite's arrays are in PyTorch layout; the factory declares axis 0 the channel axis.
Every case forces a known branch (channel, layer, none) in the reference.
"""

from __future__ import annotations

import functools

import pytest

from adamp_core.testing import run_conformance
from adamp_tf import _torch_path
from adamp_tf.conformance import KerasUnderTest, backends, keras_factory
from helpers.keras_utils import BACKEND, DTYPES


def _assert_all_pass(results: list) -> None:
    failed = [r for r in results if not r.passed]
    assert not failed, [
        (r.optimizer, r.config, r.dtype, r.case, r.max_abs, r.max_rel, r.error) for r in failed
    ]
    assert results


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_config_compiled(dtype: str) -> None:
    """All configurations, compiled as the backend compiles (TF graph, JAX jit, torch
    eager via the torch adapter's kernel). TensorFlow runs graph mode here, to keep the
    suite fast; XLA is covered by the cross-framework test and the compiled fit test."""
    factory = functools.partial(KerasUnderTest, xla=False)
    steps = 20 if BACKEND == "torch" else 10
    _assert_all_pass(run_conformance(factory, backend=BACKEND, dtypes=[dtype], steps=steps))


@pytest.mark.skipif(BACKEND != "torch", reason="the keras.ops path on the torch backend")
def test_torch_backend_keras_ops_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the torch adapter's kernel switched off, the keras.ops update runs instead."""
    monkeypatch.setattr(_torch_path, "available", lambda: False)
    _assert_all_pass(run_conformance(keras_factory, backend=BACKEND, dtypes=DTYPES, steps=8))


def test_backends_announced() -> None:
    names = {b.name: b for b in backends()}
    assert f"keras-{BACKEND}" in names
    b = names[f"keras-{BACKEND}"]
    assert dict(b.env) == {"KERAS_BACKEND": BACKEND}
    assert b.factory is keras_factory
