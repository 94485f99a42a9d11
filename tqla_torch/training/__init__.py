"""Recovering accuracy after compression: distillation, data, optimiser helpers, the demo.

* :mod:`~tqla_torch.training.distill` — the public API (:func:`distill`,
  :func:`distill_stages`, :class:`DistillConfig`, :class:`Stage`, the losses),
* :mod:`~tqla_torch.training.loop` — one stage's training loop (resume, checkpointer,
  stage steps),
* :mod:`~tqla_torch.training.optim` — seeding, parameter groups and the learning-rate
  schedule shared by distillation and the demo's teacher,
* :mod:`~tqla_torch.training.data` — corpora, tokenisation and packed token blocks
  (file readers in :mod:`~tqla_torch.training.readers`),
* :mod:`~tqla_torch.training.losses` — the fused, chunked distillation loss,
* :mod:`~tqla_torch.training.evaluate` — perplexity (two protocols) and LAMBADA,
* :mod:`~tqla_torch.training.demo` — the built-in end-to-end demo.

Builds on :mod:`tqla_torch.compression`; the CLI builds on this package.
"""

from tqla_torch.training.checkpoint import latest_checkpoint
from tqla_torch.training.data import (
    EOS_TOKEN,
    BlockOrder,
    PackedDataset,
    builtin_corpus,
    builtin_documents,
    builtin_tokenizer,
    load_texts,
    pack_tokens,
    tokenize_texts,
)
from tqla_torch.training.distill import (
    DistillConfig,
    DistillResult,
    Stage,
    distill,
    distill_stages,
    published_recipe,
)
from tqla_torch.training.losses import DistillLoss, distillation_loss, hidden_state_mse

__all__ = [
    "EOS_TOKEN",
    "BlockOrder",
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "PackedDataset",
    "Stage",
    "builtin_corpus",
    "builtin_documents",
    "builtin_tokenizer",
    "distill",
    "distill_stages",
    "distillation_loss",
    "hidden_state_mse",
    "latest_checkpoint",
    "load_texts",
    "pack_tokens",
    "published_recipe",
    "tokenize_texts",
]
