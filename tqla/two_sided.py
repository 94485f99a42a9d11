"""Two-sided activation-aware low rank: errors weighted on the rows *and* the columns.

A matrix used on both sides — a tied token table is read row by row by the input lookup
and multiplied by the final hidden states as the LM head — has an error that is weighted
on both of its sides.  For weights P (rows, m×m, PSD) and C (columns, n×n, PSD) the error is

    e(Ŵ) = tr((W − Ŵ)ᵀ·P·(W − Ŵ)·C) = ‖Lᵀ·(W − Ŵ)·R‖_F²,   L·Lᵀ = P, R·Rᵀ = C,

and its best rank-r approximation has a closed form: truncate Lᵀ·W·R (Eckart–Young) and map
back, Ŵ = (Lᵀ)⁺·[Lᵀ·W·R]_r·R⁺ (:func:`two_sided_whitened_svd`).  With P = I it is
:func:`tqla.whitened_svd`, with P = I and C = I the plain truncated SVD.

Several uses give a *sum* of such errors, Σ_j tr(ΔWᵀ·P_j·ΔW·C_j), whose weight operator
Σ_j P_j ⊗ C_j is not one Kronecker product.  :func:`nearest_kron_weight` gives its nearest
Kronecker product P ⊗ C in the Frobenius norm (Van Loan–Pitsianis: the rearranged operator
Σ_j vec(P_j)·vec(C_j)ᵀ has rank <= J, so its best rank-1 term is (Σ α_j P_j) ⊗ (Σ β_j C_j),
found from a J×J problem), and :func:`two_sided_error_curve` measures the *exact* summed
error of the fit of every rank at once.  docs/auto.md has the derivation.

A side given as a 1-D array is the diagonal of a diagonal weight (e.g. per-token weights
of a vocabulary), applied without forming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tqla._array import as_float_matrix, to_numpy
from tqla.svd import truncated_svd
from tqla.whiten import _back, _check_damp, _diag_root, _moment64, _psd, _root64

__all__ = ["nearest_kron_weight", "two_sided_error_curve", "two_sided_whitened_svd"]


def _side(M: Any, n: int, damp: float, name: str):
    """(Lᵀ-apply, (Lᵀ)⁺-apply) for the weight ``M`` of one side of length ``n``: functions
    of a float64 array whose first axis is that side."""
    try:
        if len(getattr(M, "shape", ())) == 1:
            root, inv = _diag_root(M, n, damp)
            return (lambda X: root[:, None] * X), (lambda X: inv[:, None] * X)
        S, Sp = _root64(_moment64(M, n, name), damp)  # S·Sᵀ = M: Lᵀ = Sᵀ, (Lᵀ)⁺ = S⁺ᵀ
    except ValueError as err:  # name the side (the shared checks speak of C)
        raise ValueError(f"{name}: {err}") from None
    return (lambda X: S.T @ X), (lambda X: Sp.T @ X)


def two_sided_whitened_svd(
    W: Any,
    row_moment: Any,
    col_moment: Any,
    rank: int,
    *,
    damp: float = 0.0,
    method: str = "auto",
) -> tuple[Any, Any, Any]:
    """Rank-``rank`` W ≈ U·diag(s)·Vh minimising tr(ΔWᵀ·P·ΔW·C), ΔW = W − U·diag(s)·Vh.

    Closed form: the truncated SVD (Ũ, s, Ṽh) of Lᵀ·W·R (L·Lᵀ = P, R·Rᵀ = C, symmetric
    roots from the eigendecompositions), mapped back as U = (Lᵀ)⁺·Ũ and Vh = Ṽh·R⁺.  The
    squared error is ‖Lᵀ·W·R‖² − Σ s² (in the damped weights).

    Parameters
    ----------
    W : array of shape (m, n)
    row_moment : array of shape (m, m) or (m,)
        P, the weight of the rows (symmetric PSD; 1-D: the diagonal of a diagonal P).
    col_moment : array of shape (n, n) or (n,)
        C, the weight of the columns (the input second moment of a layer y = W·x).
    rank : int
        1 <= rank <= min(m, n).
    damp : float, default 0
        Relative damping of each side: P + damp·mean(diag P)·I, likewise C (0: the
        pseudo-inverses of the roots are used).
    method : str
        Route of :func:`tqla.truncated_svd`.

    Returns
    -------
    U : (m, rank), s : (rank,), Vh : (rank, n)
        Of W's library, device and dtype; Ŵ = U·diag(s)·Vh.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((6, 5))
    >>> U, s, Vh = two_sided_whitened_svd(W, np.ones(6), np.eye(5), 2)
    >>> bool(np.allclose(s, np.linalg.svd(W, compute_uv=False)[:2]))
    True
    """
    _, Wx = as_float_matrix(W, "W")
    m, n = (int(v) for v in Wx.shape)
    damp = _check_damp(damp)
    lt, lt_inv = _side(row_moment, m, damp, "row_moment")
    r, r_inv = _side(col_moment, n, damp, "col_moment")
    X = r(lt(to_numpy(Wx, np.float64)).T).T  # Lᵀ·W·R (R symmetric or diagonal)
    U, s, Vh = truncated_svd(X, rank, method=method)
    return _back(lt_inv(U), Wx), _back(s, Wx), _back(r_inv(Vh.T).T, Wx)


def _apply(M: np.ndarray, X: np.ndarray) -> np.ndarray:
    """M·X for a 2-D weight M or a 1-D diagonal one."""
    return M[:, None] * X if M.ndim == 1 else M @ X


def _weights64(terms: Sequence[tuple[Any, Any]], m: int, n: int) -> list[tuple[np.ndarray, ...]]:
    if not terms:
        raise ValueError("terms must hold at least one (row_moment, col_moment) pair")
    out = []
    for j, pair in enumerate(terms):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"terms[{j}] must be a (row_moment, col_moment) pair")
        sides = []
        for M, k, side in ((pair[0], m, "row"), (pair[1], n, "col")):
            Md = to_numpy(M, np.float64)
            if Md.shape not in ((k,), (k, k)):
                raise ValueError(
                    f"terms[{j}] {side} weight must have shape ({k},) or ({k}, {k}), got {Md.shape}"
                )
            if not np.all(np.isfinite(Md)):
                raise ValueError(f"terms[{j}] {side} weight must be finite")
            sides.append(Md)
        out.append(tuple(sides))
    return out


def _inner(A: np.ndarray, B: np.ndarray) -> float:
    """Frobenius inner product of two weights, each 2-D or a 1-D diagonal."""
    if A.ndim == 1 and B.ndim == 1:
        return float(A @ B)
    if A.ndim == 1:
        return float(A @ np.diag(B))
    if B.ndim == 1:
        return float(np.diag(A) @ B)
    return float(np.sum(A * B))


def _gram_factor(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, F⁺) with Fᵀ·F = G (PSD): F = √Λ·Qᵀ on the positive eigenvalues."""
    lam, Q = np.linalg.eigh((G + G.T) / 2)
    keep = lam > lam.max() * len(lam) * np.finfo(np.float64).eps if lam.max() > 0 else lam > 0
    lam, Q = lam[keep], Q[:, keep]
    return np.sqrt(lam)[:, None] * Q.T, Q / np.sqrt(lam)[None, :]


def nearest_kron_weight(
    terms: Sequence[tuple[Any, Any]], m: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest single two-sided weight to a sum of them: P ⊗ C closest to Σ_j P_j ⊗ C_j.

    The error Σ_j tr(ΔWᵀ·P_j·ΔW·C_j) has the weight operator Σ_j P_j ⊗ C_j on vec(ΔW).
    Its rearrangement Σ_j vec(P_j)·vec(C_j)ᵀ = X·Yᵀ has rank <= J, so its best rank-1
    approximation σ·u·vᵀ has u = X·α, v = Y·β: with Gram factors Fxᵀ·Fx = XᵀX and
    Fyᵀ·Fy = YᵀY, (σ, p, q) is the top singular triple of the J×J matrix Fx·Fyᵀ, α = Fx⁺·p
    and β = Fy⁺·q.  The sign is fixed so that both sides have non-negative trace, and the
    sides are projected onto the PSD cone (a no-op when all P_j, C_j are PSD and the
    coefficients come out non-negative).

    Parameters
    ----------
    terms : sequence of (row_moment, col_moment)
        P_j of shape (m, m) or (m,) (diagonal), C_j of shape (n, n) or (n,).
    m, n : int
        The matrix's rows and columns.

    Returns
    -------
    P, C : float64 NumPy arrays
        P = Σ α_j P_j (1-D when every P_j is), C = σ·Σ β_j C_j (1-D when every C_j is).

    Examples
    --------
    >>> import numpy as np
    >>> P, C = nearest_kron_weight([(np.eye(2), np.diag([1.0, 3.0]))], 2, 2)
    >>> bool(np.allclose(np.kron(P, C), np.kron(np.eye(2), np.diag([1.0, 3.0]))))
    True
    """
    t = _weights64(terms, m, n)
    J = len(t)
    Gx = np.array([[_inner(t[a][0], t[b][0]) for b in range(J)] for a in range(J)])
    Gy = np.array([[_inner(t[a][1], t[b][1]) for b in range(J)] for a in range(J)])
    if not (np.any(Gx) and np.any(Gy)):
        return _combine([a[0] for a in t], np.zeros(J)), _combine([a[1] for a in t], np.zeros(J))
    Fx, Fx_inv = _gram_factor(Gx)
    Fy, Fy_inv = _gram_factor(Gy)
    p, sig, qh = np.linalg.svd(Fx @ Fy.T)
    alpha, beta = Fx_inv @ p[:, 0], Fy_inv @ qh[0]
    P, C = _combine([a[0] for a in t], alpha), _combine([a[1] for a in t], sig[0] * beta)
    if _trace(P) < 0 or (_trace(P) == 0 and _trace(C) < 0):
        P, C = -P, -C
    return _clip_psd(P), _clip_psd(C)


def _combine(parts: list[np.ndarray], coef: np.ndarray) -> np.ndarray:
    if all(p.ndim == 1 for p in parts):
        return sum(c * p for c, p in zip(coef, parts))
    return sum(c * (np.diag(p) if p.ndim == 1 else p) for c, p in zip(coef, parts))


def _trace(M: np.ndarray) -> float:
    return float(M.sum() if M.ndim == 1 else np.trace(M))


def _clip_psd(M: np.ndarray) -> np.ndarray:
    return np.clip(M, 0.0, None) if M.ndim == 1 else _psd(M)


def two_sided_error_curve(
    W: Any,
    row_moment: Any,
    col_moment: Any,
    terms: Sequence[tuple[Any, Any]],
    *,
    damp: float = 0.0,
    max_rank: int | None = None,
) -> np.ndarray:
    """Exact summed errors of the two-sided fits (weights P, C) of every rank at once.

    ``err[r]`` = Σ_j tr(ΔW_rᵀ·P_j·ΔW_r·C_j), ΔW_r = W − Ŵ_r, with Ŵ_r the rank-r
    :func:`two_sided_whitened_svd` for (``row_moment``, ``col_moment``, ``damp``), for
    r = 0 .. ``max_rank`` (default min(m, n)).  One full decomposition serves every rank:
    with Ŵ_K = A·diag(s)·Bᵀ and the residual R₀ = W − Ŵ_K, ΔW_r = R₀ + Σ_{k>=r} s_k·a_k·b_kᵀ,
    so err[r] = e(R₀) + 2·Σ_{k>=r} s_k·⟨a_k, b_k⟩_R₀ + Σ_{k,l>=r} s_k·s_l·M_kl with
    M = Σ_j (AᵀP_jA) ∘ (BᵀC_jB): suffix sums of a vector and of a matrix.

    Returns
    -------
    numpy.ndarray of float64, length max_rank + 1 (entry 0: the error of Ŵ = 0)

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> two_sided_error_curve(W, np.ones(3), np.ones(3), [(np.ones(3), np.ones(3))])
    array([14.,  5.,  1.,  0.])
    """
    _, Wx = as_float_matrix(W, "W")
    m, n = (int(v) for v in Wx.shape)
    K = min(m, n)
    top = K if max_rank is None else int(max_rank)
    if not 0 <= top <= K:
        raise ValueError(f"max_rank must be in [0, {K}], got {max_rank!r}")
    t = _weights64(terms, m, n)
    Wd = to_numpy(Wx, np.float64)
    U, s, Vh = (
        to_numpy(a, np.float64)
        for a in two_sided_whitened_svd(Wd, row_moment, col_moment, K, damp=damp, method="full")
    )
    A, B = U, Vh.T  # Ŵ_K = A·diag(s)·Bᵀ
    R0 = Wd - (A * s[None, :]) @ B.T
    e0, cross, M = 0.0, np.zeros(K), np.zeros((K, K))
    for P, C in t:
        PA, CB = _apply(P, A), _apply(C, B)
        M += (A.T @ PA) * (B.T @ CB)
        Z = _apply(P, R0)  # P·R₀ (m×n); then ·C on the right
        ZC = _apply(C, Z.T).T
        e0 += float(np.sum(R0 * ZC))
        cross += np.einsum("mk,mk->k", A, ZC @ B)
    M *= s[:, None] * s[None, :]
    cross *= s
    # suffix sums: S[r] = Σ_{k,l>=r} M_kl, c[r] = Σ_{k>=r} cross_k
    rev = M[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]
    quad = np.append(np.diagonal(rev), 0.0)
    lin = np.append(cross[::-1].cumsum()[::-1], 0.0)
    err = np.maximum(e0 + 2 * lin + quad, 0.0)
    return err[: top + 1]
