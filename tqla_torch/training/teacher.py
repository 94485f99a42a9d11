"""The demo's teacher: trained from scratch on the built-in corpus, reused, or loaded.

:func:`train_teacher` is a plain next-token cross-entropy loop with the optimiser and
schedule of :mod:`tqla_torch.training.optim` (shared with distillation);
:func:`build_demo_teacher` trains one for a :class:`~tqla_torch.training.demo.DemoConfig`,
reuses the one an earlier run saved with the same settings, or loads ``config.model``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tqla_torch._atomic import atomic_write_json
from tqla_torch.training.optim import adamw_warmup_cosine, clip_gradients

__all__ = ["build_demo_teacher", "train_teacher"]

_TEACHER_FILE = "demo_teacher.json"

logger = logging.getLogger("tqla_torch.training.demo")


def train_teacher(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str | torch.device = "cpu",
    warmup_steps: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train a causal LM from scratch with AdamW and a warm-up + cosine schedule.

    A plain next-token cross-entropy loop (no teacher), deterministic for a given ``seed``:
    each epoch visits the blocks in a fresh seeded permutation.

    Parameters
    ----------
    model : torch.nn.Module
        Hugging Face causal LM, trained in place.
    blocks : torch.Tensor
        ``[n_blocks, block_size]`` token ids.
    steps : int
        Optimizer steps.
    batch_size : int
        Blocks per step.
    lr : float
        Peak learning rate.
    seed : int, default 0
        Seed of the block order.
    device : str or torch.device, default "cpu"
        Where to train.
    warmup_steps : int, optional
        Linear warm-up; default 5% of ``steps`` (at least 1).
    progress : bool, default True
        Show a tqdm bar.

    Returns
    -------
    list of dict
        ``{"step", "loss", "lr", "tokens"}`` for every step.

    Examples
    --------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8,
    ...                                vocab_size=50, bos_token_id=0, eos_token_id=0))
    >>> hist = train_teacher(m, torch.randint(0, 50, (8, 8)), steps=2, batch_size=4, lr=1e-3,
    ...                      progress=False)
    >>> len(hist)
    2
    """
    from tqdm.auto import tqdm

    if blocks.ndim != 2 or blocks.shape[0] < 1:
        raise ValueError(f"blocks must be [n_blocks >= 1, block_size], got {tuple(blocks.shape)}")
    n_blocks, block_size = int(blocks.shape[0]), int(blocks.shape[1])
    batch_size = min(batch_size, n_blocks)
    warmup = max(1, steps // 20) if warmup_steps is None else max(0, warmup_steps)
    device = torch.device(device)
    model.to(device)
    model.train()
    optimizer, scheduler = adamw_warmup_cosine(
        model.parameters(),
        lr=lr,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        warmup=warmup,
        total=steps,
        floor=0.1,
    )
    epoch, position = 0, 0
    order = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    history: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="teacher", disable=not progress, dynamic_ncols=True)
    try:
        for step in range(steps):
            if position + batch_size > n_blocks:
                epoch, position = epoch + 1, 0
                order = np.random.default_rng([seed, epoch]).permutation(n_blocks)
            idx = torch.from_numpy(order[position : position + batch_size].astype(np.int64))
            position += batch_size
            batch = blocks[idx].to(device)
            out = model(batch, labels=batch, use_cache=False)
            out.loss.backward()
            clip_gradients(list(model.parameters()), 1.0)
            current_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(out.loss.detach())
            history.append(
                {
                    "step": step + 1,
                    "loss": loss,
                    "lr": current_lr,
                    "tokens": (step + 1) * batch_size * block_size,
                }
            )
            bar.update(1)
            if (step + 1) % 10 == 0 or step + 1 == steps:
                bar.set_postfix(loss=f"{loss:.3f}")
                logger.info(
                    "teacher step %d/%d loss %.4f lr %.3g", step + 1, steps, loss, current_lr
                )
    finally:
        bar.close()
    model.eval()
    return history


def _teacher_fingerprint(config: Any) -> dict[str, Any]:
    keys = (
        "vocab_size",
        "n_embd",
        "n_layer",
        "n_head",
        "block_size",
        "teacher_steps",
        "teacher_batch_size",
        "teacher_lr",
        "seed",
        "device",
    )
    return {k: getattr(config, k) for k in keys}


def _facts(model: nn.Module, tokenizer: Any, block_size: int, source: str, **kw: Any) -> dict:
    facts = {"model": model, "tokenizer": tokenizer, "block_size": block_size, "source": source}
    return {**facts, "history": [], "train_s": 0.0, "reused": False, **kw}


def build_demo_teacher(config: Any, out: Path, device: torch.device) -> dict[str, Any]:
    """Train (or reuse, or load) the teacher. Returns model, tokenizer and teacher facts."""
    from tqla_torch.training.data import builtin_tokenizer

    if config.model is not None:
        return _load_teacher(config)
    tokenizer = builtin_tokenizer(vocab_size=config.vocab_size)
    teacher_dir = out / "teacher"
    reused = _reuse_teacher(config, teacher_dir, tokenizer)
    if reused is not None:
        return reused
    model, history, train_s = _train_new_teacher(config, tokenizer, device)
    if config.save_models:
        teacher_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(os.fspath(teacher_dir))
        tokenizer.save_pretrained(os.fspath(teacher_dir))
        atomic_write_json(
            teacher_dir / _TEACHER_FILE,
            {"fingerprint": _teacher_fingerprint(config), "history": history, "train_s": train_s},
        )
    source = "trained on the built-in corpus"
    return _facts(model, tokenizer, config.block_size, source, history=history, train_s=train_s)


def _load_teacher(config: Any) -> dict[str, Any]:
    """``config.model``: a local GPT-2 folder, with its tokenizer (or ``config.tokenizer``)."""
    from tqla_torch._lm import max_positions
    from tqla_torch._models import load_model, load_tokenizer

    model = load_model(config.model, device="cpu").model
    tokenizer = load_tokenizer(config.tokenizer, config.model)
    block_size = min(config.block_size, max_positions(model) or config.block_size)
    return _facts(model, tokenizer, block_size, config.model)


def _reuse_teacher(config: Any, teacher_dir: Path, tokenizer: Any) -> dict[str, Any] | None:
    """The teacher an earlier run saved in ``teacher_dir`` with the same settings, or None."""
    from transformers import GPT2LMHeadModel

    marker = teacher_dir / _TEACHER_FILE
    if not marker.is_file():
        return None
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("fingerprint") != _teacher_fingerprint(config):
        return None
    logger.info("reusing the teacher trained earlier in %s", teacher_dir)
    model = GPT2LMHeadModel.from_pretrained(os.fspath(teacher_dir), local_files_only=True)
    model.eval()
    return _facts(
        model,
        tokenizer,
        config.block_size,
        "trained (reused from an earlier run)",
        history=saved.get("history", []),
        train_s=float(saved.get("train_s", 0.0)),
        reused=True,
    )


def _train_new_teacher(
    config: Any, tokenizer: Any, device: torch.device
) -> tuple[nn.Module, list[dict[str, float]], float]:
    """A GPT-2 of the config's sizes trained on the built-in corpus (on the CPU after)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.training.data import PackedDataset

    block_size = config.block_size
    gpt_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(gpt_config)
    blocks = PackedDataset.from_source("builtin", tokenizer, block_size, split="train").blocks
    logger.info(
        "training the teacher: %s parameters, %d steps of %d x %d tokens",
        f"{sum(p.numel() for p in model.parameters()):,}",
        config.teacher_steps,
        config.teacher_batch_size,
        block_size,
    )
    start = time.perf_counter()
    history = train_teacher(
        model,
        blocks,
        steps=config.teacher_steps,
        batch_size=config.teacher_batch_size,
        lr=config.teacher_lr,
        seed=config.seed,
        device=device,
        progress=config.progress,
    )
    train_s = time.perf_counter() - start
    model.to("cpu")
    return model, history, train_s
