"""Permuted Kronecker sums fitted in the spectral norm (methods.md §2 with §4).

:func:`permuted_kron_spectral` approximates W ≈ K[row_perm][:, col_perm] (the convention of
:func:`tqla.permuted_kron`) with K fitted in the spectral norm.  It starts from the
Frobenius answer of :func:`tqla.permuted_kron`, refits K in the spectral norm
(:func:`tqla.kron_spectral`, started from it), then alternates: re-choose the permutation
of one side by linear sum assignment with K held (the Frobenius-optimal assignment for that
K), refit K in the spectral norm from the current K in the new frame, and keep the step only
if the spectral error decreases — so the history of spectral errors never increases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import as_float_matrix, check_int, from_numpy, to_numpy
from tqla.assignment import lsap
from tqla.kron import KroneckerShape
from tqla.permuted import PERMUTES, PermutedKronecker, permuted_kron
from tqla.spectral import kron_spectral

__all__ = ["permuted_kron_spectral"]


def _frame(xp: Any, W: Any, rp: np.ndarray, cp: np.ndarray) -> Any:
    """W in K's frame: Wk[k, c] = W[inv(rp)[k], inv(cp)[c]]."""
    ir = from_numpy(np.argsort(rp).astype(np.int64), W)
    ic = from_numpy(np.argsort(cp).astype(np.int64), W)
    return xp.take(xp.take(W, ir, axis=0), ic, axis=1)


def _assign(xp: Any, W: Any, Kd: Any, rp: np.ndarray, cp: np.ndarray, side: str) -> np.ndarray:
    """The permutation of ``side`` minimising ‖W − K[rp][:, cp]‖_F with K and the other side held.

    Rows: cost[i, k] = ‖W[i] − K[k, cp]‖² = const − 2·W[i]·K[k, cp] + ‖K[k]‖²; the last
    term sums to the same total over any assignment, so −W·K[:, cp]ᵀ is the cost.
    """
    if side == "rows":
        Kc = xp.take(Kd, from_numpy(cp.astype(np.int64), Kd), axis=1)
        cost = -xp.matmul(W, xp.permute_dims(Kc, (1, 0)))
    else:
        Kr = xp.take(Kd, from_numpy(rp.astype(np.int64), Kd), axis=0)
        cost = -xp.matmul(xp.permute_dims(W, (1, 0)), Kr)
    return np.asarray(lsap(cost).col_ind, dtype=np.int64)


def permuted_kron_spectral(
    W: Any,
    shape: Any,
    rank: int = 1,
    *,
    permute: str = "both",
    n_iter: int = 3,
    tol: float = 1e-4,
    frobenius_options: dict | None = None,
    spectral_options: dict | None = None,
) -> PermutedKronecker:
    """Permuted Kronecker sum W ≈ K[row_perm][:, col_perm] fitted in the spectral norm.

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    rank : int
    permute : {"both", "rows", "cols", "none"}
        Sides to permute (as :func:`tqla.permuted_kron`).
    n_iter : int
        Alternations at most (each tries both permuted sides).
    tol : float
        Stop when an alternation lowers the spectral error by less than ``tol`` relatively.
    frobenius_options : dict, optional
        Keyword arguments of the starting :func:`tqla.permuted_kron`.
    spectral_options : dict, optional
        Keyword arguments of the :func:`tqla.kron_spectral` refits (default
        ``p=(8, 32, 128), max_iter=10, rng=0``).

    Returns
    -------
    PermutedKronecker
        ``errors`` holds relative *spectral* errors ‖W − approx‖₂/‖W‖₂: entry 0 is the
        Frobenius start's, entry 1 after its spectral refit, then one per alternation
        (non-increasing); ``norm`` is "spectral"; ``spectral_error`` the certified
        :class:`~tqla.NormEstimate` of the result.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 8))
    >>> P = permuted_kron_spectral(W, ((4, 4), (2, 2)), 1, n_iter=2)
    >>> all(b <= a for a, b in zip(P.errors, P.errors[1:]))
    True
    """
    xp, W = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(W)
    rank = s.check_rank(rank)
    if permute not in PERMUTES:
        raise ValueError(f"permute must be one of {PERMUTES}, got {permute!r}")
    n_iter = check_int(n_iter, "n_iter", minimum=0)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    sopts = {"p": (8.0, 32.0, 128.0), "max_iter": 10, "rng": 0}
    sopts.update(spectral_options or {})
    start = permuted_kron(W, s, rank, permute=permute, **(frobenius_options or {}))
    rp = to_numpy(start.row_perm).astype(np.int64)
    cp = to_numpy(start.col_perm).astype(np.int64)
    norm_w = float(xp.max(xp.linalg.svdvals(W)))
    scale = norm_w if norm_w > 0 else 1.0
    K = kron_spectral(_frame(xp, W, rp, cp), s, rank, init=start.kron, **sopts)
    err = K.spectral_error.estimate
    errors = [K.kron_svd_error.estimate / scale, err / scale]
    sides = [side for side, on in zip(("rows", "cols"), start.permuted) if on]
    it = 0
    for it in range(1, n_iter + 1):
        before = err
        for side in sides:
            new = _assign(xp, W, K.to_dense(), rp, cp, side)
            nrp, ncp = (new, cp) if side == "rows" else (rp, new)
            if np.array_equal(nrp, rp) and np.array_equal(ncp, cp):
                continue
            Kn = kron_spectral(_frame(xp, W, nrp, ncp), s, rank, init=K.kron, **sopts)
            if Kn.spectral_error.estimate < err:  # keep only improvements
                K, rp, cp, err = Kn, nrp, ncp, Kn.spectral_error.estimate
        errors.append(err / scale)
        if before - err <= tol * before:
            break
    out = PermutedKronecker(K.kron, rp, cp, errors, it, permuted=start.permuted)
    out.norm = "spectral"
    out.spectral_error = K.spectral_error
    return out
