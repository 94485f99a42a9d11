"""tqla.lsap stated whole (issue 15, fifth pass): every route, field and message.

* Optimality on random and tied matrices, square and rectangular, for every installed
  solver, with every field of the result (``row_ind``, ``col_ind``, ``cost``, ``solver``,
  ``prices``, ``n_augment``, ``host_bytes``, ``device_to_host``) stated exactly.
* The ``"jv"`` prices are optimal duals (complementary slackness on every row), cold and
  warm, so a wrong dual update cannot hide behind a still-optimal assignment.
* Every error and its message matched whole (``^...$``), every solver-choice route
  (explicit, ``"auto"``, tuples, forbidden pairs, missing packages) and the host copies.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import types

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from tqla.lsap import AUTO_ORDER, SOLVERS, LSAPResult, available_solvers, lsap

L = sys.modules["tqla.lsap"]  # (the package attribute tqla.lsap is the function)
INSTALLED = available_solvers()
JV = "jv" in INSTALLED


def _whole(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _opt(C: np.ndarray, maximize: bool = False) -> float:
    r, c = linear_sum_assignment(C, maximize=maximize)
    return math.fsum(C[r, c].tolist())


def _matrix(n: int, m: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, m))
    if kind == "tied":  # many optimal assignments
        return rng.integers(0, 3, size=(n, m)).astype(np.float64)
    if kind == "lowrank":
        return -(rng.standard_normal((n, 2)) @ rng.standard_normal((2, m)))
    return np.full((n, m), 1.5)  # constant


def _duals_ok(C: np.ndarray, col: np.ndarray, v: np.ndarray) -> None:
    """Complementary slackness: each row's column attains min_j C[i, j] − v[j]."""
    red = C - v[None, :]
    n = C.shape[0]
    got = red[np.arange(n), col]
    scale = max(1.0, float(np.abs(C).max()), float(np.abs(v).max()))
    assert np.all(got <= red.min(axis=1) + 1e-12 * n * scale), (got - red.min(axis=1)).max()


# --------------------------------------------------------------------------------------
# Optimality and the result's fields, per solver and shape
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", INSTALLED)
@given(
    n=st.integers(1, 9),
    m=st.integers(1, 9),
    kind=st.sampled_from(["random", "tied", "lowrank", "constant"]),
    maximize=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@example(n=5, m=5, kind="tied", maximize=False, seed=0)
@example(n=3, m=7, kind="random", maximize=True, seed=1)
@example(n=7, m=3, kind="random", maximize=False, seed=2)
def test_every_field_of_the_result(solver, n, m, kind, maximize, seed):
    C = _matrix(n, m, kind, seed)
    res = lsap(C, solver=solver, maximize=maximize)
    k = min(n, m)
    assert isinstance(res, LSAPResult) and isinstance(res, tuple) and len(res) == 2
    r, c = res
    assert res.row_ind is r and res.col_ind is c
    assert r.dtype == np.int64 and c.dtype == np.int64 and r.shape == c.shape == (k,)
    if n <= m:
        np.testing.assert_array_equal(r, np.arange(n))
    else:
        assert np.all(np.diff(r) > 0) and r.min() >= 0 and r.max() < n
    assert len(set(c.tolist())) == k and c.min() >= 0 and c.max() < m
    total = math.fsum(C[r, c].tolist())
    assert res.cost == total  # accurately rounded sum of the input's entries
    assert abs(total - _opt(C, maximize)) <= 1e-12 * max(1.0, float(np.abs(C).sum()))
    assert res.solver == solver
    assert res.host_bytes == 0 and res.device_to_host is False  # float64 C-ordered NumPy
    assert repr(res) == f"LSAPResult(n={k}, cost={total!r}, solver={solver!r})"
    square = n == m
    if solver == "jv":
        assert isinstance(res.n_augment, int) and 0 <= res.n_augment <= max(n, m)
        if square:
            assert res.prices.dtype == np.float64 and res.prices.shape == (n,)
            _duals_ok(-C if maximize else C, c, res.prices)
        else:
            assert res.prices is None
    else:
        assert res.prices is None and res.n_augment is None


@pytest.mark.skipif(not JV, reason="numba missing")
@given(
    n=st.integers(1, 30), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-9, 1e-3, 1.0])
)
@example(n=12, seed=0, scale=1e-9)
def test_jv_warm_starts_are_optimal_with_optimal_duals(n, seed, scale):
    """A warm start from a close problem's result, from its prices alone, and from the
    same problem's own result: always the optimum, with prices that are optimal duals."""
    rng = np.random.default_rng(seed)
    C1 = rng.integers(0, 4, size=(n, n)).astype(np.float64)
    C2 = C1 + scale * rng.standard_normal((n, n))
    first = lsap(C1, solver="jv")
    _duals_ok(C1, first.col_ind, first.prices)
    for init in (first, first.prices, list(first.prices)):
        warm = lsap(C2, solver="jv", init=init)
        assert warm.solver == "jv" and warm.prices.shape == (n,)
        assert abs(warm.cost - _opt(C2)) <= 1e-12 * max(1.0, float(np.abs(C2).sum()))
        _duals_ok(C2, warm.col_ind, warm.prices)
    again = lsap(C1, solver="jv", init=first)
    assert again.n_augment == 0
    np.testing.assert_array_equal(again.col_ind, first.col_ind)
    np.testing.assert_array_equal(again.prices, first.prices)  # nothing to change


@pytest.mark.skipif(not JV, reason="numba missing")
def test_init_is_ignored_by_other_solvers_with_a_debug_message(caplog):
    C = _matrix(4, 4, "random", 3)
    first = lsap(C, solver="jv")
    with caplog.at_level(logging.DEBUG, logger="tqla.lsap"):
        res = lsap(C, solver="scipy", init=first)
    assert res.solver == "scipy" and res.cost == lsap(C, solver="scipy").cost
    assert [rec.getMessage() for rec in caplog.records] == [
        "lsap: solver='scipy' has no warm start; init ignored"
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="tqla.lsap"):
        lsap(C, solver="jv", init=first)
    assert caplog.records == []


@pytest.mark.skipif(not JV, reason="numba missing")
def test_scaled_problems_give_no_prices_and_ignore_warm_starts(monkeypatch):
    """Huge costs are solved scaled by a power of two: prices in the scaled units are not
    returned, and a warm start is not applied to the scaled problem."""
    C = 1e307 * np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 6.0, 9.0]])
    res = lsap(C, solver="jv")
    assert res.prices is None and res.cost == math.fsum(C[res.row_ind, res.col_ind].tolist())
    seen = []
    real = L._solve

    def spy(Cs, solver, prices, prev):
        seen.append((Cs, prices, prev))
        return real(Cs, solver, prices, prev)

    monkeypatch.setattr(L, "_solve", spy)
    lsap(C, solver="jv", init=np.zeros(3))
    ((Cs, prices, prev),) = seen
    assert prices is None and prev is None
    k = L._shift(float(np.abs(C).max()), 4 * 3)
    assert k > 0 and np.array_equal(Cs, np.ldexp(C, -k))
    seen.clear()
    small = np.eye(3)
    lsap(small, solver="jv", init=np.arange(3.0))
    ((Cs, prices, prev),) = seen
    assert Cs is not None and np.array_equal(prices, np.arange(3.0)) and prev is None


# --------------------------------------------------------------------------------------
# The pieces: scaling, totals
# --------------------------------------------------------------------------------------
@given(big=st.floats(1e-300, 1e308), count=st.integers(1, 10**6))
@example(big=1e308, count=4)
@example(big=2.0**999, count=1)
def test_shift_is_the_smallest_power_of_two_that_fits(big, count):
    k = L._shift(big, count)
    e = math.frexp(big)[1] + math.frexp(float(count))[1]
    assert k == max(0, e - 1000)
    # big·count·2^-k <= 2^1000, computed in logarithms (no overflow)
    assert math.log2(big) + math.log2(count) - k <= 1000


def test_shift_of_zero_and_non_finite_is_zero():
    assert L._shift(0.0, 10) == 0
    assert L._shift(math.inf, 10) == 0
    assert L._shift(math.nan, 10) == 0


@pytest.mark.parametrize("has_inf", [False, True])
def test_scaled_uses_the_largest_finite_magnitude(has_inf):
    C = np.array([[1e308, -1.7e308], [3.0, 4.0]])
    if has_inf:
        C[1, 1] = np.inf
    k = L._shift(1.7e308, 4 * 2)
    assert k > 0
    np.testing.assert_array_equal(L._scaled(C, has_inf), np.ldexp(C, -k))
    small = np.array([[1.0, -2.0], [np.inf if has_inf else 0.5, 3.0]])
    assert L._scaled(small, has_inf) is small
    allinf = np.full((2, 2), np.inf)
    assert L._scaled(allinf, True) is allinf


def test_total_is_the_accurately_rounded_sum():
    assert L._total(np.array([1e16, 1.0, -1e16])) == 1.0  # a naive sum gives 0
    assert L._total(np.array([1.5e308, 1.5e308, -1.5e308])) == 1.5e308  # partial overflow
    assert L._total(np.zeros(0)) == 0.0
    with pytest.raises(OverflowError):
        L._total(np.array([1.5e308, 1.5e308]))
    C = np.full((2, 2), 1.5e308)
    msg = (
        "the optimal assignment's total cost overflows float64 (its 2 costs reach 1.5e+308): "
        "scale the cost matrix down"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(C, solver="scipy")


# --------------------------------------------------------------------------------------
# Input handling: libraries, dtypes, layouts, masks, host copies
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", INSTALLED)
def test_host_bytes_of_every_input_kind(solver):
    C = _matrix(6, 6, "random", 4)
    f64 = C.nbytes
    cases = [
        (C, 0),
        (np.asfortranarray(C), f64),  # a C-ordered float64 copy
        (C.astype(np.float32), 0 if solver == "jv" else f64),  # jv reads float32 in place
        (np.asfortranarray(C.astype(np.float32)), f64),
        (np.rint(C * 10).astype(np.int64), f64),
        (np.rint(C * 10).astype(np.int64).tolist(), f64),  # int64 array, then float64
        (C.tolist(), 0),  # converted to a float64 array, then used in place
    ]
    for cost, want in cases:
        res = lsap(cost, solver=solver)
        assert res.host_bytes == want, (type(cost), getattr(cost, "dtype", None))
        assert res.device_to_host is False
    rect = C[:, :4].astype(np.float32)  # the square solvers get a float64 padded problem
    assert lsap(rect, solver=solver).host_bytes == rect.size * 8


def test_other_libraries_are_copied_to_the_host_once():
    torch = pytest.importorskip("torch")
    C = _matrix(5, 5, "random", 5)
    for dt, want in ((torch.float64, C.nbytes), (torch.float32, C.nbytes // 2)):
        res = lsap(torch.from_numpy(C).to(dt), solver="jv" if JV else "scipy")
        assert res.device_to_host is True
        assert res.host_bytes == (want if JV else C.nbytes)
    f32 = lsap(torch.from_numpy(C).to(torch.float32), solver="scipy")
    assert f32.host_bytes == C.nbytes // 2 + C.nbytes  # to the host, then widened
    half = torch.from_numpy(C).to(torch.float16)  # half precisions go through float32
    res = lsap(half, solver="scipy")
    ref = half.to(torch.float32).numpy().astype(np.float64)
    assert res.cost == math.fsum(ref[res.row_ind, res.col_ind].tolist())
    assert res.host_bytes == C.nbytes // 2 + C.nbytes and res.device_to_host is True
    if JV:
        assert lsap(half, solver="jv").host_bytes == C.nbytes // 2  # float32, in place
    bf = lsap(torch.from_numpy(C).to(torch.bfloat16), solver="scipy")
    assert bf.host_bytes == C.nbytes // 2 + C.nbytes
    ints = lsap(torch.arange(9).reshape(3, 3), solver="scipy")
    assert ints.cost == 0 + 4 + 8 or ints.cost == _opt(np.arange(9.0).reshape(3, 3))
    msg = "cost must hold real numbers (integer or floating dtype), got dtype torch.bool"
    with pytest.raises(TypeError, match=_whole(msg)):
        lsap(torch.eye(3, dtype=torch.bool))
    msg = "cost must hold real numbers (integer or floating dtype), got dtype torch.complex64"
    with pytest.raises(TypeError, match=_whole(msg)):
        lsap(torch.ones(2, 2, dtype=torch.complex64))


def test_dtype_messages_are_whole():
    msg = (
        "cost must hold real numbers (integer or floating dtype), got dtype bool: "
        "cast booleans explicitly"
    )
    with pytest.raises(TypeError, match=_whole(msg)):
        lsap(np.eye(2, dtype=bool))
    msg = "cost must hold real numbers (integer or floating dtype), got dtype complex128"
    with pytest.raises(TypeError, match=_whole(msg)):
        lsap(np.ones((2, 2), dtype=complex))
    msg = "cost must hold real numbers (integer or floating dtype), got dtype object"
    with pytest.raises(TypeError, match=_whole(msg)):
        lsap(np.array([[1, None], [2, 3]], dtype=object))
    # unsigned integers are numbers
    assert lsap(np.array([[3, 1], [1, 3]], dtype=np.uint8), solver="scipy").cost == 2.0


def test_shape_and_type_messages_are_whole():
    with pytest.raises(TypeError, match=_whole("cost must be an array, got str")):
        lsap("abc")
    with pytest.raises(TypeError, match=_whole("cost must be an array, got int")):
        lsap(3)
    with pytest.raises(ValueError, match=_whole("cost must be a 2-D array, got shape (4,)")):
        lsap(np.zeros(4))
    with pytest.raises(ValueError, match=_whole("cost must be a 2-D array, got shape (2, 2, 1)")):
        lsap(np.zeros((2, 2, 1)))
    with pytest.raises(ValueError, match=_whole("cost must be a 2-D array, got shape (3,)")):
        lsap((1.0, 2.0, 3.0))
    with pytest.raises(TypeError, match=_whole("maximize must be a bool, got int")):
        lsap(np.eye(2), maximize=1)
    assert lsap(np.eye(2), maximize=np.bool_(True), solver="scipy").cost == 2.0


@pytest.mark.parametrize("solver", [s for s in INSTALLED if s not in ("lap", "lapx")])
def test_non_finite_messages_are_whole(solver):
    msg = "cost must not contain NaN"
    for bad in (np.nan, -np.nan):
        C = np.array([[0.0, bad], [1.0, 2.0]])
        with pytest.raises(ValueError, match=_whole(msg)):
            lsap(C, solver=solver)
        with pytest.raises(ValueError, match=_whole(msg)):
            lsap(C, solver=solver, maximize=True)
    msg = (
        "cost must not contain -inf: an assignment cannot be infinitely good "
        "(use +inf or a masked entry to forbid a pair)"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(np.array([[0.0, -np.inf], [1.0, 2.0]]), solver=solver)
    msg = (
        "cost must not contain +inf with maximize=True: an assignment cannot be infinitely "
        "good (use -inf or a masked entry to forbid a pair)"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(np.array([[0.0, np.inf], [1.0, 2.0]]), solver=solver, maximize=True)
    # the allowed infinities are forbidden pairs
    res = lsap(np.array([[np.inf, 1.0], [1.0, 5.0]]), solver=solver)
    assert res.col_ind.tolist() == [1, 0] and res.cost == 2.0
    res = lsap(np.array([[-np.inf, 1.0], [1.0, 5.0]]), solver=solver, maximize=True)
    assert res.col_ind.tolist() == [1, 0] and res.cost == 2.0


@pytest.mark.parametrize("solver", [s for s in INSTALLED if s not in ("lap", "lapx")])
@pytest.mark.parametrize("maximize", [False, True])
def test_masks_forbid_pairs_without_changing_the_input(solver, maximize):
    data = np.array([[1.0, 9.0, 9.0], [9.0, 1.0, 9.0], [9.0, 9.0, 1.0]])
    if maximize:
        data = -data
    mask = np.zeros((3, 3), dtype=bool)
    mask[0, 0] = True
    C = np.ma.masked_array(data.copy(), mask=mask)
    res = lsap(C, solver=solver, maximize=maximize)
    assert res.col_ind[0] != 0
    sign = -1.0 if maximize else 1.0
    assert res.cost == sign * 19.0
    np.testing.assert_array_equal(np.ma.getdata(C), data)  # the input is not written
    assert res.host_bytes == 0  # the float64 data is used in place (its masked copy aside)
    nomask = np.ma.masked_array(data.copy(), mask=np.zeros((3, 3), dtype=bool))
    assert lsap(nomask, solver=solver, maximize=maximize).cost == sign * 3.0


# --------------------------------------------------------------------------------------
# Warm-start arguments
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(not JV, reason="numba missing")
def test_init_messages_are_whole():
    C = np.eye(3)
    msg = (
        "init must be an LSAPResult of a previous solve or a 1-D array of column prices, "
        "got an array of shape (3, 3)"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(C, solver="jv", init=np.zeros((3, 3)))
    for bad, shape in ((np.zeros(4), "(4,)"), (np.array([0.0, np.inf, 0.0]), "(3,)"),
                       (np.array([0.0, np.nan, 0.0]), "(3,)")):  # fmt: skip
        msg = f"init's column prices must be 3 finite numbers (one per column), got shape {shape}"
        with pytest.raises(ValueError, match=_whole(msg)):
            lsap(C, solver="jv", init=bad)
    prev = lsap(np.eye(2), solver="jv")
    msg = "init's column prices must be 3 finite numbers (one per column), got shape (2,)"
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(C, solver="jv", init=prev)
    prev = lsap(np.eye(2), solver="scipy")  # no prices: only the assignment is checked
    msg = "init is a solution of a 2×2 problem, but cost is 3×3"
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(C, solver="jv", init=prev)
    msg = "init (a warm start) needs a square cost matrix, got shape (3, 4)"
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(np.ones((3, 4)), solver="jv", init=lsap(C, solver="jv"))
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(np.ones((3, 4)), solver="jv", init=np.zeros(7))


def test_init_prices_are_read_as_given():
    prices, col = L._init_prices(None, 3)
    assert prices is None and col is None
    prices, col = L._init_prices([1, 2, 3], 3)
    assert prices.dtype == np.float64 and prices.tolist() == [1.0, 2.0, 3.0] and col is None
    res = LSAPResult(np.arange(2), np.array([1, 0], dtype=np.int32), cost=0.0, solver="x",
                     prices=np.array([1, 2]))  # fmt: skip
    prices, col = L._init_prices(res, 2)
    assert prices.dtype == np.float64 and prices.tolist() == [1.0, 2.0]
    assert col.dtype == np.int64 and col.tolist() == [1, 0]


# --------------------------------------------------------------------------------------
# The result type
# --------------------------------------------------------------------------------------
def test_result_defaults_and_coercions():
    r, c = np.arange(2), np.array([1, 0])
    res = LSAPResult(r, c, cost=np.float32(2.5), solver="s")
    assert res.row_ind is r and res.col_ind is c and tuple(res) == (r, c)
    assert type(res.cost) is float and res.cost == 2.5 and res.solver == "s"
    assert res.prices is None and res.n_augment is None
    assert type(res.host_bytes) is int and res.host_bytes == 0
    assert res.device_to_host is False
    res = LSAPResult(r, c, cost=1, solver="s", prices=np.ones(2), n_augment=3,
                     host_bytes=np.int64(16), device_to_host=1)  # fmt: skip
    assert res.prices.tolist() == [1.0, 1.0] and res.n_augment == 3
    assert type(res.host_bytes) is int and res.host_bytes == 16 and res.device_to_host is True
    assert repr(res) == "LSAPResult(n=2, cost=1.0, solver='s')"


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (3, 0)])
@pytest.mark.parametrize("solver", INSTALLED)
def test_empty_problems(shape, solver):
    C = np.zeros(shape, dtype=np.float32)
    res = lsap(C, solver=solver)
    assert res.row_ind.shape == res.col_ind.shape == (0,)
    assert res.row_ind.dtype == res.col_ind.dtype == np.int64
    assert res.row_ind is not res.col_ind
    assert res.cost == 0.0 and res.solver == solver and res.prices is None
    assert res.host_bytes == 0 and res.device_to_host is False
    assert lsap(np.zeros(shape, dtype=np.int32), solver=solver).host_bytes == 0


# --------------------------------------------------------------------------------------
# Choosing the solver
# --------------------------------------------------------------------------------------
def test_check_solver_routes_and_messages():
    assert SOLVERS == ("auto", "scipy", "lap", "lapx", "jv")
    assert L.check_solver("auto") == AUTO_ORDER == ("jv", "scipy")
    for name in SOLVERS[1:]:
        assert L.check_solver(name) == (name,)
    assert L.check_solver(["lap", "scipy"]) == ("lap", "scipy")
    msg = "solver must be one of ('auto', 'scipy', 'lap', 'lapx', 'jv') or a tuple of them, got 'x'"
    with pytest.raises(ValueError, match=_whole(msg)):
        L.check_solver("x")
    for bad in ((), ("auto",), ("scipy", 3), ("scipy", "x"), 3, None):
        msg = (
            "solver must be one of ('auto', 'scipy', 'lap', 'lapx', 'jv') or a non-empty "
            f"tuple of ('scipy', 'lap', 'lapx', 'jv') tried in order, got {bad!r}"
        )
        with pytest.raises(ValueError, match=_whole(msg)):
            L.check_solver(bad)


@pytest.mark.parametrize("name", ["lap", "lapx"])
def test_forbidden_pairs_route_around_lap(name):
    if name not in INSTALLED:
        pytest.skip(f"{name} missing")
    C = np.array([[np.inf, 1.0], [1.0, 2.0]])
    msg = (
        "cost holds forbidden pairs (+inf, or masked entries), which "
        f"solver={name!r} does not support; use solver='scipy' or 'jv'"
    )
    with pytest.raises(ValueError, match=_whole(msg)):
        lsap(C, solver=name)
    assert lsap(C, solver=(name, "scipy")).solver == "scipy"  # a tuple skips it
    msg = (
        f"none of the solvers ('{name}',) is installed (or supports forbidden pairs); "
        f"installed: {INSTALLED}"
    )
    with pytest.raises(ImportError, match=_whole(msg)):
        lsap(C, solver=(name,))
    # finite costs whose sum overflows hold no forbidden pair: lap may run
    big = np.array([[1.0e308, 0.5e308], [0.5e308, 1.0e308]])
    res = lsap(big, solver=(name, "scipy"))
    assert res.solver == name and res.cost == 1.0e308
    assert lsap(np.eye(2), solver=(name, "scipy")).solver == name


def test_auto_routes_when_jv_is_missing(monkeypatch):
    def missing():
        raise ImportError("no numba")

    monkeypatch.setitem(L._LOADERS, "jv", missing)
    assert lsap(np.eye(3)).solver == "scipy"
    assert (
        lsap(np.eye(3), solver=("jv", "lapx")).solver
        == ("lapx" if "lapx" in INSTALLED else "scipy")
        or "lapx" not in INSTALLED
    )
    with pytest.raises(ImportError, match="^no numba$"):  # an explicit name: its own error
        lsap(np.eye(3), solver="jv")
    msg = (
        "none of the solvers ('jv',) is installed (or supports forbidden pairs); "
        f"installed: {[s for s in INSTALLED if s != 'jv']}"
    )
    with pytest.raises(ImportError, match=_whole(msg)):
        lsap(np.eye(3), solver=("jv",))
    assert available_solvers() == [s for s in INSTALLED if s != "jv"]


def test_available_solvers_order():
    assert INSTALLED[0] == "scipy"
    assert INSTALLED == [s for s in ("scipy", "lap", "lapx", "jv") if s in INSTALLED]


def _fake_lap(monkeypatch, **attrs):
    mod = types.ModuleType("lap")
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, "lap", mod)
    return mod


def test_lap_import_messages(monkeypatch):
    monkeypatch.setitem(sys.modules, "lap", None)
    msg = (
        "solver='lap' needs the optional package 'lap' (or 'lapx', which provides "
        "lap.lapjv): pip install 'tqla[lap]'"
    )
    with pytest.raises(ImportError, match=_whole(msg)):
        L._import_lap()
    msg = "solver='lapx' needs the optional package 'lapx' (lap.lapjvc): pip install 'tqla[lap]'"
    with pytest.raises(ImportError, match=_whole(msg)):
        L._import_lapx()
    _fake_lap(monkeypatch)
    monkeypatch.setitem(sys.modules, "lap._lapjvc", None)
    msg = (
        "solver='lap' needs lap.lapjv, which the installed 'lap' package lacks: "
        "pip install 'tqla[lap]'"
    )
    with pytest.raises(ImportError, match=_whole(msg)):
        L._import_lap()
    msg = "solver='lapx' needs the optional package 'lapx' (lap.lapjvc): pip install 'tqla[lap]'"
    with pytest.raises(ImportError, match=_whole(msg)):
        L._import_lapx()
    assert available_solvers() == ["scipy"] + (["jv"] if JV else [])


def test_lapx_entry_points_are_found_in_their_extension_module(monkeypatch):
    """'lap' installed over 'lapx': lapjvc is imported from lap._lapjvc."""

    def lapjvc(C, return_cost=True):
        r, c = linear_sum_assignment(C)
        return r[::-1].copy(), c[::-1].copy()  # rows in another order: mapped back

    def lapjv(C, extend_cost=False):
        assert extend_cost is False
        return 0.0, linear_sum_assignment(C)[1], None

    _fake_lap(monkeypatch, lapjv=lapjv)
    ext = types.ModuleType("lap._lapjvc")
    ext.lapjvc = lapjvc
    monkeypatch.setitem(sys.modules, "lap._lapjvc", ext)
    assert L._import_lapx() is lapjvc
    assert L._import_lap() is lapjv
    C = _matrix(5, 5, "random", 6)
    for name in ("lap", "lapx"):
        res = lsap(C, solver=name)
        assert res.solver == name and res.cost == _opt(C)
        np.testing.assert_array_equal(res.col_ind, linear_sum_assignment(C)[1])
    del ext.lapjvc
    with pytest.raises(ImportError, match="lapx"):
        L._import_lapx()


@pytest.mark.parametrize("solver", [s for s in INSTALLED if s != "scipy"])
def test_square_only_solvers_get_a_zero_padded_square_problem(solver, monkeypatch):
    seen = []
    real = L._solve_square

    def spy(C, name, prices, prev):
        seen.append(C.copy())
        return real(C, name, prices, prev)

    monkeypatch.setattr(L, "_solve_square", spy)
    C = _matrix(3, 5, "random", 7)
    for cost, want in ((C, C), (C.T, C)):  # a tall problem is solved transposed
        seen.clear()
        res = lsap(cost, solver=solver)
        (P,) = seen
        assert P.shape == (5, 5) and P.dtype == np.float64 and P.flags.c_contiguous
        np.testing.assert_array_equal(P[:3], want)
        np.testing.assert_array_equal(P[3:], 0.0)
        assert res.cost == _opt(cost)


@pytest.mark.parametrize("solver", INSTALLED)
def test_square_solvers_return_integer_assignments(solver):
    """Each solver's own answer is an integer column per row (no float detour): int64
    from lapx's row/column pairs and from jv, the package's own integers otherwise."""
    C = _matrix(6, 6, "random", 8)
    col, prices, n_aug = L._solve_square(C, solver, None, None)
    col = np.asarray(col)
    assert col.dtype.kind == "i" and col.shape == (6,)
    if solver in ("lapx", "jv"):
        assert col.dtype == np.int64
    np.testing.assert_array_equal(col, linear_sum_assignment(C)[1])
    assert (prices is None) == (solver != "jv") and (n_aug is None) == (solver != "jv")
