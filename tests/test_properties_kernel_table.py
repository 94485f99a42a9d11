"""The kernel table and the NumPy / array-API kernels stated whole (issue 15, fifth pass).

* ``tqla._kernels``: registration, lazy loading (cached successes and misses, only the
  optional dependency's absence tolerated), ``available`` order, every route of
  ``resolve`` and every message matched whole.
* ``_numpy`` and ``_array_api``: the Gram and product kernels against NumPy references,
  an ``X`` argument that is really used, exact symmetry, dtypes and layouts; the
  strided-assignment routes of the blocked copy (loop over the smaller middle axis, one
  whole copy for long runs or long axes), observed on a recording array.
* ``slots_cost`` (NumPy, array API, Numba): the defining formula cost[c, t] =
  −‖Y[t] − P[t] + P[c]‖² with P = C·Vs, both contraction routes (r ≤ n2 and r > n2), the
  route taken observed by counting the products, dtypes.
* The Numba dispatchers: the tile, task and chunk counts and the threading decision
  handed to the compiled loops, the thread pool's chunk ranges, ``num_threads``.
"""

from __future__ import annotations

import re
import threading
import types

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tqla._kernels as kernels
from tqla import KroneckerShape
from tqla._kernels import KERNELS, available, get_kernel, register, resolve

KS = KroneckerShape


def _whole(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _R(W: np.ndarray, s: KroneckerShape) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    return W.reshape(s.m1, s.m2, s.n1, s.n2).transpose(0, 2, 1, 3).reshape(s.rearranged_shape)


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------
def test_register_checks_the_kernel_name_and_returns_the_function(monkeypatch):
    monkeypatch.setattr(kernels, "_TABLE", {k: dict(v) for k, v in kernels._TABLE.items()})
    msg = "kernel must be one of ('numpy', 'numba', 'array_api'), got 'fortran'"
    with pytest.raises(ValueError, match=_whole(msg)):
        register("op", "fortran")

    def f():
        return 1

    assert register("op_x", "array_api")(f) is f
    assert register("op_x", "numpy")(f) is f
    assert kernels._TABLE["op_x"] == {"array_api": f, "numpy": f}
    # an operation outside the preference table: "auto" on NumPy takes "numpy" first
    assert resolve("op_x", "auto", np.ones(2)) == ("numpy", f)
    assert available("op_x") == ["numpy", "array_api"]  # KERNELS order, not registration


def test_resolve_routes_and_messages():
    W = np.ones((4, 4))
    assert KERNELS == ("numpy", "numba", "array_api")
    msg = "kernel must be 'auto' or one of ('numpy', 'numba', 'array_api'), got 'fortran'"
    with pytest.raises(ValueError, match=_whole(msg)):
        resolve("rearranged_gram", "fortran", W)
    with pytest.raises(ValueError, match=_whole("no kernel of operation 'nope' is registered")):
        resolve("nope", "auto", W)
    msg = "operation 'lsap_jv' has no 'numpy' kernel; available: " + repr(available("lsap_jv"))
    with pytest.raises(ValueError, match=_whole(msg)):
        resolve("lsap_jv", "numpy", W)
    # no arrays: NumPy's preferences
    assert resolve("slots_cost")[0] == kernels.NUMPY_PREFERENCE["slots_cost"][0]
    assert resolve("rearranged_gram", "array_api", W)[0] == "array_api"
    assert get_kernel("rearranged_gram", "numpy", W) is resolve("rearranged_gram", "numpy")[1]
    torch = pytest.importorskip("torch")
    t = torch.ones(4, 4)
    for name in ("rearranged_gram", "slots_cost", "rearranged_matmul"):
        assert resolve(name, "auto", t)[0] == "array_api"
    for impl in ("numpy", "numba"):
        if impl not in available("rearranged_gram"):
            continue
        msg = (
            f"kernel={impl!r} works on NumPy arrays only, got torch arrays; "
            "use kernel='array_api' or 'auto'"
        )
        with pytest.raises(ValueError, match=_whole(msg)):
            resolve("rearranged_gram", impl, t)
    with pytest.raises(ValueError, match=_whole("no kernel of operation 'lsap_jv' is registered")):
        resolve("lsap_jv", "auto", t)  # no array-API solver


def _fresh_loader_state(monkeypatch):
    monkeypatch.setattr(kernels, "_LOADED", set())
    monkeypatch.setattr(kernels, "_MISSING", set())


def test_loading_caches_successes_and_tolerated_misses(monkeypatch):
    _fresh_loader_state(monkeypatch)
    imported = []
    real = kernels.importlib.import_module

    def spy(name):
        imported.append(name)
        if name.startswith("tqla._kernels._numba"):
            raise ModuleNotFoundError("No module named 'numba'", name="numba")
        return real(name)

    monkeypatch.setattr(kernels.importlib, "import_module", spy)
    assert kernels._load("numpy", "rearranged_gram") is True
    assert kernels._load("numpy", "rearrange") is True  # same module: cached
    assert kernels._load("numpy", "slots_cost") is True
    assert imported == ["tqla._kernels._numpy", "tqla._kernels._numpy_assignment"]
    assert kernels._LOADED == {"tqla._kernels._numpy", "tqla._kernels._numpy_assignment"}
    assert kernels._load("numba", "lsap_jv") is False
    assert kernels._load("numba", "slots_cost") is False  # the miss is cached
    assert imported[2:] == ["tqla._kernels._numba_assignment"]
    assert kernels._MISSING == {"tqla._kernels._numba_assignment"}
    assert not kernels._has("numba", "lsap_jv") and kernels._has("numpy", "slots_cost")
    assert kernels._has("array_api", "slots_cost")
    assert not kernels._has("array_api", "lsap_jv")
    msg = "kernel='numba' needs the optional dependency 'numba': pip install 'tqla[numba]'"
    with pytest.raises(ImportError, match=_whole(msg)):
        resolve("slots_cost", "numba", np.ones(2))
    assert "numba" not in available("slots_cost")


def test_loading_reraises_other_import_errors(monkeypatch):
    _fresh_loader_state(monkeypatch)

    def broken(name):
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")

    monkeypatch.setattr(kernels.importlib, "import_module", broken)
    for kernel in ("numba", "numpy"):
        with pytest.raises(ModuleNotFoundError, match="scipy"):
            kernels._load(kernel, "rearranged_gram")
    assert kernels._MISSING == set() and kernels._LOADED == set()

    def no_numba(name):
        raise ModuleNotFoundError("No module named 'numba'", name="numba")

    monkeypatch.setattr(kernels.importlib, "import_module", no_numba)
    with pytest.raises(ModuleNotFoundError):  # numba missing is an error for "numpy"
        kernels._load("numpy", "rearranged_gram")
    assert kernels._load("numba", "rearranged_gram") is False


# --------------------------------------------------------------------------------------
# NumPy and array-API Gram / product kernels
# --------------------------------------------------------------------------------------
shapes = st.builds(
    lambda m1, n1, m2, n2: KS((m1, n1), (m2, n2)),
    st.integers(1, 5), st.integers(1, 7), st.integers(1, 5), st.integers(1, 6),
)  # fmt: skip


def _libs():
    out = [("numpy", "numpy", lambda a: a, np.asarray), ("array_api", "array_api[numpy]",
           lambda a: a, np.asarray)]  # fmt: skip
    try:
        import torch

        out.append(("array_api", "array_api[torch]", torch.from_numpy, lambda t: t.numpy()))
    except ImportError:
        pass
    return out


@given(
    s=shapes, side=st.sampled_from(["right", "left"]), r=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
)  # fmt: skip
@example(s=KS((3, 5), (4, 2)), side="left", r=3, dtype=np.float32, seed=0)
def test_gram_and_product_kernels_use_the_X_they_are_given(s, side, r, dtype, seed):
    """With X = R(W2) given, the NumPy and array-API kernels work on X (not on W); without
    it, on R(W).  The Gram matrix is exactly symmetric and in W's dtype."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(s.matrix_shape).astype(dtype)
    W2 = rng.standard_normal(s.matrix_shape).astype(dtype)
    q, p = s.rearranged_shape
    V = rng.standard_normal((p if side == "right" else q, r)).astype(dtype)
    tol = 3e-5 if dtype == np.float32 else 1e-12
    for impl, label, to, back in _libs():
        gram = get_kernel("rearranged_gram", impl)
        mm = get_kernel("rearranged_matmul", impl)
        for X, src in ((None, W), (to(np.ascontiguousarray(_R(W2, s).astype(dtype))), W2)):
            Xr = _R(src, s)
            G_ref = Xr.T @ Xr if side == "right" else Xr @ Xr.T
            args = () if X is None else (X,)
            G = back(gram(to(W), s, side, *args))
            assert G.dtype == dtype, label
            np.testing.assert_array_equal(G, G.T)
            scale = 1 + np.abs(G_ref).max()
            np.testing.assert_allclose(G, G_ref, rtol=0, atol=tol * scale, err_msg=label)
            P_ref = Xr @ V if side == "right" else Xr.T @ V
            P = back(mm(to(W), s, side, to(V), *args))
            assert P.dtype == dtype and P.shape == P_ref.shape, label
            scale = 1 + np.abs(P_ref).max()
            np.testing.assert_allclose(P, P_ref, rtol=0, atol=tol * scale, err_msg=label)


def test_numpy_product_layouts_and_vectors():
    from tqla._kernels import _numpy as K

    s = KS((3, 4), (2, 5))
    rng = np.random.default_rng(1)
    W = rng.standard_normal(s.matrix_shape).astype(np.float32)
    for side, inner in (("right", 10), ("left", 12)):
        V = rng.standard_normal((inner, 3))  # float64 V: the product stays in W's dtype
        P = K.rearranged_matmul(W, s, side, V)
        assert P.dtype == np.float32 and P.T.flags.c_contiguous
        v = K.rearranged_matmul(W, s, side, V[:, 1])
        assert v.shape == (P.shape[0],)
        np.testing.assert_array_equal(v, K.rearranged_matmul(W, s, side, V[:, 1:2])[:, 0])
    G = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = K.symmetrised(G)
    assert out is G and out.tolist() == [[1.0, 2.5], [2.5, 4.0]]


class _Recorder(np.ndarray):
    """An ndarray that records the keys of the assignments made into it."""

    def __setitem__(self, key, value):
        self.keys.append(key)
        super().__setitem__(key, value)


def _recorded_move(m1: int, m2: int, n1: int, unit: int, forward: bool):
    from tqla._kernels._numpy import _move, _unit

    dt = _unit(unit)
    src_shape = (m1, m2, n1) if forward else (m1, n1, m2)
    dst_shape = (m1, n1, m2) if forward else (m1, m2, n1)
    raw = np.arange(np.prod(src_shape) * unit, dtype=np.uint64).astype(np.uint8)
    src = raw.view(dt).reshape(src_shape)
    dst = np.zeros(dst_shape, dtype=dt).view(_Recorder)
    dst.keys = []
    _move(dst, src, m2, n1, forward)
    want = src.transpose(0, 2, 1)
    np.testing.assert_array_equal(np.asarray(dst).view(np.uint8), want.copy().view(np.uint8))
    return dst.keys


@pytest.mark.parametrize("forward", [True, False])
@pytest.mark.parametrize(
    ("m2", "n1", "unit", "count"),
    [
        (3, 5, 8, 3),  # loop over m2 (the smaller middle axis)
        (5, 3, 8, 3),  # loop over n1
        (4, 4, 4, 4),  # a tie: either loop, min(m2, n1) assignments
        (2, 64, 16, 2),  # n1 at the slice limit: still a loop
        (65, 66, 8, 1),  # both above _MAX_SLICES: one whole copy
        (65, 64, 8, 64),
        (3, 5, 64, 1),  # runs of 64 bytes: NumPy's own copy
        (3, 5, 63, 3),
    ],
)
def test_blocked_copy_loops_over_the_smaller_middle_axis(m2, n1, unit, count, forward):
    keys = _recorded_move(2, m2, n1, unit, forward)
    assert len(keys) == count, keys
    if count == 1 and min(m2, n1) > 1:
        assert keys == [Ellipsis]
    elif m2 < n1 or (m2 == n1 and count > 1):
        # one assignment per index of m2: the m2 axis is fixed in each key
        pos = 2 if forward else 1
        assert [k[pos] for k in keys] == list(range(count)), keys
    else:
        pos = 1 if forward else 2
        assert [k[pos] for k in keys] == list(range(count)), keys


def test_unit_dtypes_move_raw_bytes():
    from tqla._kernels._numpy import _unit

    assert _unit(1) == np.uint8 and _unit(2) == np.uint16
    assert _unit(4) == np.uint32 and _unit(8) == np.uint64
    for n in (3, 5, 12, 16, 24):
        assert _unit(n) == np.dtype((np.void, n)) and _unit(n).itemsize == n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_copy_kernels_of_empty_and_tiny_matrices(dtype):
    from tqla._kernels import _numpy as K

    for s in (KS((1, 1), (1, 1)), KS((2, 1), (1, 3)), KS((1, 3), (2, 1))):
        W = np.arange(np.prod(s.matrix_shape), dtype=dtype).reshape(s.matrix_shape)
        X = K.rearrange(W, s)
        assert X.shape == s.rearranged_shape and X.dtype == dtype and X.flags.c_contiguous
        np.testing.assert_array_equal(X, _R(W, s).astype(dtype))
        Wb = K.unrearrange(X, s)
        assert Wb.shape == s.matrix_shape and Wb.dtype == dtype
        np.testing.assert_array_equal(Wb, W)


# --------------------------------------------------------------------------------------
# slots_cost kernels: the formula, both routes, dtypes
# --------------------------------------------------------------------------------------
def _slots_ref(C, Vs, Y):
    C, Vs, Y = (np.asarray(a, dtype=np.float64) for a in (C, Vs, Y))
    P = np.einsum("cjk,kr->cjr", C, Vs)
    m1 = C.shape[0]
    cost = np.empty((m1, m1))
    for c in range(m1):
        for t in range(m1):
            cost[c, t] = -np.sum((Y[t] - P[t] + P[c]) ** 2)
    return cost, P


def _slot_inputs(m1, n1, n2, r, seed, dtype):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((m1, n1, n2)).astype(dtype)
    Vs = rng.standard_normal((n2, r)).astype(dtype)
    Y = rng.standard_normal((m1, n1, r)).astype(dtype)
    return C, Vs, Y


@given(
    m1=st.integers(1, 6), n1=st.integers(1, 4), n2=st.integers(1, 5), r=st.integers(1, 7),
    dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
)  # fmt: skip
@example(m1=4, n1=3, n2=2, r=5, dtype=np.float64, seed=0)  # r > n2
@example(m1=4, n1=3, n2=5, r=2, dtype=np.float64, seed=1)  # r < n2
@example(m1=3, n1=2, n2=3, r=3, dtype=np.float32, seed=2)  # r = n2
def test_slots_cost_kernels_follow_the_formula(m1, n1, n2, r, dtype, seed):
    C, Vs, Y = _slot_inputs(m1, n1, n2, r, seed, dtype)
    ref, P_ref = _slots_ref(C, Vs, Y)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    scale = 1 + np.abs(ref).max()
    host = [(k, k, lambda a: a, np.asarray) for k in available("slots_cost") if k != "array_api"]
    for impl, label, to, back in host + _libs()[1:]:
        f = get_kernel("slots_cost", impl)
        Cv = to(np.ascontiguousarray(C.transpose(1, 0, 2)).transpose(1, 0, 2))  # strided view
        cost, P = f(Cv, to(Vs), to(Y))
        cost, P = back(cost), back(P)
        assert cost.dtype == dtype and P.dtype == dtype, label
        assert cost.shape == (m1, m1) and P.shape == (m1, n1, r), label
        np.testing.assert_allclose(cost, ref, rtol=0, atol=tol * scale, err_msg=label)
        np.testing.assert_allclose(P, P_ref, rtol=0, atol=tol * (1 + np.abs(P_ref).max()))


@pytest.mark.parametrize(("n2", "r", "calls"), [(4, 2, 1), (3, 3, 1), (2, 5, 2)])
def test_numpy_slots_cost_contracts_over_the_smaller_side(monkeypatch, n2, r, calls):
    """r ≤ n2: the cross term over n1·r (one np.matmul, for P); r > n2: over n1·n2, with
    H·Vsᵀ formed first (a second np.matmul)."""
    from tqla._kernels import _numpy_assignment as mod

    count = []

    class CountingNumpy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(np, name)

        def matmul(self, *a, **k):
            count.append(1)
            return np.matmul(*a, **k)

    monkeypatch.setattr(mod, "np", CountingNumpy("np"))
    C, Vs, Y = _slot_inputs(3, 2, n2, r, 0, np.float64)
    cost, _ = mod.slots_cost(C, Vs, Y)
    assert len(count) == calls
    np.testing.assert_allclose(cost, _slots_ref(C, Vs, Y)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("n2", "r", "calls"), [(4, 2, 2), (3, 3, 2), (2, 5, 3)])
def test_array_api_slots_cost_contracts_over_the_smaller_side(n2, r, calls):
    torch = pytest.importorskip("torch")
    from torch.overrides import TorchFunctionMode

    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__):
                seen.append(func)
            return func(*args, **(kwargs or {}))

    C, Vs, Y = _slot_inputs(3, 2, n2, r, 1, np.float64)
    f = get_kernel("slots_cost", "array_api")
    with Record():
        cost, _ = f(torch.from_numpy(C), torch.from_numpy(Vs), torch.from_numpy(Y))
    assert len(seen) == calls
    np.testing.assert_allclose(cost.numpy(), _slots_ref(C, Vs, Y)[0], rtol=1e-12, atol=1e-12)


def test_numba_slots_cost_promotes_mixed_dtypes():
    if "numba" not in available("slots_cost"):
        pytest.skip("numba missing")
    f = get_kernel("slots_cost", "numba")
    C, Vs, Y = _slot_inputs(3, 2, 3, 2, 2, np.float32)
    for dts in ((np.float32, np.float64, np.float32), (np.float64, np.float32, np.float32)):
        a, b, c = (x.astype(d) for x, d in zip((C, Vs, Y), dts))
        cost, P = f(a, b, c)
        assert cost.dtype == np.float64 and P.dtype == np.float64
        np.testing.assert_allclose(cost, _slots_ref(a, b, c)[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# The Numba dispatchers and thread pool
# --------------------------------------------------------------------------------------
nb = (
    pytest.importorskip("tqla._kernels._numba") if "numba" in available("rearranged_gram") else None
)


def _spy_chunks(monkeypatch):
    calls = []
    real = nb._run_chunks

    def spy(fn, nchunks, parallel, *args):
        calls.append((fn, nchunks, parallel, args))
        return real(fn, nchunks, parallel, *args)

    monkeypatch.setattr(nb, "_run_chunks", spy)
    return calls


@pytest.mark.skipif(nb is None, reason="numba missing")
@pytest.mark.parametrize(
    ("shape", "side"),
    [
        (KS((3, 5000), (3, 2)), "right"),  # specialised n2 = 2: tiles of 2048, 3 tiles
        (KS((2, 7), (3, 4)), "right"),  # specialised n2 = 4, one tile
        (KS((2, 600), (3, 5)), "right"),  # generic: tiles of 4096 // 15 = 273
        (KS((20, 3), (2, 3)), "right"),  # generic, 20 tasks in 16 chunks
        (KS((3, 2), (5, 4100)), "left"),  # segments of 2048, threads (123k entries)
        (KS((2, 2), (3, 7)), "left"),
    ],
)
def test_numba_dispatch_hands_the_loops_their_tiling(monkeypatch, shape, side):
    s = shape
    W = np.random.default_rng(0).standard_normal(s.matrix_shape)
    calls = _spy_chunks(monkeypatch)
    q, p = s.rearranged_shape
    r = 3
    V = np.random.default_rng(1).standard_normal((p if side == "right" else q, r))
    G = nb.rearranged_gram(W, s, side)
    P = nb.rearranged_matmul(W, s, side, V)
    X = _R(W, s)
    np.testing.assert_allclose(G, X.T @ X if side == "right" else X @ X.T, rtol=1e-11,
                               atol=1e-11 * np.abs(G).max())  # fmt: skip
    np.testing.assert_allclose(P, X @ V if side == "right" else X.T @ V, rtol=1e-11,
                               atol=1e-11 * np.abs(P).max())  # fmt: skip
    parallel = W.size >= nb._MIN_PARALLEL
    if side == "right":
        spec = s.n2 in nb._SPECIALISED_N2
        tile = min(s.n1, nb._SPEC_TILE) if spec else max(1, min(s.n1, nb._TILE_ENTRIES // p))
        n_tasks = s.m1 * -(-s.n1 // tile)
    else:
        tile = min(s.n2, nb._SEG)
        n_tasks = s.m2 * -(-s.n2 // tile)
    nchunks = min(n_tasks, nb._MAX_CHUNKS)
    assert len(calls) == 2
    (fg, cg, pg, ag), (fm, cm, pm, am) = calls
    assert (cg, pg, cm, pm) == (nchunks, parallel, nchunks, parallel)
    if side == "right" and s.n2 in nb._SPECIALISED_N2:
        assert fg is nb._gram_right_small(s.n2) and fm is nb._matmul_right_small(s.n2)
        assert ag[1:7] == (s.m1, s.m2, s.n1, tile, n_tasks, nchunks)
        assert am[2:8] == (s.m1, s.m2, s.n1, tile, n_tasks, nchunks)
        assert ag[7].shape == (nchunks, p, p) and am[8].shape == (r, q)
    else:
        fgw = nb._gram_right_generic if side == "right" else nb._gram_left
        fmw = nb._matmul_right if side == "right" else nb._matmul_left
        assert fg is fgw and fm is fmw
        assert ag[1:8] == (s.m1, s.m2, s.n1, s.n2, tile, n_tasks, nchunks)
        assert am[2:9] == (s.m1, s.m2, s.n1, s.n2, tile, n_tasks, nchunks)
        side_len = p if side == "right" else q
        assert ag[8].shape == (nchunks, side_len, side_len)
        assert am[9].shape == (r, q if side == "right" else p)
    assert am[1].dtype == np.float64 and am[1].flags.c_contiguous


@pytest.mark.skipif(nb is None, reason="numba missing")
def test_numba_blas_route_starts_above_the_direct_limit(monkeypatch):
    """Sides up to _DIRECT_MAX_SIDE run the compiled loops; above it, a rearranged copy
    and BLAS (no loop is called)."""
    for s, side, direct in (
        (KS((2, 3), (16, 16)), "right", True),  # p = 256
        (KS((2, 3), (1, 257)), "right", False),  # p = 257
        (KS((16, 16), (2, 3)), "left", True),  # q = 256
        (KS((257, 1), (2, 3)), "left", False),
    ):
        calls = _spy_chunks(monkeypatch)
        copies = []
        monkeypatch.setattr(
            nb, "rearrange", lambda W, sh, c=copies: c.append(1) or _R(W, KS(*sh)).astype(W.dtype)
        )
        W = np.random.default_rng(2).standard_normal(s.matrix_shape).astype(np.float32)
        q, p = s.rearranged_shape
        V = np.ones((p if side == "right" else q, 2))
        G = nb.rearranged_gram(W, s, side)
        P = nb.rearranged_matmul(W, s, side, V)
        assert G.dtype == np.float32 and P.dtype == np.float32 and P.T.flags.c_contiguous
        np.testing.assert_array_equal(G, G.T)
        if direct:
            assert len(calls) == 2 and not copies
        else:
            assert not calls and len(copies) == 2
        monkeypatch.undo()


@pytest.mark.skipif(nb is None, reason="numba missing")
def test_numba_prepare_messages():
    s = KS((2, 3), (2, 2))
    W = np.ones((4, 6))
    with pytest.raises(ValueError, match=_whole("side must be 'right' or 'left', got 'up'")):
        nb.rearranged_gram(W, s, "up")
    msg = "the numba kernels take float32 or float64 arrays, got int64"
    with pytest.raises(TypeError, match=_whole(msg)):
        nb.rearranged_gram(W.astype(np.int64), s, "right")
    msg = "W of shape (4, 5) does not match A (2, 3) ⊗ B (2, 2), which needs (4, 6)"
    with pytest.raises(ValueError, match=_whole(msg)):
        nb.rearranged_matmul(np.ones((4, 5)), s, "left", np.ones(6))
    msg = "V must have 4 rows for R(W) @ V, got shape (3, 2)"
    with pytest.raises(ValueError, match=_whole(msg)):
        nb.rearranged_matmul(W, s, "right", np.ones((3, 2)))
    msg = "V must have 6 rows for R(W).T @ V, got shape (4, 1, 1)"
    with pytest.raises(ValueError, match=_whole(msg)):
        nb.rearranged_matmul(W, s, "left", np.ones((4, 1, 1)))


@pytest.mark.skipif(nb is None, reason="numba missing")
@pytest.mark.parametrize(("threads", "nchunks", "parallel"), [(3, 8, True), (4, 2, True),
                         (1, 5, True), (4, 6, False), (16, 16, True)])  # fmt: skip
def test_chunks_are_shared_by_the_threads_in_order(monkeypatch, threads, nchunks, parallel):
    monkeypatch.setattr(nb, "num_threads", lambda: threads)
    seen = []
    lock = threading.Lock()

    def fn(tag, c_lo, c_hi):
        with lock:
            seen.append((c_lo, c_hi, threading.current_thread() is threading.main_thread()))

    nb._run_chunks(fn, nchunks, parallel, "tag")
    workers = min(threads, nchunks) if parallel else 1
    want = [(w * nchunks // workers, (w + 1) * nchunks // workers) for w in range(workers)]
    assert sorted((lo, hi) for lo, hi, _ in seen) == want
    main = [(lo, hi) for lo, hi, is_main in seen if is_main]
    assert main == [want[-1]]  # the calling thread takes the last range


@pytest.mark.skipif(nb is None, reason="numba missing")
def test_pool_grows_and_is_reused(monkeypatch):
    monkeypatch.setattr(nb, "_POOL", None)
    monkeypatch.setattr(nb, "_POOL_SIZE", 0)
    p2 = nb._pool(2)
    assert nb._POOL is p2 and nb._POOL_SIZE == 2 and p2._max_workers == 2
    assert nb._pool(1) is p2 and nb._pool(2) is p2
    p3 = nb._pool(3)
    assert p3 is not p2 and nb._POOL_SIZE == 3 and p3._max_workers == 3
    assert nb._pool(2) is p3
    p3.shutdown(wait=True)
    p2.shutdown(wait=True)
    assert nb._n_chunks(0) == 1 and nb._n_chunks(5) == 5
    assert nb._n_chunks(16) == 16 and nb._n_chunks(17) == 16


@pytest.mark.skipif(nb is None, reason="numba missing")
def test_num_threads_follows_the_environment(monkeypatch):
    import os

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    assert nb.num_threads() == cpus
    for env, want in (("1", 1), (str(cpus + 5), cpus), ("0", 1), ("-2", 1), ("x", cpus),
                      ("", cpus)):  # fmt: skip
        monkeypatch.setenv("NUMBA_NUM_THREADS", env)
        assert nb.num_threads() == want, env
    monkeypatch.setattr(nb.os, "sched_getaffinity", lambda pid: set(range(3)))
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    assert nb.num_threads() == 2
    monkeypatch.delenv("NUMBA_NUM_THREADS")
    assert nb.num_threads() == 3


@pytest.mark.skipif(nb is None, reason="numba missing")
def test_sum_parts_adds_in_order_and_mirrors():
    parts = np.zeros((3, 3, 3))
    parts[0] = np.triu(np.arange(9.0).reshape(3, 3))
    parts[1, 0, 2] = 10.0
    parts[2, 1, 1] = 5.0
    parts[2, 2, 0] = 99.0  # below the diagonal: ignored
    G = nb._sum_parts(parts)
    want = np.triu(parts.sum(0))
    want = want + np.triu(want, 1).T
    np.testing.assert_array_equal(G, want)
    assert np.all(parts[0] == np.triu(np.arange(9.0).reshape(3, 3)))  # parts untouched


def test_array_api_slots_cost_checks_every_operand_library():
    torch = pytest.importorskip("torch")
    f = get_kernel("slots_cost", "array_api")
    C, Vs, Y = _slot_inputs(3, 2, 4, 2, 3, np.float64)
    msg = "arrays of one array library"
    for args in (
        (torch.from_numpy(C), Vs, Y),
        (C, torch.from_numpy(Vs), Y),
        (C, Vs, torch.from_numpy(Y)),
    ):
        with pytest.raises(TypeError, match=msg):
            f(*args)
    cost, P = f(torch.from_numpy(C), torch.from_numpy(Vs), torch.from_numpy(Y))
    assert isinstance(cost, torch.Tensor) and isinstance(P, torch.Tensor)


def _peak(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_numpy_product_does_not_copy_V_of_the_right_dtype():
    """R(W) @ V with a large V (p×r) of W's dtype reads V in place: the peak is R(W)'s copy
    and the (r, q) result, not a second V."""
    from tqla._kernels import _numpy as K

    s = KS((1, 2), (2, 500))  # q = 2, p = 1000
    rng = np.random.default_rng(4)
    W = rng.standard_normal(s.matrix_shape)
    V = rng.standard_normal((1000, 400))  # 3.2 MB
    P, peak = _peak(lambda: K.rearranged_matmul(W, s, "right", V))
    np.testing.assert_allclose(P, _R(W, s) @ V, rtol=1e-12, atol=1e-10)
    assert peak < V.nbytes // 4, peak
    Wl = rng.standard_normal(KS((20, 50), (1, 2)).matrix_shape)  # left: q = 1000, p = 2
    P, peak = _peak(lambda: K.rearranged_matmul(Wl, KS((20, 50), (1, 2)), "left", V))
    assert peak < V.nbytes // 4, peak


@pytest.mark.skipif(nb is None, reason="numba missing")
@pytest.mark.parametrize(
    "s",
    [
        KS((37, 3), (3, 2)),
        KS((5, 4), (2, 4)),
        KS((20, 3), (2, 3)),
        KS((3, 5), (4, 7)),
        KS((40, 100), (5, 4)),
    ],  # fmt: skip
)
def test_numba_copies_dispatch_by_n2_and_chunk_by_block_rows(monkeypatch, s):
    calls = _spy_chunks(monkeypatch)
    W = np.asfortranarray(np.random.default_rng(5).standard_normal(s.matrix_shape))
    X = nb.rearrange(W, s)
    Wb = nb.unrearrange(X, s)
    np.testing.assert_array_equal(X, _R(W, s))
    np.testing.assert_array_equal(Wb, W)
    assert X.flags.c_contiguous and Wb.flags.c_contiguous
    (f1, c1, p1, a1), (f2, c2, p2, a2) = calls
    spec = nb._specialised(nb._make_rearrange_copy_small, s.n2)
    assert f1 is (spec if s.n2 in nb._SPECIALISED_N2 else nb._rearrange_copy)
    assert f2 is nb._unrearrange_copy
    nchunks = min(s.m1, nb._MAX_CHUNKS)
    parallel = W.size >= nb._MIN_PARALLEL
    assert (c1, p1, c2, p2) == (nchunks, parallel, nchunks, parallel)
    assert a1[0].flags.c_contiguous and a1[2:] == (s.m1, s.m2, s.n1, s.n2, s.m1, nchunks)
    assert a2[2:] == (s.m1, s.m2, s.n1, s.n2, s.m1, nchunks)
    assert a1[1] is X and a2[1] is Wb
    assert nb._specialised(nb._make_rearrange_copy_small, 2) is nb._specialised(
        nb._make_rearrange_copy_small, 2
    )


@pytest.mark.skipif(nb is None, reason="numba missing")
@pytest.mark.parametrize("side", ["right", "left"])
def test_numba_products_read_any_layout_and_vectors(side):
    s = KS((3, 5), (4, 3))
    rng = np.random.default_rng(6)
    W = rng.standard_normal(s.matrix_shape)
    q, p = s.rearranged_shape
    V = rng.standard_normal((p if side == "right" else q, 2)).astype(np.float32)
    X = _R(W, s)
    ref = X @ V if side == "right" else X.T @ V
    for Wv in (W, np.asfortranarray(W), W.astype(np.float32)):
        P = nb.rearranged_matmul(Wv, s, side, V)
        assert P.dtype == Wv.dtype and P.T.flags.c_contiguous
        tol = 1e-5 if Wv.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(P, ref, rtol=tol, atol=tol * np.abs(ref).max())
        v = nb.rearranged_matmul(Wv, s, side, V[:, 1])
        assert v.shape == (ref.shape[0],)
        np.testing.assert_array_equal(v, P[:, 1])
        G = nb.rearranged_gram(Wv, s, side)
        assert G.dtype == Wv.dtype
        np.testing.assert_array_equal(G, G.T)
