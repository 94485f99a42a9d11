"""Deprecated location of the compressed layers: use :mod:`tqla_torch.nn`.

Kept for one release; re-exports the public names.
"""

from tqla_torch.nn import (  # noqa: F401
    LAYER_IMPLEMENTATIONS,
    REGISTRY,
    CompressedModule,
    KroneckerEmbedding,
    KroneckerLinear,
    LowRankEmbedding,
    LowRankLinear,
    TiedEmbeddingHead,
    forward_costs,
    low_rank_for_budget,
)

#: Deprecated: the registry of compressed layer types (``tqla_torch.nn.REGISTRY``).
COMPRESSED_TYPES = REGISTRY
#: Deprecated name of ``tqla_torch.nn.LAYER_IMPLEMENTATIONS`` (layer forward strategies).
IMPLEMENTATIONS = LAYER_IMPLEMENTATIONS

__all__ = [
    "KroneckerEmbedding",
    "KroneckerLinear",
    "LowRankEmbedding",
    "LowRankLinear",
    "TiedEmbeddingHead",
    "forward_costs",
    "low_rank_for_budget",
]
