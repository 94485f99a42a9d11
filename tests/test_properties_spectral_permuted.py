"""tqla.spectral_permuted against its definitions (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla
import tqla.spectral_permuted as sp

FAST = {"p": (8.0,), "max_iter": 2}
SHAPE = ((4, 3), (3, 4))


@given(seed=st.integers(0, 2**16), n_iter=st.integers(1, 2))
@settings(max_examples=3, deadline=None)
def test_errors_hold_the_start_the_refit_and_one_entry_per_alternation(seed, n_iter):
    W = np.random.default_rng(seed).standard_normal((12, 12))
    P = tqla.permuted_kron_spectral(W, SHAPE, 1, n_iter=n_iter, tol=0.0, spectral_options=FAST,
                                    frobenius_options={"n_iter": 2})  # fmt: skip
    # entry 0: the Frobenius start, 1: its spectral refit, then one per alternation run
    assert 1 <= P.n_iter <= n_iter and len(P.errors) == 2 + P.n_iter
    rel = np.linalg.norm(W - P.to_dense(), 2) / np.linalg.norm(W, 2)
    assert P.errors[-1] == pytest.approx(rel, rel=1e-9)


def test_spectral_refits_get_the_documented_default_options(monkeypatch):
    seen = []
    real = sp.kron_spectral

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("p", "max_iter", "rng")})
        return real(*args, **{**kwargs, **FAST})

    monkeypatch.setattr(sp, "kron_spectral", spy)
    W = np.random.default_rng(0).standard_normal((12, 12))
    tqla.permuted_kron_spectral(W, SHAPE, 1, n_iter=1)
    assert seen and all(s == {"p": (8.0, 32.0, 128.0), "max_iter": 10, "rng": 0} for s in seen)
    seen.clear()
    tqla.permuted_kron_spectral(W, SHAPE, 1, n_iter=1, spectral_options={"rng": 5})
    assert seen and all(s == {"p": (8.0, 32.0, 128.0), "max_iter": 10, "rng": 5} for s in seen)


def test_zero_matrix_has_zero_relative_errors():
    P = tqla.permuted_kron_spectral(np.zeros((12, 12)), SHAPE, 1, n_iter=2,
                                    spectral_options=FAST)  # fmt: skip
    assert P.errors == [0.0] * len(P.errors) and P.spectral_error.upper == 0.0
    assert not np.any(P.to_dense())
