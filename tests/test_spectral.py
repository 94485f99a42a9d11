"""Tests of tqla.spectral (kron_spectral) and tqla.norms (spectral_norm, certified bounds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tqla
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd
from tqla.spectral import check_p_schedule, kron_spectral
from tqla.testing import (
    assert_certified_bound,
    assert_nonincreasing,
    assert_same_array_type,
    assert_spectral_not_worse,
    spectral_error,
)
from tqla.testing import strategies as tst

FAST = {"p": (4.0, 16.0), "max_iter": 6}  # a short continuation for property tests

SHAPES = st.sampled_from(
    [((2, 3), (3, 2)), ((3, 3), (2, 2)), ((2, 2), (4, 3)), ((4, 2), (2, 4)), ((3, 2), (3, 3))]
)


def _gauss(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------------------
# kron_spectral
# --------------------------------------------------------------------------------------
@given(SHAPES, st.integers(1, 3), st.integers(0, 2**31))
def test_p2_is_kron_svd(shape, rank, seed):
    s = KroneckerShape.of(shape)
    rank = min(rank, s.max_rank)
    W = _gauss(seed, s.matrix_shape)
    K = kron_spectral(W, s, rank, p=2)
    K0 = kron_svd(W, s, rank)
    np.testing.assert_array_equal(K.A, K0.A)  # the same code path: exact equality
    np.testing.assert_array_equal(K.B, K0.B)
    assert K.n_iter == 0 and len(K.history) == 1


@given(SHAPES, st.integers(1, 3), st.integers(0, 2**31))
def test_never_worse_than_kron_svd_and_history(shape, rank, seed):
    s = KroneckerShape.of(shape)
    rank = min(rank, s.max_rank)
    W = _gauss(seed, s.matrix_shape)
    K = kron_spectral(W, s, rank, rng=0, **FAST)
    assert isinstance(K, KroneckerSum)
    assert_spectral_not_worse(W, K, kron_svd(W, s, rank))
    assert_nonincreasing(K.history.best, rtol=0)  # the kept iterate never gets worse
    assert K.history.best[0] == pytest.approx(spectral_error(W, kron_svd(W, s, rank)), rel=1e-10)
    # the reported (certified) error is the true one, and is the history's best
    exact = spectral_error(W, K)
    assert K.spectral_error.estimate == pytest.approx(exact, rel=1e-10)
    assert K.spectral_error.upper >= exact
    assert exact <= K.history.best[-1] * (1 + 1e-9)
    assert len(K.history.p) == len(K.history.error) == K.n_iter + 1
    assert K.frobenius_error == pytest.approx(np.linalg.norm(W - K.to_dense()), rel=1e-10)


def test_improves_on_random_matrices():
    """On Gaussian 16×16 matrices the continuation lowers kron_svd's spectral error."""
    for seed in range(3):
        W = _gauss(seed, (16, 16))
        K = kron_spectral(W, ((4, 4), (4, 4)), 2, rng=0)
        assert K.spectral_error.estimate < 0.97 * K.kron_svd_error.estimate
        assert max(K.history.p) == 128.0


@given(tst.kronecker_structured(max_side=4, max_rank=2))
def test_exact_kronecker_rank_recovered(planted):
    W, K_true = planted.W, planted.K
    s = K_true.kshape
    r = min(K_true.rank, s.max_rank)
    K = kron_spectral(W, s, r, rng=0, **FAST)
    scale = max(np.linalg.norm(W, 2), 1e-300)
    assert spectral_error(W, K) <= 1e-10 * scale * max(W.shape)


def test_partial_svd_route():
    W = _gauss(3, (48, 48))
    s = ((6, 8), (8, 6))
    Kp = kron_spectral(W, s, 4, svd="partial", rng=0, p=(8.0, 32.0), max_iter=8)
    Kf = kron_spectral(W, s, 4, svd="full", rng=0, p=(8.0, 32.0), max_iter=8)
    assert_spectral_not_worse(W, Kp, kron_svd(W, s, 4))
    assert Kp.svd == "partial" and Kf.svd == "full"
    # the partial route costs little accuracy here
    assert spectral_error(W, Kp) <= 1.05 * spectral_error(W, Kf)


def test_callback_and_init():
    W = _gauss(1, (12, 12))
    s = ((3, 4), (4, 3))
    seen = []

    def cb(info):
        seen.append(info)
        return len(seen) >= 3

    K = kron_spectral(W, s, 2, callback=cb, rng=0)
    assert len(seen) == 3 and K.n_iter == 3
    assert {"iteration", "p", "error", "best", "objective"} <= set(seen[0])
    K2 = kron_spectral(W, s, 2, init=K.kron, rng=0, **FAST)
    assert spectral_error(W, K2) <= spectral_error(W, K) * (1 + 1e-12)
    assert K2.history.best[0] == pytest.approx(spectral_error(W, K), rel=1e-10)


def test_backends_agree(backend):
    W = _gauss(5, (12, 12))
    s = ((3, 4), (4, 3))
    ref = kron_spectral(W, s, 2, rng=0, p=(4.0, 8.0), max_iter=4)
    Wb = backend.asarray(W)
    K = kron_spectral(Wb, s, 2, rng=0, p=(4.0, 8.0), max_iter=4)
    assert_same_array_type(K.A, Wb)
    assert K.spectral_error.estimate == pytest.approx(ref.spectral_error.estimate, rel=1e-7)
    np.testing.assert_allclose(backend.to_numpy(K.to_dense()), ref.to_dense(), atol=1e-7)


def test_float32_and_half():
    W = _gauss(2, (12, 8)).astype(np.float32)
    K = kron_spectral(W, ((3, 2), (4, 4)), 1, rng=0, **FAST)
    assert K.dtype == np.float32
    assert spectral_error(W, K) <= spectral_error(W, kron_svd(W, ((3, 2), (4, 4)), 1)) * (1 + 1e-5)
    torch = pytest.importorskip("torch")
    Wh = torch.tensor(W).to(torch.bfloat16)
    Kh = kron_spectral(Wh, ((3, 2), (4, 4)), 1, rng=0, **FAST)
    assert Kh.dtype == torch.bfloat16


def test_estimator():
    W = _gauss(0, (8, 6))
    est = tqla.SpectralKroneckerApprox(((4, 3), (2, 2)), rank=1, rng=0, **FAST).fit(W)
    assert est.transform().shape == (8, 6)
    assert est.spectral_error_.estimate == pytest.approx(spectral_error(W, est.result_))
    assert est.history_ is est.result_.history


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"p": 1.5}, ValueError, "p must be >= 2"),
        ({"p": [4, 2.5, 1]}, ValueError, "p must be >= 2"),
        ({"p": [8, 4]}, ValueError, "non-decreasing"),
        ({"p": []}, ValueError, "non-empty"),
        ({"p": float("inf")}, ValueError, "p must be >= 2"),
        ({"p": "high"}, TypeError, "p must be a number"),
        ({"max_iter": -1}, ValueError, "max_iter"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"svd": "lapack"}, ValueError, "svd must be"),
        ({"callback": 3}, TypeError, "callback"),
        ({"init": np.zeros((6, 4))}, TypeError, "init must be a KroneckerSum"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    W = _gauss(0, (6, 4))
    with pytest.raises(exc, match=match):
        kron_spectral(W, ((3, 2), (2, 2)), 1, **kwargs)


def test_bad_input_like_kron_svd():
    s = ((3, 2), (2, 2))
    W = _gauss(0, (6, 4))
    with pytest.raises(ValueError, match="does not match the Kronecker shape"):
        kron_spectral(W[:5], s, 1)
    with pytest.raises(ValueError, match="rank must satisfy"):
        kron_spectral(W, s, 5)
    bad = W.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        kron_spectral(bad, s, 1)
    with pytest.raises(TypeError, match="floating dtype"):
        kron_spectral(W.astype(np.int64), s, 1)
    K = kron_svd(W, s, 1)
    with pytest.raises(ValueError, match="init must have rank 2"):
        kron_spectral(W, s, 2, init=K)
    with pytest.raises(ValueError, match="init has factor shapes"):
        kron_spectral(W, ((6, 2), (1, 2)), 1, init=K)


def test_p_schedule():
    assert check_p_schedule(2) == ()
    assert check_p_schedule(128) == (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
    assert check_p_schedule((2, 2, 10)) == (10.0,)


# --------------------------------------------------------------------------------------
# spectral_norm
# --------------------------------------------------------------------------------------
@given(
    tst.matrices(max_dim=40, gaussian=True),
    st.sampled_from(["lanczos", "randomized"]),
    st.integers(0, 2**31),
)
def test_certified_bound_holds(E, method, seed):
    est = tqla.spectral_norm(E, method=method, rng=seed, max_iter=30)
    assert_certified_bound(est, E, rtol=1e-10)
    assert 0 < est.failure_prob <= 1e-6 or est.failure_prob == 0.0


@given(tst.matrices(max_dim=40, gaussian=True))
def test_exact_equals_numpy(E):
    est = tqla.spectral_norm(E, method="exact")
    assert est.estimate == pytest.approx(np.linalg.norm(E, 2), rel=1e-14)
    assert est.upper >= np.linalg.norm(E, 2) and est.failure_prob == 0.0


@given(st.integers(0, 2**31), st.sampled_from(["exact", "lanczos", "randomized"]))
def test_residual_operator_never_forms_e(seed, method):
    """W as a scipy LinearOperator and K as a KroneckerSum: products only."""
    from scipy.sparse.linalg import aslinearoperator

    W = _gauss(seed, (24, 18))
    W[:, :2] *= 4  # a clear top singular value
    K = kron_svd(W, ((6, 3), (4, 6)), 2)
    E = tqla.residual(aslinearoperator(W), K)
    est = tqla.spectral_norm(E, method=method, rng=seed, rtol=1e-3)
    assert_certified_bound(est, W - K.to_dense(), rtol=1e-10)
    assert est.estimate == pytest.approx(np.linalg.norm(W - K.to_dense(), 2), rel=1e-3)


def test_large_matrix_uses_matrix_free_bound():
    E = _gauss(0, (300, 2000))
    est = tqla.spectral_norm(tqla.residual(E, np.zeros_like(E)), method="auto", rng=0)
    assert est.method == "exact"  # 600k entries: formed
    est = tqla.spectral_norm(E, method="lanczos", rng=0, rtol=0.01)
    exact = np.linalg.norm(E, 2)
    assert est.lower <= exact <= est.upper <= 1.02 * exact


def test_spectral_norm_backends(backend):
    E = _gauss(4, (20, 15))
    Eb = backend.asarray(E)
    for method in ("exact", "lanczos", "randomized"):
        est = tqla.spectral_norm(Eb, method=method, rng=0)
        assert_certified_bound(est, E, rtol=1e-10)
        assert isinstance(est.estimate, float)


def test_zero_matrix():
    Z = np.zeros((5, 4))
    for method in ("exact", "lanczos", "randomized"):
        est = tqla.spectral_norm(Z, method=method, rng=0)
        assert est.estimate == 0.0 and est.upper >= 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "power"}, "method must be one of"),
        ({"rtol": 0}, "rtol must be a positive"),
        ({"failure_prob": 1.0}, "failure_prob must be in"),
        ({"max_iter": 0}, "max_iter must be >= 1"),
    ],
)
def test_spectral_norm_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tqla.spectral_norm(np.eye(3), **kwargs)
    with pytest.raises(TypeError, match="must be a 2-D array"):
        tqla.spectral_norm(object())


@given(st.integers(0, 2**31), st.floats(0.5, 1.0), st.integers(1, 3))
def test_randomized_bound_needs_its_factor(seed, ratio, steps):
    """Few vectors and steps: the Ritz value is far from σ₁, so only the HMT factor
    α·√(2/π) keeps the bound above it (a rank-2 E with close singular values)."""
    rng = np.random.default_rng(seed)
    Q1, _ = np.linalg.qr(rng.standard_normal((20, 2)))
    Q2, _ = np.linalg.qr(rng.standard_normal((15, 2)))
    E = Q1 @ np.diag([1.0, ratio]) @ Q2.T
    est = tqla.spectral_norm(E, method="randomized", n_vectors=1, max_iter=steps, rtol=10.0,
                             rng=seed)
    assert_certified_bound(est, E, rtol=1e-10)
