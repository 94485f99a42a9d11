"""The column-permuted fit of an embedding table from the Gram matrix of its columns.

:func:`tqla.permuted_kron` on a V×d table with factors ``V×(d/k) ⊗ 1×k`` and a column
permutation spends its time on cost matrices whose inner dimension is the vocabulary
(384×384 and 768×768 GEMMs over 50,257 rows for GPT-2, one per slot and step).  With a
1-row B factor every quantity of its alternating minimisation is a function of the d×d
Gram matrix ``G = WᵀW`` of the table's columns, which does not change when the columns
are permuted (only re-indexed).  :func:`gram_column_fit` forms G once (one pass over the
table, the only pass) and runs the same iterations as ``permuted_kron`` on it — the same
initial fit, ``slots`` sweeps, ``assign`` polish, acceptance guard, tolerance and
restarts, the same LSAP solver — each step costing O(d²) instead of O(V·d²).

Derivation (docs/permuted.md has the general rule).  Group g of K's columns
(g = 0..d/k−1) holds the K-columns ``g·k + l`` (l < k); U = W with its columns in K's
order, R(U) the (V·d/k)×k rearrangement with row (i, g) = U[i, g·k : g·k + k].  Then
``R(U)ᵀR(U) = Σ_g G_U[gk:gk+k, gk:gk+k]`` (k×k), the refit ``kron_svd`` is its top-r
eigenspace (projector Π, k×k), and the squared error is the sum of its other eigenvalues.
The ``slots`` cost of slot s (candidate c, the column now in group c, placed in group t)
is ``−Π_ss G_cc − ‖H_t‖² − 2 Σ_{l≠s} Π_sl G_{c, t_l}`` with
``‖H_t‖² = Σ_{l,l'≠s} Π_ll' G_{t_l, t_l'}``, whose first two terms depend on c alone or
t alone (every assignment pays them once: they do not change its solution); the ``assign``
cost of column i to position ``g·k + j`` is ``−Σ_l Π_lj G_{i, g·k+l}``.  Tests compare the
result with :func:`tqla.permuted_kron` (tests/test_nn_embedding_fit.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from tqla._array import check_rng
from tqla.kron import KroneckerShape, kron_svd
from tqla.lsap import lsap
from tqla.permuted import RULES, permuted_kron

__all__ = ["column_gram", "gram_column_fit", "permuted_table_fit"]

# permuted_kron's defaults, read from its signature so both routes stop alike
_DEFAULTS = {
    k: p.default
    for k, p in inspect.signature(permuted_kron).parameters.items()
    if k in ("rule", "n_iter", "tol", "solver")
}
# Rows per block of the Gram pass: bounded temporaries, float64 accumulation across blocks.
_GRAM_BLOCK = 4096
# As permuted_kron's error(): below this fraction of ‖W‖² the identity loses accuracy and
# the error is recomputed from the table itself.
_DIRECT_BELOW = 1e-3


def column_gram(W: torch.Tensor) -> np.ndarray:
    """``WᵀW`` (d×d, float64 on the host) by blocks of rows in W's dtype and device.

    Each block is one GEMM in W's precision; blocks are summed in float64.
    """
    d = int(W.shape[1])
    G = torch.zeros((d, d), dtype=torch.float64, device=W.device)
    for i in range(0, int(W.shape[0]), _GRAM_BLOCK):
        Wb = W[i : i + _GRAM_BLOCK]
        G += (Wb.T @ Wb).to(torch.float64)
    return G.cpu().numpy()


class _GramRun:
    """One start of the alternating minimisation, on the Gram matrix."""

    def __init__(self, W, G, k, rank, solver, norm2):
        self.W, self.G, self.k, self.rank, self.solver = W, G, k, rank, solver
        self.norm2 = norm2
        self.norm = float(np.sqrt(norm2)) if norm2 > 0 else 1.0
        self.n1 = G.shape[0] // k

    def fit(self, inv: np.ndarray) -> tuple[np.ndarray, float]:
        """(Π, relative error) of ``kron_svd`` of the table with columns ``W[:, inv]``."""
        idx = inv.reshape(self.n1, self.k)
        M = self.G[idx[:, :, None], idx[:, None, :]].sum(axis=0)
        w, Q = np.linalg.eigh(M)  # ascending
        V = Q[:, self.k - self.rank :]
        e2 = float(np.clip(w[: self.k - self.rank], 0.0, None).sum())
        if e2 <= _DIRECT_BELOW * self.norm2:
            e2 = self._direct_error2(inv, V)
        return V @ V.T, float(np.sqrt(e2)) / self.norm

    def _direct_error2(self, inv: np.ndarray, V: np.ndarray) -> float:
        """‖U − U·(I ⊗ Π)‖² from the table (a small error: no cancellation)."""
        U = self.W.index_select(1, torch.as_tensor(inv, device=self.W.device))
        R = U.reshape(U.shape[0], self.n1, self.k).to(torch.float64)
        Vt = torch.as_tensor(V, device=R.device)
        D = R - (R @ Vt) @ Vt.T
        return float(torch.sum(D * D))

    def solve(self, cost: np.ndarray) -> np.ndarray:
        return np.asarray(lsap(cost, solver=self.solver).col_ind)

    def slots(self, inv: np.ndarray, P: np.ndarray) -> np.ndarray:
        """One ``slots`` sweep: the new K-column order g (position p takes old g[p])."""
        n1, k, G = self.n1, self.k, self.G
        order = np.arange(n1 * k)
        for s in range(k):
            held = inv[order].reshape(n1, k)  # W's column at (group, slot)
            cand = held[:, s]
            # −Σ_{l≠s} Π_sl G[c, t_l]; the terms −Π_ss G_cc − ‖H_t‖² of the full cost (and
            # its factor 2) add the same amount to every assignment's total: left out.
            cost = np.zeros((n1, n1))
            for l in range(k):
                if l != s:
                    cost -= P[s, l] * G[cand[:, None], held[None, :, l]]
            col = self.solve(cost)
            if np.array_equal(col, np.arange(n1)):
                continue
            src = np.argsort(col)  # group t takes the candidate of group src[t]
            rows = np.arange(n1) * k + s
            order[rows] = order[src * k + s]
        return order

    def assign(self, inv: np.ndarray, P: np.ndarray) -> np.ndarray:
        """One ``assign`` step: the new K-column order g."""
        n1, k = self.n1, self.k
        Gc = self.G[inv[:, None], inv[None, :]]  # (d, d) in K's order
        cost = -(Gc.reshape(n1 * k, n1, k) @ P).reshape(n1 * k, n1 * k)
        return np.argsort(self.solve(cost))


def _run_start(run: _GramRun, inv, rule, n_iter, tol) -> tuple[np.ndarray, list[float]]:
    """permuted_kron's loop of one start (phases, acceptance guard, stopping rule)."""
    P, err = run.fit(inv)
    errors = [err]
    phase = "slots" if rule in ("slots", "slots+assign") else "assign"
    for _ in range(n_iter):
        prev = err
        for step in [phase] if phase != "polish" else ["assign", "slots"]:
            g = run.slots(inv, P) if step == "slots" else run.assign(inv, P)
            if np.array_equal(g, np.arange(len(g))):
                continue
            P_new, err_new = run.fit(inv[g])
            if err_new <= err:  # never increase the error
                inv, P, err = inv[g], P_new, err_new
        errors.append(err)
        if prev - err <= tol * prev:
            if rule == "slots+assign" and phase == "slots":
                phase = "polish"
                continue
            break
    return inv, errors


def gram_column_fit(
    W: torch.Tensor,
    k: int,
    rank: int = 1,
    *,
    rule: str | None = None,
    n_iter: int | None = None,
    tol: float | None = None,
    n_restarts: int = 1,
    seed: Any = None,
    solver: str | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Column permutation of ``permuted_kron(W, ((V, d/k), (1, k)), rank, permute="cols")``.

    Parameters
    ----------
    W : torch.Tensor of shape (V, d)
        Float32 or float64, any device (the Gram pass runs there).
    k : int
        Width of the 1-row B factor; divides d.
    rank : int
        Kronecker rank (≤ k).
    rule, n_iter, tol, n_restarts, seed, solver
        As :func:`tqla.permuted_kron` (None: its defaults); ``seed`` is anything
        ``numpy.random.default_rng`` accepts.

    Returns
    -------
    col_perm : numpy.ndarray of int64
        tqla's convention: ``W ≈ K[:, col_perm]`` with ``K = kron_svd(W[:, argsort(col_perm)])``.
    errors : list of float
        The relative error after each iteration of the best start (``errors[-1]`` is the
        final one), as ``PermutedKronecker.errors``.

    Examples
    --------
    >>> import torch
    >>> W = torch.randn(50, 8, dtype=torch.float64)
    >>> perm, errors = gram_column_fit(W, 2, n_iter=3)
    >>> sorted(perm.tolist()) == list(range(8)), errors[-1] <= errors[0]
    (True, True)
    """
    V, d = (int(v) for v in W.shape)
    if k < 2 or d % k or d == k:
        raise ValueError(f"k = {k} must be >= 2, divide the width {d} and leave >= 2 groups")
    if not 1 <= rank <= k:
        raise ValueError(f"rank must be between 1 and k = {k}, got {rank}")
    rule = _DEFAULTS["rule"] if rule is None else rule
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    n_iter = _DEFAULTS["n_iter"] if n_iter is None else int(n_iter)
    tol = _DEFAULTS["tol"] if tol is None else float(tol)
    solver = _DEFAULTS["solver"] if solver is None else solver
    gen = check_rng(None if seed is None else np.random.default_rng(seed))
    G = column_gram(W)
    run = _GramRun(W, G, k, rank, solver, float(np.trace(G)))
    best: tuple[float, np.ndarray, list[float]] | None = None
    for restart in range(n_restarts):
        inv = np.arange(d) if restart == 0 else gen.permutation(d)
        inv, errors = _run_start(run, inv, rule, n_iter, tol)
        if best is None or errors[-1] < best[0]:
            best = (errors[-1], inv, errors)
    _, inv, errors = best
    return np.argsort(inv), errors


def permuted_table_fit(
    table: torch.Tensor,
    k: int,
    *,
    rule: str | None = None,
    n_iter: int | None = None,
    tol: float | None = None,
    n_restarts: int = 1,
    seed: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``kron_decompose(table, V×(d/k) ⊗ 1×k, 1, method="permuted_kron", permute="cols")``
    through :func:`gram_column_fit`.

    Returns (A (1, V, d/k), B (1, 1, k), col_perm, relative error): the factors are
    :func:`tqla.kron_svd` of the table with its columns in K's order (the refit
    ``permuted_kron`` returns), in the table's decomposition dtype (float32 for half
    precision) on its device.
    """
    W = table.detach()
    if W.dtype not in (torch.float32, torch.float64):
        W = W.to(torch.float32)
    V, d = (int(v) for v in W.shape)
    cp, errors = gram_column_fit(
        W, k, 1, rule=rule, n_iter=n_iter, tol=tol, n_restarts=n_restarts, seed=seed
    )
    inv = torch.as_tensor(np.argsort(cp), device=W.device)
    U = W.index_select(1, inv)
    shape = KroneckerShape((V, d // k), (1, k))
    if U.device.type == "cpu":  # tqla's NumPy kernels (as kron_decompose)
        K = kron_svd(U.numpy(), shape, 1)
        A, B = torch.from_numpy(np.ascontiguousarray(K.A)), torch.from_numpy(K.B)
    else:
        K = kron_svd(U, shape, 1)
        A, B = K.A, K.B
    return A, B, torch.as_tensor(cp, device=W.device), float(errors[-1])
