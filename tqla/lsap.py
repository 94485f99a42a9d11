"""Linear sum assignment over several solvers, with SciPy's interface.

:func:`lsap` solves min (or max) Σ cost[row_ind[k], col_ind[k]] over matchings that use
min(n, m) pairs of an n×m cost matrix, like :func:`scipy.optimize.linear_sum_assignment`,
through one of these solvers: SciPy (the reference), ``lap.lapjv`` and lapx's ``lapjvc``
(Jonker–Volgenant, ``pip install 'tqla[lap]'``), and ``"jv"``, tqla's own Numba
Jonker–Volgenant shortest-augmenting-path solver, the only one that accepts a warm start.
The three Jonker–Volgenant solvers are square-only: a rectangular problem is padded to a
square one with rows of zero cost (an exact reduction: every matching of the square
problem restricted to the real rows is a matching of the rectangular one, and the dummy
rows add 0).  See ``docs/assignment.md``.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tqla._array import array_namespace, is_numpy, to_numpy
from tqla._kernels import get_kernel

__all__ = ["AUTO_ORDER", "LSAPResult", "SOLVERS", "available_solvers", "lsap"]

logger = logging.getLogger(__name__)

#: Solver names accepted by :func:`lsap`.
SOLVERS = ("auto", "scipy", "lap", "lapx", "jv")

#: What ``solver="auto"`` tries, in order (the first installed one that supports the
#: problem runs); measured fastest by ``benchmarks/bench_lsap.py``
#: (benchmarks/results/lsap_*.md).  Pass a tuple of names as ``solver=`` for another order.
AUTO_ORDER: tuple[str, ...] = ("jv", "scipy")

# Costs whose largest magnitude times 4·n exceeds 2^1000 are scaled by a power of two
# (exactly) before solving, so that no solver's dual variables overflow (see _shift).


class LSAPResult(tuple):
    """Result of :func:`lsap`: unpacks like SciPy's ``(row_ind, col_ind)``.

    Attributes
    ----------
    row_ind, col_ind : numpy.ndarray of int64
        The k-th pair is (row_ind[k], col_ind[k]); ``row_ind`` is increasing
        (``arange(n)`` when n <= m).
    cost : float
        Total cost Σ cost[row_ind, col_ind] of the input (accurately rounded sum).
    solver : str
        The solver that ran.
    prices : numpy.ndarray or None
        Column dual variables (``"jv"`` on square problems; of the minimisation of −cost
        when ``maximize=True``); pass the result as ``init=`` to warm-start a close
        problem with the same ``maximize``.
    n_augment : int or None
        Augmenting paths the ``"jv"`` solver needed (0 when the warm start was optimal).
    host_bytes : int
        Bytes of the float64 host copy this solve made of ``cost`` (0 when ``cost`` already
        was a C-ordered float64 NumPy array used in place, or a C-ordered float32 one the
        square ``"jv"`` solver reads in place: it widens each entry exactly as it reads it,
        so the solution is the one of the float64 copy, without the copy).
    device_to_host : bool
        Whether ``cost`` came from another library than NumPy (a device → host copy on a
        GPU).

    Examples
    --------
    >>> import numpy as np
    >>> row_ind, col_ind = lsap(np.array([[4.0, 1.0], [2.0, 3.0]]), solver="scipy")
    >>> col_ind.tolist()
    [1, 0]
    """

    def __new__(
        cls,
        row_ind: np.ndarray,
        col_ind: np.ndarray,
        *,
        cost: float,
        solver: str,
        prices: np.ndarray | None = None,
        n_augment: int | None = None,
        host_bytes: int = 0,
        device_to_host: bool = False,
    ) -> LSAPResult:
        self = super().__new__(cls, (row_ind, col_ind))
        self.cost = float(cost)
        self.solver = solver
        self.prices = prices
        self.n_augment = n_augment
        self.host_bytes = int(host_bytes)
        self.device_to_host = bool(device_to_host)
        return self

    @property
    def row_ind(self) -> np.ndarray:
        return self[0]

    @property
    def col_ind(self) -> np.ndarray:
        return self[1]

    def __repr__(self) -> str:
        return f"LSAPResult(n={len(self[0])}, cost={self.cost!r}, solver={self.solver!r})"


# --------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------
def _import_lap() -> Any:
    try:
        import lap
    except ImportError:
        raise ImportError(
            "solver='lap' needs the optional package 'lap' (or 'lapx', which provides "
            "lap.lapjv): pip install 'tqla[lap]'"
        ) from None
    if not hasattr(lap, "lapjv"):
        raise ImportError(
            "solver='lap' needs lap.lapjv, which the installed 'lap' package lacks: "
            "pip install 'tqla[lap]'"
        )
    return lap.lapjv


def _import_lapx() -> Any:
    msg = "solver='lapx' needs the optional package 'lapx' (lap.lapjvc): pip install 'tqla[lap]'"
    try:
        import lap
    except ImportError:
        raise ImportError(msg) from None
    fn = getattr(lap, "lapjvc", None)
    if fn is None:
        # lapx and lap both install the package 'lap'; when 'lap' was installed over 'lapx'
        # the lapx entry points are still importable from their extension modules.
        try:
            fn = importlib.import_module("lap._lapjvc").lapjvc
        except (ImportError, AttributeError):
            raise ImportError(msg) from None
    return fn


def _import_jv() -> Any:
    return get_kernel("lsap_jv", "numba")


_LOADERS = {"lap": _import_lap, "lapx": _import_lapx, "jv": _import_jv}


def available_solvers() -> list[str]:
    """The :func:`lsap` solvers whose packages are installed (always includes "scipy").

    Examples
    --------
    >>> "scipy" in available_solvers()
    True
    """
    out = ["scipy"]
    for name, load in _LOADERS.items():
        try:
            load()
        except ImportError:
            continue
        out.append(name)
    return out


def check_solver(solver: Any) -> tuple[str, ...]:
    """Validate ``solver=``: a name of :data:`SOLVERS` or a sequence of solver names.

    Returns the candidates in order (``"auto"`` expands to :data:`AUTO_ORDER`).
    """
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS} or a tuple of them, got {solver!r}")
        return AUTO_ORDER if solver == "auto" else (solver,)
    if isinstance(solver, Sequence) and len(solver) and all(
        isinstance(s, str) and s in SOLVERS[1:] for s in solver
    ):
        return tuple(solver)
    raise ValueError(
        f"solver must be one of {SOLVERS} or a non-empty tuple of {SOLVERS[1:]} tried in "
        f"order, got {solver!r}"
    )


def _pick(order: tuple[str, ...], has_inf: bool, explicit: bool) -> str:
    """The first solver of ``order`` that is installed and supports the problem."""
    if explicit:  # one named solver: its own errors, never a silent substitute
        name = order[0]
        if has_inf and name in ("lap", "lapx"):
            raise ValueError(
                f"cost holds forbidden pairs (+inf, or masked entries), which "
                f"solver={name!r} does not support; use solver='scipy' or 'jv'"
            )
        if name != "scipy":
            _LOADERS[name]()  # ImportError names the pip extra
        return name
    for name in order:
        if has_inf and name in ("lap", "lapx"):
            continue
        if name == "scipy":
            return name
        try:
            _LOADERS[name]()
        except ImportError:
            continue
        return name
    raise ImportError(
        f"none of the solvers {order} is installed (or supports forbidden pairs); "
        f"installed: {available_solvers()}"
    )


# --------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------
def _host_copy(cost: Any) -> tuple[np.ndarray, bool]:
    """(host NumPy array, came from another library); validates the dtype first."""
    if isinstance(cost, np.ndarray):
        if cost.dtype == np.bool_ or cost.dtype.kind not in "iuf":
            raise TypeError(
                f"cost must hold real numbers (integer or floating dtype), got dtype "
                f"{cost.dtype}" + (": cast booleans explicitly" if cost.dtype == np.bool_ else "")
            )
        return cost, False
    xp = array_namespace(cost)
    if not xp.isdtype(cost.dtype, ("integral", "real floating")):
        raise TypeError(
            f"cost must hold real numbers (integer or floating dtype), got dtype {cost.dtype}"
        )
    if xp.isdtype(cost.dtype, "real floating") and cost.dtype not in (xp.float32, xp.float64):
        cost = xp.astype(cost, xp.float32)  # half precisions have no NumPy twin everywhere
    try:
        host = to_numpy(cost)
    except (ValueError, TypeError, RuntimeError):
        host = np.from_dlpack(cost)
    return np.asarray(host), not is_numpy(xp)


def _prepare(cost: Any, maximize: bool) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Validate ``cost``; return (C, original, host_bytes, device_to_host).

    C is the minimisation problem (negated for ``maximize``) with +inf on the forbidden
    pairs (masked entries included); ``original`` the input values.  Both are float64,
    except for a C-ordered float32 NumPy input, which stays float32 (no copy) until a
    solver other than the square ``"jv"`` needs float64 (:func:`_widened`).
    """
    mask = None
    if isinstance(cost, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(cost)
        cost = np.ma.getdata(cost)
    if isinstance(cost, (list, tuple)):
        cost = np.asarray(cost)
    if not hasattr(cost, "shape") or not hasattr(cost, "dtype"):
        raise TypeError(f"cost must be an array, got {type(cost).__name__}")
    if len(cost.shape) != 2:
        raise ValueError(f"cost must be a 2-D array, got shape {tuple(cost.shape)}")
    host, d2h = _host_copy(cost)
    if host.dtype == np.float32 and host.flags.c_contiguous:
        orig = host  # solved in place by "jv"; widened for the other solvers (_widened)
    else:
        orig = np.ascontiguousarray(host, dtype=np.float64)
    copied = 0 if orig is cost else orig.nbytes
    with np.errstate(over="ignore", invalid="ignore"):  # one cheap pass when finite
        finite = not orig.size or bool(np.isfinite(orig.sum()))
    if not finite and np.isnan(orig).any():
        raise ValueError("cost must not contain NaN")
    bad = np.inf if maximize else -np.inf
    if not finite and bool((orig == bad).any()):
        good = "-inf" if maximize else "+inf"
        raise ValueError(
            f"cost must not contain {'+inf' if maximize else '-inf'}"
            f"{' with maximize=True' if maximize else ''}: an assignment cannot be infinitely "
            f"good (use {good} or a masked entry to forbid a pair)"
        )
    C = -orig if maximize else orig
    if mask is not None and mask.any():
        if mask.shape != C.shape:  # pragma: no cover - getmaskarray gives the full shape
            raise ValueError("cost's mask must have the shape of its data")
        C = C.copy() if C is orig else C
        C[mask] = np.inf
    return C, orig, copied, d2h


def _widened(C: np.ndarray) -> np.ndarray:
    """A float64 copy of a float32 problem, for the solvers that need float64 input."""
    return np.ascontiguousarray(C, dtype=np.float64)


def _init_prices(init: Any, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(prices, previous col_ind) from ``init``."""
    if init is None:
        return None, None
    if isinstance(init, LSAPResult):
        prices, col = init.prices, np.asarray(init.col_ind, dtype=np.int64)
    else:
        prices, col = np.asarray(init, dtype=np.float64), None
        if prices.ndim != 1:
            raise ValueError(
                f"init must be an LSAPResult of a previous solve or a 1-D array of column "
                f"prices, got an array of shape {prices.shape}"
            )
    if prices is not None:
        prices = np.asarray(prices, dtype=np.float64)
        if prices.shape != (n,) or not np.all(np.isfinite(prices)):
            raise ValueError(
                f"init's column prices must be {n} finite numbers (one per column), "
                f"got shape {prices.shape}"
            )
    if col is not None and col.shape != (n,):
        raise ValueError(
            f"init is a solution of a {col.shape[0]}×{col.shape[0]} problem, but cost is {n}×{n}"
        )
    return prices, col


# --------------------------------------------------------------------------------------
# Solve
# --------------------------------------------------------------------------------------
def _scaled(C: np.ndarray, has_inf: bool) -> np.ndarray:
    """C times a power of two (exact) small enough that no solver's duals overflow."""
    if has_inf:
        finite = C[np.isfinite(C)]
        big = float(np.abs(finite).max()) if finite.size else 0.0
    else:
        big = max(float(C.max()), -float(C.min())) if C.size else 0.0
    k = _shift(big, 4 * max(C.shape))
    return C if k == 0 else np.ldexp(C, -k)


def _shift(big: float, count: int) -> int:
    """The k >= 0 with big·count·2^-k <= 2^1000 (computed without overflowing)."""
    if big == 0.0 or not math.isfinite(big):
        return 0
    e = math.frexp(big)[1] + math.frexp(float(count))[1]  # big·count < 2^e
    return max(0, e - 1000)


def _total(values: np.ndarray) -> float:
    """Σ values, accurately rounded (math.fsum) even where partial sums would overflow;
    OverflowError when the total itself does not fit in float64."""
    big = float(np.abs(values).max()) if values.size else 0.0
    k = _shift(big, len(values))
    return math.ldexp(math.fsum(np.ldexp(values, -k).tolist()), k)


def _solve_square(C: np.ndarray, solver: str, prices: Any, prev: Any):
    """(col_ind, prices, n_augment) of a square problem."""
    n = C.shape[0]
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment

        return linear_sum_assignment(C)[1], None, None
    if solver == "lap":
        return _import_lap()(C, extend_cost=False)[1], None, None
    if solver == "lapx":
        r, c = _import_lapx()(C, return_cost=False)
        col = np.empty(n, dtype=np.int64)
        col[np.asarray(r, dtype=np.int64)] = c
        return col, None, None
    return _import_jv()(C, prices, prev)


def _solve(C: np.ndarray, solver: str, prices: Any, prev: Any):
    """(row_ind, col_ind, prices, n_augment) of an n×m problem."""
    n, m = C.shape
    if n > m:  # each column gets a row: the transposed problem
        r, c, _, n_aug = _solve(np.ascontiguousarray(C.T), solver, None, None)
        order = np.argsort(c)
        return c[order], r[order], None, n_aug
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(C)
        return np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64), None, None
    if n < m:  # square-only solvers: pad with rows of zero cost (exact reduction)
        P = np.zeros((m, m))
        P[:n] = C
        col, _, n_aug = _solve_square(P, solver, None, None)
        return np.arange(n, dtype=np.int64), np.asarray(col[:n], dtype=np.int64), None, n_aug
    col, v, n_aug = _solve_square(C, solver, prices, prev)
    return np.arange(n, dtype=np.int64), np.asarray(col, dtype=np.int64), v, n_aug


def lsap(
    cost: Any,
    *,
    maximize: bool = False,
    solver: str | Sequence[str] = "auto",
    init: LSAPResult | Any | None = None,
) -> LSAPResult:
    """Solve the linear sum assignment problem, like SciPy's ``linear_sum_assignment``.

    For an n×m cost matrix, find min(n, m) pairs (row_ind[k], col_ind[k]) using each row
    and each column at most once that minimise (or, with ``maximize=True``, maximise)
    Σ cost[row_ind[k], col_ind[k]].

    Parameters
    ----------
    cost : array of shape (n, m)
        Real costs (integer or floating dtype) of any array library; the solvers run on the
        host in float64, so a matrix of another library, device or dtype is copied once
        (``.host_bytes`` of the result) — except a C-ordered float32 NumPy matrix solved
        by ``"jv"``, which reads it in place and widens each entry (exactly) as it reads
        it: the same solution without the float64 copy, twice the matrix's size.  Boolean and complex matrices are refused
        (TypeError): cast them explicitly.  A pair is forbidden by ``+inf`` (``-inf`` with
        ``maximize=True``) or by a masked entry of a :class:`numpy.ma.MaskedArray`
        (``"scipy"`` and ``"jv"`` only).  Finite costs whose total does not fit in
        float64 are refused with a clear error; huge finite costs are otherwise scaled by a
        power of two (exactly) for the solvers.
    maximize : bool
        Maximise instead of minimise.
    solver : {"auto", "scipy", "lap", "lapx", "jv"} or tuple of names
        ``"scipy"``: :func:`scipy.optimize.linear_sum_assignment`, the reference.
        ``"lap"``: ``lap.lapjv``; ``"lapx"``: lapx's ``lapjvc`` (Jonker–Volgenant;
        ``pip install 'tqla[lap]'``).  ``"jv"``: tqla's Numba Jonker–Volgenant
        shortest-augmenting-path solver, which accepts ``init`` (``pip install
        'tqla[numba]'``).  The three Jonker–Volgenant solvers are square-only; rectangular
        problems reach them padded with zero-cost rows (exact).  ``"auto"`` tries
        :data:`AUTO_ORDER`; a tuple of names is tried in its order (the first installed one
        that supports the problem runs).
    init : LSAPResult, array of shape (n,), or None
        Warm start of a square problem: a previous ``"jv"`` result of a problem of the same
        size (its column prices and assignment), or column prices alone.  Rows whose
        previous column is still a cheapest column at these prices keep it and only the
        others are augmented.  The optimum does not depend on ``init``.  Solvers other than
        ``"jv"`` ignore it (logged at debug level).

    Returns
    -------
    LSAPResult
        ``row_ind, col_ind`` (host NumPy int64 arrays, row_ind increasing), with the total
        ``.cost``, ``.solver`` and, for ``"jv"``, ``.prices`` for a later warm start.

    Raises
    ------
    TypeError
        If ``cost`` is not an array of real numbers (bool, complex, object, ...).
    ValueError
        If ``cost`` is not 2-D, holds NaN or an infinitely good entry, forbids every
        complete assignment, or its optimal total overflows float64; or ``solver`` /
        ``init`` is invalid.
    ImportError
        If the requested solver's package is missing (the message names the pip extra).

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    >>> res = lsap(cost, solver="scipy")
    >>> res.col_ind.tolist(), res.cost
    ([1, 0, 2], 5.0)
    >>> row_ind, col_ind = lsap(cost, solver="jv")
    >>> float(cost[row_ind, col_ind].sum())
    5.0
    >>> lsap(cost[:, :2], maximize=True).cost          # rectangular, maximised
    6.0
    """
    order = check_solver(solver)
    if not isinstance(maximize, (bool, np.bool_)):
        raise TypeError(f"maximize must be a bool, got {type(maximize).__name__}")
    C, orig, copied, d2h = _prepare(cost, bool(maximize))
    n, m = C.shape
    square = n == m
    prices, prev = _init_prices(init, n) if square else (None, None)
    if init is not None and not square:
        raise ValueError(f"init (a warm start) needs a square cost matrix, got shape {(n, m)}")
    with np.errstate(over="ignore", invalid="ignore"):
        has_inf = bool(C.size) and not bool(np.isfinite(C.sum())) and bool(np.isinf(C).any())
    name = _pick(order, has_inf, explicit=isinstance(solver, str) and solver != "auto")
    if init is not None and name != "jv":
        logger.debug("lsap: solver=%r has no warm start; init ignored", name)
    if n == 0 or m == 0:
        empty = np.zeros(0, dtype=np.int64)
        return LSAPResult(
            empty, empty.copy(), cost=0.0, solver=name, host_bytes=copied, device_to_host=d2h
        )
    if C.dtype != np.float64 and not (name == "jv" and square):
        C = _widened(C)
        copied += C.nbytes
    Cs = _scaled(C, has_inf)
    if Cs is not C:  # prices are in the cost's units: no warm start across a scaling
        prices, prev = None, None
    rows, col, v, n_aug = _solve(Cs, name, prices, prev)
    if Cs is not C:
        v = None
    picked = orig[rows, col]
    if np.isinf(C[rows, col]).any():
        raise ValueError("cost matrix is infeasible: no assignment avoids every forbidden pair")
    try:
        total = _total(picked)
    except OverflowError:
        raise ValueError(
            f"the optimal assignment's total cost overflows float64 (its {len(rows)} costs "
            f"reach {float(np.abs(picked).max()):.3g}): scale the cost matrix down"
        ) from None
    return LSAPResult(
        rows, col, cost=total, solver=name, prices=v, n_augment=n_aug, host_bytes=copied,
        device_to_host=d2h,
    )  # fmt: skip
