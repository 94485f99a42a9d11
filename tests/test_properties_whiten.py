"""tqla.whiten against its definitions (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md).  Float64 throughout: tolerances of a few
hundred ulps of the entries' scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqla.whiten import (
    als_sweeps,
    moment_root,
    nearest_kron_moment,
    whitened_error,
    whitened_kron_spectrum,
    whitened_kron_svd,
    whitened_spectrum,
)

TOL = 1e-12


def _moment(n: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((3 * n, n)) * np.linspace(0.2, 2.0, n)
    return X.T @ X / (3 * n)


@given(n=st.integers(1, 6), seed=st.integers(0, 2**16), damp=st.sampled_from([0.0, 0.3]))
@settings(max_examples=20)
def test_moment_root_squares_to_the_damped_moment(n, seed, damp):
    C = _moment(n, seed)
    S, Sp = moment_root(C, damp=damp)
    want = C + damp * np.trace(C) / n * np.eye(n)
    np.testing.assert_allclose(S @ S.T, want, rtol=0, atol=TOL * np.abs(want).max() * n)
    np.testing.assert_allclose(Sp @ S, np.eye(n), rtol=0, atol=1e-9)  # full rank here


@given(n=st.integers(1, 5), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_a_trivial_factor_of_the_moment_is_exact(n, seed):
    C = _moment(n, seed)
    for n1, n2 in ((n, 1), (1, n)):
        C1, C2 = nearest_kron_moment(C, n1, n2)
        assert C1.shape == (n1, n1) and C2.shape == (n2, n2)
        np.testing.assert_allclose(np.kron(C1, C2), C, rtol=0, atol=TOL * np.abs(C).max() * n)


def test_whitened_error_is_the_relative_c_norm():
    rng = np.random.default_rng(0)
    W, A, C = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)), _moment(6, 1)
    E = W - A
    want = np.sqrt(np.trace(E @ C @ E.T) / np.trace(W @ C @ W.T))
    assert whitened_error(W, A, C) == pytest.approx(want, rel=1e-12)
    assert whitened_error(W, A, C, relative=False) == pytest.approx(
        np.sqrt(np.trace(E @ C @ E.T)), rel=1e-12
    )


def test_als_runs_in_the_damped_moment():
    """n_als sweeps start at the closed form and solve in C + damp·mean(diag C)·I."""
    rng = np.random.default_rng(2)
    s = ((3, 2), (2, 3))
    W, C = rng.standard_normal((6, 6)), _moment(6, 3)
    for damp in (0.0, 0.5):
        K0 = whitened_kron_svd(W, C, s, 2, damp=damp)
        K = whitened_kron_svd(W, C, s, 2, damp=damp, n_als=2)
        Creg = C + damp * np.trace(C) / 6 * np.eye(6)
        A, B = als_sweeps(W, Creg, np.asarray(K0.A), np.asarray(K0.B), 2)
        np.testing.assert_allclose(K.A, A, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(K.B, B, rtol=1e-9, atol=1e-12)


def test_kron_spectrum_names_w():
    with pytest.raises(ValueError, match=r"^W must be 2-D, got 1-D"):
        whitened_kron_spectrum(np.zeros(4), np.eye(4), ((2, 2), (1, 1)))


def test_whitened_spectrum_is_that_of_w_times_the_root():
    rng = np.random.default_rng(4)
    W, C = rng.standard_normal((5, 6)), _moment(6, 5)
    for damp in (0.0, 0.2):
        S, _ = moment_root(C, damp=damp)
        sig = whitened_spectrum(W, C, damp=damp)
        np.testing.assert_allclose(sig, np.linalg.svd(W @ S, compute_uv=False), rtol=1e-12)
        Creg = C + damp * np.trace(C) / 6 * np.eye(6)
        assert np.sum(sig**2) == pytest.approx(np.trace(W @ Creg @ W.T), rel=1e-12)


# Found by a fresh sample (seed 1) of tqla/whiten.py's mutants
def test_results_keep_the_input_dtype_and_errors_name_the_argument():
    from tqla.whiten import whitened_svd

    rng = np.random.default_rng(6)
    W, C = rng.standard_normal((5, 6)).astype(np.float32), _moment(6, 7)
    U, s, Vh = whitened_svd(W, C, 2)
    assert U.dtype == s.dtype == Vh.dtype == np.float32
    with pytest.raises(ValueError, match=r"^approx must have W's shape \(5, 6\), got \(6, 5\)$"):
        whitened_error(W, W.T, C)
    with pytest.raises(ValueError, match=r"^n_als must be >= 0, got -1$"):
        whitened_kron_svd(np.eye(4), np.eye(4), ((2, 2), (2, 2)), n_als=-1)
    with pytest.raises(ValueError, match=r"^W must be 2-D, got 1-D"):
        whitened_kron_svd(np.zeros(4), np.eye(4), ((2, 2), (1, 1)))


@pytest.mark.parametrize("diagonal", [True, False])
def test_the_svd_method_reaches_the_solver_on_both_routes(monkeypatch, diagonal):
    """``method=`` is passed to ``truncated_svd`` on the dense and the diagonal-moment route
    (mutation survivor of the fresh whiten.py sample, seed 5)."""
    import tqla.whiten as whiten_mod

    calls: list[str] = []
    real = whiten_mod.truncated_svd

    def spy(*args, **kwargs):
        calls.append(kwargs.get("method", "<default>"))
        return real(*args, **kwargs)

    monkeypatch.setattr(whiten_mod, "truncated_svd", spy)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 5))
    f = rng.random(5) + 0.5
    C = f if diagonal else np.diag(f) + 0.1  # a dense moment takes the other route
    whiten_mod.whitened_svd(W, C, 2, method="full")
    assert calls == ["full"]


# --------------------------------------------------------------------------------------
# Fifth pass: every function stated whole (arguments, defaults, thresholds, messages)
# --------------------------------------------------------------------------------------
EPS = float(np.finfo(np.float64).eps)


def _raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message


def test_damp_is_checked_everywhere_with_its_whole_message():
    import tqla.whiten as wm

    W, C = np.ones((4, 4)), np.eye(4)
    calls = [
        lambda d: wm.moment_root(C, damp=d),
        lambda d: wm.whitened_svd(W, C, 1, damp=d),
        lambda d: wm.whitened_svd(W, np.ones(4), 1, damp=d),
        lambda d: wm.whitened_spectrum(W, C, damp=d),
        lambda d: wm.whitened_spectrum(W, np.ones(4), damp=d),
        lambda d: wm.whitened_kron_spectrum(W, C, ((2, 2), (2, 2)), damp=d),
        lambda d: wm.whitened_kron_svd(W, C, ((2, 2), (2, 2)), damp=d),
    ]
    for bad in (-1.0, -1e-300, float("nan"), float("inf"), True, False, "0.1", None, [0.1]):
        for call in calls:
            _raises(ValueError, f"damp must be a finite number >= 0, got {bad!r}", call, bad)
    for ok in (0, 1, 0.0, np.float64(0.5)):
        for call in calls:
            call(ok)
    S_int, _ = wm.moment_root(np.diag([1.0, 3.0]), damp=1)
    S_flt, _ = wm.moment_root(np.diag([1.0, 3.0]), damp=1.0)
    np.testing.assert_array_equal(S_int, S_flt)


def test_moment_root_is_the_clipped_damped_root_with_the_n_eps_pseudo_inverse():
    # C = Q·diag(λ)·Qᵀ: S = Q·√λ, S⁺ = √λ⁺·Qᵀ with λ <= n·eps·λ_max counted as zero
    for n, ratio, inverted in ((2, 2.0, False), (2, 2.5, True), (3, 3.0, False), (3, 3.5, True)):
        lam = np.array([1.0, ratio * EPS] + [1.0] * (n - 2))  # cut = n·eps·1
        S, Sp = moment_root(np.diag(lam))
        np.testing.assert_array_equal(np.sort(np.abs(S).max(axis=0)), np.sort(np.sqrt(lam)))
        big = np.abs(Sp).max()  # 1/√λ of the small eigenvalue when it is inverted, else 1
        if inverted:
            assert big == pytest.approx(1 / np.sqrt(ratio * EPS), rel=1e-12)
        else:
            assert big == 1.0
    # negative eigenvalues are clipped to 0, the input is symmetrised
    C = np.array([[2.0, 1.0], [0.0, -3.0]])  # symmetric part [[2, .5], [.5, -3]]
    S, Sp = moment_root(C)
    lam, Q = np.linalg.eigh((C + C.T) / 2)
    want = (Q * np.clip(lam, 0, None)) @ Q.T
    np.testing.assert_allclose(S @ S.T, want, atol=1e-14)
    np.testing.assert_allclose(S @ Sp, np.outer(Q[:, 1], Q[:, 1]), atol=1e-14)
    # damping is relative to the mean diagonal: S·Sᵀ = C + damp·tr(C)/n·I
    C = np.diag([4.0, 2.0, 0.0])
    S, Sp = moment_root(C, damp=0.5)
    np.testing.assert_allclose(S @ S.T, np.diag([5.0, 3.0, 1.0]), atol=1e-14)
    np.testing.assert_allclose(Sp @ S, np.eye(3), atol=1e-14)
    # the zero moment: S = S⁺ = 0 (nothing is inverted)
    S, Sp = moment_root(np.zeros((2, 2)))
    np.testing.assert_array_equal(S, 0.0)
    np.testing.assert_array_equal(Sp, 0.0)


def test_moment_root_returns_cs_library_and_dtype_and_names_c():
    torch = pytest.importorskip("torch")
    C = _moment(3, 1)
    S, Sp = moment_root(torch.tensor(C, dtype=torch.float32))
    assert isinstance(S, torch.Tensor) and S.dtype == torch.float32 and Sp.dtype == torch.float32
    S64, Sp64 = moment_root(C)
    np.testing.assert_allclose(S.numpy(), S64, atol=1e-5)
    np.testing.assert_allclose(Sp.numpy(), Sp64, atol=1e-4)
    _raises(
        ValueError,
        "C must be the (cols × cols) = (2, 2) second moment of the inputs, got shape (2, 3)",
        moment_root,
        np.ones((2, 3)),
    )
    _raises(ValueError, "C must be 2-D, got 1-D array of shape (3,)", moment_root, np.ones(3))


def test_diagonal_moments_are_clipped_damped_thresholded_and_checked():
    from tqla.whiten import whitened_svd

    W = np.arange(1.0, 7.0).reshape(2, 3)
    d = np.array([4.0, -1.0, 1.0])  # clipped to [4, 0, 1]
    for damp in (0.0, 0.6):
        dd = np.clip(d, 0, None)
        dd = dd + damp * dd.mean()
        sig = whitened_spectrum(W, d, damp=damp)
        np.testing.assert_allclose(sig, np.linalg.svd(W * np.sqrt(dd), compute_uv=False))
        U, s, Vh = whitened_svd(W, d, 2, damp=damp)
        inv = np.where(dd > 0, 1 / np.sqrt(np.where(dd > 0, dd, 1)), 0.0)
        np.testing.assert_allclose((U * s) @ Vh, (W * np.sqrt(dd)) * inv, atol=1e-12)
    # the pseudo-inverse threshold n·eps·max(d): a column at exactly the cut is dropped
    for ratio, kept in ((3.0, False), (3.5, True)):
        d = np.array([1.0, ratio * EPS, 1.0])
        U, s, Vh = whitened_svd(np.ones((2, 3)), d, 1)
        assert (Vh[0, 1] != 0.0) == kept
    # integer diagonals are read as numbers; others are named
    U, s, Vh = whitened_svd(W, np.array([1, 2, 3]), 1)
    np.testing.assert_allclose(s, whitened_spectrum(W, np.array([1.0, 2.0, 3.0]))[:1])
    _raises(
        ValueError,
        "C: a diagonal moment must have one entry per column of W (3), got shape (2,)",
        whitened_svd,
        W,
        np.ones(2),
        1,
    )
    _raises(
        TypeError,
        "C must be a real array, got dtype bool",
        whitened_spectrum,
        W,
        np.ones(3, dtype=bool),
    )
    _raises(ValueError, "C must be finite", whitened_svd, W, np.array([1.0, np.nan, 1.0]), 1)
    _raises(ValueError, "C must be finite", whitened_spectrum, W, np.array([1.0, np.inf, 1.0]))


def test_whitened_error_every_route_and_check():
    rng = np.random.default_rng(8)
    W, A = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    E = W - A
    d = np.array([1.0, 2.0, -1.0, 0.5])  # a diagonal moment, clipped like everywhere
    D = np.diag(np.clip(d, 0, None))
    want_abs = np.sqrt(np.trace(E @ D @ E.T))
    assert whitened_error(W, A, d, relative=False) == pytest.approx(want_abs, rel=1e-12)
    assert whitened_error(W, A, d) == pytest.approx(
        want_abs / np.sqrt(np.trace(W @ D @ W.T)), rel=1e-12
    )
    C = np.array([[2.0, 1.0, 0, 0], [0, 2.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    Cs = (C + C.T) / 2
    assert whitened_error(W, A, C, relative=False) == pytest.approx(
        np.sqrt(np.trace(E @ Cs @ E.T)), rel=1e-12
    )
    # a zero reference: relative error 0; an indefinite C: its negative part counts as 0
    assert whitened_error(0 * W, A, np.eye(4)) == 0.0
    assert whitened_error(W, A, np.zeros(4)) == 0.0
    assert whitened_error(W, A, -np.eye(4), relative=False) == 0.0
    assert whitened_error(W, A, -np.eye(4)) == 0.0
    assert isinstance(whitened_error(W, A, np.eye(4)), float)
    _raises(
        ValueError, "approx must be 2-D, got 1-D array of shape (4,)", whitened_error, W, A[0], C
    )
    _raises(ValueError, "W must be 2-D, got 1-D array of shape (4,)", whitened_error, W[0], A, C)
    _raises(
        ValueError,
        "C must be the (cols × cols) = (4, 4) second moment of the inputs, got shape (3, 3)",
        whitened_error,
        W,
        A,
        np.eye(3),
    )


def test_whitened_spectrum_of_any_library_is_float64_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    W, C = rng.standard_normal((4, 3)), _moment(3, 2)
    want = whitened_spectrum(W, C)
    for X in (torch.tensor(W), torch.tensor(W, dtype=torch.float32)):
        for M in (C, torch.tensor(C)):
            got = whitened_spectrum(X, M)
            assert isinstance(got, np.ndarray) and got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-6)
    got = whitened_spectrum(torch.tensor(W, dtype=torch.float32), np.ones(3))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.linalg.svd(W, compute_uv=False), rtol=1e-6)
    _raises(ValueError, "W must be 2-D, got 1-D array of shape (3,)", whitened_spectrum, W[0], C)


def test_nearest_kron_moment_arguments_and_the_zero_moment():
    C = np.kron(_moment(2, 3), _moment(3, 4))
    for n1, n2 in ((0, 6), (6, 0)):
        name = "n1" if n1 == 0 else "n2"
        _raises(ValueError, f"{name} must be >= 1, got 0", nearest_kron_moment, C, n1, n2)
    _raises(TypeError, "n1 must be an integer, got float 2.0", nearest_kron_moment, C, 2.0, 3)
    _raises(TypeError, "n2 must be an integer, got bool True", nearest_kron_moment, C, 2, True)
    _raises(
        ValueError,
        "C must be the (cols × cols) = (4, 4) second moment of the inputs, got shape (6, 6)",
        nearest_kron_moment,
        C,
        2,
        2,
    )
    C1, C2 = nearest_kron_moment(np.zeros((6, 6)), 2, 3)
    assert C1.shape == (2, 2) and C2.shape == (3, 3)
    np.testing.assert_array_equal(C1, 0.0)
    np.testing.assert_array_equal(C2, 0.0)


@given(seed=st.integers(0, 2**16), sign=st.sampled_from([1.0, -1.0]))
@settings(max_examples=15)
def test_nearest_kron_moment_factors_are_psd_with_nonnegative_traces(seed, sign):
    """Whatever sign kron_svd gives the pair, both factors come back PSD, product = C."""
    F1, F2 = _moment(2, seed), _moment(3, seed + 1)
    C = np.kron(F1, F2)
    import tqla.whiten as wm

    real = wm.kron_svd

    def flipped(*args, **kwargs):  # the other sign of the (unique up to sign) pair
        K = real(*args, **kwargs)
        return KroneckerSum(sign * np.asarray(K.A), sign * np.asarray(K.B))

    from tqla import KroneckerSum

    mp = pytest.MonkeyPatch()
    mp.setattr(wm, "kron_svd", flipped)
    try:
        C1, C2 = nearest_kron_moment(C, 2, 3)
    finally:
        mp.undo()
    assert np.trace(C1) > 0 and np.trace(C2) > 0
    assert np.linalg.eigvalsh(C1).min() >= -1e-12 and np.linalg.eigvalsh(C2).min() >= -1e-12
    np.testing.assert_allclose(np.kron(C1, C2), C, atol=1e-12 * np.abs(C).max())


def test_kron_spectrum_tail_is_the_closed_form_error_and_the_roots_cache():
    import tqla.whiten as wm

    rng = np.random.default_rng(10)
    s = ((3, 2), (2, 3))
    W = rng.standard_normal((6, 6))
    F1, F2 = _moment(2, 11), _moment(3, 12)
    C = np.kron(F1, F2)
    for damp in (0.0, 0.3):
        sig = whitened_kron_spectrum(W, C, s, damp=damp)
        assert isinstance(sig, np.ndarray) and sig.shape == (6,)
        Creg = np.kron(
            F1 + damp * np.trace(F1) / 2 * np.eye(2), F2 + damp * np.trace(F2) / 3 * np.eye(3)
        )
        # rank r closed form: its error in C₁⊗C₂ (damped) is the tail of the spectrum
        for r in (1, 2, 4):
            K = whitened_kron_svd(W, C, s, r, damp=damp)
            E = W - np.asarray(K.to_dense())
            err2 = np.trace(E @ Creg @ E.T) * (np.trace(Creg) / np.trace(Creg))
            assert err2 == pytest.approx(np.sum(sig[r:] ** 2), rel=1e-9, abs=1e-12)
    # the cache: filled under (n1, n2, damp), then used
    cache: dict = {}
    first = whitened_kron_spectrum(W, C, s, damp=0.3, _roots=cache)
    assert list(cache) == [(2, 3, 0.3)]
    S1, S1p, S2, S2p = cache[(2, 3, 0.3)]
    want = wm._kron_roots(wm._moment64(C, 6), wm.KroneckerShape.of(s), 0.3)
    for a, b in zip((S1, S1p, S2, S2p), want):
        np.testing.assert_array_equal(a, b)
    cache[(2, 3, 0.3)] = (2 * S1, S1p, S2, S2p)  # a planted entry is what is used
    np.testing.assert_allclose(
        whitened_kron_spectrum(W, C, s, damp=0.3, _roots=cache), 2 * first, rtol=1e-12
    )
    np.testing.assert_array_equal(whitened_kron_spectrum(W, C, s, damp=0.3), first)
    whitened_kron_spectrum(W, C, s, damp=0.0, _roots=cache)
    assert sorted(cache) == [(2, 3, 0.0), (2, 3, 0.3)]


def test_whitened_kron_svd_hands_the_whitened_matrix_to_kron_svd(monkeypatch):
    import tqla.whiten as wm

    seen = []
    real = wm.kron_svd

    def spy(X, shape, rank, **kw):
        seen.append((np.asarray(X).copy(), rank, kw))
        return real(X, shape, rank, **kw)

    monkeypatch.setattr(wm, "kron_svd", spy)
    rng = np.random.default_rng(13)
    s = ((3, 2), (2, 3))
    W = rng.standard_normal((6, 6))
    F1, F2 = _moment(2, 14), _moment(3, 15)
    K = whitened_kron_svd(W, np.kron(F1, F2), s, 2)
    X, rank, kw = seen[-1]
    assert rank == 2 and kw == {"method": "full"}
    np.testing.assert_allclose(X @ X.T, W @ np.kron(F1, F2) @ W.T, rtol=1e-10)
    assert whitened_kron_svd(W, np.eye(6), s).rank == 1  # rank defaults to 1
    assert seen[-1][1] == 1
    del K
    _raises(
        ValueError,
        "C must be the (cols × cols) = (6, 6) second moment of the inputs, got shape (4, 4)",
        whitened_kron_svd,
        W,
        np.eye(4),
        s,
    )


def test_als_sweeps_run_exactly_n_exact_block_solves(monkeypatch):
    import tqla.whiten as wm

    rng = np.random.default_rng(16)
    r, (m1, n1), (m2, n2) = 2, (3, 2), (2, 3)
    W = rng.standard_normal((m1 * m2, n1 * n2))
    C = _moment(6, 17)
    A0, B0 = rng.standard_normal((r, m1, n1)), rng.standard_normal((r, m2, n2))

    def err(A, B):
        E = W - sum(np.kron(A[k], B[k]) for k in range(r))
        return np.trace(E @ C @ E.T)

    # one half-step is the exact least-squares minimiser over A (dense reference)
    cols = []
    for k in range(r):
        for i in range(m1):
            for j in range(n1):
                Ak = np.zeros((r, m1, n1))
                Ak[k, i, j] = 1.0
                cols.append(sum(np.kron(Ak[q], B0[q]) for q in range(r)).ravel())
    S, _ = moment_root(C)
    G = np.array([(c.reshape(W.shape) @ S).ravel() for c in cols]).T
    a = np.linalg.lstsq(G, (W @ S).ravel(), rcond=None)[0]
    A_ref = a.reshape(r, m1, n1)
    calls = []
    real = wm._solve_a

    def count(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(wm, "_solve_a", count)
    A1, B1 = als_sweeps(W, C, A0, B0, 1)
    assert len(calls) == 2
    assert err(A1, B1) <= err(A_ref, B0) * (1 + 1e-12) <= err(A0, B0)
    A_half = real((W @ C).reshape(m1, m2, n1, n2), C.reshape(n1, n2, n1, n2), B0)
    np.testing.assert_allclose(A_half, A_ref, atol=1e-9)
    calls.clear()
    errs = [err(A0, B0)]
    A, B = A0, B0
    for _ in range(3):
        A, B = als_sweeps(W, C, A, B, 1)
        errs.append(err(A, B))
    assert all(b <= a * (1 + 1e-12) for a, b in zip(errs, errs[1:]))
    calls.clear()
    A3, B3 = als_sweeps(W, C, A0, B0, 3)
    assert len(calls) == 6
    np.testing.assert_allclose(A3, A, atol=1e-9)
    calls.clear()
    A0_, B0_ = als_sweeps(W, C, A0, B0, 0)
    assert calls == [] and A0_ is A0 and B0_ is B0


def test_whitened_permuted_kron_refits_in_the_permuted_moment(monkeypatch):
    import tqla.permuted as pm
    from tqla.whiten import whitened_permuted_kron

    rng = np.random.default_rng(18)
    s = ((2, 2), (2, 2))
    W = rng.standard_normal((4, 4))
    C = _moment(4, 19)
    seen = {}
    real = pm.permuted_kron

    def spy(X, shape, rank, **options):
        seen.update(shape=shape, rank=rank, options=options)
        out = real(X, shape, rank, **options)
        seen["out"] = out
        return out

    monkeypatch.setattr(pm, "permuted_kron", spy)
    P = whitened_permuted_kron(W, C, s, 2, damp=0.1, n_als=1, n_iter=2, rng=3)
    assert seen["rank"] == 2 and seen["options"] == {"n_iter": 2, "rng": 3}
    Q = seen["out"]
    rp, cp = np.asarray(Q.row_perm), np.asarray(Q.col_perm)
    np.testing.assert_array_equal(P.row_perm, rp)
    np.testing.assert_array_equal(P.col_perm, cp)
    inv_r, inv_c = np.argsort(rp), np.argsort(cp)
    Wk, Ck = W[inv_r][:, inv_c], C[inv_c][:, inv_c]
    K = whitened_kron_svd(Wk, Ck, s, 2, damp=0.1, n_als=1)
    np.testing.assert_allclose(P.kron.to_dense(), K.to_dense(), atol=1e-12)
    np.testing.assert_allclose(P.to_dense(), np.asarray(K.to_dense())[rp][:, cp], atol=1e-12)
    assert P.errors[:-1] == list(Q.errors[:-1])
    assert P.errors[-1] == pytest.approx(whitened_error(Wk, K.to_dense(), Ck), rel=1e-12)
    assert P.n_iter == Q.n_iter and P.permuted == Q.permuted
    assert P.timings == Q.timings and P.restart_errors == Q.restart_errors
    # defaults: rank 1, no damping, no ALS
    P1 = whitened_permuted_kron(W, C, s, n_iter=1)
    Q = seen["out"]
    inv_r, inv_c = np.argsort(np.asarray(Q.row_perm)), np.argsort(np.asarray(Q.col_perm))
    K1 = whitened_kron_svd(W[inv_r][:, inv_c], C[inv_c][:, inv_c], s, 1)
    assert seen["rank"] == 1 and P1.rank == 1
    np.testing.assert_allclose(P1.kron.to_dense(), K1.to_dense(), atol=1e-12)
    _raises(
        ValueError,
        "C must be the (cols × cols) = (4, 4) second moment of the inputs, got shape (3, 3)",
        whitened_permuted_kron,
        W,
        np.eye(3),
        s,
    )
    _raises(
        ValueError, "W must be 2-D, got 1-D array of shape (4,)", whitened_permuted_kron, W[0], C, s
    )


def test_whitened_permuted_kron_keeps_ws_library_and_dtype():
    torch = pytest.importorskip("torch")
    from tqla.whiten import whitened_permuted_kron

    W = torch.tensor(np.random.default_rng(20).standard_normal((4, 4)), dtype=torch.float32)
    P = whitened_permuted_kron(W, np.eye(4), ((2, 2), (2, 2)), 1, n_iter=1)
    assert isinstance(P.kron.A, torch.Tensor) and P.kron.A.dtype == torch.float32
    assert P.kron.B.dtype == torch.float32


def test_a_float32_moment_is_used_in_float64():
    """The moment is read in float64 whatever its dtype: a float32 (or torch) moment gives
    the float64 answer of its values, dense or diagonal."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    W = rng.standard_normal((4, 5))
    C32 = _moment(5, 22).astype(np.float32)
    d32 = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    for M32 in (C32, d32):
        M64 = M32.astype(np.float64)
        for damp in (0.0, 0.3):
            want = whitened_spectrum(W, M64, damp=damp)
            for M in (M32, torch.tensor(M32)):
                got = whitened_spectrum(W, M, damp=damp)
                np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
        A = W + 0.1
        assert whitened_error(W, A, M32) == pytest.approx(whitened_error(W, A, M64), rel=1e-13)


def test_damp_defaults_to_zero_everywhere():
    """With a singular moment damping changes every answer; the default is no damping."""
    import tqla.whiten as wm

    rng = np.random.default_rng(23)
    X = rng.standard_normal((3, 4))
    C = X.T @ X  # rank 3 of 4
    d = np.array([1.0, 0.0, 2.0, 0.5])
    W = rng.standard_normal((4, 4))
    s = ((2, 2), (2, 2))
    pairs = [
        (lambda **k: wm.moment_root(C, **k)),
        (lambda **k: wm.whitened_svd(W, C, 2, **k)),
        (lambda **k: wm.whitened_svd(W, d, 2, **k)),
        (lambda **k: wm.whitened_spectrum(W, C, **k)),
        (lambda **k: wm.whitened_spectrum(W, d, **k)),
        (lambda **k: wm.whitened_kron_spectrum(W, C, s, **k)),
        (lambda **k: wm.whitened_kron_svd(W, C, s, 2, **k).to_dense()),
    ]

    def parts(out):
        return [np.asarray(a) for a in out] if isinstance(out, tuple) else [np.asarray(out)]

    for call in pairs:
        default, zero, damped = parts(call()), parts(call(damp=0.0)), parts(call(damp=1.0))
        for a, b in zip(default, zero):
            np.testing.assert_array_equal(a, b)
        assert not all(np.allclose(a, b) for a, b in zip(default, damped))


def test_times_kron_contracts_with_the_optimised_order(monkeypatch):
    """W·(S₁⊗S₂) by einsum with optimize=True (M·N·(n1 + n2) multiply-adds, never the
    Kronecker product), equal to the dense product."""
    import tqla.whiten as wm

    rng = np.random.default_rng(24)
    W, S1, S2 = (
        rng.standard_normal((5, 6)),
        rng.standard_normal((2, 2)),
        rng.standard_normal((3, 3)),
    )
    calls = []
    real = np.einsum

    def spy(subscripts, *operands, **kw):
        calls.append((subscripts, kw.get("optimize", False)))
        return real(subscripts, *operands, **kw)

    monkeypatch.setattr(np, "einsum", spy)
    got = wm._times_kron(W, S1, S2)
    assert calls == [("mab,ac,bd->mcd", True)]
    np.testing.assert_allclose(got, W @ np.kron(S1, S2), atol=1e-12)


def test_nearest_kron_moment_of_a_traceless_factor_keeps_the_positive_side():
    """trace(C₁) = 0 exactly (an indefinite input): the sign is chosen by trace(C₂) >= 0,
    whatever its size; the sides are then projected onto the PSD cone."""
    for c in (0.1, 0.7, 3.0):
        C = np.kron(np.diag([1.0, -1.0]), c * np.eye(2))
        C1, C2 = nearest_kron_moment(C, 2, 2)
        assert np.trace(C2) > 0
        np.testing.assert_allclose(
            np.kron(C1, C2), np.kron(np.diag([1.0, 0.0]), c * np.eye(2)), atol=1e-12
        )


@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 1e-3]))
@settings(max_examples=10)
def test_nearest_kron_moment_of_a_small_moment_is_exact(seed, scale):
    C = scale * np.kron(_moment(2, seed), _moment(3, seed + 7))
    C1, C2 = nearest_kron_moment(C, 2, 3)
    assert np.trace(C1) > 0 and np.trace(C2) > 0
    np.testing.assert_allclose(np.kron(C1, C2), C, atol=1e-12 * np.abs(C).max())


def test_a_dense_moment_is_named_when_it_is_not_a_float_matrix():
    from tqla.two_sided import two_sided_whitened_svd
    from tqla.whiten import whitened_svd

    W = np.ones((3, 4))
    dtype_rule = "must have a real floating dtype (float32 or float64), got int64; convert it "
    dtype_rule += "with .astype(float64) / .to(torch.float64)"
    _raises(
        ValueError,
        "C must be 2-D, got 3-D array of shape (4, 4, 1)",
        whitened_svd,
        W,
        np.ones((4, 4, 1)),
        1,
    )
    _raises(TypeError, f"C {dtype_rule}", whitened_svd, W, np.eye(4, dtype=int), 1)
    _raises(TypeError, f"C {dtype_rule}", whitened_spectrum, W, np.eye(4, dtype=int))
    _raises(
        TypeError,
        f"row_moment {dtype_rule}",
        two_sided_whitened_svd,
        W,
        np.eye(3, dtype=int),
        np.eye(4),
        1,
    )
    _raises(
        TypeError,
        f"col_moment {dtype_rule}",
        two_sided_whitened_svd,
        W,
        np.ones(3),
        np.eye(4, dtype=int),
        1,
    )


def test_whitened_permuted_kron_error_of_a_float32_matrix_is_the_float64_refits():
    """``errors[-1]`` is the whitened error of the float64 refit (before the factors are cast
    to W's dtype)."""
    from tqla.whiten import whitened_permuted_kron

    rng = np.random.default_rng(25)
    W32 = rng.standard_normal((4, 6)).astype(np.float32)
    C = _moment(6, 26)
    s = ((2, 3), (2, 2))
    P = whitened_permuted_kron(W32, C, s, 1, n_iter=1)
    assert P.kron.A.dtype == np.float32
    rp, cp = np.asarray(P.row_perm), np.asarray(P.col_perm)
    inv_r, inv_c = np.argsort(rp), np.argsort(cp)
    Wk = W32.astype(np.float64)[inv_r][:, inv_c]
    Ck = C[inv_c][:, inv_c]
    K = whitened_kron_svd(Wk, Ck, s, 1)
    assert P.errors[-1] == pytest.approx(whitened_error(Wk, K.to_dense(), Ck), rel=1e-11)


def test_diag_root_of_an_empty_moment_is_empty_and_silent():
    """n = 0: no mean of an empty vector is taken (it would warn and give NaN), whatever
    the damping; the root and its pseudo-inverse are empty float64 vectors."""
    import warnings

    from tqla.whiten import _diag_root

    for damp in (0.0, 0.5):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            root, inv = _diag_root(np.zeros(0), 0, damp)
        assert root.shape == inv.shape == (0,)
        assert root.dtype == inv.dtype == np.float64
