"""AdamP and SGDP (Heo et al., ICLR 2021) as ``optax`` gradient transformations.

    import optax
    from flax import nnx
    import adamp_jax

    tx = adamp_jax.adamp(1e-3, weight_decay=1e-2, channel_axes=adamp_jax.flax_channel_axes)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

Works with Flax (Linen and NNX), Equinox and plain JAX pytrees. The output-channel axes of
each leaf default to its last axis (Flax/Haiku layouts); see :mod:`adamp_jax.axes`.
"""

from .axes import (
    Axes,
    AxesSpec,
    ChannelAxes,
    default_channel_axes,
    equinox_channel_axes,
    flax_channel_axes,
)
from .transforms import (
    ScaleByAdamPState,
    ScaleBySGDPState,
    adamp,
    scale_by_adamp,
    scale_by_sgdp,
    sgdp,
)

__all__ = [
    "adamp",
    "sgdp",
    "scale_by_adamp",
    "scale_by_sgdp",
    "ScaleByAdamPState",
    "ScaleBySGDPState",
    "Axes",
    "AxesSpec",
    "ChannelAxes",
    "default_channel_axes",
    "flax_channel_axes",
    "equinox_channel_axes",
]
