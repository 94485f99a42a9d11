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
