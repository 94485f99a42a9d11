"""Helpers for the distillation tests, and a small command-line distillation run.

Imported by ``tests/test_distill.py`` (tiny models, a low-rank "compression" callable) and run as
a script by its slow tests: killed with SIGKILL and restarted, or launched under ``torchrun``.

    python tests/_distill_run.py --checkpoint-dir DIR --out weights.pt [--sleep 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from tqla_torch.data import PackedDataset, builtin_tokenizer
from tqla_torch.distill import DistillConfig, Stage, distill_stages

VOCAB = 512
BLOCK = 32


def tiny_config(vocab_size: int = VOCAB, dropout: float = 0.1, **overrides) -> GPT2Config:
    """A 2-layer, 32-wide GPT-2 config."""
    values = dict(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        vocab_size=vocab_size,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    values.update(overrides)
    return GPT2Config(**values)


def tiny_pair(seed: int = 0, dropout: float = 0.1) -> tuple[nn.Module, nn.Module]:
    """(student, teacher): two differently initialised tiny GPT-2 models."""
    torch.manual_seed(seed)
    teacher = GPT2LMHeadModel(tiny_config(dropout=dropout))
    student = GPT2LMHeadModel(tiny_config(dropout=dropout))
    return student, teacher


def tiny_data(n_blocks: int | None = 64) -> PackedDataset:
    """Blocks of the built-in validation corpus under a 512-token built-in tokenizer."""
    tok = builtin_tokenizer(vocab_size=VOCAB)
    data = PackedDataset.from_source("builtin", tok, block_size=BLOCK, split="validation")
    return data if n_blocks is None else PackedDataset(data.blocks[:n_blocks])


class LowRank(nn.Module):
    """``y = x @ U @ V + b``, replacing a GPT-2 ``Conv1D`` (weights stored in x out)."""

    def __init__(self, u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.u = nn.Parameter(u)
        self.v = nn.Parameter(v)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.u) @ self.v + self.bias


def low_rank_mlp(student: nn.Module, rank: int = 4) -> None:
    """Replace every block's ``mlp.c_fc`` by a rank-``rank`` factorisation of its weight.

    Adds a little noise from torch's global RNG, so that resuming must restore RNG state.
    """
    for block in student.transformer.h:
        w = block.mlp.c_fc.weight.detach()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        left = u[:, :rank] * s[:rank].sqrt()
        right = s[:rank].sqrt()[:, None] * vh[:rank]
        left = left + 1e-3 * torch.randn_like(left)
        block.mlp.c_fc = LowRank(left.clone(), right.clone(), block.mlp.c_fc.bias.detach().clone())


def two_stages(dense_steps: int = 4, low_rank_steps: int = 6) -> list[Stage]:
    return [
        Stage("dense", steps=dense_steps),
        Stage("low-rank", compress=low_rank_mlp, steps=low_rank_steps),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per student forward")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1)
    args = parser.parse_args()

    torch.set_num_threads(1)
    student, teacher = tiny_pair(dropout=args.dropout)
    if args.sleep:
        student.register_forward_pre_hook(lambda module, inputs: time.sleep(args.sleep))
    config = DistillConfig(
        lr=3e-3,
        warmup_steps=2,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=2,
        log_every=1,
        device="cpu",
        progress=False,
        seed=3,
    )
    result = distill_stages(student, teacher, tiny_data(), two_stages(), config)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun sets RANK; only rank 0 writes
        torch.save(student.state_dict(), args.out)
        summary = {"step": result.step, "resumed_from": result.resumed_from}
        Path(args.out).with_suffix(".json").write_text(json.dumps(summary))


# ---- elastic resume (tests/test_distill_elastic.py) ------------------------------------------

ELASTIC_STEPS = 6


class Stop(Exception):
    """Raised by a forward hook to interrupt a run (after a checkpoint was written)."""


def elastic_run(checkpoint_dir: str, batch_size: int, global_batch: int, stop_after: int | None):
    """A tiny dropout-free distillation of ``ELASTIC_STEPS`` steps at a fixed global batch,
    interrupted at the start of step ``stop_after + 1`` (None: run to the end).

    Returns the student's state dict, or None when interrupted."""
    torch.set_num_threads(1)
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    accum = global_batch // (world * batch_size)
    student, teacher = tiny_pair(dropout=0.0)
    if stop_after is not None:
        calls = [0]

        def hook(module, inputs):
            calls[0] += 1
            if calls[0] > stop_after * accum:
                raise Stop

        student.register_forward_pre_hook(hook)
    config = DistillConfig(
        lr=3e-3,
        warmup_steps=2,
        batch_size=batch_size,
        global_batch_size=global_batch,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=1,
        log_every=2,
        device="cpu",
        progress=False,
        seed=3,
    )
    try:
        distill_stages(student, teacher, tiny_data(), [Stage("a", steps=ELASTIC_STEPS)], config)
    except Stop:
        return None
    return student.state_dict()


def elastic_worker(rank, world, init_file, checkpoint_dir, out, batch_size, global_batch, stop):
    """``torch.multiprocessing.spawn`` target: :func:`elastic_run` on a gloo process group;
    rank 0 saves the final weights to ``out``."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        weights = elastic_run(checkpoint_dir, batch_size, global_batch, stop)
        if rank == 0 and weights is not None:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
