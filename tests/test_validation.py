"""User errors raise ValueError/TypeError naming the argument and the rule."""

from __future__ import annotations

import numpy as np
import pytest

from tqla import KroneckerShape, KroneckerSum, factor_shapes, kron_svd, rearrange, unrearrange
from tqla.kron import kron_singular_values

S = ((3, 4), (2, 5))  # W is 6×20, R(W) is 12×10, rank bound 10
RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 20))
METHODS = ["auto", "gram", "full", "randomized"]


# --------------------------------------------------------------------------------------
# W itself
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.ones(120), np.ones((2, 3, 20))])
def test_w_must_be_2d(bad):
    with pytest.raises(ValueError, match=r"W must be 2-D, got \d-D array of shape"):
        kron_svd(bad, S)
    with pytest.raises(ValueError, match=r"W must be a 2-D array, got shape"):
        rearrange(bad, S)
    with pytest.raises(ValueError, match=r"X must be a 2-D array, got shape"):
        unrearrange(bad, S)


def test_w_must_not_be_empty():
    with pytest.raises(ValueError, match=r"W must not be empty, got shape \(0, 20\)"):
        kron_svd(np.ones((0, 20)), S)


@pytest.mark.parametrize("bad", [[[1.0, 2.0], [3.0, 4.0]], ((1.0, 2.0), (3.0, 4.0)), 3.0])
def test_lists_and_scalars_are_not_arrays(bad):
    with pytest.raises(TypeError, match=r"W must be an array .*wrap it with numpy.asarray"):
        kron_svd(bad, ((1, 1), (2, 2)))
    with pytest.raises(TypeError, match=r"W must be an array"):
        rearrange(bad, ((1, 1), (2, 2)))
    with pytest.raises(TypeError, match=r"X must be an array"):
        unrearrange(bad, ((1, 1), (2, 2)))
    with pytest.raises(TypeError, match=r"W must be an array"):
        kron_singular_values(bad, ((1, 1), (2, 2)))


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_, np.complex128, np.complex64])
def test_w_must_be_real_floating(dtype):
    with pytest.raises(
        TypeError, match=r"W must have a real floating dtype .*got " + np.dtype(dtype).name
    ):
        kron_svd(np.ones((6, 20), dtype=dtype), S)
    with pytest.raises(TypeError, match=r"W must have a real floating dtype"):
        kron_singular_values(np.ones((6, 20), dtype=dtype), S)


def test_torch_integer_and_complex_tensors_are_rejected():
    torch = pytest.importorskip("torch")
    for dtype in (torch.int64, torch.complex64, torch.bool):
        with pytest.raises(TypeError, match=r"W must have a real floating dtype"):
            kron_svd(torch.ones(6, 20, dtype=dtype), S)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kernel", ["auto", "numpy", "numba", "array_api"])
def test_w_must_be_finite(bad, method, kernel):
    Wb = W.copy()
    Wb[2, 7] = bad
    with pytest.raises(ValueError, match=r"W must be finite, but it holds NaN or infinity"):
        kron_svd(Wb, S, 2, method=method, kernel=kernel)


def test_w_must_be_finite_on_torch():
    torch = pytest.importorskip("torch")
    Wt = torch.from_numpy(W.copy())
    Wt[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"W must be finite"):
        kron_svd(Wt, S, 2)


def test_shape_must_divide_w():
    with pytest.raises(
        ValueError, match=r"W of shape \(6, 20\) does not match the Kronecker shape"
    ):
        kron_svd(W, ((3, 4), (2, 4)))
    with pytest.raises(ValueError, match=r"needs \(3·2, 4·4\) = \(6, 16\)"):
        rearrange(W, ((3, 4), (2, 4)))
    with pytest.raises(
        ValueError, match=r"X of shape \(6, 20\) does not match the rearranged shape"
    ):
        unrearrange(W, S)
    with pytest.raises(
        ValueError, match=r"factor A of shape \(4, 3\) must divide the matrix shape"
    ):
        KroneckerShape.from_matrix((6, 20), (4, 3))


@pytest.mark.parametrize(
    "bad, rule",
    [
        ("3x4", r"shape must be a KroneckerShape or \(\(m1, n1\), \(m2, n2\)\)"),
        ((3, 4), r"shape must be a KroneckerShape"),
        (((3, 4), (2,)), r"shape must be a KroneckerShape"),
        (((0, 4), (2, 5)), r"KroneckerShape.a must hold positive integers, got \(0, 4\)"),
        (((3, 4), (2, -5)), r"KroneckerShape.b must hold positive integers"),
        (((3, 4.0), (2, 5)), r"KroneckerShape.a must hold positive integers"),
        (((True, 4), (2, 5)), r"KroneckerShape.a must hold positive integers"),
    ],
)
def test_shape_spec(bad, rule):
    with pytest.raises(ValueError, match=rule):
        kron_svd(W, bad)


@pytest.mark.parametrize("rank", [0, -1, 11, 100])
def test_rank_must_be_within_the_kronecker_bound(rank):
    with pytest.raises(
        ValueError,
        match=(
            r"rank must satisfy 1 <= rank <= min\(m1·n1, m2·n2\) = min\(12, 10\) = 10 "
            rf".*got {rank}"
        ),
    ):
        kron_svd(W, S, rank)


@pytest.mark.parametrize("rank", [1.0, 2.5, "2", True, None])
def test_rank_must_be_an_integer(rank):
    with pytest.raises(TypeError, match=r"rank must be an integer"):
        kron_svd(W, S, rank)


def test_rank_accepts_numpy_integers():
    assert kron_svd(W, S, np.int64(2)).rank == 2


def test_method_kernel_and_rng():
    with pytest.raises(
        ValueError, match=r"method must be one of 'auto', 'gram', 'full', 'randomized', got 'qr'"
    ):
        kron_svd(W, S, method="qr")
    with pytest.raises(ValueError, match=r"kernel must be 'auto' or one of .*got 'cuda'"):
        kron_svd(W, S, method="gram", kernel="cuda")
    with pytest.raises(
        TypeError, match=r"rng must be None, an int seed or a numpy.random.Generator"
    ):
        kron_svd(W, S, method="randomized", rng="seed")


# --------------------------------------------------------------------------------------
# KroneckerSum
# --------------------------------------------------------------------------------------
def test_kronecker_sum_factors():
    A, B = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 2, 5))
    with pytest.raises(
        ValueError, match=r"A must be a 3-D array of shape \(rank, rows, cols\), got \(3, 4\)"
    ):
        KroneckerSum(A[0], B)
    with pytest.raises(ValueError, match=r"B must be a 3-D array"):
        KroneckerSum(A, [[1.0]])
    with pytest.raises(
        ValueError, match=r"same number of terms \(rank\): A.shape\[0\] = 2, B.shape\[0\] = 1"
    ):
        KroneckerSum(A, B[:1])
    with pytest.raises(TypeError, match=r"A and B must share a dtype"):
        KroneckerSum(A, B.astype(np.float32))
    with pytest.raises(TypeError, match=r"A must have a real floating dtype"):
        KroneckerSum(A.astype(np.int64), B)
    with pytest.raises(TypeError, match=r"B must have a real floating dtype"):
        KroneckerSum(A, B.astype(np.complex128))


def test_kronecker_sum_products():
    K = KroneckerSum(RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 2, 5)))  # 6×20
    with pytest.raises(
        ValueError, match=r"K @ X needs X with 20 rows \(K has shape \(6, 20\)\), got shape \(19,\)"
    ):
        K @ np.ones(19)
    with pytest.raises(ValueError, match=r"K @ X needs X with 20 rows"):
        K @ np.ones((6, 20))
    with pytest.raises(ValueError, match=r"X @ K needs X with 6 columns"):
        K.rmatmat(np.ones((3, 5)))
    with pytest.raises(TypeError, match=r"X must have the factors' dtype float64, got float32"):
        K @ np.ones(20, dtype=np.float32)
    with pytest.raises(TypeError, match=r"X must be an array of the factors' library, got list"):
        K @ ([1.0] * 20)
    with pytest.raises(TypeError, match=r"X must be an array of the factors' library"):
        K.rmatmat([1.0] * 6)


# --------------------------------------------------------------------------------------
# factor_shapes
# --------------------------------------------------------------------------------------
def test_factor_shapes_arguments():
    with pytest.raises(ValueError, match=r"M must be >= 1, got 0"):
        factor_shapes(0, 4)
    with pytest.raises(TypeError, match=r"N must be an integer, got float 4.5"):
        factor_shapes(4, 4.5)
    with pytest.raises(ValueError, match=r"rank must be >= 1, got 0"):
        factor_shapes(4, 4, 0)
    assert factor_shapes(1, 1) == []
    assert [f.shape for f in factor_shapes(1, 1, trivial=True)] == [KroneckerShape((1, 1), (1, 1))]


# --------------------------------------------------------------------------------------
# Issue 9, item 11: meta tensors and decompositions that would not fit in memory
# --------------------------------------------------------------------------------------
def test_meta_tensors_are_refused_with_a_clear_error():
    torch = pytest.importorskip("torch")
    from tqla import permuted_kron, truncated_svd

    Wm = torch.empty(6, 20, device="meta")
    for call in (
        lambda: kron_svd(Wm, S),
        lambda: permuted_kron(Wm, S, 1),
        lambda: truncated_svd(Wm, 2),
    ):
        with pytest.raises(ValueError, match="W is a tensor on the 'meta' device|X is a tensor"):
            call()


def test_kron_svd_refuses_a_decomposition_that_cannot_fit_before_allocating():
    # 40e9 entries of float32 that take no memory (a broadcast view): the rearranged copy
    # alone would need 160 GB; the refusal must come before any allocation.
    W = np.broadcast_to(np.float32(1.0), (200_000, 200_000))
    s = ((1000, 1000), (200, 200))
    for method in ("full", "randomized", "gram"):
        with pytest.raises(MemoryError, match=r"R\(W\) is 1000000×40000 .*over the memory"):
            kron_svd(W, s, 1, method=method)
    with pytest.raises(MemoryError, match=r"over max_bytes \(1.0 KiB\)"):
        kron_svd(RNG.standard_normal((6, 20)), S, 1, method="full", max_bytes=1024)


def test_kron_svd_memory_default_is_the_available_memory(monkeypatch):
    import tqla.kron as kron

    monkeypatch.setattr(kron, "available_memory", lambda: 5_000)
    Wb = RNG.standard_normal((60, 200))
    with pytest.raises(MemoryError, match="over the memory available now"):
        kron_svd(Wb, ((30, 40), (2, 5)), 1, method="full")
    K = kron_svd(Wb, ((30, 40), (2, 5)), 1, method="full", max_bytes=10**7)  # explicit wins
    assert K.rank == 1


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (0, ValueError), (2.5, ValueError),
                                      ("big", TypeError), (True, TypeError)])  # fmt: skip
def test_kron_svd_max_bytes_is_validated(bad, exc):
    with pytest.raises(exc, match="max_bytes must be None or a positive"):
        kron_svd(W, S, 1, max_bytes=bad)
