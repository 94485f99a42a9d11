"""Tests of tqla.assignment: LSAP solvers against SciPy, cost builders by brute force."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import tqla.assignment as asg
from tqla._kernels import available, get_kernel
from tqla.assignment import (
    assign_cost,
    available_solvers,
    check_cost_memory,
    lsap,
    slots_basis,
    slots_cost,
)
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd, rearrange
from tqla.testing import rounding_tolerance

SOLVERS = available_solvers()


def _opt(C: np.ndarray) -> float:
    r, c = linear_sum_assignment(C)
    return float(C[r, c].sum())


def _check_solution(C: np.ndarray, res, solver: str) -> None:
    row_ind, col_ind = res
    n = C.shape[0]
    assert row_ind.dtype == np.int64 and col_ind.dtype == np.int64
    np.testing.assert_array_equal(row_ind, np.arange(n))
    np.testing.assert_array_equal(np.sort(col_ind), np.arange(n))
    total = float(C[row_ind, col_ind].sum())
    ref = _opt(C)
    assert total == pytest.approx(ref, rel=1e-12, abs=1e-9), solver
    assert res.cost == pytest.approx(total, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------------------
# LSAP solvers
# --------------------------------------------------------------------------------------
def _costs(n: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, n))
    if kind == "integer":  # many ties
        return rng.integers(0, 4, size=(n, n)).astype(np.float64)
    if kind == "lowrank":  # the GEMM costs of the cost builders
        return -(rng.standard_normal((n, 3)) @ rng.standard_normal((3, n)))
    if kind == "geometric":
        p, q = rng.random((n, 2)), rng.random((n, 2))
        return ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)
    if kind == "constant":
        return np.full((n, n), 2.5)
    raise ValueError(kind)


@pytest.mark.parametrize("solver", SOLVERS)
@given(
    n=st.integers(1, 24),
    kind=st.sampled_from(["uniform", "integer", "lowrank", "geometric", "constant"]),
    seed=st.integers(0, 2**31),
)
def test_lsap_matches_scipy(solver, n, kind, seed):
    C = _costs(n, kind, seed)
    _check_solution(C, lsap(C, solver=solver), solver)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["uniform", "integer", "lowrank", "geometric"])
def test_lsap_matches_scipy_larger(solver, kind):
    C = _costs(150, kind, 7)
    _check_solution(C, lsap(C, solver=solver), solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_lsap_integer_dtype_and_lists(solver):
    C = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]])
    res = lsap(C, solver=solver)
    assert res.cost == 5.0
    assert lsap(C.tolist(), solver=solver).cost == 5.0


def test_lsap_result_unpacks_like_scipy():
    C = np.array([[4.0, 1.0], [2.0, 3.0]])
    res = lsap(C, solver="scipy")
    assert isinstance(res, tuple) and len(res) == 2
    row_ind, col_ind = res
    assert res.row_ind is row_ind and res.col_ind is col_ind
    assert col_ind.tolist() == [1, 0] and res.solver == "scipy" and res.cost == 3.0
    assert "LSAPResult" in repr(res)


def test_lsap_empty_and_single():
    r, c = lsap(np.zeros((0, 0)))
    assert r.shape == (0,) and c.shape == (0,)
    assert lsap(np.array([[3.0]])).cost == 3.0


@pytest.mark.parametrize("solver", ["auto", "scipy", "jv"])
def test_lsap_forbidden_pairs(solver):
    if solver == "jv" and "jv" not in SOLVERS:
        pytest.skip("numba missing")
    C = np.array([[np.inf, 1.0, 2.0], [1.0, np.inf, 4.0], [3.0, 1.0, np.inf]])
    _, col = lsap(C, solver=solver)
    assert np.isfinite(C[np.arange(3), col]).all()
    assert lsap(C, solver=solver).cost == pytest.approx(_opt(C))
    infeasible = np.array([[np.inf, np.inf], [1.0, 2.0]])
    with pytest.raises(ValueError, match="infeasible"):
        lsap(infeasible, solver=solver)


@pytest.mark.parametrize("solver", [s for s in ("lap", "lapx") if s in SOLVERS])
def test_lsap_forbidden_pairs_refused_by_lap(solver):
    C = np.array([[np.inf, 1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="does not support"):
        lsap(C, solver=solver)


@pytest.mark.parametrize(
    ("cost", "match"),
    [
        (np.zeros(4), "cost must be a 2-D array"),
        (np.zeros((2, 2, 2)), "cost must be a 2-D array"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "cost must not contain NaN"),
        (np.array([[0.0, -np.inf], [1.0, 2.0]]), "cost must not contain -inf"),
    ],
)
def test_lsap_refuses_bad_costs(cost, match):
    with pytest.raises(ValueError, match=match):
        lsap(cost)


def test_lsap_refuses_bad_arguments():
    with pytest.raises(ValueError, match="solver must be one of"):
        lsap(np.eye(2), solver="hungarian")
    with pytest.raises(TypeError, match="cost must hold real numbers"):
        lsap(np.eye(2, dtype=bool))
    with pytest.raises(TypeError, match="cost must be an array"):
        lsap("abc")
    with pytest.raises(ValueError, match="init"):
        lsap(np.eye(3), solver="jv", init=np.zeros(4))
    prev = lsap(np.eye(2), solver="scipy")
    with pytest.raises(ValueError, match="init is a solution of a 2×2 problem"):
        lsap(np.eye(3), solver="jv", init=prev)


def test_missing_optional_solver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lap", None)  # makes `import lap` fail
    with pytest.raises(ImportError, match=r"pip install 'tqla\[lap\]'"):
        lsap(np.eye(3), solver="lap")
    with pytest.raises(ImportError, match=r"pip install 'tqla\[lap\]'"):
        lsap(np.eye(3), solver="lapx")
    assert "lap" not in available_solvers() and "lapx" not in available_solvers()


@pytest.mark.skipif("jv" not in SOLVERS, reason="numba missing")
@given(n=st.integers(1, 30), seed=st.integers(0, 2**31), scale=st.sampled_from([1e-3, 0.1, 3.0]))
def test_jv_warm_start_is_optimal(n, seed, scale):
    rng = np.random.default_rng(seed)
    C1 = -(rng.standard_normal((n, 4)) @ rng.standard_normal((4, n)))
    C2 = C1 + scale * rng.standard_normal((n, n))
    first = lsap(C1, solver="jv")
    assert first.prices is not None and first.prices.shape == (n,)
    warm = lsap(C2, solver="jv", init=first)
    _check_solution(C2, warm, "jv warm")
    # prices alone, arbitrary prices, and a previous scipy result (no prices) all work
    _check_solution(C2, lsap(C2, solver="jv", init=first.prices), "jv prices")
    _check_solution(C2, lsap(C2, solver="jv", init=rng.standard_normal(n) * 5), "jv random")
    _check_solution(C2, lsap(C2, solver="jv", init=lsap(C1, solver="scipy")), "jv cold")


@pytest.mark.skipif("jv" not in SOLVERS, reason="numba missing")
def test_jv_warm_start_of_the_same_problem_needs_no_augmentation():
    C = _costs(200, "lowrank", 3)
    first = lsap(C, solver="jv")
    again = lsap(C, solver="jv", init=first)
    assert again.n_augment == 0
    np.testing.assert_array_equal(again.col_ind, first.col_ind)


def test_lsap_accepts_other_libraries_and_reports_host_copies(backend):
    """Statistics are returned on the result, not accumulated in a global (issue 8)."""
    C = _costs(12, "uniform", 1)
    res = lsap(backend.asarray(C), solver="scipy")
    _check_solution(C, res, "scipy")
    assert res.host_bytes == (0 if backend.name == "numpy" else C.nbytes)
    assert res.device_to_host == (backend.name != "numpy")
    assert lsap(C.astype(np.float32), solver="scipy").host_bytes == C.nbytes
    assert not hasattr(asg, "transfer_stats") and not hasattr(asg, "_STATS")


@pytest.mark.skipif("jv" not in SOLVERS, reason="numba missing")
@pytest.mark.parametrize("kind", ["uniform", "integer", "lowrank", "geometric"])
@pytest.mark.parametrize("maximize", [False, True])
def test_jv_reads_float32_in_place_with_the_solution_of_its_float64_copy(kind, maximize):
    """A C-ordered float32 cost is solved without its float64 copy (host_bytes 0) and gets
    exactly the float64 copy's solution: assignment, prices, augmentations, total."""
    C32 = _costs(60, kind, 7).astype(np.float32)
    C64 = C32.astype(np.float64)
    a = lsap(C32, solver="jv", maximize=maximize)
    b = lsap(C64, solver="jv", maximize=maximize)
    assert a.host_bytes == 0 and b.host_bytes == 0
    np.testing.assert_array_equal(a.col_ind, b.col_ind)
    np.testing.assert_array_equal(a.prices, b.prices)
    assert (a.cost, a.n_augment) == (b.cost, b.n_augment)
    D32 = C32 + np.float32(0.5) * (C32 > C32.mean())  # a close problem: warm starts
    warm = lsap(D32, solver="jv", init=a, maximize=maximize)
    ref = lsap(D32.astype(np.float64), solver="jv", init=b, maximize=maximize)
    np.testing.assert_array_equal(warm.col_ind, ref.col_ind)
    np.testing.assert_array_equal(warm.prices, ref.prices)


@pytest.mark.parametrize("solver", [s for s in SOLVERS if s != "jv"])
def test_float32_costs_are_widened_for_the_other_solvers(solver):
    C = _costs(9, "uniform", 2)
    res = lsap(C.astype(np.float32), solver=solver)
    assert res.host_bytes == C.nbytes  # the float64 copy those solvers need
    _check_solution(C.astype(np.float32).astype(np.float64), res, solver)
    rect = lsap(C[:5].astype(np.float32), solver=solver)  # rectangular: padded in float64
    assert rect.host_bytes == C[:5].nbytes and len(rect.col_ind) == 5


def test_auto_picks_the_first_installed_solver_of_the_order():
    from tqla.lsap import AUTO_ORDER

    res = lsap(_costs(20, "uniform", 0))
    assert res.solver == next(s for s in AUTO_ORDER if s in SOLVERS)
    # the policy is an argument: a tuple of names is tried in its order
    assert lsap(_costs(5, "uniform", 0), solver=("scipy", "jv")).solver == "scipy"
    with pytest.raises(ValueError, match="solver must be one of"):
        lsap(_costs(5, "uniform", 0), solver=("scipy", "magic"))
    with pytest.raises(ValueError, match="solver must be one of"):
        lsap(_costs(5, "uniform", 0), solver=())
    assert not hasattr(asg, "AUTO_COLD") and not hasattr(asg, "MAX_COST_BYTES")


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------
def test_memory_refusal_message():
    # a vocabulary-sized cost matrix is refused before anything is allocated
    with pytest.raises(MemoryError) as info:
        check_cost_memory(50257, 4, what="assign cost (rows)", max_bytes=2 * 1024**3)
    msg = str(info.value)
    assert "50257×50257" in msg and "GiB" in msg and "max_cost_bytes" in msg
    assert check_cost_memory(100, 8, what="x", max_bytes=10**6) == 100 * 100 * 16


def test_default_memory_limit(monkeypatch):
    monkeypatch.delenv("TQLA_MAX_COST_BYTES", raising=False)
    assert 0 < asg.default_max_cost_bytes() <= 2 * 1024**3
    monkeypatch.setenv("TQLA_MAX_COST_BYTES", "1000")
    assert asg.default_max_cost_bytes() == 1000
    monkeypatch.setenv("TQLA_MAX_COST_BYTES", "4e9")
    assert asg.default_max_cost_bytes() == 4 * 10**9


@pytest.mark.parametrize("bad", ["lots", "nan", "NaN", "-1", "0", "inf", "1e400", "0x10"])
def test_environment_memory_limit_is_validated(monkeypatch, bad):
    """Issue 9, item 11: garbage, NaN or a negative TQLA_MAX_COST_BYTES is a clear error."""
    monkeypatch.setenv("TQLA_MAX_COST_BYTES", bad)
    with pytest.raises(ValueError, match="environment variable TQLA_MAX_COST_BYTES must be"):
        asg.default_max_cost_bytes()
    W = np.random.default_rng(0).standard_normal((8, 6))
    K = kron_svd(W, ((4, 3), (2, 2)), 1)
    with pytest.raises(ValueError, match="TQLA_MAX_COST_BYTES"):
        assign_cost(W, K)


@pytest.mark.parametrize(
    "bad, exc", [(-1, ValueError), (0, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                 (True, TypeError), ("1e9", TypeError)]
)  # fmt: skip
def test_max_bytes_is_validated(bad, exc):
    """Issue 9, item 11: max_bytes=-1 used to be accepted."""
    W = np.random.default_rng(0).standard_normal((8, 6))
    K = kron_svd(W, ((4, 3), (2, 2)), 1)
    with pytest.raises(exc, match="max_bytes must be None or a positive"):
        assign_cost(W, K, max_bytes=bad)
    with pytest.raises(exc, match="max_bytes must be None or a positive"):
        slots_cost(W, ((4, 3), (2, 2)), K, 0, max_bytes=bad)
    with pytest.raises(exc, match="max_bytes must be None or a positive"):
        check_cost_memory(4, 8, what="x", max_bytes=bad)
    assert assign_cost(W, K, max_bytes=1e6).shape == (8, 8)  # a whole float is fine


def test_cost_builders_refuse_over_the_limit():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((40, 12))
    K = kron_svd(W, ((20, 6), (2, 2)), 1)
    with pytest.raises(MemoryError, match="40×40 cost matrix would need"):
        assign_cost(W, K, max_bytes=1000)
    with pytest.raises(MemoryError, match="20×20 cost matrix would need"):
        slots_cost(W, ((20, 6), (2, 2)), K, 0, max_bytes=1000)


def _traced_peak(fn):
    """(result, peak bytes NumPy allocated while ``fn()`` ran) — tracemalloc sees NumPy."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("side", ["rows", "cols"])
def test_assign_cost_holds_one_cost_matrix_at_a_time(side):
    """The n×n product is negated in place: never two n×n matrices at once (the peak of an
    MLP fit of GPT-2 large, n = 5,120, was the cost, its negation and its float64 copy)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((400, 360)).astype(np.float32)
    K = kron_svd(W, ((200, 90), (2, 4)), 2)
    rp, cp = rng.permutation(400), rng.permutation(360)
    C, peak = _traced_peak(lambda: assign_cost(W, K, side=side, row_perm=rp, col_perm=cp))
    Kd = K.to_dense()
    ref = -(W @ Kd[:, cp].T) if side == "rows" else -(W.T @ Kd[rp])
    np.testing.assert_array_equal(C, ref)  # the same product, negated (exact)
    n_n = C.nbytes
    assert peak < n_n + 3 * W.nbytes + (1 << 16), (peak, n_n)  # cost + dense K, its copy


@pytest.mark.skipif("jv" not in SOLVERS, reason="numba missing")
def test_jv_makes_no_float64_copy_of_a_float32_cost():
    C = _costs(300, "lowrank", 4).astype(np.float32)
    lsap(C, solver="jv")  # compiled before measuring
    res, peak = _traced_peak(lambda: lsap(C, solver="jv"))
    assert res.host_bytes == 0
    assert peak < C.nbytes // 2, (peak, C.nbytes)  # O(n) work arrays only


# --------------------------------------------------------------------------------------
# Cost builders, by brute force
# --------------------------------------------------------------------------------------
def _problem(seed: int, s: KroneckerShape, r: int):
    rng = np.random.default_rng(seed)
    M, N = s.matrix_shape
    W = rng.standard_normal((M, N))
    return rng, W, kron_svd(W, s, r)


@pytest.mark.parametrize("side", ["rows", "cols"])
def test_assign_cost_equals_error_differences(backend, side):
    s = KroneckerShape((3, 4), (2, 2))
    rng, W, K = _problem(1, s, 2)
    M, N = s.matrix_shape
    rp, cp = rng.permutation(M), rng.permutation(N)
    C = backend.to_numpy(
        assign_cost(
            backend.asarray(W),
            KroneckerSum(backend.asarray(K.A), backend.asarray(K.B)),
            side=side,
            row_perm=backend.asarray(rp),
            col_perm=backend.asarray(cp),
        )
    )
    Kd = K.to_dense()

    def err2(rperm, cperm):
        return float(((W - Kd[rperm][:, cperm]) ** 2).sum())

    for _ in range(5):
        if side == "rows":
            sig0, sig = rp, rng.permutation(M)
            diff = C[np.arange(M), sig].sum() - C[np.arange(M), sig0].sum()
            assert 2 * diff == pytest.approx(err2(sig, cp) - err2(sig0, cp), abs=1e-9)
        else:
            tau0, tau = cp, rng.permutation(N)
            diff = C[np.arange(N), tau].sum() - C[np.arange(N), tau0].sum()
            assert 2 * diff == pytest.approx(err2(rp, tau) - err2(rp, tau0), abs=1e-9)


def _refit_error2(U: np.ndarray, s: KroneckerShape, V: np.ndarray) -> float:
    """Best error with vec(B_k) held in span(V), A re-fitted: ‖X − X V Vᵀ‖²."""
    X = rearrange(U, s)
    return float(((X - X @ V @ V.T) ** 2).sum())


@pytest.mark.parametrize("side", ["rows", "cols"])
@pytest.mark.parametrize("dims", [(3, 4, 2, 2, 1), (4, 3, 3, 2, 2), (2, 5, 2, 3, 3)])
def test_slots_cost_equals_refit_error(backend, side, dims):
    m1, n1, m2, n2, r = dims
    s = KroneckerShape((m1, n1), (m2, n2))
    rng, W, K = _problem(sum(dims), s, r)
    M, N = s.matrix_shape
    rp, cp = rng.permutation(M), rng.permutation(N)
    # brute force in K's frame of the oriented problem
    U = np.empty_like(W)
    U[np.ix_(rp, cp)] = W
    if side == "cols":
        U, so, V = U.T, s.T, slots_basis(K, "cols")
        own = cp
    else:
        so, V = s, slots_basis(K)
        own = rp
    n_slots = so.m2
    for slot in range(n_slots):
        C = backend.to_numpy(
            slots_cost(
                backend.asarray(W),
                s,
                K if backend.name == "numpy" else backend.asarray(V),
                slot,
                side=side,
                row_perm=backend.asarray(rp),
                col_perm=backend.asarray(cp),
            )
        )
        assert C.shape == (so.m1, so.m1)
        base = C.trace()
        assert base == pytest.approx(_refit_error2(U, so, V) - (W**2).sum(), abs=1e-9)
        for _ in range(3):
            pi = rng.permutation(so.m1)  # candidate c -> block-row pi[c]
            Unew = U.copy()
            Unew[pi * so.m2 + slot] = U[np.arange(so.m1) * so.m2 + slot]
            diff = C[np.arange(so.m1), pi].sum() - base
            assert diff == pytest.approx(
                _refit_error2(Unew, so, V) - _refit_error2(U, so, V), abs=1e-9
            )
    del own


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(
    m1=st.integers(1, 6),
    n1=st.integers(1, 5),
    n2=st.integers(1, 5),
    r=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_slots_cost_kernels_agree(dtype, m1, n1, n2, r, seed):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((m1, 3, n1, n2)).astype(dtype)[:, 1]  # a strided slot view
    Vs = rng.standard_normal((n2, r)).astype(dtype)
    Y = rng.standard_normal((m1, n1, r)).astype(dtype)
    ref_cost, ref_P = get_kernel("slots_cost", "numpy", C)(C, Vs, Y)
    assert ref_cost.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-10
    scale = 1.0 + np.abs(ref_cost).max()
    for impl in available("slots_cost"):
        cost, P = get_kernel("slots_cost", impl, C)(C, Vs, Y)
        np.testing.assert_allclose(np.asarray(cost), ref_cost, atol=tol * scale, rtol=tol)
        np.testing.assert_allclose(np.asarray(P), ref_P, atol=tol * scale, rtol=tol)


def test_slots_cost_kernel_on_backends(backend):
    rng = np.random.default_rng(5)
    C = rng.standard_normal((4, 3, 2))
    Vs = np.linalg.qr(rng.standard_normal((2, 2)))[0]
    Y = rng.standard_normal((4, 3, 2))
    ref, _ = get_kernel("slots_cost", "numpy", C)(C, Vs, Y)
    fn = get_kernel("slots_cost", "auto", backend.asarray(C))
    cost, _ = fn(backend.asarray(C), backend.asarray(Vs), backend.asarray(Y))
    np.testing.assert_allclose(backend.to_numpy(cost), ref, atol=1e-10)


def test_slots_kernel_names():
    assert {"numpy", "array_api"} <= set(available("slots_cost"))
    if "jv" in SOLVERS:
        assert "numba" in available("slots_cost")


def test_builders_validate_arguments():
    s = KroneckerShape((3, 4), (2, 2))
    _, W, K = _problem(0, s, 1)
    with pytest.raises(ValueError, match="side must be 'rows' or 'cols'"):
        assign_cost(W, K, side="both")
    with pytest.raises(ValueError, match="slot must be <= 1"):
        slots_cost(W, s, K, 2)
    with pytest.raises(ValueError, match="row_perm must be a permutation"):
        assign_cost(W, K, side="cols", row_perm=np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match=r"V must be an \(m2·n2, r\)"):
        slots_cost(W, s, np.eye(3), 0)
    with pytest.raises(ValueError, match="does not match"):
        assign_cost(W[:4], K)
    with pytest.raises(TypeError, match="KroneckerSum"):
        slots_basis(np.eye(2))


def test_without_numba_auto_falls_back_and_jv_names_the_extra(monkeypatch):
    import tqla._kernels as kernels

    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    for mod in ("tqla._kernels._numba", "tqla._kernels._numba_assignment"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(kernels, "_LOADED", {m for m in kernels._LOADED if "_numba" not in m})
    monkeypatch.setattr(kernels, "_MISSING", set())
    table = {
        name: {i: f for i, f in impls.items() if i != "numba"}
        for name, impls in kernels._TABLE.items()
    }
    monkeypatch.setattr(kernels, "_TABLE", table)
    C = _costs(10, "uniform", 0)
    with pytest.raises(ImportError, match=r"pip install 'tqla\[numba\]'"):
        lsap(C, solver="jv")
    assert "jv" not in available_solvers()
    res = lsap(C)
    assert res.solver == "scipy"
    _check_solution(C, res, "auto")
    assert available("slots_cost") == ["numpy", "array_api"]


# --------------------------------------------------------------------------------------
# Issue 8: permuted_kron runs the public cost builders; SlotsCost sweeps
# --------------------------------------------------------------------------------------
def test_permuted_kron_builds_its_costs_with_the_public_builders(monkeypatch):
    import inspect

    import tqla.permuted as pm

    calls = {"slots": 0, "assign": 0}
    real_cost, real_assign = asg.SlotsCost.cost, pm.assign_cost

    def cost(self, slot):
        calls["slots"] += 1
        return real_cost(self, slot)

    def assign(*a, **k):
        calls["assign"] += 1
        return real_assign(*a, **k)

    monkeypatch.setattr(asg.SlotsCost, "cost", cost)
    monkeypatch.setattr(pm, "assign_cost", assign)
    s = KroneckerShape((6, 4), (2, 2))
    W = np.random.default_rng(3).standard_normal(s.matrix_shape)
    P = pm.permuted_kron(W, s, 1, rule="slots+assign", n_iter=6, tol=1e-2)
    assert calls["slots"] > 0 and calls["slots"] + calls["assign"] == P.timings["n_lsap"]
    # and no private helper of tqla.assignment is reached from tqla.permuted
    src = inspect.getsource(pm)
    assert "_asg" not in src and "assignment import _" not in src


def test_slots_cost_sweep_state_matches_a_fresh_build():
    """After assign(slot), the held projections equal those of a fresh SlotsCost on the
    re-ordered matrix, and a second cost() of the same slot sees the moved rows."""
    s = KroneckerShape((5, 3), (3, 2))
    rng = np.random.default_rng(0)
    W = rng.standard_normal(s.matrix_shape)
    K = kron_svd(W, s, 2)
    V = slots_basis(K)
    sweep = asg.SlotsCost(W, s, V)
    perm = np.array([2, 0, 4, 1, 3])
    sweep.cost(1)
    sweep.assign(1, perm)
    assert sorted(sweep.order.tolist()) == list(range(15))
    fresh = asg.SlotsCost(W[sweep.order], s, V)
    for slot in (0, 1, 2):
        got, want = sweep.cost(slot), fresh.cost(slot)
        tol = rounding_tolerance(np.float64, s.n1 * s.n2, np.abs(want).max() + 1.0)
        assert np.all(np.abs(got - want) <= tol)
    with pytest.raises(ValueError, match="must follow cost"):
        asg.SlotsCost(W, s, V).assign(0, perm)
    with pytest.raises(ValueError, match="col_ind must be a permutation"):
        sweep.cost(0)
        sweep.assign(0, np.zeros(5, dtype=np.int64))


@given(
    m1=st.integers(2, 7),
    n1=st.integers(1, 4),
    n2=st.integers(1, 4),
    rank=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
    move=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_two_slot_sweep_reuses_slot_0s_cost_to_rounding(m1, n1, n2, rank, dtype, move, seed):
    """With m2 = 2, slot 1's cost after slot 0's assignment is a gather of slot 0's
    transposed cost (SlotsCost._pair_cost, no GEMM); it must equal a fresh build on the
    re-ordered matrix, and so must the held projections after slot 1's assignment.

    Planted bugs caught: the gather by ``col`` instead of ``src = argsort(col)``; no
    transpose; the cache kept across an ``assign(1)`` (third check); the returned matrix
    cached without a copy (zeroed by the caller)."""
    s = KroneckerShape((m1, n1), (2, n2))
    rank = min(rank, 2 * n2, m1 * n1)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(s.matrix_shape).astype(dtype)
    V = slots_basis(kron_svd(W, s, rank))
    sweep = asg.SlotsCost(W, s, V)
    sweep.cost(0)[...] = 0.0  # the caller owns the returned matrix
    perm = rng.permutation(m1) if move else np.arange(m1)
    sweep.assign(0, perm)

    def check(slot: int) -> None:
        got = sweep.cost(slot)
        want = asg.SlotsCost(W[sweep.order], s, V).cost(slot)
        scale = float(np.abs(want).max()) + 1.0
        tol = rounding_tolerance(dtype, 4 * n1 * n2, scale)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.all(np.abs(got - want) <= tol)

    check(1)
    sweep.assign(1, rng.permutation(m1))
    check(0)  # the held projections after slot 1 (its P came from the pair path)
    sweep.assign(0, rng.permutation(m1))
    sweep.cost(1)
    sweep.assign(1, rng.permutation(m1))
    check(1)  # slot 0's cached cost must not survive an assign(1)


def test_two_slot_sweep_on_backends(backend):
    """The pair path of a two-slot sweep on every library: same costs as NumPy's."""
    s = KroneckerShape((4, 3), (2, 2))
    rng = np.random.default_rng(3)
    W = rng.standard_normal(s.matrix_shape)
    V = slots_basis(kron_svd(W, s, 2))
    perm = np.array([2, 0, 3, 1])
    ref = asg.SlotsCost(W, s, V)
    ref.cost(0)
    ref.assign(0, perm)
    want = ref.cost(1)
    sweep = asg.SlotsCost(backend.asarray(W), s, backend.asarray(V))
    sweep.cost(0)
    sweep.assign(0, perm)
    got = backend.to_numpy(sweep.cost(1))
    assert np.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_slots_cost_names_a_bad_basis():
    W = np.random.default_rng(0).standard_normal((6, 8))
    with pytest.raises(TypeError, match="V must be a KroneckerSum or an array, got str"):
        slots_cost(W, ((3, 4), (2, 2)), "basis", 0)
    with pytest.raises(ValueError, match=r"V must be an \(m2·n2, r\) = \(4, r\) orthonormal"):
        slots_cost(W, ((3, 4), (2, 2)), np.ones((3, 1)), 0)
