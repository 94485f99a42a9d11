"""Optimiser, schedule and seeding helpers shared by distillation and the demo's teacher.

* :func:`seed_everything` — Python's, NumPy's (legacy) and torch's global RNGs,
* :func:`rng_state` / :func:`set_rng_state` — those states, for checkpoints,
* :func:`param_groups` — AdamW groups: weight decay on matrices only,
* :class:`WarmupCosine` — linear warm-up, then cosine decay to a floor,
* :func:`adamw_warmup_cosine` — the optimiser and scheduler both loops use.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "WarmupCosine",
    "adamw_warmup_cosine",
    "param_groups",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the legacy RNG
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch, and CUDA on a CUDA ``device``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - checkpointed
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restored from a checkpoint
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def param_groups(params: Iterable[Any], weight_decay: float) -> list[dict]:
    """AdamW parameter groups: ``weight_decay`` on matrices (ndim >= 2), none on the rest.

    ``params`` holds parameters or ``(name, parameter)`` pairs; empty groups are left out.
    """
    plain = [p[1] if isinstance(p, tuple) else p for p in params]
    decay = [p for p in plain if p.ndim >= 2]
    no_decay = [p for p in plain if p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@dataclass
class WarmupCosine:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to ``floor``.

    Examples
    --------
    >>> s = WarmupCosine(warmup=2, total=10, floor=0.1)
    >>> [round(s(k), 3) for k in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.1]
    """

    warmup: int
    total: int
    floor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_warmup_cosine(
    params: Iterable[Any],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup: int,
    total: int,
    floor: float,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`param_groups` with a :class:`WarmupCosine` schedule."""
    optimizer = torch.optim.AdamW(param_groups(params, weight_decay), lr=lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, floor))
    return optimizer, scheduler


def clip_gradients(params: list[nn.Parameter], max_norm: float | None) -> float | None:
    """Clip the gradient norm to ``max_norm`` (None: no clipping); the norm before clipping."""
    if max_norm is None:
        return None
    return float(nn.utils.clip_grad_norm_(params, max_norm))
