"""Distillation checkpoints: where they live, how they are found, written and validated.

A checkpoint is one ``checkpoint-<global step>.pt`` file (``torch.save`` of plain tensors and
containers, read back with ``weights_only=True``) written atomically; the newest
``keep_checkpoints`` are kept.  :class:`Checkpointer` does the bookkeeping for one run.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tqla_torch._atomic import atomic_torch_save, remove_stale_temporaries
from tqla_torch.training.optim import rng_state

__all__ = ["Checkpointer", "latest_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "tqla-distill-checkpoint"
CHECKPOINT_VERSION = 1
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{8,})\.pt$")


def checkpoint_path(directory: Path, global_step: int) -> Path:
    return directory / f"checkpoint-{global_step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """The checkpoint files of ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    """The most recent complete checkpoint in ``checkpoint_dir``, or None.

    Parameters
    ----------
    checkpoint_dir : str or os.PathLike
        A ``DistillConfig.checkpoint_dir``.

    Returns
    -------
    pathlib.Path or None
    """
    found = list_checkpoints(Path(checkpoint_dir))
    return found[-1] if found else None


class Checkpointer:
    """Finds, validates and writes the checkpoints of one distillation run.

    Parameters
    ----------
    directory : path or None
        ``DistillConfig.checkpoint_dir`` (None: no checkpoints).
    ctx : DistContext
        World size and rank; only rank 0 touches the files, every rank's RNG state is saved.
    fingerprint : list of dict
        The schedule (stage names, budgets, compressions); a checkpoint of another
        schedule is refused.
    config : DistillConfig
    device : torch.device
    """

    def __init__(
        self, directory: Any, ctx: Any, fingerprint: list[dict], config: Any, device: torch.device
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        self.ctx = ctx
        self.fingerprint = fingerprint
        self.config = config
        self.device = device

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def due(self, step: int, total: int) -> bool:
        """Whether a checkpoint is written after stage step ``step`` of ``total``."""
        every = self.config.checkpoint_every
        return self.enabled and (step == total or bool(every and step % every == 0))

    def locate(self) -> Path | None:
        """The checkpoint to resume from (rank 0 looks, every rank gets its answer)."""
        found: Path | None = None
        if self.directory is not None and self.ctx.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.directory)
            found = latest_checkpoint(self.directory)
        if self.ctx.enabled:
            import torch.distributed as dist

            shared = [None if found is None else os.fspath(found)]
            dist.broadcast_object_list(shared, src=0)
            found = None if shared[0] is None else Path(shared[0])
        return found

    def load(self, path: Path) -> dict[str, Any]:
        """The checkpoint at ``path``, checked against this run's schedule and world size."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is not a tqla distillation checkpoint (version 1)")
        if state["stages"] != self.fingerprint:
            raise ValueError(
                f"checkpoint {path} was written for the schedule {state['stages']}, this "
                f"run has {self.fingerprint}; use the same stages and budgets or a new "
                f"checkpoint_dir"
            )
        if state["world_size"] != self.ctx.world_size:
            raise ValueError(
                f"checkpoint {path} was written by {state['world_size']} processes, this "
                f"run has {self.ctx.world_size}"
            )
        return state

    def save(
        self,
        run: Any,
        position: tuple[int, int, bool],
        student: nn.Module,
        optimizer: Any,
        scheduler: Any,
        order: Any,
    ) -> None:
        """Write a checkpoint after stage step ``position = (stage, step, stage_done)``."""
        rng = rng_state(self.device)
        if self.ctx.enabled:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        if not self.ctx.is_main:
            return
        assert self.directory is not None
        stage_index, stage_step, done = position
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "stages": self.fingerprint,
            "world_size": self.ctx.world_size,
            "stage": stage_index,
            "stage_step": stage_step,
            "stage_done": done,
            "global_step": run.global_step,
            "tokens_seen": run.tokens_seen,
            "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_all,
            "data": order.state_dict(),
            "history": run.history,
            "config": self.config.to_dict(),
        }
        path = checkpoint_path(self.directory, run.global_step)
        atomic_torch_save(state, path)
        for old in list_checkpoints(self.directory)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        logger.debug("wrote checkpoint %s", path)
