"""Activation-aware fitting (tqla.whiten): closed forms, identities, optimality, ALS."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tqla
from tqla.whiten import als_sweeps, whitened_error

EPS = np.finfo(np.float64).eps


def _moment(rng, n, samples=None):
    X = rng.standard_normal((samples or 3 * n, n)) * rng.uniform(0.2, 3.0, n)
    return X.T @ X / X.shape[0]


def _tol(*shape):
    return 1e3 * EPS * max(shape)


# --------------------------------------------------------------------------------------
# SVD
# --------------------------------------------------------------------------------------
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 7), n=st.integers(2, 7))
def test_whitened_svd_is_the_closed_form(seed, m, n):
    rng = np.random.default_rng(seed)
    W, C = rng.standard_normal((m, n)), _moment(rng, n)
    r = int(rng.integers(1, min(m, n) + 1))
    U, s, Vh = tqla.whitened_svd(W, C, r)
    # closed form by hand: Cholesky root L (L Lᵀ = C), truncate W L, map back with L⁻¹
    L = np.linalg.cholesky(C)
    u, sig, vh = np.linalg.svd(W @ L)
    ref = (u[:, :r] * sig[:r]) @ vh[:r] @ np.linalg.inv(L)
    approx = (U * s) @ Vh
    scale = np.linalg.norm(W) * np.linalg.cond(L)
    np.testing.assert_allclose(approx, ref, atol=_tol(m, n) * scale * 10)
    np.testing.assert_allclose(s, sig[:r], rtol=_tol(m, n), atol=_tol(m, n) * sig[0])
    # predicted error = tail of the whitened spectrum
    err2 = whitened_error(W, approx, C, relative=False) ** 2
    assert err2 == pytest.approx(float(np.sum(sig[r:] ** 2)), rel=1e-7, abs=1e-9 * sig[0] ** 2)


@given(seed=st.integers(0, 2**32 - 1))
def test_whitened_svd_beats_plain_svd_in_the_input_norm(seed):
    rng = np.random.default_rng(seed)
    W, C = rng.standard_normal((6, 5)), _moment(rng, 5)
    U, s, Vh = tqla.whitened_svd(W, C, 2)
    u, p, vh = tqla.truncated_svd(W, 2)
    e_w = whitened_error(W, (U * s) @ Vh, C)
    e_p = whitened_error(W, (u * p) @ vh, C)
    assert e_w <= e_p + 1e-12


@pytest.mark.parametrize("damp", [0.0, 0.05])
def test_identity_moment_gives_plain_svd(backend, damp):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((6, 4))
    Wb, Ib = backend.asarray(W), backend.asarray(np.eye(4))
    U, s, Vh = tqla.whitened_svd(Wb, Ib, 3, damp=damp)
    u, p, vh = tqla.truncated_svd(Wb, 3)
    got = backend.to_numpy(U) * backend.to_numpy(s) @ backend.to_numpy(Vh)
    ref = backend.to_numpy(u) * backend.to_numpy(p) @ backend.to_numpy(vh)
    np.testing.assert_allclose(got, ref, atol=_tol(6, 4) * np.linalg.norm(W))
    assert type(U) is type(Wb)


def test_singular_moment_uses_the_pseudo_inverse():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 3)) @ rng.standard_normal((3, 5))  # rank-3 inputs, n=5
    C = X.T @ X / 20
    W = rng.standard_normal((4, 5))
    U, s, Vh = tqla.whitened_svd(W, C, 3)
    # rank 3 matches W on every calibration input exactly
    np.testing.assert_allclose(((U * s) @ Vh) @ X.T, W @ X.T, atol=1e-9 * np.linalg.norm(W @ X.T))
    assert np.all(np.isfinite(Vh))


def test_zero_moment_gives_zero_factors():
    W = np.ones((3, 4))
    U, s, Vh = tqla.whitened_svd(W, np.zeros((4, 4)), 2)
    assert np.all((U * s) @ Vh == 0)
    assert whitened_error(W, 0 * W, np.zeros((4, 4))) == 0.0


def test_bad_moment_names_the_argument():
    with pytest.raises(ValueError, match=r"C must be the \(cols × cols\)"):
        tqla.whitened_svd(np.ones((3, 4)), np.eye(3), 1)
    with pytest.raises(ValueError, match="damp"):
        tqla.whitened_svd(np.ones((3, 4)), np.eye(4), 1, damp=-1)


# --------------------------------------------------------------------------------------
# Kronecker sums
# --------------------------------------------------------------------------------------
def test_nearest_kron_moment_recovers_a_kronecker_moment():
    rng = np.random.default_rng(3)
    C1, C2 = _moment(rng, 3), _moment(rng, 2)
    D1, D2 = tqla.nearest_kron_moment(np.kron(C1, C2), 3, 2)
    np.testing.assert_allclose(np.kron(D1, D2), np.kron(C1, C2), atol=1e-12 * np.abs(C1).max() * np.abs(C2).max() * 10)
    assert np.linalg.eigvalsh(D1).min() >= -1e-12 and np.linalg.eigvalsh(D2).min() >= -1e-12


@pytest.mark.parametrize("damp", [0.0, 0.1])
def test_identity_moment_gives_plain_kron_svd(backend, damp):
    rng = np.random.default_rng(4)
    s = ((3, 2), (2, 3))
    W = rng.standard_normal((6, 6))
    Wb = backend.asarray(W)
    K = tqla.whitened_kron_svd(Wb, backend.asarray(np.eye(6)), s, 2, damp=damp)
    P = tqla.kron_svd(Wb, s, 2)
    np.testing.assert_allclose(
        backend.to_numpy(K.to_dense()), backend.to_numpy(P.to_dense()), atol=_tol(6, 6) * np.linalg.norm(W)
    )


def _direct_best_kron_rank1(W, C, s, rng, n_starts=6, iters=400):
    """Reference optimum by direct least squares: alternate exact solves of the full
    linear least-squares problems in A (vec) and B (vec), from several starts."""
    (m1, n1), (m2, n2) = s
    L = np.linalg.cholesky(C)
    target = (W @ L).ravel()
    best = np.inf
    for _ in range(n_starts):
        B = rng.standard_normal((m2, n2))
        for _ in range(iters):
            # K = A ⊗ B is linear in A: column for entry (i, j) of A is vec(E_ij ⊗ B · L)
            MA = np.stack([(np.kron(np.eye(m1 * n1)[k].reshape(m1, n1), B) @ L).ravel() for k in range(m1 * n1)], 1)
            A = np.linalg.lstsq(MA, target, rcond=None)[0].reshape(m1, n1)
            MB = np.stack([(np.kron(A, np.eye(m2 * n2)[k].reshape(m2, n2)) @ L).ravel() for k in range(m2 * n2)], 1)
            B = np.linalg.lstsq(MB, target, rcond=None)[0].reshape(m2, n2)
        best = min(best, float(np.linalg.norm(target - (np.kron(A, B) @ L).ravel())))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kron_closed_form_is_optimal_for_a_kronecker_moment(seed):
    rng = np.random.default_rng(seed)
    s = ((2, 2), (2, 3))
    C = np.kron(_moment(rng, 2), _moment(rng, 3))
    W = rng.standard_normal((4, 6))
    K = tqla.whitened_kron_svd(W, C, s, 1)
    got = whitened_error(W, K.to_dense(), C, relative=False)
    ref = _direct_best_kron_rank1(W, C, s, rng)
    assert got <= ref * (1 + 1e-6) + 1e-12
    # and the spectrum tail predicts it
    sig = tqla.whitened_kron_spectrum(W, C, s)
    assert got**2 == pytest.approx(float(np.sum(sig[1:] ** 2)), rel=1e-8)


@given(seed=st.integers(0, 2**32 - 1), r=st.integers(1, 3))
def test_als_never_increases_the_error(seed, r):
    rng = np.random.default_rng(seed)
    s = ((3, 2), (2, 3))
    W, C = rng.standard_normal((6, 6)), _moment(rng, 6)
    K = tqla.whitened_kron_svd(W, C, s, r)
    A, B = np.asarray(K.A), np.asarray(K.B)
    prev = whitened_error(W, K.to_dense(), C)
    for _ in range(4):
        A, B = als_sweeps(W, C, A, B, 1)
        err = whitened_error(W, tqla.KroneckerSum(A, B).to_dense(), C)
        assert err <= prev * (1 + 1e-10) + 1e-14
        prev = err


def test_als_improves_on_a_non_kronecker_moment():
    rng = np.random.default_rng(5)
    s = ((3, 2), (2, 3))
    W, C = rng.standard_normal((6, 6)), _moment(rng, 6)
    e0 = whitened_error(W, tqla.whitened_kron_svd(W, C, s, 1).to_dense(), C)
    e3 = whitened_error(W, tqla.whitened_kron_svd(W, C, s, 1, n_als=5).to_dense(), C)
    assert e3 < e0


# --------------------------------------------------------------------------------------
# Permuted
# --------------------------------------------------------------------------------------
def test_permuted_identity_moment_gives_plain_answer():
    rng = np.random.default_rng(6)
    s = ((4, 3), (2, 2))
    W = rng.standard_normal((8, 6))
    P = tqla.permuted_kron(W, s, 2, n_iter=3)
    Q = tqla.whitened_permuted_kron(W, np.eye(6), s, 2, n_iter=3)
    np.testing.assert_array_equal(np.asarray(P.row_perm), np.asarray(Q.row_perm))
    np.testing.assert_allclose(Q.to_dense(), P.to_dense(), atol=_tol(8, 6) * np.linalg.norm(W))


def test_permuted_moment_follows_the_columns():
    rng = np.random.default_rng(7)
    s = ((2, 2), (2, 3))
    A, B = rng.standard_normal((2, 2)), rng.standard_normal((2, 3))
    cp = rng.permutation(6)
    W = np.kron(A, B)[:, cp]  # W[i, j] = K[i, cp[j]]
    C = _moment(rng, 6)
    Q = tqla.whitened_permuted_kron(W, C, s, 1, permute="cols", n_restarts=8, rng=0)
    assert Q.error < 1e-8
    assert whitened_error(W, Q.to_dense(), C) < 1e-8


# --------------------------------------------------------------------------------------
# Diagonal moments (embeddings: one-hot inputs, C = diag(token frequencies))
# --------------------------------------------------------------------------------------
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 6), n=st.integers(2, 9))
def test_diagonal_moment_equals_the_dense_diagonal(seed, m, n):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    f = rng.uniform(0.05, 3.0, n)
    r = int(rng.integers(1, min(m, n) + 1))
    U, s, Vh = tqla.whitened_svd(W, f, r)
    u, p, vh = tqla.whitened_svd(W, np.diag(f), r)
    scale = np.linalg.norm(W) * (f.max() / f.min()) ** 0.5
    np.testing.assert_allclose((U * s) @ Vh, (u * p) @ vh, atol=_tol(m, n) * scale * 10)
    np.testing.assert_allclose(s, p, rtol=_tol(m, n), atol=_tol(m, n) * p[0])
    np.testing.assert_allclose(
        tqla.whitened_spectrum(W, f), tqla.whitened_spectrum(W, np.diag(f)),
        rtol=_tol(m, n), atol=_tol(m, n) * p[0],
    )
    assert whitened_error(W, (U * s) @ Vh, f) == pytest.approx(
        whitened_error(W, (U * s) @ Vh, np.diag(f)), rel=1e-9, abs=1e-12
    )


def test_unit_diagonal_moment_gives_exactly_the_plain_svd(backend):
    # S = I as a diagonal: W·1 is W bit for bit, so the answer is the plain one of the same
    # (float64 host) code path exactly, and the plain one of W's library to rounding
    rng = np.random.default_rng(3)
    W = rng.standard_normal((5, 7))
    Wb = backend.asarray(W)
    U, s, Vh = tqla.whitened_svd(Wb, backend.asarray(np.ones(7)), 3)
    for a, b in zip((U, s, Vh), tqla.truncated_svd(W, 3)):
        assert np.array_equal(backend.to_numpy(a), b)
    u, p, vh = tqla.truncated_svd(Wb, 3)
    for a, b in ((U, u), (s, p), (Vh, vh)):
        np.testing.assert_allclose(
            backend.to_numpy(a), backend.to_numpy(b), atol=_tol(5, 7) * np.linalg.norm(W)
        )
    assert type(U) is type(Wb)


def test_unseen_tokens_are_zero_without_damping_and_fitted_with_it():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((4, 6))
    f = np.array([3.0, 1.0, 0.0, 2.0, 0.0, 1.0])  # tokens 2 and 4 never seen
    U, s, Vh = tqla.whitened_svd(W, f, 2)
    approx = (U * s) @ Vh
    assert np.all(approx[:, [2, 4]] == 0)
    U, s, Vh = tqla.whitened_svd(W, f, 2, damp=0.1)
    assert np.all(np.abs(((U * s) @ Vh)[:, [2, 4]]).sum(axis=0) > 0)


def test_bad_diagonal_moment_names_the_rule():
    W = np.ones((3, 4))
    with pytest.raises(ValueError, match="one entry per column"):
        tqla.whitened_svd(W, np.ones(3), 1)
    with pytest.raises(ValueError, match="finite"):
        tqla.whitened_svd(W, np.array([1.0, np.nan, 1.0, 1.0]), 1)
