"""Deprecated location of the compression configs: use :mod:`tqla_torch.compression`.

Kept for one release; re-exports the public names.
"""

from tqla_torch.compression.config import METHODS, CompressionConfig, ModuleSettings
from tqla_torch.compression.presets import (
    kron_gpt2,
    kron_gpt2_steps,
    presets,
    svd_gpt2,
    svd_gpt2_steps,
    tq_gpt2,
    tq_gpt2_steps,
)

__all__ = [
    "METHODS",
    "CompressionConfig",
    "ModuleSettings",
    "kron_gpt2",
    "kron_gpt2_steps",
    "presets",
    "svd_gpt2",
    "svd_gpt2_steps",
    "tq_gpt2",
    "tq_gpt2_steps",
]
