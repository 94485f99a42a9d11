"""Deprecated location: use :mod:`tqla_torch.compression.shapes` (or :mod:`tqla_torch.nn.weights`).

Kept for one release; re-exports the public names.
"""

from tqla_torch.compression.shapes import (
    WeightView,
    conv1d_class,
    is_conv1d,
    layer_shape,
    resolve_shape,
    weight_view,
)

__all__ = ["WeightView", "conv1d_class", "is_conv1d", "layer_shape", "resolve_shape", "weight_view"]
