"""Truncated SVD on any array library, with tqla's deterministic sign rule.

:func:`truncated_svd` is the public entry point; :func:`tqla.kron_svd` runs the same
routes on the rearrangement R(W) through the private pieces below (the Gram route through
the kernel table, so that a compiled kernel can read W in place):

* ``"gram"``: the top eigenpairs of the Gram matrix of the small side (XᵀX when X has
  no more columns than rows, else XXᵀ), then one product with X for the other side;
* ``"full"``: the thin LAPACK/cuSOLVER SVD;
* ``"randomized"``: Halko–Martinsson–Tropp with oversampling 10 and 4 QR-stabilised
  power iterations.

Sign rule (every route): for each k, the entry of largest magnitude of the singular vector
on the *smaller* side — ``Vh[k]`` when X has no more columns than rows, else ``U[:, k]``
— is positive (the first such entry when several tie).  It makes results comparable across
routes, backends and runs.  See ``docs/kron.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from tqla._array import as_float_matrix, check_int, check_rng, device_of, from_numpy, is_numpy

__all__ = ["truncated_svd"]

SVDMethod = Literal["auto", "gram", "full", "randomized"]
METHODS = ("auto", "gram", "full", "randomized")

#: ``truncated_svd(method="auto")`` takes the (float64) Gram route up to this small side.
TRUNCATED_GRAM_MAX_SIDE = 4096


# --------------------------------------------------------------------------------------
# Private pieces shared with kron_svd
# --------------------------------------------------------------------------------------
def row_signs(xp: Any, S: Any) -> Any:
    """(r, 1) signs making the entry of largest magnitude of each row of S positive."""
    n = S.shape[1]
    idx = xp.argmax(xp.abs(S), axis=1)  # (r,)
    onehot = xp.reshape(xp.arange(n, device=device_of(S)), (1, n)) == xp.reshape(idx, (-1, 1))
    picked = xp.sum(xp.where(onehot, S, xp.zeros_like(S)), axis=1)
    return xp.reshape(xp.where(picked < 0, -xp.ones_like(picked), xp.ones_like(picked)), (-1, 1))


def sign_fix(xp: Any, L: Any, R: Any) -> tuple[Any, Any]:
    """Apply the sign rule to row pairs (L[k], R[k]) of shapes (r, q) and (r, p).

    The rule is decided on the smaller side (R when p <= q) and both rows are flipped.
    """
    if R.shape[1] <= L.shape[1]:
        signs = row_signs(xp, R)
    else:
        signs = row_signs(xp, L)
    return L * signs, R * signs


def inv_or_zero(xp: Any, x: Any) -> Any:
    """1/x where x > 0, else 0."""
    ok = x > 0
    return xp.where(ok, 1.0 / xp.where(ok, x, xp.ones_like(x)), xp.zeros_like(x))


def top_from_gram(xp: Any, G: Any, rank: int) -> tuple[Any, Any]:
    """Top-``rank`` eigenpairs of the symmetric PSD matrix G, largest first.

    Returns (lam, Vt) with Vt of shape (rank, p); negative round-off eigenvalues are 0.
    """
    lam, V = xp.linalg.eigh(G)
    p = V.shape[1]
    Vt = xp.flip(xp.permute_dims(V[:, p - rank :], (1, 0)), axis=0)
    lam = xp.flip(lam[p - rank :], axis=0)
    return xp.where(lam > 0, lam, xp.zeros_like(lam)), Vt


def gram_rows(
    xp: Any, G: Any, rank: int, apply: Callable[[Any], Any], *, root: bool
) -> tuple[Any, Any, Any]:
    """Singular triplets of X from the Gram matrix G of its small side.

    ``apply(V)`` must return X·V (G = XᵀX) or Xᵀ·V (G = XXᵀ) for V of shape (small, r).
    Returns ``(big, small, sigma)``: rows (r, large side) and (r, small side) of the
    singular vectors with the sign rule applied (decided on the small side), and σ.  With
    ``root=True`` both rows come scaled by √σ (the Kronecker factors of kron_svd); the
    scaling is folded into the small matrix V before the pass over X, so the large rows
    come out of ``apply`` final.  Rows of zero singular values are zero.
    """
    lam, Vt = top_from_gram(xp, G, rank)
    Vt = Vt * row_signs(xp, Vt)
    sigma = xp.sqrt(lam)
    if root:
        scale = xp.reshape(xp.sqrt(sigma), (-1, 1))
        small = Vt * scale
        V = xp.permute_dims(Vt * inv_or_zero(xp, scale), (1, 0))
    else:
        small = Vt
        V = xp.permute_dims(Vt * xp.reshape(inv_or_zero(xp, sigma), (-1, 1)), (1, 0))
    big = xp.permute_dims(apply(V), (1, 0))
    return big, small, sigma


def svd_rows(
    xp: Any, X: Any, rank: int, method: str, rng: np.random.Generator | None
) -> tuple[Any, Any, Any]:
    """``"full"`` or ``"randomized"`` SVD of X as sign-fixed rows (r, q), (r, p) and σ."""
    if method == "full":
        U, S, Vh = xp.linalg.svd(X, full_matrices=False)
        Ur, Vr, sigma = xp.permute_dims(U[:, :rank], (1, 0)), Vh[:rank, :], S[:rank]
    else:
        Ur, Vr, sigma = _randomized(xp, X, rank, check_rng(rng))
    Ur, Vr = sign_fix(xp, Ur, Vr)
    return Ur, Vr, sigma


def _randomized(
    xp: Any, X: Any, rank: int, rng: np.random.Generator, n_oversamples: int = 10, n_power: int = 4
):
    """Halko–Martinsson–Tropp randomized SVD with QR-stabilised power iterations."""
    q, p = (int(v) for v in X.shape)
    ell = min(rank + n_oversamples, min(q, p))
    Omega = xp.astype(from_numpy(rng.standard_normal((p, ell)), X), X.dtype)
    Xt = xp.permute_dims(X, (1, 0))
    Q, _ = xp.linalg.qr(xp.matmul(X, Omega))
    for _ in range(n_power):
        Z, _ = xp.linalg.qr(xp.matmul(Xt, Q))
        Q, _ = xp.linalg.qr(xp.matmul(X, Z))
    Bsmall = xp.matmul(xp.permute_dims(Q, (1, 0)), X)  # (ell, p)
    Ub, S, Vh = xp.linalg.svd(Bsmall, full_matrices=False)
    U = xp.matmul(Q, Ub[:, :rank])
    return xp.permute_dims(U, (1, 0)), Vh[:rank, :], S[:rank]


def auto_method(small: int, rank: int, gram_max_side: int) -> str:
    """``"gram"`` up to ``gram_max_side``, else ``"randomized"`` when 10·rank <= small,
    else ``"full"``."""
    if small <= gram_max_side:
        return "gram"
    if 10 * rank <= small:
        return "randomized"
    return "full"


def check_method(method: Any) -> str:
    if method not in METHODS:
        names = ", ".join(repr(m) for m in METHODS)
        raise ValueError(f"method must be one of {names}, got {method!r}")
    return method


# --------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------
def truncated_svd(
    X: Any,
    rank: int,
    *,
    method: SVDMethod = "auto",
    rng: None | int | np.random.Generator = None,
) -> tuple[Any, Any, Any]:
    """The top-``rank`` singular triplets of X: X ≈ U·diag(s)·Vh.

    Parameters
    ----------
    X : array of shape (m, n)
        Real floating matrix of any array library (NumPy, torch, CuPy, array_api_strict);
        finite.  The results have its library, device and dtype (half precisions are
        computed in float32).
    rank : int
        1 <= rank <= min(m, n).
    method : {"auto", "gram", "full", "randomized"}
        ``"gram"``: eigenpairs of the small side's Gram matrix, formed in float64 (one
        pass over X plus a min(m, n)² eigenproblem; singular values below about
        1e-8·s[0] lose their accuracy, the square root of float64's precision).
        ``"full"``: the thin LAPACK/cuSOLVER SVD.  ``"randomized"``: Halko–Martinsson–Tropp
        (oversampling 10, 4 power iterations), near-optimal.  ``"auto"``: "gram" when
        min(m, n) <= 4096, else "randomized" when 10·rank <= min(m, n), else "full".
    rng : None, int or numpy.random.Generator
        Random state of the randomized route.

    Returns
    -------
    U : array of shape (m, rank)
    s : array of shape (rank,)
        Descending, >= 0.
    Vh : array of shape (rank, n)
        Orthonormal columns of U and rows of Vh, except that the ``"gram"`` route returns
        zero vectors for zero singular values (U·diag(s)·Vh is still the best rank-r
        approximation).  Signs follow tqla's rule: the entry of largest magnitude of
        ``Vh[k]`` (when n <= m; of ``U[:, k]`` otherwise) is positive — the same rule as
        :func:`tqla.kron_svd`, whose factors are the singular vectors of R(W) scaled by √s.

    Raises
    ------
    TypeError
        If X is not a real floating array, or rank not an integer.
    ValueError
        If X is not 2-D, empty or not finite, rank is out of range, or method unknown.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((6, 4))
    >>> U, s, Vh = truncated_svd(X, 2)
    >>> U.shape, s.shape, Vh.shape
    ((6, 2), (2,), (2, 4))
    >>> bool(np.allclose(s, np.linalg.svd(X, compute_uv=False)[:2]))
    True
    """
    xp, X = as_float_matrix(X, "X")
    m, n = (int(v) for v in X.shape)
    small = min(m, n)
    rank = check_int(rank, "rank", minimum=1)
    if rank > small:
        raise ValueError(f"rank must satisfy 1 <= rank <= min(m, n) = {small}, got {rank}")
    method = check_method(method)
    if X.dtype not in (xp.float32, xp.float64):
        U, s, Vh = truncated_svd(xp.astype(X, xp.float32), rank, method=method, rng=rng)
        return xp.astype(U, X.dtype), xp.astype(s, X.dtype), xp.astype(Vh, X.dtype)
    if method == "auto":
        method = auto_method(small, rank, TRUNCATED_GRAM_MAX_SIDE)
    if method == "gram":
        out = _gram_svd(xp, X, rank)
        if out is not None:
            return out
        method = "full"  # finite entries whose squares overflow: LAPACK scales
    Ur, Vr, s = svd_rows(xp, X, rank, method, rng)
    U = xp.permute_dims(Ur, (1, 0))
    if is_numpy(xp):
        U = np.ascontiguousarray(U)
    return U, s, Vr


def _gram_svd(xp: Any, X: Any, rank: int) -> tuple[Any, Any, Any] | None:
    """The Gram route of :func:`truncated_svd` (float64 Gram); None if it overflows."""
    dtype = X.dtype
    Xd = X if dtype == xp.float64 else xp.astype(X, xp.float64)
    Xt = xp.permute_dims(Xd, (1, 0))
    right = X.shape[1] <= X.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        G = xp.matmul(Xt, Xd) if right else xp.matmul(Xd, Xt)
    if not bool(xp.all(xp.isfinite(G))):
        return None
    G = (G + xp.permute_dims(G, (1, 0))) / 2  # exactly symmetric for eigh
    if right:
        big, Vh, s = gram_rows(xp, G, rank, lambda V: xp.matmul(Xd, V), root=False)
        U = xp.permute_dims(big, (1, 0))
    else:
        Vh, Ut, s = gram_rows(xp, G, rank, lambda V: xp.matmul(Xt, V), root=False)
        U = xp.permute_dims(Ut, (1, 0))
    if dtype != xp.float64:
        U, s, Vh = xp.astype(U, dtype), xp.astype(s, dtype), xp.astype(Vh, dtype)
    if is_numpy(xp):
        U, Vh = np.ascontiguousarray(U), np.ascontiguousarray(Vh)
    return U, s, Vh
