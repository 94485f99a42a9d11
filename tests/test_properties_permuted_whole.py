"""tqla/permuted.py stated function by function (issue 15, fifth pass).

Earlier passes killed sampled mutants one at a time; these tests state each function of
the module whole, so that a fresh sample finds nothing new:

* ``timings``: every key present (and no other), each >= 0, the parts within the total,
  ``n_lsap`` the solver calls counted by a spy, ``host_bytes`` / ``host_copies`` the sum /
  count over the solver results, and each time part at least the time its spied callee
  slept (so a part that is overwritten instead of accumulated is seen);
* the loop of :func:`permuted_kron` against a reference model of the documented loop
  (phases, polish steps, stalling with ties at ``tol=0``, callback, ``n_iter``), driven
  by a scripted ``_Run.step``;
* ``_Run.step``: its return value and state for accepted, rejected, tied and identity
  updates, and every argument it hands to the cost builders and the solver;
* ``_Run.error``: the Gram identity for poor fits, the dense difference below the ~3%
  threshold (a spy on ``to_dense`` tells the route), both compared with the dense error;
* ``_sync``, ``_svd_kernel``, the restarts, the permuted sides, the defaults, the result
  class and the estimator wrapper.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import types

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tqla.assignment as assignment_module
import tqla.permuted as pm
from tqla import KroneckerShape, KroneckerSum, kron_svd, permuted_kron
from tqla.lsap import LSAPResult

KEYS = {"cost", "lsap", "svd", "gather", "total", "n_lsap", "host_copies", "host_bytes"}
SLEEP = 0.002


def _W(s: KroneckerShape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(s.matrix_shape)


def _near_kron(s: KroneckerShape, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = np.kron(rng.standard_normal((s.m1, s.n1)), rng.standard_normal((s.m2, s.n2)))
    return W + noise * np.linalg.norm(W) * rng.standard_normal(W.shape) / np.sqrt(W.size)


def _dense_err(W, s, r) -> float:
    return float(np.linalg.norm(W - kron_svd(W, s, r).to_dense()) / np.linalg.norm(W))


# --------------------------------------------------------------------------------------
# timings
# --------------------------------------------------------------------------------------
class _Spies:
    """Counts (and slows by SLEEP) every timed callee of permuted_kron."""

    def __init__(self, monkeypatch, fake_host_bytes: bool):
        self.results: list[LSAPResult] = []
        self.n = {"cost": 0, "assign": 0, "fit": 0, "take": 0}
        real_lsap, real_svd, real_take = pm.lsap, pm.kron_svd, pm.take
        real_cost, real_assign = pm.SlotsCost.cost, pm.SlotsCost.assign
        real_assign_cost = pm.assign_cost

        def lsap(cost, **kw):
            time.sleep(SLEEP)
            res = real_lsap(cost, **kw)
            if fake_host_bytes:  # 0, 1, 2, 0, ... bytes: the count and the sum are exact
                res = LSAPResult(
                    res.row_ind,
                    res.col_ind,
                    cost=res.cost,
                    solver=res.solver,
                    prices=res.prices,
                    host_bytes=len(self.results) % 3,
                )
            self.results.append(res)
            return res

        def slow(name, real):
            def f(*a, **kw):
                self.n[name] += 1
                time.sleep(SLEEP)
                return real(*a, **kw)

            return f

        monkeypatch.setattr(pm, "lsap", lsap)
        monkeypatch.setattr(pm, "kron_svd", slow("fit", real_svd))
        monkeypatch.setattr(pm, "take", slow("take", real_take))
        monkeypatch.setattr(pm, "assign_cost", slow("cost", real_assign_cost))
        monkeypatch.setattr(pm.SlotsCost, "cost", slow("cost", real_cost))
        monkeypatch.setattr(pm.SlotsCost, "assign", slow("assign", real_assign))


@pytest.mark.parametrize("rule", ["slots", "assign", "slots+assign"])
@pytest.mark.parametrize("fake_host_bytes", [False, True], ids=["real", "fake-bytes"])
def test_timings_hold_every_key_and_account_for_every_timed_call(
    monkeypatch, rule, fake_host_bytes
):
    spies = _Spies(monkeypatch, fake_host_bytes)
    s = KroneckerShape((4, 3), (3, 2))
    t0 = time.perf_counter()
    P = permuted_kron(_W(s, 1), s, 1, rule=rule, n_iter=3, tol=0.0)
    wall = time.perf_counter() - t0
    t = P.timings
    assert set(t) == KEYS
    assert all(t[k] >= 0 for k in KEYS)
    assert all(isinstance(t[k], float) for k in ("cost", "lsap", "svd", "gather", "total"))
    assert all(type(t[k]) is int for k in ("n_lsap", "host_copies", "host_bytes"))
    res = spies.results
    assert t["n_lsap"] == len(res) >= 4
    assert t["host_bytes"] == sum(r.host_bytes for r in res)
    assert t["host_copies"] == sum(r.host_bytes > 0 for r in res)
    if fake_host_bytes:
        assert 0 < t["host_copies"] < len(res)
    # each part accumulates over its calls (an overwritten part would hold one call)
    n = spies.n
    assert n["fit"] >= 2 and n["take"] >= 1
    assert t["cost"] >= (n["cost"] + n["assign"]) * SLEEP
    assert t["lsap"] >= len(res) * SLEEP
    assert t["svd"] >= n["fit"] * SLEEP
    assert t["gather"] >= n["take"] * SLEEP  # one start at the identity: every take is a step
    parts = t["cost"] + t["lsap"] + t["svd"] + t["gather"]
    assert parts <= t["total"] <= wall


def test_timings_of_a_run_without_permuted_sides_are_the_fit_only():
    s = KroneckerShape((1, 3), (4, 1))
    P = permuted_kron(_W(s), s, 1)
    t = P.timings
    assert set(t) == KEYS
    assert t["n_lsap"] == t["host_copies"] == t["host_bytes"] == 0
    assert t["cost"] == t["lsap"] == t["gather"] == 0.0
    assert 0.0 < t["svd"] <= t["total"]


# --------------------------------------------------------------------------------------
# the loop of permuted_kron against a model of the documented loop
# --------------------------------------------------------------------------------------
def _model(e0, factors, rule, sides, n_iter, tol, stop_at):
    err, k = e0, 0
    errors, calls, seen, lines = [e0], [], [], []
    phase = "assign" if rule == "assign" else "slots"
    for it in range(n_iter):
        prev = err
        for r in [phase] if phase != "polish" else ["assign", "slots"]:
            for sd in sides:
                calls.append((r, sd))
                err = err * (factors[k] if k < len(factors) else 1.0)
                k += 1
        errors.append(err)
        seen.append((it, err))
        lines.append(f"restart 0 iteration {it} ({phase}): error {err:.6g}")
        if it == stop_at:
            break
        if prev - err <= tol * prev:
            if rule == "slots+assign" and phase == "slots":
                phase = "polish"
                continue
            break
    return errors, calls, seen, lines


class _Lines(logging.Handler):
    """The debug lines of one iteration each (a handler: caplog is per test, not per
    Hypothesis example)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        if record.getMessage().startswith(("restart", "XX", "RESTART")) or "iteration" in str(
            record.msg
        ):
            self.lines.append(record.getMessage())


def _script_steps(monkeypatch, factors):
    calls = []

    def fake_step(self, rule, side):
        f = factors[len(calls)] if len(calls) < len(factors) else 1.0
        calls.append((rule, side))
        self.err = self.err * f
        return f < 1.0

    monkeypatch.setattr(pm._Run, "step", fake_step)
    return calls


FACTOR = st.sampled_from([1.0, 1.0, 0.99999, 0.9995, 0.99, 0.9, 0.5])
SHAPES = {"both": ((4, 3), (3, 2)), "rows": ((4, 1), (3, 2)), "cols": ((1, 3), (3, 2))}


@given(
    factors=st.lists(FACTOR, max_size=30),
    rule=st.sampled_from(["slots", "assign", "slots+assign"]),
    which=st.sampled_from(["both", "rows", "cols"]),
    n_iter=st.integers(0, 7),
    tol=st.sampled_from([0.0, 1e-4, 1e-3, 0.1]),
    near=st.booleans(),
    stop_at=st.none() | st.integers(0, 6),
)
@example(
    factors=[0.5, 1.0, 0.5, 0.5],
    rule="slots",
    which="both",
    n_iter=5,
    tol=0.0,
    near=False,
    stop_at=None,
)  # a tie stalls at tol = 0
@example(
    factors=[1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 0.5],
    rule="slots+assign",
    which="both",
    n_iter=6,
    tol=0.0,
    near=False,
    stop_at=None,
)  # tie -> polish, tie -> stop
@example(
    factors=[0.99] * 10, rule="slots", which="rows", n_iter=5, tol=1e-3, near=True, stop_at=None
)  # 1% steps from a 1% error: tol is relative to the error
@example(
    factors=[0.5] * 10, rule="assign", which="rows", n_iter=5, tol=0.9, near=True, stop_at=None
)
def test_the_loop_follows_the_documented_phases_stall_rule_and_callback(
    factors, rule, which, n_iter, tol, near, stop_at
):
    with pytest.MonkeyPatch.context() as mp:
        calls = _script_steps(mp, factors)
        s = KroneckerShape(*SHAPES[which])
        W = _near_kron(s, 0.01, 3) if near else _W(s, 3)
        seen = []

        def callback(it, err):
            seen.append((it, err))
            return np.True_ if it == stop_at else np.False_

        log = logging.getLogger("tqla.permuted")
        handler, level = _Lines(), log.level
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        try:
            P = permuted_kron(W, s, 1, rule=rule, n_iter=n_iter, tol=tol, callback=callback)
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
    sides = ["rows", "cols"] if which == "both" else [which]
    want = _model(P.errors[0], factors, rule, sides, n_iter, tol, stop_at)
    errors, want_calls, want_seen, want_lines = want
    assert handler.lines == want_lines
    assert P.errors == errors
    assert P.n_iter == len(errors) - 1
    assert calls == want_calls
    assert seen == want_seen
    assert P.restart_errors == [errors[-1]]
    assert P.errors[0] == pytest.approx(_dense_err(W, s, 1), rel=1e-9)


@pytest.mark.parametrize("step_gain", [0.5, 1 - 2e-5, 1 - 1e-4])
def test_defaults_are_ten_iterations_tol_1e4_rank_1_and_one_start(monkeypatch, step_gain):
    """With scripted steps (two per iteration: both sides): 10 iterations when every one
    improves by more than 1e-4 relative (2e-4); 4e-5 stalls the slots phase, then the
    polish phase."""
    _script_steps(monkeypatch, [step_gain] * 100)
    s = KroneckerShape((4, 3), (3, 2))
    P = permuted_kron(_W(s), s)
    assert P.rank == 1 and P.kron.A.shape == (1, 4, 3)
    assert P.n_iter == (2 if step_gain > 1 - 5e-5 else 10)
    assert len(P.restart_errors) == 1


def test_default_kernel_solver_and_no_warm_start_reach_the_callees(monkeypatch):
    seen = {"slots": [], "inits": []}
    real_slots, real_lsap = pm.SlotsCost, pm.lsap

    class Slots(real_slots):
        def __init__(self, *a, **kw):
            seen["slots"].append(kw)
            super().__init__(*a, **kw)

    def lsap(cost, *, solver, init):
        seen["inits"].append((solver, init))
        return real_lsap(cost, solver=solver, init=init)

    monkeypatch.setattr(pm, "SlotsCost", Slots)
    monkeypatch.setattr(pm, "lsap", lsap)
    s = KroneckerShape((4, 3), (3, 2))
    permuted_kron(_W(s), s, n_iter=3, tol=0.0)
    assert seen["slots"] and all(kw["kernel"] == "auto" for kw in seen["slots"])
    assert all(
        kw["max_bytes"] == assignment_module.default_max_cost_bytes() for kw in seen["slots"]
    )
    assert seen["inits"] and all(sv == "auto" and i is None for sv, i in seen["inits"])


# --------------------------------------------------------------------------------------
# _Run.step: arguments, return value, acceptance (ties included)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["numpy", "array_api"])
def test_every_step_hands_on_its_kernels_memory_ceiling_and_warm_start_keys(monkeypatch, kernel):
    slots_kw, assign_kw = [], []
    real_slots, real_assign_cost = pm.SlotsCost, pm.assign_cost

    class Slots(real_slots):
        def __init__(self, *a, **kw):
            slots_kw.append(kw)
            super().__init__(*a, **kw)

    def assign_cost(U, K, **kw):
        assign_kw.append(kw)
        return real_assign_cost(U, K, **kw)

    monkeypatch.setattr(pm, "SlotsCost", Slots)
    monkeypatch.setattr(pm, "assign_cost", assign_cost)
    s = KroneckerShape((4, 3), (3, 2))
    permuted_kron(
        _W(s),
        s,
        1,
        rule="slots+assign",
        n_iter=3,
        tol=float("inf"),
        kernel=kernel,
        solver="scipy",
        max_cost_bytes=10**7,
    )
    assert slots_kw and assign_kw
    for kw in slots_kw:
        assert kw == {"kernel": kernel, "max_bytes": 10**7, "projection_kernel": kernel}
    assert assign_kw == [{"max_bytes": 10**7}] * len(assign_kw)


@pytest.mark.parametrize("rule", ["slots", "assign"])
def test_warm_starts_come_from_the_last_solve_of_the_same_rule_side_and_slot(monkeypatch, rule):
    log = []  # (init, result) per solve
    real = pm.lsap

    def spy(cost, *, solver, init):
        res = real(cost, solver=solver, init=init)
        log.append((init, res, cost.shape[0]))
        return res

    monkeypatch.setattr(pm, "lsap", spy)
    s = KroneckerShape((4, 3), (3, 2))
    permuted_kron(_W(s, 4), s, 1, rule=rule, n_iter=3, tol=0.0, solver="jv", warm_start=True)
    per_iter = (s.m2 + s.n2) if rule == "slots" else 2
    assert len(log) >= 2 * per_iter
    for i, (init, _, n) in enumerate(log):
        if i < per_iter:
            assert init is None
            continue
        prev = log[i - per_iter][1]
        assert isinstance(init, LSAPResult)
        np.testing.assert_array_equal(init.row_ind, np.arange(n))
        np.testing.assert_array_equal(init.col_ind, np.arange(n))
        assert init.prices is prev.prices and init.prices is not None
        assert init.cost == prev.cost and init.solver == prev.solver == "jv"


def _spy_steps(monkeypatch):
    record = []
    real = pm._Run.step

    def spy(self, rule, side):
        before = (self.U, self.K, self.err, self.inv["rows"].copy(), self.inv["cols"].copy())
        ret = real(self, rule, side)
        assert self.warm == {}  # no warm-start state is kept without warm_start
        record.append(
            (ret, before, (self.U, self.K, self.err, self.inv["rows"], self.inv["cols"]), side)
        )
        return ret

    monkeypatch.setattr(pm._Run, "step", spy)
    return record


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_step_returns_true_exactly_when_it_changed_the_state(monkeypatch, seed):
    """Accepted: True, U/K/err replaced, the error not larger, the side's inverse moved;
    rejected or unmoved: False and the state untouched (the same objects)."""
    record = _spy_steps(monkeypatch)
    s = KroneckerShape((4, 3), (3, 2))
    W = np.kron(np.ones((4, 3)), np.ones((3, 2))) + 0.3 * _W(s, seed)
    permuted_kron(W, s, 1, rule="slots+assign", n_iter=6, tol=0.0)
    outcomes = set()
    for ret, (U0, K0, e0, r0, c0), (U1, K1, e1, r1, c1), side in record:
        outcomes.add(ret)
        if ret:
            assert U1 is not U0 and K1 is not K0 and e1 <= e0
            moved, kept = (r1, c1) if side == "rows" else (c1, r1)
            assert not np.array_equal(moved, r0 if side == "rows" else c0)
            np.testing.assert_array_equal(kept, c0 if side == "rows" else r0)
        else:
            assert U1 is U0 and K1 is K0 and e1 == e0
            np.testing.assert_array_equal(r1, r0)
            np.testing.assert_array_equal(c1, c0)
    assert outcomes == {True, False}


@pytest.mark.parametrize("rule", ["slots", "assign"])
def test_a_step_whose_refit_ties_the_error_is_accepted(monkeypatch, rule):
    """Every refit is given the same error and the solver is made to swap two rows: the
    step ties the current error exactly, and it is kept (the error never increases)."""
    s = KroneckerShape((2, 3), (2, 2))
    W = _W(s, 7)
    real = pm.lsap
    monkeypatch.setattr(pm._Run, "error", lambda self, U, K: 0.5)

    def swap(cost, **kw):
        res = real(cost, **kw)
        n = len(res.col_ind)
        col = np.arange(n)
        col[[0, 1]] = col[[1, 0]]
        return LSAPResult(np.arange(n), col, cost=res.cost, solver=res.solver)

    monkeypatch.setattr(pm, "lsap", swap)
    record = _spy_steps(monkeypatch)
    P = permuted_kron(W, s, 1, rule=rule, permute="rows", n_iter=1, tol=0.0)
    ret, (_, _, e0, _, _), (_, _, e1, _, _), _ = record[0]
    assert e1 == e0 and ret is True
    assert P.row_perm.tolist() != [0, 1, 2, 3] and P.errors == [0.5, 0.5]


def test_a_step_that_worsens_the_error_is_rejected_and_logged(monkeypatch, caplog):
    """Every refit is made a hair worse than the kept error: every step that moves
    something is rejected, with its debug line."""
    real_fit = pm._Run.fit
    n = []

    def worse(self, U):
        K, err = real_fit(self, U)
        n.append(1)
        return K, self.err * (1 + 1e-12) if hasattr(self, "err") else err

    monkeypatch.setattr(pm._Run, "fit", worse)
    record = _spy_steps(monkeypatch)
    s = KroneckerShape((4, 3), (3, 2))
    with caplog.at_level(logging.DEBUG, logger="tqla.permuted"):
        P = permuted_kron(_W(s, 5), s, 1, n_iter=2, tol=0.0)
    assert record and all(ret is False for ret, *_ in record)
    assert P.errors == [P.errors[0]] * len(P.errors)
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == len(n) - 1 > 0
    for m in rejected:
        assert re.fullmatch(r"step (slots|assign)/(rows|cols) rejected: error \S+ > \S+", m)


# --------------------------------------------------------------------------------------
# _Run.error: the Gram identity and the dense fallback
# --------------------------------------------------------------------------------------
def _count_dense(monkeypatch):
    calls = []
    real = KroneckerSum.to_dense

    def spy(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(KroneckerSum, "to_dense", spy)
    return calls


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize(
    ("noise", "dense"),
    [(0.0, True), (0.003, True), (0.015, True), (0.08, False), (0.3, False), (None, False)],
)
@pytest.mark.parametrize("rank", [1, 2])
def test_the_error_takes_the_dense_route_exactly_below_three_percent(
    monkeypatch, scale, noise, dense, rank
):
    s = KroneckerShape((4, 3), (3, 2))
    W = scale * (_W(s, 5) if noise is None else _near_kron(s, noise, 5))
    ref = _dense_err(W, s, rank)
    assert (ref < 0.025) == dense and not 0.025 <= ref <= 0.04  # the case is clear-cut
    calls = _count_dense(monkeypatch)
    P = permuted_kron(W, s, rank, n_iter=0)
    assert len(calls) == int(dense)
    if noise == 0.0 and rank == 1:
        assert P.errors[0] <= 1e-13  # the Gram identity would leave ~1e-8 (cancellation)
    else:
        assert P.errors[0] == pytest.approx(ref, rel=1e-8)


def test_the_error_of_w_zero_is_zero_from_the_dense_difference(monkeypatch):
    calls = _count_dense(monkeypatch)
    s = KroneckerShape((2, 2), (2, 3))
    P = permuted_kron(np.zeros(s.matrix_shape), s, 1, n_iter=0)
    assert P.errors == [0.0] and len(calls) == 1  # e2 = 0 is not above the threshold


def test_the_error_of_float32_input_is_accumulated_in_float64():
    s = KroneckerShape((4, 3), (3, 2))
    W = _W(s, 6).astype(np.float32)
    P = permuted_kron(W, s, 2, n_iter=0)
    W64 = W.astype(np.float64)
    D = P.kron.to_dense().astype(np.float64)
    assert P.errors[0] == pytest.approx(np.linalg.norm(W64 - D) / np.linalg.norm(W64), rel=1e-5)


# --------------------------------------------------------------------------------------
# _sync and _svd_kernel
# --------------------------------------------------------------------------------------
def test_sync_waits_on_cuda_tensors_and_on_the_cupy_stream_only(monkeypatch):
    torch = pytest.importorskip("torch")
    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: waits.append(dev))
    on_cuda, on_cpu, no_type = torch.zeros(2), torch.zeros(2), torch.zeros(2)
    cuda = torch.device("cuda", 0)
    devices = {id(on_cuda): cuda, id(on_cpu): torch.device("cpu"), id(no_type): object()}
    monkeypatch.setattr(pm, "device_of", lambda x: devices[id(x)])
    stream = []
    fake_cupy = types.ModuleType("cupy")
    fake_cupy.cuda = types.SimpleNamespace(
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: stream.append(1))
    )
    cupy_array = object()
    real_ns = pm.array_namespace
    cupy_ns = types.ModuleType("cupy")  # what lib_name reads: the namespace's name
    monkeypatch.setattr(pm, "array_namespace", lambda x: cupy_ns if x is cupy_array else real_ns(x))
    pm._sync(on_cuda)
    assert waits == [cuda] and stream == []
    for x in (on_cpu, no_type, np.zeros(2)):  # a device without a type is not CUDA
        pm._sync(x)
    assert waits == [cuda] and stream == []
    fake_cupy.ndarray = type("ndarray", (), {})  # what array_api_compat probes
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)  # only now: no real CuPy here
    pm._sync(cupy_array)
    assert waits == [cuda] and stream == [1]


@pytest.mark.parametrize(
    ("kernel", "solver", "lib", "numba", "want"),
    [
        ("numpy", "auto", "numpy", True, "numpy"),
        ("array_api", "jv", "numpy", True, "array_api"),
        ("numba", "scipy", "numpy", True, "numba"),
        ("numba", "auto", "numpy", False, "auto"),  # not installed: the default route
        ("auto", "auto", "numpy", True, "numba"),
        ("auto", "jv", "numpy", True, "numba"),
        ("auto", ("jv", "scipy"), "numpy", True, "numba"),
        ("auto", ("scipy", "jv"), "numpy", True, "auto"),
        ("auto", "scipy", "numpy", True, "auto"),
        ("auto", "auto", "numpy", False, "auto"),
        ("auto", "auto", "torch", True, "auto"),
        ("auto", "jv", "array_api_strict", True, "auto"),
    ],
)
def test_the_refit_kernel_follows_the_kernel_solver_and_library(
    monkeypatch, kernel, solver, lib, numba, want
):
    mod = pytest.importorskip(lib)
    asked = []

    def available(op):
        asked.append(op)
        return ("numpy", "numba", "array_api") if numba else ("numpy", "array_api")

    monkeypatch.setattr(pm, "available", available)
    xp = pm.array_namespace(mod.asarray(np.zeros(2)) if lib != "torch" else mod.zeros(2))
    assert pm._svd_kernel(kernel, solver, xp) == want
    assert set(asked) <= {"rearranged_gram"}
    if kernel != "auto" or (lib == "numpy" and want == "numba"):
        assert asked  # the answer depended on what is installed


# --------------------------------------------------------------------------------------
# restarts, sides, the result, the estimator
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["both", "rows", "cols"])
def test_restarts_draw_rows_then_cols_and_keep_the_lowest_final_error(which):
    s = KroneckerShape(*SHAPES[which])
    W = _W(s, 8)
    M, N = s.matrix_shape
    P = permuted_kron(W, s, 1, permute=which, n_iter=0, n_restarts=4, rng=11)
    gen = np.random.default_rng(11)
    starts = [(np.arange(M), np.arange(N))]
    for _ in range(3):
        r = gen.permutation(M) if which in ("both", "rows") else np.arange(M)
        c = gen.permutation(N) if which in ("both", "cols") else np.arange(N)
        starts.append((r, c))
    errs = [_dense_err(W[r][:, c], s, 1) for r, c in starts]
    np.testing.assert_allclose(P.restart_errors, errs, rtol=1e-9)
    best = int(np.argmin(errs))
    np.testing.assert_array_equal(P.row_perm, np.argsort(starts[best][0]))
    np.testing.assert_array_equal(P.col_perm, np.argsort(starts[best][1]))
    assert P.errors == [P.restart_errors[best]] and P.n_iter == 0


def test_restarts_that_tie_keep_the_first(monkeypatch):
    monkeypatch.setattr(pm._Run, "error", lambda self, U, K: 0.25)
    s = KroneckerShape((4, 3), (3, 2))
    P = permuted_kron(_W(s), s, 1, n_iter=0, n_restarts=3, rng=0)
    assert P.restart_errors == [0.25, 0.25, 0.25]
    np.testing.assert_array_equal(P.row_perm, np.arange(12))
    np.testing.assert_array_equal(P.col_perm, np.arange(6))


GRID = [
    ((1, 3), (3, 2)),
    ((2, 3), (1, 2)),
    ((2, 1), (2, 2)),
    ((2, 2), (2, 1)),
    ((2, 2), (2, 2)),
    ((3, 2), (2, 3)),
]


@pytest.mark.parametrize("shape", GRID)
@pytest.mark.parametrize("permute", ["both", "rows", "cols", "none"])
def test_the_permuted_sides_their_order_and_the_log(monkeypatch, caplog, shape, permute):
    s = KroneckerShape(*shape)
    rows_ok, cols_ok = s.m1 > 1 and s.m2 > 1, s.n1 > 1 and s.n2 > 1
    rows_on = permute in ("both", "rows") and rows_ok
    cols_on = permute in ("both", "cols") and cols_ok
    sides = []
    real = pm._Run.step
    monkeypatch.setattr(pm._Run, "step", lambda self, r, sd: sides.append(sd) or real(self, r, sd))
    with caplog.at_level(logging.INFO, logger="tqla.permuted"):
        P = permuted_kron(
            _W(s, 9), s, 1, rule="assign", permute=permute, n_iter=1, tol=0.0, n_restarts=2, rng=0
        )
    assert P.permuted == (rows_on, cols_on)
    assert P.n_perm_indices == s.matrix_shape[0] * rows_on + s.matrix_shape[1] * cols_on
    want = [sd for sd, on in (("rows", rows_on), ("cols", cols_on)) if on]
    if len(want) == 2 and s.matrix_shape[1] > s.matrix_shape[0]:
        want.reverse()
    assert sides == want * 2  # two starts when a side is permuted, else one and no step
    assert P.n_iter == (1 if want else 0) and len(P.restart_errors) == (2 if want else 1)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert infos == [
        f"permuted_kron: {sd} not permuted (a factor dimension is 1)"
        for sd, ok in (("rows", rows_ok), ("cols", cols_ok))
        if permute in ("both", sd) and not ok
    ]
    if not rows_on:
        np.testing.assert_array_equal(P.row_perm, np.arange(s.matrix_shape[0]))
    if not cols_on:
        np.testing.assert_array_equal(P.col_perm, np.arange(s.matrix_shape[1]))


def test_a_permuted_side_left_at_the_identity_still_counts_as_permuted():
    s = KroneckerShape((3, 2), (2, 3))
    rng = np.random.default_rng(0)
    W = np.kron(rng.standard_normal((3, 2)), rng.standard_normal((2, 3)))
    P = permuted_kron(W, s, 1, n_iter=2)
    np.testing.assert_array_equal(P.row_perm, np.arange(6))
    assert P.permuted == (True, True) and P.n_perm_indices == 12


REFIT_KERNELS = [("numpy", "scipy", "numpy"), ("auto", "scipy", "auto")]


@pytest.mark.parametrize(("kernel", "solver", "want"), REFIT_KERNELS)
def test_every_refit_gets_w_in_c_order_the_shape_rank_generator_and_kernel(
    monkeypatch, kernel, solver, want
):
    fits = []
    real = pm.kron_svd

    def spy(U, shape, rank, **kw):
        fits.append((U, shape, rank, kw))
        return real(U, shape, rank, **kw)

    monkeypatch.setattr(pm, "kron_svd", spy)
    s = KroneckerShape((4, 3), (3, 2))
    W = np.asfortranarray(_W(s, 12))
    gen = np.random.default_rng(3)
    permuted_kron(W, s, 2, n_iter=2, tol=0.0, n_restarts=2, rng=gen, kernel=kernel, solver=solver)
    assert len(fits) >= 3
    np.testing.assert_array_equal(fits[0][0], W)
    for U, shape, rank, kw in fits:
        assert U.flags["C_CONTIGUOUS"] and U.shape == W.shape
        assert shape == s and rank == 2
        assert kw == {"rng": gen, "kernel": want} and kw["rng"] is gen
