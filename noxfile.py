"""Sessions: ``lint``, ``tests`` (everything), and one per backend.

Every session installs with pip under ``constraints.txt`` (CPU torch, tensorflow-cpu).
The Keras tests run once per Keras backend, each in its own pytest process, because
Keras fixes its backend at import time.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests", "numpy_only", "triton"]

PYTHON = None  # the interpreter nox runs under
CONSTRAINTS = ("-c", "constraints.txt")
TEST_DEPS = ("pytest", "hypothesis", "adamp==0.3.0")
TORCH = ("torch", "ninja")  # ninja: torch.utils.cpp_extension builds the CPU kernel
KERAS_TF = ("keras", "tensorflow-cpu")
JAX = ("jax",)
JAX_ADAPTER = ("optax", "flax", "equinox")  # adamp_jax, its Flax demo, the Equinox helper
DEMO = ("scikit-learn", "matplotlib")
BENCH_DEPS = ("pytorch_optimizer",)
TRITON = ("triton",)  # the PyPI wheel; it installs next to the CPU build of torch
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def _install(session: nox.Session, *extra: str) -> None:
    session.install(*CONSTRAINTS, "-e", ".", *TEST_DEPS, *extra)


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run("pytest", *args, *session.posargs, env=env)


def _keras(session: nox.Session, backend: str) -> None:
    _pytest(session, "tests/keras", env={"KERAS_BACKEND": backend})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy over src/."""
    session.install(*CONSTRAINTS, "-e", ".", "ruff", "mypy", *TORCH, "keras")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole suite: core, torch, CLI, optax, and the Keras tests on every Keras backend."""
    _install(session, *TORCH, *KERAS_TF, *JAX, *JAX_ADAPTER, *DEMO)
    _pytest(session, "tests", "--ignore=tests/keras", "--ignore=tests/jax")
    _pytest(session, "tests/jax")  # own process: JAX's CPU device count is fixed at start
    for backend in KERAS_BACKENDS:
        _keras(session, backend)
    _fsdp2_check(session)


def _fsdp2_check(session: nox.Session) -> None:
    """The conformance suite on DTensor shards over 2 spawned gloo ranks (opt-in backend)."""
    session.run("python", "-m", "adamp_core", "check", "--backend", "torch-fsdp2")


@nox.session(python=PYTHON)
def distributed(session: nox.Session) -> None:
    """adamp_torch on DTensor shards and under DDP (gloo ranks on this machine), and the
    torch-fsdp2 check."""
    _install(session, *TORCH)
    _pytest(session, "tests/distributed")
    _fsdp2_check(session)


@nox.session(python=PYTHON)
def numpy_only(session: nox.Session) -> None:
    """The main-job commands with nothing but NumPy installed: they must still work."""
    session.install("-c", "constraints.txt", ".")
    session.run("python", "-m", "adamp_core", "check")
    # --strict counts the frameworks that are not installed as failures
    session.run("python", "-m", "adamp_core", "check", "--strict", success_codes=[1])
    session.run("python", "-m", "adamp_core", "demo", "--quick", "--out", session.create_tmp())


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """NumPy reference tests only (with the authors' package as oracle)."""
    _install(session, *TORCH)
    _pytest(session, "tests/core")


@nox.session(python=PYTHON)
def torch(session: nox.Session) -> None:
    """PyTorch adapter tests."""
    _install(session, *TORCH)
    _pytest(session, "tests/torch")


@nox.session(python=PYTHON)
def cli(session: nox.Session) -> None:
    """`python -m adamp_core check` and `demo` tests."""
    _install(session, *TORCH, *KERAS_TF, *DEMO)
    _pytest(session, "tests/cli")


@nox.session(python=PYTHON)
def jax(session: nox.Session) -> None:
    """optax adapter tests (adamp_jax: transformations, Flax/Equinox helpers, demo)."""
    _install(session, *JAX, *JAX_ADAPTER, *DEMO)
    _pytest(session, "tests/jax")


@nox.session(python=PYTHON)
@nox.parametrize("backend", KERAS_BACKENDS)
def keras(session: nox.Session, backend: str) -> None:
    """Keras adapter tests on one Keras backend."""
    _install(session, *TORCH, *KERAS_TF, *JAX)
    _keras(session, backend)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Optimizer-step benchmark; writes benchmarks/results/latest.{md,json}.

    Harness options after ``--``, e.g. ``nox -s bench -- --quick`` or ``-- --sets resnet50``.
    """
    _install(session, *TORCH, *KERAS_TF, *BENCH_DEPS)
    # timm's __init__ imports torchvision (no build for this torch); the harness loads only
    # timm's optimizer modules, which need torch alone.
    session.install(*CONSTRAINTS, "--no-deps", "timm")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def triton(session: nox.Session) -> None:
    """The fused Triton kernels on CPU through triton's interpreter (``TRITON_INTERPRET=1``):
    tests/triton_kernels, then ``check --backend torch-triton`` (every configuration, 20 steps).

    No TensorFlow here: it must never share a process with torch + triton.
    """
    _install(session, *TORCH, *TRITON)
    env = {"TRITON_INTERPRET": "1"}
    _pytest(session, "tests/triton_kernels", env=env)
    session.run("python", "-m", "adamp_core", "check", "--backend", "torch-triton", env=env)


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """On a CUDA machine: the Triton kernels' GPU checks and benchmark, then the Keras adapter
    on TensorFlow and JAX (benchmarks/gpu.py); writes benchmarks/results/gpu-<device>.{md,json}.
    Without CUDA it prints "no CUDA device" and succeeds (``-- --require-cuda`` makes that
    exit 2; ``-- --dry-run`` prints every command it would run).

    The pinned torch resolves to PyPI's CUDA build on a GPU machine with the default index
    (on CI machines configured for CPU wheels, set PIP_INDEX_URL to a CUDA wheel index).
    The Keras part never runs in this session's environment: benchmarks/gpu.py creates one
    virtual environment per Keras backend under .nox/gpu-keras-<backend> (tensorflow[and-cuda]
    or jax[cuda12], keras, a CPU torch), so TensorFlow and the CUDA torch never share a process.
    """
    _install(session, *TORCH, *TRITON)
    session.run("python", "-m", "benchmarks.gpu", *session.posargs)
