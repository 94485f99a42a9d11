"""Permuted Kronecker sums by alternating minimisation (TQCompressor; docs/permuted.md).

A permuted Kronecker sum approximates

    W ≈ P_r · (Σ_k A_k ⊗ B_k) · P_c,   i.e.   W[i, j] ≈ K[row_perm[i], col_perm[j]],

that is ``W ≈ K.to_dense()[row_perm][:, col_perm]``, with ``row_perm`` and ``col_perm``
permutations stored as index vectors.  :func:`permuted_kron` alternates exact block updates
— fit K to the un-permuted W by :func:`tqla.kron_svd`, then re-choose the permutations by
linear sum assignment (:mod:`tqla.assignment`) — and accepts a step only if it does not
increase the error, so the error history is non-increasing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from tqla._array import (
    array_namespace,
    as_float_matrix,
    c_contiguous,
    check_int,
    check_rng,
    device_of,
    is_numpy,
    is_torch,
    lib_name,
    take,
    to_numpy,
)
from tqla._estimator import _KronEstimator
from tqla._kernels import available
from tqla._permuted_base import _PermutedBase
from tqla.assignment import SlotsCost, assign_cost, check_max_bytes
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd
from tqla.lsap import LSAPResult, check_solver, lsap

__all__ = ["PermutedKronecker", "PermutedKroneckerApprox", "permuted_kron"]

logger = logging.getLogger(__name__)

Rule = Literal["slots", "assign", "slots+assign"]
Permute = Literal["both", "rows", "cols", "none"]

RULES = ("slots", "assign", "slots+assign")
PERMUTES = ("both", "rows", "cols", "none")


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------
class PermutedKronecker(_PermutedBase):
    """A Kronecker sum with row and column permutations: W ≈ K[row_perm][:, col_perm].

    Parameters
    ----------
    kron : KroneckerSum
        K = Σ A_k ⊗ B_k, in its own (un-permuted) frame.
    row_perm, col_perm : integer arrays of length M and N
        ``W[i, j] ≈ K[row_perm[i], col_perm[j]]``.  Arrays of K's library and device
        (int64); an identity when that side is not permuted.
    errors : list of float
        Relative Frobenius error ‖W − approx‖/‖W‖ after each iteration; ``errors[0]`` is
        the error of plain :func:`tqla.kron_svd` at the starting permutations (the
        identity, unless a random restart won).  For W = 0 the approximation is exactly
        0 and every error is 0 (the absolute error, as there is no scale to divide by).
    n_iter : int
        Iterations run (``len(errors) - 1``).
    permuted : tuple of two bools
        Whether rows / columns are permuted (counts toward :attr:`n_perm_indices`).
    timings : dict, optional
        Seconds spent in cost builds (``"cost"``), LSAP solves (``"lsap"``, host
        transfers included), refits and error evaluations (``"svd"``), gathers of W into
        the new arrangement (``"gather"``), ``"total"``, plus
        counters (``"n_lsap"``, ``"host_copies"``, ``"host_bytes"``).
    restart_errors : list of float, optional
        Final error of every restart (the best is kept).

    Notes
    -----
    Products apply the permutations as gathers around K's factored product, never forming
    a dense matrix: ``W @ x ≈ (K @ x[inv(col_perm)])[row_perm]``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> K = KroneckerSum(rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 2)))
    >>> P = PermutedKronecker(K, np.array([3, 1, 0, 2]), np.arange(6), [0.0], 0)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(P @ x, P.to_dense() @ x))
    True
    """

    def __init__(
        self,
        kron: KroneckerSum,
        row_perm: Any,
        col_perm: Any,
        errors: list[float],
        n_iter: int,
        *,
        permuted: tuple[bool, bool] | None = None,
        timings: dict[str, float] | None = None,
        restart_errors: list[float] | None = None,
    ):
        if not isinstance(kron, KroneckerSum):
            raise TypeError(f"kron must be a KroneckerSum, got {type(kron).__name__}")
        self.kron = kron
        self._init_perms(kron, kron.A, row_perm, col_perm, errors, n_iter, permuted, timings)
        self.restart_errors = [float(e) for e in restart_errors] if restart_errors else []

    # -- descriptive ---------------------------------------------------------------
    @property
    def kshape(self) -> KroneckerShape:
        return self.kron.kshape

    @property
    def rank(self) -> int:
        return self.kron.rank

    @property
    def dtype(self) -> Any:
        return self.kron.dtype

    @property
    def n_params(self) -> int:
        """Factor entries of K (permutation indices are counted by :attr:`n_perm_indices`)."""
        return self.kron.n_params

    def __repr__(self) -> str:
        s = self.kshape
        return (
            f"PermutedKronecker(shape={self.shape}, A={s.a}, B={s.b}, rank={self.rank}, "
            f"permuted rows={self.permuted[0]} cols={self.permuted[1]}, "
            f"error={self.errors[-1]:.4g}, n_iter={self.n_iter})"
        )

    @property
    def T(self) -> PermutedKronecker:
        """The transpose: Wᵀ ≈ Kᵀ[col_perm][:, row_perm]."""
        return PermutedKronecker(
            self.kron.T,
            self.col_perm,
            self.row_perm,
            self.errors,
            self.n_iter,
            permuted=(self.permuted[1], self.permuted[0]),
            timings=self.timings,
            restart_errors=self.restart_errors,
        )

    # -- products (to_dense, matmat, rmatmat: tqla._permuted_base) --------------------
    def _check_matmat(self, X: Any) -> None:
        if X.ndim == 0:
            raise ValueError(f"approx @ X needs X with {self.shape[1]} rows, got a scalar")
        axis = 0 if X.ndim <= 2 else X.ndim - 2
        if int(X.shape[axis]) != self.shape[1]:
            raise ValueError(
                f"approx @ X needs X with {self.shape[1]} rows (shape {self.shape}), "
                f"got shape {tuple(X.shape)}"
            )

    def _check_rmatmat(self, X: Any) -> None:
        if X.ndim == 0 or int(X.shape[-1]) != self.shape[0]:
            raise ValueError(
                f"X @ approx needs X with {self.shape[0]} columns (shape {self.shape}), "
                f"got shape {tuple(X.shape)}"
            )


# --------------------------------------------------------------------------------------
# The alternating minimisation
# --------------------------------------------------------------------------------------
def _sync(x: Any) -> None:
    """Wait for queued device work so timings are attributed correctly."""
    xp = array_namespace(x)
    if is_torch(xp):
        dev = device_of(x)
        if getattr(dev, "type", "cpu") == "cuda":
            import torch

            torch.cuda.synchronize(dev)
    elif lib_name(xp) == "cupy":  # pragma: no cover - GPU only
        import cupy

        cupy.cuda.get_current_stream().synchronize()


class _Run:
    """State of one start of the alternating minimisation (:meth:`start` begins it)."""

    inv: dict[str, np.ndarray]  # K index -> W index, per side (set by start)
    U: Any  # W in K's frame
    K: KroneckerSum
    err: float

    def __init__(self, W, s, rank, xp, norm, rng, kernel, solver, warm_start, max_bytes, timings):
        self.W = W
        self.s = s
        self.rank = rank
        self.xp = xp
        self.norm2 = norm * norm  # ‖W‖²
        self.norm = norm if norm > 0 else 1.0  # divisor: ‖W‖ = 0 leaves the error absolute
        self.rng = rng
        self.kernel = kernel
        self.svd_kernel = _svd_kernel(kernel, solver, xp)
        self.solver = solver
        self.warm_start = warm_start
        self.max_bytes = max_bytes
        self.t = timings
        self.warm: dict[tuple, LSAPResult] = {}

    # -- fitting -------------------------------------------------------------------
    def start(self, inv_rows: np.ndarray, inv_cols: np.ndarray) -> None:
        self.inv = {"rows": inv_rows, "cols": inv_cols}
        xp = self.xp
        U = self.W
        if not _is_identity(inv_rows):
            U = take(xp, U, inv_rows, 0)
        if not _is_identity(inv_cols):
            U = take(xp, U, inv_cols, 1)
        if is_numpy(xp):
            U = c_contiguous(U)
        self.U = U
        self.K, self.err = self.fit(U)

    def fit(self, U: Any) -> tuple[KroneckerSum, float]:
        """K = kron_svd(U) and its relative error ‖U − K‖/‖W‖."""
        t0 = time.perf_counter()
        K = kron_svd(U, self.s, self.rank, rng=self.rng, kernel=self.svd_kernel)
        err = self.error(U, K)
        self.t["svd"] += time.perf_counter() - t0
        return K, err

    def error(self, U: Any, K: KroneckerSum) -> float:
        """‖U − K‖_F / ‖W‖ for K = kron_svd(U), without a pass over U when it is not tiny.

        K is the truncated SVD of X = R(U), K = X·V·Vᵀ for an orthonormal V (every route
        of kron_svd), so ⟨X, K⟩ = ‖K‖² and ‖U − K‖² = ‖W‖² − ‖K‖², with ‖K‖² =
        Σ_{k,l} (A_k·A_l)(B_k·B_l) from two r×r Gram matrices, summed in float64.  The
        identity loses relative accuracy when the error is below ~3% of ‖W‖ (cancellation),
        so then the error is recomputed directly from the dense difference.
        """
        xp = self.xp
        r = K.rank
        Af = xp.reshape(K.A, (r, -1))
        Bf = xp.reshape(K.B, (r, -1))
        Ga = _as_host64(xp.matmul(Af, _T(Af)))
        Gb = _as_host64(xp.matmul(Bf, _T(Bf)))
        e2 = self.norm2 - float(np.sum(Ga * Gb))
        if e2 > 1e-3 * self.norm2:
            return float(np.sqrt(e2)) / self.norm
        D = U - K.to_dense()
        return float(xp.sqrt(xp.sum(D * D))) / self.norm

    def solve(self, cost: Any, key: tuple, t_build: float) -> np.ndarray:
        """LSAP of ``cost`` (whose build started at ``t_build``); returns col_ind."""
        _sync(cost)
        t1 = time.perf_counter()
        self.t["cost"] += t1 - t_build
        init = self.warm.get(key) if self.warm_start else None
        res = lsap(cost, solver=self.solver, init=init)
        self.t["host_copies"] += res.host_bytes > 0
        self.t["host_bytes"] += res.host_bytes
        self.t["n_lsap"] += 1
        self.t["lsap"] += time.perf_counter() - t1
        if self.warm_start and res.prices is not None:
            n = len(res.col_ind)
            # the solution becomes the identity once applied: keep its prices as the start
            self.warm[key] = LSAPResult(
                np.arange(n), np.arange(n), cost=res.cost, solver=res.solver, prices=res.prices
            )
        return res.col_ind

    # -- steps ---------------------------------------------------------------------
    def _oriented(self, side: str) -> tuple[Any, KroneckerShape, KroneckerSum]:
        if side == "rows":
            return self.U, self.s, self.K
        return _T(self.U), self.s.T, self.K.T

    def step(self, rule: str, side: str) -> bool:
        """One update of one side; returns True if it was accepted."""
        xp = self.xp
        Uo, so, Ko = self._oriented(side)
        # g: the new K-row k takes the old K-row g[k] (both branches below set it)
        t_build = time.perf_counter()
        if rule == "slots":
            sweep = SlotsCost(
                Uo, so, Ko, kernel=self.kernel, max_bytes=self.max_bytes,
                projection_kernel=self.svd_kernel,
            )  # fmt: skip
            for slot in range(so.m2):
                if slot:
                    t_build = time.perf_counter()
                col = self.solve(sweep.cost(slot), ("slots", side, slot), t_build)
                t0 = time.perf_counter()
                sweep.assign(slot, col)
                self.t["cost"] += time.perf_counter() - t0
            g = sweep.order
        else:  # assign
            cost = assign_cost(Uo, Ko, max_bytes=self.max_bytes)
            col = self.solve(cost, ("assign", side), t_build)
            g = np.argsort(col)
        if _is_identity(g):
            return False
        t0 = time.perf_counter()
        # gathered along U's own axis, so U stays C-ordered (no transposed copies later)
        Unew = take(xp, self.U, g, 0 if side == "rows" else 1)
        self.t["gather"] += time.perf_counter() - t0
        Knew, err = self.fit(Unew)
        if err <= self.err:
            self.U, self.K, self.err = Unew, Knew, err
            self.inv[side] = self.inv[side][g]
            return True
        logger.debug("step %s/%s rejected: error %.6g > %.6g", rule, side, err, self.err)
        return False


def _svd_kernel(kernel: str, solver: Any, xp: Any) -> str:
    """The Gram-route kernel of the refits.  ``kernel="auto"`` on NumPy input takes the
    Numba kernels when the LSAP solves use the Numba solver anyway (``solver="auto"``
    or ``"jv"`` with Numba installed): Numba's load is then paid already, and its Gram
    route reads W in place (about 2× faster per refit, float64 accumulation)."""
    if kernel != "auto":
        return kernel if kernel in available("rearranged_gram") else "auto"
    first = check_solver(solver)[0]
    if is_numpy(xp) and first in ("auto", "jv") and "numba" in available("rearranged_gram"):
        return "numba"
    return "auto"


def _as_host64(x: Any) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float64)


def _T(x: Any) -> Any:
    return array_namespace(x).permute_dims(x, (1, 0))


def _is_identity(p: np.ndarray) -> bool:
    return bool(np.array_equal(p, np.arange(len(p))))


def _norm(xp: Any, W: Any) -> float:
    """‖W‖_F accumulated in float64 (W's dtype may be float32)."""
    return float(xp.sqrt(xp.sum(xp.astype(W, xp.float64) ** 2)))


def _check_tol(tol: Any) -> float:
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a number >= 0, got {tol!r}") from None
    if not (tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return tol


# Longer than ~80 lines on purpose: argument validation, then the alternating loop written out
# step by step (slot LSAP, refit, assign LSAP, refit, acceptance guard) so that the order of the
# steps and the monotonicity guard read in one place, as in docs/permuted.md.
def permuted_kron(
    W: Any,
    shape: Any,
    rank: int = 1,
    *,
    rule: Rule = "slots+assign",
    permute: Permute = "both",
    n_iter: int = 10,
    tol: float = 1e-4,
    n_restarts: int = 1,
    rng: None | int | np.random.Generator = None,
    kernel: str = "auto",
    solver: str = "auto",
    warm_start: bool = False,
    max_cost_bytes: int | None = None,
    callback: Callable[[int, float], Any] | None = None,
) -> PermutedKronecker:
    """Permuted Kronecker sum approximation W ≈ K[row_perm][:, col_perm].

    Alternating minimisation of ‖W − P_r K P_c‖_F (docs/permuted.md): fit K to the
    un-permuted W by :func:`tqla.kron_svd` (exact), then re-choose the permutations of the
    permuted sides by linear sum assignment, refit, and keep a step only if the error does
    not increase.

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
        Real floating matrix of any array library (NumPy, torch CPU/CUDA, CuPy,
        array_api_strict, ...); cost builds and SVDs run on its device, the LSAP solves on
        the host in float64.
    shape : KroneckerShape or ((m1, n1), (m2, n2))
        Factor shapes of A (m1×n1) and B (m2×n2).
    rank : int
        Kronecker rank r, 1 ≤ r ≤ min(m1·n1, m2·n2).
    rule : {"slots+assign", "slots", "assign"}
        The permutation update (see :mod:`tqla.assignment`).  ``"slots"`` holds the span of
        the B factors and re-assigns, slot by slot, the m1 rows that share a row index of B
        among the block-rows, letting A re-fit (m1×m1 problems).  ``"assign"`` holds K and
        re-assigns every row at once (an M×M problem); it can move a row to another slot,
        which ``"slots"`` cannot.  ``"slots+assign"`` (default) runs ``"slots"`` sweeps
        and, once they stop improving by ``tol``, polishes with ``"assign"`` steps (each
        followed by a ``"slots"`` sweep) within the same ``n_iter`` budget.
    permute : {"both", "rows", "cols", "none"}
        Which sides to permute.  ``"rows"`` permutes the M side — W's rows, the output
        features of an ``nn.Linear`` weight (out × in) — through ``row_perm``; ``"cols"``
        the N side (input features) through ``col_perm``.  ``"none"`` returns plain
        :func:`tqla.kron_svd` in this result type.  A side whose factors make a
        permutation useless — m1 = 1 or m2 = 1 for rows, n1 = 1 or n2 = 1 for columns — is
        never permuted (so a 50257-row embedding with B of shape 1×2 never builds a 50257²
        cost matrix).
    n_iter : int
        Maximum number of iterations; one iteration updates both permuted sides, the larger
        one (more rows than columns: rows) first.
    tol : float
        Stop when an iteration improves the error by less than ``tol`` relative.
    n_restarts : int
        Number of starts: the identity, then random permutations of the permuted sides;
        the result with the lowest final error is kept.
    rng : None, int or numpy.random.Generator
        Random state of the restarts (and of a randomized SVD, when one is used).
    kernel : {"auto", "numpy", "numba", "array_api"}
        Implementation of the slot-cost kernel (and of the SVD's Gram kernel where one
        exists; with "auto", the refits use the Numba Gram kernels when the LSAP solver is
        Numba's ``"jv"``, else NumPy's).
    solver : {"auto", "scipy", "lap", "lapx", "jv"} or tuple of names
        LSAP solver (:func:`tqla.lsap`); a tuple is tried in order, ``"auto"`` is
        :data:`tqla.lsap.AUTO_ORDER`.
    warm_start : bool
        Start each LSAP from the prices of the previous solve of the same (rule, side,
        slot) when the solver accepts it (``"jv"``).
    max_cost_bytes : int, optional
        Memory ceiling for one cost build, a positive number of bytes (default
        :func:`tqla.assignment.default_max_cost_bytes`: the environment variable
        ``TQLA_MAX_COST_BYTES`` when set, else min(2 GiB, a quarter of the physical
        memory)); a larger build raises MemoryError.
    callback : callable, optional
        ``callback(iteration, error)`` after every iteration; a truthy return value
        (``True``, ``np.True_``, ``1``, ...) stops.

    Returns
    -------
    PermutedKronecker

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((4, 3)), rng.standard_normal((2, 2))
    >>> W = np.kron(A, B)[rng.permutation(8)]                 # rows scrambled
    >>> P = permuted_kron(W, ((4, 3), (2, 2)), rank=1, permute="rows", n_restarts=4, rng=0)
    >>> P.errors[0] > 0.1, P.errors[-1] < 1e-8
    (True, True)
    >>> bool(np.allclose(P.to_dense(), W))
    True
    """
    t_start = time.perf_counter()
    xp, W = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(W)
    rank = s.check_rank(rank)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if permute not in PERMUTES:
        raise ValueError(f"permute must be one of {PERMUTES}, got {permute!r}")
    n_iter = check_int(n_iter, "n_iter", minimum=0)
    n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
    tol = _check_tol(tol)
    check_solver(solver)
    max_cost_bytes = check_max_bytes(max_cost_bytes, "max_cost_bytes")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    gen = check_rng(rng)
    M, N = s.matrix_shape
    rows_on = permute in ("both", "rows") and s.m1 > 1 and s.m2 > 1
    cols_on = permute in ("both", "cols") and s.n1 > 1 and s.n2 > 1
    for side, on in (("rows", rows_on), ("cols", cols_on)):
        if permute in ("both", side) and not on:
            logger.info("permuted_kron: %s not permuted (a factor dimension is 1)", side)
    # the larger side first: it has the more freedom, and its optimisation is the one the
    # other side should adapt to (measured on MiniLM's FFN weights, docs/permuted.md)
    sides = [sd for sd, on in (("rows", rows_on), ("cols", cols_on)) if on]
    if len(sides) == 2 and N > M:
        sides.reverse()

    timings = {
        "cost": 0.0,
        "lsap": 0.0,
        "svd": 0.0,
        "gather": 0.0,
        "total": 0.0,
        "n_lsap": 0,
        "host_copies": 0,
        "host_bytes": 0,
    }
    norm = _norm(xp, W)  # 0 for W = 0: every error is then 0 (see _Run.error)
    best = None
    restart_errors = []
    for restart in range(n_restarts if sides else 1):
        run = _Run(W, s, rank, xp, norm, gen, kernel, solver, warm_start, max_cost_bytes, timings)
        inv_r, inv_c = np.arange(M), np.arange(N)
        if restart > 0:
            if rows_on:
                inv_r = gen.permutation(M)
            if cols_on:
                inv_c = gen.permutation(N)
        run.start(inv_r, inv_c)
        errors = [run.err]
        phase = "slots" if rule in ("slots", "slots+assign") else "assign"
        for it in range(n_iter if sides else 0):
            prev = run.err
            steps = [phase] if phase != "polish" else ["assign", "slots"]
            for r_ in steps:
                for sd in sides:
                    run.step(r_, sd)
            errors.append(run.err)
            stop = callback(it, run.err) if callback is not None else None
            logger.debug("restart %d iteration %d (%s): error %.6g", restart, it, phase, run.err)
            if stop is not None and bool(stop):  # any truthy value: True, np.True_, 1
                break
            stalled = prev - run.err <= tol * prev
            if stalled:
                if rule == "slots+assign" and phase == "slots":
                    phase = "polish"
                    continue
                break
        restart_errors.append(run.err)
        if best is None or run.err < best[0].err:
            best = (run, errors)
    run, errors = best
    row_perm = np.argsort(run.inv["rows"])
    col_perm = np.argsort(run.inv["cols"])
    timings["total"] = time.perf_counter() - t_start
    return PermutedKronecker(
        run.K,
        row_perm,
        col_perm,
        errors,
        len(errors) - 1,
        permuted=(rows_on, cols_on),
        timings=timings,
        restart_errors=restart_errors,
    )


# --------------------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------------------
class PermutedKroneckerApprox(_KronEstimator):
    """Estimator-style wrapper of :func:`permuted_kron`.

    Parameters are those of :func:`permuted_kron`.  :meth:`fit` sets ``result_``
    (a :class:`PermutedKronecker`), ``errors_``, ``n_iter_``, ``row_perm_``, ``col_perm_``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> est = PermutedKroneckerApprox(((4, 3), (2, 2)), rank=1, n_iter=3).fit(W)
    >>> est.errors_[-1] <= est.errors_[0]
    True
    """

    def fit(self, W: Any) -> PermutedKroneckerApprox:
        self.result_ = permuted_kron(W, self.shape, self.rank, **self.kwargs)
        self.errors_ = self.result_.errors
        self.n_iter_ = self.result_.n_iter
        self.row_perm_ = self.result_.row_perm
        self.col_perm_ = self.result_.col_perm
        return self
