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
