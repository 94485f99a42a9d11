"""tqla.kron_spectral's optimiser takes the route it promises (found by mutation testing;
listed in benchmarks/results/mutation_2026-11-30.md).

Both checks watch the optimiser from inside (the routes give results too close to tell
apart by their errors alone): conjugate directions are used while the block of singular
triplets is unchanged, and the partial-SVD route plans its block at every stage of the
continuation.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tqla._spectral_residual as residual_mod
import tqla.spectral as spectral_mod
from tqla import kron_spectral


@given(seed=st.integers(0, 2**16))
@settings(max_examples=5)
def test_conjugate_directions_are_used_while_the_block_is_unchanged(seed):
    W = np.random.default_rng(seed).standard_normal((12, 12))
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = spectral_mod._Optimiser._line_search

    def spy(self, D, xi, t, p, F):
        seen.append((np.array(D, dtype=float), np.array(xi, dtype=float)))  # tangent matrices
        return real(self, D, xi, t, p, F)

    spectral_mod._Optimiser._line_search = spy
    try:
        kron_spectral(W, ((3, 4), (4, 3)), 1, svd="gram", rng=0, p=(4.0,), max_iter=6)
    finally:
        spectral_mod._Optimiser._line_search = real
    assert len(seen) >= 3
    # steepest descent is D = −ξ; a conjugate step adds β·(transported previous direction)
    assert any(not np.allclose(D, -xi, rtol=1e-9, atol=0) for D, xi in seen[1:])


def test_partial_route_plans_its_block_at_every_stage(monkeypatch):
    calls: list[float] = []
    real = residual_mod._Residual.plan

    def spy(self, sig, V, p):
        calls.append(p)
        return real(self, sig, V, p)

    monkeypatch.setattr(residual_mod._Residual, "plan", spy)
    W = np.random.default_rng(0).standard_normal((20, 20))
    K = kron_spectral(W, ((4, 5), (5, 4)), 1, svd="partial", rng=0, p=(4.0, 8.0), max_iter=2)
    assert K.svd == "partial" and calls == [4.0, 8.0]


def test_partial_block_grows_inside_a_stage_and_the_best_point_is_kept(monkeypatch):
    """A flat-topped residual spectrum (96×96, σ_i = 0.98^i) makes the block grow after
    accepted steps; the result is still never worse than kron_svd in the spectral norm."""
    from tqla import kron_svd

    grew: list[bool] = []
    real = residual_mod._Residual.adapt

    def spy(self, sig, p, V):
        out = real(self, sig, p, V)
        grew.append(out)
        return out

    monkeypatch.setattr(residual_mod._Residual, "adapt", spy)
    n, rng = 96, np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    W = (U * 0.98 ** np.arange(n)) @ V.T
    s = ((8, 8), (12, 12))
    K = kron_spectral(W, s, 2, svd="partial", rng=0, p=(16.0,), max_iter=5)
    assert any(grew)  # the block grew (here after accepted steps of the stage)
    err = np.linalg.norm(W - K.to_dense(), 2)
    assert err <= np.linalg.norm(W - kron_svd(W, s, 2).to_dense(), 2) * (1 + 1e-12)
