"""Linear sum assignment for permuted Kronecker sums (methods.md §2).

Two things live here:

* **cost builders** for the two update rules of the alternating minimisation in
  :mod:`tqla.permuted` — :func:`assign_cost` (hold K fixed) and :func:`slots_cost` (hold
  the span of the B factors fixed, let A re-fit) — built on the arrays' own library and
  device, with the memory they need estimated and checked first;
* :func:`lsap`, a square linear-sum-assignment front end over several solvers: SciPy's
  ``linear_sum_assignment`` (the reference), ``lap.lapjv`` and lapx's ``lapjvc``
  (Jonker–Volgenant, ``pip install 'tqla[lap]'``), and ``"jv"``, tqla's own Numba
  Jonker–Volgenant shortest-augmenting-path solver, the only one that accepts a warm start
  (``init=`` a previous :class:`LSAPResult`).

Conventions
-----------
A permuted Kronecker sum approximates ``W ≈ K.to_dense()[row_perm][:, col_perm]``, that is
``W[i, j] ≈ K[row_perm[i], col_perm[j]]``.  Cost matrices index *sources* by row and
*targets* by column: ``cost[i, t]`` is the cost of sending W's row i (or, in the slot
form, the candidate now in block-row i) to K's row t; ``lsap(cost).col_ind[i]`` is then
the new ``row_perm[i]``.  Columns are handled by transposition: ``side="cols"`` is the
row problem of ``Wᵀ ≈ Kᵀ[col_perm][:, row_perm]``.

Host round trips
----------------
Every solver runs on the host in float64.  A cost matrix of another library or device
(torch CUDA, CuPy, ...) or of another dtype is copied to a host float64 array once per
:func:`lsap` call; :func:`transfer_stats` counts those copies and their bytes so that
benchmarks can report them.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Literal

import numpy as np

from tqla._array import (
    array_namespace,
    as_float_matrix,
    check_int,
    check_permutation,
    from_numpy,
    is_numpy,
    lib_name,
    to_numpy,
)
from tqla._kernels import available, get_kernel
from tqla.kron import KroneckerShape, KroneckerSum

__all__ = [
    "LSAPResult",
    "SOLVERS",
    "assign_cost",
    "available_solvers",
    "check_cost_memory",
    "default_max_cost_bytes",
    "lsap",
    "reset_transfer_stats",
    "slots_basis",
    "slots_cost",
    "transfer_stats",
]

logger = logging.getLogger(__name__)

Side = Literal["rows", "cols"]

#: Solver names accepted by :func:`lsap`.
SOLVERS = ("auto", "scipy", "lap", "lapx", "jv")

_GiB = 1024**3

#: Default ceiling for one cost build; ``None`` = min(2 GiB, a quarter of physical memory).
MAX_COST_BYTES: int | None = None


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------
def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def default_max_cost_bytes() -> int:
    """The memory ceiling for one cost build when none is given.

    ``tqla.assignment.MAX_COST_BYTES`` when set, else the environment variable
    ``TQLA_MAX_COST_BYTES``, else min(2 GiB, a quarter of the physical memory).
    """
    if MAX_COST_BYTES is not None:
        return int(MAX_COST_BYTES)
    env = os.environ.get("TQLA_MAX_COST_BYTES")
    if env:
        return int(float(env))
    phys = _physical_memory()
    return min(2 * _GiB, phys // 4) if phys else 2 * _GiB


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_cost_memory(
    n: int, itemsize: int, *, what: str, extra_bytes: int = 0, max_bytes: int | None = None
) -> int:
    """Refuse a cost build of an n×n matrix that would exceed ``max_bytes``.

    The estimate counts the cost matrix in its dtype, the float64 host copy the LSAP solver
    needs (skipped when the matrix already is float64 on the host, but counted anyway to
    stay on the safe side) and ``extra_bytes`` of other temporaries.

    Returns the estimate in bytes; raises :class:`MemoryError` naming the size and what to
    do when it does not fit.

    Examples
    --------
    >>> check_cost_memory(1000, 8, what="test")
    16000000
    """
    limit = default_max_cost_bytes() if max_bytes is None else int(max_bytes)
    matrix = int(n) * int(n) * (int(itemsize) + 8)
    need = matrix + int(extra_bytes)
    if need > limit:
        extra = f", plus {_fmt_bytes(extra_bytes)} of temporaries" if extra_bytes else ""
        raise MemoryError(
            f"{what}: the {n}×{n} cost matrix would need about {_fmt_bytes(need)} "
            f"({n}² entries × ({itemsize} bytes + 8 for the float64 host copy the LSAP "
            f"solver needs) = {_fmt_bytes(matrix)}{extra}), over the limit of "
            f"{_fmt_bytes(limit)}. Permute only the other side (permute='rows'/'cols'), use "
            f"rule='slots' whose cost matrices are m1×m1 instead of M×M, choose factor shapes "
            f"with a smaller side, or raise the limit with max_cost_bytes= (or "
            f"tqla.assignment.MAX_COST_BYTES / the TQLA_MAX_COST_BYTES environment variable)."
        )
    return need


# --------------------------------------------------------------------------------------
# Host round trips
# --------------------------------------------------------------------------------------
_STATS = {"calls": 0, "host_copies": 0, "device_to_host": 0, "bytes": 0}


def transfer_stats() -> dict[str, int]:
    """Counters of :func:`lsap`'s input conversions since the last reset (process-wide and
    not synchronised between threads; a single solve's copy is ``LSAPResult.host_bytes``).

    ``calls``: solves; ``host_copies``: inputs that had to be copied to a host float64
    array (another dtype, layout or library); ``device_to_host``: those that came from a
    non-NumPy library (a GPU → host transfer on a GPU); ``bytes``: bytes of those copies.
    """
    return dict(_STATS)


def reset_transfer_stats() -> None:
    """Zero the counters of :func:`transfer_stats`."""
    for k in _STATS:
        _STATS[k] = 0


def _host(x: Any) -> np.ndarray:
    """A host NumPy copy of any array (torch, CuPy, array_api_strict, ...)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return to_numpy(x)
    except (ValueError, TypeError, RuntimeError):
        # libraries without a "cpu" device name (array_api_strict): go through DLPack
        return np.from_dlpack(x)


def _to_host_float64(cost: Any) -> np.ndarray:
    if isinstance(cost, np.ndarray):
        if cost.dtype == np.float64 and cost.flags.c_contiguous:
            return cost
        out = np.ascontiguousarray(cost, dtype=np.float64)
        _STATS["host_copies"] += 1
        _STATS["bytes"] += out.nbytes
        return out
    xp = array_namespace(cost)
    out = np.ascontiguousarray(_host(cost), dtype=np.float64)
    _STATS["host_copies"] += 1
    if not is_numpy(xp):
        _STATS["device_to_host"] += 1
    _STATS["bytes"] += out.nbytes
    return out


# --------------------------------------------------------------------------------------
# LSAP
# --------------------------------------------------------------------------------------
class LSAPResult(tuple):
    """Result of :func:`lsap`: unpacks like SciPy's ``(row_ind, col_ind)``.

    Attributes
    ----------
    row_ind, col_ind : numpy.ndarray of int64
        ``row_ind`` is ``arange(n)``; row ``i`` is assigned to column ``col_ind[i]``.
    cost : float
        Total cost Σ cost[i, col_ind[i]] (a float64 sum over the input).
    solver : str
        The solver that ran.
    prices : numpy.ndarray or None
        Column dual variables (``"jv"`` only); pass the result as ``init=`` to warm-start a
        close problem.
    n_augment : int or None
        Augmenting paths the ``"jv"`` solver needed (0 when the warm start was optimal).
    host_bytes : int
        Bytes of the float64 host copy this solve made of ``cost`` (0 when ``cost`` already
        was a C-ordered float64 NumPy array).

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
    ) -> LSAPResult:
        self = super().__new__(cls, (row_ind, col_ind))
        self.cost = float(cost)
        self.solver = solver
        self.prices = prices
        self.n_augment = n_augment
        self.host_bytes = int(host_bytes)
        return self

    @property
    def row_ind(self) -> np.ndarray:
        return self[0]

    @property
    def col_ind(self) -> np.ndarray:
        return self[1]

    def __repr__(self) -> str:
        return f"LSAPResult(n={len(self[0])}, cost={self.cost!r}, solver={self.solver!r})"


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


#: What ``solver="auto"`` tries, in order, for cold solves (no ``init``), and for warm
#: starts; set from benchmarks/results/lsap_*.md on the reference 2-core machine.
AUTO_COLD: tuple[str, ...] = ("jv", "scipy")
AUTO_WARM: tuple[str, ...] = ("jv", "scipy")


def _pick_auto(warm: bool, has_inf: bool) -> str:
    for name in AUTO_WARM if warm else AUTO_COLD:
        if has_inf and name in ("lap", "lapx"):
            continue
        if name == "scipy":
            return name
        try:
            _LOADERS[name]()
        except ImportError:
            continue
        return name
    return "scipy"


def _check_cost(cost: Any) -> np.ndarray:
    """Validate an LSAP cost matrix; return it as a host float64 C-contiguous array."""
    if isinstance(cost, (list, tuple)):
        cost = np.asarray(cost)
    if not hasattr(cost, "shape") or not hasattr(cost, "dtype"):
        raise TypeError(f"cost must be an array, got {type(cost).__name__}")
    if len(cost.shape) != 2:
        raise ValueError(f"cost must be a 2-D array, got shape {tuple(cost.shape)}")
    n, m = (int(v) for v in cost.shape)
    if n != m:
        raise ValueError(
            f"cost must be square (n×n): tqla.lsap solves perfect matchings, got shape "
            f"({n}, {m}); pad it to a square or use scipy.optimize.linear_sum_assignment "
            f"for rectangular problems"
        )
    if isinstance(cost, np.ndarray):
        if cost.dtype == np.bool_ or not (
            np.issubdtype(cost.dtype, np.floating) or np.issubdtype(cost.dtype, np.integer)
        ):
            raise TypeError(f"cost must hold real numbers, got dtype {cost.dtype}")
    C = _to_host_float64(cost)
    if C.size and not np.isfinite(C.sum()):
        if np.isnan(C).any():
            raise ValueError("cost must not contain NaN")
        if np.isneginf(C).any():
            raise ValueError(
                "cost must not contain -inf: an assignment cannot be infinitely good "
                "(use +inf to forbid a pair)"
            )
    return C


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


def lsap(
    cost: Any,
    *,
    solver: str = "auto",
    init: LSAPResult | Any | None = None,
) -> LSAPResult:
    """Solve the square linear sum assignment problem min Σ_i cost[i, σ(i)].

    Parameters
    ----------
    cost : array of shape (n, n)
        Real costs of any array library; ``+inf`` forbids a pair (``"scipy"`` and
        ``"jv"`` only).  Solvers run on the host in float64: a matrix of another library,
        device or dtype is copied once (counted by :func:`transfer_stats`).
    solver : {"auto", "scipy", "lap", "lapx", "jv"}
        ``"scipy"``: :func:`scipy.optimize.linear_sum_assignment`, the reference.
        ``"lap"``: ``lap.lapjv``; ``"lapx"``: lapx's ``lapjvc`` (Jonker–Volgenant;
        ``pip install 'tqla[lap]'``).  ``"jv"``: tqla's Numba Jonker–Volgenant
        shortest-augmenting-path solver, which accepts ``init`` (``pip install
        'tqla[numba]'``).  ``"auto"`` picks from :data:`AUTO_COLD` / :data:`AUTO_WARM`, the
        orders measured fastest by ``benchmarks/bench_lsap.py``.
    init : LSAPResult, array of shape (n,), or None
        Warm start: a previous ``"jv"`` result of a problem of the same size (its column
        prices and assignment), or column prices alone.  Rows whose previous column is still
        a cheapest column at these prices keep it and only the others are augmented, so a
        problem close to the previous one is solved with few augmentations.  The optimum
        does not depend on ``init``.  Solvers other than ``"jv"`` ignore it (logged at
        debug level).

    Returns
    -------
    LSAPResult
        ``row_ind, col_ind`` (host NumPy int64 arrays, ``row_ind = arange(n)``), with the
        total ``.cost``, ``.solver`` and, for ``"jv"``, ``.prices`` for a later warm start.

    Raises
    ------
    ValueError
        If ``cost`` is not 2-D, not square, holds NaN or −inf, or forbids every complete
        assignment; or ``solver`` is unknown.
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
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    C = _check_cost(cost)
    copied = 0 if C is cost else C.nbytes
    n = C.shape[0]
    _STATS["calls"] += 1
    prices, prev = _init_prices(init, n)
    has_inf = bool(n) and not np.isfinite(C.sum())
    if solver == "auto":
        solver = _pick_auto(prices is not None, has_inf)
    if has_inf and solver in ("lap", "lapx"):
        raise ValueError(
            f"cost holds +inf (forbidden pairs), which solver={solver!r} does not support; "
            f"use solver='scipy' or 'jv'"
        )
    rows = np.arange(n, dtype=np.int64)
    if n == 0:
        return LSAPResult(rows, rows.copy(), cost=0.0, solver=solver, host_bytes=copied)
    if (init is not None) and solver != "jv":
        logger.debug("lsap: solver=%r has no warm start; init ignored", solver)
    v = None
    n_aug = None
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment

        _, col = linear_sum_assignment(C)
    elif solver == "lap":
        _, col, _ = _import_lap()(C, extend_cost=False)
    elif solver == "lapx":
        r, c = _import_lapx()(C, return_cost=False)
        col = np.empty(n, dtype=np.int64)
        col[np.asarray(r, dtype=np.int64)] = c
    else:  # "jv"
        col, v, n_aug = _import_jv()(C, prices, prev)
    col = np.asarray(col, dtype=np.int64)
    total = float(C[rows, col].sum())
    if not np.isfinite(total):
        raise ValueError("cost matrix is infeasible: no assignment avoids every +inf entry")
    return LSAPResult(
        rows, col, cost=total, solver=solver, prices=v, n_augment=n_aug, host_bytes=copied
    )


# --------------------------------------------------------------------------------------
# Cost builders
# --------------------------------------------------------------------------------------
def _check_side(side: str) -> None:
    if side not in ("rows", "cols"):
        raise ValueError(f"side must be 'rows' or 'cols', got {side!r}")


def _check_perm(p: Any, n: int, name: str) -> np.ndarray | None:
    """:func:`tqla.check_permutation`, or None for None (the identity)."""
    return None if p is None else check_permutation(p, n, name)


def _take(xp: Any, x: Any, idx: np.ndarray, axis: int) -> Any:
    return xp.take(x, from_numpy(np.ascontiguousarray(idx, dtype=np.int64), x), axis=axis)


def _transpose(xp: Any, x: Any) -> Any:
    return xp.permute_dims(x, (1, 0))


def slots_basis(K: KroneckerSum, side: Side = "rows") -> Any:
    """Orthonormal basis V of span{vec(B_k)}: the subspace the ``slots`` rule holds.

    Returns an (m2·n2, r) array (for ``side="cols"``, the (n2·m2, r) basis of the
    transposed sum, whose rows are ordered (j2, i2)).  For the output of
    :func:`tqla.kron_svd` these are the top-r right singular vectors of R(W).

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> K = kron_svd(np.random.default_rng(0).standard_normal((6, 8)), ((3, 4), (2, 2)), 2)
    >>> V = slots_basis(K)
    >>> V.shape, bool(np.allclose(V.T @ V, np.eye(2)))
    ((4, 2), True)
    """
    _check_side(side)
    if not isinstance(K, KroneckerSum):
        raise TypeError(f"K must be a KroneckerSum, got {type(K).__name__}")
    if side == "cols":
        K = K.T
    xp = K.xp
    r = K.rank
    Bf = xp.reshape(K.B, (r, -1))
    Q, _ = xp.linalg.qr(_transpose(xp, Bf))
    return Q


def _check_basis(xp: Any, V: Any, p: int, name: str = "V") -> Any:
    if isinstance(V, KroneckerSum):
        raise TypeError("pass slots_basis(K) or K itself through the K= argument")
    if len(V.shape) != 2 or int(V.shape[0]) != p:
        raise ValueError(
            f"{name} must be an (m2·n2, r) = ({p}, r) orthonormal basis, got shape {tuple(V.shape)}"
        )
    return V


def _block_projections(xp: Any, U: Any, s: KroneckerShape, V: Any, kernel: str = "auto") -> Any:
    """Y = R(U) @ V reshaped (m1, n1, r): the held-basis coordinates of every block.

    One pass over U through the ``rearranged_matmul`` kernel (which reads U in place
    where an implementation can, else from one rearranged copy).
    """
    r = int(V.shape[1])
    impl = kernel if kernel in available("rearranged_matmul") else "auto"
    fn = get_kernel("rearranged_matmul", impl, U)
    Y = xp.reshape(fn(U, s, "right", V), (s.m1, s.n1, r))
    if is_numpy(xp):
        Y = np.ascontiguousarray(Y)  # the kernels' GEMMs want a C-ordered Y
    return Y


def _slot_cost(xp: Any, U4: Any, s: KroneckerShape, V: Any, slot: int, Y: Any, kernel: str):
    """(cost, P) of one slot; ``U4`` is the aligned matrix reshaped (m1, m2, n1, n2)."""
    C = U4[:, slot, :, :]
    Vs = V[slot * s.n2 : (slot + 1) * s.n2, :]
    fn = get_kernel("slots_cost", kernel, U4)
    return fn(C, Vs, Y)


def _as_blocks(xp: Any, U: Any, s: KroneckerShape) -> Any:
    """U reshaped (m1, m2, n1, n2), from one C-ordered copy when U is a strided view."""
    if is_numpy(xp):
        U = np.ascontiguousarray(U)
    return xp.reshape(U, (s.m1, s.m2, s.n1, s.n2))


def _slot_extra_bytes(s: KroneckerShape, r: int, itemsize: int) -> int:
    # P, H and Y (m1·n1·r each) plus the candidate block copy (m1·n1·n2)
    return (3 * s.m1 * s.n1 * r + s.m1 * s.n1 * s.n2) * itemsize


def _assign_extra_bytes(M: int, N: int, itemsize: int) -> int:
    return 2 * M * N * itemsize  # dense K and its column-permuted copy


def _orient(
    xp: Any, W: Any, s: KroneckerShape, side: str, row_perm: Any, col_perm: Any
) -> tuple[Any, KroneckerShape, np.ndarray | None, np.ndarray | None]:
    """The rows-problem view: (W or Wᵀ, shape or shape.T, own perm, other perm)."""
    M, N = s.matrix_shape
    rp = _check_perm(row_perm, M, "row_perm")
    cp = _check_perm(col_perm, N, "col_perm")
    if side == "rows":
        return W, s, rp, cp
    return _transpose(xp, W), s.T, cp, rp


def _align(xp: Any, W: Any, own: np.ndarray | None, other: np.ndarray | None) -> Any:
    """U with U[own[i], other[j]] = W[i, j] (K's frame)."""
    if own is not None:
        W = _take(xp, W, np.argsort(own), 0)
    if other is not None:
        W = _take(xp, W, np.argsort(other), 1)
    return W


def slots_cost(
    W: Any,
    shape: Any,
    V: Any,
    slot: int,
    *,
    side: Side = "rows",
    row_perm: Any = None,
    col_perm: Any = None,
    kernel: str = "auto",
    max_bytes: int | None = None,
) -> Any:
    """Cost matrix of one slot of the ``slots`` rule (hold span{B_k}, let A re-fit).

    Let U be W brought into K's frame (``U[row_perm[i], col_perm[j]] = W[i, j]``) and
    X = R(U).  With V the held orthonormal basis of span{vec(B_k)} ((m2·n2) × r), the best
    error of a Kronecker sum whose B factors lie in that span is Σ_{i1,j1} ‖(I − VVᵀ)
    x_{i1,j1}‖², where x_{i1,j1} stacks the j1-th length-n2 segment of the m2 rows of
    block-row i1.  Slot ``s`` holds the m1 rows (i1, s); re-assigning them among the
    block-rows while every other row stays gives, for candidate c (the row now in
    block-row c) placed in block-row t,

        cost[c, t] = −Σ_{j1} ‖P_c[j1] + H_t[j1]‖²
                   = −‖P_c‖² − ‖H_t‖² − 2⟨P_c, H_t⟩,

    where P_c[j1] = V_sᵀ c_{j1} is the candidate's projection (V_s = V's rows of slot s)
    and H_t[j1] = Σ_{i2≠s} V_{i2}ᵀ u_{t,i2,j1} that of the held rows.  The cross term for
    all (c, t) is one GEMM (m1 × n1·min(r, n2) × m1); no n×n×d intermediate is formed.
    The total cost of an assignment σ is exactly ‖X_σ(I − VVᵀ)‖² − ‖W‖², so differences
    of totals are differences of refit errors.

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    V : KroneckerSum or array of shape (m2·n2, r)
        The held basis, or a KroneckerSum whose B factors span it (see :func:`slots_basis`).
        For ``side="cols"`` an array must be the basis of the transposed problem
        (``slots_basis(K, "cols")``).
    slot : int
        0 ≤ slot < m2 (rows) or n2 (columns).
    side : {"rows", "cols"}
        ``"cols"`` builds the column problem by transposition (slot < n2, size n1×n1).
    row_perm, col_perm : integer arrays or None
        The current permutations (identity when None).
    kernel : {"auto", "numpy", "numba", "array_api"}
        Implementation of the ``slots_cost`` kernel.
    max_bytes : int, optional
        Memory ceiling (default :func:`default_max_cost_bytes`).

    Returns
    -------
    array of shape (m1, m1)
        On W's library and device, in W's dtype; ``lsap(cost).col_ind[c]`` is the new
        block-row of the candidate now in block-row c.

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> W = np.random.default_rng(0).standard_normal((6, 8))
    >>> K = kron_svd(W, ((3, 4), (2, 2)), 1)
    >>> C = slots_cost(W, ((3, 4), (2, 2)), K, slot=1)
    >>> C.shape
    (3, 3)
    """
    xp, W = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(W)
    _check_side(side)
    if isinstance(V, KroneckerSum):
        if V.kshape != s:
            raise ValueError(
                f"K has factor shapes {V.kshape.a} ⊗ {V.kshape.b}, expected {s.a} ⊗ {s.b}"
            )
        V = slots_basis(V, side)
    Wr, sr, own, other = _orient(xp, W, s, side, row_perm, col_perm)
    V = _check_basis(xp, V, sr.m2 * sr.n2)
    slot = check_int(slot, "slot", minimum=0, maximum=sr.m2 - 1)
    r = int(V.shape[1])
    check_cost_memory(
        sr.m1,
        W.dtype.itemsize if hasattr(W.dtype, "itemsize") else 8,
        what=f"slots cost ({side})",
        extra_bytes=_slot_extra_bytes(sr, r, 8),
        max_bytes=max_bytes,
    )
    U = _align(xp, Wr, own, other)
    Y = _block_projections(xp, U, sr, V)
    cost, _ = _slot_cost(xp, _as_blocks(xp, U, sr), sr, V, slot, Y, kernel)
    return cost


def assign_cost(
    W: Any,
    K: Any,
    *,
    side: Side = "rows",
    row_perm: Any = None,
    col_perm: Any = None,
    max_bytes: int | None = None,
) -> Any:
    """Cost matrix of the ``assign`` rule (hold K fixed, re-choose one permutation).

    For rows, ``cost[i, t] = −W[i, :] · K[t, col_perm]`` — the GEMM −W·(K P_c)ᵀ.  The
    dropped terms ‖W_i‖² + ‖K_t‖² add the same constant to every assignment, so for any
    row permutation σ, Σ_i cost[i, σ(i)] = (‖W − K[σ][:, col_perm]‖² − const) / 2.
    ``side="cols"`` is the same for Wᵀ and Kᵀ with ``row_perm`` fixed.

    Parameters
    ----------
    W : array of shape (M, N)
    K : KroneckerSum or array of shape (M, N)
        The held approximation (K's frame, before permutation).
    side : {"rows", "cols"}
    row_perm, col_perm : integer arrays or None
        Only the permutation of the other side is used (``col_perm`` for rows).
    max_bytes : int, optional
        Memory ceiling (default :func:`default_max_cost_bytes`).  A 50257-row side would
        need a 50257² matrix (~20 GB in float32 plus its float64 host copy) and is refused.

    Returns
    -------
    array of shape (M, M) (rows) or (N, N) (cols), W's library, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from tqla.kron import kron_svd
    >>> W = np.random.default_rng(0).standard_normal((6, 8))
    >>> K = kron_svd(W, ((3, 4), (2, 2)), 1)
    >>> assign_cost(W, K).shape, assign_cost(W, K, side="cols").shape
    ((6, 6), (8, 8))
    """
    xp, W = as_float_matrix(W, "W")
    _check_side(side)
    M, N = (int(v) for v in W.shape)
    n = M if side == "rows" else N
    itemsize = W.dtype.itemsize if hasattr(W.dtype, "itemsize") else 8
    check_cost_memory(
        n,
        itemsize,
        what=f"assign cost ({side})",
        extra_bytes=_assign_extra_bytes(M, N, itemsize),
        max_bytes=max_bytes,
    )
    if isinstance(K, KroneckerSum):
        if K.shape != (M, N):
            raise ValueError(f"K of shape {K.shape} does not match W of shape {(M, N)}")
        Kd = K.to_dense()
    else:
        _, Kd = as_float_matrix(K, "K")
        if tuple(int(v) for v in Kd.shape) != (M, N):
            raise ValueError(f"K of shape {tuple(Kd.shape)} does not match W of shape {(M, N)}")
    if array_namespace(Kd) is not xp and lib_name(array_namespace(Kd)) != lib_name(xp):
        raise TypeError("W and K must be arrays of the same library")
    rp = _check_perm(row_perm, M, "row_perm")
    cp = _check_perm(col_perm, N, "col_perm")
    if side == "rows":
        Kp = _take(xp, Kd, cp, 1) if cp is not None else Kd
        return -xp.matmul(W, _transpose(xp, Kp))
    Kp = _take(xp, Kd, rp, 0) if rp is not None else Kd
    return -xp.matmul(_transpose(xp, W), Kp)
