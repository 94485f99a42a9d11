"""tqla.kron_spectral stated whole (issue 15, fifth pass).

The optimiser is checked against a reference written from the module docstring (the
continuation over p, Polak–Ribière+ directions reset to steepest descent, Armijo
backtracking from t = 0.1·F/‖D‖ doubled after a first-try acceptance, the kept-best rule,
the block growth of the partial route) that uses the same primitives (residual, tangent
projection, retraction): the histories, counters and factors must be those of the
reference, and the residual must be evaluated with the same arguments in the same order.
Around it: every option is handed on (half precision included), the final errors are
``spectral_norm`` of the start and of the kept point with ``error_method`` and ``rng=0``,
the defaults, the result's attributes and repr, and every message whole.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tqla
import tqla._spectral_residual as rm
import tqla.spectral as sm
from tqla._fixed_rank import _inner, _kron_from_point, _point_from_kron, _project, _Retraction
from tqla._spectral_residual import _Residual, _schatten
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd, rearrange
from tqla.spectral import (
    DEFAULT_MAX_ITER,
    DEFAULT_P,
    DEFAULT_TOL,
    SpectralHistory,
    SpectralKronecker,
    check_p_schedule,
    kron_spectral,
)


# --------------------------------------------------------------------------------------
# The reference optimiser (module docstring of tqla.spectral)
# --------------------------------------------------------------------------------------
class _Ref:
    def __init__(self, W, s, rank, mode, seed, K0, callback=None):
        self.W, self.s, self.cb = W, s, callback
        self.res = _Residual(np, W, s, mode, np.random.default_rng(seed), rank)
        self.calls: list = []
        self.pt = _point_from_kron(np, K0)
        self.ev = self.evaluate(self.pt.X, n_iter=8, vectors=True)
        self.best, self.best_pt = float(self.ev.sig[0]), None
        eps = float(np.finfo(W.dtype).eps)
        self.tiny = 4 * eps * max(s.matrix_shape) * float(np.max(np.abs(W)))
        self.hist = [(2.0, self.ev.sig[0], self.best, _schatten(self.ev.sig, 2.0), 0.0)]
        self.n_iter, self.stopped = 0, False
        self.step_growth: list = []  # (p, iteration, whether the block grew after it)

    def evaluate(self, X, n_iter=2, vectors=False):
        self.calls.append((n_iter, vectors))
        return self.res.evaluate(X, n_iter=n_iter, vectors=vectors)

    def consider(self, pt, sig):
        if float(sig[0]) < self.best:
            self.best, self.best_pt = float(sig[0]), pt

    def grad(self, p, F):
        return _project(np, self.pt, -rearrange(self.res.gradient(self.ev, p, F), self.s))

    def grow(self, p):
        """Re-evaluate while the partial block grows; True if it grew."""
        grew = False
        while self.res.adapt(self.ev.sig, p, self.ev.V):
            grew = True
            self.ev = self.evaluate(self.pt.X, n_iter=4)
            self.consider(self.pt, self.ev.sig)
        return grew

    def stage(self, p, max_iter, tol):
        if self.ev.sig[0] <= self.tiny:
            return
        if self.res.mode == "partial" and self.res.plan(self.ev.sig, self.ev.V, p):
            self.ev = self.evaluate(self.pt.X, n_iter=4)
            self.consider(self.pt, self.ev.sig)
            self.grow(p)
        F = _schatten(self.ev.sig, p)
        xi, prev, t = self.grad(p, F), None, None
        for _ in range(max_iter):
            if F <= self.tiny:
                return
            D = -xi
            if prev is not None:
                beta = max(0.0, _inner(np, xi, xi - _project(np, self.pt, prev[0]))
                           / _inner(np, prev[0], prev[0]))  # fmt: skip
                D = -xi + beta * _project(np, self.pt, prev[1])
                if _inner(np, xi, D) >= -1e-3 * math.sqrt(_inner(np, xi, xi) * _inner(np, D, D)):
                    D = -xi
            dn = math.sqrt(_inner(np, D, D))
            if dn == 0.0:
                return
            t = 0.1 * F / dn if t is None else t
            slope, retr = _inner(np, xi, D), _Retraction(np, self.pt, D)
            for tries in range(1, 13):  # noqa: B007 - read after the loop
                cand = retr(t)
                ev = self.evaluate(cand.X)
                self.consider(cand, ev.sig)
                Fc = _schatten(ev.sig, p)
                if Fc <= F + 1e-4 * t * slope:
                    break
                t *= 0.5
            else:
                return
            rel = (F - Fc) / F
            self.pt, F, self.ev = cand, Fc, ev
            self.n_iter += 1
            grew = self.grow(p)
            self.step_growth.append((p, self.n_iter, grew))
            F = _schatten(self.ev.sig, p)
            self.hist.append((p, self.ev.sig[0], self.best, F, t))
            info = {"iteration": self.n_iter, "p": p, "error": float(self.ev.sig[0]),
                    "best": self.best, "objective": F}  # fmt: skip
            if self.cb is not None and self.cb(info):
                self.stopped = True
                return
            if rel < tol:
                return
            if tries == 1:
                t *= 2.0
            prev = None if grew else (xi, D)
            xi = self.grad(p, F)


def _reference(W, s, rank, *, p=DEFAULT_P, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
               svd="gram", rng=0, init=None, callback=None):  # fmt: skip
    s = KroneckerShape.of(s)
    K0 = kron_svd(W, s, rank) if init is None else init
    ref = _Ref(W, s, rank, svd, rng, K0, callback)
    for pv in check_p_schedule(p):
        if ref.stopped or max_iter == 0:
            break
        ref.stage(pv, max_iter, tol)
    Kb = None if ref.best_pt is None else _kron_from_point(np, ref.best_pt, s)
    return ref, K0, Kb


def _spy_evaluate(monkeypatch):
    calls: list = []
    real = rm._Residual.evaluate

    def spy(self, X, n_iter=2, vectors=False):
        calls.append((n_iter, vectors))
        return real(self, X, n_iter=n_iter, vectors=vectors)

    monkeypatch.setattr(rm._Residual, "evaluate", spy)
    return calls


def _flat_spectrum(n: int, seed: int, base: float = 0.98) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (U * base ** np.arange(n)) @ V.T


CASES = {
    # name: (W builder, shape, rank, options)
    "gram": (lambda g: g.standard_normal((12, 12)), ((3, 4), (4, 3)), 2, {}),
    "gram-wide": (lambda g: g.standard_normal((8, 18)), ((2, 3), (4, 6)), 1, {}),
    "full": (lambda g: g.standard_normal((12, 10)), ((4, 2), (3, 5)), 2, {"svd": "full"}),
    "partial": (
        lambda g: _flat_spectrum(32, int(g.integers(1 << 30))),
        ((4, 8), (8, 4)),
        2,
        {"svd": "partial"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**16), tol=st.sampled_from([1e-4, 1e-2, 0.0]))
@example(seed=0, tol=1e-4)
@settings(max_examples=3, deadline=None)
def test_fit_is_the_reference_continuation(case, seed, tol):
    """History, counters, route, factors and the residual's evaluation sequence are those
    of the reference optimiser, on the Gram, full and partial routes (the last with a
    flat-topped spectrum, so the block grows)."""
    build, shape, rank, opts = CASES[case]
    W = build(np.random.default_rng(seed))
    p, max_iter = (4.0, 16.0, 64.0), 6
    with pytest.MonkeyPatch.context() as mp:
        calls = _spy_evaluate(mp)
        K = kron_spectral(W, shape, rank, p=p, max_iter=max_iter, tol=tol, rng=seed, **opts)
    ref, K0, Kb = _reference(W, shape, rank, p=p, max_iter=max_iter, tol=tol,
                             svd=opts.get("svd", "gram"), rng=seed)  # fmt: skip
    h = K.history
    assert list(zip(h.p, h.error, h.best, h.objective, h.step)) == [
        tuple(float(v) for v in e) for e in ref.hist
    ]
    assert calls == ref.calls
    assert (K.n_iter, K.n_evals, K.svd) == (ref.n_iter, len(ref.calls), ref.res.mode)
    Kr = K0 if Kb is None else Kb
    np.testing.assert_array_equal(K.A, Kr.A)
    np.testing.assert_array_equal(K.B, Kr.B)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_block_grown_mid_stage_restarts_the_conjugate_directions(seed):
    """σᵢ = 0.8^i on a 40×40 rearrangement: the partial block grows after an accepted step
    inside the first stage and steps follow; the next direction is steepest descent again
    (here the conjugate one would differ), as in the reference."""
    W = _flat_spectrum(40, seed, 0.8)
    s, opts = ((5, 8), (8, 5)), {"p": (4.0, 16.0), "max_iter": 6, "svd": "partial", "rng": seed}
    ref, K0, Kb = _reference(W, s, 1, **opts)
    g = ref.step_growth
    assert any(grew and i + 1 < len(g) and g[i + 1][0] == p for i, (p, _, grew) in enumerate(g))
    K = kron_spectral(W, s, 1, **opts)
    h = K.history
    assert list(zip(h.p, h.error, h.best, h.objective, h.step)) == [
        tuple(float(v) for v in e) for e in ref.hist
    ]
    np.testing.assert_array_equal(K.A, Kb.A)


def test_reference_route_is_exercised():
    """The cases above take every branch worth taking: several stages, conjugate steps,
    backtracking, doubling, and a growing block on the partial route."""
    W = _flat_spectrum(32, 0)
    ref, _, Kb = _reference(W, ((4, 8), (8, 4)), 2, p=(4.0, 16.0), max_iter=6, svd="partial")
    assert ref.res.k > ref.res.k_min and Kb is not None
    steps = [e[4] for e in ref.hist[1:]]
    assert len(set(steps)) > 1 and ref.n_iter >= 6


# --------------------------------------------------------------------------------------
# Options handed on, stopping, thresholds
# --------------------------------------------------------------------------------------
def test_defaults_are_the_documented_ones(monkeypatch):
    assert DEFAULT_P == (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
    assert (DEFAULT_MAX_ITER, DEFAULT_TOL) == (25, 1e-4)
    assert (sm._ARMIJO, sm._MAX_BACKTRACK) == (1e-4, 12)
    W = np.random.default_rng(3).standard_normal((8, 9))
    K = kron_spectral(W, ((2, 3), (4, 3)), 1)
    ref, K0, Kb = _reference(W, ((2, 3), (4, 3)), 1, rng=None)
    assert K.history.p == [e[0] for e in ref.hist] and K.n_iter == ref.n_iter
    assert K.svd == "gram"
    assert K.spectral_error == tqla.spectral_norm(W - K.to_dense(), method="auto", rng=0)


@given(seed=st.integers(0, 2**16), method=st.sampled_from(["lanczos", "randomized"]))
@settings(max_examples=4, deadline=None)
def test_final_errors_are_spectral_norm_with_error_method_and_seed_zero(seed, method):
    W = np.random.default_rng(seed).standard_normal((12, 12))
    s = ((3, 4), (4, 3))
    K = kron_spectral(W, s, 1, p=(4.0, 16.0), max_iter=4, rng=seed, error_method=method)
    K0 = kron_svd(W, s, 1)
    assert K.kron_svd_error == tqla.spectral_norm(W - K0.to_dense(), method=method, rng=0)
    assert K.spectral_error == tqla.spectral_norm(W - K.to_dense(), method=method, rng=0)
    assert K.frobenius_error == pytest.approx(float(np.linalg.norm(W - K.to_dense())), rel=1e-13)
    assert K.spectral_error.estimate <= K.kron_svd_error.estimate


def test_a_worse_kept_point_is_refused_for_the_start(monkeypatch):
    """The guard: if the certified error of the kept point is above the start's (inexact
    partial triplets), the start is returned, with its own error as the result's."""
    W = np.random.default_rng(0).standard_normal((12, 12))
    s = ((3, 4), (4, 3))
    real = tqla.spectral_norm
    n = []

    def lying(E, **kw):
        est = real(E, **kw)
        n.append(kw)
        return est._replace(estimate=est.estimate * (1 if len(n) == 1 else 10))

    monkeypatch.setattr(sm, "spectral_norm", lying)
    K = kron_spectral(W, s, 1, p=(4.0,), max_iter=3, rng=0)
    K0 = kron_svd(W, s, 1)
    np.testing.assert_array_equal(K.A, K0.A)
    assert K.spectral_error is K.kron_svd_error and len(n) == 2
    assert n == [{"method": "auto", "rng": 0}] * 2
    assert K.frobenius_error == pytest.approx(float(np.linalg.norm(W - K0.to_dense())), rel=1e-13)
    n.clear()
    monkeypatch.setattr(sm, "spectral_norm", lambda E, **kw: n.append(1) or real(E, **kw))
    K = kron_spectral(W, s, 1, p=(4.0,), max_iter=3, rng=0)
    assert len(n) == 2 and K.spectral_error.estimate < K.kron_svd_error.estimate
    assert K.frobenius_error == pytest.approx(float(np.linalg.norm(W - K.to_dense())), rel=1e-13)


def test_max_iter_zero_and_p_two_return_the_start_with_one_evaluation():
    W = np.random.default_rng(1).standard_normal((12, 12))
    s = ((3, 4), (4, 3))
    K0 = kron_svd(W, s, 2)
    for kw in ({"max_iter": 0}, {"p": 2}, {"p": [2, 2]}):
        K = kron_spectral(W, s, 2, **kw)
        np.testing.assert_array_equal(K.A, K0.A)
        assert (K.n_iter, K.n_evals, len(K.history)) == (0, 1, 1)
        e = float(np.linalg.svd(W - K0.to_dense(), compute_uv=False)[0])
        assert K.history.error == pytest.approx([e], rel=1e-12)
        assert K.history.step == [0.0] and K.history.p == [2.0]


def test_callback_stops_the_whole_continuation_and_sees_each_iteration():
    W = np.random.default_rng(2).standard_normal((12, 12))
    s = ((3, 4), (4, 3))
    for stop_at in (1, 3):
        seen: list = []

        def cb(info, seen=seen, stop_at=stop_at):
            seen.append(dict(info))
            return len(seen) >= stop_at

        K = kron_spectral(
            W,
            s,
            1,
            p=(4.0, 16.0),
            max_iter=5,
            tol=0.0,
            rng=0,
            callback=cb,
        )
        assert K.n_iter == stop_at == len(seen) and len(K.history) == stop_at + 1
        h = K.history
        assert seen == [
            {"iteration": i + 1, "p": h.p[i + 1], "error": h.error[i + 1],
             "best": h.best[i + 1], "objective": h.objective[i + 1]}
            for i in range(stop_at)
        ]  # fmt: skip
    seen = []
    K = kron_spectral(
        W,
        s,
        1,
        p=(4.0, 16.0),
        max_iter=3,
        tol=0.0,
        rng=0,
        callback=lambda info: seen.append(info) and None,
    )
    assert len(seen) == K.n_iter == 6 and set(K.history.p[1:]) == {4.0, 16.0}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("c, runs", [(3.0, False), (5.0, True)])
def test_a_residual_at_rounding_level_is_left_alone(dtype, c, runs):
    """No stage runs when σ₁(W − K) ≤ 4·eps·max(M, N)·max|W| (the start is returned after
    one evaluation); just above it the stages run."""
    rng = np.random.default_rng(0)
    s = KroneckerShape((2, 3), (5, 2))  # W: 10×6
    K0 = KroneckerSum(rng.standard_normal((1, 2, 3)).astype(dtype),
                      rng.standard_normal((1, 5, 2)).astype(dtype))  # fmt: skip
    E = rng.standard_normal((10, 6))
    W0 = K0.to_dense()
    amp = np.max(np.abs(W0))
    tiny = 4 * np.finfo(dtype).eps * 10 * amp
    W = (W0 + E * (c / 4) * tiny / np.linalg.norm(E, 2)).astype(dtype)
    sig1 = np.linalg.norm(W.astype(np.float64) - W0.astype(np.float64), 2)
    assert (sig1 > 4 * np.finfo(dtype).eps * 10 * np.max(np.abs(W))) == runs
    K = kron_spectral(W, s, 1, init=K0, p=(4.0,), max_iter=2, rng=0)
    assert (K.n_evals > 1) == runs


def test_an_objective_at_the_rounding_floor_ends_the_stage(monkeypatch):
    """F ≤ tiny (equality included) ends a stage before any line search: with ‖E‖_p
    reported as exactly 4·eps·max(M, N)·max|W| the fit evaluates the start only."""
    W = np.random.default_rng(0).standard_normal((12, 10))
    tiny = 4 * np.finfo(np.float64).eps * 12 * float(np.max(np.abs(W)))
    monkeypatch.setattr(sm, "_schatten", lambda sig, p: tiny)
    K = kron_spectral(W, ((4, 2), (3, 5)), 1, p=(4.0, 8.0), max_iter=3, rng=0)
    assert (K.n_evals, K.n_iter, len(K.history)) == (1, 0, 1)
    monkeypatch.setattr(sm, "_schatten", lambda sig, p: tiny * (1 + 1e-15))
    K = kron_spectral(W, ((4, 2), (3, 5)), 1, p=(4.0,), max_iter=1, rng=0)
    assert K.n_evals == 1 + 12  # just above: one line search, 12 failed halvings


def test_tol_ends_a_stage_after_the_first_step_below_it():
    W = np.random.default_rng(4).standard_normal((12, 12))
    s = ((3, 4), (4, 3))
    K = kron_spectral(W, s, 1, p=(4.0, 8.0), max_iter=25, tol=0.5, rng=0)
    assert K.n_iter == 2 and K.history.p == [2.0, 4.0, 8.0]
    K = kron_spectral(W, s, 1, p=(4.0,), max_iter=4, tol=0.0, rng=0)
    assert K.n_iter == 4


@given(seed=st.integers(0, 2**16))
@settings(max_examples=3, deadline=None)
def test_init_replaces_the_start(seed):
    W = np.random.default_rng(seed).standard_normal((12, 12))
    s = ((3, 4), (4, 3))
    init = KroneckerSum(np.random.default_rng(seed + 1).standard_normal((2, 3, 4)),
                        np.random.default_rng(seed + 2).standard_normal((2, 4, 3)))  # fmt: skip
    K = kron_spectral(W, s, 2, init=init, p=(4.0,), max_iter=3, rng=0)
    ref, _, _ = _reference(W, s, 2, p=(4.0,), max_iter=3, init=init)
    assert K.history.error == [float(e[1]) for e in ref.hist]
    assert K.kron_svd_error == tqla.spectral_norm(W - init.to_dense(), rng=0)


def test_half_precision_hands_every_option_to_the_float32_fit():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    W = rng.standard_normal((12, 8)).astype(np.float32)
    s = ((3, 2), (4, 4))
    init = kron_svd(W, s, 2)
    init = KroneckerSum(init.A * 1.1, init.B)
    seen32, seenh = [], []
    opts = {"p": (4.0, 16.0), "max_iter": 3, "tol": 0.0, "rng": 7, "svd": "full",
            "error_method": "lanczos"}  # fmt: skip
    Wh = torch.tensor(W).to(torch.bfloat16)
    initb = KroneckerSum(torch.tensor(init.A).to(torch.bfloat16),
                         torch.tensor(init.B).to(torch.bfloat16))  # fmt: skip
    Wh32 = Wh.to(torch.float32)
    K32 = kron_spectral(Wh32, s, 2, init=initb.astype(torch.float32), callback=seen32.append,
                        **opts)  # fmt: skip
    t0 = time.perf_counter()
    Kh = kron_spectral(Wh, s, 2, init=initb, callback=seenh.append, **opts)
    wall = time.perf_counter() - t0
    assert Kh.dtype == torch.bfloat16 and Kh.B.dtype == torch.bfloat16
    assert torch.equal(Kh.A, K32.A.to(torch.bfloat16)) and torch.equal(
        Kh.B, K32.B.to(torch.bfloat16)
    )
    assert Kh.history.error == K32.history.error and Kh.history.p == K32.history.p
    assert (Kh.n_iter, Kh.n_evals, Kh.svd) == (K32.n_iter, K32.n_evals, "full")
    assert Kh.spectral_error == K32.spectral_error and Kh.spectral_error.method == "lanczos"
    assert Kh.kron_svd_error == K32.kron_svd_error
    assert Kh.frobenius_error == K32.frobenius_error
    assert 0 < Kh.time_s <= wall and len(seenh) == Kh.n_iter == 6
    assert seenh == seen32


def test_time_is_the_wall_time_of_the_fit():
    W = np.random.default_rng(0).standard_normal((12, 12))
    t0 = time.perf_counter()
    K = kron_spectral(W, ((3, 4), (4, 3)), 1, p=(4.0,), max_iter=2)
    wall = time.perf_counter() - t0
    assert 0 < K.time_s <= wall


def test_numpy_takes_the_few_eigenvector_route_above_small_eigh(monkeypatch):
    """NumPy input is run with NumPy itself as the namespace, so the Gram route may ask
    SciPy's MRRR for the top eigenvectors only."""
    import scipy.linalg

    seen = []
    real = scipy.linalg.eigh
    monkeypatch.setattr(scipy.linalg, "eigh", lambda *a, **k: seen.append(k) or real(*a, **k))
    monkeypatch.setattr(rm, "SMALL_EIGH", 4)
    W = _flat_spectrum(40, 0, base=0.5)
    kron_spectral(W, ((5, 5), (8, 8)), 1, p=(64.0,), max_iter=2, rng=0)
    assert seen and all(k["driver"] == "evr" for k in seen)


# --------------------------------------------------------------------------------------
# The result, the schedule, validation
# --------------------------------------------------------------------------------------
def test_result_defaults_attributes_and_repr():
    A, B = np.ones((1, 2, 3)), np.ones((1, 3, 2))
    K = SpectralKronecker(A, B)
    assert isinstance(K.history, SpectralHistory) and len(K.history) == 0
    assert K.spectral_error is None and K.kron_svd_error is None
    assert math.isnan(K.frobenius_error)
    assert (K.n_iter, K.n_evals, K.svd, K.time_s) == (0, 0, "full", 0.0)
    assert repr(K) == ("SpectralKronecker(shape=(6, 6), A=(2, 3), B=(3, 2), rank=1, "
                       "spectral_error=?, n_iter=0)")  # fmt: skip
    W = np.random.default_rng(0).standard_normal((6, 6))
    F = kron_spectral(W, ((2, 3), (3, 2)), 1, p=(4.0,), max_iter=2, rng=0)
    err = F.spectral_error.estimate
    assert repr(F) == (f"SpectralKronecker(shape=(6, 6), A=(2, 3), B=(3, 2), rank=1, "
                       f"spectral_error={err:.6g}, n_iter={F.n_iter})")  # fmt: skip
    plain = F.kron
    assert type(plain) is KroneckerSum and plain.A is F.A and plain.B is F.B
    h = SpectralHistory()
    h.append(np.float32(4), 3, 2, 1, 0)
    assert (h.p, h.error, h.best, h.objective, h.step) == ([4.0], [3.0], [2.0], [1.0], [0.0])
    assert all(type(v[0]) is float for v in (h.p, h.error, h.best, h.objective, h.step))
    assert len(h) == 1


def test_estimator_hands_its_options_on():
    W = np.random.default_rng(0).standard_normal((8, 6))
    opts = {"p": (4.0,), "max_iter": 2, "rng": 0, "svd": "full"}
    est = tqla.SpectralKroneckerApprox(((4, 3), (2, 2)), rank=2, **opts).fit(W)
    K = kron_spectral(W, ((4, 3), (2, 2)), 2, **opts)
    np.testing.assert_array_equal(est.result_.A, K.A)
    assert est.result_.svd == "full" and est.result_.rank == 2
    assert est.spectral_error_ is est.result_.spectral_error
    assert est.history_ is est.result_.history


@given(P=st.floats(2.0, 1e4))
def test_number_schedule_is_powers_of_two_below_then_p(P):
    got = check_p_schedule(P)
    want = [2.0**k for k in range(2, 20) if 2.0**k < P] + ([P] if P > 2 else [])
    assert got == tuple(want) and all(type(v) is float for v in got)
    assert check_p_schedule(int(P)) == check_p_schedule(float(int(P)))


def test_sequence_schedule_keeps_the_values_above_two():
    assert check_p_schedule([2, 2.0, 3, 3, np.float32(8)]) == (3.0, 3.0, 8.0)
    assert check_p_schedule((np.int64(4),)) == (4.0,)
    assert check_p_schedule([2]) == ()
    assert check_p_schedule(4) == (4.0,) and check_p_schedule(4.5) == (4.0, 4.5)


BAD = [
    (
        {"p": 1.5},
        ValueError,
        "p must be >= 2 (the Schatten-p continuation starts from the "
        "Frobenius problem p = 2 and grows towards the spectral norm), got 1.5",
    ),
    (
        {"p": [4, float("nan")]},
        ValueError,
        "p must be >= 2 (the Schatten-p continuation "
        "starts from the Frobenius problem p = 2 and grows towards the spectral norm), got nan",
    ),
    ({"p": [8, 4]}, ValueError, "p must be non-decreasing (a continuation), got [8, 4]"),
    ({"p": []}, ValueError, "p must be a number >= 2 or a non-empty sequence, got []"),
    ({"p": "high"}, TypeError, "p must be a number or a sequence of numbers, got 'high'"),
    ({"p": [4, True]}, TypeError, "p must be a number or a sequence of numbers, got True"),
    ({"max_iter": -1}, ValueError, "max_iter must be >= 0, got -1"),
    ({"max_iter": 2.0}, TypeError, "max_iter must be an integer, got float 2.0"),
    ({"tol": -1.0}, ValueError, "tol must be a finite number >= 0.0, got -1.0"),
    ({"tol": math.inf}, ValueError, "tol must be a finite number >= 0.0, got inf"),
    ({"tol": "x"}, TypeError, "tol must be a number, got 'x'"),
    ({"tol": False}, TypeError, "tol must be a number, got False"),
    (
        {"svd": "lapack"},
        ValueError,
        "svd must be one of 'auto', 'gram', 'full', 'partial', got 'lapack'",
    ),
    ({"callback": 3}, TypeError, "callback must be callable or None, got int"),
    ({"init": np.zeros((6, 4))}, TypeError, "init must be a KroneckerSum or None, got ndarray"),
    (
        {"init": KroneckerSum(np.ones((1, 3, 2), np.float32), np.ones((1, 2, 2), np.float32))},
        TypeError,
        "init must be of W's array library and dtype (ndarray, float64), got ndarray, float32",
    ),
    (
        {"init": KroneckerSum(np.ones((2, 3, 2)), np.ones((2, 2, 2)))},
        ValueError,
        "init must have rank 1, got rank 2",
    ),
    (
        {"init": KroneckerSum(np.ones((1, 1, 2)), np.ones((1, 6, 2)))},
        ValueError,
        "init has factor shapes A (1, 2) ⊗ B (6, 2), expected A (3, 2) ⊗ B (2, 2)",
    ),
]


@pytest.mark.parametrize("kwargs, exc, message", BAD)
def test_bad_arguments_are_refused_with_the_whole_rule(kwargs, exc, message):
    W = np.random.default_rng(0).standard_normal((6, 4))
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        kron_spectral(W, ((3, 2), (2, 2)), 1, **kwargs)


def test_init_of_another_library_is_refused():
    torch = pytest.importorskip("torch")
    W = np.random.default_rng(0).standard_normal((6, 4))
    init = KroneckerSum(torch.ones((1, 3, 2), dtype=torch.float64),
                        torch.ones((1, 2, 2), dtype=torch.float64))  # fmt: skip
    msg = ("init must be of W's array library and dtype (ndarray, float64), got Tensor, "
           "torch.float64")  # fmt: skip
    with pytest.raises(TypeError, match=f"^{re.escape(msg)}$"):
        kron_spectral(W, ((3, 2), (2, 2)), 1, init=init)


def test_stage_stops_iff_the_relative_decrease_is_strictly_below_tol(monkeypatch):
    """After each accepted step the stage stops when (F − F_new)/F < tol, and goes on when
    it equals tol: the line search is wrapped to report F_new = F/2 exactly (relative
    decrease exactly 0.5 in binary arithmetic)."""
    from tqla import spectral as sp

    orig = sp._Optimiser._line_search
    calls = []

    def halving(self, D, xi, t, p, F):
        calls.append(F)
        found = orig(self, D, xi, t, p, F)
        if found is None:
            return None
        t, tries, cand, state, _ = found
        return t, tries, cand, state, F * 0.5

    monkeypatch.setattr(sp._Optimiser, "_line_search", halving)
    W = np.random.default_rng(3).standard_normal((6, 6))
    shape = ((2, 3), (3, 2))
    for tol, stops_after_one in ((0.5, False), (float(np.nextafter(0.5, 1.0)), True)):
        calls.clear()
        K = sp.kron_spectral(W, shape, 1, p=4, max_iter=3, tol=tol, svd="full", rng=0)
        assert K.n_iter >= 1
        if stops_after_one:
            assert len(calls) == 1 and K.n_iter == 1
        else:
            assert len(calls) >= 2
