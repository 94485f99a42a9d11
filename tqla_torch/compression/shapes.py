"""Factor shapes of a config, resolved against a module's matrix.

Compression configs (:class:`tqla_torch.compression.CompressionConfig`) state factor shapes
either in full (``shape``) or by the small factor alone (``b_shape``); :func:`resolve_shape`
turns either into a :class:`tqla.KroneckerShape` for one module's matrix, and
:func:`layer_shape` transposes a shape (``(A ⊗ B)ᵀ = Aᵀ ⊗ Bᵀ``).  How each module kind stores
its weight lives in :mod:`tqla_torch.nn.weights` (re-exported here).
"""

from __future__ import annotations

from tqla_torch.nn.weights import (
    WeightView,
    conv1d_class,
    is_conv1d,
    layer_shape,
    resolve_shape,
    settings_shape,
    weight_view,
)

__all__ = [
    "WeightView",
    "conv1d_class",
    "is_conv1d",
    "layer_shape",
    "resolve_shape",
    "settings_shape",
    "weight_view",
]
