"""tqla.norms against its definitions (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass): the certified upper bounds are the
documented formulas (HMT for "randomized", Kuczyński–Woźniakowski for "lanczos"),
``n_products`` counts the products that ran, and the estimates are homogeneous in E."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla
from tqla.norms import Operator, _kw_eps


def _gauss(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _margin(E: np.ndarray) -> float:
    return 16.0 * max(E.shape) * float(np.finfo(E.dtype).eps)


def _counting(E: np.ndarray) -> tuple[Operator, list[int]]:
    """E as an operator that counts its products (one count per block product)."""
    calls = [0]

    def mm(X):
        calls[0] += 1
        return E @ X

    def tmm(Y):
        calls[0] += 1
        return E.T @ Y

    return Operator(E.shape, E, mm, tmm), calls


shapes = st.tuples(st.integers(2, 14), st.integers(2, 14))


@given(shape=shapes, seed=st.integers(0, 2**16), k=st.integers(1, 4), steps=st.integers(1, 4))
@settings(max_examples=25, deadline=None)
def test_randomized_upper_bound_is_the_hmt_formula(shape, seed, k, steps):
    """One power step (rtol so large that the first check stops): the bound is
    (α·√(2/π)·maxᵢ ‖EᵀE ωᵢ‖)^(1/2) with α = (max_iter/δ)^(1/k), ω the generator's draw."""
    E = _gauss(seed + 1, shape)
    delta = 1e-6
    est = tqla.spectral_norm(E, method="randomized", n_vectors=k, max_iter=steps, rtol=1e9,
                             failure_prob=delta, rng=seed)  # fmt: skip
    omega = np.random.default_rng(seed).standard_normal((shape[1], k))
    top = np.linalg.norm(E.T @ (E @ omega), axis=0).max()
    alpha = (steps / delta) ** (1.0 / k)
    hmt = math.sqrt(alpha * math.sqrt(2 / math.pi) * top)
    want = max(hmt, est.lower) * (1 + _margin(E))
    assert est.upper == pytest.approx(want, rel=1e-10)
    assert est.n_products == 3 and est.failure_prob == delta  # one power step + Ritz
    assert est.lower <= np.linalg.norm(E, 2) * (1 + 1e-12)


def test_kw_eps_solves_the_kuczynski_wozniakowski_equation():
    for n, j, d in [(5, 1, 1e-6), (100, 7, 1e-3), (3000, 40, 1e-9)]:
        eps = _kw_eps(n, j, d)
        assert 1.648 * math.sqrt(n) * math.exp(-math.sqrt(eps) * (2 * j - 1)) == pytest.approx(
            d, rel=1e-12
        )


@given(shape=shapes, seed=st.integers(0, 2**16), steps=st.integers(1, 6))
@settings(max_examples=25, deadline=None)
def test_lanczos_upper_bound_is_the_kw_formula(shape, seed, steps):
    """j steps with no early stop: upper = √(θ/(1 − ε))·(1 + margin), ε from the
    Kuczyński–Woźniakowski equation with δ split over min(n, max_iter) checks; a Krylov
    space that exhausts the smaller side gives θ = σ₁² exactly (upper = σ₁·(1 + margin))."""
    E = _gauss(seed + 1, shape)
    n = min(shape)
    delta = 1e-3
    est = tqla.spectral_norm(E, method="lanczos", max_iter=steps, rtol=1e-14,
                             failure_prob=delta, rng=seed)  # fmt: skip
    j = est.n_products // 2
    assert est.n_products == 2 * j and 1 <= j <= min(n, steps)
    if est.failure_prob == 0.0:  # exhausted
        want = est.lower * (1 + _margin(E))
        np.testing.assert_allclose(est.lower, np.linalg.norm(E, 2), rtol=1e-9)
    else:
        assert j == min(n, steps) and est.failure_prob == delta
        eps = _kw_eps(n, j, delta / min(n, steps))
        want = (est.lower / math.sqrt(1 - eps) if eps < 1 else math.inf) * (1 + _margin(E))
    assert est.upper == pytest.approx(want, rel=1e-12)


@given(shape=shapes, seed=st.integers(0, 2**16), method=st.sampled_from(["lanczos", "randomized"]),
       steps=st.integers(1, 8), rtol=st.sampled_from([1e-9, 0.01, 0.5]))  # fmt: skip
@settings(max_examples=30, deadline=None)
def test_n_products_counts_the_products_that_ran(shape, seed, method, steps, rtol):
    E = _gauss(seed + 1, shape)
    op, calls = _counting(E)
    est = tqla.spectral_norm(op, method=method, max_iter=steps, rtol=rtol, rng=seed)
    assert est.n_products == calls[0]
    bound = 2 * steps + (1 if method == "randomized" else 0)  # + the Ritz product
    assert est.n_products <= bound
    ref = tqla.spectral_norm(E, method=method, max_iter=steps, rtol=rtol, rng=seed)
    assert ref == est  # an operator and the dense matrix: the same computation


@given(seed=st.integers(0, 2**16), method=st.sampled_from(["lanczos", "randomized"]),
       rtol=st.sampled_from([1e-3, 0.05]))  # fmt: skip
@settings(max_examples=20, deadline=None)
def test_estimates_are_homogeneous_in_e(seed, method, rtol):
    """spectral_norm(c·E) = c·spectral_norm(E) for c > 0 (the same steps, the same stop)."""
    E = _gauss(seed + 1, (12, 9))
    ref = tqla.spectral_norm(E, method=method, rtol=rtol, max_iter=12, rng=seed)
    for c in (1e-4, 1e3):
        est = tqla.spectral_norm(c * E, method=method, rtol=rtol, max_iter=12, rng=seed)
        assert est.n_products == ref.n_products
        for a, b in ((est.estimate, ref.estimate), (est.lower, ref.lower),
                     (est.upper, ref.upper)):  # fmt: skip
            assert a == pytest.approx(c * b, rel=1e-9)


@pytest.mark.parametrize("method", ["lanczos", "randomized", "exact"])
def test_zero_matrix_is_exactly_zero_after_one_step(method):
    Z = np.zeros((6, 4))
    est = tqla.spectral_norm(Z, method=method, rng=0)
    assert (est.estimate, est.lower, est.upper) == (0.0, 0.0, 0.0)
    assert est.n_products == {"lanczos": 2, "randomized": 2, "exact": 0}[method]


class _Duck:
    """KroneckerSum-like (shape, matmat, .T) whose library is known through ``like``."""

    def __init__(self, E):
        self.E, self.shape, self.like = E, E.shape, E

    def matmat(self, X):
        return self.E @ X

    @property
    def T(self):
        return _Duck(self.E.T)


def test_a_factored_object_may_name_its_library_through_like():
    E = _gauss(0, (7, 5))
    est = tqla.spectral_norm(_Duck(E), method="exact")
    assert est.estimate == pytest.approx(np.linalg.norm(E, 2), rel=1e-12)
    assert est.n_products == 1
    bare = _Duck(E)
    del bare.like
    with pytest.raises(TypeError, match="cannot tell the array library of _Duck"):
        tqla.spectral_norm(bare)
