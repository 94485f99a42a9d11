"""tqla.lsap behaves like SciPy's linear_sum_assignment (issue 9, items 7 and 13).

Rectangular costs and ``maximize=True`` through every installed solver (the square-only
Jonker–Volgenant solvers through the zero-row padding reduction), SciPy's own test cases,
and clear errors or NumPy/SciPy behaviour for the inputs that used to go wrong: complex and
boolean matrices, masked arrays, and finite costs whose sums overflow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from tqla import lsap
from tqla.lsap import available_solvers

SOLVERS = available_solvers()
JV_LIKE = [s for s in ("lap", "lapx", "jv") if s in SOLVERS]


def _scipy_cases() -> list:
    try:
        from scipy.sparse.csgraph.tests.test_matching import linear_sum_assignment_test_cases
    except ImportError:  # SciPy installed without its tests
        return []
    return list(linear_sum_assignment_test_cases)


SCIPY_CASES = _scipy_cases()


def _has_inf(cost) -> bool:
    return bool(np.isinf(np.asarray(cost, dtype=float)).any())


# --------------------------------------------------------------------------------------
# SciPy's own test cases (scipy.sparse.csgraph.tests.test_matching)
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(not SCIPY_CASES, reason="SciPy's test modules are not installed")
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", range(len(SCIPY_CASES) or 1))
def test_scipy_linear_sum_assignment_test_cases(solver, case):
    """The assertions of SciPy's ``linear_sum_assignment_assertions``, for every solver;
    lap/lapx refuse the cases with forbidden (infinite) pairs, saying why."""
    sign, (cost, expected) = SCIPY_CASES[case]
    maximize = sign == -1
    for C in (sign * np.array(cost), (sign * np.array(cost)).T):
        if solver in ("lap", "lapx") and _has_inf(C):
            with pytest.raises(ValueError, match=f"solver='{solver}' does not support"):
                lsap(C, solver=solver, maximize=maximize)
            continue
        row_ind, col_ind = lsap(C, solver=solver, maximize=maximize)
        np.testing.assert_array_equal(row_ind, np.sort(row_ind))
        # integer-valued costs: the sums are exact, equality is the right test
        np.testing.assert_array_equal(
            np.sort(sign * np.array(expected)), np.sort(C[row_ind, col_ind])
        )


@pytest.mark.parametrize("solver", SOLVERS)
def test_scipy_constant_and_trivial_inputs(solver):
    """scipy.optimize's test_constant_cost_matrix / trivial / small-input cases."""
    n = 8
    r, c = lsap(np.ones((n, n)), solver=solver)
    np.testing.assert_array_equal(r, np.arange(n))
    assert sorted(c.tolist()) == list(range(n))
    for shape in [(0, 0), (0, 3), (3, 0)]:
        r, c = lsap(np.zeros(shape), solver=solver)
        assert r.shape == (0,) and c.shape == (0,)
        r, c = lsap(np.zeros(shape), solver=solver, maximize=True)
        assert r.shape == (0,) and c.shape == (0,)


def test_scipy_infeasible_input_message():
    I = np.identity(3)
    I[:, 0] = np.inf
    with pytest.raises(ValueError, match="cost matrix is infeasible"):
        lsap(I, solver="scipy")
    if "jv" in SOLVERS:
        with pytest.raises(ValueError, match="cost matrix is infeasible"):
            lsap(I, solver="jv")


# --------------------------------------------------------------------------------------
# Rectangular and maximize: equal optimal cost to SciPy
# --------------------------------------------------------------------------------------
@st.composite
def rectangular_costs(draw):
    n = draw(st.integers(0, 9))
    m = draw(st.integers(0, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["uniform", "integer", "inf"]))
    rng = np.random.default_rng(seed)
    if kind == "integer":
        C = rng.integers(-3, 4, size=(n, m)).astype(np.float64)
    else:
        C = rng.standard_normal((n, m))
        if kind == "inf" and C.size:
            C[rng.random((n, m)) < 0.2] = np.inf
    return C


@pytest.mark.parametrize("solver", SOLVERS)
@given(C=rectangular_costs(), maximize=st.booleans())
def test_rectangular_and_maximize_match_scipy(solver, C, maximize):
    if maximize:
        C = np.where(np.isinf(C), -np.inf, C)  # forbidden pairs of a maximisation
    try:
        r_ref, c_ref = linear_sum_assignment(C, maximize=maximize)
    except ValueError:
        feasible = False
    else:
        feasible = True
    if solver in ("lap", "lapx") and _has_inf(C):
        with pytest.raises(ValueError, match="does not support"):
            lsap(C, solver=solver, maximize=maximize)
        return
    if not feasible:
        with pytest.raises(ValueError, match="infeasible"):
            lsap(C, solver=solver, maximize=maximize)
        return
    res = lsap(C, solver=solver, maximize=maximize)
    r, c = res
    k = min(C.shape)
    assert len(r) == len(c) == k
    assert np.all(np.diff(r) > 0) and len(set(c.tolist())) == k  # a matching
    if C.shape[0] <= C.shape[1]:
        np.testing.assert_array_equal(r, np.arange(C.shape[0]))
    ref = float(C[r_ref, c_ref].sum()) if k else 0.0
    scale = max(1.0, float(np.abs(C[np.isfinite(C)]).sum()) if C.size else 1.0)
    # sums of k terms in float64, in whatever order: the rounding bound of such sums
    assert abs(res.cost - ref) <= 4 * max(k, 1) * np.finfo(np.float64).eps * scale
    assert res.cost == pytest.approx(float(C[r, c].sum()) if k else 0.0, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("solver", JV_LIKE)
def test_square_only_solvers_pad_rectangular_problems(solver):
    """The padding reduction reaches the square-only solvers (the result says which ran)."""
    C = np.array([[400.0, 150, 400, 1], [400, 450, 600, 2], [300, 225, 300, 3]])
    res = lsap(C, solver=solver)
    assert res.solver == solver and res.cost == 150 + 2 + 300
    res = lsap(C.T, solver=solver)
    assert res.cost == 150 + 2 + 300 and len(res.row_ind) == 3


def test_warm_start_needs_a_square_problem():
    if "jv" not in SOLVERS:
        pytest.skip("numba missing")
    first = lsap(np.eye(3), solver="jv")
    with pytest.raises(ValueError, match="init .* needs a square cost matrix"):
        lsap(np.ones((3, 4)), solver="jv", init=first)


# --------------------------------------------------------------------------------------
# Item 7: dtypes, masks, overflow
# --------------------------------------------------------------------------------------
def test_complex_and_bool_costs_are_refused(backend):
    """Complex costs used to lose their imaginary part silently (torch), booleans were
    taken as 0/1 on torch only: both are a clear TypeError on every library."""
    torch_like = backend.name.startswith("torch")
    if torch_like or backend.name == "numpy":
        Z = backend.asarray(np.array([[1 + 2j, 3], [4, 5 - 1j]]))
        with pytest.raises(TypeError, match="cost must hold real numbers.*complex"):
            lsap(Z)
    B = backend.asarray(np.eye(3, dtype=bool))
    with pytest.raises(TypeError, match="cost must hold real numbers.*bool"):
        lsap(B)


def test_object_and_string_costs_are_refused():
    with pytest.raises(TypeError, match="cost must hold real numbers"):
        lsap(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="cost must hold real numbers"):
        lsap(np.array([[1, None], [2, 3]], dtype=object))


@pytest.mark.parametrize("solver", [s for s in SOLVERS if s not in ("lap", "lapx")])
def test_masked_entries_are_forbidden_pairs(solver):
    C = np.ma.masked_array(
        [[1.0, 9.0, 9.0], [9.0, 1.0, 9.0], [9.0, 9.0, 1.0]],
        mask=[[True, False, False], [False, False, False], [False, False, False]],
    )
    res = lsap(C, solver=solver)
    assert res.col_ind[0] != 0  # the masked (cheapest) pair is never used
    assert res.cost == pytest.approx(float(np.ma.getdata(C)[res.row_ind, res.col_ind].sum()))
    assert res.cost == 9.0 + 9.0 + 1.0 or res.cost == 9.0 + 1.0 + 9.0 or res.cost == 19.0
    full = np.ma.masked_array(np.ones((2, 2)), mask=[[True, True], [False, False]])
    with pytest.raises(ValueError, match="infeasible"):
        lsap(full, solver=solver)
    res = lsap(C, solver=solver, maximize=True)
    assert res.col_ind[0] != 0


@pytest.mark.parametrize("solver", [s for s in ("lap", "lapx") if s in SOLVERS])
def test_masked_entries_refused_by_lap(solver):
    C = np.ma.masked_array(np.ones((2, 2)), mask=[[True, False], [False, False]])
    with pytest.raises(ValueError, match="forbidden pairs .*does not support"):
        lsap(C, solver=solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_finite_costs_whose_sum_overflows(solver):
    """Finite costs whose sum over the matrix overflows were reported as '+inf (forbidden
    pairs)' by lap/lapx; now every solver gives the right assignment and total."""
    big = 1e307
    C = big * np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 6.0, 9.0]])
    ref_r, ref_c = linear_sum_assignment(C / big)
    res = lsap(C, solver=solver)
    expected = math.fsum((C[ref_r, ref_c] / big).tolist()) * big
    assert res.cost == pytest.approx(expected, rel=1e-15)
    np.testing.assert_array_equal(np.sort(res.col_ind), np.arange(3))
    assert math.isfinite(res.cost)


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_total_that_does_not_fit_is_a_clear_error(solver):
    C = np.full((3, 3), 1.5e308)
    with pytest.raises(ValueError, match="total cost overflows float64"):
        lsap(C, solver=solver)


@pytest.mark.parametrize(
    "cost, maximize, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), False, "cost must not contain NaN"),
        (np.array([[0.0, -np.inf], [1.0, 2.0]]), False, "cost must not contain -inf"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), True, r"cost must not contain \+inf with maximize"),
    ],
)
def test_infinitely_good_entries_are_refused(cost, maximize, match):
    with pytest.raises(ValueError, match=match):
        lsap(cost, maximize=maximize)


def test_maximize_must_be_a_bool():
    with pytest.raises(TypeError, match="maximize must be a bool"):
        lsap(np.eye(2), maximize="yes")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "cost",
    [
        [[-1.7e308, -3.0, 1e308], [1.0, 1.7e308, 1.7e308], [2.0, -1.7e308, 1e308]],
        [[1.0, 1e308, 1.0], [-1.7e308, 1.0, 2.0], [2.0, 1.7e308, 1e308]],
    ],
)
def test_huge_costs_whose_solver_intermediates_overflow(solver, cost):
    """Reduced costs c − u − v of such matrices overflow inside the solvers (SciPy, jv and
    lapx gave wrong answers or errors); the exact power-of-two scaling prevents it."""
    C = np.array(cost)
    scale = 2.0**-20  # exact: the reference solves the scaled problem, which cannot overflow
    r, c = linear_sum_assignment(C * scale)
    ref = math.fsum((C[r, c] * scale).tolist()) / scale
    res = lsap(C, solver=solver)
    # entries near 1e308 are resolved to eps·max|C| only: optimal totals agree to that
    assert abs(res.cost - ref) <= 4 * len(C) * np.finfo(np.float64).eps * np.abs(C).max()
