"""Factor shapes of Kronecker sums: :class:`KroneckerShape` and :func:`factor_shapes`.

A Kronecker sum Σ_k A_k ⊗ B_k with A_k of shape (m1, n1) and B_k of shape (m2, n2)
approximates an (m1·m2)×(n1·n2) matrix; see ``docs/kron.md``.  Re-exported by
:mod:`tqla.kron` and :mod:`tqla`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from tqla._array import check_int

__all__ = ["FactorShape", "KroneckerShape", "factor_shapes"]


# --------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KroneckerShape:
    """Factor shapes of a Kronecker sum: A is ``a = (m1, n1)``, B is ``b = (m2, n2)``.

    The full matrix is (m1·m2) × (n1·n2).  Build one from ``((m1, n1), (m2, n2))`` with
    :meth:`of`, or from a matrix shape and A's shape with :meth:`from_matrix`.

    Examples
    --------
    >>> s = KroneckerShape((384, 768), (2, 4))
    >>> s.matrix_shape, s.max_rank, s.n_params(4)
    ((768, 3072), 8, 1179680)
    """

    a: tuple[int, int]
    b: tuple[int, int]

    def __post_init__(self) -> None:
        for name, pair in (("a", self.a), ("b", self.b)):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ValueError(f"KroneckerShape.{name} must be a pair (rows, cols), got {pair!r}")
            for v in pair:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                    raise ValueError(
                        f"KroneckerShape.{name} must hold positive integers, got {pair!r}"
                    )
        object.__setattr__(self, "a", (int(self.a[0]), int(self.a[1])))
        object.__setattr__(self, "b", (int(self.b[0]), int(self.b[1])))

    @classmethod
    def of(cls, shape: Any) -> KroneckerShape:
        """Accept a KroneckerShape or ``((m1, n1), (m2, n2))``."""
        if isinstance(shape, KroneckerShape):
            return shape
        try:
            (m1, n1), (m2, n2) = shape
        except (TypeError, ValueError):
            raise ValueError(
                f"shape must be a KroneckerShape or ((m1, n1), (m2, n2)), got {shape!r}"
            ) from None
        return cls((m1, n1), (m2, n2))

    @classmethod
    def from_matrix(cls, matrix_shape: tuple[int, int], a: tuple[int, int]) -> KroneckerShape:
        """The shape whose A factor is ``a`` for a matrix of ``matrix_shape``."""
        M, N = (int(v) for v in matrix_shape)
        m1, n1 = (int(v) for v in a)
        if m1 < 1 or n1 < 1 or M % m1 or N % n1:
            raise ValueError(
                f"factor A of shape {a} must divide the matrix shape {matrix_shape} "
                f"(M % m1 == 0 and N % n1 == 0)"
            )
        return cls((m1, n1), (M // m1, N // n1))

    @property
    def m1(self) -> int:
        return self.a[0]

    @property
    def n1(self) -> int:
        return self.a[1]

    @property
    def m2(self) -> int:
        return self.b[0]

    @property
    def n2(self) -> int:
        return self.b[1]

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(M, N) = (m1·m2, n1·n2)."""
        return (self.m1 * self.m2, self.n1 * self.n2)

    @property
    def rearranged_shape(self) -> tuple[int, int]:
        """Shape of R(W): (m1·n1, m2·n2)."""
        return (self.m1 * self.n1, self.m2 * self.n2)

    @property
    def max_rank(self) -> int:
        """The Kronecker rank bound min(m1·n1, m2·n2)."""
        return min(self.rearranged_shape)

    @property
    def T(self) -> KroneckerShape:
        """Shape of the transposed sum: ((n1, m1), (n2, m2))."""
        return KroneckerShape((self.n1, self.m1), (self.n2, self.m2))

    def n_params(self, rank: int = 1) -> int:
        """Number of factor entries of a rank-``rank`` sum."""
        return int(rank) * (self.m1 * self.n1 + self.m2 * self.n2)

    def matmat_costs(self, rank: int, k: int = 1) -> tuple[int, int]:
        """Multiply-adds of ``K @ X`` (X of shape N×k) in the two association orders.

        Returns ``(a_first, b_first)``: contracting with the A factors first costs
        r·m1·n2·k·(n1 + m2), with the B factors first r·n1·m2·k·(m1 + n2).  For
        ``X @ K`` (X of shape k×M) use the transposed shape, ``s.T.matmat_costs(rank, k)``.

        Examples
        --------
        >>> KroneckerShape((384, 768), (2, 4)).matmat_costs(4, 1)
        (4730880, 2383872)
        """
        r = check_int(rank, "rank", minimum=0)
        k = check_int(k, "k", minimum=0)
        m1, n1, m2, n2 = self.m1, self.n1, self.m2, self.n2
        return r * m1 * n2 * k * (n1 + m2), r * n1 * m2 * k * (m1 + n2)

    def matmat_order(self, rank: int, k: int = 1) -> str:
        """The cheaper association order of ``K @ X``: ``"a_first"`` or ``"b_first"``
        (ties: ``"b_first"``); what :class:`KroneckerSum` products run.

        Examples
        --------
        >>> KroneckerShape((384, 768), (2, 4)).matmat_order(4)
        'b_first'
        """
        a_first, b_first = self.matmat_costs(rank, k)
        return "b_first" if b_first <= a_first else "a_first"

    def check_rank(self, rank: Any, name: str = "rank") -> int:
        """Validate a Kronecker rank: an integer with 1 <= rank <= :attr:`max_rank`."""
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(rank).__name__} {rank!r}")
        q, p = self.rearranged_shape
        if not 1 <= int(rank) <= self.max_rank:
            raise ValueError(
                f"{name} must satisfy 1 <= {name} <= min(m1·n1, m2·n2) = min({q}, {p}) = "
                f"{self.max_rank} for A {self.a} ⊗ B {self.b}, got {int(rank)}"
            )
        return int(rank)

    def check_matrix(self, W: Any, name: str = "W") -> None:
        if tuple(int(s) for s in W.shape) != self.matrix_shape:
            raise ValueError(
                f"{name} of shape {tuple(W.shape)} does not match the Kronecker shape "
                f"A {self.a} ⊗ B {self.b}, which needs ({self.m1}·{self.m2}, "
                f"{self.n1}·{self.n2}) = {self.matrix_shape}"
            )

    def __iter__(self):  # allows ``(m1, n1), (m2, n2) = shape``
        return iter((self.a, self.b))


class FactorShape(NamedTuple):
    """One row of :func:`factor_shapes`."""

    shape: KroneckerShape
    n_params: int
    max_rank: int


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def factor_shapes(M: int, N: int, rank: int = 1, *, trivial: bool = False) -> list[FactorShape]:
    """Every valid factor shape of an M×N matrix, with its parameter count at ``rank``.

    Parameters
    ----------
    M, N : int
        Matrix shape.
    rank : int
        Kronecker rank used for the parameter count; shapes whose rank bound is below
        ``rank`` are left out.
    trivial : bool
        Include shapes where A or B is 1×1 (a plain scaling, not a factorization).

    Returns
    -------
    list of FactorShape
        Sorted by parameter count, then by A's shape.

    Examples
    --------
    >>> [f.shape.a for f in factor_shapes(4, 4)][:3]
    [(1, 4), (2, 2), (4, 1)]
    """
    M = check_int(M, "M", minimum=1)
    N = check_int(N, "N", minimum=1)
    rank = check_int(rank, "rank", minimum=1)
    out = []
    for m1 in _divisors(M):
        for n1 in _divisors(N):
            s = KroneckerShape((m1, n1), (M // m1, N // n1))
            if not trivial and (s.a == (1, 1) or s.b == (1, 1)):
                continue
            if s.max_rank < rank:
                continue
            out.append(FactorShape(s, s.n_params(rank), s.max_rank))
    out.sort(key=lambda f: (f.n_params, f.shape.a))
    return out
