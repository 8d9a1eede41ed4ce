"""The torch backend's fast path: ``adamp_torch.functional`` on views of the variables.

Keras' torch backend runs the optimizers it ships with through fused ``torch._foreach``
kernels; a subclass would get a Python loop of small per-variable kernels instead. Here
the whole update goes through the PyTorch adapter's functional kernel, on views of the
variables' torch tensors with their channel axes moved to the front (PyTorch's layout),
so the same in-place kernel updates the Keras variables.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["available", "update"]


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether ``adamp_torch.functional`` (the PyTorch adapter's kernel) is importable."""
    try:
        from adamp_torch import functional
    except ImportError:
        return False
    return hasattr(functional, "adamp") and hasattr(functional, "sgdp")


def channel_first(tensor: Any, axes: tuple[int, ...]) -> Any:
    """A view of ``tensor`` in PyTorch layout: one leading axis of output channels.

    ``axes`` are the Keras channel axes (``()``: never projected, so the view is 1-D).
    Several channel axes are merged into one, which needs no copy when they are adjacent
    in memory (depthwise kernels' last two axes are).
    """
    if not axes:
        return tensor.view(-1) if tensor.dim() != 1 else tensor
    rest = [a for a in range(tensor.dim()) if a not in axes]
    moved = tensor.permute(*axes, *rest)
    if len(axes) == 1:
        return moved
    channels = 1
    for a in axes:
        channels *= tensor.shape[a]
    return moved.view(channels, *moved.shape[len(axes) :])


def _like(tensor: Any, reference: Any) -> Any:
    """``tensor`` with ``reference``'s memory layout (the kernel reads every tensor of a
    parameter through the parameter's strides)."""
    if tensor.stride() == reference.stride():
        return tensor
    import torch

    out = torch.empty_like(reference, dtype=tensor.dtype)
    out.copy_(tensor)
    return out


def update(optimizer: Any, grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
    """Apply one step of ``optimizer`` (AdamP or SGDP) to ``variables`` in place.

    Variables are grouped by their weight decay coefficient (``exclude_from_weight_decay``
    makes it 0); each group is one call of the kernel. The step count is Keras'
    ``iterations`` (shared by all variables), as in ``update_step``.
    """
    import torch

    from adamp_torch import functional

    from ._math import densify

    groups: dict[float, list[int]] = {}
    index = [optimizer._get_variable_index(v) for v in variables]
    for k, i in enumerate(index):
        groups.setdefault(optimizer._decay_of[i], []).append(k)
    lr = learning_rate.value if hasattr(learning_rate, "value") else learning_rate
    lr = torch.as_tensor(lr)
    with torch.no_grad():
        for weight_decay, members in groups.items():
            axes = [optimizer._axes_of[index[k]] for k in members]
            params = [channel_first(variables[k].value, a) for k, a in zip(members, axes)]
            gs = [
                channel_first(_like(torch.as_tensor(densify(grads[k])), variables[k].value), a)
                for k, a in zip(members, axes)
            ]
            common = dict(
                weight_decay=weight_decay,
                delta=optimizer.delta,
                wd_ratio=optimizer.wd_ratio,
                eps=optimizer.epsilon,
                lr=lr,
            )
            if optimizer._name_of_kernel == "adamp":
                steps = torch.full(
                    (len(members),),
                    float(optimizer.iterations),
                    dtype=torch.float64,
                    device=params[0].device,
                ).unbind(0)
                functional.adamp(
                    params, gs,
                    [channel_first(optimizer._exp_avgs[index[k]].value, a)
                     for k, a in zip(members, axes)],
                    [channel_first(optimizer._exp_avg_sqs[index[k]].value, a)
                     for k, a in zip(members, axes)],
                    list(steps), beta1=optimizer.beta_1, beta2=optimizer.beta_2,
                    nesterov=optimizer.nesterov, **common,
                )  # fmt: skip
            else:
                if optimizer._momentum_buffers:
                    bufs = [
                        channel_first(optimizer._momentum_buffers[index[k]].value, a)
                        for k, a in zip(members, axes)
                    ]
                else:
                    bufs = [torch.zeros_like(p) for p in params]
                functional.sgdp(
                    params, gs, bufs, momentum=optimizer.momentum,
                    dampening=optimizer.dampening, nesterov=optimizer.nesterov,
                    variant=optimizer.variant, **common,
                )  # fmt: skip
