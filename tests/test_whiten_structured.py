"""Activation-aware spectral Kronecker sums and TT-matrices (tqla.whiten_structured)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tqla
from tqla.whiten import whitened_error

EPS = np.finfo(np.float64).eps


def _moment(rng, n):
    X = rng.standard_normal((3 * n, n)) * rng.uniform(0.2, 3.0, n)
    return X.T @ X / X.shape[0]


def _tol(*shape):
    return 1e3 * EPS * max(shape)


def _kron_all(fs):
    out = np.ones((1, 1))
    for f in fs:
        out = np.kron(out, f)
    return out


@given(seed=st.integers(0, 2**32 - 1))
def test_kron_moment_factors_recover_a_kronecker_moment(seed):
    rng = np.random.default_rng(seed)
    fs = [_moment(rng, n) for n in (2, 3, 2)]
    C = _kron_all(fs)
    got = tqla.kron_moment_factors(C, (2, 3, 2))
    assert [g.shape for g in got] == [(2, 2), (3, 3), (2, 2)]
    np.testing.assert_allclose(_kron_all(got), C, atol=_tol(12) * np.abs(C).max() * 10)
    assert all(np.linalg.eigvalsh(g).min() >= -_tol(3) * np.abs(g).max() for g in got)


@pytest.mark.parametrize("damp", [0.0, 0.1])
def test_identity_moment_gives_plain_tt_matrix(backend, damp):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((12, 8))
    Wb = backend.asarray(W)
    T = tqla.whitened_tt_matrix(Wb, backend.asarray(np.eye(8)), (3, 4), (2, 4), ranks=[3],
                                damp=damp)
    P = tqla.tt_matrix(Wb, (3, 4), (2, 4), ranks=[3])
    assert T.ranks == P.ranks
    np.testing.assert_allclose(backend.to_numpy(T.to_dense()), backend.to_numpy(P.to_dense()),
                               atol=_tol(12, 8) * np.linalg.norm(W))


@given(seed=st.integers(0, 2**32 - 1), r=st.integers(1, 3))
def test_two_core_tt_is_the_whitened_kronecker_closed_form(seed, r):
    # a 2-core TT-matrix of ranks (1, r, 1) is a rank-r Kronecker sum: the whitened TT-SVD
    # must be the (optimal, for C = C1⊗C2) whitened kron_svd
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((6, 6))
    C = np.kron(_moment(rng, 2), _moment(rng, 3))
    T = tqla.whitened_tt_matrix(W, C, (3, 2), (2, 3), ranks=[r])
    K = tqla.whitened_kron_svd(W, C, ((3, 2), (2, 3)), r)
    e_t = whitened_error(W, T.to_dense(), C, relative=False)
    e_k = whitened_error(W, K.to_dense(), C, relative=False)
    assert e_t == pytest.approx(e_k, rel=1e-6, abs=1e-9 * np.linalg.norm(W))
    plain = tqla.tt_matrix(W, (3, 2), (2, 3), ranks=[r])
    assert e_t <= whitened_error(W, plain.to_dense(), C, relative=False) * (1 + 1e-9) + 1e-12


@given(seed=st.integers(0, 2**32 - 1))
def test_three_core_tt_minimises_the_whitened_tt_svd(seed):
    # for C = C1⊗C2⊗C3 the result is TT-SVD of W·(L1⊗L2⊗L3) mapped back (any root)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((8, 12))
    fs = [_moment(rng, n) for n in (2, 3, 2)]
    C = _kron_all(fs)
    L = _kron_all([np.linalg.cholesky(f) for f in fs])
    T = tqla.whitened_tt_matrix(W, C, (2, 2, 2), (2, 3, 2), ranks=[2, 2])
    ref = tqla.tt_matrix(W @ L, (2, 2, 2), (2, 3, 2), ranks=[2, 2])
    got = whitened_error(W, T.to_dense(), C, relative=False)
    want = float(np.linalg.norm(W @ L - ref.to_dense()))
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9 * np.linalg.norm(W @ L))
    # full ranks: exact
    F = tqla.whitened_tt_matrix(W, C, (2, 2, 2), (2, 3, 2), damp=0.01)
    np.testing.assert_allclose(F.to_dense(), W, atol=1e4 * EPS * np.linalg.norm(W))


def test_identity_moment_gives_plain_kron_spectral():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((12, 8))
    s = ((3, 2), (4, 4))
    K = tqla.whitened_kron_spectral(W, np.eye(8), s, 2, p=[4, 8], max_iter=20, rng=0)
    P = tqla.kron_spectral(W, s, 2, p=[4, 8], max_iter=20, rng=0)
    np.testing.assert_allclose(K.to_dense(), P.to_dense(), atol=1e-8 * np.linalg.norm(W))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kron_spectral_lowers_the_whitened_spectral_error(seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((12, 8))
    C = np.kron(_moment(rng, 2), _moment(rng, 4))
    s = ((3, 2), (4, 4))
    L = np.linalg.cholesky(C)
    K = tqla.whitened_kron_spectral(W, C, s, 2, p=[4, 8, 16], max_iter=30, rng=0)
    start = tqla.whitened_kron_svd(W, C, s, 2)
    plain = tqla.kron_spectral(W, s, 2, p=[4, 8, 16], max_iter=30, rng=0)
    e_k = np.linalg.norm((W - K.to_dense()) @ L, 2)
    assert e_k <= np.linalg.norm((W - start.to_dense()) @ L, 2) * (1 + 1e-9)
    assert e_k < np.linalg.norm((W - plain.to_dense()) @ L, 2)
    # the reported error is that of the whitened problem (C1⊗C2 = C exactly here) with the
    # roots scaled to norm 1: ‖S1‖₂·‖S2‖₂ = √λmax(C) = ‖L‖₂
    assert K.spectral_error.estimate == pytest.approx(e_k / np.linalg.norm(L, 2), rel=1e-6)


def test_kron_spectral_init_is_taken_in_w_frame():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((6, 4))
    C = np.kron(_moment(rng, 2), _moment(rng, 2))
    s = ((3, 2), (2, 2))
    start = tqla.whitened_kron_svd(W, C, s, 1)
    K = tqla.whitened_kron_spectral(W, C, s, 1, p=[4], max_iter=0, init=start)
    np.testing.assert_allclose(K.to_dense(), start.to_dense(), atol=1e-10 * np.linalg.norm(W))


def test_bad_input_names_the_argument():
    W = np.zeros((6, 8))
    with pytest.raises(ValueError, match="col_modes"):
        tqla.whitened_tt_matrix(W, np.eye(8), (3, 2), (2, 3))
    with pytest.raises(ValueError, match=r"C must be the \(cols × cols\) = \(8, 8\)"):
        tqla.whitened_tt_matrix(W, np.eye(6), (3, 2), (2, 4))
    with pytest.raises(ValueError, match="damp"):
        tqla.whitened_kron_spectral(W, np.eye(8), ((3, 2), (2, 4)), 1, damp=-1)
    with pytest.raises(TypeError, match="col_modes"):
        tqla.kron_moment_factors(np.eye(4), 4)
