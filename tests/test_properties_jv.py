"""tqla's Numba Jonker–Volgenant solver stated whole (issue 15, fifth pass).

Each phase against its definition, not only the final optimum (a wrong price update or
initialisation can still end at an optimal assignment, only slower or with wrong duals):

* column reduction and reduction transfer (cold start) and the warm-start row reduction,
  against plain-Python references of their definitions: prices and assignments equal;
* augmenting row reduction: its invariants (consistent x/y, assigned rows at their
  cheapest reduced column, prices never raised, the free rows it returns are exactly the
  unassigned ones) and its step limit;
* the whole solver: optimal on random, tied, low-rank and forbidden-pair matrices, with
  prices that are optimal duals, ``n_augment`` equal to the rows the initial phases leave,
  the arguments the entry point hands on, and its inputs left unwritten.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

pytest.importorskip("numba")
na = pytest.importorskip("tqla._kernels._numba_assignment")

INF = np.inf


def _whole(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _matrix(n: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, n))
    if kind == "tied":
        return rng.integers(0, 3, size=(n, n)).astype(np.float64)
    if kind == "lowrank":
        return -(rng.standard_normal((n, 2)) @ rng.standard_normal((2, n)))
    if kind == "forbidden":  # +inf off a random permutation (always feasible)
        C = rng.standard_normal((n, n))
        keep = rng.permutation(n)
        mask = rng.random((n, n)) < 0.4
        mask[np.arange(n), keep] = False
        C[mask] = INF
        return C
    return np.full((n, n), 2.0)


kinds = st.sampled_from(["random", "tied", "lowrank", "forbidden", "constant"])


# --------------------------------------------------------------------------------------
# References of the initial phases
# --------------------------------------------------------------------------------------
def _ref_column_reduction(cost: np.ndarray):
    n = cost.shape[0]
    v = cost.min(axis=0).astype(np.float64)
    argrow = np.argmin(cost, axis=0)  # the first minimising row
    v[v == INF] = 0.0
    x = np.full(n, -1)
    y = np.full(n, -1)
    unique = np.ones(n, dtype=bool)
    for j in range(n - 1, -1, -1):  # a row takes the last column it minimises
        i = argrow[j]
        if x[i] < 0:
            x[i], y[j] = j, i
        else:
            unique[i] = False
    for i in range(n):  # reduction transfer, row by row with the current prices
        if x[i] >= 0 and unique[i]:
            j = x[i]
            others = [cost[i, k] - v[k] for k in range(n) if k != j]
            mn = min(others) if others else INF
            if mn < INF:
                v[j] -= mn
    return v, x, y


def _ref_row_reduction(cost: np.ndarray, v: np.ndarray, prev: np.ndarray):
    n = cost.shape[0]
    x = np.full(n, -1)
    y = np.full(n, -1)
    arg = np.full(n, -1)
    for i in range(n):
        red = cost[i] - v
        b = red.min()
        a = int(np.argmin(red)) if b < INF else -1
        arg[i] = a
        j0 = prev[i]
        if a < 0 or j0 < 0 or j0 >= n or y[j0] != -1:
            continue
        r0 = cost[i, j0] - v[j0]
        if r0 < INF and r0 <= b + 1e-12 * (abs(cost[i, j0]) + abs(v[j0])):
            x[i], y[j0] = j0, i
    for i in range(n):
        if x[i] < 0 and arg[i] >= 0 and y[arg[i]] == -1:
            x[i], y[arg[i]] = arg[i], i
    return x, y


@given(n=st.integers(1, 12), kind=kinds, seed=st.integers(0, 2**32 - 1))
@example(n=5, kind="tied", seed=0)
@example(n=1, kind="random", seed=0)
def test_column_reduction_is_the_jv_cold_start(n, kind, seed):
    cost = _matrix(n, kind, seed)
    if kind == "forbidden":
        cost[:, 0] = INF  # a column of +inf only: its price is 0 (infeasible, caught later)
    v = np.full(n, 7.0)
    x = np.full(n, 5, dtype=np.int64)
    y = np.full(n, 5, dtype=np.int64)
    na._column_reduction(cost, v, x, y)
    v_ref, x_ref, y_ref = _ref_column_reduction(cost)
    np.testing.assert_array_equal(v, v_ref)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


@given(n=st.integers(1, 12), kind=kinds, seed=st.integers(0, 2**32 - 1), noise=st.booleans())
@example(n=6, kind="tied", seed=1, noise=False)
def test_row_reduction_is_the_jv_warm_start(n, kind, seed, noise):
    rng = np.random.default_rng(seed)
    cost = _matrix(n, kind, seed)
    finite = cost[np.isfinite(cost)]
    if noise:
        cost = cost + 1e-13 * np.abs(finite).max() * rng.standard_normal((n, n))  # near-ties
    v = rng.standard_normal(n) if kind != "constant" else np.zeros(n)
    prev = rng.permutation(n).astype(np.int64)
    prev[rng.random(n) < 0.2] = -1  # rows without a previous column
    if n > 2:
        prev[0] = n + 3  # out of range: ignored
        prev[1] = prev[2]  # a repeated column: the second row cannot keep it
    x = np.full(n, 9, dtype=np.int64)
    y = np.full(n, 9, dtype=np.int64)
    v_in = v.copy()
    na._row_reduction(cost, v, x, y, prev)
    x_ref, y_ref = _ref_row_reduction(cost, v_in, prev)
    np.testing.assert_array_equal(v, v_in)  # prices kept
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_row_reduction_keep_tolerance_is_relative_1e_12():
    """Row 0's previous column is worse than its best by 0.9e-12 (kept) or 1.1e-12 (not)
    of |cost| + |v| = 1: the tolerance is relative and that size."""
    for gap, kept in ((0.9e-12, True), (1.1e-12, False), (0.0, True)):
        cost = np.array([[-0.5 + gap, 0.0], [0.0, 0.0]])
        v = np.array([-0.5, 0.0])  # reduced costs of row 0: gap (col 0), 0 (col 1)
        x = np.zeros(2, dtype=np.int64)
        y = np.zeros(2, dtype=np.int64)
        na._row_reduction(cost, v, x, y, np.array([0, 1], dtype=np.int64))
        assert bool(x[0] == 0) is kept, (gap, x)


# --------------------------------------------------------------------------------------
# Augmenting row reduction: invariants and the step limit
# --------------------------------------------------------------------------------------
@given(
    n=st.integers(1, 14), kind=kinds, seed=st.integers(0, 2**32 - 1),
    steps=st.sampled_from([0, 1, 3, 1000]),
)  # fmt: skip
@example(n=8, kind="tied", seed=0, steps=1000)
@example(n=8, kind="random", seed=3, steps=2)
def test_augmenting_row_reduction_keeps_the_jv_invariants(n, kind, seed, steps):
    cost = _matrix(n, kind, seed)
    v = np.zeros(n)
    x = np.full(n, -1, dtype=np.int64)
    y = np.full(n, -1, dtype=np.int64)
    na._column_reduction(cost, v, x, y)
    free = np.array([i for i in range(n) if x[i] < 0], dtype=np.int64)
    buf = np.full(n, -7, dtype=np.int64)
    buf[: len(free)] = free
    v0, x0 = v.copy(), x.copy()
    n_free = na._augmenting_row_reduction(cost, v, x, y, buf, len(free), steps)
    assert np.all(v <= v0)  # prices are only lowered
    assigned = np.flatnonzero(x >= 0)
    np.testing.assert_array_equal(y[x[assigned]], assigned)  # x and y agree
    assert np.count_nonzero(y >= 0) == len(assigned)
    assert sorted(buf[:n_free].tolist()) == sorted(np.flatnonzero(x < 0).tolist())
    red = cost - v[None, :]
    for i in assigned:  # an assigned row sits at a cheapest reduced column
        row = red[i]
        assert row[x[i]] <= row.min() + 1e-12 * (1 + np.abs(cost[np.isfinite(cost)]).max())
    if steps == 0:  # no step allowed: nothing changes, every free row is handed on
        assert n_free == len(free)
        np.testing.assert_array_equal(buf[:n_free], free)
        np.testing.assert_array_equal(v, v0)
        np.testing.assert_array_equal(x, x0)


def test_augmenting_row_reduction_makes_at_most_max_steps_reductions():
    """Three free rows all wanting column 0: one step assigns one row and hands the two
    others on untouched (in order)."""
    cost = np.array([[0.0, 5.0, 6.0], [0.0, 7.0, 8.0], [0.0, 9.0, 4.0]])
    v = np.zeros(3)
    x = np.full(3, -1, dtype=np.int64)
    y = np.full(3, -1, dtype=np.int64)
    free = np.array([0, 1, 2], dtype=np.int64)
    n_free = na._augmenting_row_reduction(cost, v, x, y, free, 3, 1)
    assert n_free == 2 and free[:2].tolist() == [1, 2]
    assert x.tolist() == [0, -1, -1] and y.tolist() == [0, -1, -1]
    assert v.tolist() == [-5.0, 0.0, 0.0]  # lowered by the gap to row 0's second best


# --------------------------------------------------------------------------------------
# The solver as a whole
# --------------------------------------------------------------------------------------
def _duals_ok(C: np.ndarray, col: np.ndarray, v: np.ndarray) -> None:
    red = C - v[None, :]
    n = C.shape[0]
    got = red[np.arange(n), col]
    fin = np.abs(C[np.isfinite(C)])
    scale = max(1.0, float(fin.max()) if fin.size else 1.0, float(np.abs(v).max()))
    assert np.all(np.isfinite(got))
    assert np.all(got <= red.min(axis=1) + 1e-11 * n * scale)


@given(n=st.integers(1, 25), kind=kinds, seed=st.integers(0, 2**32 - 1))
@example(n=20, kind="tied", seed=0)
@example(n=20, kind="forbidden", seed=1)
def test_solver_is_optimal_with_optimal_duals_and_counts_its_augmentations(n, kind, seed):
    cost = _matrix(n, kind, seed)
    col, v, n_aug = na.lsap_jv(cost)
    assert col.dtype == np.int64 and v.dtype == np.float64 and type(n_aug) is int
    np.testing.assert_array_equal(np.sort(col), np.arange(n))
    r, c = linear_sum_assignment(cost)
    best = math.fsum(cost[r, c].tolist())
    assert abs(math.fsum(cost[np.arange(n), col].tolist()) - best) <= 1e-12 * n * (
        1 + np.abs(cost[np.isfinite(cost)]).max()
    )
    _duals_ok(cost, col, v)
    # with no augmenting row reduction, n_augment is the rows the cold start leaves free
    _, v0, n0 = na.lsap_jv(cost, n_arr=0)
    _, x_ref, _ = _ref_column_reduction(cost)
    assert n0 == int(np.count_nonzero(x_ref < 0))
    assert 0 <= n_aug <= n0
    # warm from its own result: nothing to augment, the same assignment and prices
    col2, v2, n2 = na.lsap_jv(cost, v, col)
    assert n2 == 0
    np.testing.assert_array_equal(col2, col)
    np.testing.assert_array_equal(v2, v)


@given(n=st.integers(2, 20), kind=kinds, seed=st.integers(0, 2**32 - 1))
def test_warm_start_without_arr_augments_the_rows_row_reduction_leaves(n, kind, seed):
    rng = np.random.default_rng(seed)
    cost = _matrix(n, kind, seed)
    prices = rng.standard_normal(n)
    prev = rng.permutation(n).astype(np.int64)
    prev_in, prices_in = prev.copy(), prices.copy()
    col, v, n_aug = na.lsap_jv(cost, prices, prev, n_arr=0)
    x_ref, _ = _ref_row_reduction(cost, prices, prev)
    assert n_aug == int(np.count_nonzero(x_ref < 0))
    np.testing.assert_array_equal(prev, prev_in)  # the inputs are not written
    np.testing.assert_array_equal(prices, prices_in)
    _duals_ok(cost, col, v)
    r, c = linear_sum_assignment(cost)
    assert math.isclose(
        math.fsum(cost[np.arange(n), col].tolist()), math.fsum(cost[r, c].tolist()),
        rel_tol=1e-12, abs_tol=1e-12 * n * (1 + np.abs(cost[np.isfinite(cost)]).max()),
    )  # fmt: skip
    # prices alone (no previous assignment): every row starts free in the row reduction
    _, _, n_p = na.lsap_jv(cost, prices, None, n_arr=0)
    x_ref, _ = _ref_row_reduction(cost, prices, np.full(n, -1, dtype=np.int64))
    assert n_p == int(np.count_nonzero(x_ref < 0))


def test_entry_point_hands_on_its_arguments(monkeypatch):
    seen = []
    real = na._solve

    def spy(cost, v, col4row, warm, n_arr, steps):
        seen.append((cost, v.copy(), col4row.copy(), warm, n_arr, steps))
        return real(cost, v, col4row, warm, n_arr, steps)

    monkeypatch.setattr(na, "_solve", spy)
    C = _matrix(5, "random", 0)
    na.lsap_jv(C)
    cost, v, col, warm, n_arr, steps = seen[-1]
    assert cost.dtype == np.float64 and cost.flags.c_contiguous and cost is C
    assert v.tolist() == [0.0] * 5 and col.tolist() == [-1] * 5
    assert (warm, n_arr, steps) == (False, 2, 20)  # defaults: 2 passes of 4·n steps
    na.lsap_jv(C, np.arange(5.0), n_arr=3, arr_steps=0.5)
    cost, v, col, warm, n_arr, steps = seen[-1]
    assert v.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and col.tolist() == [-1] * 5
    assert (warm, n_arr, steps) == (True, 3, 2)
    na.lsap_jv(C, np.zeros(5), np.array([4, 3, 2, 1, 0]), arr_steps=0.01)
    cost, v, col, warm, n_arr, steps = seen[-1]
    assert col.tolist() == [4, 3, 2, 1, 0] and col.dtype == np.int64
    assert (warm, n_arr, steps) == (True, 2, 1)  # at least one step
    F32 = np.asfortranarray(C.astype(np.float32))
    na.lsap_jv(F32)
    assert seen[-1][0].dtype == np.float32 and seen[-1][0].flags.c_contiguous
    C32 = C.astype(np.float32)
    na.lsap_jv(C32)
    assert seen[-1][0] is C32  # read in place
    na.lsap_jv(np.arange(25).reshape(5, 5))
    assert seen[-1][0].dtype == np.float64


def test_infeasible_message_is_whole():
    C = np.array([[INF, INF], [1.0, 2.0]])
    msg = "cost matrix is infeasible: no assignment avoids every +inf entry"
    with pytest.raises(ValueError, match=_whole(msg)):
        na.lsap_jv(C)
    with pytest.raises(ValueError, match=_whole(msg)):
        na.lsap_jv(C, np.zeros(2), np.array([0, 1]))


@given(n=st.integers(2, 30), seed=st.integers(0, 2**32 - 1))
def test_float32_is_read_exactly(n, seed):
    C32 = _matrix(n, "random", seed).astype(np.float32)
    a = na.lsap_jv(C32)
    b = na.lsap_jv(C32.astype(np.float64))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


# --------------------------------------------------------------------------------------
# One shortest augmenting path
# --------------------------------------------------------------------------------------
def _path_state(n: int, n_free: int, tied: bool, rng: np.random.Generator):
    """A state a path search may start from: a partial matching (n − n_free rows) and
    duals with reduced costs cost − u − v >= 0, zero on the matched pairs and at each row's
    cheapest column, positive elsewhere (so the shortest paths have positive lengths)."""
    perm = rng.permutation(n)
    rows = rng.permutation(n)
    matched = rows[n_free:]
    x = np.full(n, -1, dtype=np.int64)
    y = np.full(n, -1, dtype=np.int64)
    x[matched] = perm[matched]
    y[perm[matched]] = matched
    u = rng.standard_normal(n)
    v = rng.standard_normal(n)
    R = rng.integers(1, 4, size=(n, n)).astype(float) if tied else rng.uniform(0.1, 2.0, (n, n))
    R[matched, perm[matched]] = 0.0
    for i in rows[:n_free]:
        R[i, rng.integers(n)] = 0.0  # a free row's cheapest column (maybe a matched one)
    cost = u[:, None] + v[None, :] + R
    u = np.array([(cost[i] - v).min() if x[i] < 0 else cost[i, x[i]] - v[x[i]]
                  for i in range(n)])  # fmt: skip
    return cost, u, v, x, y, int(rows[0])


def _distances(red: np.ndarray, y: np.ndarray, cur: int) -> np.ndarray:
    """Shortest alternating-path lengths from row ``cur`` to every column (Bellman–Ford
    to a fixed point: an algorithm other than the solver's Dijkstra)."""
    n = red.shape[0]
    d_col = np.full(n, INF)
    d_row = np.full(n, INF)
    d_row[cur] = 0.0
    for _ in range(2 * n + 2):
        new = np.min(d_row[:, None] + red, axis=0)
        d_col = np.minimum(d_col, new)
        matched = y >= 0
        d_row[y[matched]] = np.minimum(d_row[y[matched]], d_col[matched])
    return d_col


@given(n=st.integers(2, 12), n_free=st.integers(1, 3), tied=st.booleans(),
       seed=st.integers(0, 2**32 - 1))  # fmt: skip
@example(n=8, n_free=1, tied=True, seed=0)
@example(n=8, n_free=2, tied=False, seed=1)
def test_one_path_search_finds_a_shortest_augmenting_path(n, n_free, tied, seed):
    rng = np.random.default_rng(seed)
    cost, u, v, x, y, cur = _path_state(n, min(n_free, n), tied, rng)
    red = cost - u[:, None] - v[None, :]
    assert red.min() >= -1e-12 * (1 + np.abs(cost).max())  # reduced costs start >= 0
    path = np.full(n, -1, dtype=np.int64)
    spc = np.empty(n)
    SR = np.zeros(n, dtype=np.bool_)
    SC = np.zeros(n, dtype=np.bool_)
    visited = np.full(n, -5, dtype=np.int64)
    sink, min_val, n_rows = na._augment(cost, u, v, path, y, spc, cur, SR, SC, visited)
    d = _distances(red, y, cur)
    tol = 1e-12 * n * (1 + np.abs(cost).max())
    assert sink >= 0 and y[sink] == -1  # a free column
    assert abs(min_val - d[y < 0].min()) <= tol  # the shortest distance to a free column
    # the path it recorded: rows and columns alternate back to cur, of length min_val
    length, j, steps = 0.0, sink, 0
    while True:
        i = path[j]
        length += red[i, j]
        if i == cur:
            break
        j = x[i]
        length -= red[i, j]  # the matched edge (reduced cost 0)
        steps += 1
        assert steps <= n
    assert abs(length - min_val) <= tol
    assert SC[sink] and np.all(spc[SC] <= min_val + tol)  # closed columns: no farther
    rows = visited[:n_rows].tolist()
    assert rows[0] == cur and len(set(rows)) == n_rows
    assert sorted(rows) == sorted(np.flatnonzero(SR).tolist())


@pytest.mark.parametrize("free_col", range(4))
def test_path_search_ends_at_a_free_column_among_equally_close_ones(free_col):
    """``_augment``'s documented tie rule: among columns at the same reduced distance a free
    one ends the path at once (one row visited), wherever it lies in the scan order."""
    n = 4
    row4col = np.full(n, -1, dtype=np.int64)
    for i, j in enumerate(j for j in range(n) if j != free_col):
        row4col[j] = i  # rows 0..n-2 hold every column but free_col; row n-1 is free
    buffers = (np.full(n, -1, dtype=np.int64), np.empty(n), n - 1)
    flags = (np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_), np.empty(n, np.int64))
    sink, min_val, n_rows = na._augment(
        np.zeros((n, n)), np.zeros(n), np.zeros(n), buffers[0], row4col, buffers[1],
        buffers[2], *flags,
    )  # fmt: skip
    assert (sink, min_val, n_rows) == (free_col, 0.0, 1)
