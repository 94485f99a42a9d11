"""Tests of tqla.permuted_kron_spectral: LSAP steps alternating with spectral refits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla
from tqla.testing import assert_nonincreasing, assert_valid_permutation

FAST = {"p": (8.0, 32.0), "max_iter": 5}


def _planted(seed: int, noise: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = np.kron(rng.standard_normal((4, 3)), rng.standard_normal((3, 4)))
    W = W[rng.permutation(12)][:, rng.permutation(12)]
    return W + noise * rng.standard_normal(W.shape)


@settings(max_examples=8)
@given(st.integers(0, 2**31), st.sampled_from(["both", "rows", "cols"]))
def test_monotone_and_consistent(seed, permute):
    W = _planted(seed)
    P = tqla.permuted_kron_spectral(W, ((4, 3), (3, 4)), 1, permute=permute, n_iter=2,
                                    spectral_options=FAST)
    assert_nonincreasing(P.errors, rtol=0)  # spectral error never increases
    assert_valid_permutation(P.row_perm, 12)
    assert_valid_permutation(P.col_perm, 12)
    rel = np.linalg.norm(W - P.to_dense(), 2) / np.linalg.norm(W, 2)
    assert P.errors[-1] == pytest.approx(rel, rel=1e-9)
    assert P.spectral_error.upper >= np.linalg.norm(W - P.to_dense(), 2)
    assert P.norm == "spectral"


def test_permutations_help_on_scrambled_input():
    W = _planted(3, noise=0.01)
    P = tqla.permuted_kron_spectral(W, ((4, 3), (3, 4)), 1, spectral_options=FAST,
                                    frobenius_options={"n_restarts": 8, "rng": 0})
    K = tqla.kron_spectral(W, ((4, 3), (3, 4)), 1, rng=0, **FAST)
    assert P.errors[-1] < 0.9 * K.spectral_error.estimate / np.linalg.norm(W, 2)


def test_torch_agrees():
    torch = pytest.importorskip("torch")
    W = _planted(1)
    P = tqla.permuted_kron_spectral(W, ((4, 3), (3, 4)), 1, n_iter=1, spectral_options=FAST)
    Pt = tqla.permuted_kron_spectral(torch.tensor(W), ((4, 3), (3, 4)), 1, n_iter=1,
                                     spectral_options=FAST)
    assert isinstance(Pt.row_perm, torch.Tensor)
    np.testing.assert_allclose(Pt.errors, P.errors, rtol=1e-7)


def test_bad_input():
    W = _planted(0)
    with pytest.raises(ValueError, match="permute must be one of"):
        tqla.permuted_kron_spectral(W, ((4, 3), (3, 4)), 1, permute="diagonal")
    with pytest.raises(ValueError, match="n_iter must be >= 0"):
        tqla.permuted_kron_spectral(W, ((4, 3), (3, 4)), 1, n_iter=-1)
    with pytest.raises(ValueError, match="p must be >= 2"):
        tqla.permuted_kron_spectral(W, ((4, 3), (3, 4)), 1, spectral_options={"p": 1})
