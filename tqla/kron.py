"""Kronecker sums and the Van Loan–Pitsianis rearrangement (docs/kron.md).

A Kronecker sum of rank r approximates an M×N matrix, M = m1·m2, N = n1·n2, as

    K = Σ_k A_k ⊗ B_k,   A_k: m1×n1,  B_k: m2×n2,

with NumPy's row-major ``kron`` convention.  The rearrangement R maps W to the
(m1·n1)×(m2·n2) matrix whose row (i1, j1) is the flattened block W[i1·m2:(i1+1)·m2,
j1·n2:(j1+1)·n2]; it turns A ⊗ B into vec(A)·vec(B)ᵀ, so the best rank-r Kronecker sum in
the Frobenius norm is a truncated SVD of R(W).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import (
    array_namespace,
    as_float_matrix,
    check_finite,
    device_of,
    is_numpy,
)
from tqla._kernels import resolve
from tqla._memory import available_memory, fmt_bytes, positive_bytes
from tqla.shapes import FactorShape, KroneckerShape, factor_shapes
from tqla.svd import SVDMethod, auto_method, check_method, gram_rows, svd_rows

__all__ = [
    "FactorShape",
    "KroneckerShape",
    "KroneckerSum",
    "factor_shapes",
    "kron_svd",
    "rearrange",
    "unrearrange",
]

# Below this size of the small side of R(W) the Gram route is used by method="auto".
GRAM_MAX_SIDE = 512
# From this many entries on, rearrange()/unrearrange() of NumPy arrays use the copy
# kernel of the table (benchmarks/results/kron_cpu.md); below, NumPy's own strided copy.
_FAST_COPY_MIN = 1 << 16


# --------------------------------------------------------------------------------------
# Rearrangement
# --------------------------------------------------------------------------------------
def _check_2d(x: Any, name: str) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(
            f"{name} must be an array (NumPy, CuPy, torch, ...), got {type(x).__name__}; "
            f"wrap it with numpy.asarray first"
        )
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {tuple(x.shape)}")


def rearrange(W: Any, shape: Any) -> Any:
    """The Van Loan–Pitsianis rearrangement R(W), an (m1·n1)×(m2·n2) matrix.

    Row (i1, j1) of the result is the flattened m2×n2 block of W at block position
    (i1, j1).  R only moves entries: it is linear, invertible (:func:`unrearrange`) and
    keeps the Frobenius norm, and R(A ⊗ B) = vec(A) vec(B)ᵀ.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.arange(6.).reshape(2, 3), np.arange(4.).reshape(2, 2)
    >>> X = rearrange(np.kron(A, B), ((2, 3), (2, 2)))
    >>> np.allclose(X, np.outer(A.ravel(), B.ravel()))
    True
    """
    s = KroneckerShape.of(shape)
    _check_2d(W, "W")
    s.check_matrix(W)
    xp = array_namespace(W)
    fast = _copy_kernel("rearrange", xp, W, s)
    if fast is not None:
        return fast(W, s)
    return _rearrange_xp(xp, W, s)


def _rearrange_xp(xp: Any, W: Any, s: KroneckerShape) -> Any:
    """R(W) with the array library's own reshape/transpose (a view when one exists)."""
    W4 = xp.reshape(W, (s.m1, s.m2, s.n1, s.n2))
    return xp.reshape(xp.permute_dims(W4, (0, 2, 1, 3)), s.rearranged_shape)


def _copy_kernel(name: str, xp: Any, A: Any, s: KroneckerShape) -> Any:
    """The copy kernel ``name`` of the table for large NumPy float input, else None.

    Only used where NumPy would copy anyway (m2 > 1 and n1 > 1; otherwise R is a view).
    The ``"numpy"`` kernel (blocked copy of n2-entry runs) is always there.
    """
    if not is_numpy(xp) or s.m2 == 1 or s.n1 == 1 or A.size < _FAST_COPY_MIN:
        return None
    if A.dtype not in (np.float32, np.float64):
        return None
    return resolve(name, "auto", A)[1]


def unrearrange(X: Any, shape: Any) -> Any:
    """Inverse of :func:`rearrange`: the (m1·m2)×(n1·n2) matrix W with R(W) = X."""
    s = KroneckerShape.of(shape)
    _check_2d(X, "X")
    if tuple(int(v) for v in X.shape) != s.rearranged_shape:
        raise ValueError(
            f"X of shape {tuple(X.shape)} does not match the rearranged shape "
            f"(m1·n1, m2·n2) = {s.rearranged_shape} of A {s.a} ⊗ B {s.b}"
        )
    xp = array_namespace(X)
    fast = _copy_kernel("unrearrange", xp, X, s)
    if fast is not None:
        return fast(X, s)
    X4 = xp.reshape(X, (s.m1, s.n1, s.m2, s.n2))
    return xp.reshape(xp.permute_dims(X4, (0, 2, 1, 3)), s.matrix_shape)


# --------------------------------------------------------------------------------------
# KroneckerSum
# --------------------------------------------------------------------------------------
def _check_operand(X: Any) -> None:
    if not hasattr(X, "shape") or not hasattr(X, "ndim"):
        raise TypeError(
            f"X must be an array of the factors' library, got {type(X).__name__}; "
            f"wrap it with numpy.asarray / torch.as_tensor first"
        )


class KroneckerSum:
    """A sum of Kronecker products Σ_k A[k] ⊗ B[k], kept in factored form.

    Parameters
    ----------
    A : array of shape (r, m1, n1)
    B : array of shape (r, m2, n2)
        Factors of one array library, one floating dtype, one device.

    Notes
    -----
    Products with vectors and matrices never form the dense matrix: for ``K @ X`` with
    X of shape (N, k), the two association orders cost r·m1·n2·k·(n1 + m2) and
    r·n1·m2·k·(m1 + n2) multiply-adds (:meth:`KroneckerShape.matmat_costs`); the cheaper
    one (:meth:`KroneckerShape.matmat_order`) is used, batched over the rank.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> K = KroneckerSum(rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 2)))
    >>> K.shape, K.rank, K.n_params
    ((15, 8), 2, 44)
    >>> x = rng.standard_normal(8)
    >>> np.allclose(K @ x, K.to_dense() @ x)
    True
    """

    __array_priority__ = 1000  # make ``ndarray @ K`` defer to __rmatmul__

    def __init__(self, A: Any, B: Any):
        for name, F in (("A", A), ("B", B)):
            if not hasattr(F, "shape") or len(F.shape) != 3:
                raise ValueError(
                    f"{name} must be a 3-D array of shape (rank, rows, cols), "
                    f"got {getattr(F, 'shape', type(F).__name__)}"
                )
        as_float_matrix(A, "A", ndim=3, finite=False)
        as_float_matrix(B, "B", ndim=3, finite=False)
        xp = array_namespace(A, B)
        if A.shape[0] != B.shape[0]:
            raise ValueError(
                f"A and B must hold the same number of terms (rank): "
                f"A.shape[0] = {A.shape[0]}, B.shape[0] = {B.shape[0]}"
            )
        if A.dtype != B.dtype:
            raise TypeError(f"A and B must share a dtype, got {A.dtype} and {B.dtype}")
        self.A = A
        self.B = B
        self._xp = xp

    # -- descriptive ---------------------------------------------------------------
    @property
    def kshape(self) -> KroneckerShape:
        return KroneckerShape(tuple(self.A.shape[1:]), tuple(self.B.shape[1:]))

    @property
    def shape(self) -> tuple[int, int]:
        return self.kshape.matrix_shape

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def n_params(self) -> int:
        return self.kshape.n_params(self.rank)

    @property
    def dtype(self) -> Any:
        return self.A.dtype

    @property
    def xp(self) -> Any:
        return self._xp

    def __repr__(self) -> str:
        s = self.kshape
        return (
            f"KroneckerSum(shape={self.shape}, A={s.a}, B={s.b}, rank={self.rank}, "
            f"n_params={self.n_params}, dtype={self.dtype})"
        )

    @property
    def T(self) -> KroneckerSum:
        """The transposed sum Σ A_kᵀ ⊗ B_kᵀ."""
        xp = self._xp
        return KroneckerSum(xp.permute_dims(self.A, (0, 2, 1)), xp.permute_dims(self.B, (0, 2, 1)))

    # -- dense ---------------------------------------------------------------------
    def rearranged(self) -> Any:
        """R(K) = Σ vec(A_k) vec(B_k)ᵀ, an (m1·n1)×(m2·n2) matrix of rank ≤ r."""
        xp = self._xp
        r = self.rank
        Af = xp.reshape(self.A, (r, -1))
        Bf = xp.reshape(self.B, (r, -1))
        return xp.matmul(xp.permute_dims(Af, (1, 0)), Bf)

    def to_dense(self) -> Any:
        """The M×N matrix Σ A_k ⊗ B_k (one GEMM plus a rearrangement)."""
        return unrearrange(self.rearranged(), self.kshape)

    # -- products ------------------------------------------------------------------
    def _matmat(self, X: Any) -> Any:
        """K @ X for X of shape (N, k)."""
        xp = self._xp
        r = self.rank
        s = self.kshape
        m1, n1, m2, n2 = s.m1, s.n1, s.m2, s.n2
        k = int(X.shape[1])
        if s.matmat_order(r, k) == "b_first":
            # T[r, i2, (j1, c)] = Σ_j2 B[r, i2, j2] X[(j1, j2), c]
            X3 = xp.reshape(xp.permute_dims(xp.reshape(X, (n1, n2, k)), (1, 0, 2)), (n2, n1 * k))
            T = xp.matmul(self.B, X3)  # (r, m2, n1*k)
            T = xp.permute_dims(xp.reshape(T, (r, m2, n1, k)), (0, 2, 1, 3))
            T = xp.reshape(T, (r * n1, m2 * k))
            Ap = xp.reshape(xp.permute_dims(self.A, (1, 0, 2)), (m1, r * n1))
            Y = xp.matmul(Ap, T)  # (m1, m2*k)
            return xp.reshape(Y, (m1 * m2, k))
        # T[r, i1, (j2, c)] = Σ_j1 A[r, i1, j1] X[(j1, j2), c]
        T = xp.matmul(self.A, xp.reshape(X, (n1, n2 * k)))  # (r, m1, n2*k)
        T = xp.permute_dims(xp.reshape(T, (r, m1, n2, k)), (0, 2, 1, 3))
        T = xp.reshape(T, (r * n2, m1 * k))
        Bp = xp.reshape(xp.permute_dims(self.B, (1, 0, 2)), (m2, r * n2))
        Y = xp.matmul(Bp, T)  # (m2, m1*k)
        Y = xp.permute_dims(xp.reshape(Y, (m2, m1, k)), (1, 0, 2))
        return xp.reshape(Y, (m1 * m2, k))

    def matmat(self, X: Any) -> Any:
        """K @ X for X of shape (N,), (N, k) or (..., N, k), without forming K."""
        xp = self._xp
        N = self.shape[1]
        _check_operand(X)
        if X.ndim == 0 or int(X.shape[0 if X.ndim == 1 else -2]) != N:
            raise ValueError(
                f"K @ X needs X with {N} rows (K has shape {self.shape}), "
                f"got shape {tuple(X.shape)}"
            )
        if X.dtype != self.dtype:
            raise TypeError(f"X must have the factors' dtype {self.dtype}, got {X.dtype}")
        if X.ndim == 1:
            return xp.reshape(self._matmat(xp.reshape(X, (N, 1))), (self.shape[0],))
        if X.ndim == 2:
            return self._matmat(X)
        lead = tuple(int(v) for v in X.shape[:-2])
        k = int(X.shape[-1])
        nd = X.ndim
        # (..., N, k) -> (N, ..., k) -> (N, prod*k)
        Xm = xp.reshape(xp.permute_dims(X, (nd - 2, *range(nd - 2), nd - 1)), (N, -1))
        Y = xp.reshape(self._matmat(Xm), (self.shape[0], *lead, k))
        return xp.permute_dims(Y, (*range(1, nd - 1), 0, nd - 1))

    def rmatmat(self, X: Any) -> Any:
        """X @ K for X of shape (M,) or (..., M), without forming K."""
        xp = self._xp
        M = self.shape[0]
        _check_operand(X)
        if X.ndim == 0 or int(X.shape[-1]) != M:
            raise ValueError(
                f"X @ K needs X with {M} columns (K has shape {self.shape}), "
                f"got shape {tuple(X.shape)}"
            )
        if X.dtype != self.dtype:
            raise TypeError(f"X must have the factors' dtype {self.dtype}, got {X.dtype}")
        lead = tuple(int(v) for v in X.shape[:-1])
        Xm = xp.reshape(X, (-1, M))
        Y = self.T._matmat(xp.permute_dims(Xm, (1, 0)))  # (N, b)
        return xp.reshape(xp.permute_dims(Y, (1, 0)), (*lead, self.shape[1]))

    def __matmul__(self, X: Any) -> Any:
        return self.matmat(X)

    def __rmatmul__(self, X: Any) -> Any:
        return self.rmatmat(X)

    def astype(self, dtype: Any) -> KroneckerSum:
        xp = self._xp
        return KroneckerSum(xp.astype(self.A, dtype), xp.astype(self.B, dtype))


# --------------------------------------------------------------------------------------
# kron_svd
# --------------------------------------------------------------------------------------
def _svd_gram(xp: Any, W: Any, s: KroneckerShape, rank: int, kernel: str):
    """Rank-``rank`` Kronecker factors of W through the Gram matrix of R(W)'s small side.

    With X = R(W) of shape (q, p): if p <= q, the top eigenpairs (λ_k, v_k) of XᵀX give
    B_k = √σ_k·v_k and A_k = X·v_k/√σ_k (σ_k = √λ_k); otherwise the same with XXᵀ and the
    roles of A and B swapped (:func:`tqla.svd.gram_rows`, shared with
    :func:`tqla.truncated_svd`).  Two kernels of the table do the passes over the data
    (``rearranged_gram``, then ``rearranged_matmul``); the sign convention and the
    1/√σ_k scaling are applied to the small eigenvector matrix *before* the second pass,
    so the large factor comes out of it final.  Kernels that read W in place
    (``"numba"``) never form R(W); the others get one rearranged copy, shared by both
    passes.  The product of the factors is X·V·Vᵀ (or U·Uᵀ·X) whatever the accuracy of λ,
    which only balances the scale between A and B.

    Returns ``(A_rows, B_rows)`` of shapes (r, m1·n1) and (r, m2·n2), or ``None`` when the
    Gram matrix is not finite (non-finite W, or squares that overflow the dtype).
    """
    q, p = s.rearranged_shape
    impl, gram = resolve("rearranged_gram", kernel, W)
    _, matmul = resolve("rearranged_matmul", impl, W)
    X = None
    if impl == "numpy":  # the one rearranged copy, C-ordered for BLAS
        X = _copy_kernel("rearrange", xp, W, s)
        X = np.ascontiguousarray(_rearrange_xp(xp, W, s) if X is None else X(W, s))
    elif impl != "numba":  # with the library's own operations
        X = _rearrange_xp(xp, W, s)
    side = "right" if p <= q else "left"
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, as a bad W
        G = gram(W, s, side, X)
    if not bool(xp.all(xp.isfinite(G))):
        return None
    big, small, _ = gram_rows(xp, G, rank, lambda V: matmul(W, s, side, V, X), root=True)
    if is_numpy(xp):
        big = np.ascontiguousarray(big)  # no copy for the numba kernel's output
    return (big, small) if side == "right" else (small, big)


def choose_svd_method(shape: Any, rank: int) -> str:
    """The route ``method="auto"`` takes for a Kronecker shape and rank.

    * ``"gram"`` when the small side of R(W) has at most 512 entries (one pass over W
      builds a small Gram matrix; GPT-2's MLP plan has a side of 8);
    * ``"randomized"`` when both sides are larger and ``rank`` is at most a tenth of the
      small side;
    * ``"full"`` (LAPACK/cuSOLVER thin SVD) otherwise.
    """
    s = KroneckerShape.of(shape)
    return auto_method(min(s.rearranged_shape), int(rank), GRAM_MAX_SIDE)


def kron_svd(
    W: Any,
    shape: Any,
    rank: int = 1,
    *,
    method: SVDMethod = "auto",
    rng: None | int | np.random.Generator = None,
    kernel: str = "auto",
    max_bytes: int | None = None,
) -> KroneckerSum:
    """Best rank-``rank`` Kronecker sum approximation of W in the Frobenius norm.

    Computes the truncated SVD of the rearrangement R(W) = Σ σ_k u_k v_kᵀ and returns
    A_k = √σ_k·unvec(u_k), B_k = √σ_k·unvec(v_k).  The squared error is Σ_{k>r} σ_k².

    Parameters
    ----------
    W : array of shape (m1·m2, n1·n2)
        Real floating matrix (NumPy, CuPy, torch, ...); the result has its library,
        device and dtype.
    shape : KroneckerShape or ((m1, n1), (m2, n2))
        Factor shapes.
    rank : int
        Number of Kronecker terms, 1 ≤ rank ≤ min(m1·n1, m2·n2).
    method : {"auto", "gram", "full", "randomized"}
        SVD route; see :func:`choose_svd_method` for what "auto" picks.  "gram" and "full"
        are exact; "randomized" is a near-optimal approximation (4 power iterations).
    rng : None, int or numpy.random.Generator
        Random state of the randomized route.
    kernel : str
        Implementation of the kernels of the Gram route ("auto", "numpy", "numba",
        "array_api"); see :doc:`backends <backends>`.  "auto" takes "numpy" for NumPy
        input (one blocked rearranged copy and two BLAS products: no Numba load on a
        first call); "numba" reads W in place and is faster warm; other libraries use
        "array_api".
    max_bytes : int, optional
        Ceiling for the temporaries of the decomposition (rearranged copy, Gram matrix,
        LAPACK copies and factors; :func:`svd_memory` gives the estimate).  Default: the
        host memory available now (Linux's MemAvailable, else half the physical memory)
        for host arrays, no ceiling for device arrays.  A decomposition that would not fit
        raises MemoryError naming the sizes, before anything is allocated.

    Returns
    -------
    KroneckerSum
        With a deterministic sign convention: in each term, the entry of largest
        magnitude of the smaller factor (B when both have as many entries) is positive.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((3, 4)), rng.standard_normal((2, 5))
    >>> K = kron_svd(np.kron(A, B), ((3, 4), (2, 5)), rank=1)
    >>> np.allclose(K.to_dense(), np.kron(A, B))
    True
    """
    xp, W = as_float_matrix(W, "W", finite=False)
    s = KroneckerShape.of(shape)
    s.check_matrix(W)
    rank = s.check_rank(rank)
    check_method(method)
    if method == "auto":
        method = choose_svd_method(s, rank)
    _check_svd_memory(xp, W, s, rank, method, kernel, max_bytes)
    if W.dtype not in (xp.float32, xp.float64):
        # Half precisions (float16, bfloat16): LAPACK/cuSOLVER have no such routines, so
        # compute in float32 and return factors of the input dtype.
        W32 = xp.astype(W, xp.float32)
        K = kron_svd(W32, s, rank, method=method, rng=rng, kernel=kernel, max_bytes=max_bytes)
        return K.astype(W.dtype)
    if method == "gram":
        # The Gram matrix is finite exactly when W is (and no square overflows), so the
        # finiteness check costs nothing extra on this route.
        rows = _svd_gram(xp, W, s, rank, kernel)
        if rows is None:
            check_finite(xp, W, "W")  # raises for NaN / infinity
            method = "full"  # finite but huge entries: LAPACK scales, the Gram overflows
        else:
            Ar, Br = rows
    else:
        check_finite(xp, W, "W")
    if method in ("full", "randomized"):
        # the routes of tqla.truncated_svd on R(W), with its sign rule
        Ur, Vr, sigma = svd_rows(xp, rearrange(W, s), rank, method, rng)
        root = xp.reshape(xp.sqrt(sigma), (-1, 1))
        Ar, Br = Ur * root, Vr * root
    if is_numpy(xp):  # C-contiguous factors keep products on the BLAS path
        Ar, Br = np.ascontiguousarray(Ar), np.ascontiguousarray(Br)
    A = xp.reshape(Ar, (rank, s.m1, s.n1))
    B = xp.reshape(Br, (rank, s.m2, s.n2))
    return KroneckerSum(A, B)


def svd_memory(shape: Any, rank: int, method: str, itemsize: int, *, in_place: bool = False) -> int:
    """Bytes of temporaries :func:`kron_svd` allocates on a route (W itself not counted).

    With X = R(W) of shape (q, p), k = min(q, p) and b bytes per entry: the rearranged
    copy q·p·b (not for ``in_place`` kernels of the Gram route), plus

    * ``"gram"``: the k×k Gram matrix and its eigenvectors (2·k²·b) and the factors
      r·(q + p)·b;
    * ``"full"``: LAPACK's working copy of X (q·p·b), U and Vᵀ ((q + p)·k·b) and about
      4·k²·b of workspace;
    * ``"randomized"``: three (q + p)·(r + 10) blocks and the small SVD.

    Examples
    --------
    >>> svd_memory(((384, 768), (2, 4)), 4, "gram", 4)
    14156416
    """
    s = KroneckerShape.of(shape)
    q, p = s.rearranged_shape
    k, r, b = min(q, p), int(rank), int(itemsize)
    copy = 0 if in_place else q * p * b
    if method == "gram":
        return copy + 2 * k * k * b + r * (q + p) * b
    if method == "full":
        return 2 * q * p * b + (q + p) * k * b + 4 * k * k * b
    ell = min(r + 10, k)
    return q * p * b + 3 * (q + p) * ell * b + 2 * ell * ell * b


def _check_svd_memory(
    xp: Any, W: Any, s: KroneckerShape, rank: int, method: str, kernel: str, max_bytes: Any
) -> None:
    """Refuse a decomposition whose temporaries exceed ``max_bytes`` (see kron_svd)."""
    if max_bytes is None:
        if not _on_host(xp, W):
            return
        limit = available_memory()
        if limit is None:  # pragma: no cover - OS without memory information
            return
        source = "the memory available now"
    else:
        limit = positive_bytes(max_bytes, "max_bytes")
        source = "max_bytes"
    half = W.dtype not in (xp.float32, xp.float64)
    # (finfo: array_api_strict's dtypes have no itemsize)
    itemsize = 4 if half else int(xp.finfo(W.dtype).bits) // 8
    in_place = (
        method == "gram"
        and is_numpy(xp)
        and not half
        and W.flags.c_contiguous  # the compiled kernels copy any other layout once
        and _gram_kernel(kernel, W) == "numba"
    )
    need = svd_memory(s, rank, method, itemsize, in_place=in_place)
    if half:
        need += int(W.shape[0]) * int(W.shape[1]) * 4  # the float32 working copy
    if need > limit:
        q, p = s.rearranged_shape
        raise MemoryError(
            f"kron_svd(method={method!r}) of W {tuple(int(v) for v in W.shape)} with "
            f"A {s.a} ⊗ B {s.b}: its rearrangement R(W) is {q}×{p} and the route needs "
            f"about {fmt_bytes(need)} of temporaries (tqla.kron.svd_memory), over "
            f"{source} ({fmt_bytes(limit)}). Use method='gram' (a min(q, p)² = "
            f"{min(q, p)}² Gram matrix) or 'randomized', factor shapes with a smaller side, "
            f"or pass a larger max_bytes= if the memory is there."
        )


def _on_host(xp: Any, W: Any) -> bool:
    if is_numpy(xp):
        return True
    dev = device_of(W)
    # torch: device.type; array_api_strict: its Device('CPU_DEVICE') (older releases
    # spelled it array_api_strict_cpu_device)
    return str(getattr(dev, "type", dev)).lower() in (
        "cpu",
        "array_api_strict_cpu_device",
        "array_api_strict.device('cpu_device')",
    )


def _gram_kernel(kernel: str, W: Any) -> str | None:
    try:
        return resolve("rearranged_gram", kernel, W)[0]
    except (ImportError, ValueError):
        return None  # the error is raised, with its message, where the kernel is used


def kron_singular_values(W: Any, shape: Any) -> Any:
    """All singular values of R(W), descending (the Kronecker spectrum of W).

    The squared error of the best rank-r Kronecker sum is the sum of the squares of all
    but the first r of them.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.eye(2), np.ones((3, 3))
    >>> np.round(kron_singular_values(np.kron(A, B), ((2, 2), (3, 3))), 6)
    array([4.242641, 0.      , 0.      , 0.      ])
    """
    xp, W = as_float_matrix(W, "W")
    X = rearrange(W, shape)
    if W.dtype not in (xp.float32, xp.float64):
        return xp.astype(xp.linalg.svdvals(xp.astype(X, xp.float32)), W.dtype)
    return xp.linalg.svdvals(X)
