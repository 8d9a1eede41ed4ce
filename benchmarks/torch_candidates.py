"""Every torch optimizer the benchmark times, found at run time.

A :class:`Candidate` is a label, a family ("AdamP" or "SGDP": which baseline its ratio is
against), a role ("ours", "baseline", "peer") and a factory, or the reason it is unavailable.
Nothing that fails to import is dropped: it becomes a row that says why.

Our paths are discovered from ``adamp_torch`` itself: the default constructor, one variant per
non-default value of any implementation-selecting keyword its signature declares (``foreach``,
``fused``, ``compile``, ``mode``, ... with a ``bool`` or ``Literal`` annotation), and any other
``torch.optim.Optimizer`` subclass the package exports with AdamP/SGDP in its name.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

# Hyperparameters shared by every optimizer of a family (decoupled decay everywhere).
ADAM_HP: dict[str, Any] = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
SGD_HP: dict[str, Any] = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}

VARIANT_KEYWORDS = (
    "foreach",
    "fused",
    "compile",
    "compiled",
    "mode",
    "impl",
    "implementation",
    "backend",
    "kernel",
    "capturable",
)
CUDA_ONLY_KEYWORDS = ("capturable",)

BASELINE = {"AdamP": "torch AdamW(fused=True)", "SGDP": "torch SGD(fused=True)"}
REFERENCE = {"AdamP": "authors adamp.AdamP", "SGDP": "authors adamp.SGDP"}


@dataclass
class Candidate:
    label: str
    family: str  # "AdamP" | "SGDP"
    role: str  # "ours" | "baseline" | "peer"
    factory: Factory | None = None
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)
    compiled: bool = False  # time torch.compile(opt.step) instead of opt.step


def _hp(family: str) -> dict[str, Any]:
    return dict(ADAM_HP if family == "AdamP" else SGD_HP)


def _unavailable(label: str, family: str, role: str, exc: BaseException) -> Candidate:
    return Candidate(label, family, role, unavailable=f"{type(exc).__name__}: {exc}".strip())


def _choices(annotation: Any, default: Any) -> list[Any]:
    """Non-default values of a ``bool``/``Optional[bool]``/``Literal`` keyword, else []."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        values = list(args)
    elif annotation is bool or bool in args:
        values = [True, False]
    else:
        return []
    return [v for v in values if v != default and v is not None]


def _variants(cls: Any, device: str) -> list[dict[str, Any]]:
    sig = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable string annotations: fall back to the raw ones
        hints = {}
    out: list[dict[str, Any]] = [{}]
    for name, prm in sig.parameters.items():
        if name not in VARIANT_KEYWORDS:
            continue
        if name in CUDA_ONLY_KEYWORDS and device != "cuda":
            continue
        for value in _choices(hints.get(name, prm.annotation), prm.default):
            out.append({name: value})
    return out


def _family_of(name: str) -> str | None:
    return "SGDP" if "SGDP" in name else "AdamP" if "AdamP" in name else None


def ours(device: str = "cpu", compile_families: tuple[str, ...] = ()) -> list[Candidate]:
    """Every path ``adamp_torch`` exposes (or one 'missing' row per family), plus, for the
    families in ``compile_families``, the default constructor with a tensor lr under
    ``torch.compile(step)`` (the compiled mode the adapter's conformance suite checks)."""
    try:
        mod = importlib.import_module("adamp_torch")
    except Exception as exc:
        return [_unavailable(f"ours adamp_torch.{f}", f, "ours", exc) for f in ("AdamP", "SGDP")]
    out: list[Candidate] = []
    for family in ("AdamP", "SGDP"):
        cls = getattr(mod, family, None)
        if cls is None:
            out.append(
                Candidate(f"ours adamp_torch.{family}", family, "ours", unavailable="missing")
            )
            continue
        for kw in _variants(cls, device):
            args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
            out.append(
                Candidate(
                    f"ours {family}({args})",
                    family,
                    "ours",
                    factory=_bind(cls, family, kw),
                )
            )
        if family in compile_families and hasattr(torch, "compile"):
            out.append(
                Candidate(
                    f"ours {family}() + torch.compile(step), tensor lr",
                    family,
                    "ours",
                    factory=_bind(cls, family, {}, tensor_lr=True),
                    compiled=True,
                )
            )
    for name in sorted(set(dir(mod)) | set(getattr(mod, "__all__", ()))):
        obj = getattr(mod, name, None)  # dir() and __all__ also list lazy attributes
        fam = _family_of(name)
        if (
            fam
            and name not in ("AdamP", "SGDP")
            and isinstance(obj, type)
            and issubclass(obj, torch.optim.Optimizer)
        ):
            out.append(Candidate(f"ours {name}()", fam, "ours", factory=_bind(obj, fam, {})))
    return out


def _bind(cls: Any, family: str, extra: dict[str, Any], tensor_lr: bool = False) -> Factory:
    def make(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        hp = _hp(family)
        if tensor_lr:  # a Python float lr would be baked into the compiled graph
            hp["lr"] = torch.tensor(float(hp["lr"]), dtype=torch.float64)
        opt: torch.optim.Optimizer = cls(params, **hp, **extra)
        return opt

    return make


def baselines(device: str = "cpu") -> list[Candidate]:
    """torch.optim's own optimizers: the ratio denominators and the foreach paths."""
    adamw, sgd = torch.optim.AdamW, torch.optim.SGD
    return [
        Candidate(BASELINE["AdamP"], "AdamP", "baseline", _bind(adamw, "AdamP", {"fused": True})),
        Candidate("torch AdamW(foreach=True)", "AdamP", "baseline",
                  _bind(adamw, "AdamP", {"foreach": True})),
        Candidate(BASELINE["SGDP"], "SGDP", "baseline", _bind(sgd, "SGDP", {"fused": True})),
        Candidate("torch SGD(foreach=True)", "SGDP", "baseline",
                  _bind(sgd, "SGDP", {"foreach": True})),
    ]  # fmt: skip


def _import_without_package_init(dotted: str) -> types.ModuleType:
    """Import ``pkg.sub.mod`` without executing ``pkg/__init__`` and ``pkg/sub/__init__``.

    Used for timm, whose top-level ``__init__`` imports torchvision (not installable beside a
    local torch build); its optimizer modules need only torch. The parent packages are
    registered as empty namespace modules pointing at their real directories.
    """
    parts = dotted.split(".")
    spec = importlib.util.find_spec(parts[0])
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"No module named {parts[0]!r}")
    path = list(spec.submodule_search_locations)
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = path
            sys.modules[name] = stub
        path = [f"{p}/{parts[i]}" for p in path]
    return importlib.import_module(dotted)


def _timm(family: str) -> Candidate:
    label = f"timm {family}"
    module = "timm.optim." + family.lower()
    try:
        return Candidate(
            label,
            family,
            "peer",
            _bind(getattr(importlib.import_module(module), family), family, {}),
        )
    except Exception as first:
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]
        try:
            cls = getattr(_import_without_package_init(module), family)
        except Exception as exc:
            return _unavailable(label, family, "peer", exc)
        cand = Candidate(label, family, "peer", _bind(cls, family, {}))
        cand.notes.append(
            f"`import timm` fails ({type(first).__name__}: {first}); "
            f"loaded {module} without timm/__init__"
        )
        return cand  # fmt: skip


def peers() -> list[Candidate]:
    """The authors' package, timm, pytorch_optimizer (foreach off and on)."""
    out: list[Candidate] = []
    for family in ("AdamP", "SGDP"):
        try:
            out.append(
                Candidate(
                    REFERENCE[family],
                    family,
                    "peer",
                    _bind(getattr(importlib.import_module("adamp"), family), family, {}),
                )
            )
        except Exception as exc:
            out.append(_unavailable(REFERENCE[family], family, "peer", exc))
        out.append(_timm(family))
        for foreach in (False, True):
            label = f"pytorch_optimizer {family}(foreach={foreach})"
            try:
                cls = getattr(importlib.import_module("pytorch_optimizer"), family)
                out.append(
                    Candidate(label, family, "peer", _bind(cls, family, {"foreach": foreach}))
                )
            except Exception as exc:
                out.append(_unavailable(label, family, "peer", exc))
    return out  # fmt: skip


def all_candidates(device: str = "cpu", compile_families: tuple[str, ...] = ()) -> list[Candidate]:
    """Ours (with compiled rows for ``compile_families``), the torch baselines, the peers."""
    return ours(device, compile_families) + baselines(device) + peers()
