"""tqla.testing.spectral_checks stated whole (issue 15, fifth pass).

Each checker at its boundary (the comparison that passes with equality, the smallest
violation that fails), with its message whole; ``assert_hetero_consistent`` against sums
broken in one product at a time, by an amount just above or below its size-scaled
tolerance, probed with the seeded vectors it documents; the strategy's draws within and
reaching every bound it names, on the library asked for.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import find, given, settings

from tqla.hetero import HeteroKroneckerSum
from tqla.kron import KroneckerSum, factor_shapes
from tqla.testing import spectral_checks as sc


def _est(lower, upper, method="m"):
    return SimpleNamespace(lower=lower, upper=upper, method=method)


def _rank2(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5, 2)) @ rng.standard_normal((2, 4))


def test_spectral_error_is_the_host_float64_norm():
    W = _rank2()
    K = KroneckerSum(np.ones((1, 5, 2)) * 0.1, np.ones((1, 1, 2)))
    got = sc.spectral_error(W, K)
    assert type(got) is float and got == float(np.linalg.norm(W - K.to_dense(), 2))
    assert sc.spectral_error(W, W * 0.5) == float(np.linalg.norm(W * 0.5, 2))


def test_spectral_error_of_another_library_is_computed_in_float64():
    W = _rank2()
    torch = pytest.importorskip("torch")
    Wt = torch.tensor(W, dtype=torch.float32)
    want = float(np.linalg.norm(Wt.numpy().astype(np.float64) - 0.5 * W, 2))
    assert sc.spectral_error(Wt, 0.5 * W) == want


def test_certified_bound_passes_at_equality_and_fails_just_beyond():
    E = _rank2(1)
    x = float(np.linalg.norm(E, 2))
    sc.assert_certified_bound(_est(x, x), E)
    sc.assert_certified_bound(_est(x * (1 + 1e-12), x), E)  # the default rtol
    sc.assert_certified_bound(_est(x * (1 + 1e-3), x), E, rtol=1e-3)
    below = np.nextafter(x, 0)
    msg = f"certified upper bound {below!r} (lanczos) is below the exact norm {x!r}"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        sc.assert_certified_bound(_est(0.0, below, "lanczos"), E)
    hi = x * (1 + 3e-12)
    msg = f"lower bound {hi!r} (exact) exceeds the exact norm {x!r} (rtol=1e-12)"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        sc.assert_certified_bound(_est(hi, 2 * x, "exact"), E)
    hi = x * (1 + 2e-3)
    msg = f"lower bound {hi!r} (m) exceeds the exact norm {x!r} (rtol=0.001)"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        sc.assert_certified_bound(_est(hi, 2 * x), E, rtol=1e-3)
    Z = np.zeros((3, 2))
    sc.assert_certified_bound(_est(0.0, 0.0), Z)
    sc.assert_certified_bound(_est(1e-301, 0.0), Z)  # the absolute slack 1e-300
    with pytest.raises(AssertionError, match="^lower bound 1e-299 "):
        sc.assert_certified_bound(_est(1e-299, 0.0), Z)
    K = KroneckerSum(np.ones((1, 2, 1)), np.ones((1, 1, 3)))  # a dense-able operand
    sc.assert_certified_bound(_est(0.0, np.sqrt(6.0) * (1 + 1e-15)), K)
    with pytest.raises(AssertionError):
        sc.assert_certified_bound(_est(0.0, np.sqrt(6.0) * (1 - 1e-14)), K)


def test_spectral_not_worse_at_its_boundary():
    W = _rank2(2)
    ref = W * 0.5  # error ‖W‖/2
    b = sc.spectral_error(W, ref)
    sc.assert_spectral_not_worse(W, ref, ref)
    sc.assert_spectral_not_worse(W, ref, ref, rtol=0)  # equality passes
    sc.assert_spectral_not_worse(W, W * 0.5 * (1 - 0.4e-9), ref)  # within the default 1e-9
    worse = W * 0.5 * (1 - 3e-9)
    a = sc.spectral_error(W, worse)
    msg = f"spectral error {a!r} is above the reference's {b!r} (rtol=1e-09)"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        sc.assert_spectral_not_worse(W, worse, ref)
    sc.assert_spectral_not_worse(W, worse, ref, rtol=1e-8)
    worse = W * 0.4
    a = sc.spectral_error(W, worse)
    msg = f"spectral error {a!r} is above the reference's {b!r} (rtol=0.1)"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        sc.assert_spectral_not_worse(W, worse, ref, rtol=0.1)


class _Broken:
    """A HeteroKroneckerSum whose one product is off by ``delta`` (others exact), and that
    records what it is multiplied by."""

    __array_ufunc__ = None  # NumPy defers ``Y @ self`` to __rmatmul__

    def __init__(self, H, where=None, delta=0.0, params=0):
        self.H, self.where, self.delta, self.params = H, where, delta, params
        self.terms, self.xp, self.dtype = H.terms, H.xp, H.dtype
        self.seen: list = []

    def to_dense(self):
        return self.H.to_dense()

    @property
    def n_params(self):
        return self.H.n_params + self.params

    @property
    def T(self):
        D = self.H.T.to_dense()
        return D + (self.delta if self.where == "T" else 0.0)

    def __matmul__(self, X):
        self.seen.append(("H @ X", X))
        return self.H @ X + (self.delta if self.where == "mm" else 0.0)

    def __rmatmul__(self, Y):
        self.seen.append(("X @ H", Y))
        return Y @ self.H + (self.delta if self.where == "rmm" else 0.0)


def _hsum():
    rng = np.random.default_rng(3)
    K1 = KroneckerSum(rng.standard_normal((1, 2, 2)), rng.standard_normal((1, 3, 2)))
    K2 = KroneckerSum(rng.standard_normal((2, 3, 1)), rng.standard_normal((2, 2, 4)))
    return HeteroKroneckerSum([K1, K2])  # 6×4: the tolerance scales with max(M, N) = 6


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("rtol", [1e-10, 1e-3])
def test_hetero_consistency_probes_and_tolerance(seed, rtol):
    H = _hsum()
    D = H.to_dense()
    tol = rtol * (float(np.abs(D).sum()) + 1e-300) * 6
    ok = _Broken(H)
    sc.assert_hetero_consistent(ok, rtol=rtol, seed=seed)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((2, 6))
    (w1, X), (w2, Y) = ok.seen
    assert (w1, w2) == ("H @ X", "X @ H")
    np.testing.assert_array_equal(X, x)
    np.testing.assert_array_equal(Y, y)
    for where, what in (("mm", "H @ X"), ("rmm", "X @ H"), ("T", "H.T dense")):
        sc.assert_hetero_consistent(_Broken(H, where, 0.9 * tol), rtol=rtol, seed=seed)
        bad = _Broken(H, where, 1.1 * tol)
        msg = f"{what} differs from the dense product by {1.1 * tol:.3g} > {tol:.3g}"
        with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
            sc.assert_hetero_consistent(bad, rtol=rtol, seed=seed)
    msg = f"n_params {H.n_params + 1} != Σ terms' n_params {H.n_params}"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        sc.assert_hetero_consistent(_Broken(H, params=1), rtol=rtol, seed=seed)


def test_hetero_consistency_defaults_and_other_libraries():
    H = _hsum()
    D = H.to_dense()
    tol = 1e-10 * float(np.abs(D).sum()) * 6
    sc.assert_hetero_consistent(_Broken(H, "mm", 0.9 * tol))
    with pytest.raises(AssertionError, match="^H @ X differs"):
        sc.assert_hetero_consistent(_Broken(H, "mm", 1.1 * tol))
    probe = _Broken(H)
    sc.assert_hetero_consistent(probe)
    np.testing.assert_array_equal(
        probe.seen[0][1], np.random.default_rng(0).standard_normal((4, 3))
    )
    torch = pytest.importorskip("torch")
    Ht = HeteroKroneckerSum([K.astype(np.float32) for K in H.terms])
    Ht = HeteroKroneckerSum([KroneckerSum(torch.tensor(K.A), torch.tensor(K.B)) for K in Ht.terms])
    sc.assert_hetero_consistent(Ht, rtol=1e-6)
    probe = _Broken(Ht)
    sc.assert_hetero_consistent(probe, rtol=1e-6)
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for _, v in probe.seen)


SHAPES_12 = [f.shape for f in factor_shapes(12, 12)]


@given(H=sc.hetero_kronecker_sums())
@settings(max_examples=30, deadline=None)
def test_strategy_draws_within_its_bounds(H):
    assert isinstance(H, HeteroKroneckerSum) and H.shape == (12, 12)
    assert 1 <= len(H.terms) <= 3 and all(1 <= K.rank <= 2 for K in H.terms)
    assert len(set(H.shapes)) == len(H.shapes) and all(s in SHAPES_12 for s in H.shapes)
    assert all(isinstance(K.A, np.ndarray) and K.A.dtype == np.float64 for K in H.terms)


def test_strategy_defaults_are_a_12_by_12_matrix_of_up_to_3_groups_of_rank_2():
    """Built inside the test (a strategy built at import is fixed before any patch)."""
    strat = sc.hetero_kronecker_sums()
    assert find(strat, lambda H: True).shape == (12, 12)
    big = find(strat, lambda H: len(H.terms) == 3 and max(K.rank for K in H.terms) == 2)
    assert big.shape == (12, 12)


def test_strategy_reaches_every_bound_it_names():
    strat = sc.hetero_kronecker_sums(6, 4, max_groups=4, max_rank=3)
    shapes = [f.shape for f in factor_shapes(6, 4)]
    big = find(strat, lambda H: len(H.terms) == 4 and max(K.rank for K in H.terms) == 3)
    assert big.shape == (6, 4) and all(s in shapes for s in big.shapes)
    small = find(strat, lambda H: len(H.terms) == 1 and H.terms[0].rank == 1)
    assert small.n_terms == 1
    A = small.terms[0].A  # Gaussian factors: distinct, not integers
    assert len(np.unique(A)) == A.size and np.all(A != np.round(A))


def test_strategy_on_another_library():
    torch = pytest.importorskip("torch")
    H = find(sc.hetero_kronecker_sums(4, 6, xp=torch, device="cpu"), lambda H: True)
    assert all(isinstance(K.A, torch.Tensor) and K.A.dtype == torch.float64 for K in H.terms)
    assert all(isinstance(K.B, torch.Tensor) for K in H.terms) and H.shape == (4, 6)


def test_strategy_default_rank_bound_is_2_built_inside_the_test():
    """No draw of the default strategy has a term of rank 3 (max_rank defaults to 2)."""
    from hypothesis import settings as hsettings
    from hypothesis.errors import NoSuchExample

    strat = sc.hetero_kronecker_sums()
    with pytest.raises(NoSuchExample):
        find(
            strat,
            lambda H: max(K.rank for K in H.terms) > 2,
            settings=hsettings(max_examples=200, database=None),
        )


def _zero_hetero():
    shapes = [((3, 4), (4, 3)), ((12, 1), (1, 12))]
    return HeteroKroneckerSum(
        [KroneckerSum(np.zeros((1, *a)), np.zeros((1, *b))) for a, b in shapes]
    )


def test_hetero_consistent_of_the_zero_sum_and_its_tolerance_boundary():
    """A zero sum: every product is exactly zero, and the tolerance is
    rtol·(Σ|D| + 1e-300)·max(M, N) > 0, so it passes for any rtol >= 0; a product off by
    exactly that tolerance passes (the test is err > tol), one off by more fails."""
    H = _zero_hetero()
    for rtol in (1e-10, 0.5, 0.0):
        sc.assert_hetero_consistent(H, rtol=rtol)
    tol = 0.5 * 1e-300 * 12
    for where in ("mm", "rmm", "T"):
        sc.assert_hetero_consistent(_Broken(H, where, tol), rtol=0.5)
        with pytest.raises(AssertionError, match="differs from the dense product by"):
            sc.assert_hetero_consistent(_Broken(H, where, 2 * tol), rtol=0.5)
