"""Per-layer ranks for a whole-model parameter budget: importance-scaled, uniform, error-curve.

Every function here is generic: a layer is described only by ``params_l(rank) -> int``, its
parameter count at a rank (non-decreasing in the rank), so the same code allocates tensor-train,
Kronecker-sum and low-rank ranks. The *budget* is the whole model's parameter count after
compression: an int, or a float in (0, 1] read as a fraction of ``total_params`` (today's count).
``fixed_params`` counts what is not compressed (biases, norms, embeddings, uncompressed layers).

* :class:`RankAllocator` / :func:`allocate_ranks` — the LWIQ rule
  ``r_l = clip(round(κ · w_l · r_ref_l), 1, r_max_l)`` with one scale κ found by bisection so that
  the total meets the budget. The weights are fixed once; a new budget only bisects a new κ.
  Equal weights give *uniform* ranks (:func:`uniform_ranks`).
* :func:`allocate_by_error` — ranks from each layer's error curve: greedy equal marginal gain,
  always buying the step (possibly several ranks at once) with the largest error drop per
  parameter that still fits.

Examples
--------
>>> from tqla_torch.compression.ranks import allocate_ranks
>>> params = {"a": lambda r: 10 * r, "b": lambda r: 20 * r}
>>> alloc = allocate_ranks({"a": 1.0, "b": 3.0}, params, 200, r_max=16)
>>> alloc.ranks, alloc.params <= 200
({'a': 3, 'b': 8}, True)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "RankAllocation",
    "RankAllocator",
    "allocate_by_error",
    "allocate_ranks",
    "plan_ranks",
    "resolve_budget",
    "uniform_ranks",
    "weight_params",
]

ParamsFn = Callable[[int], int]


@dataclass(frozen=True)
class RankAllocation:
    """Ranks chosen for a budget.

    Attributes
    ----------
    ranks : dict of str to int
        The rank of each layer.
    params : int
        The model's total parameters with these ranks (``fixed_params`` included).
    budget : int
        The budget as a parameter count.
    feasible : tuple of int
        The smallest and largest totals any ranks within the bounds give.
    method : str
        ``"scaled"`` (κ rule), ``"uniform"`` or ``"error"``.
    kappa : float or None
        The scale κ of the κ rule.
    next_params : int or None
        The κ rule's total at the next κ breakpoint (``> budget``), None when every layer is at
        its maximum rank: ``params <= budget < next_params`` is what "meets the budget" means.
    """

    ranks: dict[str, int]
    params: int
    budget: int
    feasible: tuple[int, int]
    method: str
    kappa: float | None = None
    next_params: int | None = None


def resolve_budget(budget: int | float, total_params: int | None) -> int:
    """A budget (count, or fraction of ``total_params``) as a parameter count.

    Examples
    --------
    >>> resolve_budget(0.5, 1000), resolve_budget(300, None)
    (500, 300)
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be an int (parameters) or a float fraction, got {budget!r}")
    if isinstance(budget, float):
        if not (0.0 < budget <= 1.0):
            raise ValueError(f"budget as a fraction must lie in (0, 1], got {budget!r}")
        if total_params is None:
            raise ValueError("budget given as a fraction needs total_params (today's count)")
        return int(math.floor(budget * total_params))
    if budget < 1:
        raise ValueError(f"budget must be a parameter count >= 1, got {budget!r}")
    if total_params is not None and budget > total_params:
        raise ValueError(f"budget={budget} exceeds the model's {total_params} parameters")
    return int(budget)


def _per_layer(value: int | Mapping[str, int], names: Sequence[str], what: str) -> dict[str, int]:
    if isinstance(value, Mapping):
        missing = sorted(set(names) - set(value))
        if missing:
            raise ValueError(f"{what} has no entry for layers {missing!r}")
        out = {n: value[n] for n in names}
    else:
        out = dict.fromkeys(names, value)
    for n, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 1:
            raise ValueError(f"{what} must be >= 1, got {v!r} for layer {n!r}")
    return out


def _check_params(params: Mapping[str, ParamsFn], r_max: Mapping[str, int]) -> dict[str, list[int]]:
    """Tabulate params_l(1..r_max_l) once; check it is a non-decreasing count."""
    table = {}
    for name, fn in params.items():
        if not callable(fn):
            raise TypeError(f"params[{name!r}] must be a callable rank -> parameter count")
        row = [int(fn(r)) for r in range(1, int(r_max[name]) + 1)]
        if row[0] < 0 or any(b < a for a, b in zip(row, row[1:])):
            raise ValueError(
                f"params[{name!r}] must be a non-negative count that never decreases with the "
                f"rank, got {row[:8]}{'...' if len(row) > 8 else ''}"
            )
        table[name] = row
    return table


class RankAllocator:
    """The κ rule ``r_l = clip(round(κ·w_l·r_ref_l), 1, r_max_l)`` for fixed weights.

    Parameters
    ----------
    weights : mapping of str to float
        Layer importances (e.g. ``LWIQResult.weights`` of
        :func:`tqla_torch.compression.importance.lwiq`), >= 0. Only their ratios matter:
        they are rescaled to mean 1, so κ reads as "the fraction of ``r_ref`` an average layer
        gets".
    params : mapping of str to callable
        ``params[name](rank)``: the layer's parameter count at that rank, non-decreasing.
    r_max : int or mapping
        The largest allowed rank (per layer or one for all).
    r_ref : int or mapping, optional
        The reference rank (default: the largest ``r_max``, the same for every layer).
    fixed_params : int
        Parameters outside the allocated layers.
    total_params : int, optional
        Today's parameter count, needed for budgets given as fractions.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        params: Mapping[str, ParamsFn],
        *,
        r_max: int | Mapping[str, int],
        r_ref: int | Mapping[str, int] | None = None,
        fixed_params: int = 0,
        total_params: int | None = None,
    ) -> None:
        names = list(params)
        if not names:
            raise ValueError("params must name at least one layer")
        if set(weights) != set(names):
            raise ValueError(
                f"weights and params must name the same layers; only in weights: "
                f"{sorted(set(weights) - set(names))!r}, only in params: "
                f"{sorted(set(names) - set(weights))!r}"
            )
        w = [float(weights[n]) for n in names]
        if any(not (math.isfinite(v) and v >= 0) for v in w) or sum(w) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all zero, got {w!r}")
        if isinstance(fixed_params, bool) or not isinstance(fixed_params, int) or fixed_params < 0:
            raise ValueError(f"fixed_params must be an int >= 0, got {fixed_params!r}")
        self.names = names
        self.r_max = {n: int(v) for n, v in _per_layer(r_max, names, "r_max").items()}
        ref = max(self.r_max.values()) if r_ref is None else r_ref
        self.r_ref = {n: float(v) for n, v in _per_layer(ref, names, "r_ref").items()}
        mean = sum(w) / len(w)
        self.weights = {n: v / mean for n, v in zip(names, w, strict=True)}
        self.table = _check_params(params, self.r_max)
        self.fixed_params = fixed_params
        self.total_params = total_params

    @property
    def feasible(self) -> tuple[int, int]:
        """(smallest, largest) total parameters over all ranks within the bounds."""
        lo = self.fixed_params + sum(row[0] for row in self.table.values())
        hi = self.fixed_params + sum(row[-1] for row in self.table.values())
        return lo, hi

    def ranks(self, kappa: float) -> dict[str, int]:
        """The κ rule's ranks (round half up)."""
        return {
            n: min(
                max(int(math.floor(kappa * self.weights[n] * self.r_ref[n] + 0.5)), 1),
                self.r_max[n],
            )
            for n in self.names
        }

    def total(self, ranks: Mapping[str, int]) -> int:
        """The model's parameters with these ranks."""
        return self.fixed_params + sum(self.table[n][ranks[n] - 1] for n in self.names)

    def allocate(self, budget: int | float) -> RankAllocation:
        """The largest κ whose ranks meet ``budget`` (bisection), and those ranks.

        Raises
        ------
        ValueError
            If even rank 1 everywhere exceeds the budget (the message names the feasible range).
        """
        target = resolve_budget(budget, self.total_params)
        lo_p, hi_p = self.feasible
        if target < lo_p:
            raise ValueError(
                f"budget={budget!r} ({target} parameters) cannot be met: ranks within the bounds "
                f"give between {lo_p} and {hi_p} parameters"
            )
        top = max(
            (self.r_max[n] + 0.5) / (self.weights[n] * self.r_ref[n])
            for n in self.names
            if self.weights[n] > 0
        )
        if self.total(self.ranks(top)) <= target:
            r = self.ranks(top)
            return RankAllocation(r, self.total(r), target, (lo_p, hi_p), "scaled", top, None)
        lo, hi = 0.0, top  # invariant: total(lo) <= target < total(hi)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if self.total(self.ranks(mid)) <= target:
                lo = mid
            else:
                hi = mid
        r = self.ranks(lo)
        nxt = self.total(self.ranks(hi))
        return RankAllocation(r, self.total(r), target, (lo_p, hi_p), "scaled", lo, nxt)


def allocate_ranks(
    weights: Mapping[str, float],
    params: Mapping[str, ParamsFn],
    budget: int | float,
    *,
    r_max: int | Mapping[str, int],
    r_ref: int | Mapping[str, int] | None = None,
    fixed_params: int = 0,
    total_params: int | None = None,
) -> RankAllocation:
    """Ranks ``clip(round(κ·w_l·r_ref), 1, r_max)`` meeting ``budget``; see :class:`RankAllocator`.

    Examples
    --------
    >>> alloc = allocate_ranks({"a": 1, "b": 1}, {"a": lambda r: r, "b": lambda r: r}, 10, r_max=8)
    >>> alloc.ranks
    {'a': 5, 'b': 5}
    """
    allocator = RankAllocator(
        weights,
        params,
        r_max=r_max,
        r_ref=r_ref,
        fixed_params=fixed_params,
        total_params=total_params,
    )
    return allocator.allocate(budget)


def uniform_ranks(
    params: Mapping[str, ParamsFn],
    budget: int | float,
    *,
    r_max: int | Mapping[str, int],
    fixed_params: int = 0,
    total_params: int | None = None,
) -> RankAllocation:
    """The same rank for every layer (clipped to its ``r_max``), as large as the budget allows."""
    alloc = allocate_ranks(
        dict.fromkeys(params, 1.0),
        params,
        budget,
        r_max=r_max,
        fixed_params=fixed_params,
        total_params=total_params,
    )
    return RankAllocation(
        alloc.ranks,
        alloc.params,
        alloc.budget,
        alloc.feasible,
        "uniform",
        alloc.kappa,
        alloc.next_params,
    )


def _best_jump(
    curve: Sequence[float], row: Sequence[int], r: int, room: float
) -> tuple[float, int] | None:
    """From rank r, the jump to r' > r with the largest error drop per parameter that fits."""
    best: tuple[float, int] | None = None
    for r2 in range(r + 1, len(curve) + 1):
        cost = row[r2 - 1] - row[r - 1]
        if cost > room:
            break  # params never decrease: no later rank fits either
        gain = curve[r - 1] - curve[r2 - 1]
        if gain <= 0:
            continue
        ratio = math.inf if cost == 0 else gain / cost
        if best is None or ratio > best[0]:
            best = (ratio, r2)
    return best


def allocate_by_error(
    errors: Mapping[str, Sequence[float]],
    params: Mapping[str, ParamsFn],
    budget: int | float,
    *,
    weights: Mapping[str, float] | None = None,
    fixed_params: int = 0,
    total_params: int | None = None,
) -> RankAllocation:
    """Ranks from per-layer error curves: greedy equal marginal gain under the budget.

    Starting from rank 1 everywhere, repeatedly buy the rank increase (possibly several ranks
    at once, so a flat stretch of a curve does not hide a later drop) with the largest
    ``weight_l × error drop`` per added parameter that still fits, until nothing fits.

    Parameters
    ----------
    errors : mapping of str to sequence of float
        ``errors[name][r - 1]``: the layer's error at rank r, for r = 1 .. r_max (the length
        sets r_max). Typically the relative squared Frobenius error of the truncation.
    params : mapping of str to callable
        ``params[name](rank)``: parameters at a rank, non-decreasing.
    budget : int or float
        As in :func:`resolve_budget`.
    weights : mapping, optional
        Per-layer multipliers of the errors (default 1).

    Examples
    --------
    >>> errs = {"a": [1.0, 0.1, 0.0], "b": [1.0, 0.5, 0.4]}
    >>> allocate_by_error(errs, {"a": lambda r: r, "b": lambda r: r}, 4).ranks
    {'a': 2, 'b': 2}
    """
    names = list(params)
    if set(errors) != set(names):
        raise ValueError(
            f"errors and params must name the same layers, got {sorted(errors)!r} and {names!r}"
        )
    curves = {n: [float(e) for e in errors[n]] for n in names}
    for n, c in curves.items():
        if not c or not all(math.isfinite(e) for e in c):
            raise ValueError(f"errors[{n!r}] must be a non-empty sequence of finite numbers")
    scale = {n: 1.0 for n in names} if weights is None else {n: float(weights[n]) for n in names}
    r_max = {n: len(curves[n]) for n in names}
    table = _check_params(params, r_max)
    target = resolve_budget(budget, total_params)
    lo_p = fixed_params + sum(row[0] for row in table.values())
    hi_p = fixed_params + sum(row[-1] for row in table.values())
    if target < lo_p:
        raise ValueError(
            f"budget={budget!r} ({target} parameters) cannot be met: ranks within the bounds give "
            f"between {lo_p} and {hi_p} parameters"
        )
    ranks = dict.fromkeys(names, 1)
    total = lo_p
    weighted = {n: [scale[n] * e for e in curves[n]] for n in names}
    heap: list[tuple[float, int, str, int]] = []

    def push(i: int, n: int | str) -> None:
        jump = _best_jump(weighted[n], table[n], ranks[n], target - total)
        if jump is not None:
            heapq.heappush(heap, (-jump[0], i, n, jump[1]))

    for i, n in enumerate(names):
        push(i, n)
    while heap:
        _, i, n, r2 = heapq.heappop(heap)
        cost = table[n][r2 - 1] - table[n][ranks[n] - 1]
        if total + cost > target:  # the room shrank since this jump was priced: re-price it
            push(i, n)
            continue
        ranks[n], total = r2, total + cost
        push(i, n)
    return RankAllocation(ranks, total, target, (lo_p, hi_p), "error")


def weight_params(model: object, names: Sequence[str]) -> tuple[int, int]:
    """``(total, fixed)``: the model's unique parameters, and those outside the named modules'
    weights (biases, norms, embeddings and every other module count as fixed)."""
    modules = dict(model.named_modules())  # type: ignore[attr-defined]
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"modules {missing!r} are not in the model")
    seen = {id(p): p.numel() for p in model.parameters()}  # type: ignore[attr-defined]
    total = sum(seen.values())
    weights = {id(modules[n].weight): modules[n].weight.numel() for n in names}
    return total, total - sum(weights.values())


def plan_ranks(
    model: object,
    params: Mapping[str, ParamsFn],
    budget: int | float,
    *,
    r_max: int | Mapping[str, int],
    method: str = "lwiq",
    data: object = None,
    errors: Mapping[str, Sequence[float]] | None = None,
    r_ref: int | Mapping[str, int] | None = None,
    score_at: Mapping[str, str] | None = None,
    **lwiq_kwargs: object,
) -> tuple[RankAllocation, object]:
    """Per-module ranks for a whole-model budget: ``(allocation, LWIQ result or None)``.

    ``params`` names the modules whose ``weight`` is replaced (their weights leave the count,
    everything else stays fixed). ``method``: ``"lwiq"`` (scores from
    :func:`tqla_torch.compression.importance.lwiq` on ``data``, then the κ rule with ``r_ref``
    defaulting to each layer's ``r_max``), ``"uniform"`` or ``"frobenius"`` (needs ``errors``).
    ``score_at`` maps a module to the module whose output LWIQ scores for it (e.g. each MLP
    matrix of a transformer to its block, each convolution of a residual block to the block:
    inside a residual branch a layer's output is an increment, not the representation);
    modules sharing a scoring module share its importance.
    """
    names = list(params)
    total, fixed = weight_params(model, names)
    kw = {"fixed_params": fixed, "total_params": total}
    if method == "lwiq":
        if data is None:
            raise ValueError("method='lwiq' needs data (batches to score the layers on)")
        from tqla_torch.compression.importance import lwiq

        at = {n: n for n in names} if score_at is None else dict(score_at)
        missing = [n for n in names if n not in at]
        if missing:
            raise ValueError(f"score_at has no scoring module for {missing!r}")
        scored = list(dict.fromkeys(at[n] for n in names))
        scores = lwiq(model, data, layers=scored, **lwiq_kwargs)  # type: ignore[arg-type]
        weights = {n: scores.weights[at[n]] for n in names}
        ref = r_max if r_ref is None else r_ref
        return allocate_ranks(weights, params, budget, r_max=r_max, r_ref=ref, **kw), scores
    if method == "uniform":
        return uniform_ranks(params, budget, r_max=r_max, **kw), None
    if method == "frobenius":
        if errors is None:
            raise ValueError("method='frobenius' needs errors (each layer's error curve)")
        return allocate_by_error(errors, params, budget, **kw), None
    raise ValueError(f"method must be 'lwiq', 'uniform' or 'frobenius', got {method!r}")
