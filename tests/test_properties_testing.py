"""tqla.testing stated whole: each assertion passes on what it should, fails with its whole
documented message on what it should not (tolerances exactly as defined), and each strategy
draws what it promises (shapes, exact ranks, valid permutations, dtypes, libraries).

Strategies under test are built inside the tests (``data.draw``), never in ``@given(...)``
arguments: those are evaluated once at collection, before a mutation tool switches a
mutant on."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from tqla import KroneckerShape, KroneckerSum, kron_svd, rearrange
from tqla.testing import assertions as ta
from tqla.testing import strategies as ts

torch = pytest.importorskip("torch")
xs = pytest.importorskip("array_api_strict")

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
EPS16 = float(np.finfo(np.float16).eps)


def _raises(exc_type, message, fn, *args, **kwargs):
    """fn(*args, **kwargs) raises exc_type with exactly ``message``."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message
    return info.value


def _g(x: float) -> str:
    return f"{x:.6g}"


# --------------------------------------------------------------------------------------
# as_numpy, rounding_tolerance, kron_error
# --------------------------------------------------------------------------------------
def test_as_numpy_of_every_input_kind_and_dtype():
    A = np.arange(6.0).reshape(1, 2, 3)
    B = np.ones((1, 2, 1))
    K = KroneckerSum(A, B)
    for dtype in (np.float64, np.float32):
        out = ta.as_numpy(K, dtype)
        assert isinstance(out, np.ndarray) and out.dtype == dtype
        np.testing.assert_array_equal(out, np.kron(A[0], B[0]).astype(dtype))
        for x in ([1, 2], (1, 2), 3, 2.5, np.int32(4), np.arange(3)):
            got = ta.as_numpy(x, dtype)
            assert isinstance(got, np.ndarray) and got.dtype == dtype
            np.testing.assert_array_equal(got, np.asarray(x, dtype=dtype))
        t = torch.arange(4, dtype=torch.float64)
        got = ta.as_numpy(t, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np.arange(4, dtype=dtype))
        got = ta.as_numpy(xs.asarray(np.arange(3.0)), dtype)
        assert isinstance(got, np.ndarray) and got.dtype == dtype
        np.testing.assert_array_equal(got, np.arange(3, dtype=dtype))
    assert ta.as_numpy([1, 2]).dtype == np.float64  # the default dtype
    assert ta.as_numpy(torch.ones(2, dtype=torch.float32)).dtype == np.float64
    # an array already of the dtype is not copied (astype(copy=False))
    t = torch.arange(4, dtype=torch.float64)
    assert np.shares_memory(ta.as_numpy(t), t.numpy())
    g = torch.ones(2, requires_grad=True)
    assert ta.as_numpy(g).dtype == np.float64


@given(
    n=st.integers(-3, 50),
    mag=st.floats(0.0, 1e6, allow_nan=False),
    which=st.sampled_from(
        [
            (np.float64, EPS64),
            ("float64", EPS64),
            (np.float32, EPS32),
            ("float32", EPS32),
            (np.float16, EPS16),
        ]
    ),
)
def test_rounding_tolerance_is_two_n_eps_magnitude(n, mag, which):
    dtype, eps = which
    got = ta.rounding_tolerance(dtype, n, mag)
    assert float(got) == 2.0 * max(n, 1) * eps * mag
    assert np.asarray(got).dtype == np.float64


def test_rounding_tolerance_of_every_library_dtype_and_array_magnitudes():
    for dtype, eps in (
        (torch.float64, EPS64),
        (torch.float32, EPS32),
        (torch.float16, EPS16),
        (torch.bfloat16, EPS32),  # bfloat16: the float32 eps, callers scale up
        (xs.float32, EPS32),
        (xs.float64, EPS64),
        ("bfloat16", EPS32),
        ("float16", EPS16),
    ):
        assert float(ta.rounding_tolerance(dtype, 3, 2.0)) == 12.0 * eps
    assert float(ta.rounding_tolerance(np.float64, 4)) == 8 * EPS64  # magnitude default 1
    assert float(ta.rounding_tolerance(np.float64, 0)) == 2 * EPS64  # at least one term
    mag = np.array([[1, 2], [3, 4]], dtype=np.float32)
    got = ta.rounding_tolerance(np.float32, 5, mag)
    assert got.dtype == np.float64 and got.shape == (2, 2)
    np.testing.assert_array_equal(got, 10 * EPS32 * mag.astype(np.float64))


def test_kron_error_is_the_float64_frobenius_distance():
    W = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    K = KroneckerSum(np.ones((1, 1, 1)), np.array([[[1.0, 2.0], [3.0, 2.0]]]))
    assert ta.kron_error(W, K) == 2.0
    assert ta.kron_error(torch.tensor(W), np.zeros((2, 2))) == float(np.sqrt(30.0))
    assert isinstance(ta.kron_error(W, W), float)


# --------------------------------------------------------------------------------------
# assert_reconstructs
# --------------------------------------------------------------------------------------
def _reconstruct_message(D, W, rtol, atol, name="K"):
    Dn, Wn = np.asarray(D, np.float64), np.asarray(W, np.float64)
    err, norm = float(np.linalg.norm(Dn - Wn)), float(np.linalg.norm(Wn))
    tol = atol + rtol * norm
    worst = np.unravel_index(int(np.argmax(np.abs(Dn - Wn))), Dn.shape)
    rel = err / norm if norm else np.inf
    return (
        f"{name} does not reconstruct W: ‖{name} − W‖_F = {_g(err)} (relative {_g(rel)}) > "
        f"atol + rtol·‖W‖_F = {_g(atol)} + {_g(rtol)}·{_g(norm)} = {_g(tol)}; largest "
        f"difference at {tuple(int(i) for i in worst)}: {name} = {_g(Dn[worst])}, "
        f"W = {_g(Wn[worst])}"
    )


def test_assert_reconstructs_tolerance_and_whole_messages():
    W = np.zeros((2, 3))
    W[0, 0] = 4.0  # ‖W‖ = 4
    ta.assert_reconstructs(W, W, rtol=0.0)  # err = 0 <= tol = 0: equality passes
    near = W.copy()
    near[1, 2] = 4.0 * 0.5e-7  # relative 0.5e-7 passes the default rtol 1e-7
    ta.assert_reconstructs(near, W)
    ta.assert_reconstructs(torch.tensor(near), xs.asarray(W))
    far = W.copy()
    far[1, 2] = 4.0 * 2e-7
    _raises(AssertionError, _reconstruct_message(far, W, 1e-7, 0.0), ta.assert_reconstructs, far, W)
    ta.assert_reconstructs(far, W, atol=4.0 * 2e-7)  # atol is added
    ta.assert_reconstructs(far, W, rtol=2e-7)
    _raises(
        AssertionError,
        _reconstruct_message(far, W, 1e-8, 1e-7, name="T"),
        ta.assert_reconstructs,
        far,
        W,
        rtol=1e-8,
        atol=1e-7,
        name="T",
    )
    # a zero W: relative error inf
    Z = np.zeros((2, 2))
    O = np.ones((2, 2))
    _raises(AssertionError, _reconstruct_message(O, Z, 1e-7, 0.0), ta.assert_reconstructs, O, Z)
    assert "(relative inf)" in _reconstruct_message(O, Z, 1e-7, 0.0)
    _raises(
        AssertionError,
        "K has shape (2, 3), but W has shape (3, 2)",
        ta.assert_reconstructs,
        W,
        W.T,
    )
    _raises(
        AssertionError,
        "F has shape (2, 3), but W has shape (3, 2)",
        ta.assert_reconstructs,
        W,
        W.T,
        name="F",
    )


def test_assert_reconstructs_uses_to_dense_of_a_decomposition():
    A, B = np.array([[[1.0, 2.0]]]), np.array([[[3.0], [4.0]]])
    K = KroneckerSum(A, B)
    D = np.kron(A[0], B[0])
    ta.assert_reconstructs(K, D, rtol=0.0)
    bad = D.copy()
    bad[1, 0] += 1.0
    _raises(AssertionError, _reconstruct_message(D, bad, 1e-7, 0.0), ta.assert_reconstructs, K, bad)


# --------------------------------------------------------------------------------------
# assert_nonincreasing
# --------------------------------------------------------------------------------------
def _increase_message(e, i, rtol, atol, count):
    e = np.asarray(e, np.float64).ravel()
    allowed = e[i] + atol + rtol * abs(e[i])
    return (
        f"errors increase at step {i} -> {i + 1}: {float(e[i])!r} -> {float(e[i + 1])!r} "
        f"(+{_g(e[i + 1] - e[i])}, allowed +{_g(allowed - e[i])} with rtol={rtol}, "
        f"atol={atol}); {count} increase(s) in {e.size} values"
    )


def test_assert_nonincreasing_tolerance_and_whole_messages():
    ta.assert_nonincreasing([3.0, 2.0, 2.0, 1.0], rtol=0.0)  # equal steps pass
    ta.assert_nonincreasing([])
    ta.assert_nonincreasing([5.0])
    ok = [1.0, 1.0 + 0.5e-10]  # default rtol 1e-10 allows it
    ta.assert_nonincreasing(ok)
    ta.assert_nonincreasing(torch.tensor(ok, dtype=torch.float64))
    bad = [1.0, 1.0 + 3e-10, 0.5, 0.6]
    _raises(
        AssertionError,
        _increase_message(bad, 0, 1e-10, 0.0, 2),
        ta.assert_nonincreasing,
        bad,
    )
    ta.assert_nonincreasing([1.0, 1.0 + 3e-10], atol=4e-10)
    ta.assert_nonincreasing([1.0, 1.0 + 3e-10], rtol=4e-10)
    _raises(
        AssertionError,
        _increase_message([1.0, 1.0 + 3e-10], 0, 1e-10, 1e-10, 1),
        ta.assert_nonincreasing,
        [1.0, 1.0 + 3e-10],
        atol=1e-10,
    )
    # the relative allowance uses |e|: negative values (log-errors) are allowed too
    ta.assert_nonincreasing([-1.0, -1.0 + 0.5e-10])
    _raises(
        AssertionError,
        _increase_message([-2.0, -1.0], 0, 1e-10, 0.0, 1),
        ta.assert_nonincreasing,
        [-2.0, -1.0],
    )
    # 2-D input is flattened
    _raises(
        AssertionError,
        _increase_message([3.0, 2.0, 2.5, 1.0], 1, 1e-10, 0.0, 1),
        ta.assert_nonincreasing,
        np.array([[3.0, 2.0], [2.5, 1.0]]),
    )


def test_assert_nonincreasing_names_the_first_nonfinite_value():
    _raises(
        AssertionError,
        "errors[1] = nan is not finite; errors = [3.0, nan, inf]",
        ta.assert_nonincreasing,
        [3.0, np.nan, np.inf],
    )
    _raises(
        AssertionError,
        "errors[0] = inf is not finite; errors = [inf, 1.0]",
        ta.assert_nonincreasing,
        [np.inf, 1.0],
    )
    _raises(
        AssertionError,
        "errors[2] = -inf is not finite; errors = [1.0, 0.0, -inf]",
        ta.assert_nonincreasing,
        [1.0, 0.0, -np.inf],
    )


@given(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=8))
def test_assert_nonincreasing_accepts_sorted_and_rejects_any_increase(values):
    down = sorted(values, reverse=True)
    ta.assert_nonincreasing(down, rtol=0.0)
    up = np.flatnonzero(np.diff(values) > 0)
    if up.size:
        i = int(up[0])
        _raises(
            AssertionError,
            _increase_message(values, i, 0.0, 0.0, up.size),
            ta.assert_nonincreasing,
            values,
            rtol=0.0,
        )
    else:
        ta.assert_nonincreasing(values, rtol=0.0)


# --------------------------------------------------------------------------------------
# assert_valid_permutation
# --------------------------------------------------------------------------------------
@given(ts.permutations(st.integers(0, 12)))
def test_assert_valid_permutation_accepts_every_permutation(p):
    ta.assert_valid_permutation(p)
    ta.assert_valid_permutation(p, len(p))
    ta.assert_valid_permutation(p.tolist(), len(p))
    ta.assert_valid_permutation(tuple(p.tolist()))
    ta.assert_valid_permutation(torch.from_numpy(p), len(p))
    ta.assert_valid_permutation(p.astype(np.int32), name="q")


def test_assert_valid_permutation_whole_messages():
    ta.assert_valid_permutation(np.array([], dtype=np.float64), 0)  # empty: any dtype
    ta.assert_valid_permutation([], 0)
    ta.assert_valid_permutation(np.array([0]))
    ta.assert_valid_permutation([1, 0])
    _raises(
        AssertionError,
        "p is not a permutation of range(4); repeated: [1]; missing: [3]",
        ta.assert_valid_permutation,
        np.array([0, 1, 1, 2]),
    )
    _raises(
        AssertionError,
        "q is not a permutation of range(3); values outside 0..2: [5, -1]; missing: [1, 2]",
        ta.assert_valid_permutation,
        [0, 5, -1],
        name="q",
    )
    _raises(
        AssertionError,
        "p is not a permutation of range(3); values outside 0..2: [3]; repeated: [0]; missing: "
        "[1, 2]",
        ta.assert_valid_permutation,
        (0, 0, 3),
    )
    # only the first 10 of each are listed
    many = np.array([0] * 12 + list(range(12, 24)))
    _raises(
        AssertionError,
        "p is not a permutation of range(24); repeated: [0]; missing: " + str(list(range(1, 11))),
        ta.assert_valid_permutation,
        many,
    )
    out = np.array([-(k + 1) for k in range(12)])
    _raises(
        AssertionError,
        "p is not a permutation of range(12); values outside 0..11: "
        + str([-(k + 1) for k in range(10)])
        + "; missing: "
        + str(list(range(10))),
        ta.assert_valid_permutation,
        out,
    )
    rep = np.array(list(range(12)) * 2)
    _raises(
        AssertionError,
        "p is not a permutation of range(24); repeated: "
        + str(list(range(10)))
        + "; missing: "
        + str(list(range(12, 22))),
        ta.assert_valid_permutation,
        rep,
    )
    _raises(
        AssertionError, "p must have length 4, got 3", ta.assert_valid_permutation, [0, 1, 2], 4
    )
    _raises(
        AssertionError,
        "r must have length 2, got 3",
        ta.assert_valid_permutation,
        torch.tensor([0, 1, 2]),
        2,
        name="r",
    )
    _raises(
        AssertionError,
        "p must hold integers, got dtype float64",
        ta.assert_valid_permutation,
        np.array([0.0, 1.0]),
    )
    _raises(
        AssertionError,
        "p must hold integers, got dtype float32",
        ta.assert_valid_permutation,
        torch.tensor([1.0, 0.0]),
    )
    _raises(
        AssertionError,
        "sigma must be 1-D, got shape (2, 2)",
        ta.assert_valid_permutation,
        np.zeros((2, 2), dtype=int),
        name="sigma",
    )
    _raises(
        AssertionError,
        "p must be 1-D, got shape (1, 2)",
        ta.assert_valid_permutation,
        [[0, 1]],
    )


# --------------------------------------------------------------------------------------
# assert_kron_optimal
# --------------------------------------------------------------------------------------
S_OPT = KroneckerShape((2, 3), (2, 2))


def _planted(seed=0, rank=2):
    rng = np.random.default_rng(seed)
    return KroneckerSum(rng.standard_normal((rank, 2, 3)), rng.standard_normal((rank, 2, 2)))


def _optimal_message(W, s, rank, K):
    sigma = np.linalg.svd(np.asarray(rearrange(W, s)), compute_uv=False)
    tail = float(np.sum(sigma[rank:] ** 2))
    err2 = float(np.linalg.norm(W - ta.as_numpy(K))) ** 2
    return err2, tail, sigma


def test_assert_kron_optimal_tolerance_is_rtol_of_the_squared_norm():
    P = _planted()
    W = P.to_dense()
    total = float(np.sum(W**2))
    ta.assert_kron_optimal(W, S_OPT, 2, P)
    ta.assert_kron_optimal(W, ((2, 3), (2, 2)), 3, P)  # fewer terms than rank is allowed
    # K = (1 − t)·W: ‖W − K‖² = t²‖W‖², tail 0 (up to rounding)
    t_ok, t_bad = np.sqrt(0.5e-10), np.sqrt(2e-10)
    ta.assert_kron_optimal(W, S_OPT, 2, KroneckerSum((1 - t_ok) * P.A, P.B))
    with pytest.raises(AssertionError) as info:
        ta.assert_kron_optimal(W, S_OPT, 2, KroneckerSum((1 - t_bad) * P.A, P.B))
    err2, tail, sigma = _optimal_message(W, S_OPT, 2, KroneckerSum((1 - t_bad) * P.A, P.B))
    tol = 1e-10 * total
    assert str(info.value) == (
        f"K is not a best rank-2 Kronecker approximation: ‖W − K‖²_F = {err2:.12g}, "
        f"but the tail Σ_(k>2) σ_k² of R(W)'s singular values is {tail:.12g} "
        f"(difference {_g(err2 - tail)}, tolerance atol + rtol·‖W‖²_F = {_g(tol)}); "
        f"σ = {np.array2string(sigma[:5], precision=6)}"
    )
    bad = KroneckerSum((1 - t_bad) * P.A, P.B)
    ta.assert_kron_optimal(W, S_OPT, 2, bad, rtol=3e-10)
    ta.assert_kron_optimal(W, S_OPT, 2, bad, rtol=0.0, atol=3e-10 * total)
    with pytest.raises(AssertionError, match=r"tolerance atol \+ rtol·‖W‖²_F = "):
        ta.assert_kron_optimal(W, S_OPT, 2, bad, rtol=0.0, atol=1e-10 * total)
    # better than possible (a dense K equal to W at rank 1) fails too: |err² − tail|
    with pytest.raises(AssertionError) as info:
        ta.assert_kron_optimal(W, S_OPT, 1, W)
    err2, tail, sigma = _optimal_message(W, S_OPT, 1, W)
    assert err2 == 0.0 and tail > 0
    assert str(info.value).startswith(
        f"K is not a best rank-1 Kronecker approximation: ‖W − K‖²_F = 0, but the tail "
        f"Σ_(k>1) σ_k² of R(W)'s singular values is {tail:.12g} (difference {_g(-tail)}"
    )
    assert str(info.value).endswith(f"σ = {np.array2string(sigma[:4], precision=6)}")


def test_assert_kron_optimal_of_any_library_and_the_structure_checks():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 6))
    K = kron_svd(W, S_OPT, 2)
    ta.assert_kron_optimal(torch.tensor(W), S_OPT, 2, K)
    ta.assert_kron_optimal(W, S_OPT, 2, K.to_dense())
    ta.assert_kron_optimal(W, S_OPT, 2, torch.tensor(np.asarray(K.to_dense())))
    _raises(
        AssertionError,
        "K has 2 terms, more than rank=1",
        ta.assert_kron_optimal,
        W,
        S_OPT,
        1,
        K,
    )
    other = KroneckerShape((2, 2), (2, 3))
    _raises(
        AssertionError,
        f"K has factor shapes A (2, 3) ⊗ B (2, 2), not {other}",
        ta.assert_kron_optimal,
        W,
        other,
        2,
        K,
    )


# --------------------------------------------------------------------------------------
# assert_same_array_type
# --------------------------------------------------------------------------------------
class _Shaped:
    shape = (2,)
    dtype = np.float64


def test_assert_same_array_type_whole_messages():
    D = np.zeros((2, 2))
    K = KroneckerSum(np.ones((1, 1, 2)), np.ones((1, 2, 1)))
    ta.assert_same_array_type(K, D)
    ta.assert_same_array_type((D, [D, (D,)], "ignored", 3), D)
    ta.assert_same_array_type(K.astype(np.float32), D, dtype=np.float32)
    _raises(
        AssertionError,
        "output 0 has dtype float32, expected float64",
        ta.assert_same_array_type,
        K.astype(np.float32),
        D,
    )
    _raises(
        AssertionError,
        "output 1 has dtype float64, expected float32",
        ta.assert_same_array_type,
        (D.astype(np.float32), D),
        D,
        dtype=np.dtype(np.float32),
    )
    _raises(
        AssertionError,
        "output 0 is a Tensor, expected an array of numpy like the input",
        ta.assert_same_array_type,
        torch.ones(2, dtype=torch.float64),
        D,
    )
    _raises(
        AssertionError,
        "output 2 is a _Shaped, expected an array of torch like the input",
        ta.assert_same_array_type,
        [torch.ones(1), torch.ones(2), _Shaped()],
        torch.ones(1),
    )
    _raises(
        AssertionError,
        "output 1 is on device meta, input on cpu",
        ta.assert_same_array_type,
        (torch.ones(1), torch.empty(1, device="meta")),
        torch.ones(1),
    )
    ta.assert_same_array_type(torch.empty(2, device="meta"), torch.empty(1, device="meta"))
    ta.assert_same_array_type((torch.ones(2), torch.zeros(3)), torch.ones(1))

    from typing import NamedTuple

    class Pair(NamedTuple):
        a: object
        b: object

    _raises(
        AssertionError,
        "output 1 has dtype int64, expected float64",
        ta.assert_same_array_type,
        Pair(D, np.zeros(2, dtype=np.int64)),
        D,
    )


# --------------------------------------------------------------------------------------
# assert_kron_close
# --------------------------------------------------------------------------------------
def test_assert_kron_close_factors_tolerance_and_messages():
    A = np.array([[[1.0, -4.0]], [[2.0, 0.5]]])
    B = np.array([[[1.0], [2.0]], [[-1.0], [3.0]]])
    K = KroneckerSum(A, B)
    ta.assert_kron_close(K, KroneckerSum(A.copy(), B.copy()), rtol=0.0)
    # the tolerance of factor k is atol + rtol·max|ref_k|: A[0] has max 4, A[1] max 2
    A2 = A.copy()
    A2[0, 0, 0] += 4 * 0.5e-7
    ta.assert_kron_close(KroneckerSum(A2, B), K)
    A3 = A.copy()
    A3[1, 0, 1] += 2 * 2e-7
    diff = float(np.max(np.abs(A3[1] - A[1])))
    _raises(
        AssertionError,
        f"factor A[1] differs from the reference by {_g(diff)} (max abs), > atol + "
        f"rtol·max|ref| = {_g(1e-7 * 2)}",
        ta.assert_kron_close,
        KroneckerSum(A3, B),
        K,
    )
    ta.assert_kron_close(KroneckerSum(A3, B), K, atol=4e-7)
    ta.assert_kron_close(KroneckerSum(A3, B), K, rtol=2.5e-7)
    B3 = B.copy()
    B3[0, 1, 0] = 2.5
    _raises(
        AssertionError,
        f"factor B[0] differs from the reference by {_g(0.5)} (max abs), > atol + "
        f"rtol·max|ref| = {_g(0.1 + 0.01 * 2)}",
        ta.assert_kron_close,
        KroneckerSum(A, B3),
        K,
        rtol=0.01,
        atol=0.1,
    )
    flip = np.array([1.0, -1.0])[:, None, None]
    _raises(
        AssertionError,
        f"factor A[1] differs from the reference by {_g(4.0)} (max abs), > atol + "
        f"rtol·max|ref| = {_g(2e-7)} (it matches with the opposite sign)",
        ta.assert_kron_close,
        KroneckerSum(A * flip, B * flip),
        K,
    )
    # only B flipped: not within tolerance with either sign of B -> no hint for B
    ta.assert_kron_close(KroneckerSum(A * flip, B * flip), K, compare="dense", rtol=1e-12)
    _raises(
        AssertionError,
        "ranks differ: 1 vs reference 2",
        ta.assert_kron_close,
        KroneckerSum(A[:1], B[:1]),
        K,
    )
    _raises(
        ValueError,
        "compare must be 'factors' or 'dense', got 'norm'",
        ta.assert_kron_close,
        K,
        K,
        compare="norm",
    )
    other = KroneckerSum(np.ones((1, 2, 1)), np.ones((1, 1, 2)))
    _raises(
        AssertionError,
        f"shapes differ: {other!r} vs reference {K!r}",
        ta.assert_kron_close,
        other,
        K,
    )
    same_shape_other_kshape = KroneckerSum(np.ones((1, 2, 2)), np.ones((1, 1, 1)))
    _raises(
        AssertionError,
        f"shapes differ: {same_shape_other_kshape!r} vs reference {K!r}",
        ta.assert_kron_close,
        same_shape_other_kshape,
        K,
    )


def test_assert_kron_close_dense_hands_on_its_tolerances():
    A = np.array([[[1.0, 0.0]]])
    B = np.array([[[3.0], [4.0]]])  # ‖ref‖ = 5
    K = KroneckerSum(A, B)
    near = KroneckerSum(A, B + np.array([[[0.0], [1e-6]]]))
    ta.assert_kron_close(near, K, compare="dense", rtol=2.1e-7)
    ta.assert_kron_close(near, K, compare="dense", rtol=0.0, atol=1.01e-6)
    with pytest.raises(AssertionError) as info:
        ta.assert_kron_close(near, K, compare="dense", rtol=1e-7, atol=1e-8)
    assert str(info.value) == _reconstruct_message(near.to_dense(), K.to_dense(), 1e-7, 1e-8)


# --------------------------------------------------------------------------------------
# assert_same_result_across_backends
# --------------------------------------------------------------------------------------
def test_assert_same_result_across_backends_whole_messages():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 6))
    s = S_OPT
    ta.assert_same_result_across_backends(
        lambda w: kron_svd(w, s, 2), [W], [(torch, "cpu"), (xs, None)], rtol=1e-8
    )
    calls = []

    def dense(w, x):
        calls.append(type(w).__name__)
        return w * 2 + x

    x = rng.standard_normal((4, 6))
    ta.assert_same_result_across_backends(dense, [W, x], [(torch, "cpu"), (xs, None)])
    assert calls == ["ndarray", "Tensor", "Array"]

    def off(w):
        out = w * 2
        return out if isinstance(w, np.ndarray) else out * (1 + 1e-6)

    with pytest.raises(AssertionError) as info:
        ta.assert_same_result_across_backends(off, [W], [(torch, "cpu")])
    assert str(info.value).startswith("torch on cpu differs from NumPy: \nNot equal to tolerance")
    assert "rtol=1e-07, atol=0" in str(info.value)
    ta.assert_same_result_across_backends(off, [W], [(torch, "cpu")], rtol=2e-6)
    ta.assert_same_result_across_backends(off, [W], [(xs, None)], rtol=0.0, atol=1e-4)
    with pytest.raises(AssertionError) as info:
        ta.assert_same_result_across_backends(off, [W], [(xs, None)], rtol=1e-9, atol=1e-9)
    assert str(info.value).startswith("array_api_strict on None differs from NumPy: ")
    assert "rtol=1e-09, atol=1e-09" in str(info.value)

    def wrong(w):
        out = kron_svd(w, s, 2)
        return out if isinstance(w, np.ndarray) else KroneckerSum(out.A * 2, out.B)

    ref = kron_svd(W, s, 2)
    out = KroneckerSum(np.asarray(ref.A) * 2, np.asarray(ref.B))
    diff = float(np.max(np.abs(np.asarray(out.A[0]) - np.asarray(ref.A[0]))))
    scale = float(np.max(np.abs(np.asarray(ref.A[0]))))
    _raises(
        AssertionError,
        f"torch on cpu differs from NumPy: factor A[0] differs from the reference by "
        f"{_g(diff)} (max abs), > atol + rtol·max|ref| = {_g(1e-7 * scale)}",
        ta.assert_same_result_across_backends,
        wrong,
        [W],
        [(torch, "cpu")],
    )
    # compare and the tolerances reach assert_kron_close: dense comparison of flipped terms
    flip = np.array([1.0, -1.0])[:, None, None]

    def flipped(w):
        out = kron_svd(w, s, 2)
        if isinstance(w, np.ndarray):
            return out
        return KroneckerSum(out.A * torch.tensor(flip), out.B * torch.tensor(flip))

    with pytest.raises(AssertionError, match=r"^torch on cpu differs from NumPy: factor A\[1\]"):
        ta.assert_same_result_across_backends(flipped, [W], [(torch, "cpu")])
    ta.assert_same_result_across_backends(
        flipped, [W], [(torch, "cpu")], compare="dense", rtol=1e-9
    )
    with pytest.raises(AssertionError, match=r"^torch on cpu differs from NumPy: K does not"):
        ta.assert_same_result_across_backends(
            lambda w: (
                KroneckerSum(w[None, :, :3] * 0 + 1, w[None, :1, :1] * 0 + 1)
                if not isinstance(w, np.ndarray)
                else KroneckerSum(np.ones((1, 4, 3)), np.full((1, 1, 1), 2.0))
            ),
            [W],
            [(torch, "cpu")],
            compare="dense",
            atol=1e-3,
        )

    def host(w):
        return np.asarray(w) * 1.0 if not isinstance(w, np.ndarray) else w

    _raises(
        AssertionError,
        "output 0 is a ndarray, expected an array of torch like the input",
        ta.assert_same_result_across_backends,
        host,
        [W],
        [(torch, "cpu")],
    )


# --------------------------------------------------------------------------------------
# Strategies: each draws what it promises, every argument reaches the draws
# --------------------------------------------------------------------------------------
def _can_draw(strategy, condition, n=150):
    """Whether ``strategy`` draws an example with ``condition`` within n tries (Hypothesis
    tries the boundaries of each choice early, so reachable corners are found)."""
    try:
        find(
            strategy,
            condition,
            settings=settings(
                max_examples=n, database=None, deadline=None, phases=[Phase.generate]
            ),
            random=random.Random(0),
        )
    except NoSuchExample:
        return False
    return True


def _can_draw_in_40(strategy, condition, n=40):
    """A cheap negative check: a broken bound shows within a few draws."""
    return _can_draw(strategy, condition, n=n)


def _simplest(strategy):
    """The first (simplest: every choice at its minimum) draw of ``strategy``."""
    return find(
        strategy,
        lambda _: True,
        settings=settings(max_examples=1, database=None, deadline=None, phases=[Phase.generate]),
        random=random.Random(0),
    )


XS_ARRAY = type(xs.asarray(0.0))
DEVICE1 = xs.__array_namespace_info__().devices()[1]


def test_np_dtype_accepts_float_names_of_every_library_and_names_the_rest():
    for d, want in (
        ("float32", np.float32),
        ("float64", np.float64),
        (np.float32, np.float32),
        (np.dtype("float64"), np.float64),
        (torch.float32, np.float32),
        (torch.float64, np.float64),
        (xs.float32, np.float32),
    ):
        assert ts._np_dtype(d) == np.dtype(want)
    for bad in ("int32", "float16", np.float16, torch.int64, "bogus", "complex128"):
        _raises(TypeError, f"dtype must be float32 or float64, got {bad!r}", ts._np_dtype, bad)


def test_convert_moves_to_the_library_and_device_keeping_dtype():
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    assert ts.convert(a) is a
    assert ts.convert(a, np) is a
    assert ts.convert(a, np, "cpu") is a
    import types

    assert ts.convert(a, types.ModuleType("numpy")) is a  # NumPy is recognised by its name
    for dev in ("cuda", "meta", 0):
        _raises(
            ValueError,
            f"NumPy arrays live on the CPU, got device={dev!r}",
            ts.convert,
            a,
            None,
            dev,
        )
        _raises(
            ValueError, f"NumPy arrays live on the CPU, got device={dev!r}", ts.convert, a, np, dev
        )
    import array_api_compat.torch as compat_torch

    for xp in (torch, compat_torch):
        t = ts.convert(a, xp)
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu"
        np.testing.assert_array_equal(t.numpy(), a)
        t[0, 0] = 99.0  # a copy: the NumPy array is not shared
        assert a[0, 0] == 0.0
    m = ts.convert(a, torch, "meta")
    assert m.device.type == "meta" and m.shape == (2, 3) and m.dtype == torch.float32
    rev = ts.convert(a[:, ::-1], torch)
    np.testing.assert_array_equal(rev.numpy(), a[:, ::-1])
    x = ts.convert(a, xs)
    assert (
        isinstance(x, XS_ARRAY)
        and x.dtype == xs.float32
        and x.device == DEVICE1.__class__("CPU_DEVICE")
    )
    np.testing.assert_array_equal(np.asarray(x), a)
    x1 = ts.convert(a[:, ::-1], xs, DEVICE1)
    assert x1.device == DEVICE1 and x1.dtype == xs.float32
    assert bool(xs.all(x1 == xs.asarray(a[:, ::-1].copy(), device=DEVICE1)))


def test_matrix_shape_of_every_spelling():
    assert ts._matrix_shape((3, 4)) == (3, 4)
    assert ts._matrix_shape([np.int64(3), 4.0]) == (3, 4)
    assert ts._matrix_shape(KroneckerShape((2, 3), (4, 5))) == (8, 15)
    assert ts._matrix_shape(((2, 3), (4, 5))) == (8, 15)
    assert ts._matrix_shape([[2, 3], (4, 5)]) == (8, 15)


@given(data=st.data())
def test_matrices_float32_entries_are_bounded_finite_normal_and_exact(data):
    W = data.draw(ts.matrices(dtype="float32", bound=2.0, max_dim=5), label="W")
    assert isinstance(W, np.ndarray) and W.dtype == np.float32 and W.ndim == 2
    assert 1 <= W.shape[0] <= 5 and 1 <= W.shape[1] <= 5
    assert np.all(np.isfinite(W)) and np.all(np.abs(W) <= 2.0)
    tiny = np.finfo(np.float32).tiny
    assert not np.any((W != 0) & (np.abs(W) < tiny))


@given(data=st.data())
def test_matrices_defaults(data):
    W = data.draw(ts.matrices(), label="W")
    assert W.dtype == np.float64 and 1 <= min(W.shape) and max(W.shape) <= 16
    assert np.all(np.abs(W) <= 10.0)
    tiny = np.finfo(np.float64).tiny
    assert not np.any((W != 0) & (np.abs(W) < tiny))


def test_matrices_reach_their_bounds():
    assert _can_draw(ts.matrices(), lambda W: W.shape == (16, 16), n=300)
    assert _can_draw(ts.matrices(), lambda W: W.shape == (1, 1))
    assert _can_draw(ts.matrices(max_dim=3), lambda W: W.shape == (3, 1))
    assert _can_draw(ts.matrices((1, 1)), lambda W: W[0, 0] == 10.0)
    assert _can_draw(ts.matrices((1, 1)), lambda W: W[0, 0] == -10.0, n=300)
    assert _can_draw(ts.matrices((1, 1), bound=3.0), lambda W: W[0, 0] == -3.0, n=300)
    for dtype in ("float64", "float32"):  # no subnormals (found within ~10 tries if allowed)
        tiny = np.finfo(dtype).tiny
        assert not _can_draw_in_40(
            ts.matrices((1, 1), dtype=dtype), lambda W, t=tiny: 0 < abs(W[0, 0]) < t, n=60
        )
    assert _can_draw(ts.matrices((1, 1), dtype="float32"), lambda W: W[0, 0] == 10.0)
    assert not _can_draw_in_40(ts.matrices((1, 2)), lambda W: np.any(np.abs(W) > 10.0))


def test_matrices_shape_spellings_elements_and_gaussian():
    assert _simplest(ts.matrices((2, 3))).shape == (2, 3)
    assert _simplest(ts.matrices(((2, 3), (4, 1)))).shape == (8, 3)
    assert _simplest(ts.matrices(KroneckerShape((2, 3), (4, 1)))).shape == (8, 3)
    assert _simplest(ts.matrices(st.just(((1, 2), (3, 1))))).shape == (3, 2)
    assert _simplest(ts.matrices(st.just((4, 2)))).shape == (4, 2)
    W = _simplest(ts.matrices((2, 2), elements=st.just(1.5)))
    np.testing.assert_array_equal(W, np.full((2, 2), 1.5))
    # generic Gaussian data from a drawn seed (the simplest is seed 0)
    for dtype in ("float64", "float32"):
        G = _simplest(ts.matrices((3, 2), gaussian=True, dtype=dtype))
        assert G.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(
            G, np.random.default_rng(0).standard_normal((3, 2)).astype(dtype)
        )
    assert _can_draw(
        ts.matrices((1, 1), gaussian=True),
        lambda W: W[0, 0] == np.random.default_rng(2**32 - 1).standard_normal((1, 1))[0, 0],
        n=200,
    )
    assert not _can_draw_in_40(
        ts.matrices((1, 1), gaussian=True),
        lambda W: W[0, 0] == np.random.default_rng(2**32).standard_normal((1, 1))[0, 0],
        n=200,
    )
    t = _simplest(ts.matrices((2, 2), xp=torch, device="meta"))
    assert isinstance(t, torch.Tensor) and t.device.type == "meta" and t.dtype == torch.float64
    x = _simplest(ts.matrices((2, 2), xp=xs, device=DEVICE1, dtype="float32"))
    assert x.device == DEVICE1 and x.dtype == xs.float32


@given(data=st.data())
def test_kronecker_shapes_defaults(data):
    s = data.draw(ts.kronecker_shapes(), label="s")
    assert isinstance(s, KroneckerShape)
    assert all(1 <= v <= 5 for v in (*s.a, *s.b))
    assert s.matrix_shape[0] <= 64 and s.matrix_shape[1] <= 64


@given(
    max_side=st.integers(1, 6),
    min_side=st.integers(1, 3),
    extra=st.integers(0, 20),
    nontrivial=st.booleans(),
    data=st.data(),
)
def test_kronecker_shapes_respect_every_bound(max_side, min_side, extra, nontrivial, data):
    if max_side < min_side:
        _raises(
            ValueError,
            f"need 1 <= min_side <= max_side, got {min_side} and {max_side}",
            ts.kronecker_shapes,
            max_side=max_side,
            min_side=min_side,
        )
        return
    max_dim = min_side * max_side + extra
    if nontrivial and max_side == 1:
        return
    s = data.draw(
        ts.kronecker_shapes(
            max_side=max_side, max_dim=max_dim, min_side=min_side, nontrivial=nontrivial
        )
    )
    assert all(min_side <= v <= max_side for v in (*s.a, *s.b))
    M, N = s.matrix_shape
    assert M <= max_dim and N <= max_dim
    if nontrivial:
        assert s.a != (1, 1) and s.b != (1, 1)


def test_kronecker_shapes_reach_every_corner_and_check_arguments():
    big = ts.kronecker_shapes(max_side=3, max_dim=9)
    assert _can_draw(big, lambda s: s.a == (3, 3) and s.b == (3, 3))
    assert _can_draw(big, lambda s: s.a == (1, 3) and s.b == (3, 1))
    assert _can_draw(big, lambda s: s.a == (3, 1) and s.b == (1, 3))
    assert _can_draw(big, lambda s: s.a == (1, 1) and s.b == (1, 1))
    assert _can_draw(ts.kronecker_shapes(), lambda s: s.a == (5, 5))
    assert _can_draw(ts.kronecker_shapes(), lambda s: s.a == (1, 1))
    assert not _can_draw_in_40(
        ts.kronecker_shapes(nontrivial=True), lambda s: s.a == (1, 1) or s.b == (1, 1)
    )
    assert _can_draw(ts.kronecker_shapes(nontrivial=True), lambda s: s.a == (1, 2))
    assert _can_draw(
        ts.kronecker_shapes(min_side=2, max_side=2, max_dim=4), lambda s: s.a == (2, 2)
    )
    ts.kronecker_shapes(min_side=1, max_side=1, max_dim=1)
    for bad in ({"min_side": 0}, {"min_side": 3, "max_side": 2}, {"min_side": -1, "max_side": -2}):
        kw = {"min_side": 1, "max_side": 5, **bad}
        _raises(
            ValueError,
            f"need 1 <= min_side <= max_side, got {kw['min_side']} and {kw['max_side']}",
            ts.kronecker_shapes,
            **bad,
        )
    _raises(
        ValueError,
        "max_dim must be >= min_side², got 3",
        ts.kronecker_shapes,
        min_side=2,
        max_dim=3,
    )


@given(data=st.data())
def test_kronecker_sums_defaults(data):
    K = data.draw(ts.kronecker_sums(), label="K")
    assert isinstance(K, KroneckerSum) and 1 <= K.rank <= 3
    assert K.dtype == np.float64 and isinstance(K.A, np.ndarray)
    assert all(1 <= v <= 5 for v in (*K.kshape.a, *K.kshape.b))
    assert max(K.shape) <= 64
    assert np.all(np.abs(K.A) <= 10.0) and np.all(np.abs(K.B) <= 10.0)


def test_kronecker_sums_every_argument_reaches_the_draw():
    assert _can_draw(ts.kronecker_sums(), lambda K: K.rank == 3)
    assert _can_draw(ts.kronecker_sums(), lambda K: K.rank == 1)
    assert not _can_draw_in_40(ts.kronecker_sums(max_rank=2), lambda K: K.rank > 2)
    assert not _can_draw_in_40(ts.kronecker_sums(max_side=2), lambda K: max(K.A.shape[1:]) > 2)
    assert not _can_draw_in_40(ts.kronecker_sums(max_dim=4), lambda K: max(K.shape) > 4)
    assert _can_draw(ts.kronecker_sums(max_side=2), lambda K: K.kshape.a == (2, 2))
    assert not _can_draw_in_40(
        ts.kronecker_sums(((1, 2), (1, 1)), rank=1, bound=2.0), lambda K: np.abs(K.A).max() > 2
    )
    s = KroneckerShape((2, 3), (3, 2))
    for shape in (s, ((2, 3), (3, 2)), st.just(((2, 3), (3, 2))), st.just(s)):
        K = _simplest(ts.kronecker_sums(shape, rank=2))
        assert K.kshape == s and K.rank == 2
    K = _simplest(ts.kronecker_sums(s, rank=st.just(4), dtype="float32"))
    assert K.rank == 4 and K.A.dtype == np.float32 and K.B.dtype == np.float32
    K = _simplest(ts.kronecker_sums(s, rank=1, elements=st.just(0.5)))
    np.testing.assert_array_equal(K.A, 0.5)
    np.testing.assert_array_equal(K.B, 0.5)
    K = _simplest(ts.kronecker_sums(s, rank=2, gaussian=True))
    np.testing.assert_array_equal(K.A, np.random.default_rng(0).standard_normal((2, 2, 3)))
    np.testing.assert_array_equal(K.B, np.random.default_rng(0).standard_normal((2, 3, 2)))
    K = _simplest(ts.kronecker_sums(s, rank=1, gaussian=True, dtype="float32"))
    assert K.A.dtype == np.float32 and K.B.dtype == np.float32
    K = _simplest(ts.kronecker_sums(s, rank=1, xp=torch))
    assert isinstance(K.A, torch.Tensor) and isinstance(K.B, torch.Tensor)
    K = _simplest(ts.kronecker_sums(s, rank=1, xp=xs, device=DEVICE1))
    assert K.A.device == DEVICE1 and K.B.device == DEVICE1


@given(data=st.data())
def test_permutations_are_int64_permutations(data):
    p = data.draw(ts.permutations(st.integers(0, 9)), label="p")
    assert isinstance(p, np.ndarray) and p.dtype == np.int64 and p.ndim == 1
    np.testing.assert_array_equal(np.sort(p), np.arange(p.size))


def test_permutations_reach_every_order_and_any_library():
    assert _can_draw(ts.permutations(4), lambda p: p.tolist() == [3, 2, 1, 0])
    assert _can_draw(ts.permutations(4), lambda p: p.tolist() == [1, 0, 3, 2])
    empty = _simplest(ts.permutations(0))
    assert empty.shape == (0,) and empty.dtype == np.int64
    assert _simplest(ts.permutations(np.int64(3))).tolist() == [0, 1, 2]
    t = _simplest(ts.permutations(3, xp=torch))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64
    assert _simplest(ts.permutations(3, xp=torch, device="meta")).device.type == "meta"
    x = _simplest(ts.permutations(3, xp=xs, device=DEVICE1))
    assert x.device == DEVICE1 and x.dtype == xs.int64


@given(data=st.data())
def test_kronecker_structured_is_its_truth_permuted_plus_the_stated_noise(data):
    planted = data.draw(
        ts.kronecker_structured(rank=2, permuted=True, noise=0.1, max_side=3, max_dim=6),
        label="planted",
    )
    W, K, rp, cp = planted.W, planted.K, planted.row_perm, planted.col_perm
    assert isinstance(planted, ts.PlantedKronecker)
    assert K.rank == 2 and max(W.shape) <= 6 and max(K.A.shape[1:]) <= 3
    ta.assert_valid_permutation(rp, W.shape[0])
    ta.assert_valid_permutation(cp, W.shape[1])
    D = np.asarray(K.to_dense())
    E = W - D[rp][:, cp]
    assert np.linalg.norm(E) == pytest.approx(planted.noise, rel=1e-9, abs=1e-12)
    assert planted.noise == pytest.approx(0.1 * np.linalg.norm(D), rel=1e-9, abs=1e-12)
    assert W.flags.c_contiguous and W.dtype == np.float64


def test_kronecker_structured_every_argument_reaches_the_draw():
    s = KroneckerShape((2, 2), (2, 1))
    P = _simplest(ts.kronecker_structured(s, rank=1))
    np.testing.assert_array_equal(P.row_perm, np.arange(4))
    np.testing.assert_array_equal(P.col_perm, np.arange(2))
    assert P.noise == 0.0
    np.testing.assert_array_equal(P.W, np.asarray(P.K.to_dense()))
    # Gaussian factors by default (seed 0 is the simplest draw)
    np.testing.assert_array_equal(P.K.A, np.random.default_rng(0).standard_normal((1, 2, 2)))
    P = _simplest(ts.kronecker_structured(s, rank=1, gaussian=False))
    np.testing.assert_array_equal(P.K.A, 0.0)
    assert _can_draw(
        ts.kronecker_structured(((1, 1), (1, 1)), rank=1, gaussian=False),
        lambda P: P.K.A[0, 0, 0] == -10.0,
    )
    assert _can_draw(ts.kronecker_structured(), lambda P: P.K.rank == 3)
    assert not _can_draw_in_40(ts.kronecker_structured(max_rank=2), lambda P: P.K.rank > 2)
    assert not _can_draw_in_40(
        ts.kronecker_structured(max_side=2, max_dim=3), lambda P: max(P.W.shape) > 3
    )
    assert _can_draw(ts.kronecker_structured(max_side=2), lambda P: P.K.kshape.a == (2, 2))
    assert _can_draw(
        ts.kronecker_structured(s, rank=1, permuted=True),
        lambda P: P.row_perm.tolist() != [0, 1, 2, 3] and P.col_perm.tolist() == [1, 0],
    )
    P = _simplest(ts.kronecker_structured(s, rank=st.just(2), dtype="float32", noise=0.5))
    assert P.W.dtype == np.float32 and P.K.A.dtype == np.float32 and P.K.rank == 2
    D = np.asarray(P.K.to_dense(), dtype=np.float64)
    assert P.noise == pytest.approx(0.5 * np.linalg.norm(D), rel=1e-6)
    assert np.linalg.norm(P.W - D) == pytest.approx(P.noise, rel=1e-5)
    P = _simplest(ts.kronecker_structured(s, rank=1, permuted=True, xp=torch))
    for a in (P.W, P.K.A, P.K.B, P.row_perm, P.col_perm):
        assert isinstance(a, torch.Tensor)
    P = _simplest(ts.kronecker_structured(s, rank=1, xp=xs, device=DEVICE1))
    for a in (P.W, P.K.A, P.K.B, P.row_perm, P.col_perm):
        assert a.device == DEVICE1
    assert isinstance(P.noise, float)


def test_make_strategies_namespace_binds_the_library_and_device():
    ns = ts.make_strategies_namespace(xs, DEVICE1)
    assert ns.xp is xs and ns.device == DEVICE1
    assert ns.kronecker_shapes is ts.kronecker_shapes
    s = KroneckerShape((1, 2), (2, 1))
    draws = [
        _simplest(ns.matrices((2, 2))),
        _simplest(ns.kronecker_sums(s, rank=1)).A,
        _simplest(ns.kronecker_structured(s, rank=1)).W,
        _simplest(ns.permutations(3)),
        _simplest(ns.tensor_trains(modes=(2, 2))).cores[0],
        _simplest(ns.tt_matrices(max_d=1)).cores[0],
    ]
    for a in draws:
        assert isinstance(a, XS_ARRAY) and a.device == DEVICE1
    assert ts.make_strategies_namespace(torch).device is None


def _unfolding_ranks(X, modes):
    X = np.asarray(X)
    return tuple(
        int(np.linalg.matrix_rank(X.reshape(int(np.prod(modes[: k + 1])), -1), tol=1e-9))
        for k in range(len(modes) - 1)
    )


@given(data=st.data())
def test_tensor_trains_have_their_drawn_ranks_exactly(data):
    T = data.draw(ts.tensor_trains(), label="T")
    modes = tuple(T.shape)
    assert 1 <= len(modes) <= 4 and all(1 <= n <= 4 for n in modes)
    r = T.ranks
    assert r[0] == 1 and r[-1] == 1 and all(1 <= v <= 3 for v in r)
    assert _unfolding_ranks(T.to_dense(), modes) == tuple(r[1:-1])
    assert T.dtype == np.float64


def test_tensor_trains_every_argument_reaches_the_draw():
    tts = ts.tensor_trains
    assert _can_draw(tts(), lambda T: len(T.shape) == 4 and max(T.ranks) == 3)
    assert _can_draw(tts(), lambda T: 4 in T.shape)
    assert _can_draw(tts(), lambda T: len(T.shape) == 1)
    assert not _can_draw_in_40(tts(max_d=2, max_mode=2, max_rank=1), lambda T: len(T.shape) > 2)
    assert not _can_draw_in_40(tts(max_mode=2), lambda T: max(T.shape) > 2)
    assert not _can_draw_in_40(tts(max_rank=2), lambda T: max(T.ranks) > 2)
    assert _can_draw(tts(modes=(3, 3, 3), max_rank=5), lambda T: T.ranks == (1, 3, 3, 1))
    assert _can_draw(tts(modes=(2, 4, 2), max_rank=8), lambda T: T.ranks == (1, 2, 2, 1))
    assert _can_draw(tts(modes=st.just([2, 2])), lambda T: T.ranks == (1, 2, 1))
    # an inner rank is capped by its left neighbour's rank times the mode (not further left)
    assert _can_draw(tts(modes=(3, 3, 3, 3), max_rank=9), lambda T: T.ranks == (1, 3, 9, 3, 1))
    T = _simplest(tts(modes=(2, 3), dtype="float32"))
    assert tuple(T.shape) == (2, 3) and T.dtype == np.float32
    rng = np.random.default_rng(0)  # the simplest draw: ranks 1, seed 0
    np.testing.assert_array_equal(T.cores[0], rng.standard_normal((1, 2, 1)).astype(np.float32))
    T = _simplest(tts(modes=(2, 2), xp=torch))
    assert all(isinstance(c, torch.Tensor) for c in T.cores)
    T = _simplest(tts(modes=(2, 2), xp=xs, device=DEVICE1))
    assert all(c.device == DEVICE1 for c in T.cores)


def _ttm_ranks(T):
    D = np.asarray(T.to_dense())
    rm, cm = tuple(T.row_modes), tuple(T.col_modes)
    d = len(rm)
    X = D.reshape(*rm, *cm).transpose([v for k in range(d) for v in (k, d + k)])
    return _unfolding_ranks(
        X.reshape([a * b for a, b in zip(rm, cm)]), [a * b for a, b in zip(rm, cm)]
    )


@given(data=st.data())
def test_tt_matrices_have_their_drawn_ranks_exactly(data):
    T = data.draw(ts.tt_matrices(), label="T")
    d = len(T.row_modes)
    assert 1 <= d <= 3 and len(T.col_modes) == d
    assert all(1 <= v <= 3 for v in (*T.row_modes, *T.col_modes))
    r = T.ranks
    assert r[0] == 1 and r[-1] == 1 and all(1 <= v <= 3 for v in r)
    assert _ttm_ranks(T) == tuple(r[1:-1])
    assert T.dtype == np.float64


def test_tt_matrices_every_argument_reaches_the_draw():
    ttm = ts.tt_matrices
    assert _can_draw(ttm(), lambda T: len(T.row_modes) == 3 and 3 in T.ranks)
    assert _can_draw(ttm(), lambda T: 3 in T.row_modes and 3 in T.col_modes)
    assert not _can_draw_in_40(ttm(max_d=2), lambda T: len(T.row_modes) > 2)
    assert not _can_draw_in_40(ttm(), lambda T: len(T.row_modes) > 3)
    assert not _can_draw_in_40(ttm(), lambda T: max(*T.row_modes, *T.col_modes, *T.ranks) > 3)
    assert not _can_draw_in_40(ttm(max_mode=2), lambda T: max(*T.row_modes, *T.col_modes) > 2)
    assert not _can_draw_in_40(ttm(max_rank=2), lambda T: max(T.ranks) > 2)
    assert _can_draw(ttm(max_d=2, max_rank=9), lambda T: max(T.ranks) >= 4)
    T = _simplest(ttm(max_d=1, dtype="float32"))
    assert T.dtype == np.float32 and T.ranks == (1, 1)
    np.testing.assert_array_equal(
        T.cores[0], np.random.default_rng(0).standard_normal((1, 1, 1, 1)).astype(np.float32)
    )
    T = _simplest(ttm(max_d=2, xp=torch))
    assert all(isinstance(c, torch.Tensor) for c in T.cores)
    T = _simplest(ttm(max_d=2, xp=xs, device=DEVICE1))
    assert all(c.device == DEVICE1 for c in T.cores)


def test_every_seeded_strategy_draws_seeds_over_exactly_0_to_2_32_minus_1(monkeypatch):
    """Gaussian data, noise, TT cores: NumPy generators seeded by a drawn integer that
    spans [0, 2³²−1] (Hypothesis tries both ends within 200 draws)."""
    seen = []
    real = np.random.default_rng

    def spy(seed=None):
        seen.append(seed)
        return real(seed)

    monkeypatch.setattr(np.random, "default_rng", spy)
    one = KroneckerShape((1, 1), (1, 1))
    for strategy in (
        ts.matrices((1, 1), gaussian=True),
        ts.kronecker_sums(one, rank=1, gaussian=True),
        ts.kronecker_structured(one, rank=1, gaussian=False, noise=0.1),
        ts.tensor_trains(modes=(1,)),
        ts.tt_matrices(max_d=1, max_mode=1),
    ):
        seen.clear()
        assert not _can_draw(strategy, lambda _: False, n=200)
        ints = [int(v) for v in seen]
        assert len(ints) == len(seen) >= 200
        assert min(ints) == 0 and max(ints) == 2**32 - 1


def test_assert_same_array_type_walks_any_record_with_asdict():
    """Results that are records (``_asdict``, iterable) are walked like named tuples."""
    D = np.zeros((2, 2))

    class Record:
        def __init__(self, *items):
            self.items = items

        def _asdict(self):
            return dict(enumerate(self.items))

        def __iter__(self):
            return iter(self.items)

    ta.assert_same_array_type(Record(D, D), D)
    _raises(
        AssertionError,
        "output 1 has dtype float32, expected float64",
        ta.assert_same_array_type,
        Record(D, D.astype(np.float32)),
        D,
    )


def test_assert_same_result_across_backends_converts_to_the_device_and_names_any_library():
    import types

    rng = np.random.default_rng(2)
    W = rng.standard_normal((3, 2))
    devices = []

    def record(w):
        devices.append(getattr(w, "device", None))
        return w * 2

    ta.assert_same_result_across_backends(record, [W], [(xs, DEVICE1)])
    assert devices[1] == DEVICE1
    # a library without __name__ is named by itself in the message
    plain = types.SimpleNamespace(asarray=np.asarray)
    calls = []

    def drifting(w):
        calls.append(1)
        return w * (1.0 if len(calls) == 1 else 2.0)

    with pytest.raises(AssertionError) as info:
        ta.assert_same_result_across_backends(drifting, [W], [(plain, None)])
    assert str(info.value).startswith(f"{plain} on None differs from NumPy: ")


def test_assert_reconstructs_densifies_anything_with_to_dense():
    """Not only KroneckerSum: any object with ``to_dense()`` (a TT matrix, a permuted or
    heterogeneous sum, a user's class) is compared through its dense matrix."""

    class Dense:
        def __init__(self, M):
            self.M = M

        def to_dense(self):
            return self.M

    D = np.array([[1.0, 2.0], [3.0, 4.0]])
    ta.assert_reconstructs(Dense(D), D, rtol=0.0)
    ta.assert_reconstructs(Dense(torch.asarray(D)), torch.asarray(D), rtol=0.0)
    bad = D.copy()
    bad[0, 1] += 0.5
    _raises(
        AssertionError,
        _reconstruct_message(D, bad, 1e-7, 0.0, name="T"),
        ta.assert_reconstructs,
        Dense(D),
        bad,
        name="T",
    )


def test_assert_kron_close_sign_hint_at_the_boundary():
    """The hint is given iff max|F + R| <= atol + rtol·max|R| (the same closed inequality
    as the test itself): exact binary values put the flipped distance on the boundary."""
    B = np.array([[[1.0]]])
    ref = KroneckerSum(np.array([[[-0.5]]]), B)
    K = KroneckerSum(np.array([[[1.0]]]), B)
    # diff = 1.5 > 0.5; flipped = |1.0 − 0.5| = 0.5 == atol: the hint is given
    _raises(
        AssertionError,
        f"factor A[0] differs from the reference by {_g(1.5)} (max abs), > atol + "
        f"rtol·max|ref| = {_g(0.5)} (it matches with the opposite sign)",
        ta.assert_kron_close,
        K,
        ref,
        atol=0.5,
        rtol=0.0,
    )
    # the same boundary through rtol: tol = 1.0·max|ref| = 0.5
    _raises(
        AssertionError,
        f"factor A[0] differs from the reference by {_g(1.5)} (max abs), > atol + "
        f"rtol·max|ref| = {_g(0.5)} (it matches with the opposite sign)",
        ta.assert_kron_close,
        K,
        ref,
        rtol=1.0,
    )
    # just outside the boundary: no hint
    K2 = KroneckerSum(np.array([[[1.25]]]), B)
    _raises(
        AssertionError,
        f"factor A[0] differs from the reference by {_g(1.75)} (max abs), > atol + "
        f"rtol·max|ref| = {_g(0.5)}",
        ta.assert_kron_close,
        K2,
        ref,
        atol=0.5,
        rtol=0.0,
    )
