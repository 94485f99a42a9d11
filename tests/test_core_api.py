"""The core API shared with tqla_torch: truncated_svd, association-order costs,
check_permutation, and the meaning of permute="rows"."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tqla
from tqla import KroneckerShape, KroneckerSum, check_permutation, kron_svd, truncated_svd
from tqla.kron import rearrange
from tqla.testing import kronecker_shapes

with_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)
METHODS = ("gram", "full", "randomized")


def _small_side_signs_ok(U, Vh):
    """tqla's sign rule: the largest-magnitude entry of the small side's vectors is > 0."""
    small = Vh if Vh.shape[1] <= U.shape[0] else U.T
    picked = small[np.arange(small.shape[0]), np.argmax(np.abs(small), axis=1)]
    return bool(np.all(picked >= 0))


@st.composite
def matrices_and_ranks(draw, max_dim=12):
    m = draw(st.integers(1, max_dim))
    n = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**31 - 1))
    rank = draw(st.integers(1, min(m, n)))
    return np.random.default_rng(seed).standard_normal((m, n)), rank


# --------------------------------------------------------------------------------------
# truncated_svd
# --------------------------------------------------------------------------------------
@given(data=matrices_and_ranks())
@pytest.mark.parametrize("method", METHODS)
def test_truncated_svd_is_the_best_rank_r_approximation(method, data):
    X, rank = data
    U, s, Vh = truncated_svd(X, rank, method=method, rng=0)
    assert U.shape == (X.shape[0], rank) and s.shape == (rank,) and Vh.shape == (rank, X.shape[1])
    ref = np.linalg.svd(X, compute_uv=False)
    scale = max(ref[0], 1.0)
    tol = 1e-6 * scale if method == "gram" else 1e-9 * scale  # Gram: √eps64 on s
    if method == "randomized" and rank < min(X.shape):
        tol = 1e-6 * scale
    np.testing.assert_allclose(s, ref[:rank], atol=tol)
    assert np.all(np.diff(s) <= tol)  # descending
    err = np.linalg.norm(X - (U * s) @ Vh)
    best = np.sqrt(np.sum(ref[rank:] ** 2))
    assert err <= best + 1e-6 * scale
    assert _small_side_signs_ok(U, Vh)


@given(data=matrices_and_ranks())
def test_truncated_svd_routes_agree_with_the_sign_rule(data):
    """Separated singular values: every route gives the same vectors, signs included."""
    X, rank = data
    ref = np.linalg.svd(X, compute_uv=False)
    gaps = np.abs(np.diff(ref[: rank + 1])) if rank < len(ref) else np.abs(np.diff(ref[:rank]))
    if rank > 1 or rank < len(ref):
        if len(gaps) and gaps.min() < 1e-2 * ref[0]:
            return  # near-degenerate: the vectors themselves are not unique
    if ref[rank - 1] < 1e-3 * ref[0]:
        return
    outs = [truncated_svd(X, rank, method=m) for m in ("gram", "full")]
    for U, s, Vh in outs[1:]:
        np.testing.assert_allclose(U, outs[0][0], atol=1e-6)
        np.testing.assert_allclose(Vh, outs[0][2], atol=1e-6)


def test_truncated_svd_sign_rule_on_the_small_side():
    rng = np.random.default_rng(1)
    for shape in [(9, 4), (4, 9), (5, 5)]:
        X = rng.standard_normal(shape)
        for method in METHODS:
            U, _, Vh = truncated_svd(X, 3, method=method, rng=0)
            assert _small_side_signs_ok(U, Vh), (shape, method)


@with_fixture
@given(data=matrices_and_ranks(max_dim=8))
def test_truncated_svd_on_every_backend(backend, data):
    X, rank = data
    for method in METHODS:
        U, s, Vh = truncated_svd(backend.asarray(X), rank, method=method, rng=3)
        for a in (U, s, Vh):
            assert type(a) is type(backend.asarray(X))
        Un, sn, Vn = truncated_svd(X, rank, method=method, rng=3)
        approx = (backend.to_numpy(U) * backend.to_numpy(s)) @ backend.to_numpy(Vh)
        scale = max(np.linalg.norm(X, 2), 1.0)
        np.testing.assert_allclose(approx, (Un * sn) @ Vn, atol=1e-8 * scale)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_truncated_svd_low_precision(dtype):
    X = np.random.default_rng(0).standard_normal((20, 7)).astype(dtype)
    for method in ("auto", *METHODS):
        U, s, Vh = truncated_svd(X, 3, method=method, rng=0)
        assert U.dtype == s.dtype == Vh.dtype == dtype
        ref = np.linalg.svd(X.astype(np.float64), compute_uv=False)[:3]
        rtol = 5e-3 if dtype == np.float16 else 1e-5
        np.testing.assert_allclose(s.astype(np.float64), ref, rtol=rtol)


def test_truncated_svd_huge_entries_leave_the_gram_route():
    X = np.random.default_rng(0).standard_normal((8, 5)) * 1e200
    U, s, Vh = truncated_svd(X, 2, method="gram")
    ref = np.linalg.svd(X, compute_uv=False)[:2]
    np.testing.assert_allclose(s, ref, rtol=1e-10)


def test_truncated_svd_validation():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"rank must satisfy 1 <= rank <= min\(m, n\) = 3"):
        truncated_svd(X, 4)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        truncated_svd(X, 0)
    with pytest.raises(TypeError, match="rank must be an integer"):
        truncated_svd(X, 1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        truncated_svd(X, 1, method="qr")
    with pytest.raises(ValueError, match="X must be finite"):
        truncated_svd(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(TypeError, match="X must have a real floating dtype"):
        truncated_svd(np.ones((2, 2), dtype=int), 1)


@given(s=kronecker_shapes(max_side=4, max_dim=16), seed=st.integers(0, 2**31 - 1))
def test_kron_svd_factors_are_truncated_svd_of_the_rearrangement(s, seed):
    """kron_svd = truncated_svd(R(W)) scaled by √σ, on every route, same signs."""
    W = np.random.default_rng(seed).standard_normal(s.matrix_shape)
    rank = min(2, s.max_rank)
    X = rearrange(W, s)
    sv = np.linalg.svd(X, compute_uv=False)
    if rank < len(sv) and sv[rank - 1] - sv[rank] < 1e-3 * sv[0]:
        return
    if rank > 1 and sv[0] - sv[1] < 1e-3 * sv[0]:
        return
    for method in ("gram", "full"):
        K = kron_svd(W, s, rank, method=method)
        U, sig, Vh = truncated_svd(X, rank, method=method)
        root = np.sqrt(sig)
        np.testing.assert_allclose(K.A.reshape(rank, -1), (U * root).T, atol=1e-7)
        np.testing.assert_allclose(K.B.reshape(rank, -1), Vh * root[:, None], atol=1e-7)


# --------------------------------------------------------------------------------------
# Association-order costs
# --------------------------------------------------------------------------------------
def _flops_of_order(s, r, k, order):
    """Multiply-adds counted from the GEMM shapes each order runs."""
    m1, n1, m2, n2 = s.m1, s.n1, s.m2, s.n2
    if order == "b_first":  # B (r, m2, n2) @ X3 (n2, n1·k), then (m1, r·n1) @ (r·n1, m2·k)
        return r * m2 * n2 * n1 * k + m1 * r * n1 * m2 * k
    return r * m1 * n1 * n2 * k + m2 * r * n2 * m1 * k


@given(s=kronecker_shapes(max_side=6, max_dim=30), r=st.integers(1, 5), k=st.integers(1, 7))
def test_matmat_costs_count_the_gemms(s, r, k):
    a_first, b_first = s.matmat_costs(r, k)
    assert a_first == _flops_of_order(s, r, k, "a_first")
    assert b_first == _flops_of_order(s, r, k, "b_first")
    order = s.matmat_order(r, k)
    assert order == ("b_first" if b_first <= a_first else "a_first")


def test_matmat_order_ties_and_transpose():
    s = KroneckerShape((3, 3), (3, 3))
    assert s.matmat_costs(2, 4)[0] == s.matmat_costs(2, 4)[1]
    assert s.matmat_order(2, 4) == "b_first"
    s = KroneckerShape((384, 768), (2, 4))
    assert s.matmat_order(4) == "b_first"
    assert s.T.matmat_costs(4, 8) == KroneckerShape((768, 384), (4, 2)).matmat_costs(4, 8)
    with pytest.raises(TypeError, match="rank must be an integer"):
        s.matmat_costs(1.0, 1)


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_kronecker_sum_products_run_the_cheaper_order(monkeypatch, order):
    """The branch KroneckerSum takes is the one matmat_order names (count the GEMMs)."""
    rng = np.random.default_rng(0)
    # a_first cheaper: big n1, small m1; b_first cheaper: the reverse
    shp = ((2, 40), (30, 3)) if order == "a_first" else ((40, 2), (3, 30))
    s = KroneckerShape.of(shp)
    assert s.matmat_order(2, 5) == order
    K = KroneckerSum(rng.standard_normal((2, *s.a)), rng.standard_normal((2, *s.b)))
    X = rng.standard_normal((s.matrix_shape[1], 5))
    flops = []
    real = np.matmul
    inner = K.xp

    class CountingXP:
        def __getattr__(self, name):
            return getattr(inner, name)

        @staticmethod
        def matmul(a, b):
            flops.append(int(np.prod(a.shape[:-1])) * int(a.shape[-1]) * int(b.shape[-1]))
            return real(a, b)

    dense = K.to_dense() @ X
    monkeypatch.setattr(K, "_xp", CountingXP())
    Y = K @ X
    np.testing.assert_allclose(Y, dense, atol=1e-10)
    assert sum(flops) == dict(zip(("a_first", "b_first"), s.matmat_costs(2, 5)))[order]


# --------------------------------------------------------------------------------------
# check_permutation
# --------------------------------------------------------------------------------------
def test_check_permutation_accepts_arrays_of_any_library(backend):
    p = np.array([2, 0, 3, 1])
    out = check_permutation(backend.asarray(p), 4, "row_perm")
    assert isinstance(out, np.ndarray) and out.dtype == np.int64
    np.testing.assert_array_equal(out, p)
    np.testing.assert_array_equal(check_permutation([1, 0], 2), [1, 0])
    assert check_permutation([], 0).shape == (0,)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.array([0, 1, 1]), ValueError, r"p must be a permutation of range\(3\): it repeats"),
        (np.array([0, 1, 3]), ValueError, "entries out of range"),
        (np.array([-1, 0, 1]), ValueError, "entries out of range"),
        (np.array([0, 1]), ValueError, r"p must have shape \(3,\), got \(2,\)"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "p must be an integer array, got dtype float64"),
        (np.array([True, False, True]), TypeError, "got dtype bool"),
        (None, TypeError, "p must be an integer array of shape"),
        ("012", TypeError, "p must be an integer array, got str"),
    ],
)
def test_check_permutation_rejects(bad, exc, match):
    with pytest.raises(exc, match=match):
        check_permutation(bad, 3, "p")


def test_check_permutation_is_exported():
    assert "check_permutation" in tqla.__all__ and "truncated_svd" in tqla.__all__


# --------------------------------------------------------------------------------------
# permute="rows" is the M side (output features)
# --------------------------------------------------------------------------------------
def test_permute_rows_permutes_the_m_side():
    rng = np.random.default_rng(0)
    s = KroneckerShape((4, 3), (2, 2))  # W is 8×6
    W = np.kron(rng.standard_normal(s.a), rng.standard_normal(s.b))[rng.permutation(8)]
    P = tqla.permuted_kron(W, s, 1, permute="rows", n_restarts=4, rng=0)
    assert P.permuted == (True, False)
    assert len(P.row_perm) == W.shape[0]  # M: the rows / output features
    np.testing.assert_array_equal(P.col_perm, np.arange(W.shape[1]))
    np.testing.assert_allclose(P.to_dense(), W, atol=1e-10)
    Q = tqla.permuted_kron(W.T.copy(), s.T, 1, permute="cols", n_restarts=4, rng=0)
    assert Q.permuted == (False, True) and len(Q.col_perm) == W.shape[0]
