"""Spectral norms of matrices and operators, with certified upper bounds (methods.md §4).

:func:`spectral_norm` returns a :class:`NormEstimate`: an estimate of ‖E‖₂ together with a
lower bound and an upper bound.  The upper bound is *certified*: it holds always for
``method="exact"`` (LAPACK/cuSOLVER singular values plus a rounding margin) and, for the
matrix-free methods, with probability at least ``1 − failure_prob`` over the random start
vectors — whatever E is.  E may be a dense array of any library, or an operator known only
through products (:func:`residual` builds W − K from a matrix and a Kronecker sum without
forming the difference).

The bounds used:

* ``"randomized"`` — Halko, Martinsson & Tropp (2011), Lemma 4.1 (after Woolfe, Liberty,
  Rokhlin & Tygert): for a fixed matrix B and k independent standard Gaussian vectors ωᵢ,
  ‖B‖ ≤ α·√(2/π)·maxᵢ ‖B ωᵢ‖ with probability ≥ 1 − α^(−k).  Applied to B = (EᵀE)^q
  (q power steps, each vector iterated on its own and its norm tracked in logarithms):
  ‖E‖ ≤ (α·√(2/π)·maxᵢ ‖(EᵀE)^q ωᵢ‖)^(1/2q).
* ``"lanczos"`` — Kuczyński & Woźniakowski (1992), Theorem 4.2: for a symmetric positive
  semidefinite n×n matrix A and a start vector uniform on the sphere, the largest Ritz value
  θ after j Lanczos steps satisfies P(θ < (1 − ε)·λ₁(A)) ≤ 1.648·√n·exp(−√ε·(2j − 1)).
  Solving for ε at the stated failure probability gives ‖E‖ ≤ √(θ/(1 − ε)) with A = EᵀE
  (or EEᵀ, whichever is smaller).

Both methods may stop early once the bound is within ``rtol`` of the estimate; the failure
probability is split over every step at which the bound is checked (a union bound), so the
stated probability holds for the adaptive stopping as well.  In floating point a relative
rounding margin of 16·n·eps is added to every upper bound.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np

from tqla._array import (
    array_namespace,
    as_float_matrix,
    check_int,
    check_rng,
    from_numpy,
    to_numpy,
)

__all__ = ["NormEstimate", "Operator", "as_operator", "residual", "spectral_norm"]

NormMethod = Literal["auto", "exact", "lanczos", "randomized"]

# method="auto" computes all singular values when the dense matrix has at most this many
# entries times min(M, N) (an M×N SVD costs about that many multiply-adds).
EXACT_MAX_WORK = 4e9
# ... and forms a dense operator (by products with the identity) up to this many entries.
EXACT_MAX_OPERATOR_ENTRIES = 1 << 22


class NormEstimate(NamedTuple):
    """The result of :func:`spectral_norm`; ``float(est)`` is the estimate.

    Attributes
    ----------
    estimate : float
        Best estimate of ‖E‖₂ (exact for ``method="exact"``).
    lower : float
        A lower bound (a Ritz value: ≤ ‖E‖₂ up to rounding).
    upper : float
        Certified upper bound: ‖E‖₂ ≤ upper with probability ≥ 1 − ``failure_prob``
        over the method's random start (``failure_prob`` = 0 for the exact method).
    method : str
        The method that ran ("exact", "lanczos" or "randomized").
    failure_prob : float
        Probability that ``upper`` fails, for any E.
    n_products : int
        Products of E (or Eᵀ) with a block of vectors that were computed.
    """

    estimate: float
    lower: float
    upper: float
    method: str
    failure_prob: float
    n_products: int

    def __float__(self) -> float:
        return float(self.estimate)


# --------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------
class Operator:
    """A real M×N matrix known through products: ``mm(X) = E @ X``, ``tmm(Y) = Eᵀ @ Y``.

    ``like`` is an array of E's library, device and dtype (used to build start vectors).
    """

    def __init__(self, shape: tuple[int, int], like: Any, mm: Any, tmm: Any, dense: Any = None):
        self.shape = (int(shape[0]), int(shape[1]))
        self.like = like
        self.xp = array_namespace(like)
        self.dtype = like.dtype
        self.mm = mm
        self.tmm = tmm
        self.dense = dense  # the dense array when E is one, else None

    @property
    def T(self) -> Operator:
        return Operator(
            (self.shape[1], self.shape[0]),
            self.like,
            self.tmm,
            self.mm,
            None if self.dense is None else self.xp.permute_dims(self.dense, (1, 0)),
        )

    def to_dense(self) -> Any:
        """E as a dense array (by products with the identity unless E is one already)."""
        if self.dense is not None:
            return self.dense
        xp = self.xp
        eye = xp.eye(self.shape[1], dtype=self.dtype, device=_dev(self.like))
        return self.mm(eye)


def float_dtype_eps(xp: Any, dtype: Any) -> float:
    """Machine epsilon of a floating dtype (half precisions: bfloat16's, the coarser)."""
    if dtype == xp.float64:
        return float(np.finfo(np.float64).eps)
    if dtype == xp.float32:
        return float(np.finfo(np.float32).eps)
    return 2.0**-7


def _dev(x: Any) -> Any:
    from tqla._array import device_of

    return device_of(x)


def _is_scipy_operator(E: Any) -> bool:
    try:
        from scipy.sparse.linalg import LinearOperator
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return isinstance(E, LinearOperator)


def as_operator(E: Any, name: str = "E") -> Operator:
    """Wrap E as an :class:`Operator`.

    Accepts a dense 2-D real array of any library, a :class:`~tqla.KroneckerSum` or anything
    with ``shape``, ``matmat`` and ``.T`` of the same kind (``HeteroKroneckerSum``,
    :class:`Operator`), or a SciPy ``LinearOperator`` (``matmat``/``rmatmat``).
    """
    if isinstance(E, Operator):
        return E
    if _is_scipy_operator(E):
        M, N = (int(v) for v in E.shape)
        dt = np.dtype(E.dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"{name} must have a real floating dtype, got {E.dtype}")
        like = np.zeros((1, 1), dtype=dt)
        return Operator(
            (M, N), like, lambda X: np.asarray(E.matmat(X)), lambda Y: np.asarray(E.rmatmat(Y))
        )
    if hasattr(E, "matmat") and hasattr(E, "T") and hasattr(E, "shape"):
        like = _like_of(E)
        Et = E.T
        return Operator(tuple(E.shape), like, E.matmat, Et.matmat)
    if not hasattr(E, "shape"):
        raise TypeError(
            f"{name} must be a 2-D array, a KroneckerSum-like object (shape, matmat, .T) or a "
            f"scipy LinearOperator, got {type(E).__name__}"
        )
    xp, E = as_float_matrix(E, name)
    Et = xp.permute_dims(E, (1, 0))
    return Operator(
        tuple(E.shape), E, lambda X: xp.matmul(E, X), lambda Y: xp.matmul(Et, Y), dense=E
    )


def _like_of(op: Any) -> Any:
    """A small array of the library/device/dtype of a factored object."""
    for attr in ("A", "like"):
        if hasattr(op, attr):
            return getattr(op, attr)
    if hasattr(op, "terms") and op.terms:
        return op.terms[0].A
    raise TypeError(f"cannot tell the array library of {type(op).__name__}")


def residual(W: Any, K: Any) -> Operator:
    """The operator E = W − K through products only: E·x = W·x − K·x.

    Parameters
    ----------
    W : array or operator (anything :func:`as_operator` accepts)
    K : KroneckerSum, HeteroKroneckerSum, array or operator of W's shape

    Examples
    --------
    >>> import numpy as np, tqla
    >>> W = np.random.default_rng(0).standard_normal((6, 4))
    >>> K = tqla.kron_svd(W, ((3, 2), (2, 2)), rank=1)
    >>> E = residual(W, K)
    >>> np.allclose(E.mm(np.eye(4)), W - K.to_dense())
    True
    """
    Wo = as_operator(W, "W")
    Ko = as_operator(K, "K")
    if Wo.shape != Ko.shape:
        raise ValueError(f"W of shape {Wo.shape} and K of shape {Ko.shape} must match")
    return Operator(
        Wo.shape,
        Wo.like,
        lambda X: Wo.mm(X) - Ko.mm(X),
        lambda Y: Wo.tmm(Y) - Ko.tmm(Y),
    )


# --------------------------------------------------------------------------------------
# spectral_norm
# --------------------------------------------------------------------------------------
def _margin(op: Operator) -> float:
    """Relative rounding margin added to certified upper bounds."""
    return 16.0 * max(op.shape) * float_dtype_eps(op.xp, op.dtype)


def _exact(op: Operator) -> NormEstimate:
    xp = op.xp
    D = op.to_dense()
    if D.dtype not in (xp.float32, xp.float64):
        D = xp.astype(D, xp.float32)
    s = float(xp.max(xp.linalg.svdvals(D)))
    n_prod = 0 if op.dense is not None else 1
    return NormEstimate(s, s, s * (1.0 + _margin(op)), "exact", 0.0, n_prod)


def _gaussian(op: Operator, n: int, k: int, rng: np.random.Generator) -> Any:
    return op.xp.astype(from_numpy(rng.standard_normal((n, k)), op.like), op.dtype)


def _nonzero(xp: Any, x: Any) -> Any:
    return xp.where(x > 0, x, xp.ones_like(x))


def _col_norms(xp: Any, Y: Any) -> Any:
    return xp.sqrt(xp.sum(Y * Y, axis=0))


def _randomized(
    op: Operator, n_vectors: int, max_iter: int, rtol: float, delta: float, rng
) -> NormEstimate:
    """Independent power iterations on k Gaussian vectors; HMT bound (module docstring)."""
    xp = op.xp
    M, N = op.shape
    Y = _gaussian(op, N, n_vectors, rng)
    nrm = to_numpy(_col_norms(xp, Y), np.float64)
    logs = np.log(np.maximum(nrm, 1e-300))
    Y = Y / xp.reshape(_nonzero(xp, _col_norms(xp, Y)), (1, -1))
    # The bound is checked after every step: split delta over max_iter checks.
    alpha = (max_iter / delta) ** (1.0 / n_vectors)
    c = math.log(alpha * math.sqrt(2.0 / math.pi))
    lower = upper = 0.0
    n_prod = 0
    for q in range(1, max_iter + 1):
        Z1 = op.mm(Y)
        lower = max(lower, float(xp.max(_col_norms(xp, Z1))))
        Z = op.tmm(Z1)
        n_prod += 2
        zn = _col_norms(xp, Z)
        zn_h = to_numpy(zn, np.float64)
        if not np.all(zn_h > 0):  # E annihilates a start vector: E = 0 a.s.
            if float(np.max(zn_h)) == 0.0:
                return NormEstimate(0.0, 0.0, 0.0, "randomized", delta, n_prod)
        logs = logs + np.log(np.maximum(zn_h, 1e-300))
        Y = Z / xp.reshape(_nonzero(xp, zn), (1, -1))
        upper = math.exp((c + float(np.max(logs))) / (2 * q))
        if upper <= (1.0 + rtol) * lower:
            break
    # Rayleigh–Ritz on the span of the final vectors: a lower bound, usually sharper.
    Q, _ = xp.linalg.qr(Y)
    s = float(xp.max(xp.linalg.svdvals(op.mm(Q))))
    n_prod += 1
    lower = max(lower, s)
    upper = max(upper, lower) * (1.0 + _margin(op))
    return NormEstimate(lower, lower, upper, "randomized", delta, n_prod)


def _kw_eps(n: int, steps: int, delta: float) -> float:
    """ε with 1.648·√n·exp(−√ε·(2·steps − 1)) = delta (Kuczyński–Woźniakowski)."""
    root = math.log(1.648 * math.sqrt(n) / delta) / (2 * steps - 1)
    return root * root


def _lanczos(op: Operator, max_iter: int, rtol: float, delta: float, rng) -> NormEstimate:
    """Lanczos with full reorthogonalisation on the smaller Gram matrix (EᵀE or EEᵀ)."""
    xp = op.xp
    M, N = op.shape
    if M < N:  # A = E Eᵀ (M×M)
        n, apply = M, lambda v: op.mm(op.tmm(v))
    else:  # A = Eᵀ E (N×N)
        n, apply = N, lambda v: op.tmm(op.mm(v))
    steps_max = min(n, max_iter)
    d = delta / steps_max  # union bound over the checks
    v = _gaussian(op, n, 1, rng)
    v = v / float(xp.linalg.vector_norm(v))
    V = [v]
    alphas: list[float] = []
    betas: list[float] = []
    theta = 0.0
    upper = math.inf
    n_prod = 0
    exhausted = False
    for j in range(1, steps_max + 1):
        w = apply(V[-1])
        n_prod += 2
        a = float(xp.sum(w * V[-1]))
        alphas.append(a)
        Vm = xp.concat(V, axis=1)
        w = w - xp.matmul(Vm, xp.matmul(xp.permute_dims(Vm, (1, 0)), w))
        w = w - xp.matmul(Vm, xp.matmul(xp.permute_dims(Vm, (1, 0)), w))  # twice is enough
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta = max(float(np.linalg.eigvalsh(T)[-1]), 0.0)
        b = float(xp.linalg.vector_norm(w))
        if b <= 64 * float_dtype_eps(xp, op.dtype) * max(theta, abs(a)) or j == n:
            exhausted = True  # invariant subspace: θ is λ₁ (b has a component along v₁ a.s.)
            break
        eps = _kw_eps(n, j, d)
        if eps < 1.0:
            upper = math.sqrt(theta / (1.0 - eps))
            if upper <= (1.0 + rtol) * math.sqrt(theta):
                break
        betas.append(b)
        V.append(w / b)
    s = math.sqrt(theta)
    if exhausted:
        upper = s
    upper *= 1.0 + _margin(op)
    return NormEstimate(s, s, upper, "lanczos", 0.0 if exhausted else delta, n_prod)


def spectral_norm(
    E: Any,
    *,
    method: NormMethod = "auto",
    rtol: float = 0.01,
    max_iter: int = 100,
    failure_prob: float = 1e-6,
    n_vectors: int = 8,
    rng: None | int | np.random.Generator = None,
) -> NormEstimate:
    """‖E‖₂ with a certified upper bound, for an array or an operator.

    Parameters
    ----------
    E : array, KroneckerSum-like, scipy LinearOperator or :class:`Operator`
        The matrix; for W − K without forming it use :func:`residual`.
    method : {"auto", "exact", "lanczos", "randomized"}
        "exact": all singular values by LAPACK/cuSOLVER (operators are first formed by
        products with the identity).  "lanczos": Lanczos on EᵀE from a random start,
        Kuczyński–Woźniakowski bound.  "randomized": power iterations on ``n_vectors``
        Gaussian vectors, Halko–Martinsson–Tropp bound.  "auto": exact when E is dense and
        M·N·min(M, N) ≤ 4e9 or E is an operator with at most 4M entries, else "lanczos".
    rtol : float
        The matrix-free methods stop once upper ≤ (1 + rtol)·lower (or at ``max_iter``).
    max_iter : int
        Lanczos steps / power steps at most.
    failure_prob : float in (0, 1)
        Probability allowed for the upper bound to fail (matrix-free methods).
    n_vectors : int
        Start vectors of the randomized method.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    NormEstimate

    Examples
    --------
    >>> import numpy as np
    >>> E = np.random.default_rng(0).standard_normal((30, 20))
    >>> est = spectral_norm(E, method="exact")
    >>> bool(np.isclose(est.estimate, np.linalg.norm(E, 2)))
    True
    >>> est = spectral_norm(E, method="lanczos", rng=0)
    >>> exact = np.linalg.norm(E, 2)
    >>> bool(est.lower <= exact * (1 + 1e-12) and exact <= est.upper)
    True
    """
    if method not in ("auto", "exact", "lanczos", "randomized"):
        raise ValueError(
            f"method must be one of 'auto', 'exact', 'lanczos', 'randomized', got {method!r}"
        )
    if not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ValueError(f"rtol must be a positive number, got {rtol!r}")
    if not (isinstance(failure_prob, (int, float)) and 0 < failure_prob < 1):
        raise ValueError(f"failure_prob must be in (0, 1), got {failure_prob!r}")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    n_vectors = check_int(n_vectors, "n_vectors", minimum=1)
    op = as_operator(E)
    M, N = op.shape
    if method == "auto":
        if op.dense is not None:
            method = "exact" if M * N * min(M, N) <= EXACT_MAX_WORK else "lanczos"
        else:
            method = "exact" if M * N <= EXACT_MAX_OPERATOR_ENTRIES else "lanczos"
    if method == "exact":
        return _exact(op)
    g = check_rng(rng)
    if method == "lanczos":
        return _lanczos(op, max_iter, float(rtol), float(failure_prob), g)
    return _randomized(op, n_vectors, max_iter, float(rtol), float(failure_prob), g)
