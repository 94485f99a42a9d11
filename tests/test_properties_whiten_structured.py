"""tqla.whiten_structured stated whole (docs/auto.md §1).

* ``kron_moment_factors``: exact recovery of Kronecker-product moments (any number of
  factors, each symmetric PSD), one factor per mode, the checks of ``col_modes`` and C.
* ``whitened_kron_spectral``: ``tqla.kron_spectral`` runs on W·(S₁⊗S₂) with S_k the unit
  norm roots of C's nearest Kronecker factors (damped), every option and ``init`` (mapped
  into the whitened frame) handed on, factors mapped back by S_k⁺, every result field kept;
  exact recovery; C = I gives the plain fit bit for bit.
* ``whitened_tt_matrix``: Ŵ·S is the TT-SVD of W·S for any root S of C = C₁⊗⋯⊗C_d (a
  dense reference with Cholesky roots), ranks/eps/method handed on, exact at full ranks.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla.spectral as spectral_mod
from tqla import KroneckerSum, kron_spectral, tt_matrix
from tqla.whiten_structured import (
    kron_moment_factors,
    whitened_kron_spectral,
    whitened_tt_matrix,
)

ttm_mod = importlib.import_module("tqla.tt_matrix")  # tqla.tt_matrix is also the function
torch = pytest.importorskip("torch")

seeds = st.integers(0, 2**20)
modes_st = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)


def _spd(n, rng):
    X = rng.standard_normal((2 * n, n)) * np.linspace(0.5, 2.0, n)
    return X.T @ X / (2 * n) + 0.1 * np.eye(n)


def _kron_all(fs):
    out = np.ones((1, 1))
    for F in fs:
        out = np.kron(out, F)
    return out


def _raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------
# kron_moment_factors
# --------------------------------------------------------------------------------------
@given(modes=modes_st, seed=seeds)
@settings(max_examples=30)
def test_kron_moment_factors_recover_a_kronecker_moment(modes, seed):
    rng = np.random.default_rng(seed)
    F = [_spd(n, rng) for n in modes]
    C = _kron_all(F)
    G = kron_moment_factors(C, modes)
    assert isinstance(G, list) and len(G) == len(modes)
    for Gk, n in zip(G, modes):
        assert isinstance(Gk, np.ndarray) and Gk.dtype == np.float64 and Gk.shape == (n, n)
        np.testing.assert_allclose(Gk, Gk.T, atol=1e-12 * np.abs(Gk).max())
        assert np.linalg.eigvalsh((Gk + Gk.T) / 2).min() >= -1e-10 * np.abs(Gk).max()
    np.testing.assert_allclose(_kron_all(G), C, rtol=0, atol=1e-10 * np.abs(C).max())
    # torch and float32 inputs are read as float64
    G32 = kron_moment_factors(torch.tensor(C, dtype=torch.float32), modes)
    assert all(isinstance(g, np.ndarray) and g.dtype == np.float64 for g in G32)
    np.testing.assert_allclose(_kron_all(G32), C, rtol=0, atol=1e-5 * np.abs(C).max())


def test_kron_moment_factors_of_one_mode_is_the_symmetrised_moment():
    C = np.array([[2.0, 1.0], [0.0, 3.0]])
    (G,) = kron_moment_factors(C, [2])
    np.testing.assert_array_equal(G, (C + C.T) / 2)


def test_kron_moment_factors_argument_checks():
    C = np.eye(6)
    _raises(
        TypeError,
        "col_modes must be a sequence of positive ints, got 6",
        kron_moment_factors,
        C,
        6,
    )
    _raises(
        TypeError,
        "col_modes must be a sequence of positive ints, got (2, 'a')",
        kron_moment_factors,
        C,
        (2, "a"),
    )
    _raises(ValueError, "col_modes must hold at least one mode", kron_moment_factors, C, ())
    with pytest.raises(ValueError, match=r"^col_modes must be >= 1, got 0"):
        kron_moment_factors(C, (0, 6))
    _raises(
        ValueError,
        "C must be the (cols × cols) = (6, 6) second moment of the inputs, got shape (4, 4)",
        kron_moment_factors,
        np.eye(4),
        (2, 3),
    )
    # a numpy integer array of modes is accepted
    assert [g.shape for g in kron_moment_factors(C, np.array([3, 2]))] == [(3, 3), (2, 2)]


# --------------------------------------------------------------------------------------
# whitened_kron_spectral
# --------------------------------------------------------------------------------------
SHAPE = ((3, 2), (2, 2))


def _unit_roots(F):
    """The implementation-independent quantities: S_k with S_k·S_kᵀ = F_k/‖F_k‖ up to an
    orthogonal factor; returned as the damped, normalised moments F_k/λ_max(F_k)."""
    return [Fk / np.linalg.eigvalsh(Fk).max() for Fk in F]


def test_whitened_kron_spectral_hands_everything_to_kron_spectral(monkeypatch):
    rng = np.random.default_rng(0)
    F = [_spd(2, rng), _spd(2, rng)]
    C = np.kron(F[0], F[1])
    W = rng.standard_normal((6, 4))
    init = KroneckerSum(rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 2, 2)))
    seen = {}
    real = spectral_mod.kron_spectral

    def spy(Ww, s, rank, *, init=None, **options):
        seen.update(Ww=np.asarray(Ww), s=s, rank=rank, init=init, options=options)
        out = real(Ww, s, rank, init=init, **options)
        seen["out"] = out
        return out

    monkeypatch.setattr(spectral_mod, "kron_spectral", spy)
    K = whitened_kron_spectral(W, C, SHAPE, 2, damp=0.0, init=init, p=[4, 8], max_iter=3, tol=0.0)
    assert seen["rank"] == 2 and seen["s"].matrix_shape == (6, 4)
    assert seen["options"] == {"p": [4, 8], "max_iter": 3, "tol": 0.0}
    Ww = seen["Ww"]
    # W' = W·(S₁⊗S₂) with S_k·S_kᵀ = F_k/λ_max(F_k): W'·W'ᵀ = W·(F₁⊗F₂)/(λ₁λ₂)·Wᵀ
    N1, N2 = _unit_roots(F)
    np.testing.assert_allclose(Ww @ Ww.T, W @ np.kron(N1, N2) @ W.T, atol=1e-12)
    # the init, in the whitened frame, is (A·S₁)⊗(B·S₂): its dense form is K_init·(S₁⊗S₂)
    S = np.linalg.lstsq(W, Ww, rcond=None)[0]  # W has full column rank: S₁⊗S₂ itself
    np.testing.assert_allclose(S @ S.T, np.kron(N1, N2), atol=1e-10)
    np.testing.assert_allclose(np.asarray(seen["init"].to_dense()), init.to_dense() @ S, atol=1e-10)
    # the factors map back: K·(S₁⊗S₂) = K'
    out = seen["out"]
    np.testing.assert_allclose(K.to_dense() @ S, out.to_dense(), atol=1e-10)
    assert K.rank == 2 and K.kshape == out.kshape
    for field in ("history", "spectral_error", "kron_svd_error", "svd"):
        assert getattr(K, field) is getattr(out, field)
    for field in ("frobenius_error", "n_iter", "n_evals", "time_s"):
        assert getattr(K, field) == getattr(out, field)
    # without init, none is handed on; rank defaults to 1
    seen.clear()
    whitened_kron_spectral(W, C, SHAPE, p=[4], max_iter=1)
    assert (
        seen["init"] is None
        and seen["rank"] == 1
        and seen["options"]
        == {
            "p": [4],
            "max_iter": 1,
        }
    )


def test_whitened_kron_spectral_damping_reaches_the_roots(monkeypatch):
    """A singular factor C₂ with damp: each root is of C_k + damp·mean(diag C_k)·I."""
    rng = np.random.default_rng(1)
    F1 = _spd(2, rng)
    F2 = np.array([[1.0, 1.0], [1.0, 1.0]])  # singular
    C = np.kron(F1, F2)
    W = rng.standard_normal((6, 4))
    seen = {}
    real = spectral_mod.kron_spectral

    def spy(Ww, s, rank, **options):
        seen["Ww"] = np.asarray(Ww)
        return real(Ww, s, rank, **options)

    monkeypatch.setattr(spectral_mod, "kron_spectral", spy)
    for damp in (0.5, 0.0, None):  # None: the default, no damping
        kw = {} if damp is None else {"damp": damp}
        whitened_kron_spectral(W, C, SHAPE, 1, p=[4], max_iter=1, **kw)
        damp = damp or 0.0
        D = []
        # the nearest Kronecker factors are F1, F2 up to a scale that normalisation removes
        for Fk in (F1, F2):
            Fd = Fk + damp * np.trace(Fk) / 2 * np.eye(2)
            D.append(Fd / np.linalg.eigvalsh(Fd).max())
        Ww = seen["Ww"]
        np.testing.assert_allclose(Ww @ Ww.T, W @ np.kron(*D) @ W.T, atol=1e-10)


@given(seed=seeds, r=st.integers(1, 2), damp=st.sampled_from([0.0, 0.1]))
@settings(max_examples=10)
def test_whitened_kron_spectral_recovers_a_kronecker_sum_of_the_rank(seed, r, damp):
    rng = np.random.default_rng(seed)
    truth = KroneckerSum(rng.standard_normal((r, 3, 2)), rng.standard_normal((r, 2, 2)))
    W = np.asarray(truth.to_dense())
    C = np.kron(_spd(2, rng), _spd(2, rng))
    K = whitened_kron_spectral(W, C, SHAPE, r, damp=damp, p=[4], max_iter=2)
    np.testing.assert_allclose(K.to_dense(), W, rtol=0, atol=1e-8 * np.abs(W).max())
    assert float(K.spectral_error) <= 1e-8 * np.abs(W).max()


def test_whitened_kron_spectral_with_identity_moment_is_the_plain_fit_in_ws_library():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((6, 4))
    for X, C in (
        (W, np.eye(4)),
        (torch.tensor(W), 3 * np.eye(4)),
        (torch.tensor(W, dtype=torch.float32), np.eye(4)),
    ):
        K = whitened_kron_spectral(X, C, SHAPE, 2, p=[4, 8], max_iter=3)
        P = kron_spectral(X, SHAPE, 2, p=[4, 8], max_iter=3)
        assert type(K.A) is type(X) and K.A.dtype == X.dtype and K.B.dtype == X.dtype
        if C[0, 0] != 1.0:  # a multiple of I: the same fit up to the rounding of the scale
            tol = 1e-12 if X.dtype == torch.float64 else 1e-5
            np.testing.assert_allclose(np.asarray(K.to_dense()), np.asarray(P.to_dense()), atol=tol)
            continue
        np.testing.assert_array_equal(np.asarray(K.A), np.asarray(P.A))
        np.testing.assert_array_equal(np.asarray(K.B), np.asarray(P.B))
        assert K.spectral_error == P.spectral_error
        assert K.frobenius_error == P.frobenius_error
        assert K.n_iter == P.n_iter and K.n_evals == P.n_evals and K.svd == P.svd


def test_whitened_kron_spectral_argument_checks():
    W = np.ones((6, 4))
    _raises(
        ValueError,
        "damp must be a finite number >= 0, got -1.0",
        whitened_kron_spectral,
        W,
        np.eye(4),
        SHAPE,
        damp=-1.0,
    )
    with pytest.raises(ValueError, match=r"^C must be the \(cols × cols\) = \(4, 4\)"):
        whitened_kron_spectral(W, np.eye(3), SHAPE)
    for r in (0, 5):
        _raises(
            ValueError,
            "rank must satisfy 1 <= rank <= min(m1·n1, m2·n2) = min(6, 4) = 4 for A (3, 2) ⊗ "
            f"B (2, 2), got {r}",
            whitened_kron_spectral,
            W,
            np.eye(4),
            SHAPE,
            r,
        )
    _raises(
        ValueError,
        "W of shape (4, 6) does not match the Kronecker shape A (3, 2) ⊗ B (2, 2), which "
        "needs (3·2, 2·2) = (6, 4)",
        whitened_kron_spectral,
        np.ones((4, 6)),
        np.eye(6),
        SHAPE,
    )


# --------------------------------------------------------------------------------------
# whitened_tt_matrix
# --------------------------------------------------------------------------------------
def _reference_tt(W, F, row_modes, col_modes, **kw):
    """Ŵ with Ŵ·L = TT-SVD(W·L), L = L₁⊗⋯⊗L_d Cholesky roots (any root gives the same Ŵ)."""
    L = _kron_all([np.linalg.cholesky(Fk) for Fk in F])
    T = tt_matrix(W @ L, row_modes, col_modes, **kw)
    return np.asarray(T.to_dense()) @ np.linalg.inv(L), T


@given(
    d=st.integers(1, 3),
    seed=seeds,
    data=st.data(),
)
@settings(max_examples=20)
def test_whitened_tt_matrix_is_the_tt_svd_in_the_whitened_frame(d, seed, data):
    rng = np.random.default_rng(seed)
    rm = tuple(data.draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    cm = tuple(data.draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    M, N = math.prod(rm), math.prod(cm)
    F = [_spd(n, rng) for n in cm]
    C = _kron_all(F)
    W = rng.standard_normal((M, N))
    bounds = [
        min(
            math.prod(rm[: k + 1]) * math.prod(cm[: k + 1]),
            math.prod(rm[k + 1 :]) * math.prod(cm[k + 1 :]),
        )
        for k in range(d - 1)
    ]
    full = [1, *(data.draw(st.integers(1, b)) for b in bounds), 1]
    n = [a * b for a, b in zip(rm, cm)]
    for k in range(1, d):  # reachable: r_k <= r_(k-1)·n_k and r_k <= n_(k+1)·r_(k+1)
        full[k] = min(full[k], full[k - 1] * n[k - 1])
    for k in range(d - 1, 0, -1):
        full[k] = min(full[k], n[k] * full[k + 1])
    ranks = full[1:-1]
    T = whitened_tt_matrix(W, C, rm, cm, ranks=ranks)
    want, Tref = _reference_tt(W, F, rm, cm, ranks=ranks)
    assert T.ranks == Tref.ranks
    got = np.asarray(T.to_dense())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * (np.abs(want).max() + 1))
    # full ranks: exact
    Tf = whitened_tt_matrix(W, C, rm, cm, ranks=bounds)
    np.testing.assert_allclose(
        np.asarray(Tf.to_dense()), W, rtol=0, atol=1e-9 * (np.abs(W).max() + 1)
    )


def test_whitened_tt_matrix_hands_on_ranks_eps_method_and_damp(monkeypatch):
    rng = np.random.default_rng(3)
    rm, cm = (2, 3), (2, 2)
    F = [_spd(2, rng), np.array([[1.0, 1.0], [1.0, 1.0]])]  # the second factor singular
    C = _kron_all(F)
    W = rng.standard_normal((6, 4))
    seen = []
    real = ttm_mod.tt_matrix

    def spy(X, row_modes, col_modes, **kw):
        seen.append((np.asarray(X), tuple(row_modes), tuple(col_modes), kw))
        return real(X, row_modes, col_modes, **kw)

    monkeypatch.setattr(ttm_mod, "tt_matrix", spy)
    whitened_tt_matrix(W, C, rm, cm, ranks=[2], method="svd", damp=0.5)
    whitened_tt_matrix(W, C, list(rm), list(cm), eps=0.3)
    assert [s[1:] for s in seen] == [
        (rm, cm, {"ranks": [2], "eps": None, "method": "svd"}),
        (rm, cm, {"ranks": None, "eps": 0.3, "method": "auto"}),
    ]
    # W·S with S·Sᵀ ∝ the damped factors (each root normalised to spectral norm 1)
    for (X, *_), damp in zip(seen, (0.5, 0.0)):
        D = []
        for Fk in F:
            Fd = Fk + damp * np.trace(Fk) / 2 * np.eye(2)
            D.append(Fd / np.linalg.eigvalsh(Fd).max())
        np.testing.assert_allclose(X @ X.T, W @ np.kron(*D) @ W.T, atol=1e-10)
    # damp=0 with a singular factor: the unseen column direction of Ŵ is zero
    T = whitened_tt_matrix(W, C, rm, cm, ranks=[4])
    null = np.kron(np.eye(2), np.array([1.0, -1.0]) / np.sqrt(2))  # C's null space
    np.testing.assert_allclose(np.asarray(T.to_dense()) @ null.T, 0.0, atol=1e-10)


def test_whitened_tt_matrix_eps_is_relative_to_the_whitened_norm():
    rng = np.random.default_rng(4)
    rm, cm = (2, 2), (2, 2)
    F = [_spd(2, rng), _spd(2, rng)]
    C = _kron_all(F)
    W = rng.standard_normal((4, 4))
    L = _kron_all([np.linalg.cholesky(Fk) for Fk in F])
    for eps in (0.05, 0.3, 0.7):
        T = whitened_tt_matrix(W, C, rm, cm, eps=eps)
        ref = tt_matrix(W @ L, rm, cm, eps=eps)
        assert T.ranks == ref.ranks
        err = np.linalg.norm((W - np.asarray(T.to_dense())) @ L)
        assert err <= eps * np.linalg.norm(W @ L) * (1 + 1e-9)


def test_whitened_tt_matrix_with_identity_moment_is_the_plain_fit_in_ws_library():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((6, 4))
    for X, C in ((W, np.eye(4)), (torch.tensor(W, dtype=torch.float32), 2 * np.eye(4))):
        T = whitened_tt_matrix(X, C, (3, 2), (2, 2), ranks=[2])
        P = tt_matrix(X, (3, 2), (2, 2), ranks=[2])
        assert T.ranks == P.ranks
        for G in T.cores:
            assert type(G) is type(X) and G.dtype == X.dtype
        tol = 1e-12 if X.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(
            np.asarray(T.to_dense()), np.asarray(P.to_dense()), rtol=0, atol=tol * 10
        )


def test_whitened_tt_matrix_argument_checks():
    W = np.ones((6, 4))
    _raises(
        ValueError,
        "col_modes (2, 3) must multiply to W's 4 columns",
        whitened_tt_matrix,
        W,
        np.eye(4),
        (3, 2),
        (2, 3),
    )
    _raises(
        ValueError,
        "col_modes must hold at least one mode",
        whitened_tt_matrix,
        W,
        np.eye(4),
        (3, 2),
        [],
    )
    _raises(
        TypeError,
        "col_modes must be a sequence of positive ints, got 4",
        whitened_tt_matrix,
        W,
        np.eye(4),
        (6,),
        4,
    )
    _raises(
        ValueError,
        "damp must be a finite number >= 0, got nan",
        whitened_tt_matrix,
        W,
        np.eye(4),
        (3, 2),
        (2, 2),
        damp=float("nan"),
    )
    _raises(
        ValueError,
        "C must be the (cols × cols) = (4, 4) second moment of the inputs, got shape (2, 2)",
        whitened_tt_matrix,
        W,
        np.eye(2),
        (3, 2),
        (2, 2),
    )


def test_a_zero_moment_sees_nothing_and_fits_zero():
    """C = 0 (no input seen): every root is zero, Ŵ = 0, finite (no division by ‖S‖ = 0)."""
    W = np.random.default_rng(6).standard_normal((6, 4))
    for damp in (0.0, 0.5):
        T = whitened_tt_matrix(W, np.zeros((4, 4)), (3, 2), (2, 2), ranks=[2], damp=damp)
        np.testing.assert_array_equal(np.asarray(T.to_dense()), 0.0)
        K = whitened_kron_spectral(W, np.zeros((4, 4)), SHAPE, 1, damp=damp, p=[4], max_iter=1)
        np.testing.assert_array_equal(np.asarray(K.to_dense()), 0.0)


def test_w_is_named_in_its_errors():
    for fn, args in (
        (whitened_kron_spectral, (np.eye(4), SHAPE)),
        (whitened_tt_matrix, (np.eye(4), (1,), (4,))),
    ):
        _raises(ValueError, "W must be 2-D, got 1-D array of shape (4,)", fn, np.ones(4), *args)
        _raises(
            TypeError,
            "W must have a real floating dtype (float32 or float64), got int64; convert it "
            "with .astype(float64) / .to(torch.float64)",
            fn,
            np.ones((6, 4), dtype=np.int64),
            *args,
        )


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e2])
def test_the_roots_are_normalised_to_spectral_norm_one(monkeypatch, scale):
    """Each factor root is scaled to ‖S_k‖₂ = 1 whatever the moment's scale (small or
    large): the whitened matrix handed to the solver is W·(S₁⊗S₂) with
    S_k·S_kᵀ = C_k/λ_max(C_k)."""
    rng = np.random.default_rng(7)
    F = [_spd(2, rng), _spd(2, rng)]
    W = rng.standard_normal((6, 4))
    N1, N2 = _unit_roots(F)
    seen = {}
    real_ks, real_tt = spectral_mod.kron_spectral, ttm_mod.tt_matrix

    def spy_ks(Ww, s, rank, **options):
        seen["ks"] = np.asarray(Ww)
        return real_ks(Ww, s, rank, **options)

    def spy_tt(X, row_modes, col_modes, **kw):
        seen["tt"] = np.asarray(X)
        return real_tt(X, row_modes, col_modes, **kw)

    monkeypatch.setattr(spectral_mod, "kron_spectral", spy_ks)
    monkeypatch.setattr(ttm_mod, "tt_matrix", spy_tt)
    C = scale * np.kron(F[0], F[1])
    whitened_kron_spectral(W, C, SHAPE, 1, p=[4], max_iter=1)
    whitened_tt_matrix(W, C, (3, 2), (2, 2), ranks=[2])
    want = W @ np.kron(N1, N2) @ W.T
    for key in ("ks", "tt"):
        np.testing.assert_allclose(seen[key] @ seen[key].T, want, atol=1e-10)
