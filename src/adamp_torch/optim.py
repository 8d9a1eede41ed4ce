"""``torch.optim.Optimizer`` classes for AdamP and SGDP over :mod:`adamp_torch.functional`.

Arguments, defaults and state keys are those of the authors' package ``adamp`` 0.3.0, so
its checkpoints load here. Hyperparameters are checked by :mod:`adamp_core.validation`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from adamp_core.validation import validate_adamp_hparams, validate_flag, validate_sgdp_hparams

from . import functional as F
from ._layout import is_compiling
from ._projection import Workspace
from ._sharded import is_flat_shard, one_reduction

__all__ = ["AdamP", "SGDP"]

Params = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]

#: This adapter's own switches (the core validates the rest): ``maximize`` a bool,
#: ``foreach`` and ``fused`` a bool or ``None``.
_FLAGS = ("maximize", "foreach", "fused")


def _check_lr(lr: float | Tensor) -> float:
    """The lr to hand to the core's validation (a one-element tensor's value)."""
    if not isinstance(lr, Tensor):
        return lr
    if lr.numel() != 1 or lr.is_complex() or not lr.is_floating_point():
        raise ValueError(f"lr must be a float or a one-element float tensor, got {lr!r}")
    return float(lr.detach().cpu().reshape(()))


class _ProjectedOptimizer(Optimizer):
    """What AdamP and SGDP share: parameter checks, lazy state, loading, workspaces."""

    #: State tensors of each parameter other than ``step``, in the order the kernel takes.
    _state_keys: ClassVar[tuple[str, ...]] = ()
    #: Whether the state holds a ``step`` count.
    _has_step: ClassVar[bool] = False
    #: The constructor's hyperparameters and flags (torch adds keys of its own to defaults).
    _hparams: ClassVar[tuple[str, ...]]
    #: The core's validation of this optimizer's hyperparameters.
    _validate: ClassVar[Callable[..., None]]
    #: The functional form that updates a group.
    _functional: ClassVar[Callable[..., None]]

    def __init__(self, params: Params, defaults: dict[str, Any]):
        self._workspaces: dict[int, Workspace] = {}
        super().__init__(params, defaults)

    # -- hyperparameters and parameters -------------------------------------------------------
    def _validate_group(self, group: dict[str, Any]) -> None:
        """The core's checks of the group's hyperparameters, then this adapter's flags."""
        core = {k: group[k] for k in self._hparams if k not in _FLAGS}
        type(self)._validate(**dict(core, lr=_check_lr(core["lr"])))
        for flag in _FLAGS:
            validate_flag(flag, group[flag], optional=flag != "maximize")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch does, after checking its hyperparameters and parameters.

        Raises:
            ValueError: for an invalid hyperparameter, or a complex, non-float or
                flattened (FSDP1 / DeepSpeed ZeRO) parameter (naming it). The optimizer
                is left as it was.
        """
        super().add_param_group(param_group)
        try:
            group = self.param_groups[-1]
            self._validate_group(group)
            for i, p in enumerate(group["params"]):
                self._check_param(group, len(self.param_groups) - 1, i, p)
        except Exception:
            self.param_groups.pop()  # torch appended it: a refused group leaves no trace
            raise

    def _check_param(self, group: dict[str, Any], group_index: int, i: int, p: Tensor) -> None:
        if p.is_complex():
            raise ValueError(
                f"{type(self).__name__} does not support complex parameters: "
                f"{self._param_name(group, group_index, i)} has dtype {p.dtype} "
                "(use torch.view_as_real on it if its real and imaginary parts are "
                "independent weights)"
            )
        if not p.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} optimizes floating-point parameters only: "
                f"{self._param_name(group, group_index, i)} has dtype {p.dtype}"
            )
        flat = is_flat_shard(p)
        if flat is not None:
            raise ValueError(
                f"{type(self).__name__} cannot step "
                f"{self._param_name(group, group_index, i)}: {flat}, a flattened 1-D "
                "slice of several weights, while the projection needs each weight's shape "
                "(its rows); shard with FSDP2 (torch.distributed.fsdp.fully_shard), whose "
                "DTensor parameters keep their shapes"
            )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._workspaces = {}  # not pickled: scratch memory, rebuilt on demand
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            if self._has_step:
                for p in group["params"]:
                    st = self.state.get(p)
                    if st and "step" in st and not isinstance(st["step"], Tensor):
                        # The authors' package stores a Python int.
                        st["step"] = torch.tensor(
                            float(st["step"]), dtype=torch.float32, device=p.device
                        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict (ours, or the authors' ``adamp``).

        Raises:
            ValueError: before anything is changed, if a parameter's saved state lacks a
                key this optimizer needs (another optimizer's state dict) or holds a
                tensor shaped unlike the parameter, naming both; or for torch's own
                mismatches.
        """
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        ours = [
            (gi, pi, g, p)
            for gi, g in enumerate(self.param_groups)
            for pi, p in enumerate(g["params"])
        ]
        required = (*self._state_keys, *(("step",) if self._has_step else ()))
        for saved_id, (gi, pi, group, p) in zip(saved_ids, ours):
            saved = state_dict["state"].get(saved_id, {})
            missing = [key for key in required if saved and key not in saved]
            if missing:
                raise ValueError(
                    f"the loaded state of {self._param_name(group, gi, pi)} has no "
                    f"{missing[0]!r} (found keys {sorted(saved)}): is it the state dict of "
                    f"another optimizer than {type(self).__name__}?"
                )
            for key, value in saved.items():
                if key != "step" and isinstance(value, Tensor) and value.shape != p.shape:
                    raise ValueError(
                        f"state {key!r} of {self._param_name(group, gi, pi)} has shape "
                        f"{tuple(value.shape)} in the loaded state dict, but the parameter "
                        f"has shape {tuple(p.shape)}"
                    )
        super().load_state_dict(state_dict)

    @staticmethod
    def _param_name(group: dict[str, Any], group_index: int, index: int) -> str:
        names = group.get("param_names")
        where = f"param_groups[{group_index}]['params'][{index}]"
        return f"parameter {names[index]!r} ({where})" if names else f"parameter {where}"

    # -- state ----------------------------------------------------------------------------------
    def _check_group(self, group: dict[str, Any], group_index: int) -> None:
        """Refuse a step that a kernel could not take, before any tensor is touched.

        Raises:
            RuntimeError: for a sparse gradient.
            ValueError: for a gradient or state tensor that does not match its parameter
                in shape, dtype or device (e.g. a parameter resized after its state was
                created).
        """
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients: "
                    f"{self._param_name(group, group_index, i)} has a sparse gradient"
                )
            state = self.state.get(p, {})
            for key, t in (("gradient", p.grad), *((k, state.get(k)) for k in self._state_keys)):
                if t is not None and (
                    t.shape != p.shape or t.dtype != p.dtype or t.device != p.device
                ):
                    raise ValueError(
                        f"the {key} of {self._param_name(group, group_index, i)} is "
                        f"{t.dtype} of shape {tuple(t.shape)} on {t.device}, but the "
                        f"parameter is {p.dtype} of shape {tuple(p.shape)} on {p.device}"
                    )

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        steps: list[Tensor],
        *states: list[Tensor],
    ) -> bool:
        """Collect the group's parameters that have gradients, creating state lazily.

        Fills ``params``, ``grads``, ``steps`` and one list per state key in place (flat
        lists: the convention torch.compile's optimizer support expects; it runs this
        method eagerly) and returns whether any parameter was collected. Nothing is
        created before the whole group has passed :meth:`_check_group`.
        """
        self._check_group(group, next(i for i, g in enumerate(self.param_groups) if g is group))
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if len(state) == 0:
                if self._has_step:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                for key in self._state_keys:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            for out, key in zip(states, self._state_keys):
                out.append(state[key])
            if self._has_step:
                steps.append(state["step"])
        return bool(params)

    def _functional_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        """The group's hyperparameters as keyword arguments of :attr:`_functional`."""
        return {k: group[k] for k in self._hparams}

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[list[Tensor]],
        steps: list[Tensor],
        workspace: Workspace,
    ) -> None:
        step_lists = [steps] if self._has_step else []
        type(self)._functional(
            params,
            grads,
            *states,
            *step_lists,
            **self._functional_kwargs(group),
            workspace=workspace,
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss
                (it runs with gradients enabled).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        collected = []
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            states: list[list[Tensor]] = [[] for _ in self._state_keys]
            steps: list[Tensor] = []
            collected.append((params, grads, states, steps))
            self._init_group(group, params, grads, steps, *states)
        # Every group is checked before any is updated: a refused step changes no weight.
        # Sharded groups complete their sums across ranks together, at the end.
        with nullcontext() if is_compiling() else one_reduction():
            for group_index, (group, (params, grads, states, steps)) in enumerate(
                zip(self.param_groups, collected)
            ):
                if params:
                    workspace = self._workspaces.setdefault(group_index, Workspace())
                    self._update(group, params, grads, states, steps, workspace)
        return loss


class AdamP(_ProjectedOptimizer):
    r"""AdamP (Heo et al., ICLR 2021): Adam whose update on scale-invariant weights is
    projected onto the tangent space of the weights, with reduced weight decay there.

    For each parameter :math:`p` with gradient :math:`g` (negated when ``maximize``):

    .. math::
        t &\leftarrow t + 1,\quad m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        u &= \frac{m \text{ (or } \beta_1 m + (1-\beta_1) g \text{ with Nesterov)}}
              {\sqrt{v} / \sqrt{1-\beta_2^t} + \epsilon} \\
        (u, r) &= \operatorname{projection}(p, g, u) \\
        p &\leftarrow p\,(1 - \gamma \lambda r) - \frac{\gamma}{1-\beta_1^t}\, u

    ``projection`` (tensors with two or more dimensions only): rows are the output
    channels (axis 0); if every row has :math:`|\cos(g_r, p_r)| < \delta/\sqrt{n}` (row
    length :math:`n`), each row of :math:`u` loses its component along :math:`p_r`,
    :math:`u_r \leftarrow u_r - \hat p_r \langle \hat p_r, u_r\rangle` with
    :math:`\hat p_r = p_r / (\|p_r\| + \epsilon)`, and :math:`r` = ``wd_ratio``; failing
    that, the same test and projection on the whole tensor as one row; else :math:`u` is
    unchanged and :math:`r = 1`. See ``docs/algorithm.md``.

    Same arguments, defaults, numbers and state keys (``step``, ``exp_avg``,
    ``exp_avg_sq``) as ``adamp.AdamP`` 0.3.0; off CPU, ``step()`` never synchronises with
    the host.

    Args:
        params: parameters or parameter groups (dicts may override any hyperparameter
            below, including ``delta``, ``wd_ratio`` and ``nesterov``), or named parameters.
        lr: learning rate :math:`\gamma` (default 1e-3); a float or a one-element tensor
            (use a tensor under ``torch.compile`` so that schedules do not recompile).
        betas: coefficients of the running averages of the gradient and its square
            (default (0.9, 0.999)).
        eps: added to the denominator; also the projection's eps (default 1e-8).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        delta: threshold of the scale-invariance test (default 0.1).
        wd_ratio: weight decay multiplier on projected tensors (default 0.1).
        nesterov: Nesterov momentum (default False).
        maximize: maximize the objective instead of minimizing (default False).
        foreach: ``None`` (default) or ``True``: process each (device, dtype) group as a
            batch; ``False``: one tensor at a time (same numbers, slower).
        fused: the fused kernels: ``None`` (default) where available (on CUDA the
            Triton kernels, on CPU the C++ kernel, Nesterov included; else torch's fused
            AdamW kernel for the moments: not Nesterov, eager), ``False`` never, ``True``
            always (an error where impossible; not with ``nesterov=True``).
    """

    _state_keys = ("exp_avg", "exp_avg_sq")
    _has_step = True
    _validate = validate_adamp_hparams
    _functional = F.adamp
    _hparams = (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "delta",
        "wd_ratio",
        "nesterov",
        *_FLAGS,
    )

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        F.check_fused(group["fused"], group["nesterov"])

    def _functional_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        kwargs = super()._functional_kwargs(group)
        kwargs["beta1"], kwargs["beta2"] = kwargs.pop("betas")
        return kwargs


class SGDP(_ProjectedOptimizer):
    r"""SGDP (Heo et al., ICLR 2021): SGD with momentum, projected on scale-invariant weights.

    For each parameter :math:`p` with gradient :math:`g` (negated when ``maximize``) and
    momentum buffer :math:`b` (zeros at first):

    .. math::
        b &\leftarrow \mu b + (1 - \tau) g \\
        d &= g + \mu b \text{ with Nesterov, else } b \\
        (d, r) &= \operatorname{projection}(p, g, d) \\
        b &\leftarrow d \quad\text{(``variant="authors"`` without Nesterov)} \\
        p &\leftarrow p\,\Big(1 - \frac{\gamma \lambda r}{1 - \mu}\Big) - \gamma d

    with ``projection`` as in :class:`AdamP` (``docs/algorithm.md``).

    Same arguments, defaults, numbers and state key (``momentum``) as ``adamp.SGDP``
    0.3.0 with ``variant="authors"``; off CPU, ``step()`` never synchronises with the host.

    Args:
        params: parameters or parameter groups (dicts may override any hyperparameter).
        lr: learning rate :math:`\gamma` (required); a float or a one-element tensor.
        momentum: momentum factor :math:`\mu` (default 0).
        dampening: dampening :math:`\tau` of the gradient in the buffer (default 0).
        weight_decay: decoupled weight decay :math:`\lambda`, divided by ``1 - momentum``
            (default 0).
        nesterov: Nesterov momentum (default False).
        eps: the projection's eps (default 1e-8).
        delta: threshold of the scale-invariance test (default 0.1).
        wd_ratio: weight decay multiplier on projected tensors (default 0.1).
        variant: ``"authors"`` (default; the authors' code: without Nesterov the momentum
            buffer itself is projected) or ``"paper"`` (Algorithm 1 of the paper: only
            the update is projected).
        maximize: maximize the objective instead of minimizing (default False).
        foreach: as in :class:`AdamP`.
        fused: the fused kernels: ``None`` (default) where available (the Triton kernels
            on CUDA; on CPU the C++ kernel, else torch's fused SGD kernel for unprojected
            tensors when ``momentum > 0``), ``False`` never, ``True`` required (on CUDA
            the Triton kernels for every tensor; on CPU the C++ kernel for every tensor
            it takes; an error where impossible).
    """

    _state_keys = ("momentum",)
    _has_step = False
    _validate = validate_sgdp_hparams
    _functional = F.sgdp
    _hparams = (
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "eps",
        "delta",
        "wd_ratio",
        "variant",
        *_FLAGS,
    )

    def __init__(
        self,
        params: Params,
        lr: float | Tensor,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        *,
        variant: str = "authors",
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            delta=delta,
            wd_ratio=wd_ratio,
            variant=variant,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)
