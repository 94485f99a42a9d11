"""Properties of the assignment machinery that coarse tests cannot see.

* Warm-started Jonker–Volgenant at near-ties: a previous solution whose swap now improves
  the total by 1e-8 must be left (the keep-tolerance of the warm start is relative 1e-12;
  loosened to 1e-6 the stale assignment would be kept).
* Memory estimates: the exact estimate of every cost build, and a refusal when the cost
  matrix alone fits but the temporaries do not.
* The acceptance guard of the alternating loop: with a solver that returns bad
  assignments (monkeypatched), the error history never rises and the result is the
  best state reached.

Each was checked to fail, for several Hypothesis seeds, on the planted bug named in its
docstring.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import tqla.permuted as permuted_module
from tqla import KroneckerShape, KroneckerSum, permuted_kron
from tqla.assignment import assign_cost, check_cost_memory, slots_cost
from tqla.kron import kron_svd
from tqla.lsap import LSAPResult, lsap

pytest.importorskip("numba")


def _opt(C: np.ndarray) -> float:
    r, c = linear_sum_assignment(C)
    return float(C[r, c].sum())


# --------------------------------------------------------------------------------------
# Warm-started JV at near-ties
# --------------------------------------------------------------------------------------
def _two_optima(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Costs u_i + v_j + R_ij with R ≥ 0.1 except on a permutation σ and on the swap of
    two rows a, b of σ: exactly two optimal assignments, σ and σ∘(a b)."""
    sigma = rng.permutation(n)
    a, b = (int(i) for i in rng.choice(n, 2, replace=False))
    u = rng.uniform(1.0, 5.0, n)
    v = rng.uniform(1.0, 5.0, n)
    R = rng.uniform(0.1, 1.0, (n, n))
    R[np.arange(n), sigma] = 0.0
    R[a, sigma[b]] = 0.0
    R[b, sigma[a]] = 0.0
    return u[:, None] + v[None, :] + R, a, b


@given(n=st.integers(2, 40), seed=st.integers(0, 2**32 - 1), delta=st.sampled_from([1e-8, 3e-8]))
def test_jv_warm_start_leaves_a_solution_a_near_tie_swap_improves(n, seed, delta):
    """Planted bug caught: keep-tolerance of the warm start 1e-12 → 1e-6."""
    rng = np.random.default_rng(seed)
    C0, a, b = _two_optima(n, rng)
    res0 = lsap(C0, solver="jv")
    ja = int(res0.col_ind[a])
    C1 = C0.copy()
    C1[a, ja] += delta  # the other optimum of C0 now wins by delta
    best = _opt(C1)
    res1 = lsap(C1, solver="jv", init=res0)
    np.testing.assert_array_equal(np.sort(res1.col_ind), np.arange(n))
    assert res1.cost == pytest.approx(float(C1[np.arange(n), res1.col_ind].sum()), rel=1e-14)
    assert res1.cost <= best + 1e-3 * delta, (res1.cost - best, delta)
    assert res1.col_ind[a] != ja
    # prices alone (no previous assignment) reach the optimum too
    res2 = lsap(C1, solver="jv", init=res0.prices)
    assert res2.cost <= best + 1e-3 * delta


# --------------------------------------------------------------------------------------
# Memory estimates
# --------------------------------------------------------------------------------------
@given(n=st.integers(1, 10_000), itemsize=st.sampled_from([2, 4, 8]), extra=st.integers(0, 10**9))
def test_memory_estimate_is_exact(n, itemsize, extra):
    """Planted bugs caught: temporaries dropped from the estimate; host copy not counted."""
    need = n * n * (itemsize + 8) + extra
    assert check_cost_memory(n, itemsize, what="t", extra_bytes=extra, max_bytes=need) == need
    with pytest.raises(MemoryError, match=r"\d+×\d+ cost matrix"):
        check_cost_memory(n, itemsize, what="t", extra_bytes=extra, max_bytes=need - 1)


builder_shapes = st.builds(
    lambda m1, n1, m2, n2: KroneckerShape((m1, n1), (m2, n2)),
    st.integers(2, 6),
    st.integers(2, 6),
    st.integers(2, 5),
    st.integers(2, 5),
)


@given(s=builder_shapes, side=st.sampled_from(["rows", "cols"]), dt=st.sampled_from(["f4", "f8"]))
def test_assign_cost_estimate_is_exact_and_counts_the_temporaries(s, side, dt):
    W = np.random.default_rng(0).standard_normal(s.matrix_shape).astype(dt)
    K = kron_svd(W, s, 1)
    M, N = s.matrix_shape
    n = M if side == "rows" else N
    item = W.dtype.itemsize
    matrix = n * n * (item + 8)
    need = matrix + 2 * M * N * item  # dense K and its permuted copy
    assign_cost(W, K, side=side, max_bytes=need)  # fits exactly
    with pytest.raises(MemoryError):
        assign_cost(W, K, side=side, max_bytes=need - 1)
    with pytest.raises(MemoryError, match="temporaries"):  # the matrix fits, the rest not
        assign_cost(W, K, side=side, max_bytes=matrix)


@given(s=builder_shapes, side=st.sampled_from(["rows", "cols"]), rank=st.integers(1, 3))
def test_slots_cost_estimate_is_exact_and_counts_the_temporaries(s, side, rank):
    rank = min(rank, s.max_rank)
    W = np.random.default_rng(1).standard_normal(s.matrix_shape)  # float64
    K = kron_svd(W, s, rank)
    so = s if side == "rows" else s.T
    matrix = so.m1 * so.m1 * (8 + 8)
    need = matrix + (3 * so.m1 * so.n1 * rank + so.m1 * so.n1 * so.n2) * 8  # P, H, Y, block
    slots_cost(W, s, K, 0, side=side, max_bytes=need)
    with pytest.raises(MemoryError):
        slots_cost(W, s, K, 0, side=side, max_bytes=need - 1)
    with pytest.raises(MemoryError, match="temporaries"):
        slots_cost(W, s, K, 0, side=side, max_bytes=matrix)


@pytest.mark.parametrize("rule", ["slots", "assign"])
def test_permuted_kron_refuses_when_only_the_temporaries_do_not_fit(rule):
    s = KroneckerShape((4, 3), (3, 2))
    W = np.random.default_rng(2).standard_normal(s.matrix_shape)
    M, N = s.matrix_shape
    if rule == "slots":
        matrix = s.m1 * s.m1 * 16
        need = matrix + (3 * s.m1 * s.n1 * 1 + s.m1 * s.n1 * s.n2) * 8
    else:
        matrix = M * M * 16
        need = matrix + 2 * M * N * 8
    kw = {"rule": rule, "permute": "rows", "n_iter": 1}
    permuted_kron(W, s, 1, max_cost_bytes=need, **kw)
    with pytest.raises(MemoryError, match="temporaries"):
        permuted_kron(W, s, 1, max_cost_bytes=matrix, **kw)


# --------------------------------------------------------------------------------------
# The acceptance guard of the alternating loop
# --------------------------------------------------------------------------------------
def _bad_solver(kind: str, rng: np.random.Generator, calls: list):
    """An LSAP 'solver' that returns bad assignments: the worst one, or a random one."""

    def solve(cost, *, solver="auto", init=None, **kwargs):
        calls.append(1)
        C = np.asarray(cost, dtype=np.float64)
        n = C.shape[0]
        if kind == "worst":
            _, col = linear_sum_assignment(C, maximize=True)
        else:
            col = rng.permutation(n)
        col = np.asarray(col, dtype=np.int64)
        return LSAPResult(np.arange(n), col, cost=float(C[np.arange(n), col].sum()), solver="bad")

    return solve


@given(
    m1=st.integers(2, 5),
    m2=st.integers(2, 4),
    n1=st.integers(2, 5),
    n2=st.integers(2, 4),
    rule=st.sampled_from(["slots", "assign", "slots+assign"]),
    kind=st.sampled_from(["worst", "random"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_bad_assignments_never_raise_the_error_history(m1, m2, n1, n2, rule, kind, seed):
    """Planted bug caught: the acceptance test ``err <= self.err`` replaced by True."""
    s = KroneckerShape((m1, n1), (m2, n2))
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(s.matrix_shape)
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(permuted_module, "lsap", _bad_solver(kind, rng, calls))
        P = permuted_kron(W, s, 1, rule=rule, n_iter=4, tol=0.0)
    assert calls, "permuted_kron no longer solves through tqla.permuted.lsap: patch its solver"
    e = np.asarray(P.errors)
    assert len(e) >= 2
    assert np.all(np.diff(e) <= 0), e  # exact: a step is kept only if err <= current err
    # the returned state is the one the history ends at (no rejected step leaked into it)
    D = P.to_dense()
    err = float(np.linalg.norm(W - D) / np.linalg.norm(W))
    assert err == pytest.approx(e[-1], rel=1e-9, abs=1e-12)
    plain = float(np.linalg.norm(W - kron_svd(W, s, 1).to_dense()) / np.linalg.norm(W))
    assert e[0] == pytest.approx(plain, rel=1e-7)  # the history starts at plain kron_svd


# --------------------------------------------------------------------------------------
# Found by mutation testing: argument checks and the kernel argument of SlotsCost
# --------------------------------------------------------------------------------------
def test_assign_cost_checks_K_shape_and_library():
    s = KroneckerShape((3, 2), (2, 2))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    with pytest.raises(ValueError, match=r"K of shape \(4, 6\) does not match W of shape \(6, 4\)"):
        assign_cost(W, np.zeros((4, 6)))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="same library"):
        assign_cost(W, torch.zeros(6, 4, dtype=torch.float64))


def test_slots_cost_names_W_in_its_errors():
    from tqla.assignment import SlotsCost

    s = KroneckerShape((3, 2), (2, 2))
    K = kron_svd(np.random.default_rng(0).standard_normal(s.matrix_shape), s, 1)
    with pytest.raises(ValueError, match=r"^W must be 2-D"):
        SlotsCost(np.zeros((6, 4, 1)), s, K)
    with pytest.raises(TypeError, match=r"^W must have a real floating dtype"):
        SlotsCost(np.zeros((6, 4), dtype=np.int64), s, K)


@pytest.mark.parametrize("kernel", ["numpy", "array_api"])
def test_slots_cost_uses_the_kernel_it_is_given(monkeypatch, kernel):
    """``kernel=`` selects the implementation of both operations of the sweep (the
    projections and the slot costs), not only of the slot costs."""
    import tqla.assignment as asg_module

    seen = []
    real = asg_module.get_kernel

    def spy(name, impl="auto", *arrays):
        seen.append((name, impl))
        return real(name, impl, *arrays)

    monkeypatch.setattr(asg_module, "get_kernel", spy)
    s = KroneckerShape((3, 2), (2, 2))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    K = kron_svd(W, s, 1)
    slots_cost(W, s, K, 0, kernel=kernel)
    assert ("rearranged_matmul", kernel) in seen, seen
    assert ("slots_cost", kernel) in seen, seen


@pytest.mark.parametrize("projection_kernel", ["numba", "numpy"])
def test_projection_kernel_selects_the_projection_pass_only(monkeypatch, projection_kernel):
    """``projection_kernel=`` picks the kernel of the projections pass (what
    permuted_kron passes: its refits' kernel), the slot costs keep ``kernel``, and the
    costs agree with the default sweep to rounding.

    Planted bug caught: ``projection_kernel`` ignored (the projections ran on ``kernel``)."""
    import tqla.assignment as asg_module
    from tqla.assignment import SlotsCost

    seen = []
    real = asg_module.get_kernel

    def spy(name, impl="auto", *arrays):
        seen.append((name, impl))
        return real(name, impl, *arrays)

    s = KroneckerShape((5, 3), (2, 4))
    W = np.random.default_rng(1).standard_normal(s.matrix_shape).astype(np.float32)
    K = kron_svd(W, s, 2)
    want = SlotsCost(W, s, K, kernel="array_api").cost(1)
    monkeypatch.setattr(asg_module, "get_kernel", spy)
    got = SlotsCost(W, s, K, kernel="array_api", projection_kernel=projection_kernel).cost(1)
    assert ("rearranged_matmul", projection_kernel) in seen, seen
    assert ("slots_cost", "array_api") in seen, seen
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@given(seed=st.integers(0, 2**16), r=st.integers(1, 3))
@settings(max_examples=10, deadline=None)
def test_slots_basis_spans_the_b_factors_of_the_side(seed, r):
    """Third mutation pass (fresh sample, seed 7): V is orthonormal and spans vec(B_k) for
    side="rows", vec(B_kᵀ) (the transposed sum's factors) for side="cols"."""
    from tqla.assignment import slots_basis

    rng = np.random.default_rng(seed)
    K = KroneckerSum(rng.standard_normal((r, 2, 3)), rng.standard_normal((r, 3, 4)))
    for side, B in (("rows", K.B), ("cols", np.transpose(K.B, (0, 2, 1)))):
        V = slots_basis(K, side)
        Bf = B.reshape(r, -1).T  # (m2·n2, r), one column per term
        assert V.shape == Bf.shape
        np.testing.assert_allclose(V.T @ V, np.eye(r), atol=1e-12)
        np.testing.assert_allclose(V @ (V.T @ Bf), Bf, atol=1e-10 * np.abs(Bf).max())
