"""permuted_kron behaviours that mutation testing found unchecked (benchmarks/mutation.py).

Each test below kills at least one surviving mutant of tqla/permuted.py: the flags of a
hand-built result, permuting a side whose factor has 2 rows, the polish phase running
"assign" *and* a "slots" sweep, the warm start reaching the solver, the total time, and
the debug log of every iteration.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

import tqla.permuted as permuted_module
from tqla import KroneckerShape, KroneckerSum, PermutedKronecker, permuted_kron


def _W(s: KroneckerShape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(s.matrix_shape)


def test_permuted_flags_of_a_hand_built_result():
    rng = np.random.default_rng(0)
    K = KroneckerSum(rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 2)))
    P = PermutedKronecker(K, np.array([1, 0, 2, 3]), np.arange(6), [0.0], 0)
    assert P.permuted == (True, False)
    assert P.n_perm_indices == 4
    Q = PermutedKronecker(K, np.arange(4), np.array([0, 2, 1, 3, 4, 5]), [0.0], 0)
    assert Q.permuted == (False, True)
    assert Q.n_perm_indices == 6


def test_a_factor_with_two_rows_is_permuted():
    """m1 = m2 = 2 is the smallest side with a useful permutation (a planted row swap
    across block-rows is recovered)."""
    s = KroneckerShape((2, 3), (2, 2))
    rng = np.random.default_rng(1)
    W = np.kron(rng.standard_normal((2, 3)), rng.standard_normal((2, 2)))[[0, 3, 2, 1]]
    P = permuted_kron(W, s, 1, permute="rows", n_restarts=4, rng=0)
    assert P.permuted == (True, False)
    assert P.errors[0] > 0.05
    assert P.errors[-1] < 1e-8


def test_polish_runs_assign_and_a_slots_sweep():
    """With tol = inf the first slots sweep "stalls", so exactly one polish iteration runs:
    one assign LSAP and one slot LSAP per slot, on each permuted side."""
    s = KroneckerShape((3, 4), (2, 3))
    W = _W(s)
    P = permuted_kron(W, s, 1, rule="slots+assign", n_iter=5, tol=float("inf"))
    sweep = s.m2 + s.n2  # one LSAP per slot, rows then columns
    assert P.timings["n_lsap"] == sweep + (2 + sweep)
    assert P.n_iter == 2


def test_warm_start_reaches_the_solver(monkeypatch):
    inits = []
    real = permuted_module.lsap

    def spy(cost, *, solver="auto", init=None, **kwargs):
        inits.append(init)
        return real(cost, solver=solver, init=init, **kwargs)

    monkeypatch.setattr(permuted_module, "lsap", spy)
    s = KroneckerShape((4, 3), (3, 2))
    permuted_kron(_W(s), s, 1, rule="slots", n_iter=3, tol=0.0, solver="jv", warm_start=True)
    assert any(i is not None for i in inits), "warm_start=True never passed a warm start"
    inits.clear()
    permuted_kron(_W(s), s, 1, rule="slots", n_iter=3, tol=0.0, solver="jv", warm_start=False)
    assert all(i is None for i in inits)


def test_total_time_is_the_call_time():
    s = KroneckerShape((3, 2), (2, 2))
    t0 = time.perf_counter()
    P = permuted_kron(_W(s), s, 1, n_iter=2)
    wall = time.perf_counter() - t0
    assert 0.0 <= P.timings["total"] <= wall


def test_every_iteration_is_logged_at_debug_level(caplog):
    s = KroneckerShape((3, 2), (2, 2))
    with caplog.at_level(logging.DEBUG, logger="tqla.permuted"):
        P = permuted_kron(_W(s), s, 1, n_iter=2, tol=0.0)
    for it in range(P.n_iter):
        assert f"restart 0 iteration {it} " in caplog.text


@pytest.mark.parametrize("rule", ["slots", "assign"])
def test_errors_match_the_returned_approximation(rule):
    s = KroneckerShape((4, 3), (3, 2))
    W = _W(s, 3)
    P = permuted_kron(W, s, 2, rule=rule, n_iter=3)
    err = float(np.linalg.norm(W - P.to_dense()) / np.linalg.norm(W))
    assert err == pytest.approx(P.errors[-1], rel=1e-9)


def test_a_side_left_unpermuted_is_named_in_the_log_and_callback_type_errors(caplog):
    """Third mutation pass (fresh sample, seed 7): the info message names the side, and the
    callback's TypeError names the type it got."""
    W = np.random.default_rng(0).standard_normal((6, 8))
    with caplog.at_level(logging.INFO, logger="tqla.permuted"):
        permuted_kron(W, ((1, 4), (6, 2)), 1, permute="both", n_iter=1)
    assert "rows not permuted (a factor dimension is 1)" in caplog.text
    assert "cols not permuted" not in caplog.text
    with pytest.raises(TypeError, match="callback must be callable, got int"):
        permuted_kron(W, ((3, 4), (2, 2)), 1, callback=5)


def test_host_bytes_sum_over_the_solves_and_the_refits_use_the_kernel_asked_for(monkeypatch):
    """Third mutation pass (fresh sample, seed 7): ``timings["host_bytes"]`` is the sum of
    the LSAP results' ``host_bytes`` (torch input: every solve copies its cost to the host),
    and ``kernel=`` reaches every refit's kron_svd."""
    torch = pytest.importorskip("torch")
    W = np.random.default_rng(0).standard_normal((8, 8))
    seen = []
    real_lsap = permuted_module.lsap

    def spy_lsap(*args, **kwargs):
        res = real_lsap(*args, **kwargs)
        seen.append(res.host_bytes)
        return res

    monkeypatch.setattr(permuted_module, "lsap", spy_lsap)
    P = permuted_kron(torch.tensor(W), ((4, 4), (2, 2)), 1, n_iter=3, tol=0.0, rng=0)
    assert len(seen) >= 2 and all(b > 0 for b in seen)
    assert P.timings["host_bytes"] == sum(seen) and P.timings["n_lsap"] == len(seen)
    kernels = []
    real_svd = permuted_module.kron_svd

    def spy_svd(*args, **kwargs):
        kernels.append(kwargs.get("kernel"))
        return real_svd(*args, **kwargs)

    monkeypatch.setattr(permuted_module, "kron_svd", spy_svd)
    permuted_kron(W, ((4, 4), (2, 2)), 1, n_iter=2, kernel="numpy", rng=0)
    assert kernels and set(kernels) == {"numpy"}
