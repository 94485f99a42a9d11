"""Activation-aware ("whitened") fitting: approximations that fit the layer's inputs.

A linear layer y = W·x only ever sees its inputs x, so the error that matters is the
output error E‖(W − Ŵ)·x‖² = tr((W − Ŵ)·C·(W − Ŵ)ᵀ), with C = E[x·xᵀ] the second moment of
the inputs.  Writing C = S·Sᵀ, that is ‖(W − Ŵ)·S‖_F²: the Frobenius norm of the
*whitened* difference.  The functions here minimise it (docs/auto.md has the mathematics):

* :func:`whitened_svd` — closed form: truncate W·S, map back with S⁺;
* :func:`whitened_kron_svd` — C ≈ C₁ ⊗ C₂ (the nearest Kronecker product of C matched to
  the column factors), then (A⊗B)(S₁⊗S₂) = (A·S₁)⊗(B·S₂) makes it a plain
  :func:`tqla.kron_svd` of W·(S₁⊗S₂), mapped back; optional ALS sweeps then minimise the
  error in the exact C;
* :func:`whitened_permuted_kron` — the permutation search of :func:`tqla.permuted_kron`,
  then the whitened Kronecker fit with the moment permuted like the columns;
* :func:`moment_root`, :func:`nearest_kron_moment`, :func:`whitened_error`,
  :func:`whitened_spectrum`, :func:`whitened_kron_spectrum` — the pieces, and the
  spectra whose tails give the error of every rank at once.

Singular moments (inputs that never excite some direction) are regularised by
``damp``: C + damp·mean(diag C)·I (the damping of GPTQ-style methods), and with
``damp=0`` the pseudo-inverse of S is used (directions without input energy are then
left at zero in Ŵ, which costs nothing on the calibration inputs).

With C = I (any damp) every function returns its plain counterpart's answer to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import array_namespace, as_float_matrix, check_int, from_numpy, to_numpy
from tqla.kron import KroneckerSum, kron_svd, rearrange
from tqla.shapes import KroneckerShape
from tqla.svd import truncated_svd

__all__ = [
    "moment_root",
    "nearest_kron_moment",
    "whitened_error",
    "whitened_kron_spectrum",
    "whitened_kron_svd",
    "whitened_permuted_kron",
    "whitened_spectrum",
    "whitened_svd",
]


# --------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------
def _check_damp(damp: Any) -> float:
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0:
        raise ValueError(f"damp must be a finite number >= 0, got {damp!r}")
    if not np.isfinite(damp):
        raise ValueError(f"damp must be a finite number >= 0, got {damp!r}")
    return float(damp)


def _moment64(C: Any, n: int, name: str = "C") -> np.ndarray:
    """C as a symmetric float64 NumPy matrix of shape (n, n) (ValueError otherwise)."""
    _, C = as_float_matrix(C, name)
    if tuple(int(v) for v in C.shape) != (n, n):
        raise ValueError(
            f"{name} must be the (cols × cols) = ({n}, {n}) second moment of the inputs, "
            f"got shape {tuple(C.shape)}"
        )
    C = to_numpy(C, np.float64)
    return (C + C.T) / 2


def _root64(C: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, S⁺) with S·Sᵀ = C + damp·mean(diag C)·I, S = Q·√Λ, S⁺ = √Λ⁺·Qᵀ (float64)."""
    lam, Q = np.linalg.eigh(C)
    lam = np.clip(lam, 0.0, None)
    n = C.shape[0]
    lam = lam + damp * float(np.trace(C)) / n
    # pseudo-inverse threshold: LAPACK's usual n·eps relative to the largest eigenvalue
    cut = n * np.finfo(np.float64).eps * (float(lam.max()) if n else 0.0)
    root = np.sqrt(lam)
    inv = np.where(lam > cut, 1.0 / np.where(lam > cut, root, 1.0), 0.0)
    return Q * root[None, :], inv[:, None] * Q.T


def _is_diag(C: Any) -> bool:
    """A 1-D moment: the diagonal of a diagonal C (e.g. token frequencies of an embedding)."""
    return len(getattr(C, "shape", ())) == 1


def _diag_root(C: Any, n: int, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """(√d, √d⁺) for the diagonal moment d = clip(C, 0) + damp·mean(C) (float64 vectors):
    S = diag(√d), and the pseudo-inverse threshold of :func:`_root64`."""
    xp = array_namespace(C)
    if tuple(int(v) for v in C.shape) != (n,):
        raise ValueError(
            f"C: a diagonal moment must have one entry per column of W ({n}), got shape "
            f"{tuple(C.shape)}"
        )
    if not xp.isdtype(C.dtype, ("real floating", "integral")):
        raise TypeError(f"C must be a real array, got dtype {C.dtype}")
    d = np.clip(to_numpy(C, np.float64), 0.0, None)
    if not np.all(np.isfinite(d)):
        raise ValueError("C must be finite")
    d = d + damp * (float(d.mean()) if n else 0.0)
    cut = n * np.finfo(np.float64).eps * (float(d.max()) if n else 0.0)
    root = np.sqrt(d)
    return root, np.where(d > cut, 1.0 / np.where(d > cut, root, 1.0), 0.0)


def moment_root(C: Any, *, damp: float = 0.0) -> tuple[Any, Any]:
    """A factor S with S·Sᵀ = C + damp·mean(diag C)·I, and its pseudo-inverse S⁺.

    Parameters
    ----------
    C : array of shape (n, n)
        Symmetric positive semi-definite (the input second moment E[x·xᵀ]); round-off
        negative eigenvalues are clipped to 0.
    damp : float, default 0
        Relative damping added to the diagonal before the root is taken.

    Returns
    -------
    S, S_pinv : arrays of shape (n, n), of C's library, device and dtype
        S = Q·√Λ from the eigendecomposition C = Q·Λ·Qᵀ (computed in float64);
        S⁺ = √Λ⁺·Qᵀ, with eigenvalues below n·eps·λ_max treated as zero.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 4))
    >>> C = X.T @ X / 50
    >>> S, Sp = moment_root(C)
    >>> bool(np.allclose(S @ S.T, C)), bool(np.allclose(Sp @ S, np.eye(4)))
    (True, True)
    """
    _, Cx = as_float_matrix(C, "C")
    n = int(Cx.shape[0])
    S, Sp = _root64(_moment64(Cx, n), _check_damp(damp))
    return _back(S, Cx), _back(Sp, Cx)


def _back(a: np.ndarray, ref: Any) -> Any:
    """Host float64 ``a`` in the library, device and dtype of ``ref``."""
    xp = array_namespace(ref)
    out = from_numpy(np.ascontiguousarray(a), ref)
    return out if out.dtype == ref.dtype else xp.astype(out, ref.dtype)


def nearest_kron_moment(C: Any, n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """The nearest Kronecker product C₁ ⊗ C₂ to C (n1·n2 square), as symmetric PSD factors.

    The best rank-1 Kronecker approximation of C (Van Loan–Pitsianis, :func:`tqla.kron_svd`
    with factor shapes (n1×n1, n2×n2)); for a symmetric PSD C its factors are symmetric and
    (up to a common sign, fixed here so that both traces are >= 0) PSD.  Round-off
    asymmetry and negative eigenvalues are removed.  Returned as float64 NumPy arrays.

    Examples
    --------
    >>> import numpy as np
    >>> C1, C2 = np.diag([1.0, 2.0]), np.diag([3.0, 1.0, 2.0])
    >>> D1, D2 = nearest_kron_moment(np.kron(C1, C2), 2, 3)
    >>> bool(np.allclose(np.kron(D1, D2), np.kron(C1, C2)))
    True
    """
    n1 = check_int(n1, "n1", minimum=1)
    n2 = check_int(n2, "n2", minimum=1)
    Cd = _moment64(C, n1 * n2)
    if not np.any(Cd):
        return np.zeros((n1, n1)), np.zeros((n2, n2))
    K = kron_svd(Cd, ((n1, n1), (n2, n2)), 1)
    C1, C2 = np.asarray(K.A[0]), np.asarray(K.B[0])
    if np.trace(C1) < 0 or (np.trace(C1) == 0 and np.trace(C2) < 0):
        C1, C2 = -C1, -C2
    return _psd(C1), _psd(C2)


def _psd(C: np.ndarray) -> np.ndarray:
    C = (C + C.T) / 2
    lam, Q = np.linalg.eigh(C)
    return (Q * np.clip(lam, 0.0, None)[None, :]) @ Q.T


def whitened_error(W: Any, approx: Any, C: Any, *, relative: bool = True) -> float:
    """‖(W − Ŵ)·S‖_F (relative: divided by ‖W·S‖_F) with S·Sᵀ = C, in float64.

    Computed as √tr(E·C·Eᵀ), E = W − Ŵ; a zero ‖W·S‖ gives relative error 0.  A 1-D C is
    the diagonal of a diagonal moment.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.eye(3)
    >>> whitened_error(W, 0 * W, np.eye(3))
    1.0
    """
    _, W = as_float_matrix(W, "W")
    _, A = as_float_matrix(approx, "approx")
    if tuple(W.shape) != tuple(A.shape):
        raise ValueError(f"approx must have W's shape {tuple(W.shape)}, got {tuple(A.shape)}")
    Wd, Ad = to_numpy(W, np.float64), to_numpy(A, np.float64)
    if _is_diag(C):
        root, _ = _diag_root(C, Wd.shape[1], 0.0)
        Cd = np.diag(root**2)
    else:
        Cd = _moment64(C, Wd.shape[1])
    E = Wd - Ad
    err2 = max(float(np.sum(E * (E @ Cd))), 0.0)
    if not relative:
        return err2**0.5
    ref = max(float(np.sum(Wd * (Wd @ Cd))), 0.0)
    return (err2 / ref) ** 0.5 if ref > 0 else 0.0


# --------------------------------------------------------------------------------------
# Low rank
# --------------------------------------------------------------------------------------
def whitened_svd(
    W: Any, C: Any, rank: int, *, damp: float = 0.0, method: str = "auto"
) -> tuple[Any, Any, Any]:
    """Rank-``rank`` W ≈ U·diag(s)·Vh minimising ‖(W − U·diag(s)·Vh)·S‖_F, S·Sᵀ = C.

    Closed form: the truncated SVD (U, s, Ṽh) of W·S, mapped back as Vh = Ṽh·S⁺
    (:func:`moment_root`).  ``s`` are the singular values of W·S: the squared error is
    ‖W·S‖² − Σ s² (exact for ``damp=0``; with damping it is the error in the damped norm).

    Parameters
    ----------
    W : array of shape (m, n)
        The weight, out×in.
    C : array of shape (n, n) or (n,)
        Second moment of the inputs (symmetric PSD), e.g. XᵀX / n_samples; a 1-D array is
        the diagonal of a diagonal moment (one-hot inputs: the token frequencies of an
        embedding's table, which is then W's columns), applied without forming it.
    rank : int
        1 <= rank <= min(m, n).
    damp : float, default 0
        Relative diagonal damping of C (see :func:`moment_root`).
    method : str
        Route of :func:`tqla.truncated_svd`.

    Returns
    -------
    U : (m, rank), s : (rank,), Vh : (rank, n)
        Of W's library, device and dtype.  Rows of Vh are not orthonormal (they are in the
        metric of C).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.standard_normal((5, 4)), rng.standard_normal((100, 4))
    >>> U, s, Vh = whitened_svd(W, X.T @ X, 2)
    >>> U.shape, s.shape, Vh.shape
    ((5, 2), (2,), (2, 4))
    """
    _, Wx = as_float_matrix(W, "W")
    m, n = (int(v) for v in Wx.shape)
    Wd = to_numpy(Wx, np.float64)
    if _is_diag(C):  # diagonal moment: scale the columns, O(m·n) instead of O(n³)
        root, inv = _diag_root(C, n, _check_damp(damp))
        U, s, Vh = truncated_svd(Wd * root[None, :], rank, method=method)
        Vh = Vh * inv[None, :]
        return _back(U, Wx), _back(s, Wx), _back(Vh, Wx)
    S, Sp = _root64(_moment64(C, n), _check_damp(damp))
    U, s, Vh = truncated_svd(Wd @ S, rank, method=method)
    Vh = Vh @ Sp
    return _back(U, Wx), _back(s, Wx), _back(Vh, Wx)


def whitened_spectrum(W: Any, C: Any, *, damp: float = 0.0) -> np.ndarray:
    """All singular values of W·S (descending, float64 NumPy): the whitened squared error
    of the best rank-r approximation is the sum of the squares of all but the first r."""
    _, Wx = as_float_matrix(W, "W")
    if _is_diag(C):
        root, _ = _diag_root(C, int(Wx.shape[1]), _check_damp(damp))
        return np.linalg.svd(to_numpy(Wx, np.float64) * root[None, :], compute_uv=False)
    S, _ = _root64(_moment64(C, int(Wx.shape[1])), _check_damp(damp))
    return np.linalg.svd(to_numpy(Wx, np.float64) @ S, compute_uv=False)


# --------------------------------------------------------------------------------------
# Kronecker sums
# --------------------------------------------------------------------------------------
def _kron_roots(C: np.ndarray, s: KroneckerShape, damp: float):
    C1, C2 = nearest_kron_moment(C, s.n1, s.n2)
    S1, S1p = _root64(C1, damp)
    S2, S2p = _root64(C2, damp)
    return S1, S1p, S2, S2p


def _times_kron(W: np.ndarray, S1: np.ndarray, S2: np.ndarray) -> np.ndarray:
    """W·(S₁⊗S₂) without forming the Kronecker product (M·N·(n1 + n2) multiply-adds)."""
    n1, n2 = S1.shape[0], S2.shape[0]
    W3 = W.reshape(W.shape[0], n1, n2)
    return np.einsum("mab,ac,bd->mcd", W3, S1, S2, optimize=True).reshape(W.shape[0], n1 * n2)


def whitened_kron_spectrum(
    W: Any, C: Any, shape: Any, *, damp: float = 0.0, _roots: dict | None = None
) -> np.ndarray:
    """Kronecker spectrum of W·(S₁⊗S₂), C₁⊗C₂ the nearest Kronecker product of C:
    the squared error of the rank-r closed form of :func:`whitened_kron_svd` (in the
    C₁⊗C₂ norm) is the sum of the squares of all but the first r values."""
    s = KroneckerShape.of(shape)
    _, Wx = as_float_matrix(W, "W")
    s.check_matrix(Wx)
    damp = _check_damp(damp)
    key = (s.n1, s.n2, damp)
    if _roots is None or key not in _roots:  # a cache shared by shapes with equal (n1, n2)
        roots = _kron_roots(_moment64(C, s.matrix_shape[1]), s, damp)
        if _roots is not None:
            _roots[key] = roots
    else:
        roots = _roots[key]
    S1, _, S2, _ = roots
    Ww = _times_kron(to_numpy(Wx, np.float64), S1, S2)
    return np.linalg.svd(rearrange(Ww, s), compute_uv=False)


def whitened_kron_svd(
    W: Any,
    C: Any,
    shape: Any,
    rank: int = 1,
    *,
    damp: float = 0.0,
    n_als: int = 0,
) -> KroneckerSum:
    """Rank-``rank`` Kronecker sum minimising ‖(W − Σ A_k⊗B_k)·S‖_F, S·Sᵀ = C.

    Closed form first: C ≈ C₁⊗C₂ (:func:`nearest_kron_moment`), S_i·S_iᵀ = C_i, then
    :func:`tqla.kron_svd` of W·(S₁⊗S₂) gives A'_k, B'_k and A_k = A'_k·S₁⁺,
    B_k = B'_k·S₂⁺.  When C is exactly a Kronecker product this is optimal.  Then
    ``n_als`` sweeps of alternating least squares in the exact C (each sweep solves for all
    A with B fixed, then all B with A fixed; the error never increases).

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
    C : array of shape (n1·n2, n1·n2)
        Second moment of the inputs.
    shape : KroneckerShape or ((m1, n1), (m2, n2))
    rank : int
    damp : float, default 0
        Relative damping of C₁ and C₂ (and of C in the ALS solves).
    n_als : int, default 0

    Returns
    -------
    KroneckerSum
        Factors of W's library, device and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((3, 2)), rng.standard_normal((2, 2))
    >>> K = whitened_kron_svd(np.kron(A, B), np.eye(4), ((3, 2), (2, 2)))
    >>> bool(np.allclose(K.to_dense(), np.kron(A, B)))
    True
    """
    _, Wx = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(Wx)
    rank = s.check_rank(rank)
    n_als = check_int(n_als, "n_als", minimum=0)
    damp = _check_damp(damp)
    Cd = _moment64(C, s.matrix_shape[1])
    Wd = to_numpy(Wx, np.float64)
    S1, S1p, S2, S2p = _kron_roots(Cd, s, damp)
    K = kron_svd(_times_kron(Wd, S1, S2), s, rank, method="full")
    A = np.einsum("kij,jl->kil", np.asarray(K.A), S1p)
    B = np.einsum("kij,jl->kil", np.asarray(K.B), S2p)
    if n_als:
        Creg = Cd + damp * float(np.trace(Cd)) / Cd.shape[0] * np.eye(Cd.shape[0])
        A, B = als_sweeps(Wd, Creg, A, B, n_als)
    return KroneckerSum(_back(A, Wx), _back(B, Wx))


def _solve_a(WC4: np.ndarray, C4: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The A minimising tr((W − Σ A_k⊗B_k)·C·(…)ᵀ) for fixed B (normal equations).

    WC4 is W·C as (m1, m2, n1, n2), C4 is C as (n1, n2, n1, n2), B is (r, m2, n2)."""
    r = B.shape[0]
    m1, _, n1, _ = WC4.shape
    Gb = np.einsum("kip,liq->klpq", B, B)
    H = np.einsum("klpq,apbq->kalb", Gb, C4).reshape(r * n1, r * n1)
    R = np.einsum("kip,xiap->kax", B, WC4).reshape(r * n1, m1)
    X = np.linalg.lstsq(H, R, rcond=None)[0]  # H may be singular (zero B or inputs)
    return X.reshape(r, n1, m1).transpose(0, 2, 1)


def als_sweeps(
    W: np.ndarray, C: np.ndarray, A: np.ndarray, B: np.ndarray, n_sweeps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_sweeps`` of A-then-B exact least squares in the norm of C (float64 NumPy);
    each half-step is the exact minimiser over its block, so the error never increases."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    WC = W @ C
    WC4 = WC.reshape(m1, m2, n1, n2)
    C4 = C.reshape(n1, n2, n1, n2)
    WC4s = WC4.transpose(1, 0, 3, 2)  # the shuffled problem: B⊗A on W's perfect shuffle
    C4s = C4.transpose(1, 0, 3, 2)
    for _ in range(n_sweeps):
        A = _solve_a(WC4, C4, B)
        B = _solve_a(WC4s, C4s, A)
    return A, B


def whitened_permuted_kron(
    W: Any,
    C: Any,
    shape: Any,
    rank: int = 1,
    *,
    damp: float = 0.0,
    n_als: int = 0,
    **options: Any,
) -> Any:
    """Permuted Kronecker sum fitted to the inputs: W ≈ K[row_perm][:, col_perm].

    The permutations come from :func:`tqla.permuted_kron` (``options`` are its keyword
    arguments); the Kronecker sum K is then refitted by :func:`whitened_kron_svd` to the
    permuted W with the moment permuted like the columns, C[col_perm][:, col_perm]
    (input j of W is input col_perm[j] of K).  ``errors`` of the result keep the plain
    search's history; ``error`` is replaced by the whitened relative error.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((4, 4))
    >>> P = whitened_permuted_kron(W, np.eye(4), ((2, 2), (2, 2)), 1, n_iter=2)
    >>> P.to_dense().shape
    (4, 4)
    """
    from tqla.permuted import PermutedKronecker, permuted_kron

    _, Wx = as_float_matrix(W, "W")
    s = KroneckerShape.of(shape)
    s.check_matrix(Wx)
    Cd = _moment64(C, s.matrix_shape[1])
    P = permuted_kron(Wx, s, rank, **options)
    rp, cp = to_numpy(P.row_perm), to_numpy(P.col_perm)
    # W[i, j] = K[rp[i], cp[j]], so K's target is W[inv_rp][:, inv_cp] and K's column c
    # sees W's input inv_cp[c]
    inv_r, inv_c = np.argsort(rp), np.argsort(cp)
    Wk = to_numpy(Wx, np.float64)[inv_r][:, inv_c]
    Ck = Cd[inv_c][:, inv_c]
    K = whitened_kron_svd(Wk, Ck, s, rank, damp=damp, n_als=n_als)
    err = whitened_error(Wk, K.to_dense(), Ck)
    K = KroneckerSum(_back(np.asarray(K.A), Wx), _back(np.asarray(K.B), Wx))
    return PermutedKronecker(
        K,
        rp,
        cp,
        [*P.errors[:-1], err],
        P.n_iter,
        permuted=P.permuted,
        timings=P.timings,
        restart_errors=P.restart_errors,
    )
