"""Checkers and strategies for spectral-norm results and heterogeneous Kronecker sums.

Assertions (any array library; compared on the host in float64):

* :func:`spectral_error` — the exact ‖W − approx‖₂ (LAPACK on the host);
* :func:`assert_certified_bound` — a :class:`~tqla.NormEstimate`'s bounds hold;
* :func:`assert_spectral_not_worse` — an approximation is no worse in ‖·‖₂ than a reference;
* :func:`assert_hetero_consistent` — a HeteroKroneckerSum's products, transpose and
  parameter count agree with its dense matrix.

Strategy (needs Hypothesis): :func:`hetero_kronecker_sums`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tqla.testing.assertions import as_numpy

__all__ = [
    "assert_certified_bound",
    "assert_hetero_consistent",
    "assert_spectral_not_worse",
    "hetero_kronecker_sums",
    "spectral_error",
]


def _dense(x: Any) -> np.ndarray:
    return as_numpy(x.to_dense() if hasattr(x, "to_dense") else x)


def spectral_error(W: Any, approx: Any) -> float:
    """‖W − approx‖₂ on the host in float64 (approx: anything with ``to_dense`` or an array)."""
    return float(np.linalg.norm(as_numpy(W) - _dense(approx), 2))


def assert_certified_bound(est: Any, E: Any, *, rtol: float = 1e-12) -> None:
    """Assert est.lower ≤ ‖E‖₂ ≤ est.upper (relative slack ``rtol`` for the lower bound)."""
    exact = float(np.linalg.norm(_dense(E), 2))
    if not est.upper >= exact:
        raise AssertionError(
            f"certified upper bound {est.upper!r} ({est.method}) is below the exact norm "
            f"{exact!r}"
        )
    if not est.lower <= exact * (1 + rtol) + 1e-300:
        raise AssertionError(
            f"lower bound {est.lower!r} ({est.method}) exceeds the exact norm {exact!r} "
            f"(rtol={rtol})"
        )


def assert_spectral_not_worse(W: Any, approx: Any, reference: Any, *, rtol: float = 1e-9):
    """Assert ‖W − approx‖₂ ≤ (1 + rtol)·‖W − reference‖₂."""
    a, b = spectral_error(W, approx), spectral_error(W, reference)
    if a > b * (1 + rtol):
        raise AssertionError(
            f"spectral error {a!r} is above the reference's {b!r} (rtol={rtol})"
        )


def assert_hetero_consistent(H: Any, *, rtol: float = 1e-10, seed: int = 0) -> None:
    """Assert products on both sides, ``.T`` and ``n_params`` of a HeteroKroneckerSum agree
    with its dense matrix (rtol scaled by the size)."""
    from tqla._array import from_numpy

    D = _dense(H)
    M, N = D.shape
    rng = np.random.default_rng(seed)
    like = H.terms[0].A
    x = rng.standard_normal((N, 3))
    y = rng.standard_normal((2, M))
    xh = H.xp.astype(from_numpy(x, like), H.dtype)
    yh = H.xp.astype(from_numpy(y, like), H.dtype)
    scale = float(np.abs(D).sum()) + 1e-300
    tol = rtol * scale * max(M, N)
    for what, got, want in (
        ("H @ X", as_numpy(H @ xh), D @ x),
        ("X @ H", as_numpy(yh @ H), y @ D),
        ("H.T dense", _dense(H.T), D.T),
    ):
        err = float(np.max(np.abs(got - want)))
        if err > tol:
            raise AssertionError(f"{what} differs from the dense product by {err:.3g} > {tol:.3g}")
    want_params = sum(K.n_params for K in H.terms)
    if H.n_params != want_params:
        raise AssertionError(f"n_params {H.n_params} != Σ terms' n_params {want_params}")


def hetero_kronecker_sums(M: int = 12, N: int = 12, *, max_groups: int = 3, max_rank: int = 2,
                          xp: Any = None, device: Any = None):
    """Hypothesis strategy: HeteroKroneckerSum of an M×N matrix with 1..max_groups shapes
    (distinct, drawn from :func:`tqla.factor_shapes`) of rank 1..max_rank, Gaussian factors."""
    from hypothesis import strategies as st

    from tqla.hetero import HeteroKroneckerSum
    from tqla.kron import KroneckerSum, factor_shapes
    from tqla.testing.strategies import convert

    shapes = [f.shape for f in factor_shapes(M, N)]

    @st.composite
    def build(draw: Any) -> Any:
        chosen = draw(st.lists(st.sampled_from(shapes), min_size=1, max_size=max_groups,
                               unique=True))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        terms = []
        for s in chosen:
            r = draw(st.integers(1, max_rank))
            A = rng.standard_normal((r, s.m1, s.n1))
            B = rng.standard_normal((r, s.m2, s.n2))
            terms.append(KroneckerSum(convert(A, xp, device), convert(B, xp, device)))
        return HeteroKroneckerSum(terms)

    return build()
