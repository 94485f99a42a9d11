"""tqla.kron_hetero and HeteroKroneckerSum stated whole (issue 15, fifth pass).

The fit is compared with a reference written from the docstring (greedy: from the
residual, one term of each candidate shape that fits the budget and the shape's Kronecker
rank, the best error reduction per parameter — the first candidate at ties — refined by
kron_spectral from kron_svd in the spectral norm, stop when nothing reduces the error;
then back-fitting sweeps that accept a group only if the error decreases, spectral groups
refit from both the current group and kron_svd, keeping the better): errors, sweep
errors, order, factors and the certified error must be the reference's.  Around it: every
option handed on (half precision included), the zero matrix, the class's products,
transpose, counts and repr, and every message whole.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import tqla
import tqla.norms
import tqla.spectral
from tqla.hetero import HeteroKronecker, HeteroKroneckerSum, kron_hetero
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd
from tqla.spectral import kron_spectral
from tqla.testing import assert_hetero_consistent

CANDS = [((3, 4), (4, 3)), ((2, 2), (6, 6)), ((6, 6), (2, 2)), ((1, 1), (12, 12))]
SOPTS = {"p": (8.0,), "max_iter": 2}
# The reference fits are slow: a failing example is reported as found, not shrunk (keeps
# mutation runs short).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def _err(R, norm):
    if norm == "fro":  # (vector_norm: the rounding of the library's array-API call)
        return float(np.linalg.vector_norm(R))
    return tqla.spectral_norm(R, method="auto", rng=0).estimate


def _fit(R, s, rank, init, norm, opts):
    K = kron_svd(R, s, rank)
    if norm == "fro":
        return K
    fits = [kron_spectral(R, s, rank, init=i, **opts) for i in ([init, K] if init else [K])]
    return min(fits, key=lambda k: k.spectral_error.estimate).kron


def reference(W, shapes, *, n_params=None, rank=None, norm="fro", n_sweeps=3, tol=1e-6,
              spectral_options=None):  # fmt: skip
    opts = {"p": (8.0, 32.0, 128.0), "max_iter": 10, "rng": 0, **(spectral_options or {})}
    cands = []
    for sh in shapes:
        if KroneckerShape.of(sh) not in cands:
            cands.append(KroneckerShape.of(sh))
    R, err = W, _err(W, norm)
    errors, order, groups, used = [err], [], {}, 0
    while rank is None or len(order) < rank:
        best = None
        for s in cands:
            if n_params is not None and used + s.n_params(1) > n_params:
                continue
            if len(groups.get(s, [])) >= s.max_rank:
                continue
            T = _fit(R, s, 1, None, norm, opts)
            gain = (np.linalg.norm(T.to_dense()) ** 2 if norm == "fro"
                    else err - _err(R - T.to_dense(), norm))  # fmt: skip
            if best is None or gain / s.n_params(1) > best[0]:
                best = (gain / s.n_params(1), s, T)
        if best is None or best[0] <= 0:
            break
        Rn = R - best[2].to_dense()
        if _err(Rn, norm) >= err:
            break
        R, err = Rn, _err(Rn, norm)
        used += best[1].n_params(1)
        order.append(best[1])
        groups.setdefault(best[1], []).append(best[2])
        errors.append(err)
    terms = [KroneckerSum(np.concatenate([t.A for t in ts]), np.concatenate([t.B for t in ts]))
             for ts in groups.values()]  # fmt: skip
    if not terms:
        s = min(cands, key=lambda c: c.n_params(1))
        terms, order = [KroneckerSum(np.zeros((1, *s.a)), np.zeros((1, *s.b)))], [s]
        errors.append(errors[0])
    total = sum(K.to_dense() for K in terms)
    err = _err(W - total, norm)
    sweeps = [err]
    for _ in range(n_sweeps):
        start = err
        for g, K in enumerate(terms):
            Rg = W - (total - K.to_dense())
            Kn = _fit(Rg, K.kshape, K.rank, K, norm, opts)
            en = _err(Rg - Kn.to_dense(), norm)
            if en < err:
                total = total - K.to_dense() + Kn.to_dense()
                terms[g], err = Kn, en
        sweeps.append(err)
        if start - err <= tol * start:
            break
    return terms, errors, sweeps, order


def _same_fit(H, ref, rtol=1e-9):
    terms, errors, sweeps, order = ref
    assert H.order == order
    np.testing.assert_allclose(H.errors, errors, rtol=rtol, atol=0)
    np.testing.assert_allclose(H.sweep_errors, sweeps, rtol=rtol, atol=0)
    assert [K.kshape for K in H.terms] == [K.kshape for K in terms]
    assert [K.rank for K in H.terms] == [K.rank for K in terms]
    want = sum(K.to_dense() for K in terms)
    np.testing.assert_allclose(H.to_dense(), want, rtol=0, atol=1e-9 * np.abs(want).max())


@given(seed=st.integers(0, 2**16), budget=st.integers(24, 300), rank=st.integers(1, 6),
       which=st.sampled_from(["budget", "rank", "both"]), n_sweeps=st.integers(0, 3),
       tol=st.sampled_from([1e-6, 0.0, 0.5]))  # fmt: skip
@settings(max_examples=25, deadline=None, phases=NO_SHRINK)
def test_frobenius_fit_is_the_reference(seed, budget, rank, which, n_sweeps, tol):
    W = np.random.default_rng(seed).standard_normal((12, 12))
    kw = {"n_params": budget if which != "rank" else None,
          "rank": rank if which != "budget" else None,
          "n_sweeps": n_sweeps, "tol": tol}  # fmt: skip
    H = kron_hetero(W, CANDS, **kw)
    _same_fit(H, reference(W, CANDS, **kw))
    assert H.norm == "fro" and H.budget == kw["n_params"] and H.spectral_error is None
    assert H.error == H.sweep_errors[-1] and len(H.sweep_errors) <= n_sweeps + 1
    if kw["n_params"] is not None:
        assert H.n_params <= budget


@given(seed=st.integers(0, 2**16), n_sweeps=st.integers(0, 2))
@settings(max_examples=3, deadline=None, phases=NO_SHRINK)
def test_spectral_fit_is_the_reference(seed, n_sweeps):
    W = np.random.default_rng(seed).standard_normal((12, 12))
    cands = CANDS[:3]
    kw = {"rank": 3, "norm": "spectral", "n_sweeps": n_sweeps, "spectral_options": SOPTS}
    H = kron_hetero(W, cands, **kw)
    _same_fit(H, reference(W, cands, **kw))
    assert H.spectral_error == tqla.spectral_norm(
        tqla.residual(W, HeteroKroneckerSum(H.terms)), method="auto", rng=0
    )
    assert H.norm == "spectral" and H.spectral_error.estimate == pytest.approx(H.error, rel=1e-9)
    assert H.spectral_error.method == "exact"


def test_spectral_errors_are_spectral_norm_auto_with_seed_zero(monkeypatch):
    """With the "auto" thresholds at 0 every error is a Lanczos estimate from the seed-0
    start: the same computations as the reference, equal to the last bit (another start
    differs in rounding)."""
    monkeypatch.setattr(tqla.norms, "EXACT_MAX_WORK", 0)
    monkeypatch.setattr(tqla.norms, "EXACT_MAX_OPERATOR_ENTRIES", 0)
    W = np.random.default_rng(5).standard_normal((12, 12))
    kw = {"rank": 2, "norm": "spectral", "n_sweeps": 1, "spectral_options": SOPTS}
    H = kron_hetero(W, CANDS[:2], **kw)
    _same_fit(H, reference(W, CANDS[:2], **kw), rtol=0)
    assert H.spectral_error == tqla.spectral_norm(
        tqla.residual(W, HeteroKroneckerSum(H.terms)), method="auto", rng=0
    )
    assert H.spectral_error.method == "lanczos"


def test_backfitting_keeps_the_better_of_the_two_spectral_starts(monkeypatch):
    """A refit of a group runs kron_spectral from the current group and from kron_svd of
    the group's residual, with the options, and keeps the one with the lower error."""
    calls = []
    real = tqla.spectral.kron_spectral

    def spy(R, s, rank, **kw):
        out = real(R, s, rank, **kw)
        calls.append((kw, out.spectral_error.estimate))
        return out

    monkeypatch.setattr(tqla.spectral, "kron_spectral", spy)
    W = np.random.default_rng(1).standard_normal((12, 12))
    H = kron_hetero(W, CANDS[:2], rank=2, norm="spectral", n_sweeps=1,
                    spectral_options={"p": (8.0,), "max_iter": 2, "tol": 0.5})  # fmt: skip
    assert all(kw["p"] == (8.0,) and kw["max_iter"] == 2 and kw["tol"] == 0.5 and kw["rng"] == 0
               for kw, _ in calls)  # fmt: skip
    assert all(isinstance(kw["init"], KroneckerSum) for kw, _ in calls)
    n_greedy = 2 * len(CANDS[:2])  # two greedy steps, every candidate
    pairs = calls[n_greedy:]
    assert len(pairs) == 2 * len(H.terms)


def test_ties_go_to_the_first_candidate_and_full_shapes_are_skipped():
    W = np.eye(12)  # I2 ⊗ I6 = I6 ⊗ I2: the same gain and cost
    a, b = ((2, 2), (6, 6)), ((6, 6), (2, 2))
    assert kron_hetero(W, [a, b], rank=1, n_sweeps=0).order == [KroneckerShape.of(a)]
    assert kron_hetero(W, [b, a], rank=1, n_sweeps=0).order == [KroneckerShape.of(b)]
    W = np.random.default_rng(0).standard_normal((12, 12))
    one = ((1, 1), (12, 12))  # Kronecker rank 1: used at most once
    H = kron_hetero(W, [one, ((2, 2), (6, 6))], rank=5, n_sweeps=0)
    assert H.order.count(KroneckerShape.of(one)) == 1 and len(H.order) == 5


def test_zero_matrix_gives_one_zero_term_of_the_cheapest_shape():
    W = np.zeros((12, 12))
    H = kron_hetero(W, CANDS[:3], rank=2, n_sweeps=2)
    cheap = KroneckerShape((3, 4), (4, 3))
    assert H.order == [cheap] and [K.kshape for K in H.terms] == [cheap]
    assert H.errors == [0.0, 0.0] and H.sweep_errors == [0.0, 0.0] and H.error == 0.0
    assert H.n_terms == 1 and np.all(H.to_dense() == 0)
    H = kron_hetero(W, CANDS[:3], rank=2, n_sweeps=0)
    assert H.sweep_errors == [0.0]


def test_a_step_that_does_not_lower_the_error_stops_the_greedy(monkeypatch):
    """Here the first step already fails: nothing is kept, so the result is the zero term
    of the cheapest shape."""
    real = tqla.hetero._error
    n = []

    def stuck(xp, R, norm):
        n.append(1)
        return real(xp, R, norm) if len(n) == 1 else 1e9

    monkeypatch.setattr(tqla.hetero, "_error", stuck)
    W = np.random.default_rng(0).standard_normal((12, 12))
    H = kron_hetero(W, CANDS[:2], rank=3, n_sweeps=0)  # fro: gain from σ₁², then en ≥ err
    e0 = float(np.linalg.norm(W))
    assert H.order == [KroneckerShape((3, 4), (4, 3))] and H.errors == [e0, e0]
    assert np.all(H.to_dense() == 0) and len(n) == 3


def test_half_precision_hands_every_option_on():
    W = np.random.default_rng(2).standard_normal((12, 12)).astype(np.float16)
    for kw in ({"n_params": 120, "n_sweeps": 0, "tol": 0.5},
               {"rank": 2, "n_params": 200, "norm": "spectral", "n_sweeps": 1,
                "spectral_options": SOPTS}):  # fmt: skip
        H = kron_hetero(W, CANDS, **kw)
        ref = kron_hetero(W.astype(np.float32), CANDS, **kw)
        assert H.dtype == np.float16 and type(H) is HeteroKronecker
        assert (H.errors, H.sweep_errors, H.order) == (ref.errors, ref.sweep_errors, ref.order)
        assert (H.norm, H.budget, H.spectral_error) == (ref.norm, ref.budget, ref.spectral_error)
        for K, R in zip(H.terms, ref.terms, strict=True):
            np.testing.assert_array_equal(K.A, R.A.astype(np.float16))


def test_default_options(monkeypatch):
    W = np.random.default_rng(3).standard_normal((12, 12))
    H = kron_hetero(W, CANDS, rank=3)
    _same_fit(H, reference(W, CANDS, rank=3))
    assert H.norm == "fro" and H.budget is None
    seen = []
    real = tqla.spectral.kron_spectral
    monkeypatch.setattr(tqla.spectral, "kron_spectral",
                        lambda *a, **k: seen.append(k) or real(*a, **{**k, **SOPTS}))  # fmt: skip
    kron_hetero(W, CANDS[:2], rank=1, norm="spectral", n_sweeps=0)
    assert {(k["p"], k["max_iter"], k["rng"]) for k in seen} == {((8.0, 32.0, 128.0), 10, 0)}


# --------------------------------------------------------------------------------------
# HeteroKroneckerSum and HeteroKronecker
# --------------------------------------------------------------------------------------
def _hsum(seed=0):
    rng = np.random.default_rng(seed)
    K1 = KroneckerSum(rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 3, 2)))
    K2 = KroneckerSum(rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 2, 3)))
    K3 = KroneckerSum(rng.standard_normal((1, 6, 1)), rng.standard_normal((1, 1, 6)))
    return HeteroKroneckerSum([K1, K2, K3]), (K1, K2, K3)


def test_sum_is_its_terms():
    H, Ks = _hsum()
    D = sum(K.to_dense() for K in Ks)
    assert H.shape == (6, 6) and H.dtype == np.float64 and H.xp is Ks[0].xp
    assert H.shapes == [K.kshape for K in Ks]
    assert H.n_params == 12 + 24 + 12 and H.n_terms == 4
    np.testing.assert_allclose(H.to_dense(), D, rtol=1e-14, atol=1e-14)
    x, X3 = np.arange(6.0), np.random.default_rng(1).standard_normal((2, 6, 3))
    np.testing.assert_allclose(H @ x, D @ x, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(H.matmat(X3), D @ X3, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(x @ H, x @ D, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(H.rmatmat(X3[..., 0]), X3[..., 0] @ D, rtol=1e-13, atol=1e-12)
    T = H.T
    assert type(T) is HeteroKroneckerSum and T.shapes == [K.T.kshape for K in Ks]
    np.testing.assert_allclose(T.to_dense(), D.T, rtol=1e-14, atol=1e-14)
    H32 = H.astype(np.float32)
    assert H32.dtype == np.float32 and all(K.A.dtype == np.float32 for K in H32.terms)
    assert repr(H) == ("HeteroKroneckerSum(shape=(6, 6), [(2, 3)⊗(3, 2)×1, (3, 2)⊗(2, 3)×2, "
                       "(6, 1)⊗(1, 6)×1], n_params=48)")  # fmt: skip
    assert_hetero_consistent(H)


def test_result_defaults_and_error():
    _, Ks = _hsum()
    H = HeteroKronecker(list(Ks))
    assert (H.norm, H.errors, H.sweep_errors, H.order, H.budget, H.spectral_error) == (
        "fro", [], [], [], None, None)  # fmt: skip
    H = HeteroKronecker(list(Ks), errors=(3.0, 2.0))
    assert H.error == 2.0 and H.errors == [3.0, 2.0]
    H = HeteroKronecker(list(Ks), errors=[3.0, 2.0], sweep_errors=(2.0, 1.5), order=(1,),
                        budget=7, norm="spectral", spectral_error="e")  # fmt: skip
    assert (H.error, H.sweep_errors, H.order, H.budget, H.norm, H.spectral_error) == (
        1.5, [2.0, 1.5], [1], 7, "spectral", "e")  # fmt: skip


def test_estimator_hands_its_options_on():
    W = np.random.default_rng(0).standard_normal((12, 12))
    est = tqla.HeteroKroneckerApprox(CANDS, n_params=150, n_sweeps=1).fit(W)
    H = kron_hetero(W, CANDS, n_params=150, n_sweeps=1)
    assert est.shapes == [KroneckerShape.of(s) for s in CANDS]
    assert est.result_.errors == H.errors and est.result_.budget == 150
    assert est.errors_ is est.result_.errors and est.sweep_errors_ is est.result_.sweep_errors
    assert est.n_params_ == H.n_params


BAD_FIT = [
    ([], {"rank": 2}, ValueError,
     "shapes must hold at least one candidate factor shape, got an empty list"),
    ("abc", {"rank": 2}, TypeError,
     "shapes must be a sequence of factor shapes (KroneckerShape or ((m1, n1), (m2, n2)))"),
    (CANDS[:3], {"n_params": 10}, ValueError, "n_params must be >= 24, the parameters of one "
     "term of the cheapest candidate shape; got 10"),
    (CANDS, {"n_params": 0}, ValueError, "n_params must be >= 1, got 0"),
    (CANDS, {}, ValueError, "give n_params (a parameter budget) or rank (a term count), or both"),
    (CANDS, {"rank": 0}, ValueError, "rank must be >= 1, got 0"),
    (CANDS, {"rank": 1, "n_sweeps": -1}, ValueError, "n_sweeps must be >= 0, got -1"),
    (CANDS, {"rank": 2, "norm": "nuclear"}, ValueError,
     "norm must be 'fro' or 'spectral', got 'nuclear'"),
    (CANDS, {"rank": 1, "tol": -1.0}, ValueError, "tol must be a finite number >= 0, got -1.0"),
    (CANDS, {"rank": 1, "tol": float("nan")}, ValueError,
     "tol must be a finite number >= 0, got nan"),
    (CANDS, {"rank": 1, "tol": "0"}, ValueError, "tol must be a finite number >= 0, got '0'"),
]  # fmt: skip


@pytest.mark.parametrize("shapes, kwargs, exc, message", BAD_FIT)
def test_bad_fits_are_refused_with_the_whole_rule(shapes, kwargs, exc, message):
    W = np.random.default_rng(0).standard_normal((12, 12))
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        kron_hetero(W, shapes, **kwargs)


def test_bad_sums_are_refused_with_the_whole_rule():
    _, (K1, K2, _) = _hsum()
    cases = [
        ([], ValueError, "terms must hold at least one KroneckerSum, got none"),
        ([K1, np.eye(6)], TypeError, "terms[1] must be a KroneckerSum, got ndarray"),
        ([K1, KroneckerSum(np.ones((1, 2, 2)), np.ones((1, 2, 2)))], ValueError,
         "every term must have the matrix shape (6, 6); terms[1] has (4, 4)"),
        ([K1, K2.astype(np.float32)], TypeError,
         "terms must share a dtype: float64 and float32"),
    ]  # fmt: skip
    for terms, exc, message in cases:
        with pytest.raises(exc, match=f"^{re.escape(message)}$"):
            HeteroKroneckerSum(terms)


def test_duplicate_candidates_count_once():
    W = np.random.default_rng(4).standard_normal((12, 12))
    H = kron_hetero(W, [CANDS[0], KroneckerShape.of(CANDS[0]), CANDS[1]], rank=3, n_sweeps=0)
    _same_fit(H, reference(W, [CANDS[0], CANDS[1]], rank=3, n_sweeps=0))
