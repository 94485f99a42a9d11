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
    # the warm start is the previous solution's dual prices (without them it does nothing)
    assert all(i.prices is not None for i in inits if i is not None)
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


# Found by a fresh sample (seed 8) of tqla/permuted.py's mutants
@pytest.mark.parametrize(
    ("bad", "exc", "msg"),
    [
        ([[1.0, 2.0]], TypeError, r"W must be an array \(NumPy, CuPy, torch, \.\.\.\), got list; "
                                  r"wrap it with numpy\.asarray first"),
        (np.ones(6), ValueError, r"W must be 2-D, got 1-D array of shape \(6,\)"),
        (np.ones((4, 6), dtype=np.int64), TypeError,
         r"W must have a real floating dtype \(float32 or float64\), got int64; "
         r"convert it with \.astype\(float64\) / \.to\(torch\.float64\)"),
    ],
    ids=["not-an-array", "1-D", "integer"],
)  # fmt: skip
def test_a_bad_matrix_is_named_W_in_the_whole_message(bad, exc, msg):
    with pytest.raises(exc, match=f"^{msg}$"):
        permuted_kron(bad, KroneckerShape((2, 3), (2, 2)), 1)


def test_a_scalar_operand_of_matmul_is_rejected_by_its_own_message():
    s = KroneckerShape((2, 3), (2, 2))
    P = permuted_kron(_W(s), s, 1, n_iter=1)
    with pytest.raises(ValueError, match=r"^approx @ X needs X with 6 rows, got a scalar$"):
        P @ np.array(2.0)


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_relative_errors_do_not_depend_on_the_scale_of_W(scale):
    """‖W − K‖/‖W‖ is scale-free: W scaled by 0.1 (‖W‖ < 1) or 10 gives the same errors and
    the same permutations (an error divided by 1 instead of ‖W‖ would scale with W)."""
    s = KroneckerShape((3, 2), (2, 2))
    W = _W(s, 4)
    W = W / (2.0 * np.linalg.norm(W))  # ‖W‖ = 1/2, then 1/20 and 5 after scaling
    P = permuted_kron(W, s, 1, n_iter=3, tol=0.0)
    Q = permuted_kron(scale * W, s, 1, n_iter=3, tol=0.0)
    eps = 64 * np.finfo(np.float64).eps
    np.testing.assert_allclose(Q.errors, P.errors, rtol=eps, atol=eps)
    np.testing.assert_array_equal(Q.row_perm, P.row_perm)
    np.testing.assert_array_equal(Q.col_perm, P.col_perm)
    err = float(np.linalg.norm(scale * W - Q.to_dense()) / np.linalg.norm(scale * W))
    assert Q.errors[-1] == pytest.approx(err, rel=1e-9, abs=eps)


def test_a_rejected_step_is_logged_with_its_errors(caplog, monkeypatch):
    """Every refit after the first made worse (error + 1): each step that moves something
    is rejected, and its debug line gives the rule, the side, the new and the kept error."""
    real_fit = permuted_module._Run.fit
    calls: list[int] = []

    def worse_fit(self, U):
        K, err = real_fit(self, U)
        calls.append(1)
        return K, (err if len(calls) == 1 else err + 1.0)

    monkeypatch.setattr(permuted_module._Run, "fit", worse_fit)
    s = KroneckerShape((4, 3), (3, 2))
    with caplog.at_level(logging.DEBUG, logger="tqla.permuted"):
        P = permuted_kron(_W(s, 5), s, 1, n_iter=2, tol=0.0)
    rejected = [r for r in caplog.records if "rejected" in r.msg]
    assert rejected and len(calls) == len(rejected) + 1
    kept = P.errors[0]
    for r in rejected:
        rule, side, new, old = r.args  # exactly these four values
        assert rule in ("slots", "assign") and side in ("rows", "cols")
        assert old == kept and new > old + 0.5
        assert r.getMessage() == (f"step {rule}/{side} rejected: error {new:.6g} > {kept:.6g}")


# Found by a fresh sample (seed 9) of tqla/permuted.py's mutants
@pytest.mark.parametrize(
    ("shape", "first"),
    [(((4, 3), (3, 2)), "rows"), (((3, 4), (2, 3)), "cols"), (((3, 2), (2, 3)), "rows")],
    ids=["tall", "wide", "square"],
)
def test_the_larger_side_is_updated_first(monkeypatch, shape, first):
    """Both sides permuted: cols first only when N > M (ties: rows first)."""
    sides: list[str] = []
    real = permuted_module._Run.step

    def spy(self, rule, side):
        sides.append(side)
        return real(self, rule, side)

    monkeypatch.setattr(permuted_module._Run, "step", spy)
    s = KroneckerShape(*shape)
    permuted_kron(_W(s), s, 1, rule="assign", n_iter=1, tol=0.0)
    assert sides == [first, "cols" if first == "rows" else "rows"]


def test_an_unmoved_side_is_not_refit_and_the_svd_time_is_part_of_the_total(monkeypatch):
    """An exact Kronecker product needs no permutation: the assignments return the identity,
    so the only fit is the first one; the time of that fit is within the total."""
    fits: list[int] = []
    real = permuted_module._Run.fit

    def spy(self, U):
        fits.append(1)
        return real(self, U)

    monkeypatch.setattr(permuted_module._Run, "fit", spy)
    rng = np.random.default_rng(6)
    s = KroneckerShape((3, 2), (2, 3))
    W = np.kron(rng.standard_normal((3, 2)), rng.standard_normal((2, 3)))
    P = permuted_kron(W, s, 1, rule="assign", n_iter=2, tol=0.0)
    assert len(fits) == 1
    np.testing.assert_array_equal(P.row_perm, np.arange(6))
    np.testing.assert_array_equal(P.col_perm, np.arange(6))
    assert 0.0 <= P.timings["svd"] <= P.timings["total"]
