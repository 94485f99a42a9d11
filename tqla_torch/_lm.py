"""Small helpers shared by distillation and evaluation: how to call a causal LM and read its limits.

A "causal LM" here is any :class:`torch.nn.Module` called as ``model(input_ids, **kwargs)`` that
returns logits ``[batch, seq, vocab]`` or an object with ``.logits`` (every Hugging Face
``*ForCausalLM``). Models with a Hugging Face ``config`` also get ``use_cache=False`` and may be
asked for ``hidden_states``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["lm_forward", "max_positions", "vocab_size"]


def _config(model: nn.Module) -> Any:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "config", None)


def max_positions(model: nn.Module) -> int | None:
    """The model's context length (``n_positions`` or ``max_position_embeddings``), if known."""
    config = _config(model)
    if config is None:
        return None
    value = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return None if value is None else int(value)


def vocab_size(model: nn.Module) -> int | None:
    """The model's ``config.vocab_size``, if it has one."""
    value = getattr(_config(model), "vocab_size", None)
    return None if value is None else int(value)


def lm_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, Sequence[torch.Tensor] | None]:
    """Run a causal LM and return ``(logits, hidden_states or None)``.

    Raises
    ------
    ValueError
        If ``output_hidden_states`` is requested and the model does not return hidden states.
    """
    kwargs: dict[str, Any] = {}
    if _config(model) is not None:
        kwargs["use_cache"] = False
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if output_hidden_states:
        kwargs["output_hidden_states"] = True
    out = model(input_ids, **kwargs)
    if isinstance(out, torch.Tensor):
        logits, hidden = out, None
    else:
        logits = out.logits if hasattr(out, "logits") else out[0]
        hidden = getattr(out, "hidden_states", None)
    if output_hidden_states and hidden is None:
        raise ValueError(
            "hidden states were requested (hidden_mse > 0) but the model returned none when "
            "called with output_hidden_states=True"
        )
    return logits, hidden
