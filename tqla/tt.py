"""Tensor trains: TT-SVD, rounding, norms and inner products (methods.md §5).

A tensor train (TT) of a d-way tensor X of shape (n_1, …, n_d) is a chain of cores
G_k of shape (r_{k−1}, n_k, r_k), r_0 = r_d = 1, with

    X[i_1, …, i_d] ≈ G_1[:, i_1, :] · G_2[:, i_2, :] ⋯ G_d[:, i_d, :].

:func:`tt_svd` (Oseledets, 2011) sweeps the unfoldings left to right; each step splits the
current (r_{k−1}·n_k) × (rest) matrix C into an orthonormal core Q and the remainder QᵀC.
With a tolerance ``eps`` every split drops at most δ = eps·‖X‖/√(d−1) in the Frobenius norm,
so ‖X − TT‖_F ≤ eps·‖X‖_F (the errors of the steps are orthogonal because the cores to
their left are orthonormal).

Speed: a split does not need a full SVD.  When one side of C is small (GPT-2's MLP matrix
as a TT-matrix has unfoldings of 64 × 36864 and (64·r) × 576) the eigenvectors of the
small Gram matrix (CCᵀ or CᵀC) give the same subspace from one pass over C — the route of
:func:`tqla.kron_svd`.  On the CᵀC side the core is orthonormalised by a thin QR of C·V, so
every core is orthonormal to rounding whichever side was used.  The Gram route squares the
condition number: singular values below √(machine ε)·σ₁ are not resolved, so a tolerance
``eps`` that small makes ``method="auto"`` take the full SVD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from tqla._array import (
    array_namespace,
    as_float_matrix,
    check_finite,
    from_numpy,
    is_numpy,
    is_torch,
    to_numpy,
)

__all__ = ["TensorTrain", "rank_bounds", "tt_svd"]

Method = Literal["auto", "gram", "svd"]
METHODS = ("auto", "gram", "svd")


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def check_modes(modes: Any, name: str, total: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of positive integers (whose product is ``total`` if given)."""
    if isinstance(modes, (int, np.integer)) and not isinstance(modes, bool):
        modes = (modes,)
    try:
        out = tuple(modes)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {modes!r}") from None
    if not out:
        raise ValueError(f"{name} must hold at least one mode, got {modes!r}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
            raise ValueError(f"{name} must hold positive integers, got {modes!r}")
    out = tuple(int(v) for v in out)
    if total is not None and math.prod(out) != total:
        raise ValueError(
            f"{name} {out} must multiply to the dimension {total}, "
            f"but their product is {math.prod(out)}"
        )
    return out


def rank_bounds(modes: Sequence[int]) -> tuple[int, ...]:
    """Largest useful inner ranks: r_k ≤ min(n_1⋯n_k, n_{k+1}⋯n_d), k = 1..d−1.

    Examples
    --------
    >>> rank_bounds((4, 5, 6))
    (4, 6)
    """
    d = len(modes)
    return tuple(min(math.prod(modes[:k]), math.prod(modes[k:])) for k in range(1, d))


def check_ranks(ranks: Any, modes: Sequence[int], name: str = "ranks") -> tuple[int, ...]:
    """Validate TT ranks for ``modes``; returns the full tuple (1, r_1, …, r_{d−1}, 1).

    ``ranks`` is an int (the same rank at every bond, capped at each bond's bound
    :func:`rank_bounds`), a sequence of the d−1 inner ranks, or the full d+1 list with the
    boundary 1s.  Explicit lists must satisfy 1 ≤ r_k ≤ min(r_{k−1}·n_k, n_{k+1}·r_{k+1})
    (which implies r_k ≤ min(n_1⋯n_k, n_{k+1}⋯n_d)): a larger rank cannot be reached.
    """
    d = len(modes)
    bounds = rank_bounds(modes)
    if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
        if int(ranks) < 1:
            raise ValueError(f"{name} must be >= 1, got {int(ranks)}")
        return (1, *(min(int(ranks), b) for b in bounds), 1)
    try:
        rs = list(ranks)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or a sequence of ints, got {type(ranks).__name__}"
        ) from None
    for v in rs:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must hold integers, got {ranks!r}")
    rs = [int(v) for v in rs]
    if len(rs) == d + 1:
        if rs[0] != 1 or rs[-1] != 1:
            raise ValueError(f"{name}: a full rank list must start and end with 1, got {rs}")
        rs = rs[1:-1]
    elif len(rs) != d - 1:
        raise ValueError(
            f"{name} must hold the {d - 1} inner ranks of a {d}-core train "
            f"(or {d + 1} with the boundary 1s), got {len(rs)}: {rs}"
        )
    full = [1, *rs, 1]
    for k in range(1, d):
        r = full[k]
        if r < 1:
            raise ValueError(f"{name}[{k - 1}] must be >= 1, got {r}")
        hi = min(full[k - 1] * modes[k - 1], modes[k] * full[k + 1])
        if r > hi:
            raise ValueError(
                f"{name}[{k - 1}] = {r} is above the bound r_k <= min(r_(k-1)·n_k, "
                f"n_(k+1)·r_(k+1)) = min({full[k - 1]}·{modes[k - 1]}, "
                f"{modes[k]}·{full[k + 1]}) = {hi} for modes {tuple(modes)} "
                f"(largest useful ranks: {bounds})"
            )
    return tuple(full)


def check_eps(eps: Any) -> float:
    """A relative tolerance with 0 < eps < 1."""
    if isinstance(eps, bool):
        raise TypeError(f"eps must be a number in (0, 1), got {eps!r}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number in (0, 1), got {eps!r}") from None
    if not 0.0 < e < 1.0:
        raise ValueError(f"eps must satisfy 0 < eps < 1 (a relative Frobenius error), got {eps!r}")
    return e


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


# --------------------------------------------------------------------------------------
# One split of an unfolding
# --------------------------------------------------------------------------------------
def _host64(x: Any) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float64)


def _choose_rank(energies: np.ndarray, total: float, cap: int, delta2: float | None) -> int:
    """Smallest r ≤ cap whose discarded energy total − Σ_{k<r} e_k is ≤ δ² (cap if no δ)."""
    cap = max(1, min(cap, len(energies)))
    if delta2 is None:
        return cap
    kept = np.cumsum(np.clip(energies[:cap], 0.0, None))
    tail = total - kept  # tail[r-1]: discarded energy at rank r
    ok = np.nonzero(tail <= delta2)[0]
    return int(ok[0]) + 1 if len(ok) else cap


def _col_signs(xp: Any, Q: Any) -> Any:
    """(1, r) signs making the entry of largest magnitude of each column of Q positive."""
    n = Q.shape[0]
    idx = xp.argmax(xp.abs(Q), axis=0)
    dev = _device(Q)
    hit = xp.reshape(xp.arange(n, device=dev), (n, 1)) == xp.reshape(idx, (1, -1))
    picked = xp.sum(xp.where(hit, Q, xp.zeros_like(Q)), axis=0)
    return xp.reshape(xp.where(picked < 0, -xp.ones_like(picked), xp.ones_like(picked)), (1, -1))


def _device(x: Any) -> Any:
    from tqla._array import device_of

    return device_of(x)


def _top_eig(xp: Any, G: Any, cap: int) -> tuple[np.ndarray, Any, float]:
    """The top ``cap`` eigenpairs of the symmetric PSD matrix G, descending, and its trace.

    Returns (eigenvalues on the host in float64, eigenvectors as columns in G's library,
    trace of G = the total energy).  For NumPy G and few wanted pairs (4·cap ≤ n) only those
    are computed (LAPACK's MRRR through SciPy): a 64-of-576 problem takes about 0.6× the time
    of the full ``eigh``, 16-of-576 about 0.45× (benchmarks/results/tt_cpu.md).  The trace
    gives the discarded energy without the rest of the spectrum.
    """
    n = int(G.shape[0])
    cap = max(1, min(cap, n))
    if is_numpy(xp) and 4 * cap <= n:
        from scipy.linalg import eigh as _eigh

        lam, V = _eigh(G, subset_by_index=[n - cap, n - 1], driver="evr", check_finite=False)
        return _host64(lam)[::-1].copy(), V[:, ::-1], float(np.trace(G))
    lam, V = xp.linalg.eigh(G)
    lam = _host64(lam)[::-1].copy()
    return lam[:cap], xp.flip(V, axis=1)[:, :cap], float(np.clip(lam, 0.0, None).sum())


def _split(xp: Any, C: Any, cap: int, delta2: float | None, method: str) -> tuple[Any, Any, float]:
    """C ≈ Q·B with Q orthonormal (rows × r); returns (Q, B, dropped energy ‖C − QB‖_F²).

    ``cap`` bounds r; with ``delta2`` the rank is the smallest whose dropped energy is at most
    delta2.  The Gram route works on the smaller side of C:

    * rows ≤ cols: Q = the top eigenvectors of C·Cᵀ and B = Qᵀ·C; when ``cap`` ≥ rows (and no
      ``delta2``) the split is exact and Q is the identity (no Gram matrix, no product);
    * rows > cols: V = the top eigenvectors of Cᵀ·C, Q·R = C·V (QR) and B = R·Vᵀ, so that
      Q·B = C·V·Vᵀ is C projected on its top right singular subspace (the best rank-r
      approximation) without the rows×cols×r product Qᵀ·C.
    """
    rows, cols = (int(v) for v in C.shape)
    T = xp.permute_dims(C, (1, 0))
    if method == "svd":
        U, S, Vh = xp.linalg.svd(C, full_matrices=False)
        s2 = _host64(S) ** 2
        total = float(s2.sum())
        r = _choose_rank(s2, total, cap, delta2)
        Q = U[:, :r]
        B = xp.reshape(S[:r], (r, 1)) * Vh[:r, :]
        signs = _col_signs(xp, Q)
        return Q * signs, B * xp.permute_dims(signs, (1, 0)), total - float(s2[:r].sum())
    if rows <= cols:
        if delta2 is None and cap >= rows:
            eye = xp.eye(rows, dtype=C.dtype, device=_device(C))
            return eye, C, 0.0
        lam, V, total = _top_eig(xp, xp.matmul(C, T), cap)
        r = _choose_rank(lam, total, cap, delta2)
        Q = V[:, :r]
        Q = Q * _col_signs(xp, Q)
        B = xp.matmul(xp.permute_dims(Q, (1, 0)), C)
    else:
        lam, V, total = _top_eig(xp, xp.matmul(T, C), cap)
        r = _choose_rank(lam, total, cap, delta2)
        Vr = V[:, :r]
        Vr = Vr * _col_signs(xp, Vr)
        Q, R = xp.linalg.qr(xp.matmul(C, Vr))
        d = xp.linalg.diagonal(R) if hasattr(xp.linalg, "diagonal") else xp.diagonal(R)
        sign = xp.where(d < 0, -xp.ones_like(d), xp.ones_like(d))
        Q = Q * xp.reshape(sign, (1, -1))
        B = xp.matmul(xp.reshape(sign, (-1, 1)) * R, xp.permute_dims(Vr, (1, 0)))
    return Q, B, total - float(np.clip(lam[:r], 0.0, None).sum())


def _dtype_eps(xp: Any, dtype: Any) -> float:
    """Machine epsilon of a float32/float64 dtype of ``xp``."""
    return float(np.finfo(np.float64 if dtype == xp.float64 else np.float32).eps)


def _auto_method(xp: Any, dtype: Any, eps: float | None) -> str:
    """Gram route unless eps asks for singular values the Gram matrix cannot resolve."""
    if eps is not None and eps < 30.0 * math.sqrt(_dtype_eps(xp, dtype)):
        return "svd"
    return "gram"


def _contiguous(xp: Any, x: Any) -> Any:
    return np.ascontiguousarray(x) if is_numpy(xp) else x


def _sweep(
    xp: Any,
    X: Any,
    modes: tuple[int, ...],
    full_ranks: tuple[int, ...] | None,
    eps: float | None,
    norm2: float,
    method: str,
) -> list[Any]:
    """TT-SVD of X (any shape with ``modes``' product of entries): the list of cores."""
    d = len(modes)
    if d == 1:
        return [xp.reshape(X, (1, modes[0], 1))]
    bounds = rank_bounds(modes)
    delta2 = None if eps is None else eps * eps * norm2 / (d - 1)
    C = X
    r_prev = 1
    cores = []
    for k in range(d - 1):
        C = xp.reshape(_contiguous(xp, C), (r_prev * modes[k], -1))
        cap = full_ranks[k + 1] if full_ranks is not None else bounds[k]
        Q, C, _ = _split(xp, C, cap, delta2, method)
        r = int(Q.shape[1])
        cores.append(xp.reshape(_contiguous(xp, Q), (r_prev, modes[k], r)))
        r_prev = r
    cores.append(xp.reshape(_contiguous(xp, C), (r_prev, modes[-1], 1)))
    return cores


# --------------------------------------------------------------------------------------
# TensorTrain
# --------------------------------------------------------------------------------------
class TensorTrain:
    """A tensor in tensor-train format: cores G_k of shape (r_{k−1}, n_k, r_k).

    Parameters
    ----------
    cores : sequence of 3-D arrays
        One array library, one floating dtype; r_0 = r_d = 1 and neighbouring ranks match.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tt = TensorTrain([rng.standard_normal(s) for s in [(1, 3, 2), (2, 4, 2), (2, 5, 1)]])
    >>> tt.shape, tt.ranks, tt.n_params
    ((3, 4, 5), (1, 2, 2, 1), 32)
    >>> bool(np.isclose(tt.norm(), np.linalg.norm(tt.to_dense())))
    True
    """

    def __init__(self, cores: Sequence[Any]):
        cores = list(cores)
        if not cores:
            raise ValueError("cores must hold at least one core")
        for k, G in enumerate(cores):
            as_float_matrix(G, f"cores[{k}]", ndim=3, finite=False)
        xp = array_namespace(*cores)
        if int(cores[0].shape[0]) != 1 or int(cores[-1].shape[2]) != 1:
            raise ValueError(
                f"the first core must have r_0 = 1 and the last r_d = 1, got shapes "
                f"{tuple(cores[0].shape)} and {tuple(cores[-1].shape)}"
            )
        for k in range(1, len(cores)):
            if int(cores[k - 1].shape[2]) != int(cores[k].shape[0]):
                raise ValueError(
                    f"cores[{k - 1}] ends with rank {cores[k - 1].shape[2]} but cores[{k}] "
                    f"starts with rank {cores[k].shape[0]}"
                )
            if cores[k].dtype != cores[0].dtype:
                raise TypeError(
                    f"cores must share a dtype, got {cores[0].dtype} and {cores[k].dtype}"
                )
        self.cores = cores
        self._xp = xp

    # -- descriptive ---------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self._xp

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(G.shape[1]) for G in self.cores)

    @property
    def ndim(self) -> int:
        return len(self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        """All d+1 ranks (1, r_1, …, r_{d−1}, 1)."""
        return (1, *(int(G.shape[2]) for G in self.cores))

    @property
    def n_params(self) -> int:
        return sum(math.prod(int(v) for v in G.shape) for G in self.cores)

    @property
    def dtype(self) -> Any:
        return self.cores[0].dtype

    def __repr__(self) -> str:
        return (
            f"TensorTrain(shape={self.shape}, ranks={self.ranks}, n_params={self.n_params}, "
            f"dtype={self.dtype})"
        )

    # -- dense ---------------------------------------------------------------------
    def to_dense(self) -> Any:
        """The full tensor (contracting the cores left to right)."""
        xp = self._xp
        T = xp.reshape(self.cores[0], (-1, int(self.cores[0].shape[2])))
        for G in self.cores[1:]:
            r, n, r2 = (int(v) for v in G.shape)
            T = xp.reshape(xp.matmul(T, xp.reshape(G, (r, n * r2))), (-1, r2))
        return xp.reshape(T, self.shape)

    # -- inner products ------------------------------------------------------------
    def inner(self, other: TensorTrain) -> float:
        """⟨self, other⟩ = Σ self[i]·other[i], core by core (cost d·n·r³, no dense tensor)."""
        if not isinstance(other, TensorTrain):
            raise TypeError(f"other must be a TensorTrain, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"shapes differ: {self.shape} and {other.shape}")
        xp = self._xp
        Mx = None
        for A, B in zip(self.cores, other.cores):
            ra, n, ra2 = (int(v) for v in A.shape)
            rb, _, rb2 = (int(v) for v in B.shape)
            # M'[a2, b2] = Σ_{a, i, b} A[a, i, a2] M[a, b] B[b, i, b2]
            Bm = xp.reshape(B, (rb, n * rb2))
            MB = Bm if Mx is None else xp.matmul(Mx, Bm)  # (ra, n*rb2)
            MB = xp.reshape(MB, (ra * n, rb2))
            Mx = xp.matmul(xp.permute_dims(xp.reshape(A, (ra * n, ra2)), (1, 0)), MB)
        return float(_host64(Mx).reshape(-1)[0])

    def norm(self) -> float:
        """‖self‖_F from a right-to-left orthogonalisation (no cancellation, no dense tensor)."""
        cores = _orthogonalize_right(self._xp, self.cores)
        return float(np.sqrt(np.sum(_host64(cores[0]) ** 2)))

    # -- rounding ------------------------------------------------------------------
    def round(self, eps: float | None = None, *, ranks: Any = None) -> TensorTrain:
        """Recompress to lower ranks (TT-rounding); ranks never increase.

        Orthogonalises right to left, then truncates left to right by SVDs of the
        (r_{k−1}·n_k) × r_k cores.  With ``eps``: ‖self − result‖_F ≤ eps·‖self‖_F.  With
        ``ranks`` (int or d−1/d+1 list): each rank becomes min(given, current).

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((4, 5, 6))
        >>> tt = tt_svd(X)
        >>> tt.round(ranks=2).ranks
        (1, 2, 2, 1)
        """
        if (eps is None) == (ranks is None):
            raise ValueError("round needs exactly one of eps= or ranks=")
        xp = self._xp
        d = self.ndim
        cur = self.ranks
        if eps is not None:
            eps = check_eps(eps)
            target = cur
        else:
            if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
                if int(ranks) < 1:
                    raise ValueError(f"ranks must be >= 1, got {int(ranks)}")
                given = (1, *[int(ranks)] * (d - 1), 1)
            else:
                given = check_ranks(ranks, self.shape)
            target = tuple(min(a, b) for a, b in zip(given, cur))
        if d == 1:
            return TensorTrain(list(self.cores))
        cores = _orthogonalize_right(xp, self.cores)
        norm2 = float(np.sum(_host64(cores[0]) ** 2))
        delta2 = None if eps is None else eps * eps * norm2 / (d - 1)
        out = []
        carry = cores[0]
        for k in range(d - 1):
            r, n, r2 = (int(v) for v in carry.shape)
            C = xp.reshape(carry, (r * n, r2))
            Q, B, _ = _split(xp, C, target[k + 1], delta2, "svd")
            rk = int(Q.shape[1])
            out.append(xp.reshape(_contiguous(xp, Q), (r, n, rk)))
            nxt = cores[k + 1]
            rn, nn, rn2 = (int(v) for v in nxt.shape)
            carry = xp.reshape(xp.matmul(B, xp.reshape(nxt, (rn, nn * rn2))), (rk, nn, rn2))
        out.append(carry)
        return TensorTrain(out)

    def astype(self, dtype: Any) -> TensorTrain:
        return TensorTrain([self._xp.astype(G, dtype) for G in self.cores])


def _orthogonalize_right(xp: Any, cores: list[Any]) -> list[Any]:
    """Equivalent cores with cores[1:] right-orthonormal (G_k·G_kᵀ = I over (n_k, r_k))."""
    out = list(cores)
    for k in range(len(out) - 1, 0, -1):
        r, n, r2 = (int(v) for v in out[k].shape)
        Q, R = xp.linalg.qr(xp.permute_dims(xp.reshape(out[k], (r, n * r2)), (1, 0)))
        rk = int(Q.shape[1])
        out[k] = xp.reshape(_contiguous(xp, xp.permute_dims(Q, (1, 0))), (rk, n, r2))
        p, m, _ = (int(v) for v in out[k - 1].shape)
        prev = xp.reshape(out[k - 1], (p * m, r))
        out[k - 1] = xp.reshape(xp.matmul(prev, xp.permute_dims(R, (1, 0))), (p, m, rk))
    return out


# --------------------------------------------------------------------------------------
# tt_svd
# --------------------------------------------------------------------------------------
def _norm2(xp: Any, X: Any) -> float:
    """‖X‖_F² accumulated in float64."""
    if is_numpy(xp):
        v = np.ravel(X)
        return (
            float(np.dot(v, v))
            if X.dtype == np.float64
            else float(np.sum(np.square(v, dtype=np.float64)))
        )
    return float(_host64(xp.sum(xp.astype(X, xp.float64) ** 2)))


def host_view(xp: Any, X: Any) -> Any:
    """A NumPy view of a CPU torch tensor (no copy), else None.

    The TT-SVD of a CPU tensor runs on this view: NumPy's ``Aᵀ@A`` is a symmetric rank-k update
    (half the multiply-adds of torch's general product) and SciPy computes only the wanted
    eigenpairs, so torch inputs decompose as fast as NumPy ones; the cores are handed back
    as torch tensors (``from_numpy``, no copy).
    """
    if is_torch(xp) and getattr(X.device, "type", None) == "cpu":
        return X.detach().resolve_conj().numpy()
    return None


def _prepare(X: Any, name: str, ndim: int) -> tuple[Any, Any, Any]:
    """Validated float array, half precisions cast to float32; returns (xp, X, dtype)."""
    xp, X = as_float_matrix(X, name, ndim=ndim, finite=False)
    dtype = X.dtype
    if dtype not in (xp.float32, xp.float64):
        X = xp.astype(X, xp.float32)
    check_finite(xp, X, name)
    return xp, X, dtype


def check_ranks_eps(ranks: Any, eps: Any) -> float | None:
    if ranks is not None and eps is not None:
        raise ValueError("give ranks= or eps=, not both (ranks fix the ranks, eps chooses them)")
    return None if eps is None else check_eps(eps)


def tt_svd(
    X: Any, *, ranks: Any = None, eps: float | None = None, method: Method = "auto"
) -> TensorTrain:
    """Tensor-train decomposition by TT-SVD (Oseledets, 2011).

    Parameters
    ----------
    X : array of any number of dimensions ≥ 1
        Real floating tensor of any array library; the cores have its library, device and
        dtype (float16/bfloat16 are computed in float32 and cast back).
    ranks : int or sequence of int, optional
        The d−1 inner ranks (or all d+1 with the boundary 1s); an int is the same rank at
        every bond, capped at each bond's bound.  Each rank must satisfy
        1 ≤ r_k ≤ min(r_{k−1}·n_k, n_{k+1}·r_{k+1}).
    eps : float, optional
        Relative tolerance 0 < eps < 1: the ranks are the smallest with
        ‖X − TT‖_F ≤ eps·‖X‖_F (δ = eps·‖X‖_F/√(d−1) per step).  Give ``ranks`` or
        ``eps``, not both; with neither, the decomposition is exact (ranks at their bounds).
    method : {"auto", "gram", "svd"}
        How each unfolding is split: ``"gram"`` through the eigenvectors of its small Gram
        matrix (one pass over the data; the default), ``"svd"`` by a thin SVD.  ``"auto"``
        takes ``"svd"`` only when ``eps`` is below 30·√(machine ε) of the dtype.

    Returns
    -------
    TensorTrain
        Cores 1..d−1 are left-orthonormal; signs are fixed (the entry of largest magnitude
        of each column of each unfolded core is positive) so results compare across
        libraries.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.einsum("ia,ajb,bk->ijk", rng.standard_normal((4, 2)),
    ...               rng.standard_normal((2, 5, 3)), rng.standard_normal((3, 6)))
    >>> tt = tt_svd(X, ranks=[2, 3])
    >>> tt.ranks, bool(np.allclose(tt.to_dense(), X))
    ((1, 2, 3, 1), True)
    >>> Y = rng.standard_normal((4, 5, 6))
    >>> tt = tt_svd(Y, eps=0.5)
    >>> bool(np.linalg.norm(Y - tt.to_dense()) <= 0.5 * np.linalg.norm(Y))
    True
    """
    if not hasattr(X, "ndim") or X.ndim < 1:
        raise TypeError(f"X must be an array with at least one dimension, got {type(X).__name__}")
    xp, X, dtype = _prepare(X, "X", X.ndim)
    modes = tuple(int(v) for v in X.shape)
    eps = check_ranks_eps(ranks, eps)
    full = None if ranks is None else check_ranks(ranks, modes)
    method = _check_method(method)
    if method == "auto":
        method = _auto_method(xp, X.dtype, eps)
    host = host_view(xp, X)
    if host is not None:  # a CPU torch tensor: the same sweep on its NumPy view
        norm2 = _norm2(np, host) if eps is not None else 0.0
        cores = _sweep(np, host, modes, full, eps, norm2, method)
        tt = TensorTrain([from_numpy(G, X) for G in cores])
    else:
        norm2 = _norm2(xp, X) if eps is not None else 0.0
        tt = TensorTrain(_sweep(xp, X, modes, full, eps, norm2, method))
    return tt if dtype == X.dtype else tt.astype(dtype)
