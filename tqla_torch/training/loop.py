"""One distillation run, step by step: set up, resume, then train each stage.

:func:`run_stages` is what :func:`tqla_torch.training.distill_stages` calls once its
arguments are checked.  The run's mutable state (history, step and token counters) lives in
one :class:`RunState`; resuming (:func:`resume`), checkpoints
(:class:`~tqla_torch.training.checkpoint.Checkpointer`) and a stage's steps
(:func:`train_stage`, :func:`accumulate`, :func:`log_window`) are separate units.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tqla_torch._lm import lm_forward
from tqla_torch.training.checkpoint import Checkpointer
from tqla_torch.training.data import BlockOrder
from tqla_torch.training.losses import distillation_loss, hidden_state_mse
from tqla_torch.training.optim import (
    adamw_warmup_cosine,
    clip_gradients,
    seed_everything,
    set_rng_state,
)

__all__ = ["DistContext", "RunState", "grad_accum_for", "run_stages", "setup"]

logger = logging.getLogger("tqla_torch.training.distill")


# --------------------------------------------------------------------------------------------
# Device and process group
# --------------------------------------------------------------------------------------------
@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    created_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device(config: Any) -> torch.device:
    requested = config.device
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={config.device!r} but CUDA is not available")
    if config.mixed_precision == "bf16" and device.type != "cuda":
        raise ValueError(
            "mixed_precision='bf16' uses CUDA autocast and needs a CUDA device, got device "
            f"{device}"
        )
    return device


def setup(config: Any) -> tuple[DistContext, torch.device]:
    """The device and the process group (created here under ``torchrun`` if needed)."""
    import torch.distributed as dist

    device = _device(config)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = DistContext()
    if dist.is_available() and dist.is_initialized():
        ctx.world_size, ctx.rank = dist.get_world_size(), dist.get_rank()
    elif env_world > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        ctx = DistContext(dist.get_world_size(), dist.get_rank(), created_group=True)
    if ctx.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ctx.rank)))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return ctx, device


def grad_accum_for(config: Any, world_size: int) -> int:
    """Micro-batches per optimizer step on ``world_size`` ranks: ``config.grad_accum``, or
    ``global_batch_size / (world_size * batch_size)`` when ``global_batch_size`` is set.

    Raises
    ------
    ValueError
        If ``global_batch_size`` is not a multiple of ``world_size * batch_size``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> grad_accum_for(SimpleNamespace(global_batch_size=8, batch_size=2, grad_accum=1), 2)
    2
    """
    total = getattr(config, "global_batch_size", None)
    if total is None:
        return int(config.grad_accum)
    per_micro = world_size * config.batch_size
    if total % per_micro:
        raise ValueError(
            f"global_batch_size ({total}) must be a multiple of world_size * batch_size "
            f"({world_size} * {config.batch_size} = {per_micro}); change batch_size or the "
            "number of processes"
        )
    return total // per_micro


# --------------------------------------------------------------------------------------------
# Run state and resumption
# --------------------------------------------------------------------------------------------
@dataclass
class RunState:
    """Everything a run accumulates across stages (and checkpoints)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0
    tokens_seen: int = 0
    resumed_from: Path | None = None
    start_stage: int = 0
    start_step: int = 0
    # A checkpoint taken inside a stage: its optimizer, scheduler and RNG states are loaded
    # once that stage's optimizer exists.
    pending: dict[str, Any] | None = None


def resume(
    checkpointer: Checkpointer,
    stages: list[Any],
    student: nn.Module,
    order: BlockOrder,
    ctx: DistContext,
    device: torch.device,
) -> RunState:
    """A fresh :class:`RunState`, or the one of the newest checkpoint with the student
    re-compressed up to its stage and all states loaded."""
    run = RunState()
    path = checkpointer.locate()
    if path is None:
        return run
    state = checkpointer.load(path)
    for i in range(state["stage"] + 1):
        stages[i].apply(student)
    student.to(device)
    student.load_state_dict(state["model"])
    order.load_state_dict(state["data"])
    run.resumed_from = path
    run.history = list(state["history"])
    run.global_step, run.tokens_seen = int(state["global_step"]), int(state["tokens_seen"])
    if state["stage_done"]:
        run.start_stage, run.start_step = state["stage"] + 1, 0
        restore_rng(state, ctx, checkpointer.config.seed, run.global_step, device)
    else:
        run.start_stage, run.start_step = state["stage"], int(state["stage_step"])
        run.pending = state
    if ctx.is_main:
        logger.info(
            "resuming from %s (stage %r, step %d)",
            path,
            stages[state["stage"]].name,
            state["stage_step"],
        )
    return run


def restore_rng(
    state: dict[str, Any], ctx: DistContext, seed: int, global_step: int, device: torch.device
) -> None:
    """This rank's RNG states from the checkpoint, or, when it was written by another number
    of processes (an elastic resume), fresh ones seeded from the seed, rank and step."""
    if int(state["world_size"]) == ctx.world_size:
        set_rng_state(state["rng"][ctx.rank], device)
    else:
        seed_everything(seed + ctx.rank + 1_000_003 * global_step)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass
class _Setting:
    """What every stage of one run shares."""

    teacher: nn.Module
    blocks: torch.Tensor
    config: Any
    ctx: DistContext
    device: torch.device
    order: BlockOrder
    checkpointer: Checkpointer
    tokens_per_step: int
    grad_accum: int


def run_stages(
    student: nn.Module,
    teacher: nn.Module,
    blocks: torch.Tensor,
    stages: list[Any],
    budgets: list[int],
    config: Any,
    ctx: DistContext,
    device: torch.device,
) -> RunState:
    """Freeze the teacher, seed, resume if a checkpoint exists, then train every stage."""
    block_size = int(blocks.shape[1])
    accum = grad_accum_for(config, ctx.world_size)
    global_batch = ctx.world_size * config.batch_size * accum
    tokens_per_step = global_batch * block_size
    fingerprint = [
        {"name": s.name, "steps": n, "compress": s.descriptor()} for s, n in zip(stages, budgets)
    ]
    teacher.eval()
    teacher.requires_grad_(False)
    teacher.to(device)
    student.to(device)
    seed_everything(config.seed + ctx.rank)
    order = BlockOrder(
        n_blocks=int(blocks.shape[0]),
        batch_size=config.batch_size,
        seed=config.seed,
        world_size=ctx.world_size,
        rank=ctx.rank,
        grad_accum=accum,
    )
    checkpointer = Checkpointer(
        config.checkpoint_dir, ctx, fingerprint, config, device, global_batch=global_batch
    )
    run = resume(checkpointer, stages, student, order, ctx, device)
    setting = _Setting(
        teacher, blocks, config, ctx, device, order, checkpointer, tokens_per_step, accum
    )
    for stage_index in range(run.start_stage, len(stages)):
        train_stage(student, stages[stage_index], stage_index, budgets[stage_index], run, setting)
    return run


def train_stage(
    student: nn.Module, stage: Any, stage_index: int, total: int, run: RunState, s: _Setting
) -> None:
    """Compress (unless resuming inside this stage), then train ``total`` optimizer steps."""
    from tqdm.auto import tqdm

    config, ctx = s.config, s.ctx
    pending = run.pending if stage_index == run.start_stage else None
    if pending is None:
        stage.apply(student)
        student.to(s.device)
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"stage {stage.name!r}: the student has no trainable parameters")
    params = [p for _, p in named]
    model: nn.Module = student
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            student, device_ids=[s.device.index] if s.device.type == "cuda" else None
        )
    optimizer, scheduler = adamw_warmup_cosine(
        named,
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.999),
        warmup=config.warmup_steps,
        total=total,
        floor=config.min_lr_ratio,
    )
    step = 0
    window = _Window.start(run, s.device)
    if pending is not None:
        optimizer.load_state_dict(pending["optimizer"])
        scheduler.load_state_dict(pending["scheduler"])
        restore_rng(pending, ctx, config.seed, run.global_step, s.device)
        step = run.start_step
        window.restore(pending, ctx, config.batch_size)
        run.pending = None
    student.train()
    bar = tqdm(
        total=total,
        initial=step,
        desc=stage.name,
        disable=not (config.progress and ctx.is_main),
        dynamic_ncols=True,
    )
    try:
        while step < total:
            accumulate(model, s, window)
            grad_norm = clip_gradients(params, config.max_grad_norm)
            if grad_norm is not None and not math.isfinite(grad_norm):
                raise FloatingPointError(
                    f"stage {stage.name!r} step {step + 1}: the gradient norm is "
                    f"{grad_norm}; the weights were not updated (lower lr, check the "
                    "data and models for NaN/inf)"
                )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            run.global_step += 1
            run.tokens_seen += s.tokens_per_step
            bar.update(1)
            if step % config.log_every == 0 or step == total:
                where = (stage, stage_index, step, total)
                record = log_window(window, run, s, where, lr, grad_norm)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
            if s.checkpointer.due(step, total):
                position = (stage_index, step, step == total)
                s.checkpointer.save(run, position, student, optimizer, scheduler, s.order, window)
    finally:
        bar.close()
    del model, optimizer, scheduler
    if ctx.enabled:
        gc.collect()  # release this stage's DDP wrapper (and its hooks) before the next one


# --------------------------------------------------------------------------------------------
# One optimizer step's micro-batches, and the logging window
# --------------------------------------------------------------------------------------------
@dataclass
class _Window:
    """Loss terms (loss, ce, kl, hidden_mse) times blocks, summed since the last log record,
    and the number of blocks (the fifth entry): the record is the block-weighted mean, which
    does not depend on how the blocks were split over ranks and micro-batches."""

    metrics: torch.Tensor
    t0: float
    tokens0: int

    @classmethod
    def start(cls, run: RunState, device: torch.device) -> _Window:
        metrics = torch.zeros(5, dtype=torch.float64, device=device)
        return cls(metrics, time.perf_counter(), run.tokens_seen)

    def state_dict(self) -> dict[str, Any]:
        """The sums (saved in checkpoints)."""
        return {"metrics": self.metrics.tolist()}

    def load_state_dict(self, state: dict[str, Any] | None, batch_size: int = 1) -> None:
        """Continue the window an interruption cut (None: a checkpoint without one; a window
        of an older checkpoint holds per-micro-batch means and a count, scaled by
        ``batch_size``)."""
        if state is None:
            return
        values = [float(x) for x in state["metrics"]]
        if "micro" in state:  # older checkpoints: sums of means over `micro` micro-batches
            values = [x * batch_size for x in values] + [float(state["micro"]) * batch_size]
        self.metrics += torch.tensor(values, dtype=self.metrics.dtype, device=self.metrics.device)

    def restore(self, pending: dict[str, Any], ctx: DistContext, batch_size: int) -> None:
        """This rank's window of a checkpoint; after an elastic resume rank 0 takes the sum of
        all saved windows (the record all-reduces them anyway)."""
        windows = pending.get("log_window") or [None]
        if int(pending["world_size"]) == ctx.world_size:
            self.load_state_dict(windows[ctx.rank], batch_size)
        elif ctx.is_main:
            for saved in windows:
                self.load_state_dict(saved, batch_size)


def accumulate(model: nn.Module, s: _Setting, window: _Window) -> None:
    """Forward and backward ``s.grad_accum`` micro-batches, adding their terms to ``window``."""
    config, ctx, device = s.config, s.ctx, s.device
    want_hidden = config.hidden_mse > 0
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.mixed_precision == "bf16"
        else contextlib.nullcontext()
    )
    accum = s.grad_accum
    for micro in range(accum):
        batch = s.blocks[s.order.next_indices()].to(device, non_blocking=True)
        # next-token labels; the last position has none (full logits avoid a copy)
        labels = torch.full_like(batch, -100)
        labels[:, :-1] = batch[:, 1:]
        sync = (
            model.no_sync()
            if ctx.enabled and micro < accum - 1
            else contextlib.nullcontext()
        )
        # The teacher runs first, once per micro-batch, in inference mode (no autograd graph,
        # no saved activations), so its intermediates are gone before the student's forward.
        with torch.inference_mode(), amp:
            t_logits, t_hidden = lm_forward(s.teacher, batch, output_hidden_states=want_hidden)
        with sync:
            with amp:
                s_logits, s_hidden = lm_forward(model, batch, output_hidden_states=want_hidden)
            terms = distillation_loss(s_logits, t_logits, labels, config.alpha, config.temperature)
            loss = terms.loss
            if want_hidden:
                assert s_hidden is not None and t_hidden is not None
                h_mse = hidden_state_mse(s_hidden[1:], t_hidden[1:])
                loss = loss + config.hidden_mse * h_mse
            else:
                h_mse = torch.zeros((), device=device)
            (loss / accum).backward()
        terms_now = [loss.detach(), terms.ce.detach(), terms.kl.detach(), h_mse.detach()]
        n_blocks = batch.shape[0]
        window.metrics[:4] += torch.stack(terms_now).double() * n_blocks
        window.metrics[4] += n_blocks


def log_window(
    window: _Window,
    run: RunState,
    s: _Setting,
    where: tuple[Any, int, int, int],
    lr: float,
    grad_norm: float | None,
) -> dict[str, Any]:
    """Append the window's averages to the history (rank 0 logs them) and reset it."""
    stage, stage_index, step, total = where
    if s.ctx.enabled:
        import torch.distributed as dist

        dist.all_reduce(window.metrics)
    sums = window.metrics.tolist()
    avg = [x / sums[4] for x in sums[:4]]
    elapsed = time.perf_counter() - window.t0
    record = {
        "stage": stage.name,
        "stage_index": stage_index,
        "step": run.global_step,
        "stage_step": step,
        "loss": avg[0],
        "ce": avg[1],
        "kl": avg[2],
        "hidden_mse": avg[3],
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": run.tokens_seen,
        "tokens_per_s": (run.tokens_seen - window.tokens0) / max(elapsed, 1e-9),
    }
    run.history.append(record)
    if s.ctx.is_main:
        logger.info(
            "stage %s step %d/%d loss %.4f ce %.4f kl %.4f lr %.3g tokens/s %.0f",
            stage.name,
            step,
            total,
            record["loss"],
            record["ce"],
            record["kl"],
            lr,
            record["tokens_per_s"],
        )
    window.metrics.zero_()
    window.t0, window.tokens0 = time.perf_counter(), run.tokens_seen
    return record
