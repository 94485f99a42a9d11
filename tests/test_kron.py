"""Properties of the Kronecker algebra (docs/kron.md), over every array backend.

Data are drawn with NumPy by the strategies of :mod:`tqla.testing` and converted with the
``backend`` fixture; results are compared on the host with :mod:`tqla.testing`'s
assertions.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tqla import KroneckerShape, KroneckerSum, factor_shapes, kron_svd, rearrange, unrearrange
from tqla.kron import choose_svd_method, kron_singular_values
from tqla.testing import (
    as_numpy,
    assert_kron_optimal,
    assert_reconstructs,
    kronecker_shapes,
    kronecker_structured,
    kronecker_sums,
    matrices,
    rounding_tolerance,
)

# Hypothesis with the function-scoped ``backend`` fixture: the fixture is a constant per
# parametrisation, so sharing it between examples is what we want.
with_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)

shapes = kronecker_shapes(max_side=5, max_dim=25)
EXACT = ("gram", "full")
METHODS = ("gram", "full", "randomized")


def shapes_and_matrices(**kw):
    return shapes.flatmap(lambda s: st.tuples(st.just(s), matrices(s, **kw)))


# --------------------------------------------------------------------------------------
# The rearrangement
# --------------------------------------------------------------------------------------
@with_fixture
@given(K=kronecker_sums(max_side=5, max_dim=25, max_rank=3))
def test_rearrangement_of_kronecker_sum_is_sum_of_outer_products(backend, K):
    A, B = np.asarray(K.A), np.asarray(K.B)
    W = backend.asarray(K.to_dense())
    X = backend.to_numpy(rearrange(W, K.kshape))
    expected = sum(np.outer(A[k].ravel(), B[k].ravel()) for k in range(K.rank))
    np.testing.assert_allclose(X, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # R(A ⊗ B) = vec(A) vec(B)ᵀ, term by term, with NumPy's kron
    for k in range(K.rank):
        Xk = backend.to_numpy(rearrange(backend.asarray(np.kron(A[k], B[k])), K.kshape))
        np.testing.assert_array_equal(Xk, np.outer(A[k].ravel(), B[k].ravel()))


@with_fixture
@given(data=shapes_and_matrices())
def test_rearrange_and_unrearrange_are_inverse_and_keep_the_norm(backend, data):
    s, Wn = data
    W = backend.asarray(Wn)
    X = rearrange(W, s)
    assert tuple(X.shape) == s.rearranged_shape
    np.testing.assert_array_equal(backend.to_numpy(unrearrange(X, s)), Wn)
    Xn = backend.to_numpy(X)
    np.testing.assert_array_equal(np.sort(Xn.ravel()), np.sort(Wn.ravel()))  # moves entries
    assert np.linalg.norm(Xn) == pytest.approx(np.linalg.norm(Wn), rel=1e-14)
    Y = rearrange(unrearrange(backend.asarray(Xn), s), s)
    np.testing.assert_array_equal(backend.to_numpy(Y), Xn)


def test_rearrange_matches_methods_formula():
    s = KroneckerShape((2, 3), (4, 5))
    W = np.arange(8 * 15, dtype=float).reshape(8, 15)
    X = rearrange(W, s)
    for i1, j1, i2, j2 in itertools.product(range(2), range(3), range(4), range(5)):
        assert X[i1 * 3 + j1, i2 * 5 + j2] == W[i1 * 4 + i2, j1 * 5 + j2]


# --------------------------------------------------------------------------------------
# kron_svd
# --------------------------------------------------------------------------------------
@with_fixture
@given(planted=kronecker_structured(max_side=5, max_dim=25, max_rank=3))
@pytest.mark.parametrize("method", METHODS)
def test_kron_svd_recovers_an_exact_kronecker_sum(backend, method, planted):
    W, K = planted.W, planted.K
    rank = min(K.rank, K.kshape.max_rank)
    out = kron_svd(backend.asarray(W), K.kshape, rank, method=method, rng=0)
    assert out.rank == rank and out.kshape == K.kshape
    # The Gram route squares the condition number: its error is O(√eps·‖W‖) at worst.
    assert_reconstructs(out, W, rtol=1e-6 if method == "gram" else 1e-9)


@given(data=shapes_and_matrices(), rank=st.integers(1, 8))
@pytest.mark.parametrize("method", EXACT)
def test_kron_svd_error_is_the_singular_value_tail(method, data, rank):
    s, W = data
    rank = min(rank, s.max_rank)
    K = kron_svd(W, s, rank, method=method)
    assert_kron_optimal(W, s, rank, K, rtol=1e-10)


@given(data=shapes_and_matrices(gaussian=True), rank=st.integers(1, 4))
def test_kron_svd_randomized_is_close_to_optimal(data, rank):
    s, W = data
    rank = min(rank, s.max_rank)
    K = kron_svd(W, s, rank, method="randomized", rng=1)
    assert_kron_optimal(W, s, rank, K, rtol=1e-6)


@with_fixture
@given(data=shapes_and_matrices(gaussian=True), rank=st.integers(1, 3))
def test_kron_svd_error_is_the_tail_on_every_backend(backend, data, rank):
    s, W = data
    rank = min(rank, s.max_rank)
    K = kron_svd(backend.asarray(W), s, rank)
    assert_kron_optimal(W, s, rank, K, rtol=1e-10)


@given(data=shapes_and_matrices(gaussian=True), rank=st.integers(1, 4))
def test_sign_convention_of_the_smaller_factor(data, rank):
    s, W = data
    rank = min(rank, s.max_rank)
    K = kron_svd(W, s, rank)
    small = K.B if s.m2 * s.n2 <= s.m1 * s.n1 else K.A
    flat = np.asarray(small).reshape(rank, -1)
    picked = flat[np.arange(rank), np.argmax(np.abs(flat), axis=1)]
    assert np.all(picked >= 0)


@given(data=shapes_and_matrices(), rank=st.integers(1, 4))
def test_kron_svd_is_deterministic(data, rank):
    s, W = data
    rank = min(rank, s.max_rank)
    for method in METHODS:
        K1 = kron_svd(W, s, rank, method=method, rng=7)
        K2 = kron_svd(W.copy(), s, rank, method=method, rng=7)
        np.testing.assert_array_equal(K1.A, K2.A)
        np.testing.assert_array_equal(K1.B, K2.B)


def test_gram_and_full_routes_give_the_same_error_at_gpt2_mlp_shape():
    """The issue's accuracy target: 768×3072, A 384×768 ⊗ B 2×4, rank 4, float64."""
    W = np.random.default_rng(0).standard_normal((768, 3072))
    s = ((384, 768), (2, 4))
    errors = {
        m: float(np.linalg.norm(W - kron_svd(W, s, 4, method=m).to_dense()))
        for m in ("gram", "full")
    }
    for kernel in ("numpy", "numba", "array_api"):
        K = kron_svd(W, s, 4, method="gram", kernel=kernel)
        errors[kernel] = float(np.linalg.norm(W - K.to_dense()))
    ref = errors["full"]
    for name, err in errors.items():
        assert abs(err - ref) <= 1e-10 * ref, (name, err, ref)


def test_kron_singular_values_give_the_errors_of_every_rank():
    rng = np.random.default_rng(3)
    s = KroneckerShape((3, 4), (5, 2))
    W = rng.standard_normal(s.matrix_shape)
    sigma = kron_singular_values(W, s)
    assert sigma.shape == (s.max_rank,)
    assert np.all(np.diff(sigma) <= 0)
    for r in range(1, s.max_rank + 1):
        err = np.linalg.norm(W - kron_svd(W, s, r).to_dense())
        assert err == pytest.approx(np.sqrt(np.sum(sigma[r:] ** 2)), rel=1e-9, abs=1e-12)


def test_choose_svd_method():
    assert choose_svd_method(((384, 768), (2, 4)), 4) == "gram"
    assert choose_svd_method(((32, 32), (32, 32)), 8) == "randomized"
    assert choose_svd_method(((32, 32), (32, 32)), 500) == "full"


# --------------------------------------------------------------------------------------
# KroneckerSum
# --------------------------------------------------------------------------------------
@with_fixture
@given(K=kronecker_sums(max_side=4, max_dim=16, max_rank=3), k=st.integers(1, 3))
def test_products_equal_dense_products(backend, K, k):
    Kb = KroneckerSum(backend.asarray(K.A), backend.asarray(K.B))
    D = K.to_dense()
    M, N = K.shape
    rng = np.random.default_rng(k)
    scale = max(1.0, np.abs(D).max())

    def check(got, want):
        got = backend.to_numpy(got)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * scale * N)

    x, X, Xb = rng.standard_normal(N), rng.standard_normal((N, k)), rng.standard_normal((2, N, k))
    check(Kb @ backend.asarray(x), D @ x)
    check(Kb @ backend.asarray(X), D @ X)
    check(Kb @ backend.asarray(Xb), D @ Xb)
    y, Y, Yb = rng.standard_normal(M), rng.standard_normal((k, M)), rng.standard_normal((2, k, M))
    check(Kb.rmatmat(backend.asarray(y)), y @ D)
    check(Kb.rmatmat(backend.asarray(Y)), Y @ D)
    check(Kb.rmatmat(backend.asarray(Yb)), Yb @ D)
    if backend.name != "array_api_strict":  # strict arrays do not defer `x @ K`
        check(backend.asarray(Y) @ Kb, Y @ D)
    check(Kb.to_dense(), D)


@with_fixture
@given(K=kronecker_sums(max_side=4, max_dim=16, max_rank=3))
def test_transpose(backend, K):
    Kb = KroneckerSum(backend.asarray(K.A), backend.asarray(K.B))
    T = Kb.T
    assert T.shape == K.shape[::-1] and T.kshape == K.kshape.T
    # R(K) is a GEMM over the rank whose summation order the library chooses: compare
    # with the rounding bound of sums of r products, entry by entry (issue 9, item 12)
    absK = KroneckerSum(np.abs(np.asarray(K.A)), np.abs(np.asarray(K.B))).to_dense()
    tol = rounding_tolerance(np.float64, K.rank, absK)
    assert np.all(np.abs(backend.to_numpy(T.to_dense()) - K.to_dense().T) <= tol.T)
    assert np.all(np.abs(backend.to_numpy(T.T.to_dense()) - K.to_dense()) <= tol)
    # the factors themselves are exact copies (transposes move entries)
    np.testing.assert_array_equal(backend.to_numpy(T.A), np.swapaxes(np.asarray(K.A), 1, 2))


@given(K=kronecker_sums(max_side=5, max_dim=25, max_rank=4))
def test_n_params_rank_and_repr(K):
    s = K.kshape
    assert K.n_params == K.rank * (s.m1 * s.n1 + s.m2 * s.n2) == s.n_params(K.rank)
    assert K.n_params == np.asarray(K.A).size + np.asarray(K.B).size
    assert f"rank={K.rank}" in repr(K)
    np.testing.assert_allclose(
        K.rearranged(), rearrange(K.to_dense(), s), rtol=1e-12, atol=1e-12 * max(1, K.n_params)
    )


def test_astype():
    rng = np.random.default_rng(0)
    K = KroneckerSum(rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 2)))
    K32 = K.astype(np.float32)
    assert K32.dtype == np.float32 and K32.A.dtype == np.float32 and K32.B.dtype == np.float32
    assert_reconstructs(K32, K.to_dense(), rtol=1e-6)


# --------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------
@given(M=st.integers(1, 64), N=st.integers(1, 64), rank=st.integers(1, 4), trivial=st.booleans())
def test_factor_shapes_lists_every_valid_shape(M, N, rank, trivial):
    got = factor_shapes(M, N, rank, trivial=trivial)
    expected = set()
    for m1, n1 in itertools.product(range(1, M + 1), range(1, N + 1)):
        if M % m1 or N % n1:
            continue
        m2, n2 = M // m1, N // n1
        if not trivial and ((m1, n1) == (1, 1) or (m2, n2) == (1, 1)):
            continue
        if min(m1 * n1, m2 * n2) < rank:
            continue
        expected.add(((m1, n1), (m2, n2)))
    assert {(f.shape.a, f.shape.b) for f in got} == expected
    assert len(got) == len(expected)  # no duplicates
    for f in got:
        assert f.shape.matrix_shape == (M, N)
        assert f.n_params == rank * (f.shape.m1 * f.shape.n1 + f.shape.m2 * f.shape.n2)
        assert f.max_rank == min(f.shape.m1 * f.shape.n1, f.shape.m2 * f.shape.n2)
    keys = [(f.n_params, f.shape.a) for f in got]
    assert keys == sorted(keys)


def test_factor_shapes_of_gpt2_mlp_include_the_published_plan():
    shapes_ = {(f.shape.a, f.shape.b): f for f in factor_shapes(768, 3072, rank=4)}
    f = shapes_[((384, 768), (2, 4))]
    assert f.n_params == 4 * (384 * 768 + 8) == 1_179_680
    assert f.max_rank == 8


@given(s=shapes)
def test_kronecker_shape_properties(s):
    assert s.matrix_shape == (s.m1 * s.m2, s.n1 * s.n2)
    assert s.rearranged_shape == (s.m1 * s.n1, s.m2 * s.n2)
    assert s.max_rank == min(s.rearranged_shape)
    assert s.T.T == s
    assert KroneckerShape.of((s.a, s.b)) == s
    assert KroneckerShape.from_matrix(s.matrix_shape, s.a) == s
    (a, b) = s
    assert (a, b) == (s.a, s.b)


def test_kron_svd_keeps_numpy_factors_contiguous():
    W = np.random.default_rng(0).standard_normal((12, 20))
    for method in METHODS:
        K = kron_svd(W, ((3, 4), (4, 5)), 2, method=method, rng=0)
        assert K.A.flags.c_contiguous and K.B.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_kron_svd_low_precision_input(dtype):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((2, 5))
    W = np.kron(A, B).astype(dtype)
    K = kron_svd(W, ((3, 4), (2, 5)), 1)
    assert K.dtype == dtype
    assert_reconstructs(K, W, rtol=5e-3 if dtype == np.float16 else 1e-5)
    assert as_numpy(kron_singular_values(W, ((3, 4), (2, 5)))).shape == (10,)


def test_kron_svd_rank_deficient_input_gives_zero_terms():
    W = np.kron(np.ones((2, 2)), np.eye(3))
    for method in METHODS:
        K = kron_svd(W, ((2, 2), (3, 3)), 3, method=method, rng=0)
        assert np.all(np.isfinite(K.A)) and np.all(np.isfinite(K.B))
        assert_reconstructs(K, W, rtol=1e-12)


def test_kron_svd_huge_finite_entries_fall_back_from_the_gram_route():
    rng = np.random.default_rng(0)
    s = KroneckerShape((4, 3), (2, 2))
    W = rng.standard_normal(s.matrix_shape)
    scale = 1e200  # squares overflow float64: the Gram route cannot represent them
    ref = kron_svd(W, s, 2, method="full")
    for kernel in ("numpy", "numba", "array_api"):
        K = kron_svd(W * scale, s, 2, method="gram", kernel=kernel)
        np.testing.assert_allclose(np.asarray(K.to_dense()) / scale, ref.to_dense(), atol=1e-10)
