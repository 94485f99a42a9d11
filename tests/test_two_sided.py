"""tqla.two_sided: the two-sided whitened SVD, the nearest single weight of a sum of
two-sided weights, and the exact error curve.  Float64; tolerances of a few hundred ulps of
the quantities' scale (the roots come from eigendecompositions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqla import kron_svd, truncated_svd, whitened_svd
from tqla.two_sided import nearest_kron_weight, two_sided_error_curve, two_sided_whitened_svd

RTOL = 1e-9


def _psd(n: int, rng: np.random.Generator, full: bool = True) -> np.ndarray:
    X = rng.standard_normal((2 * n if full else max(1, n // 2), n)) * np.linspace(0.3, 2.0, n)
    return X.T @ X / n


def _weight(n: int, rng: np.random.Generator, diag: bool) -> np.ndarray:
    return rng.uniform(0.1, 2.0, n) if diag else _psd(n, rng)


def _dense(M: np.ndarray) -> np.ndarray:
    return np.diag(M) if M.ndim == 1 else M


def _err(W, A, terms) -> float:
    E = W - A
    return float(sum(np.trace(E.T @ _dense(P) @ E @ _dense(C)) for P, C in terms))


def _fit(W, P, C, r, damp=0.0) -> np.ndarray:
    U, s, Vh = two_sided_whitened_svd(W, P, C, r, damp=damp)
    return (U * s) @ Vh


sizes = st.tuples(st.integers(2, 7), st.integers(2, 7))


@given(mn=sizes, seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=25)
def test_identity_weights_give_the_plain_svd(mn, seed, data):
    m, n = mn
    r = data.draw(st.integers(1, min(m, n)))
    W = np.random.default_rng(seed).standard_normal((m, n))
    U, s, Vh = truncated_svd(W, r)
    want = (U * s) @ Vh
    for P, C in ((np.eye(m), np.eye(n)), (np.ones(m), np.ones(n))):
        got = _fit(W, P, C, r, damp=data.draw(st.sampled_from([0.0, 0.5])))
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * np.abs(W).max() * (m + n))


@given(mn=sizes, seed=st.integers(0, 2**16), diag=st.booleans())
@settings(max_examples=20)
def test_identity_rows_give_the_one_sided_whitened_svd(mn, seed, diag):
    m, n = mn
    rng = np.random.default_rng(seed)
    W, C = rng.standard_normal((m, n)), _weight(n, rng, diag)
    r = max(1, min(m, n) - 1)
    U, s, Vh = whitened_svd(W, C, r)
    np.testing.assert_allclose(
        _fit(W, np.eye(m), C, r), (U * s) @ Vh, rtol=0, atol=RTOL * np.abs(W).max() * (m + n)
    )


def _als(W, P, C, r, rng, sweeps=300) -> float:
    """Direct minimisation of tr(ΔWᵀ·P·ΔW·C) over W ≈ A·Bᵀ by alternating least squares
    (each half-step the exact weighted least-squares solve)."""
    A = rng.standard_normal((W.shape[0], r))
    Pd, Cd = _dense(P), _dense(C)
    for _ in range(sweeps):
        # B given A: Bᵀ = (AᵀPA)⁻¹·AᵀP·W  (C full rank)
        Bt = np.linalg.solve(A.T @ Pd @ A, A.T @ Pd @ W)
        # A given B: A = W·C·B·(BᵀCB)⁻¹
        A = np.linalg.solve(Bt @ Cd @ Bt.T, Bt @ Cd @ W.T).T
    Bt = np.linalg.solve(A.T @ Pd @ A, A.T @ Pd @ W)
    return _err(W, A @ Bt, [(P, C)])


@given(mn=sizes, seed=st.integers(0, 2**16), diag=st.booleans())
@settings(max_examples=15)
def test_the_closed_form_is_optimal_for_its_own_objective(mn, seed, diag):
    m, n = mn
    rng = np.random.default_rng(seed)
    W, P, C = rng.standard_normal((m, n)), _weight(m, rng, diag), _psd(n, rng)
    r = max(1, min(m, n) - 1)
    ours = _err(W, _fit(W, P, C, r), [(P, C)])
    # Eckart–Young in the whitened space: the tail of the spectrum of Lᵀ·W·R
    lp, Qp = np.linalg.eigh(_dense(P))
    lc, Qc = np.linalg.eigh(C)
    X = (np.sqrt(lp)[:, None] * Qp.T) @ W @ (Qc * np.sqrt(lc)[None, :])
    tail = float(np.sum(np.linalg.svd(X, compute_uv=False)[r:] ** 2))
    scale = float(np.sum(X * X)) + 1.0
    assert ours == pytest.approx(tail, rel=1e-8, abs=1e-10 * scale)
    # no other rank-r matrix does better: a direct ALS solve, the plain and one-sided fits
    for other in (
        _als(W, P, C, r, rng),
        _err(W, _fit(W, np.ones(m), np.ones(n), r), [(P, C)]),
        _err(W, _fit(W, np.ones(m), C, r), [(P, C)]),
    ):
        assert ours <= other + 1e-8 * scale


def test_damping_zero_weights_keeps_the_fit_finite():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 4))
    P = np.array([1.0, 0.0, 2.0, 0.0, 1.0])  # rows that are never read
    U, s, Vh = two_sided_whitened_svd(W, P, np.eye(4), 2)
    assert np.all(np.isfinite((U * s) @ Vh))
    assert np.all(U[[1, 3]] == 0)  # pseudo-inverse: unweighted rows stay at zero


@given(mn=sizes, seed=st.integers(0, 2**16), kinds=st.lists(st.booleans(), min_size=4,
       max_size=4), damp=st.sampled_from([0.0, 0.05]))
@settings(max_examples=25)
def test_error_curve_is_the_exact_summed_error_of_every_rank(mn, seed, kinds, damp):
    m, n = mn
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    terms = [(_weight(m, rng, kinds[0]), _weight(n, rng, kinds[1])),
             (_weight(m, rng, kinds[2]), _weight(n, rng, kinds[3]))]
    P, C = nearest_kron_weight(terms, m, n)
    curve = two_sided_error_curve(W, P, C, terms, damp=damp)
    assert curve.shape == (min(m, n) + 1,)
    scale = _err(W, 0 * W, terms) + 1.0
    for r in range(min(m, n) + 1):
        want = _err(W, 0 * W if r == 0 else _fit(W, P, C, r, damp), terms)
        assert curve[r] == pytest.approx(want, rel=1e-8, abs=1e-10 * scale)
    np.testing.assert_array_equal(
        two_sided_error_curve(W, P, C, terms, damp=damp, max_rank=1), curve[:2]
    )


@given(mn=sizes, seed=st.integers(0, 2**16), kinds=st.lists(st.booleans(), min_size=4,
       max_size=4))
@settings(max_examples=20)
def test_nearest_kron_weight_matches_the_direct_nearest_kronecker_product(mn, seed, kinds):
    m, n = mn
    rng = np.random.default_rng(seed)
    terms = [(_weight(m, rng, kinds[0]), _weight(n, rng, kinds[1])),
             (_weight(m, rng, kinds[2]), _weight(n, rng, kinds[3]))]
    G = sum(np.kron(_dense(P), _dense(C)) for P, C in terms)
    P, C = nearest_kron_weight(terms, m, n)
    K = kron_svd(G, ((m, m), (n, n)), 1)
    direct = np.linalg.norm(G - np.kron(np.asarray(K.A[0]), np.asarray(K.B[0])))
    ours = np.linalg.norm(G - np.kron(_dense(P), _dense(C)))
    assert ours == pytest.approx(direct, rel=1e-7, abs=1e-9 * np.linalg.norm(G))
    assert P.ndim == (1 if kinds[0] and kinds[2] else 2)
    assert C.ndim == (1 if kinds[1] and kinds[3] else 2)


def test_one_term_is_its_own_nearest_weight():
    rng = np.random.default_rng(3)
    P0, C0 = _psd(3, rng), rng.uniform(0.5, 1.5, 4)
    P, C = nearest_kron_weight([(P0, C0)], 3, 4)
    np.testing.assert_allclose(np.kron(P, np.diag(C)), np.kron(P0, np.diag(C0)), rtol=1e-12,
                               atol=1e-12)


def test_bad_input_is_named():
    W = np.ones((3, 4))
    with pytest.raises(ValueError, match="row_moment"):
        two_sided_whitened_svd(W, np.eye(2), np.eye(4), 1)
    with pytest.raises(ValueError, match="col_moment|one entry per column"):
        two_sided_whitened_svd(W, np.eye(3), np.ones(3), 1)
    with pytest.raises(ValueError, match="at least one"):
        nearest_kron_weight([], 3, 4)
    with pytest.raises(ValueError, match=r"terms\[0\] col weight"):
        nearest_kron_weight([(np.ones(3), np.ones(5))], 3, 4)
    with pytest.raises(ValueError, match="max_rank"):
        two_sided_error_curve(W, np.ones(3), np.ones(4), [(np.ones(3), np.ones(4))], max_rank=4)
    with pytest.raises(ValueError, match="damp"):
        two_sided_whitened_svd(W, np.ones(3), np.ones(4), 1, damp=-1.0)


@given(mn=sizes, seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_error_curve_of_a_singular_fit_weight_counts_the_residual(mn, seed):
    """damp=0 with rows the fit does not see: Ŵ leaves them at zero (residual R₀ ≠ 0), and
    full row weights of the terms couple R₀ with the fitted rows (the cross term)."""
    m, n = mn
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    P_fit = rng.uniform(0.5, 2.0, m)
    P_fit[0] = 0.0
    terms = [(_psd(m, rng), _weight(n, rng, False)), (_weight(m, rng, True), np.ones(n))]
    curve = two_sided_error_curve(W, P_fit, np.ones(n), terms)
    scale = _err(W, 0 * W, terms) + 1.0
    for r in range(min(m, n) + 1):
        want = _err(W, 0 * W if r == 0 else _fit(W, P_fit, np.ones(n), r), terms)
        assert curve[r] == pytest.approx(want, rel=1e-8, abs=1e-10 * scale)
