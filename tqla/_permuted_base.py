"""What a permuted result shares: W ≈ inner.to_dense()[row_perm][:, col_perm].

:class:`tqla.PermutedKronecker` (a Kronecker sum inside) and :class:`tqla.PermutedTT` (a
TT-matrix inside) store their permutations, errors and timings alike and apply the
permutations as gathers around the inner factored product; this mixin holds that once.
A subclass sets ``_inner`` (the un-permuted structure) and may override
:meth:`_check_matmat` / :meth:`_check_rmatmat` to reject operands of the wrong shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla._array import check_permutation, from_numpy


def _index_array(p: np.ndarray, like: Any) -> Any:
    return from_numpy(np.ascontiguousarray(p, dtype=np.int64), like)


class _PermutedBase:
    """Row/column permutations around an inner structure with ``matmat``/``rmatmat``."""

    __array_priority__ = 1000

    _inner: Any

    def _init_perms(
        self,
        inner: Any,
        like: Any,
        row_perm: Any,
        col_perm: Any,
        errors: list[float],
        n_iter: int,
        permuted: tuple[bool, bool] | None,
        timings: dict[str, float] | None,
    ) -> None:
        M, N = inner.shape
        rp = check_permutation(row_perm, M, "row_perm")
        cp = check_permutation(col_perm, N, "col_perm")
        self._inner = inner
        self.row_perm = _index_array(rp, like)
        self.col_perm = _index_array(cp, like)
        self._inv_row = _index_array(np.argsort(rp), like)
        self._inv_col = _index_array(np.argsort(cp), like)
        self._id_row = bool(np.array_equal(rp, np.arange(M)))
        self._id_col = bool(np.array_equal(cp, np.arange(N)))
        if permuted is None:
            permuted = (not self._id_row, not self._id_col)
        self.permuted = (bool(permuted[0]), bool(permuted[1]))
        self.errors = [float(e) for e in errors]
        self.n_iter = int(n_iter)
        self.timings = dict(timings) if timings else {}
        self._xp = inner.xp

    @property
    def shape(self) -> tuple[int, int]:
        return self._inner.shape

    @property
    def error(self) -> float:
        """The final relative error ``errors[-1]``."""
        return self.errors[-1]

    @property
    def n_params(self) -> int:
        """Entries of the inner structure (permutation indices: :attr:`n_perm_indices`)."""
        return self._inner.n_params

    @property
    def n_perm_indices(self) -> int:
        """Stored permutation entries: M if rows are permuted, plus N if columns are."""
        M, N = self.shape
        return M * self.permuted[0] + N * self.permuted[1]

    def to_dense(self) -> Any:
        """The M×N approximation of W: ``inner.to_dense()[row_perm][:, col_perm]``."""
        xp = self._xp
        D = self._inner.to_dense()
        if not self._id_row:
            D = xp.take(D, self.row_perm, axis=0)
        if not self._id_col:
            D = xp.take(D, self.col_perm, axis=1)
        return D

    def _check_matmat(self, X: Any) -> None:
        """Hook: raise for an operand ``approx @ X`` cannot take (default: the inner says)."""

    def _check_rmatmat(self, X: Any) -> None:
        """Hook: raise for an operand ``X @ approx`` cannot take (default: the inner says)."""

    def matmat(self, X: Any) -> Any:
        """approx @ X for X of shape (N,), (N, k) or (..., N, k), without a dense matrix."""
        self._check_matmat(X)
        xp = self._xp
        axis = 0 if X.ndim <= 2 else X.ndim - 2
        if not self._id_col and X.ndim > 0 and int(X.shape[axis]) == self.shape[1]:
            X = xp.take(X, self._inv_col, axis=axis)
        Y = self._inner.matmat(X)
        return Y if self._id_row else xp.take(Y, self.row_perm, axis=axis)

    def rmatmat(self, X: Any) -> Any:
        """X @ approx for X of shape (M,) or (..., M), without a dense matrix."""
        self._check_rmatmat(X)
        xp = self._xp
        if not self._id_row and X.ndim > 0 and int(X.shape[-1]) == self.shape[0]:
            X = xp.take(X, self._inv_row, axis=X.ndim - 1)
        Y = self._inner.rmatmat(X)
        return Y if self._id_col else xp.take(Y, self.col_perm, axis=Y.ndim - 1)

    def __matmul__(self, X: Any) -> Any:
        return self.matmat(X)

    def __rmatmul__(self, X: Any) -> Any:
        return self.rmatmat(X)
