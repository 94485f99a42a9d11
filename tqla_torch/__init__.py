"""tqla_torch: compress PyTorch transformers with tqla's factorizations.

The public names below are imported on first use (PEP 562), so ``import tqla_torch`` stays
cheap and imports neither torch nor transformers by itself.

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
    "KroneckerLinear": "tqla_torch.layers",
    "KroneckerEmbedding": "tqla_torch.layers",
    "LowRankLinear": "tqla_torch.layers",
    "LowRankEmbedding": "tqla_torch.layers",
    "TiedEmbeddingHead": "tqla_torch.layers",
    # configs and presets
    "CompressionConfig": "tqla_torch.plan",
    "presets": "tqla_torch.plan",
    # applying them
    "compress": "tqla_torch.compress",
    "inspect": "tqla_torch.compress",
    "CompressionReport": "tqla_torch.compress",
    "count_parameters": "tqla_torch.compress",
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
