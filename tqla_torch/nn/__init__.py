"""Compressed layers: drop-in replacements for ``nn.Linear``, GPT-2 ``Conv1D`` and ``nn.Embedding``.

Every layer derives from :class:`CompressedModule`, which registers it by class name
(:data:`REGISTRY`) and gives it ``from_module(module, settings)``, ``spec``/``from_spec``,
``n_params`` and ``approximation_error``.  One file per layer family:

* :mod:`~tqla_torch.nn.kronecker` — :class:`KroneckerLinear` (a permuted Kronecker sum),
* :mod:`~tqla_torch.nn.lowrank` — :class:`LowRankLinear` and :class:`LowRankEmbedding`
  (truncated SVD),
* :mod:`~tqla_torch.nn.embedding` — :class:`KroneckerEmbedding` and the
  :class:`TiedEmbeddingHead` that computes logits through a compressed embedding,
* :mod:`~tqla_torch.nn.tt` — :class:`TTLinear` and :class:`TTConv2d` (tensor trains).
* :mod:`~tqla_torch.nn.spectral` — :class:`SpectralKroneckerLinear` (fitted in the spectral
  norm) and :class:`HeteroKroneckerLinear` (Kronecker terms of several factor shapes).

This package imports only torch and :mod:`tqla`; the compression configs build on it.
"""

from tqla_torch.nn.base import LAYER_IMPLEMENTATIONS, REGISTRY, CompressedModule, LayerPlan
from tqla_torch.nn.embedding import KroneckerEmbedding, TiedEmbeddingHead
from tqla_torch.nn.kronecker import KroneckerLinear, forward_costs
from tqla_torch.nn.lowrank import LowRankEmbedding, LowRankLinear, low_rank_for_budget
from tqla_torch.nn.spectral import HeteroKroneckerLinear, SpectralKroneckerLinear
from tqla_torch.nn.tt import TTConv2d, TTLinear

__all__ = [
    "LAYER_IMPLEMENTATIONS",
    "REGISTRY",
    "CompressedModule",
    "HeteroKroneckerLinear",
    "KroneckerEmbedding",
    "KroneckerLinear",
    "LayerPlan",
    "LowRankEmbedding",
    "LowRankLinear",
    "TTConv2d",
    "TTLinear",
    "SpectralKroneckerLinear",
    "TiedEmbeddingHead",
    "forward_costs",
    "low_rank_for_budget",
]
