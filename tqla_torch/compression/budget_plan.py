"""An automatic per-layer plan for a parameter budget, fitted to calibration data.

:func:`plan_for_budget` measures each target module's input second moment C and
sensitivity on calibration data (:mod:`~tqla_torch.compression.calibrate`), computes an
error curve for every candidate (method × factor shape, every rank at once from one
decomposition: the tail of the whitened spectrum, :mod:`tqla.whiten`), and allocates the
budget across modules by equal marginal gain: a greedy walk along each curve's lower convex
hull, always taking the step with the largest decrease of sensitivity × error per
parameter that still fits.  docs/auto.md has the method and measurements.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tqla_torch.compression.calibrate import CalibrationStats, collect_statistics
from tqla_torch.compression.config import CompressionConfig
from tqla_torch.compression.curves import (
    DEFAULT_METHODS,
    PERMUTED_B_SHAPES,
    Candidate,
    default_b_shapes,
    layer_curves,
    tied_table_curve,
)
from tqla_torch.nn.weights import is_conv1d, weight_view

__all__ = [  # Candidate, default_b_shapes, layer_curves, PERMUTED_B_SHAPES: from .curves
    "PERMUTED_B_SHAPES",
    "AutoPlan",
    "Candidate",
    "PlanRow",
    "auto_gpt2_steps",
    "default_b_shapes",
    "layer_curves",
    "plan_for_budget",
]

AUTO_METHODS = ("svd", "kron", "permuted_kron")
SENSITIVITIES = ("fisher", "lwiq", "uniform")


@dataclass
class PlanRow:
    """The plan of one module (what :func:`tqla_torch.inspect` shows)."""

    name: str
    method: str
    shape: list | None
    rank: int
    params_before: int
    params_after: int
    predicted_error: float  # relative whitened error √(e²/tr(W·C·Wᵀ))
    sensitivity: float


@dataclass
class AutoPlan:
    """Everything :func:`plan_for_budget` decided and measured (attached to the config it
    returns as ``config.auto_plan``; not part of its JSON)."""

    budget: int
    params_before: int
    params_after: int
    rows: list[PlanRow]
    moments: dict[str, torch.Tensor] = field(repr=False)
    damp: float
    seconds: dict[str, float]
    n_candidates: int

    def table(self) -> str:
        head = (
            f"{'module':<34} {'method':<13} {'shape':<16} {'rank':>5} {'params':>9} "
            f"{'pred. err':>9}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            shp = ""
            if r.shape is not None:
                (p, q), (s, t) = r.shape
                shp = f"{p}×{q} ⊗ {s}×{t}"
            lines.append(
                f"{r.name:<34} {r.method:<13} {shp:<16} {r.rank:>5} {r.params_after:>9,} "
                f"{r.predicted_error:>9.4f}"
            )
        lines.append(
            f"model: {self.params_before:,} → {self.params_after:,} parameters "
            f"(budget {self.budget:,})"
        )
        return "\n".join(lines)


def _hull(cands: list[Candidate], weight: float) -> list[Candidate]:
    """Lower convex hull of (params, weight·error²), from the smallest candidate on,
    keeping only strictly decreasing errors."""
    pts = sorted(cands, key=lambda c: (c.params, c.error2, c.method, c.rank))
    start = pts[0]
    best_at: list[Candidate] = [start]
    for c in pts[1:]:
        if c.error2 < best_at[-1].error2 and c.params > best_at[-1].params:
            best_at.append(c)
    hull: list[Candidate] = []
    for c in best_at:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the segment a→c: drop it
            above = (b.error2 - a.error2) * (c.params - a.params)
            if above >= (c.error2 - a.error2) * (b.params - a.params):
                hull.pop()
            else:
                break
        hull.append(c)
    return hull


def allocate(
    curves: Mapping[str, list[Candidate]], weights: Mapping[str, float], budget: int
) -> dict[str, Candidate]:
    """Greedy equal-marginal-gain allocation of ``budget`` parameters (for the modules in
    ``curves``): start every module at its smallest candidate, then repeatedly take the
    hull step with the largest weighted error decrease per parameter that still fits.

    Raises ValueError if even the smallest candidates exceed ``budget``."""
    names = sorted(curves)
    hulls = {n: _hull(curves[n], weights[n]) for n in names}
    chosen = {n: 0 for n in names}
    used = sum(hulls[n][0].params for n in names)
    if used > budget:
        raise ValueError(f"smallest plan {used}")
    heap: list[tuple[float, int, str]] = []

    def push(i: int, n: str) -> None:
        h = hulls[n]
        k = chosen[n]
        if k + 1 < len(h):
            gain = weights[n] * (h[k].error2 - h[k + 1].error2) / (h[k + 1].params - h[k].params)
            if gain > 0:
                heapq.heappush(heap, (-gain, i, n))

    for i, n in enumerate(names):
        push(i, n)
    while heap:
        _, i, n = heapq.heappop(heap)
        h, k = hulls[n], chosen[n]
        step = h[k + 1].params - h[k].params
        if used + step > budget:
            continue  # this module's next step does not fit; others may
        used += step
        chosen[n] = k + 1
        push(i, n)
    return {n: hulls[n][chosen[n]] for n in names}


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------
def _linear_targets(
    model: nn.Module, target_modules: Any, exclude: Any, embeddings: bool = False
) -> dict[str, nn.Module]:
    probe = CompressionConfig(
        target_modules=target_modules if target_modules is not None else r".*",
        exclude_modules=exclude,
        method="svd",
        rank=1,
    )
    out: dict[str, nn.Module] = {}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, m in model.named_modules():
        if not name or not probe.matches(name):
            continue
        if isinstance(m, nn.Linear) or is_conv1d(m):
            if isinstance(m, nn.Linear) and id(m.weight) in tables:
                continue  # an LM head tied to an embedding: it follows the embedding
            out[name] = m
        elif embeddings and type(m) is nn.Embedding:
            out[name] = m
    if not out:
        kinds = "Linear, Conv1D or Embedding" if embeddings else "Linear or Conv1D"
        raise ValueError(f"target_modules {target_modules!r} matched no {kinds} module of the model")
    return out


def _check_budget(budget: Any, total: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"budget must be an int (parameters of the whole model after compression) or a "
            f"float fraction in (0, 1], got {type(budget).__name__}"
        )
    if isinstance(budget, (float, np.floating)):
        if not (0.0 < float(budget) <= 1.0) or not math.isfinite(budget):
            raise ValueError(f"budget as a fraction must be in (0, 1], got {budget!r}")
        return int(math.floor(float(budget) * total))
    budget = int(budget)
    if budget > total:
        raise ValueError(
            f"budget {budget:,} is above the model's {total:,} parameters; give at most "
            f"{total:,} (or a fraction in (0, 1])"
        )
    if budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")
    return budget


def plan_for_budget(
    model: nn.Module,
    budget: int | float,
    data: Iterable[Any],
    *,
    target_modules: str | list[str] | None = None,
    exclude_modules: str | list[str] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    b_shapes: Sequence[tuple[int, int]] | None = None,
    sensitivity: str | Mapping[str, float] = "fisher",
    damp: float = 0.01,
    allow_dense: bool = True,
    max_batches: int | None = None,
    seed: int = 0,
    base: CompressionConfig | None = None,
    embeddings: bool = False,
    permuted_b_shapes: Sequence[tuple[int, int]] | None = None,
    cache: dict | None = None,
) -> CompressionConfig:
    """A :class:`CompressionConfig` with per-module overrides that meets a parameter budget.

    Parameters
    ----------
    model : torch.nn.Module
    budget : int or float
        Parameters of the whole model after compression (an int), or a fraction of today's
        count (a float in (0, 1]).  Modules that are not targeted count at their size.
    data : iterable of batches
        Calibration data: dicts of tensors (as a tokenizer returns them), tensors of input
        ids, or a DataLoader of either.
    target_modules, exclude_modules : optional
        Candidate modules, with :class:`CompressionConfig`'s matching rules (default: every
        ``Linear``/``Conv1D``; an LM head tied to an embedding is never a candidate).
    methods : sequence of {"svd", "kron", "permuted_kron"}, default ("svd", "kron")
        Methods to choose from (embeddings: "svd" only).  ``permuted_kron`` costs one
        permutation search per module and B shape (see :func:`layer_curves`).
    b_shapes : sequence of (s, t), optional
        Kronecker B shapes (out×in) to try; default :func:`default_b_shapes` per module.
    sensitivity : {"fisher", "lwiq", "uniform"} or dict of str to float
        Weight of each module's error: measured Fisher-style score (see
        :mod:`~tqla_torch.compression.calibrate`), the LWIQ importance
        (:func:`~tqla_torch.compression.lwiq`; embeddings get the mean of the others), 1
        for all, or given per module name.
    damp : float, default 0.01
        Relative damping of the input moments (:func:`tqla.moment_root`).
    allow_dense : bool, default True
        Whether a module may stay uncompressed.
    max_batches : int, optional
        Use at most this many calibration batches.
    seed : int, default 0
        Seed of the random projection of the sensitivity (models without logits).
    base : CompressionConfig, optional
        Settings the plan starts from (implementation, ...); its targets are replaced.
    embeddings : bool, default False
        Also plan the ``nn.Embedding`` modules matched by ``target_modules``: a low-rank
        table fitted to the token frequencies of the calibration data (the diagonal moment
        of one-hot inputs; an LM head tied to it follows it, and its own error as the
        output layer is not measured).
    permuted_b_shapes : sequence of (s, t), optional
        B shapes of the ``permuted_kron`` candidates (default :data:`PERMUTED_B_SHAPES`).
    cache : dict, optional
        Keeps the permutation searches of ``permuted_kron`` candidates (by module name and
        shape) between calls, e.g. plans for several budgets of one model.

    Returns
    -------
    CompressionConfig
        ``target_modules`` lists the compressed modules, ``overrides`` holds each one's
        method, shape and rank.  ``config.auto_plan`` (an :class:`AutoPlan`, not saved with
        the JSON) has the per-module choices, predicted errors and the input moments, which
        :func:`tqla_torch.compress` uses for activation-aware fitting.

    Raises
    ------
    ValueError
        If the budget is below the smallest possible plan or above the model, the data do
        not fit the model, or a target module received no input.
    """
    from tqla_torch.compression.apply import count_parameters

    unknown = [m for m in methods if m not in AUTO_METHODS]
    if unknown or not methods:
        raise ValueError(
            f"methods must be a non-empty subset of {AUTO_METHODS}, got {list(methods)}"
        )
    if isinstance(sensitivity, str) and sensitivity not in SENSITIVITIES:
        raise ValueError(
            f"sensitivity must be one of {SENSITIVITIES} or a dict, got {sensitivity!r}"
        )
    total = count_parameters(model)
    budget = _check_budget(budget, total)
    modules = _linear_targets(model, target_modules, exclude_modules, embeddings)
    if sensitivity == "lwiq":
        data = list(data)  # LWIQ reads the data twice
    if isinstance(sensitivity, Mapping):
        missing = sorted(set(modules) - set(sensitivity))
        if missing:
            raise ValueError(f"sensitivity: no score for modules {missing}")
    heads = _linear_heads(model, modules)
    t0 = time.perf_counter()
    stats: CalibrationStats = collect_statistics(
        model,
        data,
        {**modules, **{h: model.get_submodule(h) for h in heads.values()}},
        sensitivity=sensitivity == "fisher",
        max_batches=max_batches,
        seed=seed,
    )
    t1 = time.perf_counter()
    fisher = sensitivity == "fisher"
    curves, dense, refs = _all_curves(
        modules, stats, methods, b_shapes, damp, allow_dense, permuted_b_shapes, cache,
        heads=heads, fisher=fisher,
    )
    t2 = time.perf_counter()
    weights = _weights(model, data, modules, stats, sensitivity, seed)
    for name in heads:  # a tied table's summed error carries its own weights
        if isinstance(sensitivity, str) and sensitivity in ("fisher", "uniform"):
            weights[name] = 1.0
    fixed = total - sum(dense.values())
    try:
        chosen = allocate(curves, weights, budget - fixed)
    except ValueError:
        smallest = fixed + sum(min(c.params for c in curves[n]) for n in modules)
        raise ValueError(
            f"budget {budget:,} is below the smallest possible plan: {smallest:,} parameters "
            f"({fixed:,} outside the target modules plus the smallest representation of each "
            f"of the {len(modules)} targets)"
        ) from None
    t3 = time.perf_counter()
    rows = [
        PlanRow(
            name=n,
            method=c.method,
            shape=None if c.shape is None else [list(c.shape[0]), list(c.shape[1])],
            rank=c.rank,
            params_before=dense[n],
            params_after=c.params,
            predicted_error=math.sqrt(c.error2 / refs[n]) if refs[n] > 0 else 0.0,
            sensitivity=weights[n],
        )
        for n, c in chosen.items()
    ]
    config = _to_config(rows, base)
    n_cand = sum(len(c) for c in curves.values())
    config.auto_plan = AutoPlan(
        budget=budget,
        params_before=total,
        params_after=fixed + sum(r.params_after for r in rows),
        rows=rows,
        moments={r.name: stats.moments[r.name] for r in rows if r.method != "dense"},
        damp=damp,
        seconds={"statistics": t1 - t0, "curves": t2 - t1, "allocation": t3 - t2},
        n_candidates=n_cand,
    )
    return config


def _all_curves(
    modules: dict[str, nn.Module],
    stats: CalibrationStats,
    methods: Sequence[str],
    b_shapes: Any,
    damp: float,
    allow_dense: bool,
    permuted_b_shapes: Any,
    cache: dict | None,
    *,
    heads: Mapping[str, str] | None = None,
    fisher: bool = False,
) -> tuple[dict[str, list[Candidate]], dict[str, int], dict[str, float]]:
    """Every module's candidates, dense size and reference error of W itself (for a
    table tied to an LM head, ``heads``, the two-sided curve; its fit weight replaces the
    moment in ``stats.moments``)."""
    curves, dense, refs = {}, {}, {}
    cache = {} if cache is None else cache
    heads = heads or {}
    for name, m in modules.items():
        C = stats.moments[name]
        if name in heads:
            terms = _tied_terms(name, heads[name], m, stats, fisher)
            curves[name], stats.moments[name] = tied_table_curve(
                m.weight, terms, damp=damp, allow_dense=allow_dense
            )
            dense[name] = m.weight.numel()
            Wd = m.weight.detach().to(torch.float64).cpu()
            refs[name] = float(sum((p[:, None] * Wd * (Wd @ Cw)).sum() for p, Cw in terms))
            continue
        if isinstance(m, nn.Embedding):  # out×in = d×V, diagonal moment, low rank only
            W, bias, kinds = m.weight.detach().T, 0, ("svd",)
        else:
            v = weight_view(m)
            W, bias, kinds = v.weight_out_in.detach(), (0 if v.bias is None else v.bias.numel()), methods
        dense[name] = W.numel() + bias
        curves[name] = layer_curves(
            W, C, bias=bias, methods=kinds, b_shapes=b_shapes, damp=damp,
            allow_dense=allow_dense, permuted_b_shapes=permuted_b_shapes, cache=cache, key=name,
        )
        Wd, Cd = W.to(torch.float64).cpu(), C.cpu()
        refs[name] = float((Wd * Wd * Cd).sum() if Cd.dim() == 1 else (Wd * (Wd @ Cd)).sum())
    return curves, dense, refs


def _linear_heads(model: nn.Module, modules: Mapping[str, nn.Module]) -> dict[str, str]:
    """{embedding name: name of the Linear LM head that shares its weight} for the
    targeted ``nn.Embedding`` modules with such a head."""
    from tqla_torch.compression.apply import _tied_heads

    heads = {}
    for name, m in modules.items():
        if type(m) is nn.Embedding:
            linear = [h for h, mod in _tied_heads(model, m) if isinstance(mod, nn.Linear)]
            if linear:
                heads[name] = linear[0]
    return heads


def _tied_terms(
    name: str, head: str, m: nn.Module, stats: CalibrationStats, fisher: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two error terms (row weights (V,), column weight (d, d)) of a tied table: the
    input lookup and the LM head.  Fisher: each weighted by its measured per-row
    sensitivity (lookup: Σ_t∈v ‖∂L/∂e_t‖²/(n·d); head: E[(∂L/∂z_v)²]), so the sum
    estimates the loss increase like sensitivity × error of the other modules; otherwise
    the unweighted output errors (token frequencies; all logits alike)."""
    d = int(m.embedding_dim)
    eye = torch.eye(d, dtype=torch.float64)
    S = stats.moments[head].to(torch.float64).cpu()
    if fisher:
        look = stats.row_sensitivity[name].cpu()
        logit = stats.row_sensitivity[head].cpu()
    else:
        look = stats.moments[name].to(torch.float64).cpu()
        logit = torch.ones_like(look)
    return [(look, eye), (logit, S)]


def _weights(
    model: nn.Module,
    data: Any,
    modules: dict[str, nn.Module],
    stats: CalibrationStats,
    sensitivity: Any,
    seed: int,
) -> dict[str, float]:
    """The per-module weight of the allocation (see ``sensitivity`` of plan_for_budget)."""
    if sensitivity == "fisher":
        return dict(stats.sensitivity)
    if sensitivity == "uniform":
        return dict.fromkeys(modules, 1.0)
    if sensitivity == "lwiq":
        from tqla_torch.compression.importance import lwiq

        layers = [n for n, m in modules.items() if not isinstance(m, nn.Embedding)]
        scores = lwiq(model, data, layers, seed=seed).weights if layers else {}
        mean = float(np.mean(list(scores.values()))) if scores else 1.0
        return {n: float(scores.get(n, mean)) for n in modules}
    return {n: float(sensitivity[n]) for n in modules}


def _to_config(rows: list[PlanRow], base: CompressionConfig | None) -> CompressionConfig:
    compressed = [r for r in rows if r.method != "dense"]
    if not compressed:
        raise ValueError(
            "the budget leaves every target module dense; nothing to compress (lower the "
            "budget or pass allow_dense=False)"
        )
    overrides: dict[str, dict[str, Any]] = {}
    for r in compressed:
        over: dict[str, Any] = {"method": r.method, "rank": r.rank}
        if r.method in ("kron", "permuted_kron"):
            over["shape"] = r.shape
        overrides[re.escape(r.name)] = over
    values = {} if base is None else base.to_dict()
    values.update(
        target_modules=[r.name for r in compressed],
        exclude_modules=None,
        method="svd",
        rank=1,
        shape=None,
        b_shape=None,
        n_params=None,
        permute=None,
        overrides=overrides,
        orientation="out_in",
    )
    return CompressionConfig(**values)


from tqla_torch.compression.auto_gpt2 import auto_gpt2_steps  # noqa: E402  (re-export)
