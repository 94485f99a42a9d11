"""Tiny GPT-2 models shared by the torch-adapter tests."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tiny_gpt2(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> GPT2LMHeadModel:
    """A 4-block, 32-wide GPT-2 with a 96-token vocabulary, seeded, in eval mode."""
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=96,
        n_embd=32,
        n_layer=4,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(cfg).to(dtype).eval()
