"""The oracle of the adamp_jax tests: adamp_core's functional steps, leaf by leaf, on the
same tensors with their channel axes moved to the front (PyTorch layout), and gradients
built like the conformance suite's to force each projection branch."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import adamp_core
from adamp_core.functional import AdamPState, SGDPState, adamp_step, sgdp_step
from adamp_core.testing import Case, case_gradient

#: Leaves of a Flax-layout tree: (name, shape, channel axes or None, gradient kind, the
#: branch the reference must take). Conv (H, W, in, out) and Dense (in, out) kernels: the
#: last axis; Embed (vocab, features): the first; attention q/k/v (embed, heads, head_dim):
#: the last two; biases: never.
LEAVES: tuple[tuple[str, tuple[int, ...], tuple[int, ...] | None, str, str], ...] = (
    ("conv_channel", (3, 3, 4, 6), (3,), "orthogonal", "channel"),
    ("conv_layer", (3, 3, 4, 6), (3,), "layer", "layer"),
    ("conv_none", (3, 3, 4, 6), (3,), "aligned", "none"),
    ("dense_channel", (12, 8), (1,), "orthogonal", "channel"),
    ("dense_layer", (12, 8), (1,), "layer", "layer"),
    ("embed_channel", (10, 6), (0,), "orthogonal", "channel"),
    ("qkv_channel", (8, 2, 4), (1, 2), "orthogonal", "channel"),
    ("zero_init", (3, 3, 2, 4), (3,), "orthogonal", "channel"),
    ("zero_grad", (5, 7), (1,), "zero", "channel"),
    ("bias", (6,), None, "aligned", "none"),
)

NAMES = tuple(name for name, *_ in LEAVES)
AXES = {name: axes for name, _, axes, _, _ in LEAVES}
BRANCH = {name: branch for name, *_, branch in LEAVES}

#: Hyperparameters (adamp_core's names) that exercise every term of each optimizer.
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "AdamP": {
        "weight-decay": dict(lr=0.02, weight_decay=0.5),
        "nesterov": dict(lr=0.02, betas=(0.8, 0.99), nesterov=True, weight_decay=0.5, wd_ratio=0.3),
    },
    "SGDP": {
        "momentum-weight-decay": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
        "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        "paper-dampening": dict(
            lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01, variant="paper"
        ),
    },
}


def jax_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """adamp_core's names -> adamp_jax's (``lr`` -> ``learning_rate``, ``betas`` -> b1, b2)."""
    out = dict(hparams)
    out["learning_rate"] = out.pop("lr")
    if "betas" in out:
        out["b1"], out["b2"] = out.pop("betas")
    return out


def to_reference(x: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    """The reference layout: channel axes moved to the front and merged into axis 0, the
    rest flattened; ``None`` (never project) flattens to 1-D, which the reference never
    projects."""
    if axes is None:
        return x.reshape(-1)
    moved = np.moveaxis(x, axes, tuple(range(len(axes))))
    channels = math.prod(x.shape[a] for a in axes)
    return moved.reshape(channels, -1)


def from_reference(
    x: np.ndarray, axes: tuple[int, ...] | None, shape: tuple[int, ...]
) -> np.ndarray:
    """Inverse of :func:`to_reference` for a leaf of ``shape``."""
    if axes is None:
        return x.reshape(shape)
    front = tuple(range(len(axes)))
    moved_shape = tuple(shape[a] for a in axes) + tuple(
        shape[a] for a in range(len(shape)) if a not in axes
    )
    return np.moveaxis(x.reshape(moved_shape), front, axes)


def initial_tree(
    dtype: Any = np.float64, names: Sequence[str] = NAMES, seed: int = 0
) -> dict[str, np.ndarray]:
    """Standard normal weights for the leaves ``names`` of :data:`LEAVES` (zeros for
    ``zero_init``)."""
    out = {}
    for name, shape, *_ in LEAVES:
        rng = np.random.default_rng([seed, NAMES.index(name)])
        w = np.zeros(shape) if name == "zero_init" else rng.standard_normal(shape)
        if name in names:
            out[name] = w.astype(dtype)
    return out


def gradient_tree(params: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    """Gradients forcing each leaf's branch for the current ``params`` (float64 math, the
    leaves' dtype out), built in the reference layout by the conformance suite's builder."""
    out = {}
    for name, shape, axes, kind, branch in LEAVES:
        if name not in params:
            continue
        p = to_reference(np.asarray(params[name], dtype=np.float64), axes)
        case = Case(name, p.shape, kind, branch)  # type: ignore[arg-type]
        g = case_gradient(case, p, step)
        out[name] = from_reference(g, axes, shape).astype(np.asarray(params[name]).dtype)
    return out


def core_defaults(optimizer: str) -> dict[str, Any]:
    """The NumPy reference optimizer's default hyperparameters, read from its constructor
    (the keyword arguments its step function takes; SGDP's ``lr`` has no default)."""
    step = adamp_step if optimizer == "AdamP" else sgdp_step
    wanted = {k for k, p in inspect.signature(step).parameters.items() if p.kind == p.KEYWORD_ONLY}
    return {
        k: p.default
        for k, p in inspect.signature(getattr(adamp_core, optimizer)).parameters.items()
        if k in wanted and p.default is not inspect.Parameter.empty
    }


def forced_gradient(
    param: np.ndarray, axes: tuple[int, ...] | None, kind: str, step: int = 0
) -> np.ndarray:
    """A float64 gradient of ``kind`` (``orthogonal``: channel branch, ``layer``, ``aligned``:
    none) for one leaf in any layout, built in the reference layout (channel axes first)."""
    rows = to_reference(np.asarray(param, np.float64), axes)
    branch = {"orthogonal": "channel", "layer": "layer", "aligned": "none"}[kind]
    g = case_gradient(Case("leaf", rows.shape, kind, branch), rows, step)  # type: ignore[arg-type]
    return from_reference(g, axes, np.shape(param))


class Reference:
    """adamp_core's functional steps on a dict of Flax-layout leaves.

    ``axes``: per leaf, the channel axes (``None``: never projected). ``no_decay``: leaves
    stepped with weight decay 0 (the ``mask``). ``step(grads, lr=...)`` overrides the
    learning rate for one step (schedules). ``branches`` holds the last step's branches.
    """

    def __init__(
        self,
        optimizer: str,
        params: dict[str, np.ndarray],
        hparams: dict[str, Any],
        axes: dict[str, tuple[int, ...] | None] | None = None,
        no_decay: Sequence[str] = (),
    ) -> None:
        self.optimizer = optimizer
        self.axes = {k: (AXES if axes is None else axes)[k] for k in params}
        self.shapes = {k: np.shape(v) for k, v in params.items()}
        self.hparams = dict(hparams)
        self.no_decay = set(no_decay)
        self.rows = {k: to_reference(np.array(v), self.axes[k]) for k, v in params.items()}
        zeros: Callable[[np.ndarray], Any] = (
            AdamPState.zeros_like if optimizer == "AdamP" else SGDPState.zeros_like
        )
        self.state = {k: zeros(v) for k, v in self.rows.items()}
        self.branches: dict[str, str] = {}

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {k: from_reference(v, self.axes[k], self.shapes[k]) for k, v in self.rows.items()}

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        fn = adamp_step if self.optimizer == "AdamP" else sgdp_step
        for k, g in grads.items():
            h = {**core_defaults(self.optimizer), **self.hparams}
            if lr is not None:
                h["lr"] = lr
            if k in self.no_decay:
                h["weight_decay"] = 0.0
            result = fn(self.rows[k], to_reference(np.asarray(g), self.axes[k]), self.state[k], **h)
            self.rows[k], self.state[k], self.branches[k] = (
                result.param,
                result.state,
                result.branch,
            )


def max_diff(got: dict[str, Any], want: dict[str, np.ndarray]) -> float:
    """The largest absolute difference over every leaf (float64)."""
    return max(
        float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(want[k], np.float64))))
        for k in want
    )


def largest_weight(tree: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(v, np.float64)))) for v in tree.values())
