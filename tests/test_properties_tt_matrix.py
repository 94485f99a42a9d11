"""tqla.tt_matrix stated whole: the TT-matrix of W is the TT-SVD of its interleaved tensor
(every argument handed on), products against the dense matrix with the contraction order
and each step's GEMM observable, costs = counted FLOPs, every message, tt_matrix_shapes
against a brute-force enumeration (fifth pass of issue 15)."""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tqla import TensorTrain, TTMatrix, tt_matrix, tt_matrix_shapes, tt_svd
from tqla.testing import strategies as tst

tmm = importlib.import_module("tqla.tt_matrix")
ttm = importlib.import_module("tqla.tt")


def _raises(exc, msg, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value) == msg


def _dense(cores):
    """W[i, j] = Π_k G_k[:, i_k, j_k, :] by brute force over the index tuples."""
    rm = [G.shape[1] for G in cores]
    cm = [G.shape[2] for G in cores]
    W = np.zeros((math.prod(rm), math.prod(cm)))
    for i, ii in enumerate(itertools.product(*map(range, rm))):
        for j, jj in enumerate(itertools.product(*map(range, cm))):
            v = np.ones((1, 1))
            for G, a, b in zip(cores, ii, jj):
                v = v @ G[:, a, b, :]
            W[i, j] = v[0, 0]
    return W


def _interleaved(W, rm, cm):
    """T[(i_1 j_1), …, (i_d j_d)] = W[i, j] (row-major multi-indices)."""
    T = np.zeros([m * n for m, n in zip(rm, cm)])
    for i, ii in enumerate(itertools.product(*map(range, rm))):
        for j, jj in enumerate(itertools.product(*map(range, cm))):
            T[tuple(a * n + b for a, b, n in zip(ii, jj, cm))] = W[i, j]
    return T


# --------------------------------------------------------------------------------------
# TTMatrix
# --------------------------------------------------------------------------------------
def test_tt_matrix_object_describes_itself():
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((4, 5, 2, 1))]
    T = TTMatrix(iter(cores))
    assert T.cores == cores and T.xp is np
    assert (T.row_modes, T.col_modes, T.shape, T.ranks) == ((2, 5), (3, 2), (10, 6), (1, 4, 1))
    assert T.n_params == 24 + 40 and T.dtype == np.float64
    assert repr(T) == ("TTMatrix(shape=(10, 6), row_modes=(2, 5), col_modes=(3, 2), "
                       "ranks=(1, 4, 1), n_params=64, dtype=float64)")  # fmt: skip
    tt = T.to_tensor_train()
    assert isinstance(tt, TensorTrain) and tt is T.to_tensor_train()
    assert [G.shape for G in tt.cores] == [(1, 6, 4), (4, 10, 1)]
    np.testing.assert_allclose(T.to_dense(), _dense(cores), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(T.T.to_dense(), T.to_dense().T)
    assert (T.T.row_modes, T.T.col_modes) == ((3, 2), (2, 5))
    assert T.norm() == pytest.approx(np.linalg.norm(_dense(cores)), rel=1e-12)
    T32 = T.astype(np.float32)
    assert all(G.dtype == np.float32 for G in T32.cores) and T32.dtype == np.float32
    for G, H in zip(T.cores, T32.cores):
        np.testing.assert_array_equal(H, G.astype(np.float32))


def test_tt_matrix_object_names_every_bad_input():
    _raises(ValueError, "cores must hold at least one core", TTMatrix, [])
    _raises(ValueError, "cores[0] must be 4-D, got 3-D array of shape (1, 2, 1)", TTMatrix,
            [np.ones((1, 2, 1))])  # fmt: skip
    assert TTMatrix([np.full((1, 2, 3, 1), np.nan)]).shape == (2, 3)  # a container: no check
    T = TTMatrix([np.ones((1, 2, 3, 1))])
    _raises(TypeError, "other must be a TTMatrix, got TensorTrain", T.inner, T.to_tensor_train())
    _raises(ValueError, "inner needs TT-matrices with the same row and column modes", T.inner,
            TTMatrix([np.ones((1, 3, 2, 1))]))  # fmt: skip
    tt = TensorTrain([np.ones((1, 6, 2)), np.ones((2, 4, 1))])
    _raises(ValueError, "row_modes (2, 2) and col_modes (2, 2) must multiply pairwise to the "
            "train's modes (6, 4)", TTMatrix.from_tensor_train, tt, (2, 2), (2, 2))  # fmt: skip
    _raises(ValueError, "row_modes (2,) and col_modes (3, 2) must multiply pairwise to the "
            "train's modes (6, 4)", TTMatrix.from_tensor_train, tt, (2,), (3, 2))  # fmt: skip
    _raises(ValueError, "row_modes must hold at least one mode, got ()",
            TTMatrix.from_tensor_train, tt, (), (3, 2))  # fmt: skip
    _raises(ValueError, "col_modes must hold at least one mode, got ()",
            TTMatrix.from_tensor_train, tt, (2, 2), ())  # fmt: skip
    _raises(TypeError, "X must be an array of the cores' library, got list; wrap it with "
            "numpy.asarray / torch.as_tensor first", T.matmat, [1.0, 2.0, 3.0])  # fmt: skip
    _raises(TypeError, "X must be an array of the cores' library, got float; wrap it with "
            "numpy.asarray / torch.as_tensor first", T.rmatmat, 1.0)  # fmt: skip
    _raises(TypeError, "X must have the cores' dtype float64, got float32", T.matmat,
            np.ones(3, dtype=np.float32))  # fmt: skip
    _raises(TypeError, "X must have the cores' dtype float64, got float32", T.rmatmat,
            np.ones(2, dtype=np.float32))  # fmt: skip
    for X in (np.ones(2), np.ones((2, 3)), np.array(1.0)):
        _raises(ValueError, "W @ X needs X with 3 rows (W has shape (2, 3)), got shape "
                f"{X.shape}", T.matmat, X)  # fmt: skip
    for X in (np.ones(3), np.ones((2, 3)), np.array(1.0)):
        _raises(ValueError, "X @ W needs X with 2 columns (W has shape (2, 3)), got shape "
                f"{X.shape}", T.rmatmat, X)  # fmt: skip
    _raises(ValueError, "k must be >= 1, got 0", T.matmat_costs, 0)
    _raises(TypeError, "k must be an integer, got float 1.0", T.matmat_costs, 1.0)


@given(tst.tt_matrices(max_d=3, max_mode=3, max_rank=3), st.integers(0, 2**16))
@settings(max_examples=25)
def test_products_inner_round_and_conversions_are_those_of_the_dense_matrix(T, seed):
    D = T.to_dense()
    np.testing.assert_allclose(D, _dense(T.cores), atol=1e-12 * (1 + np.abs(D).max()))
    M, N = T.shape
    rng = np.random.default_rng(seed)
    tol = 1e-10 * (1 + np.abs(D).sum())
    for X in (rng.standard_normal(N), rng.standard_normal((N, 2)),
              rng.standard_normal((3, 1, N, 2))):  # fmt: skip
        np.testing.assert_allclose(T @ X, D @ X, atol=tol)
        assert (T @ X).shape == (D @ X).shape
    for Y in (rng.standard_normal(M), rng.standard_normal((4, M)), rng.standard_normal((2, 3, M))):
        np.testing.assert_allclose(Y @ T, Y @ D, atol=tol)
        assert (Y @ T).shape == (Y @ D).shape
        np.testing.assert_allclose(T.rmatmat(Y), Y @ D, atol=tol)
    V = TTMatrix([rng.standard_normal(G.shape) for G in T.cores])
    assert T.inner(V) == pytest.approx(float(np.sum(D * V.to_dense())), rel=1e-9, abs=1e-9)
    back = TTMatrix.from_tensor_train(T.to_tensor_train(), T.row_modes, T.col_modes)
    assert [G.shape for G in back.cores] == [G.shape for G in T.cores]
    np.testing.assert_array_equal(back.to_dense(), D)
    R = T.round(ranks=2)
    ref = T.to_tensor_train().round(ranks=2)
    assert isinstance(R, TTMatrix) and (R.row_modes, R.col_modes) == (T.row_modes, T.col_modes)
    for G, H in zip(R.cores, ref.cores, strict=True):
        np.testing.assert_array_equal(G.reshape(H.shape), H)
    E = T.round(0.3)
    assert E.ranks == T.to_tensor_train().round(0.3).ranks


# --------------------------------------------------------------------------------------
# Costs and the contraction route
# --------------------------------------------------------------------------------------
def _torch_T(T):
    torch = pytest.importorskip("torch")
    return TTMatrix([torch.from_numpy(np.ascontiguousarray(G)) for G in T.cores])


@given(
    pairs=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3),
    rank=st.integers(1, 3),
    k=st.integers(1, 5),
)
@example(pairs=[(1, 6), (6, 1)], rank=2, k=3)  # left first far cheaper
@example(pairs=[(6, 1), (1, 6)], rank=2, k=3)  # right first far cheaper
@example(pairs=[(2, 2), (2, 2)], rank=2, k=1)  # a tie: left first
@settings(max_examples=4, deadline=None)  # FlopCounterMode is slow to enter
def test_costs_are_the_counted_multiply_adds_of_each_order(pairs, rank, k):
    """Both orders give W @ X; FlopCounterMode counts 2× the stated cost of each, the
    product runs the cheaper one and ties go left first."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    rm, cm = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    d = len(pairs)
    full = ttm.check_ranks(rank, [m * n for m, n in pairs])
    g = np.random.default_rng(0)
    T = _torch_T(TTMatrix([g.standard_normal((full[t], rm[t], cm[t], full[t + 1]))
                           for t in range(d)]))  # fmt: skip
    left, right = T.matmat_costs(k)
    ls, rs = tmm._step_costs(rm, cm, full, k)
    assert (left, right) == (sum(ls), sum(rs))
    for t in range(d):  # the definition, step by step
        core = full[t] * rm[t] * cm[t] * full[t + 1]
        assert ls[t] == k * core * math.prod(rm[:t]) * math.prod(cm[t + 1 :])
        assert rs[t] == k * core * math.prod(cm[:t]) * math.prod(rm[t + 1 :])
    assert T.matmat_costs() == T.matmat_costs(1)
    assert T.matmat_order(k) == ("left_first" if left <= right else "right_first")
    assert T.matmat_order() == T.matmat_order(1)
    X = torch.from_numpy(g.standard_normal((math.prod(cm), k)))

    def flops(order=None):
        mp = pytest.MonkeyPatch()
        if order:
            mp.setattr(TTMatrix, "matmat_order", lambda self, k=1: order)
        try:
            with FlopCounterMode(display=False) as c:
                T.matmat(X)
        finally:
            mp.undo()
        return c.get_total_flops()

    assert (flops("left_first"), flops("right_first")) == (2 * left, 2 * right)
    assert flops() == 2 * min(left, right)
    Y = torch.from_numpy(g.standard_normal((k, math.prod(rm))))
    with FlopCounterMode(display=False) as c:
        T.rmatmat(Y)
    assert c.get_total_flops() == 2 * min(T.T.matmat_costs(k))


def test_rows_apply_hands_the_cores_in_the_order_it_chose(monkeypatch):
    seen = []
    real = tmm._apply_left_first

    def spy(xp, cores, X):
        seen.append((cores, X.shape))
        return real(xp, cores, X)

    monkeypatch.setattr(tmm, "_apply_left_first", spy)
    rng = np.random.default_rng(0)
    T = TTMatrix([rng.standard_normal((1, 1, 6, 2)), rng.standard_normal((2, 6, 1, 1))])
    assert T.matmat_order(3) == "left_first" and T.T.matmat_order(3) == "right_first"
    X = rng.standard_normal((6, 3))
    np.testing.assert_allclose(T @ X, T.to_dense() @ X, atol=1e-10)
    (cores, shape), = seen  # fmt: skip
    assert cores is T.cores and shape == (3, 6)
    seen.clear()
    Tt = T.T
    np.testing.assert_allclose(Tt @ X, Tt.to_dense() @ X, atol=1e-10)
    (cores, shape), = seen  # fmt: skip
    want = [np.transpose(G, (3, 1, 2, 0)) for G in reversed(Tt.cores)]
    assert shape == (3, 6) and len(cores) == 2
    for G, H in zip(cores, want):
        np.testing.assert_array_equal(G, H)


class _Spy:
    """NumPy namespace that records the operand shapes of each matmul."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b):
        self.calls.append((a.shape, b.shape))
        return np.matmul(a, b)


@given(
    pairs=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 40)), min_size=1, max_size=3),
    rank=st.integers(1, 2),
    b=st.integers(1, 2),
)
@example(pairs=[(2, 2), (2, 32)], rank=2, b=1)  # right width exactly BATCHED_MIN: batched
@example(pairs=[(2, 2), (2, 31)], rank=2, b=2)  # one narrower: the transposed state
@settings(max_examples=20)
def test_each_step_is_the_gemm_its_right_width_asks_for(pairs, rank, b):
    """Core t with n_{t+1}⋯n_d = w on its right: one (rows, r·n)·(r·n, m·r') GEMM when
    w = 1, a batched (m·r', r·n)·(rows, r·n, w) GEMM when w ≥ BATCHED_MIN, else one
    (rows·w, r·n)·(r·n, m·r') GEMM on the transposed state; the result is x·Wᵀ."""
    rm, cm = [p[0] for p in pairs], [p[1] for p in pairs]
    assume(math.prod(cm) <= 2000)
    full = ttm.check_ranks(rank, [m * n for m, n in pairs])
    g = np.random.default_rng(1)
    cores = [g.standard_normal((full[t], rm[t], cm[t], full[t + 1])) for t in range(len(pairs))]
    X = g.standard_normal((b, math.prod(cm)))
    spy = _Spy()
    Y = tmm._apply_left_first(spy, cores, X)
    D = TTMatrix(cores).to_dense()
    np.testing.assert_allclose(Y, X @ D.T, atol=1e-9 * (1 + np.abs(X).sum()) * np.abs(D).max())
    want, rows = [], b
    for t, (m, n) in enumerate(pairs):
        r, r2, w = full[t], full[t + 1], math.prod(cm[t + 1 :])
        if w == 1:
            want.append(((rows, r * n), (r * n, m * r2)))
        elif w >= tmm.BATCHED_MIN:
            want.append(((m * r2, r * n), (rows, r * n, w)))
        else:
            want.append(((rows * w, r * n), (r * n, m * r2)))
        rows *= m
    assert spy.calls == want


# --------------------------------------------------------------------------------------
# tt_matrix = TT-SVD of the interleaved tensor
# --------------------------------------------------------------------------------------
@given(
    pairs=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_interleave_is_the_definition(pairs, seed):
    rm, cm = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    W = np.random.default_rng(seed).standard_normal((math.prod(rm), math.prod(cm)))
    T = tmm._interleave(np, W.T.copy().T, rm, cm)  # a Fortran-ordered input too
    np.testing.assert_array_equal(T, _interleaved(W, rm, cm))
    assert T.flags.c_contiguous


def test_tt_matrix_hands_every_argument_to_the_sweep(monkeypatch):
    calls = []
    real = ttm._sweep
    monkeypatch.setattr(tmm, "_sweep", lambda *a: calls.append(a) or real(*a))
    W = np.random.default_rng(0).standard_normal((6, 8))
    n2 = float(np.sum(W**2))
    cases = [
        ({}, None, None, 0.0, "gram"),
        ({"ranks": 3}, (1, 3, 1), None, 0.0, "gram"),
        ({"ranks": [1, 4, 1], "method": "svd"}, (1, 4, 1), None, 0.0, "svd"),
        ({"eps": 0.3}, None, 0.3, n2, "gram"),
        ({"eps": 1e-9}, None, 1e-9, n2, "svd"),
        ({"eps": 1e-3}, None, 1e-3, n2, "gram"),  # above 30·√ε of float64 (not of float32)
        ({"eps": 1e-9, "method": "gram"}, None, 1e-9, n2, "gram"),
    ]
    for kw, full, eps, norm2, method in cases:
        calls.clear()
        T = tt_matrix(W, (2, 3), (4, 2), **kw)
        (xp, X, modes, f, e, n, m), = calls  # fmt: skip
        assert xp is np and modes == (8, 6) and (f, e, m) == (full, eps, method)
        np.testing.assert_array_equal(X, _interleaved(W, (2, 3), (4, 2)))
        assert n == pytest.approx(norm2, rel=1e-13, abs=0.0)
        ref = tt_svd(_interleaved(W, (2, 3), (4, 2)), ranks=full, eps=eps, method=method)
        assert (T.row_modes, T.col_modes, T.ranks) == ((2, 3), (4, 2), ref.ranks)
        for G, H in zip(T.cores, ref.cores, strict=True):
            np.testing.assert_array_equal(G, H.reshape(G.shape))
    torch = pytest.importorskip("torch")
    Wt = torch.from_numpy(W).requires_grad_(True)
    calls.clear()
    T = tt_matrix(Wt, (2, 3), (4, 2), eps=0.3)
    (xp, X, modes, f, e, n, m), = calls  # fmt: skip
    assert xp is np and isinstance(X, np.ndarray) and (f, e, m) == (None, 0.3, "gram")
    assert n == pytest.approx(n2, rel=1e-13)
    assert all(isinstance(G, torch.Tensor) and G.dtype == torch.float64 for G in T.cores)
    ref = tt_matrix(W, (2, 3), (4, 2), eps=0.3)
    for G, H in zip(T.cores, ref.cores):
        np.testing.assert_array_equal(G.detach().numpy(), H)


def test_tt_matrix_half_and_float32_inputs(monkeypatch):
    torch = pytest.importorskip("torch")
    seen = []
    real = ttm._sweep
    monkeypatch.setattr(tmm, "_sweep", lambda *a: seen.append((a[1].dtype, a[6])) or real(*a))
    W = np.random.default_rng(2).standard_normal((6, 4))
    for half in (torch.float16, torch.bfloat16):
        T = tt_matrix(torch.from_numpy(W).to(half), (2, 3), (2, 2), ranks=2)
        assert T.dtype == half and all(G.dtype == half for G in T.cores)
        assert seen[-1][0] == np.float32
    edge32 = 30.0 * math.sqrt(float(np.finfo(np.float32).eps))
    T = tt_matrix(W.astype(np.float32), (2, 3), (2, 2), eps=edge32 * 0.99)
    assert T.dtype == np.float32 and seen[-1] == (np.float32, "svd")
    tt_matrix(W.astype(np.float32), (2, 3), (2, 2), eps=edge32)
    assert seen[-1] == (np.float32, "gram")


def test_tt_matrix_names_every_bad_argument():
    W = np.ones((6, 4))
    _raises(ValueError, "W must be a 2-D matrix, got shape (6, 4, 1)", tt_matrix,
            np.ones((6, 4, 1)), (2, 3), (2, 2))  # fmt: skip
    _raises(TypeError, "W must be an array (NumPy, CuPy, torch, ...), got list; wrap it with "
            "numpy.asarray first", tt_matrix, [[1.0]], (1,), (1,))  # fmt: skip
    _raises(ValueError, "row_modes (2, 2) must multiply to the dimension 6, but their product "
            "is 4", tt_matrix, W, (2, 2), (2, 2))  # fmt: skip
    _raises(ValueError, "col_modes (2, 3) must multiply to the dimension 4, but their product "
            "is 6", tt_matrix, W, (2, 3), (2, 3))  # fmt: skip
    _raises(ValueError, "row_modes (2, 3) and col_modes (4,) must have the same length (one "
            "pair per core)", tt_matrix, W, (2, 3), (4,))  # fmt: skip
    _raises(ValueError, "give ranks= or eps=, not both (ranks fix the ranks, eps chooses them)",
            tt_matrix, W, (2, 3), (2, 2), ranks=1, eps=0.5)  # fmt: skip
    _raises(ValueError, "method must be one of ('auto', 'gram', 'svd'), got 'x'", tt_matrix, W,
            (2, 3), (2, 2), method="x")  # fmt: skip
    _raises(ValueError, "ranks[0] = 5 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(1·4, 6·1) = 4 for modes (4, 6) (largest useful ranks: (4,))",
            tt_matrix, W, (2, 3), (2, 2), ranks=[5])  # fmt: skip
    _raises(ValueError, "W must be finite, but it holds NaN or infinity", tt_matrix,
            np.full((6, 4), np.nan), (2, 3), (2, 2))  # fmt: skip


# --------------------------------------------------------------------------------------
# tt_matrix_shapes
# --------------------------------------------------------------------------------------
def _factorizations(n, d, lo):
    return [t for t in itertools.product(range(lo, n + 1), repeat=d) if math.prod(t) == n]


@given(n=st.integers(1, 40), d=st.integers(1, 3), lo=st.integers(1, 3))
def test_ordered_factorizations_are_every_ordered_split(n, d, lo):
    assert tmm._ordered_factorizations(n, d, lo) == _factorizations(n, d, lo)


@given(M=st.integers(1, 24), N=st.integers(1, 24), d=st.integers(1, 3),
       lo=st.integers(1, 3), rank=st.one_of(st.integers(1, 5), st.just([2, 3])))  # fmt: skip
@example(M=12, N=8, d=2, lo=2, rank=2)
@example(M=16, N=16, d=3, lo=2, rank=[2, 3])
@settings(max_examples=30)
def test_tt_matrix_shapes_is_every_fitting_split_sorted(M, N, d, lo, rank):
    rows = tt_matrix_shapes(M, N, rank, d=d, min_mode=lo)
    want = []
    for rm in _factorizations(M, d, lo):
        for cm in _factorizations(N, d, lo):
            modes = [a * b for a, b in zip(rm, cm)]
            try:
                full = ttm.check_ranks(rank, modes, "rank")
            except ValueError:
                continue
            n_params = sum(full[k] * modes[k] * full[k + 1] for k in range(d))
            T = TTMatrix([np.ones((full[k], rm[k], cm[k], full[k + 1])) for k in range(d)])
            want.append(tmm.TTMatrixShape(rm, cm, full, n_params, min(T.matmat_costs(1))))
    want.sort(key=lambda s: (s.n_params, s.matvec_macs, s.row_modes, s.col_modes))
    assert rows == want
    assert all(type(r) is tmm.TTMatrixShape for r in rows)
    if want:
        assert tt_matrix_shapes(M, N, rank, d=d, min_mode=lo, max_results=1) == want[:1]


def test_tt_matrix_shapes_defaults_and_messages():
    assert tt_matrix_shapes(16, 8, 2) == tt_matrix_shapes(16, 8, 2, d=3, min_mode=2)
    assert all(len(r.row_modes) == 3 and min(r.row_modes + r.col_modes) >= 2
               for r in tt_matrix_shapes(16, 8, 2))  # fmt: skip
    full = tt_matrix_shapes(64, 64, 4)
    assert len(full) > 3 and tt_matrix_shapes(64, 64, 4, max_results=3) == full[:3]
    for name in ("M", "N", "d", "min_mode", "max_results"):
        args = {"M": 8, "N": 8, "rank": 2, name: 0}
        _raises(ValueError, f"{name} must be >= 1, got 0", tt_matrix_shapes, **args)
    _raises(TypeError, "M must be an integer, got float 8.0", tt_matrix_shapes, 8.0, 8, 2)
    _raises(TypeError, "N must be an integer, got str '8'", tt_matrix_shapes, 8, "8", 2)
    _raises(TypeError, "d must be an integer, got float 2.0", tt_matrix_shapes, 8, 8, 2, d=2.0)


def test_every_result_stays_on_the_device_of_its_input():
    """array_api_strict's second device (the route of a CUDA tensor): the fit, products,
    transpose, rounding and the dense matrix stay on the input's device."""
    xs = pytest.importorskip("array_api_strict")
    from tqla import permuted_tt
    from tqla._array import to_numpy

    dev = xs.Device("device1")
    Wn = np.random.default_rng(0).standard_normal((6, 8))
    W = xs.asarray(Wn, device=dev)
    for kw in ({"ranks": 2}, {"eps": 0.4}, {}):
        T, R = tt_matrix(W, (2, 3), (4, 2), **kw), tt_matrix(Wn, (2, 3), (4, 2), **kw)
        assert all(G.device == dev for G in T.cores) and T.ranks == R.ranks
        np.testing.assert_allclose(to_numpy(T.to_dense()), R.to_dense(), atol=1e-9)
    x, y = np.ones((8, 3)), np.ones((2, 6))
    for out, ref in ((T @ xs.asarray(x, device=dev), R @ x),
                     (T.rmatmat(xs.asarray(y, device=dev)), y @ R.to_dense()),
                     (T.T.to_dense(), R.to_dense().T), (T.round(ranks=1).to_dense(),
                                                        R.round(ranks=1).to_dense())):  # fmt: skip
        assert out.device == dev
        np.testing.assert_allclose(to_numpy(out), ref, atol=1e-9)
    P = permuted_tt(W, (2, 3), (4, 2), ranks=2, n_iter=2)
    Q = permuted_tt(Wn, (2, 3), (4, 2), ranks=2, n_iter=2)
    assert P.to_dense().device == dev and P.errors == pytest.approx(Q.errors, rel=1e-9)
