"""AdamP and SGDP (Heo et al., ICLR 2021) as Keras 3 optimizers.

    import keras
    from adamp_tf import AdamP

    model.compile(optimizer=AdamP(learning_rate=1e-3, weight_decay=1e-2), loss=...)

Importing this package imports Keras and registers both optimizers as Keras
serializable objects (``"adamp_tf>AdamP"``, ``"adamp_tf>SGDP"``), so a ``.keras`` file
saved with them loads after ``import adamp_tf``. The output-channel axes each variable is
projected over are chosen in ``build()``; see :mod:`adamp_tf.axes`.
"""

from .axes import ChannelAxesOverride, default_channel_axes, resolve_channel_axes
from .optimizers import SGDP, AdamP

__all__ = [
    "AdamP",
    "SGDP",
    "ChannelAxesOverride",
    "default_channel_axes",
    "resolve_channel_axes",
]
