"""The NumPy reference's error-input table, its zero-size policy, and the suite's refusals.

Every row is refused with its exception and message, and leaves its target
bit-identical: parameters, state, hyperparameters, branches (see helpers.error_inputs).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest

from adamp_core import SGDP, AdamP
from adamp_core.functional import AdamPState, SGDPState, adamp_step, projection, sgdp_step
from adamp_core.optim import _NumpyOptimizer
from adamp_core.testing import CASES, Backend, numpy_factory, run_conformance
from helpers.error_inputs import ErrorInput, as_params, assert_bit_identical, expect_refused

OPTIMIZERS = {
    "AdamP": lambda params, **kw: AdamP(params, **{"weight_decay": 0.1, **kw}),
    "SGDP": lambda params, **kw: SGDP(params, **{"lr": 0.1, "momentum": 0.9, **kw}),
}


def snapshot(target: Any) -> Any:
    """Plain data for a target: an optimizer's params, state, hyperparameters and last
    branches, or the arrays (and containers of them) handed to a constructor."""
    if isinstance(target, _NumpyOptimizer):
        return {
            "params": [snapshot(p) for p in target.params],
            "ids": [id(p) for p in target.params],
            "state": [None if s is None else snapshot(vars(s)) for s in target.state],
            "hparams": copy.deepcopy(target.hparams),
            "check_finite": target.check_finite,
            "last_branches": list(target.last_branches),
        }
    if isinstance(target, np.ndarray):
        return target.copy()
    if isinstance(target, (list, tuple)):
        return type(target)(snapshot(x) for x in target)
    if isinstance(target, dict):
        return {k: snapshot(v) for k, v in target.items()}
    return target


def _stepped(name: str, *shapes: tuple[int, ...], **kw: Any) -> _NumpyOptimizer[Any]:
    """An optimizer over fresh float64 arrays that has taken one step (non-zero state)."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in shapes]
    opt = OPTIMIZERS[name](params, **kw)
    opt.step([rng.standard_normal(s) for s in shapes])
    return opt


def _two(name: str, **kw: Any) -> _NumpyOptimizer[Any]:
    return _stepped(name, (3, 4), (5,), **kw)


def _resized(name: str) -> _NumpyOptimizer[Any]:
    opt = _two(name)
    opt.params[0].resize((2, 6), refcheck=False)  # in place: same object, new shape
    return opt


def _replaced(name: str, dtype: str) -> _NumpyOptimizer[Any]:
    opt = _two(name)
    opt.params[0] = np.ones((3, 4), dtype)
    return opt


def _made_read_only(name: str) -> _NumpyOptimizer[Any]:
    opt = _two(name)
    opt.params[1].flags.writeable = False
    return opt


def _arrays(*shapes: tuple[int, ...], dtype: Any = np.float64) -> list[np.ndarray]:
    return [np.ones(s, dtype) for s in shapes]


PARAMS_ITERABLE = r"params must be an iterable of numpy arrays"
FLOAT_ONLY = r"params\[0\] must be a float32 or float64 numpy\.ndarray"


def _construct(name: str, **kw: Any) -> Any:
    return lambda params: OPTIMIZERS[name](params, **kw)


def _constructor_rows(name: str) -> list[ErrorInput[Any]]:
    """Rows refused by the constructor of ``name`` (AdamP or SGDP)."""
    c = _construct
    rows: list[ErrorInput[Any]] = [
        ErrorInput("bare-2d-array", "a 2-D array, not a list of arrays (rows would become params)",
                   c(name), TypeError, PARAMS_ITERABLE + r".*shape \(3, 4\).*\[array\]",
                   make=lambda: np.ones((3, 4))),
        ErrorInput("bare-1d-array", "a 1-D array, not a list", c(name), TypeError,
                   PARAMS_ITERABLE + r".*shape \(5,\)", make=lambda: np.ones(5)),
        ErrorInput("bare-0d-array", "a 0-D array, not a list", c(name), TypeError,
                   PARAMS_ITERABLE + r".*shape \(\)", make=lambda: np.array(1.0)),
        ErrorInput("params-none", "None", c(name), TypeError, PARAMS_ITERABLE + ".*NoneType"),
        ErrorInput("params-dict", "a dict of arrays (its keys would be iterated)", c(name),
                   TypeError, PARAMS_ITERABLE + ".*got dict", make=lambda: {"w": np.ones(3)}),
        ErrorInput("params-str", "a string", c(name), TypeError, PARAMS_ITERABLE + ".*got str",
                   make=lambda: "w"),
        ErrorInput("params-int", "a number", c(name), TypeError, PARAMS_ITERABLE + ".*got int",
                   make=lambda: 3),
        ErrorInput("params-empty", "an empty list", c(name), ValueError, r"params is empty",
                   make=list),
        ErrorInput("params-empty-generator", "an empty generator", c(name), ValueError,
                   r"params is empty", make=lambda: (x for x in ())),
        ErrorInput("int64-param", "integer parameters (updates would be truncated)", c(name),
                   ValueError, FLOAT_ONLY + ".*int64", make=lambda: _arrays((3,), dtype=np.int64)),
        ErrorInput("int32-param", "integer parameters", c(name), ValueError,
                   FLOAT_ONLY + ".*int32", make=lambda: _arrays((2, 2), dtype=np.int32)),
        ErrorInput("uint8-param", "unsigned integer parameters", c(name), ValueError,
                   FLOAT_ONLY + ".*uint8", make=lambda: _arrays((2, 2), dtype=np.uint8)),
        ErrorInput("bool-param", "boolean parameters", c(name), ValueError, FLOAT_ONLY + ".*bool",
                   make=lambda: _arrays((2, 2), dtype=np.bool_)),
        ErrorInput("float16-param", "float16 parameters", c(name), ValueError,
                   FLOAT_ONLY + ".*float16", make=lambda: _arrays((2, 2), dtype=np.float16)),
        ErrorInput("complex-param", "complex parameters", c(name), ValueError,
                   FLOAT_ONLY + ".*complex128", make=lambda: _arrays((2,), dtype=np.complex128)),
        ErrorInput("object-param", "an object array", c(name), ValueError, FLOAT_ONLY + ".*object",
                   make=lambda: [np.array([1.0, None])]),
        ErrorInput("nested-list-param", "a list of lists, not arrays", c(name), ValueError,
                   FLOAT_ONLY + ".*got list", make=lambda: [[1.0, 2.0]]),
        ErrorInput("second-param-int", "the second parameter is an integer array", c(name),
                   ValueError, r"params\[1\] must be a float32 or float64.*int64",
                   make=lambda: [np.ones(2), np.ones(2, np.int64)]),
        ErrorInput("read-only-param", "a read-only array", c(name), ValueError,
                   r"params\[0\] is read-only", make=_read_only),
        ErrorInput("same-array-twice", "one array passed twice (updated twice per step)",
                   c(name), ValueError, r"params\[1\] shares memory with params\[0\]",
                   make=lambda: (lambda a: [a, a])(np.ones((2, 3)))),
        ErrorInput("overlapping-views", "an array and a view of one of its rows", c(name),
                   ValueError, r"params\[2\] shares memory with params\[1\]",
                   make=lambda: (lambda a: [np.ones(4), a, a[1]])(np.ones((2, 3)))),
        ErrorInput("nesterov-str", "nesterov='no' (truthy)", c(name, nesterov="no"), ValueError,
                   r"^nesterov must be a bool, got 'no'", make=lambda: _arrays((3,))),
        ErrorInput("nesterov-int", "nesterov=1", c(name, nesterov=1), ValueError,
                   r"^nesterov must be a bool, got 1", make=lambda: _arrays((3,))),
        ErrorInput("nesterov-numpy-bool", "nesterov=np.True_", c(name, nesterov=np.True_),
                   ValueError, r"^nesterov must be a bool", make=lambda: _arrays((3,))),
        ErrorInput("nesterov-none", "nesterov=None", c(name, nesterov=None), ValueError,
                   r"^nesterov must be a bool, got None", make=lambda: _arrays((3,))),
        ErrorInput("check-finite-str", "check_finite='no' (truthy)", c(name, check_finite="no"),
                   ValueError, r"^check_finite must be a bool, got 'no'",
                   make=lambda: _arrays((3,))),
        ErrorInput("check-finite-int", "check_finite=0", c(name, check_finite=0), ValueError,
                   r"^check_finite must be a bool, got 0", make=lambda: _arrays((3,))),
        ErrorInput("lr-none", "lr=None (no schedule in NumPy)", c(name, lr=None), ValueError,
                   r"^lr must be a real number, got None", make=lambda: _arrays((3,))),
        ErrorInput("lr-negative", "lr < 0", c(name, lr=-0.1), ValueError, r"^lr must be in",
                   make=lambda: _arrays((3,))),
        ErrorInput("lr-nan", "lr NaN", c(name, lr=float("nan")), ValueError,
                   r"^lr must not be NaN", make=lambda: _arrays((3,))),
        ErrorInput("lr-inf", "lr infinite", c(name, lr=float("inf")), ValueError,
                   r"^lr must be in \[0, inf\], got inf", make=lambda: _arrays((3,))),
        ErrorInput("lr-str", "lr as a string", c(name, lr="0.1"), ValueError,
                   r"^lr must be a real number, got '0.1'", make=lambda: _arrays((3,))),
        ErrorInput("lr-bool", "lr=True", c(name, lr=True), ValueError,
                   r"^lr must be a real number, got True", make=lambda: _arrays((3,))),
        ErrorInput("lr-complex", "complex lr", c(name, lr=1 + 0j), ValueError,
                   r"^lr must be a real number", make=lambda: _arrays((3,))),
        ErrorInput("eps-negative", "eps < 0", c(name, eps=-1e-8), ValueError, r"^eps must be in",
                   make=lambda: _arrays((3,))),
        ErrorInput("weight-decay-negative", "weight_decay < 0", c(name, weight_decay=-0.1),
                   ValueError, r"^weight_decay must be in", make=lambda: _arrays((3,))),
        ErrorInput("weight-decay-none", "weight_decay=None", c(name, weight_decay=None),
                   ValueError, r"^weight_decay must be a real number, got None",
                   make=lambda: _arrays((3,))),
        ErrorInput("delta-inf", "delta infinite", c(name, delta=float("inf")), ValueError,
                   r"^delta must be in", make=lambda: _arrays((3,))),
        ErrorInput("wd-ratio-above-one", "wd_ratio > 1", c(name, wd_ratio=1.5), ValueError,
                   r"^wd_ratio must be in \[0, 1\]", make=lambda: _arrays((3,))),
        ErrorInput("unknown-keyword", "maximize (not an argument of the NumPy optimizers)",
                   c(name, maximize=True), TypeError, r"unexpected keyword argument 'maximize'",
                   make=lambda: _arrays((3,))),
    ]  # fmt: skip
    if name == "AdamP":
        rows += [
            ErrorInput("betas-one", "a pair of one", c(name, betas=(0.9,)), ValueError,
                       r"^betas must be a pair", make=lambda: _arrays((3,))),
            ErrorInput("betas-str", "a string", c(name, betas="ab"), ValueError,
                       r"^betas must be a pair", make=lambda: _arrays((3,))),
            ErrorInput("beta1-one", "beta1 = 1", c(name, betas=(1.0, 0.999)), ValueError,
                       r"^betas\[0\] must be in \[0, 1\)", make=lambda: _arrays((3,))),
            ErrorInput("beta2-negative", "beta2 < 0", c(name, betas=(0.9, -0.1)), ValueError,
                       r"^betas\[1\] must be in", make=lambda: _arrays((3,))),
        ]  # fmt: skip
    else:
        rows += [
            ErrorInput("lr-missing", "SGDP's lr is required", lambda p: SGDP(p), TypeError,
                       r"missing 1 required positional argument: 'lr'",
                       make=lambda: _arrays((3,))),
            ErrorInput("momentum-one", "momentum = 1 (decay / (1 - momentum))",
                       c(name, momentum=1.0), ValueError, r"^momentum must be in \[0, 1\)",
                       make=lambda: _arrays((3,))),
            ErrorInput("momentum-str", "momentum as a string", c(name, momentum="0.9"),
                       ValueError, r"^momentum must be a real number",
                       make=lambda: _arrays((3,))),
            ErrorInput("dampening-above-one", "dampening > 1", c(name, dampening=2.0),
                       ValueError, r"^dampening must be in", make=lambda: _arrays((3,))),
            ErrorInput("nesterov-without-momentum", "Nesterov with momentum 0",
                       c(name, nesterov=True, momentum=0.0), ValueError,
                       r"^nesterov=True requires momentum > 0", make=lambda: _arrays((3,))),
            ErrorInput("nesterov-with-dampening", "Nesterov with dampening",
                       c(name, nesterov=True, dampening=0.1), ValueError,
                       r"^nesterov=True requires .*dampening == 0", make=lambda: _arrays((3,))),
            ErrorInput("variant-unknown", "variant 'timm'", c(name, variant="timm"), ValueError,
                       r"^variant must be one of \('authors', 'paper'\), got 'timm'",
                       make=lambda: _arrays((3,))),
            ErrorInput("variant-case", "variant 'Paper' (names are case-sensitive)",
                       c(name, variant="Paper"), ValueError, r"^variant must be one of",
                       make=lambda: _arrays((3,))),
            ErrorInput("variant-int", "variant 1", c(name, variant=1), ValueError,
                       r"^variant must be one of .*got 1", make=lambda: _arrays((3,))),
            ErrorInput("variant-list", "variant ['paper']", c(name, variant=["paper"]),
                       ValueError, r"^variant must be one of .*got \['paper'\]",
                       make=lambda: _arrays((3,))),
            ErrorInput("variant-numpy-str-array", "variant np.array('paper')",
                       c(name, variant=np.array("paper")), ValueError, r"^variant must be one of",
                       make=lambda: _arrays((3,))),
            ErrorInput("variant-none", "variant None", c(name, variant=None), ValueError,
                       r"^variant must be one of .*got None", make=lambda: _arrays((3,))),
        ]  # fmt: skip
    return rows


def _read_only() -> list[np.ndarray]:
    w = np.ones(3)
    w.flags.writeable = False
    return [w]


def _step(*grads: Any) -> Any:
    return lambda opt: opt.step(list(grads))


def _step_rows(name: str) -> list[ErrorInput[Any]]:
    """Rows refused by ``step`` of an optimizer over (3, 4) and (5,) arrays that has
    already taken one step."""
    g0, g1 = np.ones((3, 4)), np.ones(5)
    nan1 = np.full(5, np.nan)
    two = lambda: _two(name)  # noqa: E731
    rows: list[ErrorInput[Any]] = [
        ErrorInput("grads-bare-array", "one array instead of a list (rows would be grads)",
                   lambda opt: opt.step(np.ones((2, 5))), TypeError,
                   r"grads must be a list .*shape \(2, 5\)", make=two),
        ErrorInput("grads-none", "None instead of a list", lambda opt: opt.step(None),
                   TypeError, r"grads must be a list .*NoneType", make=two),
        ErrorInput("grads-dict", "a dict", lambda opt: opt.step({0: g0, 1: g1}), TypeError,
                   r"grads must be a list .*got dict", make=two),
        ErrorInput("grads-too-few", "one gradient for two parameters", _step(g0), ValueError,
                   r"expected 2 gradients, got 1", make=two),
        ErrorInput("grads-too-many", "three gradients for two parameters", _step(g0, g1, g1),
                   ValueError, r"expected 2 gradients, got 3", make=two),
        ErrorInput("grads-generator-too-few", "a generator with one gradient",
                   lambda opt: opt.step(g for g in [g0]), ValueError,
                   r"expected 2 gradients, got 1", make=two),
        ErrorInput("grad-shape", "second gradient of the wrong shape", _step(g0, np.ones(4)),
                   ValueError, r"grads\[1\] has shape \(4,\), its parameter \(5,\)", make=two),
        ErrorInput("grad-transposed", "first gradient transposed", _step(g0.T, g1), ValueError,
                   r"grads\[0\] has shape \(4, 3\), its parameter \(3, 4\)", make=two),
        ErrorInput("grad-broadcastable", "a (1, 4) gradient for a (3, 4) parameter",
                   _step(np.ones((1, 4)), g1), ValueError, r"grads\[0\] has shape \(1, 4\)",
                   make=two),
        ErrorInput("grad-float32", "a float32 gradient for a float64 parameter",
                   _step(g0, g1.astype(np.float32)), ValueError,
                   r"grads\[1\] has dtype float32, its parameter float64", make=two),
        ErrorInput("grad-int", "an integer gradient", _step(g0, np.ones(5, np.int64)),
                   ValueError, r"grads\[1\] has dtype int64", make=two),
        ErrorInput("grad-list", "a list instead of an array", _step(g0, [1.0] * 5), ValueError,
                   r"grads\[1\] must be a numpy\.ndarray, got list", make=two),
        ErrorInput("grad-float", "a Python float instead of an array", _step(g0, 0.5),
                   ValueError, r"grads\[1\] must be a numpy\.ndarray, got float", make=two),
        ErrorInput("grad-nan-checked", "NaN in the second gradient with check_finite=True",
                   _step(g0, nan1), ValueError, r"grads\[1\] contains NaN or infinity",
                   make=lambda: _two(name, check_finite=True)),
        ErrorInput("grad-inf-checked", "inf with check_finite=True",
                   _step(np.full((3, 4), np.inf), None), ValueError,
                   r"grads\[0\] contains NaN or infinity",
                   make=lambda: _two(name, check_finite=True)),
        ErrorInput("param-made-read-only", "a parameter made read-only after construction",
                   _step(g0, g1), ValueError, r"params\[1\] is read-only",
                   make=lambda: _made_read_only(name)),
        ErrorInput("param-resized", "a parameter resized in place since the last step",
                   _step(np.ones((2, 6)), g1), ValueError,
                   r"params\[0\] has shape \(2, 6\) .* state '\w+' has shape \(3, 4\)",
                   make=lambda: _resized(name)),
        ErrorInput("param-replaced-dtype", "params[0] replaced by a float32 array",
                   _step(np.ones((3, 4), np.float32), g1), ValueError,
                   r"params\[0\] has shape \(3, 4\) and dtype float32, but its state",
                   make=lambda: _replaced(name, "float32")),
        ErrorInput("param-replaced-int", "params[0] replaced by an integer array",
                   _step(np.ones((3, 4), np.int64), g1), ValueError,
                   r"params\[0\] must be a float32 or float64.*int64",
                   make=lambda: _replaced(name, "int64")),
        ErrorInput("overflow-under-errstate", "an overflow while NumPy raises on overflow: "
                   "the first parameter is not updated either",
                   lambda opt: _with_errstate(opt.step, [g1, np.full((3, 4), 1e300)]),
                   FloatingPointError, r"overflow", make=lambda: _stepped(name, (5,), (3, 4))),
    ]  # fmt: skip
    return rows


def _with_errstate(fn: Any, *args: Any) -> Any:
    with np.errstate(over="raise"):
        return fn(*args)


def _table() -> list[ErrorInput[Any]]:
    rows: list[ErrorInput[Any]] = []
    for name in OPTIMIZERS:
        for row in _constructor_rows(name) + _step_rows(name):
            rows.append(
                ErrorInput(
                    f"{name}-{row.id}", row.description, row.call, row.error, row.match, row.make
                )
            )
    return rows


TABLE = _table()


@pytest.mark.parametrize("row", as_params(TABLE))
def test_refused_and_nothing_changed(row: ErrorInput[Any]) -> None:
    expect_refused(row, snapshot)


def test_the_table_covers_both_optimizers() -> None:
    assert len(TABLE) >= 120
    assert {r.id.split("-")[0] for r in TABLE} == {"AdamP", "SGDP"}


# -- zero-size parameters: a no-op ---------------------------------------------------------

ZERO_SHAPES = [(3, 0), (0, 3), (0,), (2, 0, 3), (0, 0)]
CONFIGS = {
    "AdamP": dict(weight_decay=0.1),
    "AdamP-nesterov": dict(weight_decay=0.1, nesterov=True),
    "SGDP": dict(weight_decay=0.1),
    "SGDP-nesterov": dict(weight_decay=0.1, nesterov=True),
    "SGDP-paper": dict(weight_decay=0.1, variant="paper", momentum=0.5),
}


@pytest.mark.parametrize("shape", ZERO_SHAPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_size_parameters_are_a_no_op(shape: tuple[int, ...], config: str, dtype: str) -> None:
    make = OPTIMIZERS[config.split("-")[0]]
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 5)).astype(dtype)
    empty = np.zeros(shape, dtype)
    alone = w.copy()
    opt = make([empty, w], **CONFIGS[config])
    reference = make([alone], **CONFIGS[config])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from an empty reduction
        for _ in range(3):
            g = rng.standard_normal((4, 5)).astype(dtype)
            opt.step([np.zeros(shape, dtype), g])
            reference.step([g.copy()])
    assert empty.shape == shape and empty.dtype == dtype
    assert opt.last_branches[0] == "none"
    # the other parameter is updated exactly as without the empty one
    assert_bit_identical(w, alone)
    state = opt.state[0]
    assert state is not None
    assert all(v.shape == shape for v in vars(state).values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("shape", ZERO_SHAPES, ids=str)
def test_functional_zero_size(shape: tuple[int, ...]) -> None:
    z = np.zeros(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert projection(z, z, z, delta=0.1, wd_ratio=0.1, eps=1e-8).branch == "none"
        out = adamp_step(
            z, z, AdamPState.zeros_like(z), lr=0.1, betas=(0.9, 0.999), eps=1e-8,
            weight_decay=0.1, delta=0.1, wd_ratio=0.1, nesterov=False,
        )  # fmt: skip
        assert out.param.shape == shape and out.branch == "none"
        out = sgdp_step(
            z, z, SGDPState.zeros_like(z), lr=0.1, momentum=0.9, dampening=0.0,
            weight_decay=0.1, nesterov=True, eps=1e-8, delta=0.1, wd_ratio=0.1,
            variant="authors",
        )  # fmt: skip
        assert out.param.shape == shape and out.branch == "none"


# -- the conformance suite refuses to compare nothing -----------------------------------

SUITE_ROWS: list[ErrorInput[Any]] = [
    ErrorInput("steps-zero", "steps=0 compares nothing",
               lambda _: run_conformance(numpy_factory, steps=0), ValueError,
               r"^steps must be an integer >= 1, got 0"),
    ErrorInput("steps-negative", "steps=-1", lambda _: run_conformance(numpy_factory, steps=-1),
               ValueError, r"^steps must be an integer >= 1, got -1"),
    ErrorInput("steps-float", "steps=1.5", lambda _: run_conformance(numpy_factory, steps=1.5),  # type: ignore[arg-type]
               ValueError, r"^steps must be an integer >= 1, got 1.5"),
    ErrorInput("steps-bool", "steps=True", lambda _: run_conformance(numpy_factory, steps=True),
               ValueError, r"^steps must be an integer >= 1, got True"),
    ErrorInput("no-optimizers", "optimizers=()",
               lambda _: run_conformance(numpy_factory, optimizers=()), ValueError,
               r"^optimizers is empty"),
    ErrorInput("unknown-optimizer", "optimizers=['Adam']",
               lambda _: run_conformance(numpy_factory, optimizers=["Adam"]), ValueError,
               r"^optimizers must be among \('AdamP', 'SGDP'\), got 'Adam'"),
    ErrorInput("no-dtypes", "dtypes=()", lambda _: run_conformance(numpy_factory, dtypes=()),
               ValueError, r"^dtypes is empty"),
    ErrorInput("unknown-dtype", "dtypes=['float16']",
               lambda _: run_conformance(numpy_factory, dtypes=["float16"]), ValueError,
               r"^dtypes must be among .*got 'float16'"),
    ErrorInput("no-cases", "cases=()", lambda _: run_conformance(numpy_factory, cases=()),
               ValueError, r"^cases is empty"),
    ErrorInput("no-configs", "no configuration for AdamP",
               lambda _: run_conformance(numpy_factory, optimizers=["AdamP"],
                                         configs={"AdamP": {}}),
               ValueError, r"^configs has no configuration for AdamP"),
    ErrorInput("backend-no-dtypes", "a Backend with no dtype would compare nothing",
               lambda _: Backend("b", numpy_factory, ()), ValueError,
               r"Backend 'b': dtypes must be a non-empty tuple"),
    ErrorInput("backend-dtype-str", "dtypes='float32' (a string, not a tuple)",
               lambda _: Backend("b", numpy_factory, "float32"), ValueError,  # type: ignore[arg-type]
               r"Backend 'b': dtypes must be a non-empty tuple"),
    ErrorInput("backend-unknown-dtype", "dtypes=('float16',)",
               lambda _: Backend("b", numpy_factory, ("float16",)), ValueError,
               r"Backend 'b': dtypes must be among .*'float16'"),
    ErrorInput("backend-empty-name", "an empty name", lambda _: Backend("", numpy_factory),
               ValueError, r"Backend name must be a non-empty str"),
    ErrorInput("backend-factory-not-callable", "factory=None",
               lambda _: Backend("b", None), ValueError,  # type: ignore[arg-type]
               r"Backend 'b': factory must be callable"),
]  # fmt: skip


@pytest.mark.parametrize("row", as_params(SUITE_ROWS))
def test_suite_refuses_to_compare_nothing(row: ErrorInput[Any]) -> None:
    expect_refused(row)


def test_every_accepted_run_compares_something() -> None:
    results = run_conformance(numpy_factory, optimizers=["SGDP"], dtypes=["float64"], steps=1)
    assert len(results) == len(CASES) * 7 and all(r.passed for r in results)
