"""Properties of tqla.kron that pin down *which* branch runs, not only that results agree.

* The association order of ``KroneckerSum`` products: both orders give the same result, so
  only the cost tells them apart.  The multiply-adds of the actual call are counted with
  ``torch.utils.flop_counter.FlopCounterMode`` and must equal the cheaper order's count,
  computed here from the factor shapes (independently of tqla's own cost formulas).
* The deterministic sign convention of :func:`tqla.kron_svd` on every route (gram, full,
  randomized), including the ties m1·n1 = m2·n2 of the "which factor is smaller" test.

Each property was checked to fail, for several Hypothesis seeds, on a planted bug (flipped
order comparison; sign rule dropped or applied to the wrong factor on one route).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tqla import KroneckerShape, KroneckerSum, kron_svd

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

METHODS = ("gram", "full", "randomized")


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _orders(s: KroneckerShape, r: int, k: int) -> tuple[int, int]:
    """Multiply-adds of K @ X, X of shape (N, k), in the two association orders.

    "A first" contracts X's j1 index with A (r·m1·n1 per (j2, column)), then j2 with B;
    "B first" the other way round.  Derived from the shapes only.
    """
    m1, n1, m2, n2 = s.m1, s.n1, s.m2, s.n2
    a_first = r * (m1 * n1) * (n2 * k) + r * (m2 * n2) * (m1 * k)
    b_first = r * (m2 * n2) * (n1 * k) + r * (m1 * n1) * (m2 * k)
    return a_first, b_first


dims = st.integers(1, 7)
product_cases = st.tuples(dims, dims, dims, dims, st.integers(1, 3), st.integers(2, 6))


def _factors(m1, n1, m2, n2, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, m1, n1, generator=g, dtype=torch.float64)
    B = torch.randn(r, m2, n2, generator=g, dtype=torch.float64)
    return KroneckerSum(A, B)


@given(case=product_cases)
@example(case=(2, 7, 7, 2, 2, 5))  # a_first far cheaper
@example(case=(7, 2, 2, 7, 2, 5))  # b_first far cheaper
def test_matmat_runs_the_cheaper_association_order(case):
    m1, n1, m2, n2, r, k = case
    K = _factors(m1, n1, m2, n2, r)
    s = K.kshape
    a_first, b_first = _orders(s, r, k)
    assume(a_first != b_first)  # at a tie both orders cost the same: nothing to observe
    X = torch.randn(s.matrix_shape[1], k, dtype=torch.float64)
    assert _flops(lambda: K @ X) == 2 * min(a_first, b_first)
    # batched operands run the same order on the stacked columns
    Xb = torch.randn(3, s.matrix_shape[1], k, dtype=torch.float64)
    assert _flops(lambda: K @ Xb) == 2 * 3 * min(a_first, b_first)
    Y = K @ X  # and the result is the product whatever the order
    torch.testing.assert_close(Y, _dense(K) @ X, rtol=1e-12, atol=1e-12 * float(Y.abs().max()))


@given(case=product_cases)
@example(case=(2, 7, 7, 2, 2, 5))
@example(case=(7, 2, 2, 7, 2, 5))
def test_rmatmat_runs_the_cheaper_association_order(case):
    m1, n1, m2, n2, r, k = case
    K = _factors(m1, n1, m2, n2, r)
    s = K.kshape
    # X @ K = (Kᵀ Xᵀ)ᵀ: the orders of the transposed shape, for k rows of X
    a_first, b_first = _orders(s.T, r, k)
    assume(a_first != b_first)
    X = torch.randn(k, s.matrix_shape[0], dtype=torch.float64)
    assert _flops(lambda: X @ K) == 2 * min(a_first, b_first)
    Y = X @ K
    torch.testing.assert_close(Y, X @ _dense(K), rtol=1e-12, atol=1e-12 * float(Y.abs().max()))


def _dense(K: KroneckerSum):
    return sum(torch.kron(K.A[i], K.B[i]) for i in range(K.rank))


# --------------------------------------------------------------------------------------
# Sign convention on every route
# --------------------------------------------------------------------------------------
def _check_signs(K: KroneckerSum, s: KroneckerShape, method: str) -> None:
    """In each term the entry of largest magnitude of the smaller factor (B at a tie) is > 0."""
    small = K.B if s.m2 * s.n2 <= s.m1 * s.n1 else K.A
    flat = np.asarray(small).reshape(K.rank, -1)
    picked = flat[np.arange(K.rank), np.argmax(np.abs(flat), axis=1)]
    assert np.all(picked > 0), (method, s, picked)


def _gaussian(s: KroneckerShape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(s.matrix_shape)


any_shape = st.builds(
    lambda m1, n1, m2, n2: KroneckerShape((m1, n1), (m2, n2)), dims, dims, dims, dims
)


@st.composite
def tie_shapes(draw):
    """Shapes with m1·n1 = m2·n2 (the tie of the smaller-factor test), A ≠ B in general."""
    m1, n1 = draw(dims), draw(dims)
    q = m1 * n1
    m2 = draw(st.sampled_from([d for d in range(1, q + 1) if q % d == 0]))
    return KroneckerShape((m1, n1), (m2, q // m2))


@given(s=any_shape, rank=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
@example(s=KroneckerShape((2, 3), (3, 2)), rank=3, seed=0)  # tie
@example(s=KroneckerShape((5, 4), (2, 3)), rank=2, seed=1)  # A larger
@example(s=KroneckerShape((2, 3), (4, 5)), rank=2, seed=2)  # B larger
def test_sign_convention_on_every_route(s, rank, seed):
    rank = min(rank, s.max_rank)
    W = _gaussian(s, seed)
    for method in METHODS:
        _check_signs(kron_svd(W, s, rank, method=method, rng=seed), s, method)


@given(s=tie_shapes(), rank=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_sign_convention_at_ties_of_the_shape_test(s, rank, seed):
    """At m1·n1 = m2·n2 every route fixes the sign on B (as documented)."""
    rank = min(rank, s.max_rank)
    W = _gaussian(s, seed)
    for method in METHODS:
        _check_signs(kron_svd(W, s, rank, method=method, rng=seed), s, method)


@given(s=st.one_of(any_shape, tie_shapes()), rank=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_exact_routes_return_the_same_factors(s, rank, seed):
    """With separated singular values the factors are unique up to the sign the convention
    fixes, so the gram and full routes must return the same A and B (not only the same K)."""
    rank = min(rank, s.max_rank)
    W = _gaussian(s, seed)
    X = W.reshape(s.m1, s.m2, s.n1, s.n2).transpose(0, 2, 1, 3).reshape(s.rearranged_shape)
    sv = np.linalg.svd(X, compute_uv=False)
    gaps = np.abs(np.diff(sv[: rank + 1])) if rank < len(sv) else np.abs(np.diff(sv))
    assume(np.all(gaps > 0.05 * sv[0]) and sv[rank - 1] > 0.05 * sv[0])
    Kg = kron_svd(W, s, rank, method="gram")
    Kf = kron_svd(W, s, rank, method="full")
    tol = 1e-7 * max(1.0, float(sv[0]))
    np.testing.assert_allclose(Kg.A, Kf.A, atol=tol)
    np.testing.assert_allclose(Kg.B, Kf.B, atol=tol)


# --------------------------------------------------------------------------------------
# Memory estimate of kron_svd (found by mutation testing: constants and the in-place
# rule of the estimate survived)
# --------------------------------------------------------------------------------------
def _svd_need(s: KroneckerShape, rank: int, method: str, b: int, in_place: bool) -> int:
    """The estimate documented in ``tqla.kron.svd_memory``, restated."""
    q, p = s.rearranged_shape
    k = min(q, p)
    if method == "gram":
        return (0 if in_place else q * p * b) + 2 * k * k * b + rank * (q + p) * b
    if method == "full":
        return 2 * q * p * b + (q + p) * k * b + 4 * k * k * b
    ell = min(rank + 10, k)
    return q * p * b + 3 * (q + p) * ell * b + 2 * ell * ell * b


@given(
    s=any_shape,
    rank=st.integers(1, 4),
    method=st.sampled_from(METHODS),
    b=st.sampled_from([4, 8]),
    in_place=st.booleans(),
)
def test_svd_memory_is_the_documented_estimate(s, rank, method, b, in_place):
    from tqla.kron import svd_memory

    rank = min(rank, s.max_rank)
    got = svd_memory(s, rank, method, b, in_place=in_place)
    assert got == _svd_need(s, rank, method, b, in_place and method == "gram")


@given(
    s=st.builds(lambda m1, n1, m2, n2: KroneckerShape((m1, n1), (m2, n2)), dims, dims, dims, dims),
    rank=st.integers(1, 3),
    method=st.sampled_from(METHODS),
    dtype=st.sampled_from(["f2", "f4", "f8"]),
    kernel=st.sampled_from(["numpy", "numba"]),
)
@example(s=KroneckerShape((3, 2), (2, 5)), rank=1, method="gram", dtype="f2", kernel="numba")
@example(s=KroneckerShape((3, 2), (2, 5)), rank=2, method="gram", dtype="f8", kernel="numba")
def test_kron_svd_refuses_exactly_above_max_bytes(s, rank, method, dtype, kernel):
    """kron_svd runs with max_bytes = its estimate and refuses one byte less.  The Numba
    Gram kernels read W in place (no rearranged copy is counted); half precisions add the
    float32 working copy of W."""
    pytest.importorskip("numba")
    rank = min(rank, s.max_rank)
    W = _gaussian(s, 0).astype(dtype)
    half = dtype == "f2"
    b = 4 if half else W.dtype.itemsize
    in_place = method == "gram" and kernel == "numba" and not half
    need = _svd_need(s, rank, method, b, in_place)
    if half:
        need += W.shape[0] * W.shape[1] * 4
    kron_svd(W, s, rank, method=method, kernel=kernel, rng=0, max_bytes=need)
    q, p = s.rearranged_shape
    with pytest.raises(MemoryError, match=f"{min(q, p)}²"):
        kron_svd(W, s, rank, method=method, kernel=kernel, rng=0, max_bytes=need - 1)


# --------------------------------------------------------------------------------------
# Messages that name the argument (found by mutation testing)
# --------------------------------------------------------------------------------------
def test_unrearrange_and_products_name_the_bad_argument():
    from tqla import unrearrange

    s = KroneckerShape((2, 3), (2, 2))
    with pytest.raises(ValueError, match="^X must be a 2-D array"):
        unrearrange(np.zeros(24), s)
    with pytest.raises(ValueError, match=r"^X of shape \(4, 6\) does not match the rearranged"):
        unrearrange(np.zeros((4, 6)), s)
    K = kron_svd(_gaussian(s, 0), s, 1)
    with pytest.raises(TypeError, match="X must have the factors' dtype float64, got float32"):
        K @ np.zeros((6, 2), dtype=np.float32)
    with pytest.raises(TypeError, match="X must have the factors' dtype"):
        np.zeros((2, 4), dtype=np.float32) @ K


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_kron_singular_values_of_half_precision_torch_input(dtype):
    """Half precisions are decomposed in float32 (LAPACK has no half routines)."""
    from tqla.kron import kron_singular_values

    s = KroneckerShape((3, 2), (2, 2))
    W64 = torch.from_numpy(_gaussian(s, 0))
    W = W64.to(getattr(torch, dtype))
    sv = kron_singular_values(W, s)
    assert sv.dtype == W.dtype
    ref = kron_singular_values(W.to(torch.float64), s)
    torch.testing.assert_close(sv.to(torch.float64), ref, rtol=1e-2, atol=1e-2 * float(ref[0]))


def test_truncated_svd_lists_its_methods_in_the_error():
    from tqla import truncated_svd

    with pytest.raises(ValueError, match=r"^method must be one of 'auto', 'gram', 'full', "
                                         r"'randomized', got 'qr'$"):  # fmt: skip
        truncated_svd(np.eye(3), 1, method="qr")


def test_randomized_truncated_svd_is_reproducible_from_its_seed():
    """Third mutation pass (fresh sample, seed 7): ``rng`` reaches the randomized route, so a
    seed gives the same factors bit for bit and another seed (generally) other rounding."""
    from tqla import truncated_svd

    X = np.random.default_rng(0).standard_normal((60, 40))
    a = truncated_svd(X, 5, method="randomized", rng=3)
    b = truncated_svd(X, 5, method="randomized", rng=3)
    c = truncated_svd(X, 5, method="randomized", rng=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
