"""TT-matrices (Novikov et al., 2015): an M×N matrix as a tensor train of 4-way cores.

With M = m_1⋯m_d (rows) and N = n_1⋯n_d (columns), row index i = (i_1, …, i_d) and column
index j = (j_1, …, j_d) both row-major (as NumPy's ``reshape``),

    W[i, j] = G_1[:, i_1, j_1, :] · G_2[:, i_2, j_2, :] ⋯ G_d[:, i_d, j_d, :],

cores G_k of shape (r_{k−1}, m_k, n_k, r_k), r_0 = r_d = 1.  It is the tensor train of W
reshaped to (m_1·n_1, …, m_d·n_d) after interleaving the row and column modes, so
:func:`tt_matrix` is :func:`tqla.tt_svd` of that tensor.  With d = 2 a TT-matrix is a
Kronecker sum of rank r_1.

Products never form W: a batch of k vectors is contracted with one core at a time, left to
right or right to left, whichever needs fewer multiply-adds (:meth:`TTMatrix.matmat_costs`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import numpy as np

from tqla._array import array_namespace, as_float_matrix, check_int, from_numpy, is_numpy
from tqla.tt import (
    Method,
    TensorTrain,
    _auto_method,
    _check_method,
    _contiguous,
    _norm2,
    _prepare,
    _sweep,
    check_modes,
    check_ranks,
    check_ranks_eps,
    host_view,
)

__all__ = ["TTMatrix", "TTMatrixShape", "tt_matrix", "tt_matrix_shapes"]


def _check_operand(X: Any, dtype: Any) -> None:
    if not hasattr(X, "shape") or not hasattr(X, "ndim"):
        raise TypeError(
            f"X must be an array of the cores' library, got {type(X).__name__}; "
            f"wrap it with numpy.asarray / torch.as_tensor first"
        )
    if X.dtype != dtype:
        raise TypeError(f"X must have the cores' dtype {dtype}, got {X.dtype}")


def _step_costs(
    row_modes: tuple[int, ...], col_modes: tuple[int, ...], ranks: tuple[int, ...], k: int
) -> tuple[list[int], list[int]]:
    """Multiply-adds of each core contraction of W @ X (X: N×k) in both orders."""
    d = len(row_modes)
    left, right = [], []
    for t in range(d):
        core = ranks[t] * row_modes[t] * col_modes[t] * ranks[t + 1]
        left.append(k * core * math.prod(row_modes[:t]) * math.prod(col_modes[t + 1 :]))
        right.append(k * core * math.prod(col_modes[:t]) * math.prod(row_modes[t + 1 :]))
    return left, right


class TTMatrix:
    """An M×N matrix in TT-matrix format, cores of shape (r_{k−1}, m_k, n_k, r_k).

    Parameters
    ----------
    cores : sequence of 4-D arrays
        One array library, one floating dtype; r_0 = r_d = 1 and neighbouring ranks match.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> T = TTMatrix([rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((4, 5, 2, 1))])
    >>> T.shape, T.row_modes, T.col_modes, T.ranks, T.n_params
    ((10, 6), (2, 5), (3, 2), (1, 4, 1), 64)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(T @ x, T.to_dense() @ x))
    True
    """

    __array_priority__ = 1000  # ``ndarray @ T`` defers to __rmatmul__

    def __init__(self, cores: Any):
        cores = list(cores)
        if not cores:
            raise ValueError("cores must hold at least one core")
        for k, G in enumerate(cores):
            as_float_matrix(G, f"cores[{k}]", ndim=4, finite=False)
        xp = array_namespace(*cores)
        self._tt = TensorTrain(
            [xp.reshape(G, (int(G.shape[0]), -1, int(G.shape[3]))) for G in cores]
        )
        self.cores = cores
        self._xp = xp

    # -- descriptive ---------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self._xp

    @property
    def row_modes(self) -> tuple[int, ...]:
        return tuple(int(G.shape[1]) for G in self.cores)

    @property
    def col_modes(self) -> tuple[int, ...]:
        return tuple(int(G.shape[2]) for G in self.cores)

    @property
    def shape(self) -> tuple[int, int]:
        return (math.prod(self.row_modes), math.prod(self.col_modes))

    @property
    def ranks(self) -> tuple[int, ...]:
        """All d+1 ranks (1, r_1, …, r_{d−1}, 1)."""
        return self._tt.ranks

    @property
    def n_params(self) -> int:
        return self._tt.n_params

    @property
    def dtype(self) -> Any:
        return self.cores[0].dtype

    def __repr__(self) -> str:
        return (
            f"TTMatrix(shape={self.shape}, row_modes={self.row_modes}, "
            f"col_modes={self.col_modes}, ranks={self.ranks}, n_params={self.n_params}, "
            f"dtype={self.dtype})"
        )

    def to_tensor_train(self) -> TensorTrain:
        """The tensor train of shape (m_1·n_1, …, m_d·n_d) this matrix is."""
        return self._tt

    @classmethod
    def from_tensor_train(cls, tt: TensorTrain, row_modes: Any, col_modes: Any) -> TTMatrix:
        """Split each mode m_k·n_k of ``tt`` back into (m_k, n_k)."""
        rm = check_modes(row_modes, "row_modes")
        cm = check_modes(col_modes, "col_modes")
        if len(rm) != len(cm) or tuple(a * b for a, b in zip(rm, cm)) != tt.shape:
            raise ValueError(
                f"row_modes {rm} and col_modes {cm} must multiply pairwise to the train's "
                f"modes {tt.shape}"
            )
        xp = tt.xp
        return cls(
            [
                xp.reshape(G, (int(G.shape[0]), m, n, int(G.shape[2])))
                for G, m, n in zip(tt.cores, rm, cm)
            ]
        )

    @property
    def T(self) -> TTMatrix:
        """The transpose (cores with their row and column modes swapped)."""
        xp = self._xp
        return TTMatrix([xp.permute_dims(G, (0, 2, 1, 3)) for G in self.cores])

    def to_dense(self) -> Any:
        """The M×N matrix."""
        xp = self._xp
        d = len(self.cores)
        X = self._tt.to_dense()
        inter = [v for pair in zip(self.row_modes, self.col_modes) for v in pair]
        X = xp.reshape(X, tuple(inter))
        X = xp.permute_dims(X, (*range(0, 2 * d, 2), *range(1, 2 * d, 2)))
        return xp.reshape(X, self.shape)

    def norm(self) -> float:
        """‖W‖_F, core by core."""
        return self._tt.norm()

    def inner(self, other: TTMatrix) -> float:
        """⟨W, V⟩_F = Σ W[i, j]·V[i, j], core by core (same modes needed)."""
        if not isinstance(other, TTMatrix):
            raise TypeError(f"other must be a TTMatrix, got {type(other).__name__}")
        if (other.row_modes, other.col_modes) != (self.row_modes, self.col_modes):
            raise ValueError("inner needs TT-matrices with the same row and column modes")
        return self._tt.inner(other._tt)

    def round(self, eps: float | None = None, *, ranks: Any = None) -> TTMatrix:
        """TT-rounding (see :meth:`tqla.TensorTrain.round`); ranks never increase."""
        tt = self._tt.round(eps, ranks=ranks)
        return TTMatrix.from_tensor_train(tt, self.row_modes, self.col_modes)

    def astype(self, dtype: Any) -> TTMatrix:
        return TTMatrix([self._xp.astype(G, dtype) for G in self.cores])

    # -- products ------------------------------------------------------------------
    def matmat_costs(self, k: int = 1) -> tuple[int, int]:
        """Multiply-adds of ``W @ X`` for X of shape (N, k): (left_first, right_first).

        Core t costs k·r_{t−1}·m_t·n_t·r_t·(m_1⋯m_{t−1})·(n_{t+1}⋯n_d) when the cores are
        contracted from the first on, and k·r_{t−1}·m_t·n_t·r_t·(n_1⋯n_{t−1})·(m_{t+1}⋯m_d)
        from the last on.  For ``X @ W`` use ``self.T.matmat_costs(k)``.

        Examples
        --------
        >>> import numpy as np
        >>> T = TTMatrix([np.ones((1, 2, 3, 4)), np.ones((4, 5, 2, 1))])
        >>> T.matmat_costs(1)
        (128, 240)
        """
        k = check_int(k, "k", minimum=1)
        left, right = _step_costs(self.row_modes, self.col_modes, self.ranks, k)
        return sum(left), sum(right)

    def matmat_order(self, k: int = 1) -> str:
        """The cheaper order of ``W @ X``: "left_first" or "right_first" (ties: left)."""
        a, b = self.matmat_costs(k)
        return "left_first" if a <= b else "right_first"

    def _rows_apply(self, X: Any) -> Any:
        """Y = X·Wᵀ for X of shape (b, N): y[b, i] = Σ_j W[i, j] x[b, j]."""
        if self.matmat_order(int(X.shape[0])) == "left_first":
            return _apply_left_first(self._xp, self.cores, X)
        # right-first = left-first on the train with the core order reversed
        xp = self._xp
        d = len(self.cores)
        b = int(X.shape[0])
        rev = [xp.permute_dims(G, (3, 1, 2, 0)) for G in reversed(self.cores)]
        Xr = xp.reshape(X, (b, *self.col_modes))
        Xr = xp.reshape(xp.permute_dims(Xr, (0, *range(d, 0, -1))), (b, -1))
        Y = _apply_left_first(xp, rev, Xr)
        Y = xp.reshape(Y, (b, *reversed(self.row_modes)))
        return xp.reshape(xp.permute_dims(Y, (0, *range(d, 0, -1))), (b, self.shape[0]))

    def matmat(self, X: Any) -> Any:
        """W @ X for X of shape (N,), (N, k) or (..., N, k), without forming W."""
        xp = self._xp
        M, N = self.shape
        _check_operand(X, self.dtype)
        if X.ndim == 0 or int(X.shape[0 if X.ndim == 1 else -2]) != N:
            raise ValueError(
                f"W @ X needs X with {N} rows (W has shape {self.shape}), "
                f"got shape {tuple(X.shape)}"
            )
        if X.ndim == 1:
            return xp.reshape(self._rows_apply(xp.reshape(X, (1, N))), (M,))
        nd = X.ndim
        # (..., N, k) -> (..., k, N) -> (b, N)
        Xt = xp.permute_dims(X, (*range(nd - 2), nd - 1, nd - 2))
        lead = tuple(int(v) for v in Xt.shape[:-1])
        Y = xp.reshape(self._rows_apply(xp.reshape(Xt, (-1, N))), (*lead, M))
        return xp.permute_dims(Y, (*range(nd - 2), nd - 1, nd - 2))

    def rmatmat(self, X: Any) -> Any:
        """X @ W for X of shape (M,) or (..., M), without forming W."""
        xp = self._xp
        M, N = self.shape
        _check_operand(X, self.dtype)
        if X.ndim == 0 or int(X.shape[-1]) != M:
            raise ValueError(
                f"X @ W needs X with {M} columns (W has shape {self.shape}), "
                f"got shape {tuple(X.shape)}"
            )
        lead = tuple(int(v) for v in X.shape[:-1])
        Y = self.T._rows_apply(xp.reshape(X, (-1, M)))
        return xp.reshape(Y, (*lead, N))

    def __matmul__(self, X: Any) -> Any:
        return self.matmat(X)

    def __rmatmul__(self, X: Any) -> Any:
        return self.rmatmat(X)


#: Narrowest right-hand width for which the batched GEMMs of a product step are used;
#: narrower batches run slowly (measured with torch on CPU: 2.6 s against 0.2 s for width 2),
#: so such a step transposes the state for one large GEMM instead.
BATCHED_MIN = 32


def _apply_left_first(xp: Any, cores: list[Any], X: Any) -> Any:
    """Y (b, M) = X (b, N) · Wᵀ, contracting the cores from the first on.

    The state before core t is S of shape (b·m_1⋯m_{t−1}, r_{t−1}·n_t, n_{t+1}⋯n_d): the
    contracted pair (r_{t−1}, n_t) is adjacent, so a step is one batched GEMM with the core
    as an (m_t·r_t) × (r_{t−1}·n_t) matrix, and its result (…, m_t·r_t, n_{t+1}⋯n_d) is the
    next state as it lies in memory — the state is never permuted.  The last core (nothing
    left on the right) is one GEMM; a step whose right-hand width is below
    :data:`BATCHED_MIN` transposes the state for one large GEMM.
    """
    b, n_left = (int(v) for v in X.shape)
    S, rows = X, b
    for G in cores:
        r, m, n, r2 = (int(v) for v in G.shape)
        n_left //= n
        Gm = _contiguous(xp, xp.reshape(xp.permute_dims(G, (1, 3, 0, 2)), (m * r2, r * n)))
        if n_left == 1:
            S = xp.matmul(xp.reshape(S, (rows, r * n)), xp.permute_dims(Gm, (1, 0)))
        elif n_left >= BATCHED_MIN:
            S = xp.matmul(Gm, xp.reshape(S, (rows, r * n, n_left)))
        else:
            St = xp.permute_dims(xp.reshape(S, (rows, r * n, n_left)), (0, 2, 1))
            St = xp.reshape(_contiguous(xp, St), (rows * n_left, r * n))
            S = xp.reshape(xp.matmul(St, xp.permute_dims(Gm, (1, 0))), (rows, n_left, m * r2))
            S = _contiguous(xp, xp.permute_dims(S, (0, 2, 1)))
        rows *= m
        S = xp.reshape(S, (rows, r2 * n_left))
    return xp.reshape(S, (b, rows // b))


# --------------------------------------------------------------------------------------
# tt_matrix
# --------------------------------------------------------------------------------------
def _interleave(xp: Any, W: Any, rm: tuple[int, ...], cm: tuple[int, ...]) -> Any:
    """W (M, N) as the tensor (m_1·n_1, …, m_d·n_d)."""
    d = len(rm)
    T = xp.reshape(W, (*rm, *cm))
    order = [a for k in range(d) for a in (k, d + k)]
    T = xp.permute_dims(T, tuple(order))
    if is_numpy(xp):
        T = np.ascontiguousarray(T)
    return xp.reshape(T, tuple(m * n for m, n in zip(rm, cm)))


def tt_matrix(
    W: Any,
    row_modes: Any,
    col_modes: Any,
    *,
    ranks: Any = None,
    eps: float | None = None,
    method: Method = "auto",
) -> TTMatrix:
    """TT-matrix approximation of an M×N matrix by TT-SVD.

    Parameters
    ----------
    W : array of shape (M, N)
        Real floating matrix of any array library; the cores have its library, device and
        dtype.
    row_modes, col_modes : sequences of d positive ints
        M = m_1⋯m_d and N = n_1⋯n_d (row-major splits of the row and column indices).
    ranks : int or sequence of int, optional
        The d−1 inner ranks (or d+1 with the boundary 1s); an int is capped at each bond's
        bound min(Π_{≤k} m_j n_j, Π_{>k} m_j n_j).
    eps : float, optional
        0 < eps < 1; the smallest ranks with ‖W − TT‖_F ≤ eps·‖W‖_F.  Not with ``ranks``;
        with neither, the decomposition is exact.
    method : {"auto", "gram", "svd"}
        As in :func:`tqla.tt_svd`.

    Returns
    -------
    TTMatrix

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.standard_normal((3, 4)), rng.standard_normal((2, 5))
    >>> T = tt_matrix(np.kron(A, B), (3, 2), (4, 5), ranks=[1])
    >>> T.ranks, bool(np.allclose(T.to_dense(), np.kron(A, B)))
    ((1, 1, 1), True)
    """
    if hasattr(W, "ndim") and W.ndim != 2:
        raise ValueError(f"W must be a 2-D matrix, got shape {tuple(W.shape)}")
    xp, W, dtype = _prepare(W, "W", 2)
    M, N = (int(v) for v in W.shape)
    rm = check_modes(row_modes, "row_modes", M)
    cm = check_modes(col_modes, "col_modes", N)
    if len(rm) != len(cm):
        raise ValueError(
            f"row_modes {rm} and col_modes {cm} must have the same length (one pair per core)"
        )
    modes = tuple(m * n for m, n in zip(rm, cm))
    eps = check_ranks_eps(ranks, eps)
    full = None if ranks is None else check_ranks(ranks, modes)
    method = _check_method(method)
    if method == "auto":
        method = _auto_method(xp, W.dtype, eps)
    host = host_view(xp, W)  # a CPU torch tensor: the same sweep on its NumPy view
    lib, Wh = (np, host) if host is not None else (xp, W)
    norm2 = _norm2(lib, Wh) if eps is not None else 0.0
    cores = _sweep(lib, _interleave(lib, Wh, rm, cm), modes, full, eps, norm2, method)
    if host is not None:
        cores = [from_numpy(G, W) for G in cores]
    T = TTMatrix.from_tensor_train(TensorTrain(cores), rm, cm)
    return T if dtype == W.dtype else T.astype(dtype)


# --------------------------------------------------------------------------------------
# Mode choices
# --------------------------------------------------------------------------------------
class TTMatrixShape(NamedTuple):
    """One row of :func:`tt_matrix_shapes`."""

    row_modes: tuple[int, ...]
    col_modes: tuple[int, ...]
    ranks: tuple[int, ...]
    n_params: int
    matvec_macs: int  # multiply-adds of one W @ x in the cheaper order


def _ordered_factorizations(n: int, d: int, min_mode: int) -> list[tuple[int, ...]]:
    if d == 1:
        return [(n,)] if n >= min_mode else []
    out = []
    for f in range(min_mode, n + 1):
        if n % f == 0:
            out.extend((f, *rest) for rest in _ordered_factorizations(n // f, d - 1, min_mode))
    return out


def tt_matrix_shapes(
    M: int, N: int, rank: Any, *, d: int = 3, min_mode: int = 2, max_results: int | None = None
) -> list[TTMatrixShape]:
    """Factorizations of M and N into d modes each, with parameter and MAC counts.

    Parameters
    ----------
    M, N : int
        Matrix shape (rows, columns).
    rank : int or sequence of d−1 ints
        TT ranks used for the counts; an int is capped at each bond's bound (as in
        :func:`tt_matrix`), a list must fit every listed shape (shapes it does not fit are
        left out).
    d : int
        Number of cores.
    min_mode : int
        Smallest mode size considered (2 leaves out trivial modes).
    max_results : int, optional
        Keep only the first results.

    Returns
    -------
    list of TTMatrixShape
        Sorted by parameter count, then by one matvec's multiply-adds.

    Examples
    --------
    >>> best = tt_matrix_shapes(768, 3072, 16)[0]
    >>> best.n_params < 768 * 3072
    True
    """
    M = check_int(M, "M", minimum=1)
    N = check_int(N, "N", minimum=1)
    d = check_int(d, "d", minimum=1)
    min_mode = check_int(min_mode, "min_mode", minimum=1)
    out = []
    for rm, cm in itertools.product(
        _ordered_factorizations(M, d, min_mode), _ordered_factorizations(N, d, min_mode)
    ):
        modes = tuple(a * b for a, b in zip(rm, cm))
        try:
            ranks = check_ranks(rank, modes, "rank")
        except ValueError:
            continue
        n_params = sum(ranks[k] * modes[k] * ranks[k + 1] for k in range(d))
        left, right = _step_costs(rm, cm, ranks, 1)
        out.append(TTMatrixShape(rm, cm, ranks, n_params, min(sum(left), sum(right))))
    out.sort(key=lambda s: (s.n_params, s.matvec_macs, s.row_modes, s.col_modes))
    return out if max_results is None else out[: check_int(max_results, "max_results", minimum=1)]
