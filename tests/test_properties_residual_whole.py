"""The pieces of tqla.kron_spectral stated whole (issue 15, fifth pass).

``tqla._spectral_residual``: the residual's three routes field by field (the Gram matrix
and its side, eigenvalues only or eigenvectors too around SMALL_EIGH, the full SVD, the
warm-started block subspace iteration against a reference with the same random draws),
the gradient with exactly the triplets whose weight exceeds 1e-8 (and the number of
eigenvectors asked for), the block planning and growth with their random columns, and the
Schatten norm.  ``tqla._fixed_rank``: points, tangent projection, retraction (the best
rank-r approximation of X + tD), inner product, and the map back to factors with
kron_svd's sign rule on the smaller factor (ties: B).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tqla._spectral_residual as rm
from tqla._fixed_rank import (
    _diag,
    _inner,
    _kron_from_point,
    _Point,
    _point_from_kron,
    _project,
    _Retraction,
)
from tqla._spectral_residual import _Residual, _schatten
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd, rearrange, unrearrange

SHAPES = [
    KroneckerShape((4, 6), (6, 4)),  # 24×24: R 16×36
    KroneckerShape((2, 3), (5, 2)),  # 10×6 (M > N: the Gram route takes EᵀE)
    KroneckerShape((2, 2), (3, 5)),  # 6×10 (M < N: E Eᵀ)
]


def _case(seed, s, scale=1.0):
    rng = np.random.default_rng(seed)
    W = scale * rng.standard_normal(s.matrix_shape)
    X = 0.3 * rearrange(scale * rng.standard_normal(s.matrix_shape), s)
    return W, X, W - unrearrange(X, s)


def test_constants_are_the_documented_ones():
    assert (rm.GRAM_MAX_SIDE, rm.SMALL_EIGH, rm.WEIGHT_CUTOFF) == (2048, 128, 1e-3)


@pytest.mark.parametrize("rank", [1, 3, 5])
@pytest.mark.parametrize("s", SHAPES, ids=str)
def test_residual_starts_as_documented(s, rank, monkeypatch):
    W = np.ones(s.matrix_shape)
    M, N = s.matrix_shape
    n = min(M, N)
    g = np.random.default_rng(0)
    for mode in ("gram", "full", "partial"):
        r = _Residual(np, W, s, mode, g, rank)
        assert (r.n, r.left, r.mode, r.allow_partial) == (n, M <= N, mode, mode == "partial")
        assert (r.k_min, r.k_max, r.k) == (min(n, max(16, 4 * rank)),) + (n,) + (
            min(n, max(16, 4 * rank)),
        )
        assert r.V is None and r.n_evals == 0 and r.rng is g and r.W is W and r.s is s
    monkeypatch.setattr(rm, "GRAM_MAX_SIDE", n)
    r = _Residual(np, W, s, "auto", g, rank)
    assert r.mode == "gram" and not r.allow_partial
    monkeypatch.setattr(rm, "GRAM_MAX_SIDE", n - 1)
    r = _Residual(np, W, s, "auto", g, rank)
    assert r.mode == "partial" and r.allow_partial


@pytest.mark.parametrize("s", SHAPES, ids=str)
@given(seed=st.integers(0, 2**16), small=st.booleans(), vectors=st.booleans())
@settings(max_examples=8, deadline=None)
def test_gram_route_fields(s, seed, small, vectors):
    """G is E Eᵀ on the shorter side; eigenvectors (descending, full set) come with the
    values when asked for or when n ≤ SMALL_EIGH, else the values only."""
    W, X, E = _case(seed, s)
    n = min(E.shape)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rm, "SMALL_EIGH", n if small else n - 1)
        res = _Residual(np, W, s, "gram", np.random.default_rng(0), 1)
        ev = res.evaluate(X, vectors=vectors)
        ev2 = res.evaluate(X)
    assert res.n_evals == 2
    np.testing.assert_array_equal(ev.E, E)
    G = E @ E.T if E.shape[0] <= E.shape[1] else E.T @ E
    np.testing.assert_array_equal(ev.G, G)
    assert ev.U is None and ev.V is None and ev.sig.shape == (n,)
    lam, Q = np.linalg.eigh(G)
    by_eigh = np.sqrt(np.maximum(lam[::-1], 0.0))
    by_eigvalsh = np.sqrt(np.maximum(np.linalg.eigvalsh(G)[::-1], 0.0))
    assert (ev.Q is not None) == (vectors or small)
    assert (ev2.Q is not None) == small
    np.testing.assert_array_equal(ev.sig, by_eigh if vectors or small else by_eigvalsh)
    np.testing.assert_array_equal(ev2.sig, by_eigh if small else by_eigvalsh)
    if ev.Q is not None:
        np.testing.assert_array_equal(ev.Q, Q[:, ::-1])


def test_rank_deficient_gram_gives_zeros_not_nans():
    s = SHAPES[0]
    K = kron_svd(np.random.default_rng(0).standard_normal(s.matrix_shape), s, 1)
    W = K.to_dense()
    for small in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rm, "SMALL_EIGH", 10**6 if small else 0)
            res = _Residual(np, W, s, "gram", np.random.default_rng(0), 1)
            ev = res.evaluate(rearrange(W, s) * 0.5)
        assert np.all(np.isfinite(ev.sig)) and np.all(ev.sig >= 0)


@pytest.mark.parametrize("s", SHAPES, ids=str)
def test_full_route_fields(s):
    W, X, E = _case(1, s)
    res = _Residual(np, W, s, "full", np.random.default_rng(0), 1)
    ev = res.evaluate(X, n_iter=5, vectors=False)
    U, sig, Vh = np.linalg.svd(E, full_matrices=False)
    np.testing.assert_array_equal(ev.sig, sig)
    np.testing.assert_array_equal(ev.U, U)
    np.testing.assert_array_equal(ev.V, Vh.T)
    assert ev.G is None and ev.Q is None and res.n_evals == 1


def _subspace_reference(E, V0, n_iter):
    Q = V0
    for _ in range(n_iter):
        Qy, _ = np.linalg.qr(E @ Q)
        Q, _ = np.linalg.qr(E.T @ Qy)
    Ub, sig, Vbh = np.linalg.svd(E @ Q, full_matrices=False)
    return Ub, sig, Q @ Vbh.T


@given(seed=st.integers(0, 2**16), n_iter=st.integers(0, 5))
@settings(max_examples=6, deadline=None)
def test_partial_route_is_a_warm_started_subspace_iteration(seed, n_iter):
    """Cold (no warm start): k Gaussian columns from the generator and 8 iterations,
    whatever n_iter says; warm: the stored block and n_iter iterations."""
    s = KroneckerShape((6, 6), (6, 6))  # 36×36, n = 36, k = 16
    W, X, E = _case(seed, s)
    res = _Residual(np, W, s, "partial", np.random.default_rng(seed), 1)
    ev = res.evaluate(X, n_iter=n_iter)
    V0 = np.random.default_rng(seed).standard_normal((36, 16))
    Ub, sig, V = _subspace_reference(E, V0, 8)
    np.testing.assert_array_equal(ev.sig, sig)
    np.testing.assert_array_equal(ev.U, Ub)
    np.testing.assert_array_equal(ev.V, V)
    assert ev.E is not None and ev.G is None and res.V is None and res.n_evals == 1
    res.V = ev.V[:, :10]
    ev2 = res.evaluate(X, n_iter=n_iter)
    Ub, sig, V = _subspace_reference(E, ev.V[:, :10], n_iter)
    np.testing.assert_array_equal(ev2.sig, sig)
    np.testing.assert_array_equal(ev2.V, V)
    assert res.n_evals == 2


@pytest.mark.parametrize("s", SHAPES, ids=str)
@given(seed=st.integers(0, 2**16), p=st.sampled_from([2.0, 3.0, 8.0, 64.0, 400.0]),
       mode=st.sampled_from(["gram", "full"]), few=st.booleans())  # fmt: skip
@example(seed=0, p=400.0, mode="gram", few=True)
@settings(max_examples=10, deadline=None)
def test_gradient_keeps_exactly_the_triplets_of_weight_above_1e_8(s, seed, p, mode, few):
    """The gradient is Σ_{i<keep} wᵢ uᵢ vᵢᵀ with keep = #{(σᵢ/σ₁)^(p−1) > 1e-8} (at least
    1): wᵢ = (σᵢ/F)^(p−1) on the SVD routes, σᵢ^(p−2)/F^(p−1) through the Gram
    eigenvectors, the top ``keep`` of which are asked for."""
    W, X, E = _case(seed, s)
    U, sig, Vh = np.linalg.svd(E, full_matrices=False)
    F = _schatten(sig, p)
    keep = max(1, int(np.sum((sig / sig[0]) ** (p - 1) > 1e-8)))
    want = (U[:, :keep] * (sig[:keep] / F) ** (p - 1)) @ Vh[:keep]
    asked = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rm, "SMALL_EIGH", 0 if few else 10**6)
        real = _Residual.complete
        mp.setattr(
            _Residual, "complete", lambda self, ev, k=None: asked.append(k) or real(self, ev, k)
        )
        res = _Residual(np, W, s, mode, np.random.default_rng(0), 1)
        ev = res.evaluate(X)
        got = res.gradient(ev, p, F)
    tol = 1e-9 if mode == "gram" else 1e-13  # full: the same SVD, rounding of the product
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, float(np.abs(want).max())))
    if mode == "gram":
        assert asked[-1] == keep and (asked[0] is None) == (not few)
    else:
        assert asked == [] or asked == [None]


def test_gradient_of_a_zero_residual_keeps_one_triplet():
    s = SHAPES[1]
    W = np.zeros(s.matrix_shape)
    for mode in ("gram", "full"):
        res = _Residual(np, W, s, mode, np.random.default_rng(0), 1)
        ev = res.evaluate(rearrange(W, s))
        g = res.gradient(ev, 4.0, 1.0)
        assert g.shape == W.shape and np.all(g == 0)


def test_few_eigenvectors_by_mrrr_only_when_few_are_needed(monkeypatch):
    """NumPy: the top k eigenvectors by SciPy's MRRR when 8·k ≤ n (the values stay those of
    the full spectrum), else the full eigh, which also refreshes the values."""
    import scipy.linalg

    calls = []
    real = scipy.linalg.eigh
    monkeypatch.setattr(scipy.linalg, "eigh", lambda *a, **k: calls.append(k) or real(*a, **k))
    s = KroneckerShape((4, 6), (6, 4))  # n = 24
    W, X, E = _case(3, s)
    G = E @ E.T
    lam, Q = np.linalg.eigh(G)
    for k, mrrr in ((3, True), (4, False), (None, False)):
        monkeypatch.setattr(rm, "SMALL_EIGH", 0)
        res = _Residual(np, W, s, "gram", np.random.default_rng(0), 1)
        ev = res.evaluate(X)
        sig = ev.sig.copy()
        ev.sig = sig * 2  # a marker: the MRRR route leaves the values alone
        calls.clear()
        res.complete(ev, k)
        assert (calls == [{"subset_by_index": [21, 23], "driver": "evr"}]) == mrrr
        if mrrr:
            np.testing.assert_array_equal(ev.sig, sig * 2)
            assert ev.Q.shape == (24, 3)
            np.testing.assert_allclose(np.abs(ev.Q), np.abs(Q[:, ::-1][:, :3]), atol=1e-10)
        else:
            np.testing.assert_array_equal(ev.sig, np.sqrt(np.maximum(lam[::-1], 0.0)))
            np.testing.assert_array_equal(ev.Q, Q[:, ::-1])
        Qk = ev.Q
        res.complete(ev, k)
        assert ev.Q is Qk  # computed once
    full = _Residual(np, W, s, "full", np.random.default_rng(0), 1)
    ev = full.evaluate(X)
    full.complete(ev, 3)
    assert ev.Q is None


def test_plan_sizes_the_block_from_the_weights_and_warm_starts_it():
    s = KroneckerShape((8, 8), (8, 8))  # n = 64, k_min = 16
    W = np.ones(s.matrix_shape)
    N = s.matrix_shape[1]
    p = 5.0
    # weights (σᵢ/σ₁)^4 > 1e-3 for exactly `need` values
    for need, ncols in ((4, 64), (20, 64), (20, 10), (50, 64)):
        sig = np.r_[np.ones(need), np.full(64 - need, 0.1)]
        res = _Residual(np, W, s, "partial", np.random.default_rng(7), 1)
        res.mode = "gram"  # as after a Gram start: the plan switches to the block
        V = np.random.default_rng(1).standard_normal((N, ncols))
        assert res.plan(sig, V, p)
        k = min(64, max(16, int(1.5 * need) + 1))
        assert (res.mode, res.k) == ("partial", k) and res.V.shape == (N, k)
        cols = min(k, ncols)
        np.testing.assert_array_equal(res.V[:, :cols], V[:, :cols])
        extra = np.random.default_rng(7).standard_normal((N, k - cols))
        np.testing.assert_array_equal(res.V[:, cols:], extra)
        assert not res.plan(sig, V, p)  # the same block again: no change
    # the weight is (σᵢ/σ₁)^(p−1): 0.2^4 = 1.6e-3 counts, 0.2^5 or 0.2^6 would not
    res = _Residual(np, W, s, "partial", np.random.default_rng(7), 1)
    assert res.plan(np.r_[1.0, np.full(29, 0.2), np.full(34, 0.01)], np.ones((N, 64)), p)
    assert res.k == 46
    res = _Residual(np, W, s, "partial", np.random.default_rng(7), 1)
    res.k_max = 20
    assert res.plan(np.ones(64), np.ones((N, 64)), p) and res.k == 20
    gram = _Residual(np, W, s, "gram", np.random.default_rng(7), 1)
    assert not gram.plan(np.ones(64), np.ones((N, 64)), p) and gram.mode == "gram"
    zero = _Residual(np, W, s, "partial", np.random.default_rng(7), 1)
    zero.mode = "gram"
    assert not zero.plan(np.zeros(64), np.ones((N, 64)), p) and zero.mode == "gram"


def test_adapt_keeps_the_warm_start_and_doubles_the_block_with_fresh_columns():
    s = KroneckerShape((8, 8), (8, 8))
    W = np.ones(s.matrix_shape)
    N = s.matrix_shape[1]
    res = _Residual(np, W, s, "partial", np.random.default_rng(9), 1)
    V = np.random.default_rng(2).standard_normal((N, 16))
    p = 5.0
    edge = 1e-3 ** (1 / (p - 1))  # last weight exactly at the cut-off: no growth
    sig = np.r_[np.ones(15), edge * 1.0000001]
    assert res.adapt(sig, p, V) and res.k == 32
    np.testing.assert_array_equal(res.V[:, :16], V)
    np.testing.assert_array_equal(res.V[:, 16:], np.random.default_rng(9).standard_normal((N, 16)))
    V2 = np.random.default_rng(3).standard_normal((N, 32))
    assert not res.adapt(np.r_[np.ones(31), edge * 0.9999999], p, V2)
    assert res.V is V2 and res.k == 32
    assert not res.adapt(np.zeros(32), p, V) and res.V is V
    res.k_max = 40
    assert res.adapt(np.ones(32), p, V2) and res.k == 40 and res.V.shape == (N, 40)
    assert not res.adapt(np.ones(40), p, res.V) and res.k == 40
    gram = _Residual(np, W, s, "gram", np.random.default_rng(9), 1)
    assert not gram.adapt(np.ones(16), p, V) and gram.V is None and gram.k == 16


@given(sig=st.lists(st.floats(0, 1e3), min_size=1, max_size=8), p=st.floats(2.0, 300.0),
       scale=st.sampled_from([1e-200, 1.0, 1e200]))  # fmt: skip
def test_schatten_norm(sig, p, scale):
    sig = np.sort(np.asarray(sig))[::-1] * scale
    got = _schatten(sig, p)
    if sig[0] == 0:
        assert got == 0.0 and type(got) is float
        return
    want = sig[0] * float(np.sum((sig / sig[0]) ** p)) ** (1 / p)
    assert got == pytest.approx(want, rel=1e-14) and type(got) is float
    assert sig[0] <= got * (1 + 1e-14) <= sig[0] * len(sig) ** (1 / p) * (1 + 1e-12)


# --------------------------------------------------------------------------------------
# _fixed_rank
# --------------------------------------------------------------------------------------
def _random_kron(seed, s, r):
    rng = np.random.default_rng(seed)
    return KroneckerSum(rng.standard_normal((r, s.m1, s.n1)), rng.standard_normal((r, s.m2, s.n2)))


@pytest.mark.parametrize("s", SHAPES, ids=str)
@given(seed=st.integers(0, 2**16), r=st.integers(1, 3))
@settings(max_examples=5, deadline=None)
def test_point_of_a_kronecker_sum(s, seed, r):
    K = _random_kron(seed, s, r)
    pt = _point_from_kron(np, K)
    X = rearrange(K.to_dense(), s)
    np.testing.assert_allclose(pt.X, X, atol=1e-12 * np.abs(X).max())
    np.testing.assert_allclose(pt.U.T @ pt.U, np.eye(r), atol=1e-12)
    np.testing.assert_allclose(pt.V.T @ pt.V, np.eye(r), atol=1e-12)
    np.testing.assert_allclose(pt.S, np.linalg.svd(X, compute_uv=False)[:r], rtol=1e-12)
    np.testing.assert_array_equal(pt.X, (pt.U * pt.S) @ pt.V.T)
    np.testing.assert_array_equal(_diag(np, pt.S), np.diag(pt.S))
    assert _inner(np, pt.U, pt.U) == pytest.approx(r, rel=1e-12)
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    assert _inner(np, a, b) == 15.0 and type(_inner(np, a, b)) is float


@pytest.mark.parametrize("s", SHAPES, ids=str)
@given(seed=st.integers(0, 2**16), r=st.integers(1, 3), t=st.sampled_from([0.0, 0.1, 1.0, 7.0]))
@settings(max_examples=5, deadline=None)
def test_projection_and_retraction(s, seed, r, t):
    rng = np.random.default_rng(seed + 1)
    pt = _point_from_kron(np, _random_kron(seed, s, r))
    Z = rng.standard_normal(pt.X.shape)
    Pu, Pv = pt.U @ pt.U.T, pt.V @ pt.V.T
    PZ = _project(np, pt, Z)
    np.testing.assert_allclose(PZ, Pu @ Z + Z @ Pv - Pu @ Z @ Pv, atol=1e-12)
    np.testing.assert_allclose(_project(np, pt, PZ), PZ, atol=1e-12)  # a projection
    pt2 = _Retraction(np, pt, PZ)(t)
    U, S, Vh = np.linalg.svd(pt.X + t * PZ)
    best = (U[:, :r] * S[:r]) @ Vh[:r]
    np.testing.assert_allclose(pt2.X, best, atol=1e-10 * max(1.0, S[0]))
    np.testing.assert_allclose(pt2.S, S[:r], rtol=1e-10, atol=1e-12)
    assert pt2.U.shape == pt.U.shape and pt2.V.shape == pt.V.shape and pt2.S.shape == (r,)
    np.testing.assert_allclose(pt2.U.T @ pt2.U, np.eye(r), atol=1e-10)
    np.testing.assert_allclose(pt2.V.T @ pt2.V, np.eye(r), atol=1e-10)


@pytest.mark.parametrize("s", SHAPES + [KroneckerShape((3, 2), (2, 3))], ids=str)
@given(seed=st.integers(0, 2**16), r=st.integers(1, 3))
@settings(max_examples=5, deadline=None)
def test_factors_of_a_point_follow_kron_svds_sign_rule(s, seed, r):
    """A point made from kron_svd's answer maps back to that answer (the same sign rule:
    the largest-magnitude entry of each term's smaller factor positive, B at ties), with
    C-contiguous factors."""
    r = min(r, s.max_rank)
    W = np.random.default_rng(seed).standard_normal(s.matrix_shape)
    K0 = kron_svd(W, s, r)
    for flip in (1.0, -1.0):
        pt = _point_from_kron(np, KroneckerSum(K0.A * flip, K0.B * flip))
        K = _kron_from_point(np, pt, s)
        np.testing.assert_allclose(K.A, K0.A, atol=1e-10)
        np.testing.assert_allclose(K.B, K0.B, atol=1e-10)
        assert K.A.flags.c_contiguous and K.B.flags.c_contiguous
        small = K.B if s.m2 * s.n2 <= s.m1 * s.n1 else K.A
        flat = small.reshape(r, -1)
        assert np.all(flat[np.arange(r), np.abs(flat).argmax(axis=1)] > 0)


def test_factors_of_a_point_with_zero_or_negative_zero_weights():
    s = KroneckerShape((2, 3), (3, 2))
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((6, 2)))
    V, _ = np.linalg.qr(rng.standard_normal((6, 2)))
    for S in (np.array([2.0, 0.0]), np.array([2.0, -1e-300])):
        K = _kron_from_point(np, _Point(np, U, S, V), s)
        assert np.all(np.isfinite(K.A)) and np.all(K.B[1] == 0) and np.all(K.A[1] == 0)
        np.testing.assert_allclose(K.A[0] * 1, np.sign(K.A[0]) * np.abs(U[:, 0]).reshape(2, 3)
                                   * np.sqrt(2), atol=1e-12)  # fmt: skip
