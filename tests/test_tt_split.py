"""The TT-SVD's building block (one split of an unfolding) and the CPU-torch host route."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tqla import tt_matrix, tt_svd
from tqla.tt import _split, _top_eig

EPS64 = float(np.finfo(np.float64).eps)


def _lowish_rank(rows: int, cols: int, seed: int) -> np.ndarray:
    """A matrix with a decaying spectrum (so that truncation matters)."""
    rng = np.random.default_rng(seed)
    k = min(rows, cols)
    U, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    V, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    return (U * 0.7 ** np.arange(k)) @ V.T


@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    cap=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    use_delta=st.booleans(),
)
def test_split_dropped_energy_is_the_true_residual(rows, cols, cap, seed, use_delta):
    C = _lowish_rank(rows, cols, seed)
    total = float(np.sum(C * C))
    delta2 = 0.05 * total if use_delta else None
    Q, B, dropped = _split(np, C, cap, delta2, "gram")
    r = Q.shape[1]
    assert r <= max(1, min(cap, rows, cols)) or (r == rows and delta2 is None)
    np.testing.assert_allclose(Q.T @ Q, np.eye(r), atol=1e-8)
    resid = float(np.sum((C - Q @ B) ** 2))
    tol = 1e-8 * total + 1e-300
    assert abs(resid - dropped) <= tol
    # the Gram route reaches the SVD's optimum at the same rank
    s = np.linalg.svd(C, compute_uv=False)
    assert abs(resid - float(np.sum(s[r:] ** 2))) <= tol
    if delta2 is not None and r < min(cap, rows, cols):  # the rank was not capped
        assert dropped <= delta2 + tol


def test_split_full_rank_short_side_is_exact_without_products():
    C = _lowish_rank(6, 50, 0)
    Q, B, dropped = _split(np, C, 6, None, "gram")
    assert dropped == 0.0
    np.testing.assert_array_equal(Q, np.eye(6))
    assert B is C  # no product formed


@pytest.mark.parametrize("n,cap", [(64, 4), (64, 16), (40, 10), (64, 17)])
def test_top_eig_subset_equals_full(n, cap):
    rng = np.random.default_rng(n + cap)
    A = rng.standard_normal((n, 2 * n))
    G = A @ A.T
    lam, V, total = _top_eig(np, G, cap)
    full, Vf = np.linalg.eigh(G)
    full, Vf = full[::-1], Vf[:, ::-1]
    assert lam.shape == (cap,) and V.shape == (n, cap)
    np.testing.assert_allclose(lam, full[:cap], rtol=1e-10)
    assert abs(total - float(full.sum())) <= 1e-10 * total
    # the same invariant subspace (eigenvectors up to sign)
    np.testing.assert_allclose(np.abs(np.sum(V * Vf[:, :cap], axis=0)), 1.0, atol=1e-8)


def test_cpu_torch_inputs_take_the_numpy_route(monkeypatch):
    torch = pytest.importorskip("torch")
    import tqla.tt as tt_module

    seen = []
    real = tt_module._sweep
    monkeypatch.setattr(
        tt_module, "_sweep", lambda xp, *a: seen.append(xp) or real(xp, *a), raising=True
    )
    ttm_module = importlib.import_module("tqla.tt_matrix")  # not the function tqla.tt_matrix
    monkeypatch.setattr(ttm_module, "_sweep", tt_module._sweep, raising=True)
    W = np.random.default_rng(0).standard_normal((24, 30))
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    T = tt_matrix(Wt, (2, 3, 4), (3, 2, 5), ranks=[4, 6])
    ref = tt_matrix(W, (2, 3, 4), (3, 2, 5), ranks=[4, 6])
    assert seen == [np, np]
    for a, b in zip(T.cores, ref.cores):
        assert isinstance(a, torch.Tensor) and a.dtype == torch.float64
        np.testing.assert_array_equal(a.numpy(), b)  # the same code on the same numbers
    X = W.reshape(4, 6, 30)
    te = tt_svd(torch.from_numpy(X), eps=0.3)
    assert te.ranks == tt_svd(X, eps=0.3).ranks
    assert isinstance(te.cores[0], torch.Tensor)
