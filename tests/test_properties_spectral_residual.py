"""tqla._spectral_residual (the residual of kron_spectral) against its definitions: the
singular values every route reports are E's, the gradient is U diag((σ/F)^(p−1)) Vᵀ,
the partial route's block grows and is planned as documented (found by mutation testing;
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla._spectral_residual as rm
from tqla import kron_spectral
from tqla.kron import KroneckerShape, rearrange, unrearrange

S = KroneckerShape((4, 6), (6, 4))  # W: 24×24, R(W): 16×36


def _case(seed: int, scale: float):
    rng = np.random.default_rng(seed)
    W = scale * rng.standard_normal(S.matrix_shape)
    X = rearrange(scale * rng.standard_normal(S.matrix_shape), S) * 0.3
    return W, X, W - unrearrange(X, S)


def _gradient_by_definition(E: np.ndarray, p: float) -> np.ndarray:
    U, sig, Vh = np.linalg.svd(E)
    F = rm._schatten(sig, p)
    return (U * (sig / F) ** (p - 1)) @ Vh, F


@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["gram", "full"]),
       small=st.booleans(), scale=st.sampled_from([1e-3, 1.0, 1e3]))  # fmt: skip
@settings(max_examples=20, deadline=None)
def test_every_route_reports_the_singular_values_of_e(seed, mode, small, scale):
    """With and without eigenvectors (SMALL_EIGH decides on the Gram route)."""
    W, X, E = _case(seed, scale)
    res = rm._Residual(np, W, S, mode, np.random.default_rng(0), 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rm, "SMALL_EIGH", 0 if small else 10**6)
        ev = res.evaluate(X)
    want = np.linalg.svd(E, compute_uv=False)
    np.testing.assert_allclose(ev.sig, want, rtol=0, atol=1e-9 * want[0])


@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["gram", "full"]),
       small=st.booleans(), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       p=st.sampled_from([2.0, 4.0, 16.0, 128.0]))  # fmt: skip
@settings(max_examples=30, deadline=None)
def test_gradient_is_the_schatten_gradient(seed, mode, small, scale, p):
    """∇_E ‖E‖_p = U diag((σ/F)^(p−1)) Vᵀ on every route, at any scale of E (triplets of
    weight < 1e-8 may be dropped: tolerance 1e-7 of the largest weight, 1)."""
    W, X, E = _case(seed, scale)
    res = rm._Residual(np, W, S, mode, np.random.default_rng(0), 1)
    want, F = _gradient_by_definition(E, p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rm, "SMALL_EIGH", 0 if small else 10**6)
        got = res.gradient(res.evaluate(X), p, F)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_few_eigenvectors_route_gives_the_same_fit(monkeypatch):
    """NumPy input above SMALL_EIGH takes eigenvalues only, then the top eigenvectors by
    MRRR when few are needed; the fit equals the one that takes all eigenvectors."""
    W = np.random.default_rng(1).standard_normal(S.matrix_shape)
    opts = {"svd": "gram", "rng": 0, "p": (4.0, 128.0), "max_iter": 4}
    ref = kron_spectral(W, S, 1, **opts)
    monkeypatch.setattr(rm, "SMALL_EIGH", 4)
    got = kron_spectral(W, S, 1, **opts)
    np.testing.assert_allclose(got.to_dense(), ref.to_dense(), rtol=0, atol=1e-9)
    assert got.spectral_error.estimate == pytest.approx(ref.spectral_error.estimate, rel=1e-9)


def test_auto_takes_the_partial_route_above_gram_max_side(monkeypatch):
    W = np.random.default_rng(2).standard_normal(S.matrix_shape)
    monkeypatch.setattr(rm, "GRAM_MAX_SIDE", 8)
    K = kron_spectral(W, S, 1, svd="auto", rng=0, p=(4.0,), max_iter=2)
    assert K.svd == "partial"
    res = rm._Residual(np, W, S, "auto", np.random.default_rng(0), 1)
    assert res.mode == "partial" and res.allow_partial


def _partial(n_side: int = 48, rank: int = 1):
    s = KroneckerShape((n_side // 4, n_side // 4), (4, 4))  # R(W): (n/4)² × 16
    W = np.random.default_rng(3).standard_normal(s.matrix_shape)
    return rm._Residual(np, W, s, "partial", np.random.default_rng(0), rank), s


def test_partial_block_doubles_up_to_its_cap_keeping_the_warm_start():
    res, s = _partial()
    k0 = res.k
    assert k0 == min(res.n, max(16, 4 * 1))
    flat = np.ones(k0)  # the last weight is not negligible: grow
    V = np.random.default_rng(0).standard_normal((s.matrix_shape[1], k0))
    assert res.adapt(flat, 4.0, V)
    assert res.k == min(res.k_max, 2 * k0) and res.V.shape == (V.shape[0], res.k)
    np.testing.assert_array_equal(res.V[:, :k0], V)
    steep = 0.1 ** np.arange(res.k)  # negligible last weight: keep the block
    V2 = res.V.copy()
    assert not res.adapt(steep, 4.0, V2) and res.V is V2
    res.k = res.k_max
    assert not res.adapt(np.ones(res.k), 4.0, V2) and res.k == res.k_max


def test_partial_plan_never_shrinks_the_block_and_says_when_it_changed():
    res, s = _partial()
    N = s.matrix_shape[1]
    V = np.random.default_rng(0).standard_normal((N, res.n))
    steep = 0.1 ** np.arange(res.n)  # one triplet matters: k would be k_min
    k0, V0 = res.k, res.V
    assert not res.plan(steep, V, 4.0) and (res.k, res.V) == (k0, V0)
    flat = np.ones(res.n)  # every triplet matters: the block grows to min(n, 1.5·n + 1)
    assert res.plan(flat, V, 4.0) and res.k == res.n
    np.testing.assert_array_equal(res.V, V[:, : res.n])


@pytest.mark.parametrize("shape", [((1, 2), (1, 3)), ((2, 1), (3, 1))])
def test_partial_route_on_a_single_row_or_column_agrees_with_full(shape):
    """min(M, N) = 1: the partial route's block holds one singular value (plan looks at
    σ₁ only) and the fit agrees with the full route."""
    M, N = KroneckerShape.of(shape).matrix_shape
    W = np.random.default_rng(0).standard_normal((M, N))
    Kp = kron_spectral(W, shape, 1, p=4, svd="partial", rng=0)
    Kf = kron_spectral(W, shape, 1, p=4, svd="full", rng=0)
    assert Kp.svd == "partial" and Kf.svd == "full"
    assert Kp.n_iter == Kf.n_iter
    tol = 64 * np.finfo(np.float64).eps * float(np.linalg.norm(W))
    assert np.linalg.norm(Kp.to_dense() - Kf.to_dense()) <= tol
    assert abs(Kp.spectral_error.estimate - Kf.spectral_error.estimate) <= tol
