"""Resuming a distillation run: which checkpoint, and whether the settings still hold.

* :func:`newest_readable` walks the checkpoints from the newest down and returns the first one
  that loads and is a tqla distillation checkpoint; every checkpoint it skips (truncated,
  empty, foreign) is named in a warning, and when none is usable it raises one clear error.
* :func:`changed_settings` lists the settings of a run that differ from those its checkpoint
  was written with. A resumed run refuses them all (except where checkpoints go, how often,
  the device and the progress bar), so the settings recorded for a run held for all of it.

Examples
--------
>>> changed_settings({"lr": 3e-4, "alpha": 0.5, "device": "cuda"},
...                  {"lr": 1e-4, "alpha": 0.5, "device": "cpu"})
['lr: 0.0003 in the checkpoint, 0.0001 now']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["RESUMABLE_CHANGES", "changed_settings", "newest_readable"]

logger = logging.getLogger("tqla_torch.distill")

#: DistillConfig fields a resumed run may change: they decide where and how often checkpoints
#: are written, where the run computes and what it shows, not what it computes.
RESUMABLE_CHANGES = frozenset(
    {"checkpoint_dir", "checkpoint_every", "keep_checkpoints", "device", "progress"}
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
