"""Permuted TT-matrices: W ≈ T[row_perm][:, col_perm] by alternating minimisation.

The TQCompressor idea (methods.md §2) carried over to tensor trains (§5): rows and columns
of W are permuted so that those that belong together land in the same TT structure.  The
loop alternates TT refits (:func:`tqla.tt_matrix`) with linear sum assignments
(:func:`tqla.lsap`) built by the cost builders of :mod:`tqla.assignment`; docs/tt.md
derives the costs.

* **assign** holds T fixed: the cost of sending row i of W to row t of T is
  −W[i, :]·T[t, col_perm] (:func:`tqla.assign_cost`), exact for T held.
* **slots** holds the right part of the train: split the row index as (i_1, i_rest) and the
  column index as (j_1, j_rest).  A TT-matrix is then a Kronecker sum of rank r_1 with
  A_a = G_1[0, :, :, a] (m_1 × n_1) and B_a the (M/m_1) × (N/n_1) matrices of cores
  2..d.  Holding span{vec(B_a)} (an orthonormal V after right-orthogonalising cores 2..d)
  and letting the first core re-fit is exactly the ``slots`` problem of a Kronecker sum of
  shape ((m_1, n_1), (M/m_1, N/n_1)) (:func:`tqla.slots_cost`): each slot re-assigns the
  m_1 rows sharing i_rest among the values of i_1.

TT-SVD is quasi-optimal, not optimal, so a refit alone could increase the error.  Every
step therefore has two candidates, both at the new permutation: the held structure (T
itself for ``assign``; the projection R(U)·V·Vᵀ with the held right cores for ``slots``),
whose error is at most the current one because the identity is one of the assignments the
LSAP chose among, and the TT-SVD refit.  The better is kept, so the error history never
increases by construction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tqla._array import as_float_matrix, check_int, check_rng, take
from tqla._permuted_base import _PermutedBase
from tqla.assignment import assign_cost, slots_cost
from tqla.kron import KroneckerShape, rearrange
from tqla.lsap import SOLVERS, lsap
from tqla.tt import TensorTrain, _orthogonalize_right, check_modes, check_ranks
from tqla.tt_matrix import TTMatrix, tt_matrix

__all__ = ["PermutedTT", "permuted_tt"]

RULES = ("slots", "assign", "slots+assign")
PERMUTES = ("both", "rows", "cols", "none")


class PermutedTT(_PermutedBase):
    """A TT-matrix with row and column permutations: W ≈ T.to_dense()[row_perm][:, col_perm].

    Attributes
    ----------
    tt : TTMatrix
        T in its own (un-permuted) frame.
    row_perm, col_perm : integer arrays (T's library and device)
        ``W[i, j] ≈ T[row_perm[i], col_perm[j]]``.
    errors : list of float
        Relative Frobenius error after each iteration; ``errors[0]`` is plain
        :func:`tqla.tt_matrix` at the identity.
    n_iter : int
    permuted : tuple of two bools
        Whether rows / columns were permuted.

    Examples
    --------
    >>> import numpy as np
    >>> T = tt_matrix(np.random.default_rng(0).standard_normal((4, 6)), (2, 2), (3, 2), ranks=2)
    >>> P = PermutedTT(T, np.array([1, 0, 3, 2]), np.arange(6), [0.5], 0)
    >>> x = np.ones(6)
    >>> bool(np.allclose(P @ x, P.to_dense() @ x))
    True
    """

    def __init__(
        self,
        tt: TTMatrix,
        row_perm: Any,
        col_perm: Any,
        errors: list[float],
        n_iter: int,
        *,
        permuted: tuple[bool, bool] | None = None,
        timings: dict[str, float] | None = None,
    ):
        if not isinstance(tt, TTMatrix):
            raise TypeError(f"tt must be a TTMatrix, got {type(tt).__name__}")
        self.tt = tt
        self._init_perms(tt, tt.cores[0], row_perm, col_perm, errors, n_iter, permuted, timings)

    def __repr__(self) -> str:
        return (
            f"PermutedTT(shape={self.shape}, ranks={self.tt.ranks}, permuted "
            f"rows={self.permuted[0]} cols={self.permuted[1]}, error={self.error:.4g})"
        )

    @property
    def T(self) -> PermutedTT:
        return PermutedTT(
            self.tt.T,
            self.col_perm,
            self.row_perm,
            self.errors,
            self.n_iter,
            permuted=(self.permuted[1], self.permuted[0]),
            timings=self.timings,
        )


def _is_identity(p: np.ndarray) -> bool:
    return bool(np.array_equal(p, np.arange(len(p))))


def _right_basis(T: TTMatrix) -> tuple[Any, list[Any]]:
    """(V, cores 2..d): V ((M/m_1)·(N/n_1), r_1) orthonormal, spanning vec(B_a).

    Cores 2..d are right-orthogonalised (as a tensor train of merged modes), so the
    matrices B_a they form are orthonormal; V lists them in R(W)'s column order
    (i_rest, j_rest).
    """
    xp = T.xp
    cores = _orthogonalize_right(xp, T.to_tensor_train().cores)
    right = [
        xp.reshape(G, (int(G.shape[0]), m, n, int(G.shape[2])))
        for G, m, n in zip(cores[1:], T.row_modes[1:], T.col_modes[1:])
    ]
    r1 = int(cores[1].shape[0])
    B = TensorTrain([xp.reshape(cores[1], (1, -1, int(cores[1].shape[2]))), *cores[2:]])
    dense = xp.reshape(
        B.to_dense(), (r1, *(v for mn in zip(T.row_modes[1:], T.col_modes[1:]) for v in mn))
    )
    d1 = len(right)
    dense = xp.permute_dims(dense, (0, *range(1, 2 * d1 + 1, 2), *range(2, 2 * d1 + 1, 2)))
    V = xp.permute_dims(xp.reshape(dense, (r1, -1)), (1, 0))
    return V, right


class _Run:
    """State of the alternating minimisation (everything in T's frame: U = aligned W)."""

    def __init__(self, W, rm, cm, ranks, xp, norm, solver, max_bytes, timings, inv):
        self.W, self.rm, self.cm, self.ranks = W, rm, cm, ranks
        self.xp, self.norm = xp, norm
        self.solver, self.max_bytes, self.t = solver, max_bytes, timings
        self.inv = inv  # T index -> W index, per side
        U = W if _is_identity(inv["rows"]) else take(xp, W, inv["rows"], 0)
        self.U = U if _is_identity(inv["cols"]) else take(xp, U, inv["cols"], 1)
        self.T, self.err = self.fit(self.U)

    def err_of(self, U: Any, T: TTMatrix) -> float:
        D = U - T.to_dense()
        return float(self.xp.sqrt(self.xp.sum(D * D))) / self.norm

    def fit(self, U: Any, rm=None, cm=None) -> tuple[TTMatrix, float]:
        t0 = time.perf_counter()
        T = tt_matrix(U, rm or self.rm, cm or self.cm, ranks=self.ranks)
        err = self.err_of(U, T)
        self.t["svd"] += time.perf_counter() - t0
        return T, err

    def solve(self, cost: Any, t_build: float) -> np.ndarray:
        t1 = time.perf_counter()
        self.t["cost"] += t1 - t_build
        res = lsap(cost, solver=self.solver)
        self.t["lsap"] += time.perf_counter() - t1
        self.t["n_lsap"] += 1
        return res.col_ind

    def _slots(self, Uo: Any, To: TTMatrix) -> tuple[np.ndarray, Any, Any]:
        """Slot sweep over the first split; returns (g, new U, held candidate or None)."""
        xp = self.xp
        M, N = To.shape
        m1, n1 = To.row_modes[0], To.col_modes[0]
        s = KroneckerShape((m1, n1), (M // m1, N // n1))
        V, right = _right_basis(To)
        g = np.arange(M)
        cur = Uo
        for slot in range(s.m2):
            t0 = time.perf_counter()
            cost = slots_cost(cur, s, V, slot, max_bytes=self.max_bytes)
            col = self.solve(cost, t0)
            if _is_identity(col):
                continue
            src = np.argsort(col)  # block-row t takes the candidate now in block-row src[t]
            gs = np.arange(M)
            idx = np.arange(m1) * s.m2 + slot
            gs[idx] = src * s.m2 + slot
            cur = take(xp, cur, gs, 0)
            g = g[gs]
        if _is_identity(g):
            return g, Uo, None
        A = xp.matmul(rearrange(cur, s), V)  # the first core's best refit in span V
        held = TTMatrix([xp.reshape(A, (1, m1, n1, int(V.shape[1]))), *right])
        return g, cur, held

    def step(self, rule: str, side: str) -> bool:
        """One update of one side; True if it changed the permutation."""
        xp = self.xp
        rows = side == "rows"
        Uo = self.U if rows else xp.permute_dims(self.U, (1, 0))
        To = self.T if rows else self.T.T
        t0 = time.perf_counter()
        if rule == "slots":
            if To.row_modes[0] == 1 or math.prod(To.row_modes[1:]) == 1 or len(To.cores) < 2:
                return False
            g, Unew, held = self._slots(Uo, To)
            if held is None:
                return False
        else:
            cost = assign_cost(Uo, To.to_dense(), max_bytes=self.max_bytes)
            g = np.argsort(self.solve(cost, t0))
            if _is_identity(g):
                return False
            Unew, held = take(xp, Uo, g, 0), To
        cands = [(self.err_of(Unew, held), held)]
        cands.append(self.fit(Unew, To.row_modes, To.col_modes)[::-1])
        err, Tnew = min(cands, key=lambda c: c[0])
        if err > self.err:  # cannot happen for the held candidate up to rounding
            return False
        self.U = Unew if rows else xp.permute_dims(Unew, (1, 0))
        self.T = Tnew if rows else Tnew.T
        self.err = err
        self.inv[side] = self.inv[side][g]
        return True


def _iterate(run: _Run, sides: list[str], rule: str, n_iter: int, tol: float, callback) -> list:
    errors = [run.err]
    phase = "assign" if rule == "assign" else "slots"
    for it in range(n_iter if sides else 0):
        prev = run.err
        for r_ in ["assign", "slots"] if phase == "polish" else [phase]:
            for sd in sides:
                run.step(r_, sd)
        errors.append(run.err)
        if callback is not None and callback(it, run.err) is True:
            break
        if prev - run.err <= tol * prev:
            if rule == "slots+assign" and phase == "slots":
                phase = "polish"
                continue
            break
    return errors


def permuted_tt(
    W: Any,
    row_modes: Any,
    col_modes: Any,
    *,
    ranks: Any,
    rule: str = "slots+assign",
    permute: str = "both",
    n_iter: int = 10,
    tol: float = 1e-4,
    n_restarts: int = 1,
    rng: None | int | np.random.Generator = None,
    solver: str = "auto",
    max_cost_bytes: int | None = None,
    callback: Callable[[int, float], Any] | None = None,
) -> PermutedTT:
    """Permuted TT-matrix approximation W ≈ T[row_perm][:, col_perm].

    Parameters
    ----------
    W : array of shape (M, N)
        Real floating matrix of any array library (LSAPs run on the host).
    row_modes, col_modes, ranks
        As in :func:`tqla.tt_matrix` (ranks are required: the error is compared between
        iterations at fixed ranks).
    rule : {"slots+assign", "slots", "assign"}
        Permutation update (module docstring); ``"slots+assign"`` runs slot sweeps until
        they stall, then alternates ``"assign"`` and ``"slots"``.
    permute : {"both", "rows", "cols", "none"}
    n_iter : int
        Maximum iterations (each updates every permuted side).
    tol : float
        Stop when an iteration improves the error by less than ``tol`` relative.
    n_restarts : int
        Starts: the identity, then random permutations of the permuted sides; the lowest
        final error is kept (its own history is returned).
    rng : None, int or numpy.random.Generator
        Random state of the restarts.
    solver : str
        LSAP solver (:func:`tqla.lsap`).
    max_cost_bytes : int, optional
        Memory ceiling of one cost build (:func:`tqla.assignment.check_cost_memory`).
    callback : callable, optional
        ``callback(iteration, error)``; returning True stops.

    Returns
    -------
    PermutedTT
        ``errors`` is non-increasing.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((8, 8))
    >>> P = permuted_tt(W, (2, 2, 2), (2, 2, 2), ranks=[2, 2], n_iter=3)
    >>> all(b <= a for a, b in zip(P.errors, P.errors[1:]))
    True
    """
    xp, W = as_float_matrix(W, "W")
    M, N = (int(v) for v in W.shape)
    rm = check_modes(row_modes, "row_modes", M)
    cm = check_modes(col_modes, "col_modes", N)
    if len(rm) != len(cm):
        raise ValueError(f"row_modes {rm} and col_modes {cm} must have the same length")
    full = check_ranks(ranks, tuple(a * b for a, b in zip(rm, cm)))
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if permute not in PERMUTES:
        raise ValueError(f"permute must be one of {PERMUTES}, got {permute!r}")
    n_iter = check_int(n_iter, "n_iter", minimum=0)
    n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a number >= 0, got {tol!r}") from None
    if not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if isinstance(solver, str) and solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS} or a sequence of them, got {solver!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    timings = {"cost": 0.0, "lsap": 0.0, "svd": 0.0, "n_lsap": 0}
    t_start = time.perf_counter()
    norm = float(xp.sqrt(xp.sum(xp.astype(W, xp.float64) ** 2))) or 1.0
    sides = [s for s, n in (("rows", M), ("cols", N)) if permute in ("both", s) and n > 1]
    if len(rm) == 1:
        sides = []  # a one-core train is W itself
    if len(sides) == 2 and N > M:
        sides.reverse()
    gen = check_rng(rng)
    best = None
    for restart in range(n_restarts if sides else 1):
        start = {"rows": np.arange(M), "cols": np.arange(N)}
        if restart:
            start = {sd: (gen.permutation(len(p)) if sd in sides else p) for sd, p in start.items()}
        run = _Run(W, rm, cm, full, xp, norm, solver, max_cost_bytes, timings, start)
        errors = _iterate(run, sides, rule, n_iter, tol, callback)
        if best is None or run.err < best[0].err:
            best = (run, errors)
    run, errors = best
    timings["total"] = time.perf_counter() - t_start
    return PermutedTT(
        run.T,
        np.argsort(run.inv["rows"]),
        np.argsort(run.inv["cols"]),
        errors,
        len(errors) - 1,
        permuted=("rows" in sides, "cols" in sides),
        timings=timings,
    )
