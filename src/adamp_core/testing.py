"""The conformance suite: does an AdamP/SGDP implementation reproduce the reference?

Point :func:`run_conformance` at any implementation through a small factory and it
replays fixed, seeded cases (conv, linear, vector and zero-initialised tensors, with
gradients built to force each projection branch) side by side with the NumPy reference,
feeding each implementation gradients computed from its *own* current weights, and
reports the worst difference over every step::

    from adamp_core.testing import run_conformance, format_table

    def factory(optimizer, params, hparams):
        # optimizer: "AdamP" or "SGDP"; params: NumPy arrays (float32 or float64,
        # PyTorch layout: axis 0 is the output channel); hparams: keyword arguments with
        # adamp_core's names (lr, betas, eps, weight_decay, delta, wd_ratio, nesterov;
        # momentum, dampening, variant).
        return MyWrapper(...)   # has .step(grads) and .get_params()

    results = run_conformance(factory, backend="mine")
    print(format_table(summarize(results)))
    assert all(r.passed for r in results)

Tolerances: float64 must agree to ``FLOAT64_ABS_TOL`` in max absolute difference;
float32 to ``FLOAT32_REL_TOL`` of the largest reference weight (different reduction
orders make float32 agree only to about 1e-6, never bit for bit).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from .functional import Array, Branch
from .optim import SGDP, AdamP

__all__ = [
    "FLOAT64_ABS_TOL",
    "FLOAT32_REL_TOL",
    "DTYPES",
    "OPTIMIZERS",
    "Case",
    "CASES",
    "CONFIGS",
    "OptimizerUnderTest",
    "OptimizerFactory",
    "Backend",
    "CaseResult",
    "SummaryRow",
    "case_gradient",
    "initial_params",
    "numpy_factory",
    "run_conformance",
    "summarize",
    "format_table",
]

FLOAT64_ABS_TOL = 1e-12
FLOAT32_REL_TOL = 1e-4

#: The dtypes and optimizers the suite knows.
DTYPES: tuple[str, ...] = ("float32", "float64")
OPTIMIZERS: tuple[str, ...] = ("AdamP", "SGDP")

GradKind = Literal["orthogonal", "layer", "aligned", "zero"]
OptimizerName = Literal["AdamP", "SGDP"]


@dataclass(frozen=True)
class Case:
    """One tensor in the suite: its shape, its start, and how its gradient is built.

    ``grad`` names the gradient builder (see :func:`case_gradient`) and ``branch`` the
    projection branch the reference must take on every step of this case.
    """

    name: str
    shape: tuple[int, ...]
    grad: GradKind
    branch: Branch
    init: Literal["normal", "zeros"] = "normal"


#: The fixed cases; every step of each must take ``case.branch`` in the reference.
CASES: tuple[Case, ...] = (
    Case("conv-channel", (6, 3, 3, 3), "orthogonal", "channel"),
    Case("conv-layer", (6, 3, 3, 3), "layer", "layer"),
    Case("conv-none", (6, 3, 3, 3), "aligned", "none"),
    Case("linear-channel", (8, 12), "orthogonal", "channel"),
    Case("linear-layer", (8, 12), "layer", "layer"),
    Case("linear-none", (8, 12), "aligned", "none"),
    Case("linear-zero-grad", (5, 7), "zero", "channel"),
    Case("conv-zero-init", (4, 2, 3, 3), "orthogonal", "channel", init="zeros"),
    Case("vector", (10,), "aligned", "none"),
    Case("vector-zero-init", (7,), "aligned", "none", init="zeros"),
)

#: Hyperparameter configurations per optimizer, in adamp_core's argument names. Learning
#: rates are large enough that 20 steps move the weights visibly.
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "AdamP": {
        "plain": dict(lr=0.02),
        "weight-decay": dict(lr=0.02, weight_decay=0.5),
        "nesterov": dict(lr=0.02, nesterov=True),
        "nesterov-weight-decay": dict(lr=0.02, nesterov=True, weight_decay=0.5, wd_ratio=0.3),
    },
    "SGDP": {
        "plain": dict(lr=0.1),
        "weight-decay": dict(lr=0.1, weight_decay=0.05),
        "momentum": dict(lr=0.1, momentum=0.9),
        "momentum-weight-decay": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
        "dampening-weight-decay": dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
        "nesterov-weight-decay": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        "paper-weight-decay": dict(lr=0.1, momentum=0.9, weight_decay=0.01, variant="paper"),
    },
}


class OptimizerUnderTest(Protocol):
    """What the suite needs from an implementation: one step, and the weights back."""

    def step(self, grads: Sequence[Array]) -> None: ...

    def get_params(self) -> Sequence[Array]: ...


#: ``factory(optimizer_name, initial_params, hparams) -> OptimizerUnderTest``.
OptimizerFactory = Callable[[str, list[Array], dict[str, Any]], OptimizerUnderTest]


@dataclass(frozen=True)
class Backend:
    """An implementation announced to ``python -m adamp_core check``.

    Adapters expose a zero-argument callable returning one of these (or a list of them)
    under the ``adamp_core.backends`` entry-point group.
    """

    name: str
    factory: OptimizerFactory
    dtypes: tuple[str, ...] = ("float32", "float64")
    #: Environment variables this backend needs at import time (e.g.
    #: ``{"KERAS_BACKEND": "jax"}``). When the current process does not have them, the
    #: check runs this backend in a child process that does. ``factory`` must therefore
    #: import its framework lazily, on first call.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Run only when named explicitly (``check --backend NAME``): for paths whose check
    #: takes minutes (a compiler warming up), so the default check stays quick.
    opt_in: bool = False

    def __post_init__(self) -> None:
        """Refuse a backend that could not be checked, or would compare nothing."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Backend name must be a non-empty str, got {self.name!r}")
        if not callable(self.factory):
            raise ValueError(
                f"Backend {self.name!r}: factory must be callable, got {self.factory!r}"
            )
        if isinstance(self.dtypes, str) or not self.dtypes:
            raise ValueError(
                f"Backend {self.name!r}: dtypes must be a non-empty tuple of {DTYPES}, "
                f"got {self.dtypes!r} (a backend with no dtype would compare nothing)"
            )
        unknown = [d for d in self.dtypes if d not in DTYPES]
        if unknown:
            raise ValueError(
                f"Backend {self.name!r}: dtypes must be among {DTYPES}, got {unknown[0]!r}"
            )


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def initial_params(cases: Sequence[Case] = CASES, seed: int = 0) -> list[np.ndarray]:
    """The float64 starting weights of ``cases`` (standard normal, or zeros)."""
    out = []
    for case in cases:
        rng = np.random.default_rng(_seed(seed, case.name, "init"))
        w = rng.standard_normal(case.shape) if case.init == "normal" else np.zeros(case.shape)
        out.append(w)
    return out


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _remove_component(x: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Rows of ``x`` minus their projection on the matching rows of ``direction``."""
    sq = np.sum(direction * direction, axis=1, keepdims=True)
    coef = np.divide(
        np.sum(x * direction, axis=1, keepdims=True), sq, where=sq > 0, out=np.zeros_like(sq)
    )
    return x - coef * direction


def case_gradient(case: Case, param: np.ndarray, step: int, seed: int = 0) -> np.ndarray:
    """The gradient of ``case`` at ``step`` for the current weights ``param`` (float64).

    * ``orthogonal``: random, with each output-channel row made orthogonal to its
      weight row (the channel view passes: |cos| ~ 1e-16, or 0 on zero rows).
    * ``layer``: random plus +-2x each weight row (alternating signs), then made
      orthogonal to the flattened weight: rows are far from orthogonal, the whole is not.
    * ``aligned``: each row is its weight row plus half-size noise (|cos| ~ 0.9: no view
      passes). On zero weights it is pure noise.
    * ``zero``: all zeros.
    """
    rng = np.random.default_rng(_seed(seed, case.name, "grad", step))
    noise = rng.standard_normal(case.shape)
    if case.grad == "zero":
        return np.zeros(case.shape)
    if param.ndim < 2:
        return param + 0.5 * noise * (np.linalg.norm(param) / np.linalg.norm(noise))
    p, r = _rows(param), _rows(noise)
    p_norm = np.linalg.norm(p, axis=1, keepdims=True)
    r_norm = np.linalg.norm(r, axis=1, keepdims=True)
    if case.grad == "orthogonal":
        g = _remove_component(r, p)
    elif case.grad == "layer":
        signs = np.where(np.arange(p.shape[0]) % 2 == 0, 1.0, -1.0)[:, None]
        scale = np.divide(2.0 * r_norm, p_norm, where=p_norm > 0, out=np.zeros_like(p_norm))
        g = r + signs * scale * p
        g = _remove_component(g.reshape(1, -1), p.reshape(1, -1)).reshape(p.shape)
    else:
        g = p + 0.5 * r * np.divide(p_norm, r_norm)
    return g.reshape(case.shape)


class _NumpyUnderTest:
    def __init__(self, optimizer: AdamP | SGDP):
        self.optimizer = optimizer

    def step(self, grads: Sequence[Array]) -> None:
        self.optimizer.step(grads)

    def get_params(self) -> list[Array]:
        return self.optimizer.params


def numpy_factory(optimizer: str, params: list[Array], hparams: dict[str, Any]) -> _NumpyUnderTest:
    """The reference itself as a factory (copies ``params``)."""
    cls = {"AdamP": AdamP, "SGDP": SGDP}[optimizer]
    return _NumpyUnderTest(cls([np.array(p) for p in params], **hparams))


@dataclass
class CaseResult:
    """Worst difference of one case under one configuration over all steps."""

    backend: str
    optimizer: str
    config: str
    dtype: str
    case: str
    branch: str
    max_abs: float
    max_rel: float
    tol: float
    passed: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(dtype: str, abs_err: float, rel_err: float) -> tuple[float, float]:
    """(value compared with the tolerance, tolerance) for ``dtype``."""
    if dtype == "float64":
        return abs_err, FLOAT64_ABS_TOL
    return rel_err, FLOAT32_REL_TOL


def _run_config(
    factory: OptimizerFactory,
    backend: str,
    optimizer: str,
    config: str,
    hparams: dict[str, Any],
    dtype: str,
    cases: Sequence[Case],
    steps: int,
    seed: int,
) -> list[CaseResult]:
    start = [p.astype(dtype) for p in initial_params(cases, seed)]
    reference = numpy_factory(optimizer, start, hparams)
    worst_abs = np.zeros(len(cases))
    worst_rel = np.zeros(len(cases))
    error: str | None = None
    try:
        candidate = factory(optimizer, [p.copy() for p in start], dict(hparams))
        for step in range(steps):
            ref_params = reference.get_params()
            got_params = [np.asarray(p) for p in candidate.get_params()]
            ref_grads = [
                case_gradient(c, p.astype(np.float64), step, seed).astype(dtype)
                for c, p in zip(cases, ref_params)
            ]
            got_grads = [
                case_gradient(c, p.astype(np.float64), step, seed).astype(dtype)
                for c, p in zip(cases, got_params)
            ]
            reference.step(ref_grads)
            candidate.step(got_grads)
            for c, taken in zip(cases, reference.optimizer.last_branches):
                if taken != c.branch:
                    raise AssertionError(
                        f"suite defect: case {c.name} took branch {taken} at step {step}, "
                        f"built for {c.branch}"
                    )
            got_params = list(candidate.get_params())
            if len(got_params) != len(cases):
                raise ValueError(
                    f"get_params() returned {len(got_params)} arrays, not {len(cases)}"
                )
            for i, (r, g) in enumerate(zip(reference.get_params(), got_params)):
                r64 = np.asarray(r, dtype=np.float64)
                g64 = np.asarray(g, dtype=np.float64)
                if g64.shape != r64.shape:
                    raise ValueError(f"case {cases[i].name}: shape {g64.shape} != {r64.shape}")
                diff = float(np.max(np.abs(g64 - r64))) if r64.size else 0.0
                if not np.isfinite(diff):
                    diff = np.inf
                scale = max(float(np.max(np.abs(r64))) if r64.size else 0.0, 1e-30)
                worst_abs[i] = max(worst_abs[i], diff)
                worst_rel[i] = max(worst_rel[i], diff / scale)
    except Exception as exc:  # reported as a failure of every case in the run
        error = f"{type(exc).__name__}: {exc}"
    results = []
    for i, case in enumerate(cases):
        value, tol = _metric(dtype, float(worst_abs[i]), float(worst_rel[i]))
        results.append(
            CaseResult(
                backend,
                optimizer,
                config,
                dtype,
                case.name,
                case.branch,
                float(worst_abs[i]),
                float(worst_rel[i]),
                tol,
                passed=error is None and value <= tol,
                error=error,
            )
        )
    return results


def run_conformance(
    factory: OptimizerFactory,
    *,
    backend: str = "custom",
    optimizers: Iterable[str] = ("AdamP", "SGDP"),
    dtypes: Iterable[str] = ("float32", "float64"),
    configs: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
    cases: Sequence[Case] = CASES,
    steps: int = 20,
    seed: int = 0,
) -> list[CaseResult]:
    """Run every case under every configuration for ``steps`` steps; one row per case.

    Args:
        factory: builds the implementation under test, see :data:`OptimizerFactory`.
        backend: the name that labels the results.
        optimizers: which of ``"AdamP"``, ``"SGDP"`` to test.
        dtypes: ``"float32"`` and/or ``"float64"``.
        configs: hyperparameters per optimizer and configuration name; default
            :data:`CONFIGS`.
        cases: the tensors; default :data:`CASES`.
        steps: steps per run (default 20).
        seed: seed of the weights and the gradient noise (default 0).

    An exception raised by the implementation fails every case of that run and is
    recorded in :attr:`CaseResult.error`; it is not re-raised.

    Raises:
        ValueError: arguments that would compare nothing (``steps < 1``, no case, no
            optimizer, no dtype, an optimizer without configurations) or that the suite
            does not know (an optimizer other than AdamP/SGDP, a dtype other than
            float32/float64). Every successful call returns at least one result.
    """
    configs = CONFIGS if configs is None else configs
    optimizers, dtypes, cases = list(optimizers), list(dtypes), list(cases)
    _check_arguments(optimizers, dtypes, configs, cases, steps)
    results: list[CaseResult] = []
    for optimizer in optimizers:
        for dtype in dtypes:
            for config, hparams in configs[optimizer].items():
                results.extend(
                    _run_config(
                        factory,
                        backend,
                        optimizer,
                        config,
                        dict(hparams),
                        dtype,
                        cases,
                        steps,
                        seed,
                    )
                )
    return results


def _check_arguments(
    optimizers: list[str],
    dtypes: list[str],
    configs: Mapping[str, Mapping[str, dict[str, Any]]],
    cases: list[Case],
    steps: object,
) -> None:
    """The checks of :func:`run_conformance`: it must compare something it knows."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not cases:
        raise ValueError("cases is empty: nothing would be compared")
    for name, values, known in (("optimizers", optimizers, OPTIMIZERS), ("dtypes", dtypes, DTYPES)):
        if not values:
            raise ValueError(f"{name} is empty: nothing would be compared")
        unknown = [v for v in values if v not in known]
        if unknown:
            raise ValueError(f"{name} must be among {known}, got {unknown[0]!r}")
    for optimizer in optimizers:
        if not configs.get(optimizer):
            raise ValueError(f"configs has no configuration for {optimizer}")


@dataclass
class SummaryRow:
    """Worst case of one backend x optimizer x dtype x branch."""

    backend: str
    optimizer: str
    dtype: str
    branch: str
    max_abs: float
    max_rel: float
    tol: float
    passed: bool
    runs: int
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(results: Iterable[CaseResult]) -> list[SummaryRow]:
    """Fold case results into one row per backend x optimizer x dtype x branch."""
    rows: dict[tuple[str, str, str, str], SummaryRow] = {}
    for r in results:
        key = (r.backend, r.optimizer, r.dtype, r.branch)
        row = rows.get(key)
        if row is None:
            row = rows[key] = SummaryRow(*key, 0.0, 0.0, r.tol, True, 0)
        row.max_abs = max(row.max_abs, r.max_abs)
        row.max_rel = max(row.max_rel, r.max_rel)
        row.passed = row.passed and r.passed
        row.runs += 1
        if r.error and r.error not in row.errors:
            row.errors.append(r.error)
    return list(rows.values())


def format_table(rows: Iterable[SummaryRow]) -> str:
    """A fixed-width text table of summary rows."""
    header = ("backend", "optimizer", "dtype", "branch", "worst abs", "worst rel", "tol", "result")
    lines = [header]
    for r in rows:
        verdict = "pass" if r.passed else ("ERROR" if r.errors else "FAIL")
        if r.runs == 0:  # an error row (e.g. a backend that failed to load): nothing measured
            lines.append((r.backend, r.optimizer, r.dtype, r.branch, "-", "-", "-", verdict))
            continue
        tol = f"{r.tol:.0e} " + ("abs" if r.dtype == "float64" else "rel")
        lines.append(
            (
                r.backend,
                r.optimizer,
                r.dtype,
                r.branch,
                f"{r.max_abs:.2e}",
                f"{r.max_rel:.2e}",
                tol,
                verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
