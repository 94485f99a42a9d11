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
from tqla._fixed_rank import _inner, _project


@given(seed=st.integers(0, 2**16))
@settings(max_examples=5)
def test_conjugate_directions_are_used_while_the_block_is_unchanged(seed):
    """Every direction after the first is the Polak–Ribière+ one built from the transported
    previous gradient and direction (steepest descent only where β = 0 or the conjugate
    direction is not a sufficient descent direction).  The Gram route never changes its
    block, so one stage is one run of conjugate steps."""
    W = np.random.default_rng(seed).standard_normal((12, 12))
    prev: list = []
    real = spectral_mod._Optimiser._line_search

    def spy(self, D, xi, t, p, F):
        xp = self.xp
        if prev:
            xi_prev, D_prev = prev[-1]
            Txi = _project(xp, self.pt, xi_prev)
            TD = _project(xp, self.pt, D_prev)
            beta = max(0.0, _inner(xp, xi, xi - Txi) / _inner(xp, xi_prev, xi_prev))
            want = -xi + beta * TD
            descent = _inner(xp, xi, want) < -1e-3 * np.sqrt(
                _inner(xp, xi, xi) * _inner(xp, want, want)
            )
            if not (beta > 0 and descent):
                want = -xi
            scale = np.sqrt(_inner(xp, want, want)) + np.sqrt(_inner(xp, xi, xi))
            gap = np.sqrt(_inner(xp, D - want, D - want))
            assert gap <= 1e-9 * scale  # the same formula: rounding only
        prev.append((xi, D))
        return real(self, D, xi, t, p, F)

    spectral_mod._Optimiser._line_search = spy
    try:
        kron_spectral(W, ((3, 4), (4, 3)), 1, svd="gram", rng=0, p=(4.0,), max_iter=6)
    finally:
        spectral_mod._Optimiser._line_search = real
    assert len(prev) >= 3


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


def test_fit_on_a_second_device_stays_there_and_matches_the_cpu_fit():
    """array_api_strict's "device1" refuses to combine with its CPU device: every array the
    fit makes (the retraction's identity blocks included) is created on W's device, and
    the result equals the CPU fit's."""
    import pytest

    xs = pytest.importorskip("array_api_strict")
    W = np.random.default_rng(0).standard_normal((6, 6))
    shape = ((2, 3), (3, 2))
    dev = xs.Device("device1")
    K1 = kron_spectral(xs.asarray(W, device=dev), shape, 2, p=4, max_iter=3, rng=0)
    K0 = kron_spectral(xs.asarray(W), shape, 2, p=4, max_iter=3, rng=0)
    assert K1.n_iter == K0.n_iter >= 1
    assert K1.A.device == dev and K1.B.device == dev
    for a, b in ((K1.A, K0.A), (K1.B, K0.B)):
        assert np.array_equal(np.asarray(a.to_device(xs.Device("CPU_DEVICE"))), np.asarray(b))
