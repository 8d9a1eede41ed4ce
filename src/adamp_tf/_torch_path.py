"""The torch backend's fast path: ``adamp_torch.functional`` on views of the variables.

Keras' torch backend runs its own optimizers through fused ``torch._foreach`` kernels; a
subclass would get a Python loop of small per-variable kernels instead. Here each
optimizer's ``_torch_update_step`` hands the PyTorch adapter's batched kernel views of the
variables with their channel axes moved to the front (PyTorch's layout), so that kernel
updates the Keras variables in place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

__all__ = ["available", "channel_first", "update"]


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
    """``tensor`` in ``reference``'s dtype and memory layout (the kernel takes a gradient
    typed like its variable and reads it through the variable's strides)."""
    if tensor.stride() == reference.stride() and tensor.dtype == reference.dtype:
        return tensor
    import torch

    out = torch.empty_like(reference)
    out.copy_(tensor)
    return out


def update(
    optimizer: Any, grads: Sequence[Any], variables: Sequence[Any], learning_rate: Any
) -> None:
    """Apply one step of ``optimizer`` to ``variables`` in place.

    Variables are grouped by their weight decay coefficient (``exclude_from_weight_decay``
    makes it 0); each group is one call of the optimizer's ``_torch_update_step`` with
    the variables' channel axes and channel-first views of the variables and gradients.
    """
    import torch

    from ._math import densify

    groups: dict[float, list[int]] = {}
    for k, v in enumerate(variables):
        groups.setdefault(optimizer.variable_weight_decay(v), []).append(k)
    lr = torch.as_tensor(getattr(learning_rate, "value", learning_rate))
    with torch.no_grad():
        for weight_decay, members in groups.items():
            chosen = [variables[k] for k in members]
            axes = [optimizer.variable_channel_axes(v) for v in chosen]
            params = [channel_first(v.value, a) for v, a in zip(chosen, axes)]
            gs = [
                channel_first(_like(torch.as_tensor(densify(grads[k])), v.value), a)
                for k, v, a in zip(members, chosen, axes)
            ]
            optimizer._torch_update_step(chosen, axes, params, gs, lr=lr, weight_decay=weight_decay)
