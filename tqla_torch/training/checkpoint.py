"""Distillation checkpoints: where they live, how they are found, written and validated.

A checkpoint is one ``checkpoint-<global step>.pt`` file (``torch.save`` of plain tensors and
containers, read back with ``weights_only=True``) written atomically; the newest
``keep_checkpoints`` are kept.  :class:`Checkpointer` does the bookkeeping for one run.

Resuming is strict: :func:`newest_readable` walks the checkpoints from the newest down and
takes the first that loads (each one skipped — truncated, empty, foreign — is named in a
warning; none readable is one clear error), and :func:`changed_settings` lists the settings that
differ from the checkpoint's, which a resumed run refuses (all but where and how often
checkpoints go, the device and the progress bar), so the settings recorded for a run held for
all of it.

Examples
--------
>>> changed_settings({"lr": 3e-4, "alpha": 0.5, "device": "cuda"},
...                  {"lr": 1e-4, "alpha": 0.5, "device": "cpu"})
['lr: 0.0003 in the checkpoint, 0.0001 now']
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tqla_torch._atomic import atomic_torch_save, remove_stale_temporaries
from tqla_torch.training.optim import rng_state

__all__ = [
    "RESUMABLE_CHANGES",
    "Checkpointer",
    "changed_settings",
    "latest_checkpoint",
    "newest_readable",
]

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


#: DistillConfig fields a resumed run may change: they decide where and how often checkpoints
#: are written, where the run computes and what it shows, not what it computes.
#: ``batch_size``, ``grad_accum`` and ``global_batch_size`` decide how a step's global batch is
#: split over processes and micro-batches: they may change as long as the global batch (checked
#: separately) stays the same.
RESUMABLE_CHANGES = frozenset(
    {
        "checkpoint_dir",
        "checkpoint_every",
        "keep_checkpoints",
        "device",
        "progress",
        "batch_size",
        "grad_accum",
        "global_batch_size",
    }
)


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings (other than :data:`RESUMABLE_CHANGES`) that differ, as readable lines.

    Parameters
    ----------
    saved : dict
        ``DistillConfig.to_dict()`` stored in the checkpoint.
    current : dict
        The resumed run's ``DistillConfig.to_dict()``.

    Returns
    -------
    list of str
        ``"name: old in the checkpoint, new now"`` for every differing setting, sorted.
    """
    lines = []
    for name in sorted(set(saved) | set(current)):
        if name in RESUMABLE_CHANGES:
            continue
        old, new = saved.get(name, "<unset>"), current.get(name, "<unset>")
        if old != new:
            lines.append(f"{name}: {old!r} in the checkpoint, {new!r} now")
    return lines


def newest_readable(
    paths: Iterable[Path], load: Callable[[Path], dict[str, Any]], is_valid: Callable[[Any], bool]
) -> tuple[Path, dict[str, Any]] | tuple[None, None]:
    """The newest checkpoint that loads and is valid, skipping broken ones with a warning.

    Parameters
    ----------
    paths : iterable of pathlib.Path
        The checkpoints, oldest first.
    load : callable
        Reads one checkpoint (``torch.load(..., weights_only=True)``).
    is_valid : callable
        Whether a loaded object is a checkpoint this version resumes from.

    Returns
    -------
    (pathlib.Path, dict) or (None, None)
        None when there is no checkpoint at all.

    Raises
    ------
    ValueError
        If there are checkpoints but none can be read (one line naming them).
    """
    paths = list(paths)
    broken: list[str] = []
    for path in reversed(paths):
        try:
            if path.stat().st_size == 0:
                raise ValueError("the file is empty")
            state = load(path)
            if not is_valid(state):
                raise ValueError("not a tqla distillation checkpoint of this version")
        except Exception as err:  # torch.load raises many types for damaged files
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            broken.append(f"{path.name} ({reason[:120]})")
            logger.warning(
                "checkpoint %s cannot be read (%s); trying the previous one", path, reason[:120]
            )
            continue
        if broken:
            logger.warning("resuming from %s instead of the newer, unreadable %s", path, broken)
        return path, state
    if broken:
        directory = os.fspath(paths[0].parent)
        raise ValueError(
            f"no readable checkpoint in {directory}: {'; '.join(broken)}; delete them to start "
            f"the run over, or restore a good copy"
        )
    return None, None


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
    global_batch : int, optional
        Blocks per optimizer step over all ranks (default: ``world_size * batch_size *
        grad_accum``); a checkpoint of another global batch is refused.
    """

    def __init__(
        self,
        directory: Any,
        ctx: Any,
        fingerprint: list[dict],
        config: Any,
        device: torch.device,
        *,
        global_batch: int | None = None,
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        self.ctx = ctx
        self.fingerprint = fingerprint
        self.config = config
        self.device = device
        if global_batch is None:
            global_batch = ctx.world_size * config.batch_size * config.grad_accum
        self.global_batch = int(global_batch)
        self._read: dict[str, Any] | None = None  # the checkpoint locate() read (rank 0)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def due(self, step: int, total: int) -> bool:
        """Whether a checkpoint is written after stage step ``step`` of ``total``."""
        every = self.config.checkpoint_every
        return self.enabled and (step == total or bool(every and step % every == 0))

    def locate(self) -> Path | None:
        """The checkpoint to resume from (rank 0 looks, every rank gets its answer): the
        newest that can be read; unreadable (truncated, empty) ones are skipped with a
        warning, and when none can be read the run stops with one clear error."""
        found: Path | None = None
        if self.directory is not None and self.ctx.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.directory)
            found, self._read = newest_readable(
                list_checkpoints(self.directory),
                lambda p: torch.load(p, map_location="cpu", weights_only=True),
                lambda st: isinstance(st, dict) and st.get("format") == CHECKPOINT_FORMAT,
            )
        if self.ctx.enabled:
            import torch.distributed as dist

            shared = [None if found is None else os.fspath(found)]
            dist.broadcast_object_list(shared, src=0)
            found = None if shared[0] is None else Path(shared[0])
        return found

    def load(self, path: Path) -> dict[str, Any]:
        """The checkpoint at ``path``, checked against this run's schedule and world size."""
        state, self._read = self._read, None
        if state is None:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is not a tqla distillation checkpoint (version 1)")
        changed = changed_settings(state.get("config") or {}, self.config.to_dict())
        if changed:  # a resumed run keeps its settings, so what is recorded held throughout
            raise ValueError(
                f"cannot resume from {path} with changed settings ({'; '.join(changed)}); "
                f"rerun with the checkpoint's settings, or use a new checkpoint_dir / --output"
            )
        if state["stages"] != self.fingerprint:
            raise ValueError(
                f"checkpoint {path} was written for the schedule {state['stages']}, this "
                f"run has {self.fingerprint}; use the same stages and budgets or a new "
                f"checkpoint_dir"
            )
        saved = state.get("config") or {}
        saved_batch = state.get("global_batch")
        if saved_batch is None:  # checkpoints before elastic resume
            saved_batch = (
                int(state["world_size"]) * saved.get("batch_size", 0) * saved.get("grad_accum", 1)
            )
        if int(saved_batch) != self.global_batch:
            raise ValueError(
                f"checkpoint {path} was written with a global batch of {saved_batch} blocks per "
                f"optimizer step ({state['world_size']} processes), this run has "
                f"{self.global_batch} ({self.ctx.world_size} processes * batch_size "
                f"{self.config.batch_size} * accumulation "
                f"{self.global_batch // (self.ctx.world_size * self.config.batch_size)}); keep "
                f"the global batch: set global_batch_size={saved_batch} (the accumulation is "
                "then derived) or choose batch_size / grad_accum to match"
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
        window: Any = None,
    ) -> None:
        """Write a checkpoint after stage step ``position = (stage, step, stage_done)``;
        ``window`` (the open logging window) is restored on resume, so the records and
        ``final_loss`` do not depend on where a run was interrupted."""
        rng = rng_state(self.device)
        open_window = None if window is None else window.state_dict()
        if self.ctx.enabled:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
            windows: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(windows, open_window)
        else:
            rng_all, windows = [rng], [open_window]
        if not self.ctx.is_main:
            return
        assert self.directory is not None
        stage_index, stage_step, done = position
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "stages": self.fingerprint,
            "world_size": self.ctx.world_size,
            "global_batch": self.global_batch,
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
            "log_window": windows,
        }
        path = checkpoint_path(self.directory, run.global_step)
        atomic_torch_save(state, path)
        for old in list_checkpoints(self.directory)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        logger.debug("wrote checkpoint %s", path)
