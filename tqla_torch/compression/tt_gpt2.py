"""Tensor-train plans for GPT-2: modes with few multiply-adds, and the demo's TT stages.

A TT-matrix saves parameters much faster than work.  For ``k`` tokens the left-first product
costs ``k·Σ_t |G_t|·m_1⋯m_{t−1}·n_{t+1}⋯n_d`` multiply-adds (|G_t| the size of core t), the
right-first one the mirror image; every factor is at least 1, so a train never needs fewer
than ``parameters × tokens`` multiply-adds, and with every mode ≥ 2 at least twice that
(four times for the middle cores of longer trains).  The balanced modes of
:func:`tqla_torch.nn.tt.tt_modes` (1024 → 8·8·16) are the worst case: at half the
parameters of a 1024×256 matrix they cost ~31× the dense product.  :func:`low_mac_tt_modes`
picks, among all factorisations with modes ≥ 2, the one whose uniform rank within a parameter
budget needs the fewest multiply-adds (2·2·256 × 64·2·2 for that matrix: 1.98× dense at 0.49×
the parameters).

:func:`tt_gpt2_steps` is the demo's tensor-train row: the embedding stages of
:func:`~tqla_torch.compression.presets.svd_gpt2_steps`, and for the MLPs of the same blocks
:func:`~tqla_torch.compression.auto.auto_tt` ranks (LWIQ importance, κ rule) at the parameter
count the low-rank plan leaves, so the row is comparable with the other three.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from tqla_torch.compression.config import CompressionConfig

__all__ = ["low_mac_tt_modes", "tt_gpt2_steps"]


def _factorizations(n: int, d: int) -> list[tuple[int, ...]]:
    """Ordered factorisations of n into d modes, each ≥ 2."""
    if d == 1:
        return [(n,)] if n >= 2 else []
    return [
        (f, *rest)
        for f in range(2, n + 1)
        if n % f == 0
        for rest in _factorizations(n // f, d - 1)
    ]


def low_mac_tt_modes(
    M: int, N: int, n_params: int, *, d: int = 3, step_frac: float = 0.05
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The d-core modes (all ≥ 2) of an M×N TT-matrix with the fewest multiply-adds per token
    at the largest uniform rank whose parameters stay within ``n_params``.

    Shapes whose next rank adds at most ``step_frac``·``n_params`` parameters come first, so
    that a rank allocation can meet a budget closely (a shape whose bonds are all capped at a
    few ranks is cheap but leaves nothing to allocate); when none does (small matrices), the
    shape with the finest rank step.  Ties go to more parameters, then to the first
    factorisation found.

    Parameters
    ----------
    M, N : int
        Rows (output features) and columns (input features).
    n_params : int
        Parameter budget of the cores (no bias).
    d : int
        Number of cores.
    step_frac : float
        Largest parameter step of one rank, as a fraction of ``n_params``.

    Returns
    -------
    (row_modes, col_modes)

    Raises
    ------
    ValueError
        If no factorisation into d modes ≥ 2 exists, or none fits ``n_params`` at rank 1.

    Examples
    --------
    >>> low_mac_tt_modes(1024, 256, 1024 * 256 // 2)
    ((2, 2, 256), (64, 2, 2))
    """
    from tqla.tt import rank_bounds
    from tqla_torch.nn._tt_forward import _costs, _params

    best: tuple | None = None
    for rm in _factorizations(M, d):
        for cm in _factorizations(N, d):
            bounds = rank_bounds([m * n for m, n in zip(rm, cm)])
            lo, hi = 0, max(bounds)
            while lo < hi:  # the largest uniform rank within the budget (params grow with r)
                mid = (lo + hi + 1) // 2
                if _params(rm, cm, (1, *(min(mid, b) for b in bounds), 1)) <= n_params:
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0 or lo >= max(bounds):
                continue  # nothing fits, or every bond at its bound (no rank left to allocate)
            ranks = (1, *(min(lo, b) for b in bounds), 1)
            step = _params(rm, cm, (1, *(min(lo + 1, b) for b in bounds), 1)) - _params(
                rm, cm, ranks
            )
            coarse = step > step_frac * n_params  # too coarse for an allocation to meet a budget
            cost = min(_costs(rm, cm, ranks, 1))
            key = (coarse, step if coarse else 0, cost, -_params(rm, cm, ranks))
            if best is None or key < best[0]:
                best = (key, rm, cm)
    if best is None:
        raise ValueError(
            f"n_params ({n_params}) admits no {d}-core TT-matrix of a {M}×{N} matrix with "
            f"modes ≥ 2 below its full ranks (at rank 1 every shape needs more, or {M}×{N} has "
            f"too few factors)"
        )
    return best[1], best[2]


def _dense_mlp(model: nn.Module, pattern: str) -> dict[str, nn.Module]:
    found = {n: m for n, m in model.named_modules() if n and re.fullmatch(pattern, n)}
    if not found:
        raise ValueError(f"model has no GPT-2 MLP module matching {pattern!r}")
    return found


def tt_gpt2_steps(
    model: nn.Module,
    *,
    data: Iterable[Any],
    blocks: str | Sequence[int] = "odd",
    rank: int = 4,
    tt_cores: int = 3,
    allocation: str = "lwiq",
    tie_lm_head: bool = True,
    implementation: str = "factorized",
    n_classes: int | None = 64,
    seed: int = 0,
) -> list[CompressionConfig]:
    """Three stages (embedding, MLPs, embedding again) with tensor-train MLPs.

    The embedding stages are those of
    :func:`~tqla_torch.compression.presets.svd_gpt2_steps`.  The MLP stage compresses the
    same modules as the other presets (``c_fc`` and ``c_proj`` of ``blocks``) by ``TTLinear``
    with the modes of :func:`low_mac_tt_modes` and ranks from
    :func:`~tqla_torch.compression.auto.auto_tt` (``allocation``, scored on ``data``) so that
    the model has as many parameters after the stage as after the low-rank plan's MLP stage.

    Parameters
    ----------
    model : torch.nn.Module
        The trained GPT-2 (``transformers.GPT2LMHeadModel``).
    data : re-iterable of token-id batches
        Calibration data for LWIQ (see :func:`tqla_torch.lwiq`).
    blocks, rank, tie_lm_head, implementation
        As in :func:`~tqla_torch.compression.presets.svd_gpt2_steps` (``rank`` sets the
        parameter budget through the Kronecker-rank-``rank`` plan).
    tt_cores : int
        Cores per matrix.
    allocation : {"lwiq", "uniform"}
        Rank allocation across the matrices.
    n_classes, seed
        Passed to :func:`~tqla_torch.compression.importance.lwiq`.

    Returns
    -------
    list of CompressionConfig
    """
    from tqla_torch._models import count_parameters
    from tqla_torch.compression.auto import auto_tt
    from tqla_torch.compression.presets import _mlp_regex, _svd_ranks, svd_gpt2_steps

    svd = svd_gpt2_steps(
        model, blocks=blocks, rank=rank, tie_lm_head=tie_lm_head, implementation=implementation
    )
    r = _svd_ranks(model, rank)
    pattern = _mlp_regex(blocks)
    saved, modes = 0, {}
    for name, module in _dense_mlp(model, pattern).items():
        kind = name.rsplit(".", 1)[1]  # c_fc or c_proj
        out_f, in_f = _out_in(module)
        budget = r[kind] * (out_f + in_f)
        saved += out_f * in_f - budget
        if kind not in modes:
            rm, cm = low_mac_tt_modes(out_f, in_f, budget, d=tt_cores)
            modes[kind] = [list(rm), list(cm)]
    mlp = auto_tt(
        model,
        budget=count_parameters(model) - saved,
        data=data,
        target_modules=pattern,
        allocation=allocation,
        n_classes=n_classes,
        seed=seed,
        implementation=implementation,
        overrides={rf"mlp\.{kind}": {"tt_modes": m} for kind, m in modes.items()},
    )
    return [svd[0], mlp, svd[2]]


def _out_in(module: nn.Module) -> tuple[int, int]:
    """(out, in) features of an nn.Linear or a GPT-2 Conv1D (weight stored in × out)."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return int(w.shape[0]), int(w.shape[1])
    return int(w.shape[1]), int(w.shape[0])

