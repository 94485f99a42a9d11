"""tqla.testing: the strategies generate what they promise, the assertions fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tqla.testing as tt
from tqla import KroneckerShape, KroneckerSum, kron_svd
from tqla.testing import (
    as_numpy,
    assert_kron_close,
    assert_kron_optimal,
    assert_nonincreasing,
    assert_reconstructs,
    assert_same_array_type,
    assert_same_result_across_backends,
    assert_valid_permutation,
    kronecker_shapes,
    kronecker_structured,
    kronecker_sums,
    make_strategies_namespace,
    matrices,
    permutations,
)

with_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------
@given(s=kronecker_shapes(max_side=4, max_dim=10, min_side=2))
def test_kronecker_shapes_respect_bounds(s):
    assert isinstance(s, KroneckerShape)
    assert all(2 <= v <= 4 for v in (*s.a, *s.b))
    assert s.matrix_shape[0] <= 10 and s.matrix_shape[1] <= 10


@given(s=kronecker_shapes(nontrivial=True))
def test_kronecker_shapes_nontrivial(s):
    assert s.a != (1, 1) and s.b != (1, 1)


@given(W=matrices(dtype="float32", bound=2.0, max_dim=6))
def test_matrices_are_bounded_finite_and_typed(W):
    assert isinstance(W, np.ndarray) and W.dtype == np.float32 and W.ndim == 2
    assert 1 <= W.shape[0] <= 6 and 1 <= W.shape[1] <= 6
    assert np.all(np.isfinite(W)) and np.all(np.abs(W) <= 2.0)


@given(W=matrices(((2, 3), (4, 1)), gaussian=True))
def test_matrices_of_a_kronecker_shape(W):
    assert W.shape == (8, 3) and W.dtype == np.float64


@given(K=kronecker_sums(((2, 3), (3, 2)), rank=st.integers(2, 4), dtype="float32"))
def test_kronecker_sums_shape_rank_dtype(K):
    assert isinstance(K, KroneckerSum)
    assert K.kshape == KroneckerShape((2, 3), (3, 2)) and 2 <= K.rank <= 4
    assert K.dtype == np.float32


@given(p=permutations(st.integers(0, 30)))
def test_permutations_are_permutations(p):
    assert p.dtype == np.int64
    assert_valid_permutation(p)


@given(planted=kronecker_structured(rank=2, permuted=True))
def test_kronecker_structured_matches_its_truth(planted):
    W, K, rp, cp = planted.W, planted.K, planted.row_perm, planted.col_perm
    assert_valid_permutation(rp, W.shape[0])
    assert_valid_permutation(cp, W.shape[1])
    np.testing.assert_allclose(W, K.to_dense()[rp][:, cp], rtol=1e-12, atol=1e-12)
    assert planted.noise == 0.0


@given(planted=kronecker_structured(rank=1, noise=0.1))
def test_kronecker_structured_noise_level(planted):
    W, K = planted.W, planted.K
    D = K.to_dense()
    assert np.linalg.norm(W - D) == pytest.approx(planted.noise, rel=1e-9, abs=1e-12)
    assert planted.noise == pytest.approx(0.1 * np.linalg.norm(D), rel=1e-9, abs=1e-12)


@with_fixture
@given(data=st.data())
def test_namespace_generates_arrays_of_the_backend(backend, data):
    tst = make_strategies_namespace(backend.xp, backend.device)
    W = data.draw(tst.matrices(max_dim=5))
    K = data.draw(tst.kronecker_sums(max_side=3, max_rank=2))
    P = data.draw(tst.kronecker_structured(max_side=3, max_rank=2, permuted=True))
    p = data.draw(tst.permutations(5))
    like = backend.asarray(np.zeros((1, 1)))
    for out in (W, K, P.W, P.K):
        assert_same_array_type(out, like)
    assert_valid_permutation(p, 5)
    assert tst.xp is backend.xp
    assert isinstance(data.draw(tst.kronecker_shapes()), KroneckerShape)


def test_strategy_arguments_are_checked():
    with pytest.raises(ValueError, match=r"need 1 <= min_side <= max_side"):
        kronecker_shapes(min_side=3, max_side=2)
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, got 'int32'"):
        matrices(dtype="int32")
    with pytest.raises(ValueError, match=r"NumPy arrays live on the CPU"):
        tt.convert(np.ones(2), np, "cuda")


def test_lazy_attributes():
    assert tt.strategies.kronecker_sums is kronecker_sums
    with pytest.raises(AttributeError, match=r"has no attribute 'nope'"):
        tt.nope  # noqa: B018


# --------------------------------------------------------------------------------------
# Assertions
# --------------------------------------------------------------------------------------
RNG = np.random.default_rng(0)
A, B = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 2, 5))
K = KroneckerSum(A, B)
D = K.to_dense()


def test_assert_reconstructs():
    assert_reconstructs(K, D)
    assert_reconstructs(D, D)
    with pytest.raises(
        AssertionError,
        match=r"K does not reconstruct W: ‖K − W‖_F = 0\.1 .*largest difference at \(1, 2\)",
    ):
        W = D.copy()
        W[1, 2] += 0.1
        assert_reconstructs(K, W)
    with pytest.raises(AssertionError, match=r"K has shape \(6, 20\), but W has shape \(20, 6\)"):
        assert_reconstructs(K, D.T)


def test_assert_nonincreasing():
    assert_nonincreasing([3.0, 2.0, 2.0, 1.0])
    assert_nonincreasing([1.0, 1.0 + 1e-14], rtol=1e-12)
    with pytest.raises(
        AssertionError,
        match=r"errors increase at step 1 -> 2: 2\.0 -> 2\.5 .*1 increase\(s\) in 4 values",
    ):
        assert_nonincreasing([3.0, 2.0, 2.5, 1.0])
    with pytest.raises(AssertionError, match=r"errors\[1\] = nan is not finite"):
        assert_nonincreasing([3.0, np.nan])


def test_assert_valid_permutation():
    assert_valid_permutation(np.array([2, 0, 1]), 3)
    assert_valid_permutation([], 0)
    with pytest.raises(
        AssertionError,
        match=r"p is not a permutation of range\(4\); repeated: \[1\]; missing: \[3\]",
    ):
        assert_valid_permutation(np.array([0, 1, 1, 2]))
    with pytest.raises(AssertionError, match=r"values outside 0..2: \[5\]"):
        assert_valid_permutation(np.array([0, 5, 1]))
    with pytest.raises(AssertionError, match=r"must have length 4, got 3"):
        assert_valid_permutation(np.array([0, 1, 2]), 4)
    with pytest.raises(AssertionError, match=r"must hold integers, got dtype float64"):
        assert_valid_permutation(np.array([0.0, 1.0]))
    with pytest.raises(AssertionError, match=r"sigma must be 1-D"):
        assert_valid_permutation(np.zeros((2, 2), dtype=int), name="sigma")


def test_assert_kron_optimal():
    W = RNG.standard_normal((6, 20))
    s = ((3, 4), (2, 5))
    assert_kron_optimal(W, s, 2, kron_svd(W, s, 2))
    worse = kron_svd(W, s, 1)
    with pytest.raises(
        AssertionError,
        match=r"not a best rank-2 Kronecker approximation: ‖W − K‖²_F = .* but the tail",
    ):
        assert_kron_optimal(W, s, 2, worse)
    with pytest.raises(AssertionError, match=r"K has 2 terms, more than rank=1"):
        assert_kron_optimal(W, s, 1, kron_svd(W, s, 2))
    with pytest.raises(AssertionError, match=r"K has factor shapes"):
        assert_kron_optimal(W, ((3, 5), (2, 4)), 1, worse)


def test_assert_kron_close():
    assert_kron_close(K, KroneckerSum(A.copy(), B.copy()))
    flipped = KroneckerSum(
        A * np.array([1, -1])[:, None, None], B * np.array([1, -1])[:, None, None]
    )
    assert_kron_close(flipped, K, compare="dense", rtol=1e-12)
    with pytest.raises(
        AssertionError, match=r"factor A\[1\] differs .*\(it matches with the opposite sign\)"
    ):
        assert_kron_close(flipped, K)
    with pytest.raises(AssertionError, match=r"ranks differ: 1 vs reference 2"):
        assert_kron_close(KroneckerSum(A[:1], B[:1]), K)
    with pytest.raises(ValueError, match=r"compare must be 'factors' or 'dense'"):
        assert_kron_close(K, K, compare="norm")


def test_assert_same_array_type():
    torch = pytest.importorskip("torch")
    assert_same_array_type(K, D)
    with pytest.raises(AssertionError, match=r"output 0 has dtype float32, expected float64"):
        assert_same_array_type(K.astype(np.float32), D)
    with pytest.raises(AssertionError, match=r"output 0 is a Tensor, expected an array of numpy"):
        assert_same_array_type(torch.ones(2), D)
    assert_same_array_type((torch.ones(2), torch.zeros(3)), torch.ones(1))


def test_assert_same_result_across_backends():
    torch = pytest.importorskip("torch")
    import array_api_strict as xs

    W = RNG.standard_normal((6, 20))
    s = ((3, 4), (2, 5))
    assert_same_result_across_backends(
        lambda w: kron_svd(w, s, 2), [W], [(torch, "cpu"), (xs, None)], rtol=1e-8
    )

    def wrong(w):
        out = kron_svd(w, s, 2)
        return out if isinstance(w, np.ndarray) else KroneckerSum(out.A * 2, out.B)

    with pytest.raises(
        AssertionError, match=r"torch on cpu differs from NumPy: factor A\[0\] differs"
    ):
        assert_same_result_across_backends(wrong, [W], [(torch, "cpu")])


def test_as_numpy():
    torch = pytest.importorskip("torch")
    t = torch.ones(2, 2, requires_grad=True)
    assert as_numpy(t).dtype == np.float64
    np.testing.assert_array_equal(as_numpy(K), D)
