"""tqla.tt_permuted against its definitions (found by mutation testing; listed in
benchmarks/results/mutation_2026-11-30.md, third pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqla import PermutedKronecker, PermutedTT, kron_svd, permuted_tt, tt_matrix


@given(seed=st.integers(0, 2**16), rule=st.sampled_from(["slots", "assign", "slots+assign"]),
       stop=st.integers(0, 3))  # fmt: skip
@settings(max_examples=6, deadline=None)
def test_callback_sees_each_iteration_and_its_error_and_may_stop(seed, rule, stop):
    W = np.random.default_rng(seed).standard_normal((8, 8))
    seen = []

    def callback(it, err):
        seen.append((it, err))
        return True if it == stop else None

    P = permuted_tt(W, (2, 4), (4, 2), ranks=2, rule=rule, n_iter=6, tol=0.0,
                    callback=callback)  # fmt: skip
    # one call per iteration, with the error that iteration reached (errors[it + 1])
    assert [it for it, _ in seen] == list(range(len(seen)))
    assert [e for _, e in seen] == P.errors[1:]
    assert len(seen) <= stop + 1 and P.n_iter == len(seen)


def test_mode_counts_must_match_and_the_message_says_so():
    W = np.zeros((8, 8))
    with pytest.raises(ValueError, match=r"row_modes \(2, 4\) and col_modes \(2, 2, 2\) must have"):
        permuted_tt(W, (2, 4), (2, 2, 2), ranks=2)


def test_permuted_results_name_the_bad_permutation():
    W = np.random.default_rng(0).standard_normal((6, 4))
    inner = [kron_svd(W, ((3, 2), (2, 2)), 1), tt_matrix(W, (3, 2), (2, 2), ranks=1)]
    for cls, K in zip((PermutedKronecker, PermutedTT), inner, strict=True):
        with pytest.raises(ValueError, match="col_perm must be a permutation"):
            cls(K, np.arange(6), np.array([0, 0, 1, 2]), [0.1], 0)
        with pytest.raises(ValueError, match=r"row_perm must have shape \(6,\)"):
            cls(K, np.arange(5), np.arange(4), [0.1], 0)


# --------------------------------------------------------------------------------------
# Fifth pass: permuted_tt stated whole
# --------------------------------------------------------------------------------------
import importlib  # noqa: E402
import math  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from tqla import TTMatrix  # noqa: E402
from tqla.kron import KroneckerShape, rearrange  # noqa: E402
from tqla.lsap import SOLVERS  # noqa: E402

tpm = importlib.import_module("tqla.tt_permuted")


def _raises(exc, msg, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value) == msg


def test_permuted_tt_names_every_bad_argument():
    W = np.ones((8, 6))
    ok = {"row_modes": (2, 4), "col_modes": (3, 2), "ranks": 2}

    def bad(exc, msg, **kw):
        args = {**ok, **kw}
        _raises(exc, msg, permuted_tt, W, args.pop("row_modes"), args.pop("col_modes"), **args)

    bad(ValueError, "row_modes (3, 4) must multiply to the dimension 8, but their product is 12",
        row_modes=(3, 4))  # fmt: skip
    bad(ValueError, "col_modes (2, 2) must multiply to the dimension 6, but their product is 4",
        col_modes=(2, 2))  # fmt: skip
    bad(ValueError, "row_modes must hold at least one mode, got ()", row_modes=())
    # the modes are checked against W's shape before anything else is looked at
    for kw in ({"rule": "swap"}, {"ranks": [9]}, {"n_iter": -1}):
        bad(ValueError, "row_modes (3, 4) must multiply to the dimension 8, but their product "
            "is 12", row_modes=(3, 4), **kw)  # fmt: skip
        bad(ValueError, "col_modes (2, 2) must multiply to the dimension 6, but their product "
            "is 4", col_modes=(2, 2), **kw)  # fmt: skip
    bad(ValueError, "col_modes must hold positive integers, got (0, 6)", col_modes=(0, 6))
    bad(ValueError, "ranks[0] = 7 is above the bound r_k <= min(r_(k-1)·n_k, n_(k+1)·r_(k+1)) "
        "= min(1·6, 8·1) = 6 for modes (6, 8) (largest useful ranks: (6,))", ranks=[7])  # fmt: skip
    bad(ValueError, "rule must be one of ('slots', 'assign', 'slots+assign'), got 'swap'",
        rule="swap")  # fmt: skip
    bad(ValueError, "permute must be one of ('both', 'rows', 'cols', 'none'), got 'all'",
        permute="all")  # fmt: skip
    bad(ValueError, "n_iter must be >= 0, got -1", n_iter=-1)
    bad(TypeError, "n_iter must be an integer, got float 2.0", n_iter=2.0)
    bad(ValueError, "n_restarts must be >= 1, got 0", n_restarts=0)
    bad(TypeError, "tol must be a number >= 0, got 'x'", tol="x")
    bad(TypeError, "tol must be a number >= 0, got None", tol=None)
    bad(ValueError, "tol must be a number >= 0, got -0.5", tol=-0.5)
    bad(ValueError, "tol must be a number >= 0, got nan", tol=float("nan"))
    bad(ValueError, f"solver must be one of {SOLVERS} or a sequence of them, got 'x'",
        solver="x")  # fmt: skip
    bad(TypeError, "callback must be callable, got int", callback=3)
    bad(TypeError, "rng must be None, an int seed or a numpy.random.Generator, got str",
        rng="a")  # fmt: skip
    _raises(TypeError, "W must be an array (NumPy, CuPy, torch, ...), got list; wrap it with "
            "numpy.asarray first", permuted_tt, [[1.0]], (1,), (1,), ranks=1)  # fmt: skip
    assert permuted_tt(W, (2, 4), (3, 2), ranks=2, tol="0.5", n_iter=1).n_iter <= 1
    _raises(TypeError, "tt must be a TTMatrix, got ndarray", PermutedTT, W, np.arange(8),
            np.arange(6), [0.1], 0)  # fmt: skip


class _Clock:
    """perf_counter of tqla.tt_permuted: each call one second later."""

    def __init__(self):
        self.n = 0

    def perf_counter(self):
        self.n += 1
        return float(self.n)


def _spy_all(monkeypatch):
    log = {"lsap": [], "assign": [], "slots": [], "fit": [], "iterate": [], "runs": []}
    real = {n: getattr(tpm, n) for n in ("lsap", "assign_cost", "slots_cost", "tt_matrix",
                                          "_iterate")}  # fmt: skip

    def lsap(cost, solver):
        log["lsap"].append(solver)
        return real["lsap"](cost, solver=solver)

    def assign_cost(U, K, max_bytes):
        log["assign"].append(max_bytes)
        return real["assign_cost"](U, K, max_bytes=max_bytes)

    def slots_cost(U, s, V, slot, max_bytes):
        log["slots"].append((s, slot, max_bytes))
        return real["slots_cost"](U, s, V, slot, max_bytes=max_bytes)

    def tt_matrix(U, rm, cm, ranks):
        log["fit"].append((U.shape, tuple(rm), tuple(cm), ranks))
        return real["tt_matrix"](U, rm, cm, ranks=ranks)

    def _iterate(run, sides, rule, n_iter, tol, callback):
        log["runs"].append((dict(run.inv), run))
        errors = real["_iterate"](run, sides, rule, n_iter, tol, callback)
        log["iterate"].append((list(sides), rule, n_iter, tol, callback, errors, run.err))
        return errors

    for name, f in (("lsap", lsap), ("assign_cost", assign_cost), ("slots_cost", slots_cost),
                    ("tt_matrix", tt_matrix), ("_iterate", _iterate)):  # fmt: skip
        monkeypatch.setattr(tpm, name, f)
    clock = _Clock()
    monkeypatch.setattr(tpm, "time", clock)
    return log, clock


@pytest.mark.parametrize("rule", ["slots", "assign", "slots+assign"])
def test_every_option_reaches_its_step_and_the_timings_count_each(rule, monkeypatch):
    log, clock = _spy_all(monkeypatch)
    W = np.random.default_rng(3).standard_normal((8, 6))
    cb = lambda it, err: None  # noqa: E731
    P = permuted_tt(W, (2, 4), (3, 2), ranks=[2], rule=rule, n_iter=3, tol=1e-3, n_restarts=2,
                    rng=5, solver="scipy", max_cost_bytes=10**7, callback=cb)  # fmt: skip
    assert set(log["lsap"]) == {"scipy"}
    assert set(log["assign"]) <= {10**7} and {s[2] for s in log["slots"]} <= {10**7}
    assert all(f[3] == (1, 2, 1) for f in log["fit"])
    # N = 6 < M = 8: rows first; each run gets the settings
    assert [it[:5] for it in log["iterate"]] == [(["rows", "cols"], rule, 3, 1e-3, cb)] * 2
    # the restarts start from the identity, then random permutations of the permuted sides
    g = np.random.default_rng(5)
    starts = [{"rows": np.arange(8), "cols": np.arange(6)},
              {"rows": g.permutation(8), "cols": g.permutation(6)}]  # fmt: skip
    for (inv, _), want in zip(log["runs"], starts, strict=True):
        assert inv.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(inv[k], want[k])
    # the lowest final error is kept (the first of equals), with its own history
    errs = [it[6] for it in log["iterate"]]
    best = errs.index(min(errs))
    run = log["runs"][best][1]
    assert P.errors == log["iterate"][best][5] and P.n_iter == len(P.errors) - 1
    assert P.tt is run.T
    np.testing.assert_array_equal(P.row_perm, np.argsort(run.inv["rows"]))
    np.testing.assert_array_equal(P.col_perm, np.argsort(run.inv["cols"]))
    assert P.permuted == (True, True)
    # the fake clock ticks once per call: each fit, cost build and LSAP counts one second
    n = len(log["lsap"])
    assert P.timings == {"cost": n, "lsap": n, "svd": len(log["fit"]), "n_lsap": n,
                         "total": clock.n - 1}  # fmt: skip
    # every fit of every run is at the right modes (rows) or the transposed ones (cols)
    assert {f[1:3] for f in log["fit"]} <= {((2, 4), (3, 2)), ((3, 2), (2, 4))}


@pytest.mark.parametrize(
    "shape,modes,permute,sides",
    [
        ((8, 6), ((2, 4), (3, 2)), "both", ["rows", "cols"]),
        ((6, 8), ((3, 2), (2, 4)), "both", ["cols", "rows"]),  # N > M: columns first
        ((8, 8), ((2, 4), (4, 2)), "both", ["rows", "cols"]),
        ((8, 6), ((2, 4), (3, 2)), "rows", ["rows"]),
        ((8, 6), ((2, 4), (3, 2)), "cols", ["cols"]),
        ((8, 6), ((2, 4), (3, 2)), "none", []),
        ((1, 6), ((1, 1), (3, 2)), "both", ["cols"]),  # a side of one index is not permuted
        ((8, 1), ((2, 4), (1, 1)), "rows", ["rows"]),
        ((8, 6), ((8,), (6,)), "both", []),  # one core: the train is W itself
    ],
)
def test_the_permuted_sides_and_the_restart_count(shape, modes, permute, sides, monkeypatch):
    log, _ = _spy_all(monkeypatch)
    W = np.random.default_rng(0).standard_normal(shape)
    P = permuted_tt(W, *modes, ranks=1, permute=permute, n_iter=2, n_restarts=3, rng=0)
    assert [it[0] for it in log["iterate"]] == [sides] * (3 if sides else 1)
    assert P.permuted == ("rows" in sides, "cols" in sides)
    if not sides:
        ref = tt_matrix(W, *modes, ranks=1)
        assert P.errors == [pytest.approx(np.linalg.norm(W - ref.to_dense()) / np.linalg.norm(W),
                                          rel=1e-12)]  # fmt: skip
        np.testing.assert_array_equal(P.row_perm, np.arange(shape[0]))


def test_a_zero_matrix_has_zero_error_and_equal_restarts_keep_the_first(monkeypatch):
    log, _ = _spy_all(monkeypatch)
    P = permuted_tt(np.zeros((4, 4)), (2, 2), (2, 2), ranks=1, n_iter=2, n_restarts=3, rng=1)
    assert P.errors[0] == 0.0 and all(e == 0.0 for e in P.errors)
    first = log["runs"][0][1]
    assert len(log["runs"]) == 3 and P.tt is first.T
    np.testing.assert_array_equal(P.row_perm, np.argsort(first.inv["rows"]))
    np.testing.assert_array_equal(P.col_perm, np.argsort(first.inv["cols"]))


def _ref_iterate(errs_after_steps, sides, rule, n_iter, tol, stop_at=None):
    """The loop's contract: which (rule, side) steps run and the error history."""
    seq = iter(errs_after_steps)
    err = next(seq)
    hist, steps = [err], []
    phase = "assign" if rule == "assign" else "slots"
    it = 0
    while sides and it < n_iter:
        prev = err
        rules = ["assign", "slots"] if phase == "polish" else [phase]
        for r in rules:
            for s in sides:
                steps.append((r, s))
                err = next(seq)
        hist.append(err)
        if stop_at is not None and it == stop_at:
            break
        stalled = prev - err <= tol * prev
        it += 1
        if stalled and rule == "slots+assign" and phase == "slots":
            phase = "polish"
        elif stalled:
            break
    return hist, steps


@given(drops=st.lists(st.sampled_from([0.0, 1e-6, 0.01, 0.3]), min_size=30, max_size=30),
       sides=st.sampled_from([["rows"], ["cols", "rows"], []]),
       rule=st.sampled_from(["slots", "assign", "slots+assign"]),
       n_iter=st.integers(0, 5), tol=st.sampled_from([0.0, 1e-4, 0.05]),
       stop_at=st.one_of(st.none(), st.integers(0, 4)))  # fmt: skip
@settings(max_examples=60)
def test_iterate_runs_the_phases_and_stops_by_its_rule(drops, sides, rule, n_iter, tol, stop_at):
    errs, e = [1.0], 1.0
    for dr in drops:
        e *= 1 - dr
        errs.append(e)
    want_hist, want_steps = _ref_iterate(errs, sides, rule, n_iter, tol, stop_at)
    steps, seen = [], []
    run = SimpleNamespace(err=errs[0])
    it_errs = iter(errs[1:])

    def step(r, s):
        steps.append((r, s))
        run.err = next(it_errs)

    run.step = step

    def callback(it, err):
        seen.append((it, err))
        return True if it == stop_at else 0

    hist = tpm._iterate(run, sides, rule, n_iter, tol, callback)
    assert hist == want_hist and steps == want_steps
    assert seen == list(enumerate(want_hist[1:]))
    run.err, it_errs, steps[:] = errs[0], iter(errs[1:]), []
    hist2 = tpm._iterate(run, sides, rule, n_iter, tol, None)
    assert hist2 == _ref_iterate(errs, sides, rule, n_iter, tol)[0]


def _run(W, rm, cm, ranks, inv=None):
    M, N = W.shape
    inv = inv or {"rows": np.arange(M), "cols": np.arange(N)}
    t = {"cost": 0.0, "lsap": 0.0, "svd": 0.0, "n_lsap": 0}
    norm = float(np.linalg.norm(W))
    return tpm._Run(W, rm, cm, ttm_check(ranks, rm, cm), np, norm, "auto", None, t, inv)


def ttm_check(ranks, rm, cm):
    from tqla.tt import check_ranks

    return check_ranks(ranks, [a * b for a, b in zip(rm, cm)])


def test_run_starts_from_the_permuted_matrix_and_its_fit():
    W = np.random.default_rng(1).standard_normal((8, 6))
    run = _run(W, (2, 4), (3, 2), 2)
    assert run.U is W  # the identity moves nothing
    ref = tt_matrix(W, (2, 4), (3, 2), ranks=2)
    np.testing.assert_array_equal(run.T.to_dense(), ref.to_dense())
    assert run.err == np.linalg.norm(W - ref.to_dense()) / np.linalg.norm(W)
    assert run.t["svd"] > 0 and run.t["n_lsap"] == 0
    inv = {"rows": np.array([1, 0, 2, 3, 4, 5, 7, 6]), "cols": np.array([5, 4, 3, 2, 1, 0])}
    run = _run(W, (2, 4), (3, 2), 2, inv)
    np.testing.assert_array_equal(run.U, W[inv["rows"]][:, inv["cols"]])
    half = {"rows": np.arange(8), "cols": inv["cols"]}
    np.testing.assert_array_equal(_run(W, (2, 4), (3, 2), 2, half).U, W[:, inv["cols"]])
    half = {"rows": inv["rows"], "cols": np.arange(6)}
    np.testing.assert_array_equal(_run(W, (2, 4), (3, 2), 2, half).U, W[inv["rows"]])
    T2, e2 = run.fit(W, (4, 2), (2, 3))
    assert (T2.row_modes, T2.col_modes, T2.ranks) == ((4, 2), (2, 3), (1, 2, 1))
    assert e2 == run.err_of(W, T2)


def _consistent(run, W):
    np.testing.assert_array_equal(run.U, W[run.inv["rows"]][:, run.inv["cols"]])
    assert run.err == pytest.approx(run.err_of(run.U, run.T), rel=1e-12, abs=1e-15)


@given(seed=st.integers(0, 2**16), rule=st.sampled_from(["slots", "assign"]),
       side=st.sampled_from(["rows", "cols"]))  # fmt: skip
@settings(max_examples=20, deadline=None)
def test_a_step_keeps_u_t_the_permutation_and_the_error_consistent(seed, rule, side):
    rng = np.random.default_rng(seed)
    T = TTMatrix([rng.standard_normal(s) for s in [(1, 2, 2, 2), (2, 2, 3, 2), (2, 2, 1, 1)]])
    W = T.to_dense()[rng.permutation(8)][:, rng.permutation(6)]
    W = W + 0.05 * rng.standard_normal(W.shape)
    run = _run(W, T.row_modes, T.col_modes, 2)
    for _ in range(2):
        before, inv = run.err, {k: v.copy() for k, v in run.inv.items()}
        changed = run.step(rule, side)
        assert changed == (not np.array_equal(run.inv[side], inv[side]))
        other = "cols" if side == "rows" else "rows"
        np.testing.assert_array_equal(run.inv[other], inv[other])
        assert run.err <= before
        _consistent(run, W)
        assert (run.T.row_modes, run.T.col_modes) == (T.row_modes, T.col_modes)


def _scripted(monkeypatch, cols):
    """_Run.solve returns the scripted LSAP solutions (col_ind) in turn."""
    it = iter(cols)
    monkeypatch.setattr(tpm._Run, "solve", lambda self, cost, t: np.asarray(next(it)))


def test_slot_sweep_moves_rows_within_their_slots_and_refits_the_first_core(monkeypatch):
    """Rows i = i_1·m_2 + slot; slot s's solution sends the row in block-row src[t] to t; the
    held candidate is the best first core for the held right cores (R(U)·V·Vᵀ)."""
    rng = np.random.default_rng(0)
    T = TTMatrix([rng.standard_normal(s) for s in [(1, 3, 2, 2), (2, 2, 3, 1)]])
    U = rng.standard_normal((6, 6))
    run = _run(U, (3, 2), (2, 3), 2)
    # slot 0: identity (skipped), slot 1: a 3-cycle
    _scripted(monkeypatch, [[0, 1, 2], [2, 0, 1]])
    seen = []
    real = tpm.slots_cost
    monkeypatch.setattr(tpm, "slots_cost", lambda *a, **kw: seen.append(a[3]) or real(*a, **kw))
    g, cur, held = run._slots(U, T)
    src = np.argsort([2, 0, 1])
    want = np.arange(6)
    want[np.arange(3) * 2 + 1] = src * 2 + 1
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(cur, U[want])
    assert seen == [0, 1]  # one cost per slot, in order
    s = KroneckerShape((3, 2), (2, 3))
    V, right = tpm._right_basis(T)
    A = rearrange(cur, s) @ V
    ref = TTMatrix([A.reshape(1, 3, 2, -1), *right])
    np.testing.assert_allclose(held.to_dense(), ref.to_dense(), atol=1e-12)
    _scripted(monkeypatch, [[0, 1, 2], [0, 1, 2]])
    g, cur, held = run._slots(U, T)
    assert cur is U and held is None
    np.testing.assert_array_equal(g, np.arange(6))


@given(tst_T=st.integers(0, 2**16))
@settings(max_examples=10)
def test_right_basis_is_orthonormal_and_rebuilds_the_matrix(tst_T):
    rng = np.random.default_rng(tst_T)
    T = TTMatrix([rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 3, 2, 3), (3, 2, 2, 1)]])
    V, right = tpm._right_basis(T)
    assert V.shape == (6 * 4, 2)
    np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-12)
    s = KroneckerShape((2, 3), (6, 4))
    A = rearrange(T.to_dense(), s) @ V
    back = TTMatrix([A.reshape(1, 2, 3, 2), *right])
    np.testing.assert_allclose(back.to_dense(), T.to_dense(), atol=1e-10)
    assert [tuple(G.shape) for G in right] == [(2, 3, 2, 3), (3, 2, 2, 1)]


def test_a_step_takes_the_better_candidate_and_ties(monkeypatch):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((8, 6))
    run = _run(W, (2, 4), (3, 2), 2)
    _scripted(monkeypatch, [[1, 0, 2, 3, 4, 5, 6, 7]])
    fitted = []
    real_fit = tpm._Run.fit

    def fit(self, U, rm=None, cm=None):
        T, e = real_fit(self, U, rm, cm)
        fitted.append(T)
        return T, 0.0  # claims to be exact: the refit wins

    monkeypatch.setattr(tpm._Run, "fit", fit)
    assert run.step("assign", "rows") is True
    assert run.T is fitted[-1] and run.err == 0.0
    np.testing.assert_array_equal(run.inv["rows"], [1, 0, 2, 3, 4, 5, 6, 7])
    # a step whose best candidate is exactly as good as the current state is taken
    monkeypatch.setattr(tpm._Run, "fit", real_fit)
    run = _run(W, (2, 4), (3, 2), 2)
    assert run.err > 0
    held = run.T
    monkeypatch.setattr(tpm._Run, "fit", lambda self, U, rm=None, cm=None: (held, 1e9))
    monkeypatch.setattr(tpm._Run, "err_of", lambda self, U, T: self.err)
    _scripted(monkeypatch, [[1, 0, 2, 3, 4, 5, 6, 7]])
    e0 = run.err
    assert run.step("assign", "rows") is True and run.err == e0 and run.T is held
    # and one that would increase it is refused
    monkeypatch.setattr(tpm._Run, "err_of", lambda self, U, T: self.err * 2)
    _scripted(monkeypatch, [[1, 0, 2, 3, 4, 5, 6, 7]])
    inv = run.inv["rows"].copy()
    assert run.step("assign", "rows") is False
    np.testing.assert_array_equal(run.inv["rows"], inv)


@pytest.mark.parametrize(
    "rm,cm,side",
    [
        ((1, 8), (2, 3), "rows"),
        ((8, 1), (2, 3), "rows"),
        ((8,), (6,), "rows"),
        ((2, 4), (1, 6), "cols"),
        ((2, 4), (6, 1), "cols"),
    ],  # fmt: skip
)
def test_slots_has_nothing_to_move_without_two_nontrivial_row_modes(rm, cm, side, monkeypatch):
    W = np.random.default_rng(0).standard_normal((8, 6))
    run = _run(W, rm, cm, 1)
    calls = []
    monkeypatch.setattr(tpm, "slots_cost", lambda *a, **k: calls.append(a))
    assert run.step("slots", side) is False and calls == []


def test_permuted_tt_repr_and_transpose():
    W = np.random.default_rng(0).standard_normal((6, 4))
    T = tt_matrix(W, (3, 2), (2, 2), ranks=1)
    P = PermutedTT(T, np.array([1, 0, 2, 3, 4, 5]), np.arange(4), [0.5, 0.25], 1,
                   permuted=(True, False), timings={"svd": 1.0})  # fmt: skip
    assert (
        repr(P)
        == "PermutedTT(shape=(6, 4), ranks=(1, 1, 1), permuted rows=True cols=False, error=0.25)"
    )
    Q = P.T
    assert isinstance(Q, PermutedTT) and Q.shape == (4, 6) and Q.permuted == (False, True)
    np.testing.assert_array_equal(Q.row_perm, P.col_perm)
    np.testing.assert_array_equal(Q.col_perm, P.row_perm)
    assert (Q.errors, Q.n_iter, Q.timings) == (P.errors, 1, {"svd": 1.0})
    np.testing.assert_array_equal(Q.to_dense(), P.to_dense().T)
    np.testing.assert_array_equal(Q.tt.to_dense(), T.to_dense().T)
    assert math.isclose(P.error, 0.25)
