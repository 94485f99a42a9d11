"""The automatic plan as the demo's three distillation stages (:func:`auto_gpt2_steps`).

:func:`~tqla_torch.compression.plan_for_budget` chooses method, shape and rank of every
targeted module at once; a staged distillation (embedding → MLPs → embedding again in the
fixed presets) applies a plan in steps.  :func:`split_plan` cuts one plan into stages that
each carry their share of the plan (and of its activation-aware moments), and
:func:`auto_gpt2_steps` builds the demo's automatic row: one plan over the token table (tied
LM head: two-sided error, docs/auto.md) and every Linear/Conv1D of the blocks, applied in the
schedule asked for.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from tqla_torch.compression.budget_plan import _check_budget, plan_for_budget
from tqla_torch.compression.config import CompressionConfig

__all__ = ["SCHEDULES", "auto_gpt2_steps", "schedule_stages", "split_plan"]

SCHEDULES = ("front", "split", "permuted-embedding")
"""Stage schedules of :func:`auto_gpt2_steps`."""

_GPT2_TARGETS = r"transformer\.(wte|h\..*)"


def split_plan(config: CompressionConfig, groups: Sequence[Sequence[str]]) -> list[Any]:
    """Cut a :func:`plan_for_budget` config into stages, one per group of module names.

    Parameters
    ----------
    config : CompressionConfig
        Made by :func:`plan_for_budget` (with ``config.auto_plan``).
    groups : sequence of sequences of str
        Module names per stage; together exactly the plan's compressed modules, each once.
        An empty group is a stage that only trains (``None``).

    Returns
    -------
    list of CompressionConfig or None
        One config per group, each with its modules' overrides and an ``auto_plan`` that
        holds only their rows and moments (so ``compress`` fits them activation-aware); the
        first stage's also lists the modules the plan leaves dense.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from tqla_torch.compression import plan_for_budget
    >>> _ = torch.manual_seed(0)
    >>> gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8,
    ...                                  vocab_size=32)).eval()
    >>> cfg = plan_for_budget(gpt, 0.6, [torch.randint(0, 32, (2, 8))], methods=["svd"],
    ...                       allow_dense=False)
    >>> stages = split_plan(cfg, [cfg.target_modules[:1], cfg.target_modules[1:], []])
    >>> [s is None for s in stages]
    [False, False, True]
    """
    plan = getattr(config, "auto_plan", None)
    if plan is None:
        raise ValueError("config: split_plan needs a config made by plan_for_budget")
    names = list(config.target_modules)
    flat = [n for g in groups for n in g]
    if sorted(flat) != sorted(names):
        raise ValueError(
            f"groups must hold each planned module exactly once: planned {sorted(names)}, "
            f"got {sorted(flat)}"
        )
    out: list[Any] = []
    dense = {r.name for r in plan.rows if r.method == "dense"}
    for group in groups:
        if not group:
            out.append(None)
            continue
        keep = set(group)
        rows_keep = keep | dense  # the modules left dense are listed in the first stage
        dense = set()
        values = config.to_dict()
        values["target_modules"] = [n for n in names if n in keep]
        values["overrides"] = {
            re.escape(n): config.overrides[re.escape(n)] for n in values["target_modules"]
        }
        stage = CompressionConfig(**values)
        stage.auto_plan = dataclasses.replace(
            plan,
            rows=[r for r in plan.rows if r.name in rows_keep],
            moments={k: v for k, v in plan.moments.items() if k in keep},
        )
        out.append(stage)
    return out


def _kron_budget(model: nn.Module) -> int:
    """Parameters of the tq_gpt2 plan on ``model`` (its Kronecker twin, same count)."""
    from tqla_torch.compression.apply import compress, count_parameters
    from tqla_torch.compression.presets import kron_gpt2_steps

    twin = copy.deepcopy(model)
    for cfg in kron_gpt2_steps():
        compress(twin, cfg)
    return count_parameters(twin)


def _block_index(name: str) -> int:
    m = re.search(r"\.h\.(\d+)\.", name)
    return -1 if m is None else int(m.group(1))


def auto_gpt2_steps(
    model: nn.Module,
    data: Iterable[Any],
    *,
    budget: int | float | None = None,
    target_modules: str | list[str] | None = None,
    schedule: str = "front",
    **plan_kwargs: Any,
) -> list[Any]:
    """The automatic plan of a GPT-2 as three distillation stages.

    Parameters
    ----------
    model : torch.nn.Module
        A GPT-2 (not modified).
    data : iterable of batches
        Calibration data (see :func:`plan_for_budget`).
    budget : int or float, optional
        Whole-model parameters after all stages; default: the :func:`tq_gpt2` plan's count
        on ``model`` (its Kronecker twin has the same count and is measured).
    target_modules : optional
        Candidates (default: the token table ``transformer.wte`` and every Linear/Conv1D of
        the blocks; with ``schedule="permuted-embedding"`` the blocks only).
    schedule : {"front", "split", "permuted-embedding"}, default "front"
        ``"front"``: one plan over the table (its tied LM head counted in its two-sided
        error) and the blocks, all applied in stage 1; stages 2 and 3 train only
        (``None``).  ``"split"``: the same plan, the table and the first half of the blocks
        in stage 1, the rest in stage 2, stage 3 trains only.  ``"permuted-embedding"``:
        the earlier recipe — tq_gpt2's two embedding steps (stages 1 and 3) and the plan of
        the blocks at the remaining budget (stage 2).
    **plan_kwargs
        Passed to :func:`plan_for_budget` (``methods``, ``sensitivity``, ``damp``, ...).

    Returns
    -------
    list of CompressionConfig or None
        Three stages (``None``: a stage that only trains).

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> _ = torch.manual_seed(0)
    >>> gpt = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=16,
    ...                                  vocab_size=64)).eval()
    >>> steps = auto_gpt2_steps(gpt, [torch.randint(0, 64, (2, 16))], b_shapes=[(2, 2)])
    >>> [s is None for s in steps]
    [False, True, True]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    from tqla_torch.compression.apply import compress, count_parameters
    from tqla_torch.compression.presets import tq_gpt2_steps

    data = list(data)
    if budget is None:
        budget = _kron_budget(model)
    if isinstance(budget, (float, np.floating)) and not isinstance(budget, bool):
        budget = _check_budget(budget, count_parameters(model))
    if schedule == "permuted-embedding":
        emb1, _, emb2 = tq_gpt2_steps()
        base = copy.deepcopy(model)
        compress(base, emb1)
        compress(base, emb2)
        targets = r"transformer\.h\..*" if target_modules is None else target_modules
        plan = plan_for_budget(base, budget, data, target_modules=targets, **plan_kwargs)
        return [emb1, plan, emb2]
    plan_kwargs.setdefault("embeddings", True)
    targets = _GPT2_TARGETS if target_modules is None else target_modules
    plan = plan_for_budget(model, budget, data, target_modules=targets, **plan_kwargs)
    return schedule_stages(plan, schedule)


def schedule_stages(plan: CompressionConfig, schedule: str = "front") -> list[Any]:
    """A GPT-2 plan of :func:`plan_for_budget` as three stages (``schedule`` "front" or
    "split", see :func:`auto_gpt2_steps`)."""
    if schedule not in ("front", "split"):
        raise ValueError(f"schedule must be 'front' or 'split', got {schedule!r}")
    names = list(plan.target_modules)
    if schedule == "front":
        return split_plan(plan, [names, [], []])
    blocks = sorted({_block_index(n) for n in names if _block_index(n) >= 0})
    first = set(blocks[: (len(blocks) + 1) // 2])
    early = [n for n in names if _block_index(n) < 0 or _block_index(n) in first]
    late = [n for n in names if n not in set(early)]
    return split_plan(plan, [early, late, []])
