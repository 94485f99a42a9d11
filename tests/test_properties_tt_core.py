"""tqla.tt stated whole: TT-SVD against a reference sweep written from the definition (ranks,
tolerance, sign rule, identity shortcut), every split route, every check and message, the
arguments each step hands on, TensorTrain against dense algebra (fifth pass of issue 15)."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tqla import TensorTrain, rank_bounds, tt_svd
from tqla.testing import strategies as tst

ttm = importlib.import_module("tqla.tt")
EPS64 = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------
# A reference TT-SVD from the definition (module docstring and tt_svd's docstring)
# --------------------------------------------------------------------------------------
def _signs(A):
    """±1 per column making the entry of largest magnitude (first on ties) positive."""
    idx = np.argmax(np.abs(A), axis=0)
    return np.where(A[idx, np.arange(A.shape[1])] < 0, -1.0, 1.0)


def _ref_rank(s2, cap, delta2):
    cap = max(1, min(cap, len(s2)))
    if delta2 is None:
        return cap
    for r in range(1, cap + 1):
        if s2.sum() - s2[:r].sum() <= delta2:
            return r
    return cap


def ref_split(C, cap, delta2, method):
    rows, cols = C.shape
    if method != "svd" and rows <= cols and delta2 is None and cap >= rows:
        return np.eye(rows), C
    U, s, Vt = np.linalg.svd(C, full_matrices=False)
    r = _ref_rank(s**2, cap, delta2)
    # Gram route on the CᵀC side: the signs of the right singular vectors decide
    sg = _signs(U[:, :r]) if (method == "svd" or rows <= cols) else _signs(Vt[:r].T)
    Q = U[:, :r] * sg
    return Q, Q.T @ C


def ref_tt_svd(X, full=None, eps=None, method="gram"):
    modes = X.shape
    d = len(modes)
    if d == 1:
        return [X.reshape(1, -1, 1)]
    delta2 = None if eps is None else eps**2 * float(np.sum(X**2)) / (d - 1)
    bounds = rank_bounds(modes)
    C, r_prev, cores = X, 1, []
    for k in range(d - 1):
        C = C.reshape(r_prev * modes[k], -1)
        Q, C = ref_split(C, full[k + 1] if full else bounds[k], delta2, method)
        cores.append(Q.reshape(r_prev, modes[k], -1))
        r_prev = Q.shape[1]
    cores.append(C.reshape(r_prev, modes[-1], 1))
    return cores


def _margin_ok(X, eps, method):
    """The tolerance is not within rounding of a discarded energy at any step."""
    modes = X.shape
    d = len(modes)
    if d == 1:
        return True
    delta2 = eps**2 * float(np.sum(X**2)) / (d - 1)
    C, r_prev = X, 1
    for k in range(d - 1):
        C = C.reshape(r_prev * modes[k], -1)
        s2 = np.linalg.svd(C, compute_uv=False) ** 2
        tails = s2.sum() - np.cumsum(s2)
        if np.any(np.abs(tails - delta2) <= 1e-6 * (s2.sum() + 1e-300)):
            return False
        Q, C = ref_split(C, rank_bounds(modes)[k], delta2, method)
        r_prev = Q.shape[1]
    return True


@st.composite
def _reachable_ranks(draw, modes):
    d = len(modes)
    full = [1] * (d + 1)
    for k in range(1, d):
        full[k] = draw(st.integers(1, full[k - 1] * modes[k - 1]))
    for k in range(d - 1, 0, -1):
        full[k] = min(full[k], modes[k] * full[k + 1])
    return tuple(full)


modes_st = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@given(modes=modes_st, seed=st.integers(0, 2**16), data=st.data(),
       how=st.sampled_from(["exact", "ranks", "eps"]),
       method=st.sampled_from(["gram", "svd", "auto"]))  # fmt: skip
@example(modes=(3, 2, 4), seed=0, data=None, how="exact", method="gram")
@example(modes=(4, 2, 3), seed=1, data=None, how="exact", method="gram")
@example(modes=(2, 6, 2), seed=2, data=None, how="eps", method="gram")
@example(modes=(6, 2, 2), seed=3, data=None, how="eps", method="gram")
@example(modes=(2, 3, 4), seed=4, data=None, how="ranks", method="svd")
@settings(max_examples=30, deadline=None)
def test_tt_svd_is_the_reference_sweep(modes, seed, data, how, method):
    """Every core (ranks, values, signs) is the one the definition gives; cores are
    C-contiguous NumPy arrays of X's dtype."""
    X = np.random.default_rng(seed).standard_normal(modes)
    full = eps = None
    if how == "ranks":
        full = data.draw(_reachable_ranks(modes)) if data is not None else (1, 2, 3, 1)
    elif how == "eps":
        eps = data.draw(st.floats(0.05, 0.9)) if data is not None else 0.4
        assume(_margin_ok(X, eps, "gram" if method == "auto" else method))
    out = tt_svd(X, ranks=full, eps=eps, method=method)
    ref = ref_tt_svd(X, full, eps, "gram" if method == "auto" else method)
    assert out.ranks == (1, *(G.shape[2] for G in ref))
    for G, R in zip(out.cores, ref, strict=True):
        assert type(G) is np.ndarray and G.dtype == np.float64 and G.flags.c_contiguous
        np.testing.assert_allclose(G, R, atol=1e-7 * (1 + np.abs(R).max()))
    if how == "exact":
        np.testing.assert_allclose(out.to_dense(), X, atol=1e-9)


@given(tst.tensor_trains(max_d=4, max_mode=4, max_rank=3), st.sampled_from(["gram", "svd"]))
@settings(max_examples=20, deadline=None)
def test_tt_svd_recovers_a_train_at_its_ranks_and_at_a_tiny_tolerance(tt, method):
    X = tt.to_dense()
    tol = 1e-8 * (1 + np.linalg.norm(X))
    out = tt_svd(X, ranks=tt.ranks, method=method)
    assert out.ranks == tt.ranks
    np.testing.assert_allclose(out.to_dense(), X, atol=tol)
    small = tt_svd(X, eps=1e-6, method="svd")
    assert small.ranks == tt.ranks  # the exact TT ranks of generic cores, none smaller
    assert np.linalg.norm(small.to_dense() - X) <= 1e-6 * np.linalg.norm(X)


def test_tt_svd_hands_every_argument_to_the_sweep(monkeypatch):
    """(library, tensor, modes, full ranks, eps, ‖X‖² or 0, resolved method) reach _sweep."""
    calls = []
    real = ttm._sweep

    def spy(xp, X, modes, full, eps, norm2, method):
        calls.append((xp, X, modes, full, eps, norm2, method))
        return real(xp, X, modes, full, eps, norm2, method)

    monkeypatch.setattr(ttm, "_sweep", spy)
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    n2 = float(np.sum(X**2))
    cases = [
        ({}, None, None, 0.0, "gram"),
        ({"ranks": 2}, (1, 2, 2, 1), None, 0.0, "gram"),
        ({"ranks": [1, 2, 3, 1], "method": "svd"}, (1, 2, 3, 1), None, 0.0, "svd"),
        ({"eps": 0.25}, None, 0.25, n2, "gram"),
        ({"eps": 1e-9}, None, 1e-9, n2, "svd"),  # auto: below 30·√ε of float64
        ({"eps": 1e-3}, None, 1e-3, n2, "gram"),  # above 30·√ε of float64 (not of float32)
        ({"eps": 1e-9, "method": "gram"}, None, 1e-9, n2, "gram"),
    ]
    for kw, full, eps, norm2, method in cases:
        calls.clear()
        tt_svd(X, **kw)
        (xp, Xs, modes, f, e, n, m), = calls  # fmt: skip
        assert xp is np and Xs is X and modes == (3, 4, 5)
        assert (f, e, m) == (full, eps, method)
        assert n == pytest.approx(norm2, rel=1e-13, abs=0.0)
    torch = pytest.importorskip("torch")
    T = torch.from_numpy(X).requires_grad_(True)
    calls.clear()
    out = tt_svd(T, eps=0.25)
    (xp, Xs, modes, f, e, n, m), = calls  # fmt: skip
    # a CPU tensor: the same sweep on its NumPy view (no copy), cores back as tensors
    assert xp is np and np.shares_memory(Xs, X) and (f, e, m) == (None, 0.25, "gram")
    assert n == pytest.approx(n2, rel=1e-13)
    assert all(isinstance(G, torch.Tensor) and G.dtype == torch.float64 for G in out.cores)
    calls.clear()
    tt_svd(T, ranks=2)
    assert calls[0][3:] == ((1, 2, 2, 1), None, 0.0, "gram")  # no norm without eps


def test_auto_method_switches_below_thirty_root_machine_epsilon():
    for dt, mach in ((np.float64, EPS64), (np.float32, float(np.finfo(np.float32).eps))):
        edge = 30.0 * math.sqrt(mach)
        assert ttm._dtype_eps(np, np.dtype(dt)) == mach
        assert ttm._auto_method(np, np.dtype(dt), None) == "gram"
        assert ttm._auto_method(np, np.dtype(dt), edge) == "gram"
        assert ttm._auto_method(np, np.dtype(dt), edge * (1 - 1e-9)) == "svd"
        assert ttm._auto_method(np, np.dtype(dt), 0.5) == "gram"


def test_float32_and_half_inputs_keep_their_dtype_and_auto_uses_float32_epsilon(monkeypatch):
    methods = []
    real = ttm._sweep
    monkeypatch.setattr(ttm, "_sweep", lambda *a: methods.append((a[1].dtype, a[6])) or real(*a))
    X = np.random.default_rng(1).standard_normal((3, 4, 5))
    edge32 = 30.0 * math.sqrt(float(np.finfo(np.float32).eps))
    out = tt_svd(X.astype(np.float32), eps=edge32 * 0.99)
    assert out.dtype == np.float32 and methods[-1] == (np.float32, "svd")
    tt_svd(X.astype(np.float32), eps=edge32)
    assert methods[-1] == (np.float32, "gram")
    torch = pytest.importorskip("torch")
    for half in (torch.float16, torch.bfloat16):
        H = torch.from_numpy(X).to(half)
        out = tt_svd(H, ranks=[2, 3])
        assert all(G.dtype == half for G in out.cores) and out.dtype == half
        assert methods[-1][0] == np.float32  # computed in float32
        ref = tt_svd(H.float(), ranks=[2, 3])
        for G, R in zip(out.cores, ref.cores):
            torch.testing.assert_close(G, R.to(half))


# --------------------------------------------------------------------------------------
# The pieces of a split
# --------------------------------------------------------------------------------------
@given(
    e=st.lists(st.floats(-1.0, 10.0), min_size=1, max_size=8),
    cap=st.integers(-2, 10),
    frac=st.one_of(st.none(), st.floats(0.0, 1.2)),
)
@example(e=[4.0, 1.0, 0.0], cap=3, frac=0.0)
@example(e=[4.0, 1.0, -0.5], cap=2, frac=None)
def test_choose_rank_is_the_smallest_rank_whose_discarded_energy_fits(e, cap, frac):
    e = np.array(e)
    total = float(np.clip(e, 0, None).sum()) + 0.5  # energies beyond the computed ones
    delta2 = None if frac is None else frac * total
    c = max(1, min(cap, len(e)))
    if delta2 is None:
        want = c
    else:
        kept = np.cumsum(np.clip(e[:c], 0, None))
        fits = [r for r in range(1, c + 1) if total - kept[r - 1] <= delta2]
        want = min(fits, default=c)
    assert ttm._choose_rank(e, total, cap, delta2) == want


def test_choose_rank_counts_a_discarded_energy_equal_to_the_budget_as_fitting():
    e = np.array([4.0, 1.0, 0.5])
    assert ttm._choose_rank(e, 5.5, 3, 1.5) == 1  # tail 1.5 at rank 1: exactly the budget
    assert ttm._choose_rank(e, 5.5, 3, 1.4) == 2
    assert ttm._choose_rank(e, 5.5, 3, 0.0) == 3
    assert ttm._choose_rank(e, 6.0, 2, 0.1) == 2  # nothing fits below the cap: the cap
    assert ttm._choose_rank(e, 5.5, 0, None) == 1 and ttm._choose_rank(e, 5.5, 9, None) == 3
    assert type(ttm._choose_rank(e, 5.5, 3, 1.5)) is int


@given(rows=st.integers(1, 6), cols=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_col_signs_make_the_largest_entry_of_each_column_positive(rows, cols, seed):
    Q = np.random.default_rng(seed).standard_normal((rows, cols))
    s = ttm._col_signs(np, Q)
    assert s.shape == (1, cols)
    np.testing.assert_array_equal(s[0], _signs(Q))
    P = Q * s
    assert np.all(P[np.argmax(np.abs(P), axis=0), np.arange(cols)] > 0)


def test_col_signs_of_a_zero_column_and_of_ties():
    Q = np.array([[0.0, -2.0, 1.0], [0.0, 2.0, -3.0]])
    np.testing.assert_array_equal(ttm._col_signs(np, Q), [[1.0, -1.0, -1.0]])


@pytest.mark.parametrize("n,cap", [(8, 2), (8, 3), (12, 3), (5, 1), (5, 2), (3, 9)])
def test_top_eig_returns_the_top_pairs_and_the_trace_by_either_route(n, cap, monkeypatch):
    import scipy.linalg

    A = np.random.default_rng(n * 10 + cap).standard_normal((n, n + 2))
    G = A @ A.T
    calls = []
    real = scipy.linalg.eigh

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(scipy.linalg, "eigh", spy)
    lam, V, total = ttm._top_eig(np, G, cap)
    c = max(1, min(cap, n))
    w = np.linalg.eigvalsh(G)[::-1][:c]
    assert lam.dtype == np.float64 and lam.shape == (c,) and V.shape == (n, c)
    np.testing.assert_allclose(lam, w, rtol=1e-10)
    np.testing.assert_allclose(G @ V, V * lam, atol=1e-9 * w[0])
    assert total == pytest.approx(np.trace(G), rel=1e-12)
    # only the wanted pairs (SciPy's MRRR) when they are at most a quarter of the spectrum
    want = [{"subset_by_index": [n - c, n - 1], "driver": "evr", "check_finite": False}]
    assert calls == (want if 4 * c <= n else [])


def test_top_eig_of_other_libraries_sums_the_clipped_spectrum():
    torch = pytest.importorskip("torch")
    import array_api_compat

    G = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1e-3]], dtype=torch.float64)
    xp = array_api_compat.array_namespace(G)
    lam, V, total = ttm._top_eig(xp, G, 2)
    np.testing.assert_allclose(lam, [2.0, 1.0])
    assert total == 3.0  # the negative rounding eigenvalue is clipped
    assert isinstance(V, torch.Tensor) and tuple(V.shape) == (3, 2)


@given(rows=st.integers(1, 7), cols=st.integers(1, 7), seed=st.integers(0, 2**16),
       cap=st.integers(1, 8), frac=st.one_of(st.none(), st.floats(0.01, 0.9)),
       method=st.sampled_from(["gram", "svd"]))  # fmt: skip
@example(rows=3, cols=5, seed=0, cap=3, frac=None, method="gram")  # the identity shortcut
@example(rows=3, cols=5, seed=0, cap=2, frac=None, method="gram")
@example(rows=6, cols=2, seed=0, cap=2, frac=None, method="gram")
@example(rows=6, cols=3, seed=1, cap=3, frac=0.3, method="gram")
@example(rows=3, cols=6, seed=2, cap=3, frac=0.3, method="svd")
@settings(max_examples=60)
def test_split_is_the_truncated_svd_with_the_sign_rule(rows, cols, seed, cap, frac, method):
    C = np.random.default_rng(seed).standard_normal((rows, cols))
    s2 = np.linalg.svd(C, compute_uv=False) ** 2
    delta2 = None if frac is None else frac * s2.sum()
    if delta2 is not None:
        assume(np.all(np.abs(s2.sum() - np.cumsum(s2) - delta2) > 1e-8 * s2.sum()))
    Q, B, dropped = ttm._split(np, C, cap, delta2, method)
    Qr, Br = ref_split(C, cap, delta2, method)
    r = Qr.shape[1]
    assert Q.shape == (rows, r) and B.shape == (r, cols)
    np.testing.assert_allclose(Q, Qr, atol=1e-8)
    np.testing.assert_allclose(B, Br, atol=1e-8 * np.sqrt(s2.sum()))
    np.testing.assert_allclose(Q.T @ Q, np.eye(r), atol=1e-10)
    assert dropped == pytest.approx(np.sum((C - Q @ B) ** 2), rel=1e-7, abs=1e-10 * s2.sum())
    if method == "gram" and rows <= cols and delta2 is None and cap >= rows:
        assert B is C and dropped == 0.0  # no Gram matrix, no product


def test_split_uses_the_small_gram_matrix_of_each_side(monkeypatch):
    """rows ≤ cols: eigenpairs of C·Cᵀ (rows × rows); rows > cols: of Cᵀ·C (cols × cols),
    then one QR of C·V; the SVD route computes no eigenpairs."""
    sizes, qrs = [], []
    real_eig, real_qr = ttm._top_eig, np.linalg.qr
    monkeypatch.setattr(ttm, "_top_eig", lambda xp, G, cap: sizes.append(G.shape) or
                        real_eig(xp, G, cap))  # fmt: skip
    monkeypatch.setattr(np.linalg, "qr", lambda A: qrs.append(A.shape) or real_qr(A))
    rng = np.random.default_rng(0)
    ttm._split(np, rng.standard_normal((3, 7)), 2, None, "gram")
    ttm._split(np, rng.standard_normal((7, 3)), 2, None, "gram")
    ttm._split(np, rng.standard_normal((7, 3)), 2, None, "svd")
    assert sizes == [(3, 3), (3, 3)] and qrs == [(7, 2)]


# --------------------------------------------------------------------------------------
# Checks and their messages
# --------------------------------------------------------------------------------------
def _raises(exc, msg, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value) == msg


def test_check_modes_accepts_ints_and_names_every_rule():
    assert ttm.check_modes(5, "m") == (5,) and ttm.check_modes(np.int64(5), "m") == (5,)
    out = ttm.check_modes([np.int32(2), 3], "m", 6)
    assert out == (2, 3) and all(type(v) is int for v in out)
    assert ttm.check_modes((2, 3), "m") == (2, 3)  # no total: any product
    assert ttm.check_modes((1, 4, 1), "m", 4) == (1, 4, 1)  # modes of size 1 are allowed
    _raises(TypeError, "m must be a sequence of positive integers, got 2.5", ttm.check_modes,
            2.5, "m")  # fmt: skip
    _raises(ValueError, "m must hold at least one mode, got ()", ttm.check_modes, (), "m")
    _raises(ValueError, "m must hold positive integers, got (2, 0)", ttm.check_modes, (2, 0), "m")
    _raises(ValueError, "m must hold positive integers, got (2, True)", ttm.check_modes,
            (2, True), "m")  # fmt: skip
    _raises(ValueError, "m must hold positive integers, got (2.0,)", ttm.check_modes, (2.0,), "m")
    _raises(TypeError, "m must be a sequence of positive integers, got True", ttm.check_modes,
            True, "m")  # fmt: skip
    _raises(ValueError, "m (2, 3) must multiply to the dimension 7, but their product is 6",
            ttm.check_modes, (2, 3), "m", 7)  # fmt: skip


@given(st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_rank_bounds_are_the_smaller_side_of_each_unfolding(modes):
    d = len(modes)
    want = tuple(min(math.prod(modes[:k]), math.prod(modes[k:])) for k in range(1, d))
    assert rank_bounds(modes) == want and rank_bounds(tuple(modes)) == want


def test_check_ranks_forms_and_every_message():
    m = (2, 3, 4)
    assert ttm.check_ranks(3, m) == (1, 2, 3, 1)  # an int is capped at each bound
    assert ttm.check_ranks(np.int64(1), m) == (1, 1, 1, 1)
    assert ttm.check_ranks([2, 3], m) == (1, 2, 3, 1) == ttm.check_ranks((1, 2, 3, 1), m)
    assert all(type(v) is int for v in ttm.check_ranks([np.int64(2), 3], m))
    assert ttm.check_ranks([], (5,)) == (1, 1) and ttm.check_ranks(4, (5,)) == (1, 1)
    _raises(ValueError, "ranks must be >= 1, got 0", ttm.check_ranks, 0, m)
    _raises(ValueError, "r must be >= 1, got -1", ttm.check_ranks, -1, m, "r")
    _raises(TypeError, "ranks must be an int or a sequence of ints, got float",
            ttm.check_ranks, 2.0, m)  # fmt: skip
    _raises(TypeError, "ranks must hold integers, got [2, True]", ttm.check_ranks, [2, True], m)
    _raises(TypeError, "ranks must hold integers, got [2, 1.0]", ttm.check_ranks, [2, 1.0], m)
    _raises(TypeError, "ranks must be an int or a sequence of ints, got bool",
            ttm.check_ranks, True, m)  # fmt: skip
    _raises(ValueError, "ranks: a full rank list must start and end with 1, got [2, 2, 3, 1]",
            ttm.check_ranks, [2, 2, 3, 1], m)  # fmt: skip
    _raises(ValueError, "ranks: a full rank list must start and end with 1, got [1, 2, 3, 2]",
            ttm.check_ranks, [1, 2, 3, 2], m)  # fmt: skip
    _raises(ValueError, "ranks must hold the 2 inner ranks of a 3-core train (or 4 with the "
            "boundary 1s), got 3: [1, 2, 3]", ttm.check_ranks, [1, 2, 3], m)  # fmt: skip
    _raises(ValueError, "ranks[0] must be >= 1, got 0", ttm.check_ranks, [0, 2], m)
    _raises(ValueError, "ranks[0] = 3 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(1·2, 3·2) = 2 for modes (2, 3, 4) (largest useful ranks: "
            "(2, 4))", ttm.check_ranks, [3, 2], m)  # fmt: skip
    _raises(ValueError, "ranks[1] = 5 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(2·3, 4·1) = 4 for modes (2, 3, 4) (largest useful ranks: "
            "(2, 4))", ttm.check_ranks, [2, 5], m)  # fmt: skip
    assert ttm.check_ranks([2, 1], m) == (1, 2, 1, 1)
    _raises(ValueError, "ranks[0] = 4 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(1·4, 2·1) = 2 for modes (4, 2, 3) (largest useful ranks: "
            "(4, 3))", ttm.check_ranks, [4, 1], (4, 2, 3))  # fmt: skip


def test_check_eps_and_method_messages():
    assert ttm.check_eps(0.5) == 0.5 and type(ttm.check_eps(np.float32(0.25))) is float
    assert ttm.check_eps("0.5") == 0.5 and type(ttm.check_eps("0.5")) is float
    _raises(TypeError, "eps must be a number in (0, 1), got True", ttm.check_eps, True)
    _raises(TypeError, "eps must be a number in (0, 1), got 'x'", ttm.check_eps, "x")
    _raises(TypeError, "eps must be a number in (0, 1), got None", ttm.check_eps, None)
    for bad in (0, 1, 1.5, -0.1, float("nan")):
        _raises(ValueError, "eps must satisfy 0 < eps < 1 (a relative Frobenius error), got "
                f"{bad!r}", ttm.check_eps, bad)  # fmt: skip
    assert ttm._check_method("svd") == "svd"
    _raises(ValueError, "method must be one of ('auto', 'gram', 'svd'), got 'qr'",
            ttm._check_method, "qr")  # fmt: skip
    assert ttm.check_ranks_eps(None, None) is None and ttm.check_ranks_eps(2, None) is None
    assert ttm.check_ranks_eps(None, "0.5") == 0.5
    _raises(ValueError, "give ranks= or eps=, not both (ranks fix the ranks, eps chooses them)",
            ttm.check_ranks_eps, 2, 0.1)  # fmt: skip
    X = np.ones((3, 4))
    _raises(ValueError, "give ranks= or eps=, not both (ranks fix the ranks, eps chooses them)",
            tt_svd, X, ranks=2, eps=0.1)  # fmt: skip
    _raises(ValueError, "method must be one of ('auto', 'gram', 'svd'), got 'qr'", tt_svd, X,
            method="qr")  # fmt: skip
    _raises(ValueError, "X must be finite, but it holds NaN or infinity", tt_svd,
            np.full((3, 4), np.inf))  # fmt: skip


# --------------------------------------------------------------------------------------
# TensorTrain against dense algebra
# --------------------------------------------------------------------------------------
def _dense_of(cores):
    T = np.ones((1, 1))
    for G in cores:
        r, n, r2 = G.shape
        T = (T @ G.reshape(r, n * r2)).reshape(-1, r2)
    return T.reshape([G.shape[1] for G in cores])


def test_tensor_train_describes_itself():
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(s) for s in [(1, 3, 2), (2, 4, 5), (5, 2, 1)]]
    tt = TensorTrain(tuple(cores))
    assert tt.cores == cores and isinstance(tt.cores, list) and tt.xp is np
    assert tt.shape == (3, 4, 2) and tt.ndim == 3 and tt.ranks == (1, 2, 5, 1)
    assert tt.n_params == 6 + 40 + 10 and tt.dtype == np.float64
    assert (
        repr(tt) == "TensorTrain(shape=(3, 4, 2), ranks=(1, 2, 5, 1), n_params=56, dtype=float64)"
    )
    np.testing.assert_allclose(tt.to_dense(), np.einsum("aib,bjc,ckd->ijk", *cores), rtol=1e-12)
    one = TensorTrain([np.ones((1, 4, 1))])
    assert one.ranks == (1, 1) and one.ndim == 1 and one.n_params == 4
    # cores need not be finite (a train is a container; the decompositions check inputs)
    assert TensorTrain([np.full((1, 2, 1), np.inf)]).shape == (2,)


def test_tensor_train_names_every_bad_core():
    _raises(ValueError, "cores must hold at least one core", TensorTrain, [])
    _raises(ValueError, "cores[1] must be 3-D, got 2-D array of shape (2, 3)", TensorTrain,
            [np.ones((1, 2, 2)), np.ones((2, 3))])  # fmt: skip
    _raises(ValueError, "the first core must have r_0 = 1 and the last r_d = 1, got shapes "
            "(2, 3, 1) and (2, 3, 1)", TensorTrain, [np.ones((2, 3, 1))])  # fmt: skip
    _raises(ValueError, "the first core must have r_0 = 1 and the last r_d = 1, got shapes "
            "(1, 3, 2) and (2, 3, 2)", TensorTrain,
            [np.ones((1, 3, 2)), np.ones((2, 3, 2))])  # fmt: skip
    _raises(ValueError, "cores[0] ends with rank 2 but cores[1] starts with rank 3", TensorTrain,
            [np.ones((1, 3, 2)), np.ones((3, 3, 1))])  # fmt: skip
    _raises(TypeError, "cores must share a dtype, got float64 and float32", TensorTrain,
            [np.ones((1, 3, 2)), np.ones((2, 3, 1), dtype=np.float32)])  # fmt: skip
    tt = TensorTrain([np.ones((1, 3, 1))])
    _raises(TypeError, "other must be a TensorTrain, got ndarray", tt.inner, np.ones(3))
    _raises(ValueError, "shapes differ: (3,) and (4,)", tt.inner, TensorTrain([np.ones((1, 4, 1))]))
    _raises(ValueError, "round needs exactly one of eps= or ranks=", tt.round)
    _raises(ValueError, "round needs exactly one of eps= or ranks=", tt.round, 0.1, ranks=1)
    _raises(ValueError, "ranks must be >= 1, got 0", tt.round, ranks=0)
    _raises(ValueError, "eps must satisfy 0 < eps < 1 (a relative Frobenius error), got 2",
            tt.round, 2)  # fmt: skip
    two = TensorTrain([np.ones((1, 3, 2)), np.ones((2, 3, 1))])
    _raises(ValueError, "ranks[0] = 4 is above the bound r_k <= min(r_(k-1)·n_k, "
            "n_(k+1)·r_(k+1)) = min(1·3, 3·1) = 3 for modes (3, 3) (largest useful ranks: (3,))",
            two.round, ranks=[4])  # fmt: skip


@given(tst.tensor_trains(max_d=4, max_mode=4, max_rank=3), st.integers(0, 2**16))
@settings(max_examples=25)
def test_dense_norm_and_inner_of_trains_are_those_of_their_tensors(tt, seed):
    X = tt.to_dense()
    np.testing.assert_allclose(X, _dense_of(tt.cores), atol=1e-12 * (1 + np.abs(X).max()))
    assert X.shape == tt.shape
    nx = np.linalg.norm(X)
    assert tt.norm() == pytest.approx(nx, rel=1e-10, abs=1e-300)
    rng = np.random.default_rng(seed)
    other = TensorTrain([rng.standard_normal(G.shape) for G in tt.cores])
    Y = other.to_dense()
    ref = float(np.sum(X * Y))
    assert abs(tt.inner(other) - ref) <= 1e-10 * (1 + nx * np.linalg.norm(Y))
    assert type(tt.inner(other)) is float and type(tt.norm()) is float
    # different ranks on the two sides
    low = TensorTrain([rng.standard_normal((1, n, 1)) for n in tt.shape])
    assert abs(low.inner(tt) - float(np.sum(low.to_dense() * X))) <= 1e-10 * (1 + nx) * (
        1 + low.norm()
    )


@given(tst.tensor_trains(max_d=4, max_mode=3, max_rank=3))
@settings(max_examples=20)
def test_orthogonalize_right_keeps_the_tensor_and_orthonormalises_cores_after_the_first(tt):
    out = ttm._orthogonalize_right(np, tt.cores)
    assert len(out) == tt.ndim and out is not tt.cores
    X = tt.to_dense()
    np.testing.assert_allclose(_dense_of(out), X, atol=1e-10 * (1 + np.abs(X).max()))
    for G in out[1:]:
        r = G.shape[0]
        M = G.reshape(r, -1)
        np.testing.assert_allclose(M @ M.T, np.eye(r), atol=1e-10)
    # and the input list is left as it was
    np.testing.assert_array_equal(_dense_of(tt.cores), X)


def _round_tol(tt):
    return 1e-8 * (1 + np.abs(tt.to_dense()).max())


@given(tst.tensor_trains(max_d=4, max_mode=4, max_rank=4), st.data())
@settings(max_examples=25)
def test_round_is_tt_svd_of_the_tensor(tt, data):
    """TT-rounding (orthogonalise right to left, truncate left to right by SVDs) gives the
    cores TT-SVD by SVDs gives on the dense tensor: the same ranks, values and signs."""
    X = tt.to_dense()
    how = data.draw(st.sampled_from(["int", "list", "eps"]))
    if how == "eps":
        eps = data.draw(st.floats(0.05, 0.9))
        assume(_margin_ok(X, eps, "svd"))
        out, ref = tt.round(eps), tt_svd(X, eps=eps, method="svd")
    else:
        r = data.draw(st.integers(1, 4))
        if how == "int":
            given_ = (1, *[r] * (tt.ndim - 1), 1)
            out = tt.round(ranks=r)
        else:
            given_ = ttm.check_ranks(data.draw(_reachable_ranks(tt.shape)), tt.shape)
            out = tt.round(ranks=list(given_[1:-1]))
        target = tuple(min(a, b) for a, b in zip(given_, tt.ranks))
        ref = tt_svd(X, ranks=target, method="svd")
    assert out.ranks == ref.ranks
    for G, R in zip(out.cores, ref.cores, strict=True):
        np.testing.assert_allclose(G, R, atol=1e-6 * (1 + np.abs(R).max()))
        assert G.flags.c_contiguous
    np.testing.assert_allclose(out.to_dense(), ref.to_dense(), atol=_round_tol(tt))


def test_round_of_one_core_is_a_new_train_of_the_same_core():
    G = np.arange(4.0).reshape(1, 4, 1)
    tt = TensorTrain([G])
    for out in (tt.round(0.5), tt.round(ranks=3)):
        assert out is not tt and out.cores is not tt.cores and out.cores[0] is G


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_norm2_is_accumulated_in_float64(dt):
    v = (np.random.default_rng(0).standard_normal(200_000) * 3).astype(dt)
    X = v.reshape(400, 500)
    want = float(np.sum(v.astype(np.float64) ** 2))
    got = ttm._norm2(np, X)
    assert type(got) is float and got == pytest.approx(want, rel=1e-12)
    torch = pytest.importorskip("torch")
    import array_api_compat

    T = torch.from_numpy(X)
    got = ttm._norm2(array_api_compat.array_namespace(T), T)
    assert type(got) is float and got == pytest.approx(want, rel=1e-12)


def test_host_view_shares_the_memory_of_a_cpu_tensor_only():
    torch = pytest.importorskip("torch")
    import array_api_compat

    T = torch.arange(6.0, dtype=torch.float64).reshape(2, 3).requires_grad_(True)
    xp = array_api_compat.array_namespace(T)
    V = ttm.host_view(xp, T)
    assert isinstance(V, np.ndarray) and V.shape == (2, 3)
    with torch.no_grad():
        T[0, 0] = 7.0
    assert V[0, 0] == 7.0  # a view, no copy
    assert ttm.host_view(np, np.ones(3)) is None
    M = torch.empty(2, 3, device="meta")
    assert ttm.host_view(xp, M) is None


def _namespaces():
    import array_api_compat

    out = [("numpy", np, lambda a: a)]
    try:
        import torch

        out.append(("torch", array_api_compat.array_namespace(torch.ones(1)), torch.from_numpy))
    except ImportError:
        pass
    try:
        import array_api_strict as xs

        out.append(("array_api_strict", xs, xs.asarray))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("rows,cols,cap,frac,method", [
    (3, 5, 3, None, "gram"), (3, 5, 2, None, "gram"), (3, 5, 2, 0.2, "gram"),
    (6, 2, 2, None, "gram"), (6, 3, 3, 0.3, "gram"), (4, 4, 2, None, "svd"),
    (6, 3, 2, 0.2, "svd"),
])  # fmt: skip
def test_split_and_sweep_agree_in_every_library(rows, cols, cap, frac, method):
    """The same split (and TT-SVD sweep) whatever the library of the arrays: the route a
    CUDA tensor takes, run here on CPU tensors and array_api_strict arrays."""
    from tqla._array import to_numpy

    C = np.random.default_rng(rows * 7 + cols).standard_normal((rows, cols))
    s2 = np.linalg.svd(C, compute_uv=False) ** 2
    delta2 = None if frac is None else frac * s2.sum()
    Q0, B0, e0 = ttm._split(np, C, cap, delta2, method)
    X = np.random.default_rng(1).standard_normal((3, 4, 5))
    ref = ttm._sweep(np, X, (3, 4, 5), None if frac else (1, 2, 3, 1), frac, float(np.sum(X**2)),
                     method)  # fmt: skip
    for name, xp, conv in _namespaces():
        Q, B, e = ttm._split(xp, conv(C), cap, delta2, method)
        np.testing.assert_allclose(to_numpy(Q), Q0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(to_numpy(B), B0, atol=1e-10, err_msg=name)
        assert e == pytest.approx(e0, rel=1e-9, abs=1e-12)
        cores = ttm._sweep(xp, conv(X), (3, 4, 5), None if frac else (1, 2, 3, 1), frac,
                           float(np.sum(X**2)), method)  # fmt: skip
        assert [tuple(G.shape) for G in cores] == [G.shape for G in ref]
        for G, R in zip(cores, ref):
            np.testing.assert_allclose(to_numpy(G), R, atol=1e-9, err_msg=name)


def test_negative_rounding_eigenvalues_add_no_kept_energy(monkeypatch):
    """The dropped energy is the trace minus the positive part of the kept eigenvalues."""
    C = np.random.default_rng(0).standard_normal((3, 6))
    G = C @ C.T
    lam = np.linalg.eigvalsh(G)[::-1].copy()
    V = np.linalg.eigh(G)[1][:, ::-1]
    fake = lam.copy()
    fake[1] = -0.5  # a kept eigenvalue that rounding made negative
    monkeypatch.setattr(ttm, "_top_eig", lambda xp, M, cap: (fake[:cap], V[:, :cap], 10.0))
    _, _, dropped = ttm._split(np, C, 2, None, "gram")
    assert dropped == 10.0 - fake[0]
    _, _, dropped = ttm._split(np, C.T.copy(), 2, None, "gram")
    assert dropped == 10.0 - fake[0]


def test_every_result_stays_on_the_device_of_its_input():
    """array_api_strict's second device: a split, TT-SVD, rounding and the products of a train
    on another device than the default one (the route of a CUDA tensor) stay there."""
    xs = pytest.importorskip("array_api_strict")
    from tqla._array import to_numpy

    dev = xs.Device("device1")
    Xn = np.random.default_rng(0).standard_normal((3, 4, 5))
    X = xs.asarray(Xn, device=dev)
    Q = xs.asarray(Xn[0], device=dev)
    s = ttm._col_signs(xs, Q)
    assert s.device == dev
    np.testing.assert_array_equal(to_numpy(s)[0], _signs(Xn[0]))
    for kw in ({}, {"ranks": 2}, {"eps": 0.3}, {"eps": 0.3, "method": "svd"}, {"eps": 1e-9}):
        out, ref = tt_svd(X, **kw), tt_svd(Xn, **kw)
        assert all(G.device == dev for G in out.cores) and out.ranks == ref.ranks
        for G, R in zip(out.cores, ref.cores):
            np.testing.assert_allclose(to_numpy(G), R, atol=1e-9)
    out = tt_svd(X)
    for r in (out.round(0.5), out.round(ranks=2)):
        assert all(G.device == dev for G in r.cores)
    assert out.to_dense().device == dev
    assert out.norm() == pytest.approx(np.linalg.norm(Xn), rel=1e-12)
