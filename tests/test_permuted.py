"""Tests of tqla.permuted: monotone alternating minimisation, planted problems, products."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tqla.assignment as asg
import tqla.permuted as permuted_module
from tqla.kron import KroneckerShape, KroneckerSum, kron_svd
from tqla.permuted import PermutedKronecker, PermutedKroneckerApprox, permuted_kron


def _rel_err(W: np.ndarray, D: np.ndarray) -> float:
    return float(np.linalg.norm(W - D) / np.linalg.norm(W))


def _kron_err(W: np.ndarray, s, r: int) -> float:
    return _rel_err(W, kron_svd(W, s, r).to_dense())


def _check_result(P: PermutedKronecker, W: np.ndarray, to_numpy=np.asarray) -> None:
    M, N = W.shape
    rp, cp = to_numpy(P.row_perm), to_numpy(P.col_perm)
    assert rp.dtype == np.int64 and cp.dtype == np.int64
    np.testing.assert_array_equal(np.sort(rp), np.arange(M))
    np.testing.assert_array_equal(np.sort(cp), np.arange(N))
    errs = P.errors
    assert all(isinstance(e, float) for e in errs)
    assert len(errs) == P.n_iter + 1
    assert all(b <= a for a, b in zip(errs, errs[1:])), errs  # never increases
    D = to_numpy(P.to_dense())
    Kd = to_numpy(P.kron.to_dense())
    np.testing.assert_allclose(D, Kd[rp][:, cp])  # the documented convention
    tol = 1e-4 if W.dtype == np.float32 else 1e-8
    assert _rel_err(W, D) == pytest.approx(errs[-1], rel=tol, abs=tol)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------
@given(
    m1=st.integers(1, 6),
    n1=st.integers(1, 6),
    m2=st.integers(1, 3),
    n2=st.integers(1, 3),
    r=st.integers(1, 3),
    rule=st.sampled_from(["slots", "assign", "slots+assign"]),
    permute=st.sampled_from(["both", "rows", "cols"]),
    seed=st.integers(0, 2**31),
)
def test_errors_never_increase_and_beat_kron_svd(m1, n1, m2, n2, r, rule, permute, seed):
    s = KroneckerShape((m1, n1), (m2, n2))
    r = min(r, s.max_rank)
    W = np.random.default_rng(seed).standard_normal(s.matrix_shape)
    P = permuted_kron(W, s, r, rule=rule, permute=permute, n_iter=4, rng=seed)
    _check_result(P, W)
    e0 = _kron_err(W, s, r)
    assert P.errors[0] == pytest.approx(e0, rel=1e-9, abs=1e-12)
    assert P.errors[-1] <= e0 + 1e-12
    # sides that cannot gain are never permuted
    rows_on = permute in ("both", "rows") and m1 > 1 and m2 > 1
    cols_on = permute in ("both", "cols") and n1 > 1 and n2 > 1
    assert P.permuted == (rows_on, cols_on)
    if not rows_on:
        np.testing.assert_array_equal(P.row_perm, np.arange(s.matrix_shape[0]))
    if not cols_on:
        np.testing.assert_array_equal(P.col_perm, np.arange(s.matrix_shape[1]))


@pytest.mark.parametrize("rule", ["slots", "assign", "slots+assign"])
def test_backends_agree(backend, rule):
    s = KroneckerShape((6, 4), (2, 3))
    W = np.random.default_rng(3).standard_normal(s.matrix_shape)
    ref = permuted_kron(W, s, 2, rule=rule, n_iter=3, rng=0)
    P = permuted_kron(backend.asarray(W), s, 2, rule=rule, n_iter=3, rng=0)
    _check_result(P, W, backend.to_numpy)
    assert P.errors == pytest.approx(ref.errors, rel=1e-7)
    assert P.errors[-1] < P.errors[0]
    # results live on W's library: products, dense, transposes
    x = np.random.default_rng(1).standard_normal(s.matrix_shape[1])
    y = backend.to_numpy(P @ backend.asarray(x))
    np.testing.assert_allclose(y, backend.to_numpy(P.to_dense()) @ x, atol=1e-10)


def test_float32_input():
    s = KroneckerShape((16, 12), (2, 4))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape).astype(np.float32)
    P = permuted_kron(W, s, 3, n_iter=3)
    assert P.kron.dtype == np.float32
    _check_result(P, W)


# --------------------------------------------------------------------------------------
# Planted problems
# --------------------------------------------------------------------------------------
def _planted(seed: int, s: KroneckerShape, r: int, rows: bool, cols: bool):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((r, s.m1, s.n1))
    B = rng.standard_normal((r, s.m2, s.n2))
    K = KroneckerSum(A, B).to_dense()
    M, N = s.matrix_shape
    rp = rng.permutation(M) if rows else np.arange(M)
    cp = rng.permutation(N) if cols else np.arange(N)
    return K[rp][:, cp]


@pytest.mark.parametrize("side", ["rows", "cols"])
def test_planted_one_side_is_recovered(side):
    # a Kronecker product with one side scrambled: recovered exactly (with restarts; the
    # method is local, so this holds for most seeds, not all: see docs/permuted.md)
    s = KroneckerShape((5, 4), (2, 3))
    W = _planted(1, s, 1, side == "rows", side == "cols")
    assert _kron_err(W, s, 1) > 0.3
    P = permuted_kron(W, s, 1, permute=side, n_restarts=8, rng=0)
    assert P.errors[-1] < 1e-8
    np.testing.assert_allclose(P.to_dense(), W, atol=1e-8)


def test_planted_both_sides_fit_far_better():
    s = KroneckerShape((8, 6), (2, 3))
    W = _planted(1, s, 2, True, True)
    base = _kron_err(W, s, 2)
    P = permuted_kron(W, s, 2, n_iter=30, n_restarts=8, rng=0)
    _check_result(P, W)
    assert P.errors[-1] < 0.75 * base
    none = permuted_kron(W, s, 2, permute="none")
    assert none.errors == [pytest.approx(base)]


def test_restarts_keep_the_best_and_are_reproducible():
    s = KroneckerShape((6, 5), (2, 2))
    W = _planted(2, s, 1, True, True)
    a = permuted_kron(W, s, 1, n_restarts=4, rng=np.random.default_rng(7))
    b = permuted_kron(W, s, 1, n_restarts=4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.row_perm, b.row_perm)
    np.testing.assert_array_equal(a.col_perm, b.col_perm)
    assert a.errors == b.errors and a.restart_errors == b.restart_errors
    assert len(a.restart_errors) == 4 and a.errors[-1] == min(a.restart_errors)
    one = permuted_kron(W, s, 1, n_restarts=1, rng=7)
    assert a.errors[-1] <= one.errors[-1]
    assert one.restart_errors == [one.errors[-1]]


# --------------------------------------------------------------------------------------
# The result object
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    s = KroneckerShape((6, 4), (3, 2))
    W = np.random.default_rng(11).standard_normal(s.matrix_shape)
    return W, permuted_kron(W, s, 2, n_iter=3, rng=0)


def test_products_equal_dense(fitted):
    W, P = fitted
    M, N = W.shape
    D = P.to_dense()
    rng = np.random.default_rng(0)
    x, X, X3 = rng.standard_normal(N), rng.standard_normal((N, 3)), rng.standard_normal((2, N, 3))
    np.testing.assert_allclose(P @ x, D @ x, atol=1e-12)
    np.testing.assert_allclose(P @ X, D @ X, atol=1e-12)
    np.testing.assert_allclose(P @ X3, D @ X3, atol=1e-12)
    y, Y = rng.standard_normal(M), rng.standard_normal((4, M))
    np.testing.assert_allclose(y @ P, y @ D, atol=1e-12)
    np.testing.assert_allclose(Y @ P, Y @ D, atol=1e-12)
    np.testing.assert_allclose(P.T.to_dense(), D.T, atol=1e-12)
    np.testing.assert_allclose(P.T @ y, D.T @ y, atol=1e-12)
    with pytest.raises(ValueError, match="needs X with"):
        P @ np.ones(N + 1)
    with pytest.raises(ValueError, match="needs X with"):
        np.ones(M + 1) @ P


def test_counts_and_repr(fitted):
    W, P = fitted
    M, N = W.shape
    assert P.n_params == P.kron.n_params == 2 * (6 * 4 + 3 * 2)
    assert P.permuted == (True, True)
    assert P.n_perm_indices == M + N
    assert P.T.n_perm_indices == M + N and P.T.shape == (N, M)
    assert P.shape == (M, N) and P.rank == 2 and P.error == P.errors[-1]
    assert "PermutedKronecker" in repr(P)
    t = P.timings
    assert {"cost", "lsap", "svd", "total", "n_lsap", "host_copies"} <= set(t)
    assert t["n_lsap"] > 0 and t["total"] >= t["lsap"]
    assert t["host_copies"] == 0 and t["host_bytes"] == 0  # float64 costs solved in place
    rows_only = permuted_kron(W, P.kshape, 1, permute="rows", n_iter=1)
    assert rows_only.n_perm_indices == M


def test_permute_none_is_kron_svd():
    s = KroneckerShape((4, 3), (2, 2))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    P = permuted_kron(W, s, 2, permute="none")
    K = kron_svd(W, s, 2)
    np.testing.assert_allclose(P.to_dense(), K.to_dense())
    assert P.n_iter == 0 and P.n_perm_indices == 0 and P.permuted == (False, False)
    assert P.timings["n_lsap"] == 0


def test_embedding_side_with_unit_factor_is_never_permuted(monkeypatch):
    # 50257 rows with B of shape 1×2: only the columns may be permuted; a 50257² cost
    # matrix (20 GB) must never be built, whatever the rule.
    s = KroneckerShape((50257, 4), (1, 2))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape).astype(np.float32)
    sizes = []
    real = asg.lsap

    def spy(cost, **kw):
        sizes.append(cost.shape[0])
        return real(cost, **kw)

    monkeypatch.setattr(permuted_module, "lsap", spy)
    for rule in ("slots", "assign"):
        P = permuted_kron(W, s, 1, rule=rule, n_iter=2, max_cost_bytes=10**7)
        assert P.permuted == (False, True)
        np.testing.assert_array_equal(P.row_perm, np.arange(50257))
    assert sizes and max(sizes) <= 8


def test_memory_refusal_through_permuted_kron():
    s = KroneckerShape((30, 4), (2, 2))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    with pytest.raises(MemoryError, match="60×60 cost matrix would need"):
        permuted_kron(W, s, 1, rule="assign", max_cost_bytes=20_000)
    P = permuted_kron(W, s, 1, rule="slots", max_cost_bytes=100_000)  # 30×30 fits
    assert P.errors[-1] <= P.errors[0]


def test_callback_and_early_stop():
    s = KroneckerShape((8, 6), (2, 2))
    W = np.random.default_rng(4).standard_normal(s.matrix_shape)
    seen = []
    P = permuted_kron(W, s, 1, n_iter=5, tol=0, callback=lambda it, e: seen.append((it, e)))
    assert [it for it, _ in seen] == list(range(P.n_iter))
    assert [e for _, e in seen] == P.errors[1:]
    Q = permuted_kron(W, s, 1, n_iter=5, tol=0, callback=lambda it, e: True)
    assert Q.n_iter == 1


@pytest.mark.parametrize("solver", asg.available_solvers())
def test_solvers_give_the_same_result(solver):
    s = KroneckerShape((8, 6), (2, 3))
    W = np.random.default_rng(5).standard_normal(s.matrix_shape)
    ref = permuted_kron(W, s, 2, n_iter=3, solver="scipy")
    P = permuted_kron(W, s, 2, n_iter=3, solver=solver, warm_start=True)
    assert P.errors == pytest.approx(ref.errors, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rule": "greedy"}, ValueError, "rule must be one of"),
        ({"permute": "diag"}, ValueError, "permute must be one of"),
        ({"n_iter": -1}, ValueError, "n_iter must be >= 0"),
        ({"n_iter": 2.5}, TypeError, "n_iter must be an integer"),
        ({"n_restarts": 0}, ValueError, "n_restarts must be >= 1"),
        ({"tol": -1.0}, ValueError, "tol must be a number >= 0"),
        ({"tol": "x"}, TypeError, "tol must be a number"),
        ({"solver": "magic"}, ValueError, "solver must be one of"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"rng": "seed"}, TypeError, "rng must be None"),
    ],
)
def test_validation(kwargs, exc, match):
    s = KroneckerShape((4, 3), (2, 2))
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    with pytest.raises(exc, match=match):
        permuted_kron(W, s, 1, **kwargs)


def test_input_validation_like_kron_svd():
    s = KroneckerShape((4, 3), (2, 2))
    with pytest.raises(ValueError, match="does not match the Kronecker shape"):
        permuted_kron(np.ones((8, 7)), s, 1)
    with pytest.raises(TypeError, match="real floating dtype"):
        permuted_kron(np.ones((8, 6), dtype=int), s, 1)
    with pytest.raises(ValueError, match="finite"):
        permuted_kron(np.full((8, 6), np.nan), s, 1)
    with pytest.raises(ValueError, match="rank"):
        permuted_kron(np.ones((8, 6)), s, 5)
    with pytest.raises(TypeError, match="must be an array"):
        permuted_kron([[1.0]], s, 1)


def test_result_validation():
    K = KroneckerSum(np.ones((1, 2, 2)), np.ones((1, 2, 1)))
    with pytest.raises(ValueError, match="row_perm must be a permutation"):
        PermutedKronecker(K, np.zeros(4, dtype=np.int64), np.arange(2), [1.0], 0)
    with pytest.raises(TypeError, match="kron must be a KroneckerSum"):
        PermutedKronecker(np.eye(2), np.arange(4), np.arange(2), [1.0], 0)


def test_estimator_wrapper():
    s = KroneckerShape((6, 4), (2, 2))
    W = np.random.default_rng(6).standard_normal(s.matrix_shape)
    est = PermutedKroneckerApprox(s, 2, n_iter=3, rng=0).fit(W)
    ref = permuted_kron(W, s, 2, n_iter=3, rng=0)
    assert est.errors_ == ref.errors and est.n_iter_ == ref.n_iter
    np.testing.assert_array_equal(est.row_perm_, ref.row_perm)
    np.testing.assert_allclose(est.transform(), ref.to_dense())


def test_docs_examples_and_docstrings_run():
    import doctest
    import re
    from pathlib import Path

    import tqla.permuted

    page = Path(__file__).resolve().parent.parent / "docs" / "permuted.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)
    assert blocks
    namespace: dict = {"__name__": "docs_permuted"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/permuted.md [python block {i + 1}]", "exec"), namespace)
    for mod in (asg, tqla.permuted):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, mod.__name__


# --------------------------------------------------------------------------------------
# Issue 9, item 7
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [True, np.True_, 1, np.int64(1), "yes"])
def test_any_truthy_callback_value_stops(stop):
    s = KroneckerShape((8, 6), (2, 2))
    W = np.random.default_rng(4).standard_normal(s.matrix_shape)
    P = permuted_kron(W, s, 1, n_iter=5, tol=0, callback=lambda it, e: stop)
    assert P.n_iter == 1


@pytest.mark.parametrize("stop", [False, np.False_, 0, None])
def test_falsy_callback_values_continue(stop):
    s = KroneckerShape((8, 6), (2, 2))
    W = np.random.default_rng(4).standard_normal(s.matrix_shape)
    P = permuted_kron(W, s, 1, n_iter=3, tol=0, callback=lambda it, e: stop)
    ref = permuted_kron(W, s, 1, n_iter=3, tol=0)
    assert P.n_iter == ref.n_iter


@pytest.mark.parametrize("rule", ["slots", "assign", "slots+assign"])
def test_all_zero_w_has_zero_error(backend, rule):
    """W = 0 is approximated exactly by K = 0: every error is 0, not 1."""
    s = KroneckerShape((4, 3), (2, 2))
    W = backend.asarray(np.zeros(s.matrix_shape))
    P = permuted_kron(W, s, 2, rule=rule, n_iter=3)
    assert P.errors == [0.0] * len(P.errors)
    assert np.all(backend.to_numpy(P.to_dense()) == 0.0)  # exact: products of zeros
