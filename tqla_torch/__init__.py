"""tqla_torch: compress PyTorch transformers with tqla's factorizations.

The public names below are imported on first use (PEP 562), so ``import tqla_torch`` stays
cheap and imports neither torch nor transformers by itself.

Layout (each package imports only the ones before it):
:mod:`tqla_torch.nn` (compressed layers) → :mod:`tqla_torch.compression` (configs, presets,
inspect/compress) → :mod:`tqla_torch.training` (distillation, data, optimiser helpers, the
demo) → :mod:`tqla_torch.cli` (one module per subcommand); :mod:`tqla_torch.io` saves and
loads compressed models.  The old module paths (``tqla_torch.layers``, ``tqla_torch.plan``,
``tqla_torch.distill``, ``tqla_torch.data``, ``tqla_torch.demo``) re-export their names for
one release.

>>> import tqla_torch
>>> cfg = tqla_torch.presets.tq_gpt2()            # doctest: +SKIP
>>> print(tqla_torch.inspect(model, cfg))          # doctest: +SKIP
>>> tqla_torch.compress(model, cfg)                # doctest: +SKIP
>>> tqla_torch.save_pretrained(model, "gpt2-tq")   # doctest: +SKIP
>>> model = tqla_torch.from_pretrained("gpt2-tq")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # layers
    "CompressedModule": "tqla_torch.nn",
    "KroneckerLinear": "tqla_torch.nn",
    "KroneckerEmbedding": "tqla_torch.nn",
    "LowRankLinear": "tqla_torch.nn",
    "LowRankEmbedding": "tqla_torch.nn",
    "TiedEmbeddingHead": "tqla_torch.nn",
    "TTLinear": "tqla_torch.nn",
    "TTConv2d": "tqla_torch.nn",
    # configs and presets
    "CompressionConfig": "tqla_torch.compression",
    "presets": "tqla_torch.compression",
    # applying them
    "compress": "tqla_torch.compression",
    "compress_folder": "tqla_torch.compression",
    "inspect": "tqla_torch.compression",
    "CompressionError": "tqla_torch.compression",
    "CompressionReport": "tqla_torch.compression",
    "count_parameters": "tqla_torch.compression",
    # layer importance and budget-aware ranks
    "lwiq": "tqla_torch.compression.importance",
    "plan_for_budget": "tqla_torch.compression",
    # saving and loading
    "save_pretrained": "tqla_torch.io",
    "from_pretrained": "tqla_torch.io",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tqla_torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
