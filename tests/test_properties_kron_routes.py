"""tqla.kron stated whole (fifth mutation pass): which copy kernel rearrange/unrearrange
run (spied on the kernel table), which SVD route and kernel kron_svd runs with every
argument handed on (rank, method, rng, kernel, max_bytes, the float32 detour of half
precisions), the memory ceiling and its message, and every message of KroneckerSum.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tqla.kron as tk
from tqla import KroneckerShape, KroneckerSum, kron_svd, rearrange, unrearrange
from tqla._memory import fmt_bytes

torch = pytest.importorskip("torch")
xs = pytest.importorskip("array_api_strict")


def _W(shape, seed=0, dtype=np.float64):
    s = KroneckerShape.of(shape)
    return np.random.default_rng(seed).standard_normal(s.matrix_shape).astype(dtype)


def _R(W, s):
    """R(W) restated: row (i1, j1) is the flattened block (i1, j1)."""
    s = KroneckerShape.of(s)
    W4 = np.asarray(W).reshape(s.m1, s.m2, s.n1, s.n2)
    return W4.transpose(0, 2, 1, 3).reshape(s.rearranged_shape)


class _Table:
    """Records the kernel-table look-ups of tqla.kron and the calls of what they return."""

    def __init__(self, monkeypatch):
        self.lookups: list[tuple[str, str]] = []
        self.calls: list[tuple[str, tuple]] = []
        real = tk.resolve

        def resolve(name, kernel="auto", *arrays):
            impl, fn = real(name, kernel, *arrays)
            self.lookups.append((name, kernel))

            def call(*args):
                self.calls.append((name, args))
                return fn(*args)

            return impl, call

        monkeypatch.setattr(tk, "resolve", resolve)


# --------------------------------------------------------------------------------------
# rearrange / unrearrange: the copy kernel from 2**16 entries, NumPy floats, m2, n1 > 1
# --------------------------------------------------------------------------------------
ROUTE_CASES = [
    (((16, 16), (16, 16)), np.float64, True),  # 65536 entries: the kernel
    (((16, 16), (16, 16)), np.float32, True),
    (((15, 257), (17, 1)), np.float64, False),  # 65535 entries: NumPy's copy
    (((256, 16), (1, 16)), np.float64, False),  # m2 == 1: R(W) is a view
    (((128, 2), (2, 128)), np.float64, True),  # m2 == n1 == 2: a copy
    (((16, 1), (16, 256)), np.float64, False),  # n1 == 1
    (((16, 16), (16, 16)), np.float16, False),  # not a kernel dtype
    (((16, 16), (16, 16)), np.int64, False),
]


@pytest.mark.parametrize("shape, dtype, kernel", ROUTE_CASES)
def test_rearrange_uses_the_copy_kernel_exactly_where_documented(monkeypatch, shape, dtype, kernel):
    t = _Table(monkeypatch)
    s = KroneckerShape.of(shape)
    W = (np.arange(np.prod(s.matrix_shape)) % 251).reshape(s.matrix_shape).astype(dtype)
    X = rearrange(W, shape)
    assert X.dtype == W.dtype
    np.testing.assert_array_equal(X, _R(W, s))
    assert t.lookups == ([("rearrange", "auto")] if kernel else [])
    assert [c[0] for c in t.calls] == (["rearrange"] if kernel else [])
    if kernel:
        assert t.calls[0][1][0] is W and t.calls[0][1][1] == s
    t.lookups.clear()
    t.calls.clear()
    back = unrearrange(X, s)
    np.testing.assert_array_equal(back, W)
    assert t.lookups == ([("unrearrange", "auto")] if kernel else [])
    if kernel:
        assert t.calls[0][1][0] is X and t.calls[0][1][1] == s


def test_torch_and_strict_arrays_use_their_own_reshape(monkeypatch):
    t = _Table(monkeypatch)
    s = KroneckerShape((16, 16), (16, 16))
    W = _W(s)
    for x in (torch.from_numpy(W), xs.asarray(W)):
        X = rearrange(x, s)
        assert type(X) is type(x)
        np.testing.assert_array_equal(np.asarray(X), _R(W, s))
        np.testing.assert_array_equal(np.asarray(unrearrange(X, s)), W)
    assert t.lookups == []


def test_rearrange_messages_are_whole():
    s = KroneckerShape((2, 3), (2, 2))
    msg = (r"^{} must be an array \(NumPy, CuPy, torch, \.\.\.\), got list; wrap it with "
           r"numpy\.asarray first$")  # fmt: skip
    with pytest.raises(TypeError, match=msg.format("W")):
        rearrange([[1.0]], s)
    with pytest.raises(TypeError, match=msg.format("X")):
        unrearrange([[1.0]], s)
    with pytest.raises(ValueError, match=r"^W must be a 2-D array, got shape \(24,\)$"):
        rearrange(np.zeros(24), s)
    with pytest.raises(ValueError, match=r"^X must be a 2-D array, got shape \(2, 3, 4\)$"):
        unrearrange(np.zeros((2, 3, 4)), s)
    with pytest.raises(ValueError, match=r"^W of shape \(6, 4\) does not match the Kronecker"):
        rearrange(np.zeros((6, 4)), s)
    msg = (r"^X of shape \(4, 6\) does not match the rearranged shape \(m1·n1, m2·n2\) = "
           r"\(6, 4\) of A \(2, 3\) ⊗ B \(2, 2\)$")  # fmt: skip
    with pytest.raises(ValueError, match=msg):
        unrearrange(np.zeros((4, 6)), s)
    with pytest.raises(ValueError, match=r"^shape must be a KroneckerShape"):
        rearrange(np.zeros((4, 6)), (2, 3))
    np.testing.assert_array_equal(rearrange(_W(s), ((2, 3), (2, 2))), _R(_W(s), s))


# --------------------------------------------------------------------------------------
# KroneckerSum: construction, messages, products of every operand rank
# --------------------------------------------------------------------------------------
def test_kronecker_sum_refuses_with_whole_messages():
    A, B = np.ones((2, 3, 2)), np.ones((2, 2, 4))
    for bad, shown in ((np.ones((3, 2)), r"\(3, 2\)"), ([1.0], "list")):
        msg = rf"^A must be a 3-D array of shape \(rank, rows, cols\), got {shown}$"
        with pytest.raises(ValueError, match=msg):
            KroneckerSum(bad, B)
    with pytest.raises(ValueError, match=r"^B must be a 3-D array of shape .*got \(2, 4\)$"):
        KroneckerSum(A, np.ones((2, 4)))
    with pytest.raises(TypeError, match=r"^A must have a real floating dtype \(float32 or float"):
        KroneckerSum(A.astype(int), B)
    with pytest.raises(TypeError, match=r"^B must have a real floating dtype .* got int64;"):
        KroneckerSum(A, B.astype(np.int64))
    with pytest.raises(ValueError, match=r"^B must not be empty, got shape \(2, 0, 4\)$"):
        KroneckerSum(A, np.ones((2, 0, 4)))
    msg = (r"^A and B must hold the same number of terms \(rank\): A\.shape\[0\] = 2, "
           r"B\.shape\[0\] = 3$")  # fmt: skip
    with pytest.raises(ValueError, match=msg):
        KroneckerSum(A, np.ones((3, 2, 4)))
    with pytest.raises(TypeError, match=r"^A and B must share a dtype, got float64 and float32$"):
        KroneckerSum(A, B.astype(np.float32))
    with pytest.raises(TypeError, match=r"^tqla needs arrays of one array library .*got Tensor, "):
        KroneckerSum(A, torch.from_numpy(B))
    K = KroneckerSum(A * np.nan, B)  # the factors need not be finite
    assert K.A is not A and np.isnan(K.A).all() and K.B is B and K.xp is np
    want = "KroneckerSum(shape=(6, 8), A=(3, 2), B=(2, 4), rank=2, n_params=28, dtype=float64)"
    assert repr(KroneckerSum(A, B)) == want


def _sum(seed=0, shape=((3, 2), (2, 4)), r=2, lib="numpy"):
    s = KroneckerShape.of(shape)
    g = np.random.default_rng(seed)
    A, B = g.standard_normal((r, *s.a)), g.standard_normal((r, *s.b))
    dense = sum(np.kron(A[k], B[k]) for k in range(r))
    if lib == "torch":
        A, B = torch.from_numpy(A), torch.from_numpy(B)
    return KroneckerSum(A, B), dense


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("shape", [((3, 2), (2, 4)), ((2, 5), (4, 1)), ((1, 3), (3, 2))])
def test_products_of_every_operand_rank(lib, shape):
    K, D = _sum(1, shape, 2, lib)
    M, N = D.shape
    g = np.random.default_rng(2)
    conv = torch.from_numpy if lib == "torch" else (lambda a: a)
    tol = dict(rtol=1e-12, atol=1e-12)
    for xshape in [(N,), (N, 3), (2, N, 3), (2, 3, N, 1)]:
        X = g.standard_normal(xshape)
        Y = K @ conv(X)
        want = np.einsum("mn,...nk->...mk", D, X if X.ndim > 1 else X[:, None])
        want = want[:, 0] if X.ndim == 1 else want
        assert tuple(Y.shape) == want.shape
        np.testing.assert_allclose(np.asarray(Y), want, **tol)
    for xshape in [(M,), (3, M), (2, 3, M)]:
        X = g.standard_normal(xshape)
        Y = conv(X) @ K
        assert tuple(Y.shape) == (*xshape[:-1], N)
        np.testing.assert_allclose(np.asarray(Y), X @ D, **tol)
    np.testing.assert_allclose(np.asarray(K.to_dense()), D, **tol)
    R = np.asarray(K.rearranged())
    np.testing.assert_allclose(R, _R(D, K.kshape), **tol)
    K32 = K.astype(torch.float32 if lib == "torch" else np.float32)
    assert K32.dtype == K32.A.dtype == K32.B.dtype and K32.rank == 2
    np.testing.assert_allclose(np.asarray(K32.to_dense()), D, rtol=1e-5, atol=1e-5)


def test_product_messages_are_whole():
    K, _ = _sum()  # shape (6, 8)
    msg = (r"^X must be an array of the factors' library, got list; wrap it with "
           r"numpy\.asarray / torch\.as_tensor first$")  # fmt: skip
    with pytest.raises(TypeError, match=msg):
        K @ [1.0] * 8
    with pytest.raises(TypeError, match=msg):
        K.rmatmat([1.0] * 6)
    for X in (np.float64(1.0) * np.ones(()), np.ones(6), np.ones((6, 2)), np.ones((8, 2, 8))):
        shown = re.escape(str(tuple(X.shape)))
        rule = r"^K @ X needs X with 8 rows \(K has shape \(6, 8\)\), got shape "
        with pytest.raises(ValueError, match=rule + shown + "$"):
            K.matmat(X)
    for X in (np.ones(()), np.ones(8), np.ones((6, 8))):
        shown = re.escape(str(tuple(X.shape)))
        rule = r"^X @ K needs X with 6 columns \(K has shape \(6, 8\)\), got shape "
        with pytest.raises(ValueError, match=rule + shown + "$"):
            K.rmatmat(X)
    with pytest.raises(TypeError, match=r"^X must have the factors' dtype float64, got float32$"):
        K.rmatmat(np.ones(6, dtype=np.float32))
    with pytest.raises(TypeError, match=r"^X must have the factors' dtype float64, got float32$"):
        K.matmat(np.ones(8, dtype=np.float32))


# --------------------------------------------------------------------------------------
# kron_svd: routes, kernels and every argument
# --------------------------------------------------------------------------------------
class _Calls:
    def __init__(self, monkeypatch, *names):
        self.log: list[tuple[str, tuple, dict]] = []
        for name in names:
            real = getattr(tk, name)

            def spy(*args, _real=real, _name=name, **kwargs):
                self.log.append((_name, args, kwargs))
                return _real(*args, **kwargs)

            monkeypatch.setattr(tk, name, spy)

    def names(self):
        return [c[0] for c in self.log]

    def args(self, name):
        return [c[1] for c in self.log if c[0] == name]


ROUTE_FNS = ("choose_svd_method", "_check_svd_memory", "_svd_gram", "svd_rows")


def test_defaults_are_rank_one_auto_auto_and_no_ceiling(monkeypatch):
    calls = _Calls(monkeypatch, *ROUTE_FNS)
    s = KroneckerShape((3, 2), (2, 4))
    W = _W(s)
    K = kron_svd(W, s)
    assert K.rank == 1
    assert calls.names() == ["choose_svd_method", "_check_svd_memory", "_svd_gram"]
    assert calls.args("choose_svd_method") == [(s, 1)]
    xp, W0, s0, r, method, kernel, mb = calls.args("_check_svd_memory")[0]
    assert (xp, W0, s0, r, method, kernel, mb) == (np, W, s, 1, "gram", "auto", None)
    assert calls.args("_svd_gram")[0][1:] == (W, s, 1, "auto")
    calls.log.clear()
    kron_svd(W, s, method="randomized")  # rng=None: fresh entropy
    assert calls.args("svd_rows")[0][4] is None


@pytest.mark.parametrize("method", ["full", "randomized"])
def test_svd_routes_get_the_rearrangement_rank_and_rng(monkeypatch, method):
    calls = _Calls(monkeypatch, *ROUTE_FNS)
    s = KroneckerShape((3, 4), (5, 2))
    W = _W(s, 3)
    g = np.random.default_rng(11)
    K = kron_svd(W, ((3, 4), (5, 2)), 3, method=method, rng=g, kernel="numba", max_bytes=10**9)
    assert calls.names() == ["_check_svd_memory", "svd_rows"]
    assert calls.args("_check_svd_memory")[0][2:] == (s, 3, method, "numba", 10**9)
    xp, X, r, m, rng = calls.args("svd_rows")[0]
    assert xp is np and (r, m, rng) == (3, method, g)
    np.testing.assert_array_equal(X, _R(W, s))
    # A = √σ·unvec(u), B = √σ·unvec(v) with the rows svd_rows returned
    Ur, Vr, sig = tk.svd_rows(np, _R(W, s), 3, method, 11)
    root = np.sqrt(sig)[:, None]
    np.testing.assert_allclose(K.A.reshape(3, -1), Ur * root, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(K.B.reshape(3, -1), Vr * root, rtol=1e-13, atol=1e-13)
    assert K.A.flags.c_contiguous and K.B.flags.c_contiguous


@pytest.mark.parametrize("kernel", ["auto", "numpy", "numba", "array_api"])
@pytest.mark.parametrize("shape", [((3, 4), (5, 2)), ((5, 2), (3, 1)), ((2, 3), (3, 2))])
def test_gram_route_runs_the_kernel_asked_for_on_the_small_side(monkeypatch, kernel, shape):
    pytest.importorskip("numba")
    s = KroneckerShape.of(shape)
    W = _W(s, 4)
    ref = kron_svd(W, s, 2, method="full")
    t = _Table(monkeypatch)
    K = kron_svd(W, s, 2, method="gram", kernel=kernel)
    impl = "numpy" if kernel == "auto" else kernel
    # (the first look-up is the memory check's: does the kernel read W in place?)
    assert t.lookups == [("rearranged_gram", kernel)] * 2 + [("rearranged_matmul", impl)]
    q, p = s.rearranged_shape
    side = "right" if p <= q else "left"
    (g_name, g_args), (m_name, m_args) = t.calls
    assert g_name == "rearranged_gram" and g_args[0] is W and g_args[1:3] == (s, side)
    assert m_name == "rearranged_matmul" and m_args[0] is W and m_args[1:3] == (s, side)
    X = g_args[3]
    assert m_args[4] is X
    if impl == "numba":
        assert X is None  # read in place
    else:
        np.testing.assert_array_equal(X, _R(W, s))
        assert impl != "numpy" or X.flags.c_contiguous
    np.testing.assert_allclose(K.A, ref.A, atol=1e-9)
    np.testing.assert_allclose(K.B, ref.B, atol=1e-9)
    assert K.A.flags.c_contiguous and K.B.flags.c_contiguous


def test_gram_route_of_a_large_matrix_rearranges_with_the_copy_kernel(monkeypatch):
    s = KroneckerShape((16, 16), (16, 16))
    W = _W(s, 5)
    t = _Table(monkeypatch)
    kron_svd(W, s, 1, method="gram", kernel="numpy")
    assert ("rearrange", "auto") in t.lookups
    assert t.calls[0][0] == "rearrange" and t.calls[0][1][0] is W


def test_gram_route_refuses_nan_and_falls_back_to_full_for_huge_entries(monkeypatch):
    s = KroneckerShape((3, 2), (2, 4))
    calls = _Calls(monkeypatch, "_svd_gram", "svd_rows")
    W = _W(s)
    W[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"^W must be finite, but it holds NaN or infinity$"):
        kron_svd(W, s, method="gram")
    with pytest.raises(ValueError, match=r"^W must be finite, but it holds NaN or infinity$"):
        kron_svd(W, s, method="full")
    calls.log.clear()
    H = _W(s) * 1e200
    K = kron_svd(H, s, 2, method="gram")
    assert calls.names() == ["_svd_gram", "svd_rows"] and calls.args("svd_rows")[0][3] == "full"
    F = kron_svd(H, s, 2, method="full")
    np.testing.assert_array_equal(K.A, F.A)
    np.testing.assert_array_equal(K.B, F.B)


@pytest.mark.parametrize("method", ["auto", "gram", "full", "randomized"])
def test_half_precision_is_the_float32_call_with_every_argument(monkeypatch, method):
    calls = _Calls(monkeypatch, "kron_svd")
    s = KroneckerShape((3, 2), (2, 4))
    W = _W(s, 6, np.float16)
    K = tk.kron_svd(W, s, 2, method=method, rng=3, kernel="numpy", max_bytes=10**8)
    (_, a0, k0), (_, a1, k1) = calls.log
    assert a1[0].dtype == np.float32 and np.array_equal(a1[0], W.astype(np.float32))
    assert a1[1:] == (s, 2)
    routed = "gram" if method == "auto" else method
    assert k1 == {"method": routed, "rng": 3, "kernel": "numpy", "max_bytes": 10**8}
    K32 = kron_svd(W.astype(np.float32), s, 2, method=routed, rng=3, kernel="numpy")
    assert K.dtype == K.A.dtype == K.B.dtype == np.float16
    np.testing.assert_array_equal(K.A, K32.A.astype(np.float16))
    np.testing.assert_array_equal(K.B, K32.B.astype(np.float16))


@pytest.mark.parametrize(
    "shape, rank, want",
    [
        (((1, 512), (1, 600)), 60, "gram"),
        (((2, 256), (3, 200)), 1, "gram"),
        (((1, 513), (1, 600)), 51, "randomized"),
        (((1, 513), (1, 600)), 52, "full"),
        (((600, 1), (513, 1)), 1, "randomized"),
    ],
)
def test_choose_svd_method_at_its_thresholds(shape, rank, want):
    assert tk.GRAM_MAX_SIDE == 512
    assert tk.choose_svd_method(shape, rank) == want
    assert tk.choose_svd_method(KroneckerShape.of(shape), np.int64(rank)) == want


# --------------------------------------------------------------------------------------
# Memory ceiling
# --------------------------------------------------------------------------------------
def _need(s, rank, method, b, in_place=False):
    q, p = s.rearranged_shape
    k = min(q, p)
    if method == "gram":
        return (0 if in_place else q * p * b) + 2 * k * k * b + rank * (q + p) * b
    if method == "full":
        return 2 * q * p * b + (q + p) * k * b + 4 * k * k * b
    ell = min(rank + 10, k)
    return q * p * b + 3 * (q + p) * ell * b + 2 * ell * ell * b


def test_svd_memory_counts_the_copy_by_default():
    s = KroneckerShape((3, 4), (5, 2))
    for method in ("gram", "full", "randomized"):
        assert tk.svd_memory(s, 2, method, 8) == _need(s, 2, method, 8)
        assert tk.svd_memory(((3, 4), (5, 2)), np.int64(2), method, np.int64(4)) == _need(
            s, 2, method, 4
        )


@pytest.mark.parametrize("method", ["gram", "full", "randomized"])
def test_memory_error_message_is_whole(method):
    s = KroneckerShape((3, 2), (2, 4))
    need = _need(s, 1, method, 8)
    msg = (
        f"kron_svd(method={method!r}) of W (6, 8) with A (3, 2) ⊗ B (2, 4): its "
        f"rearrangement R(W) is 6×8 and the route needs about {fmt_bytes(need)} of "
        f"temporaries (tqla.kron.svd_memory), over max_bytes (100 B). Use method='gram' "
        f"(a min(q, p)² = 6² Gram matrix) or 'randomized', factor shapes with a smaller "
        f"side, or pass a larger max_bytes= if the memory is there."
    )
    with pytest.raises(MemoryError, match="^" + re.escape(msg) + "$"):
        kron_svd(_W(s), s, method=method, max_bytes=100)
    with pytest.raises(TypeError, match=r"^max_bytes must be None or a positive number of "):
        kron_svd(_W(s), s, method=method, max_bytes="1e9")


@pytest.mark.parametrize("lib", ["numpy", "torch", "array_api_strict"])
def test_without_max_bytes_host_arrays_are_held_to_the_available_memory(monkeypatch, lib):
    s = KroneckerShape((3, 2), (2, 4))
    W = _W(s)
    W = {"numpy": W, "torch": torch.from_numpy(W), "array_api_strict": xs.asarray(W)}[lib]
    need = _need(s, 1, "full", 8)
    monkeypatch.setattr(tk, "available_memory", lambda: need - 1)
    with pytest.raises(MemoryError, match=r"over the memory available now \(2\.5 KiB\)\. Use"):
        kron_svd(W, s, method="full")
    monkeypatch.setattr(tk, "available_memory", lambda: need)
    kron_svd(W, s, method="full")
    monkeypatch.setattr(tk, "available_memory", lambda: None)
    kron_svd(W, s, method="full")


def test_on_host_and_gram_kernel_helpers():
    assert tk._on_host(np, np.ones(2))
    t = torch.ones(2)
    assert tk._on_host(tk.array_namespace(t), t)
    a = xs.asarray([1.0])
    assert tk._on_host(xs, a)
    assert not tk._on_host(xs, xs.asarray([1.0], device=xs.Device("device1")))
    m = torch.empty(2, device="meta")
    assert not tk._on_host(tk.array_namespace(t), m)
    W = np.ones((2, 2))
    assert tk._gram_kernel("auto", W) == "numpy"
    assert tk._gram_kernel("array_api", W) == "array_api"
    assert tk._gram_kernel("nope", W) is None
    assert tk._gram_kernel("numba", t) is None


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("kernel", ["numba", "numpy", "auto"])
def test_only_the_numba_kernel_on_c_ordered_input_is_counted_in_place(order, kernel):
    pytest.importorskip("numba")
    s = KroneckerShape((3, 2), (2, 5))
    W = np.asarray(_W(s, 2), order=order)
    need = _need(s, 2, "gram", 8, in_place=order == "C" and kernel == "numba")
    kron_svd(W, s, 2, method="gram", kernel=kernel, max_bytes=need)
    with pytest.raises(MemoryError):
        kron_svd(W, s, 2, method="gram", kernel=kernel, max_bytes=need - 1)


def test_an_unknown_kernel_is_refused_where_it_is_used():
    s = KroneckerShape((3, 2), (2, 5))
    W = _W(s)
    with pytest.raises(MemoryError):  # not in place: the copy is counted
        kron_svd(W, s, 2, method="gram", kernel="nope", max_bytes=_need(s, 2, "gram", 8) - 1)
    with pytest.raises(ValueError, match=r"^kernel must be 'auto' or one of .*got 'nope'$"):
        kron_svd(W, s, 2, method="gram", kernel="nope")


def test_torch_half_precision_counts_the_float32_copy():
    s = KroneckerShape((3, 2), (2, 5))
    W = torch.from_numpy(_W(s)).to(torch.bfloat16)
    need = _need(s, 1, "gram", 4) + 6 * 10 * 4
    K = kron_svd(W, s, method="gram", max_bytes=need)
    assert K.dtype == torch.bfloat16
    with pytest.raises(MemoryError):
        kron_svd(W, s, method="gram", max_bytes=need - 1)


def test_kron_singular_values_is_the_svd_of_the_rearrangement():
    s = KroneckerShape((3, 2), (2, 4))
    W = _W(s, 7)
    np.testing.assert_array_equal(
        tk.kron_singular_values(W, s), np.linalg.svd(_R(W, s), compute_uv=False)
    )
    h = W.astype(np.float16)
    sv = tk.kron_singular_values(h, s)
    assert sv.dtype == np.float16
    want = np.linalg.svd(_R(h, s).astype(np.float32), compute_uv=False).astype(np.float16)
    np.testing.assert_array_equal(sv, want)
    W[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"^W must be finite, but it holds NaN or infinity$"):
        tk.kron_singular_values(W, s)
    with pytest.raises(ValueError, match=r"^W must be 2-D, got 1-D array of shape \(48,\)$"):
        tk.kron_singular_values(np.ones(48), s)


@pytest.mark.parametrize("lib", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_ceiling_counts_the_dtype_of_every_library(lib, dtype):
    """Bytes per entry from the dtype on every library (array_api_strict's dtypes have no
    itemsize: its float32 arrays were counted at 8 bytes)."""
    s = KroneckerShape((3, 2), (2, 5))
    W = _W(s, 1, np.dtype(dtype))
    W = {"numpy": W, "torch": torch.from_numpy(W), "array_api_strict": xs.asarray(W)}[lib]
    need = _need(s, 2, "full", np.dtype(dtype).itemsize)
    kron_svd(W, s, 2, method="full", max_bytes=need)
    with pytest.raises(MemoryError, match=r"^kron_svd\(method='full'\) of W \(6, 10\) with"):
        kron_svd(W, s, 2, method="full", max_bytes=need - 1)


def test_finiteness_is_checked_once_and_free_on_the_gram_route(monkeypatch):
    """The Gram route learns finiteness from its Gram matrix: no separate pass over W;
    the other routes check W once, by name."""
    import tqla._array as arr

    log = []
    real = arr.check_finite

    def spy(xp, x, name):
        log.append((xp, x, name))
        return real(xp, x, name)

    monkeypatch.setattr(arr, "check_finite", spy)
    monkeypatch.setattr(tk, "check_finite", spy)
    s = KroneckerShape((3, 2), (2, 4))
    W = _W(s)
    kron_svd(W, s, method="gram")
    assert log == []
    for method in ("full", "randomized"):
        kron_svd(W, s, method=method, rng=0)
        assert len(log) == 1 and log[0][0] is np and log[0][1] is W and log[0][2] == "W"
        log.clear()


def test_overflowing_gram_matrices_warn_nothing():
    import warnings

    from tqla import truncated_svd

    s = KroneckerShape((3, 2), (2, 4))
    H = _W(s) * 1e200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kron_svd(H, s, 2, method="gram")
        truncated_svd(H, 2, method="gram")
        truncated_svd(H.T, 2, method="gram")
        kron_svd(H, s, 2, method="gram", kernel="array_api")


def test_kron_svd_messages_name_w_whole():
    s = KroneckerShape((3, 2), (2, 4))
    cases = [
        ([[1.0]], TypeError, "W must be an array (NumPy, CuPy, torch, ...), got list; "
                             "wrap it with numpy.asarray first"),
        (np.ones(48), ValueError, "W must be 2-D, got 1-D array of shape (48,)"),
        (np.ones((6, 8), int), TypeError, "W must have a real floating dtype (float32 or "
         "float64), got int64; convert it with .astype(float64) / .to(torch.float64)"),
        (np.ones((0, 8)), ValueError, "W must not be empty, got shape (0, 8)"),
        (np.ones((8, 6)), ValueError, "W of shape (8, 6) does not match the Kronecker shape "
         "A (3, 2) ⊗ B (2, 4), which needs (3·2, 2·4) = (6, 8)"),
        (torch.ones(6, 8, device="meta"), ValueError, "W is a tensor on the 'meta' device: it "
         "has a shape but no values. Materialise it first (e.g. module.to_empty(device='cpu') "
         "and then load the weights, or build the model on a real device)"),
    ]  # fmt: skip
    for W, exc, msg in cases:
        for method in ("gram", "full"):
            with pytest.raises(exc) as info:
                kron_svd(W, s, method=method)
            assert str(info.value) == msg
    with pytest.raises(ValueError) as info:
        kron_svd(_W(s), s, 7)
    assert str(info.value) == (
        "rank must satisfy 1 <= rank <= min(m1·n1, m2·n2) = min(6, 8) = 6 for A (3, 2) ⊗ "
        "B (2, 4), got 7"
    )
    with pytest.raises(ValueError) as info:
        kron_svd(_W(s), s, method="qr")
    assert str(info.value) == "method must be one of 'auto', 'gram', 'full', 'randomized', got 'qr'"


@pytest.mark.parametrize("method", ["gram", "full", "randomized"])
@pytest.mark.parametrize("kernel", ["auto", "array_api"])
def test_kron_svd_and_products_stay_on_a_second_device(method, kernel):
    """array_api_strict's "device1" refuses to combine with its CPU device: every array
    tqla creates on the way must be put on W's device (as on a GPU)."""
    dev, cpu = xs.Device("device1"), xs.Device("CPU_DEVICE")
    s = KroneckerShape((3, 2), (2, 4))
    W = _W(s, 8)
    Wd = xs.asarray(W, device=dev)

    def host(a):
        return np.asarray(a.to_device(cpu))

    K = kron_svd(Wd, s, 2, method=method, rng=1, kernel=kernel)
    ref = kron_svd(W, s, 2, method=method, rng=1)
    assert K.A.device == K.B.device == dev
    np.testing.assert_allclose(host(K.A), ref.A, atol=1e-10)
    np.testing.assert_allclose(host(K.B), ref.B, atol=1e-10)
    x = np.random.default_rng(0).standard_normal((2, 8, 3))
    y = np.random.default_rng(0).standard_normal((2, 6))
    np.testing.assert_allclose(host(K @ xs.asarray(x, device=dev)), ref @ x, atol=1e-10)
    np.testing.assert_allclose(host(K.rmatmat(xs.asarray(y, device=dev))), y @ ref, atol=1e-10)
    np.testing.assert_allclose(host(K.to_dense()), ref.to_dense(), atol=1e-10)
    X = rearrange(Wd, s)
    assert X.device == dev and unrearrange(X, s).device == dev
    sv = tk.kron_singular_values(Wd, s)
    assert sv.device == dev
    np.testing.assert_allclose(host(sv), tk.kron_singular_values(W, s), atol=1e-12)


@pytest.mark.parametrize("kernel", ["numpy", "array_api"])
def test_an_infinite_entry_is_reported_as_a_bad_w_not_a_warning(kernel):
    """inf·0 in the Gram matrix is an invalid operation: the Gram route silences it and
    reports W (seed-11 survivor: ``invalid="ignore"`` dropped)."""
    import warnings

    from tqla import truncated_svd

    s = KroneckerShape((3, 2), (2, 4))
    W = np.zeros(s.matrix_shape)
    W[0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^W must be finite, but it holds NaN or infinity$"):
            kron_svd(W, s, method="gram", kernel=kernel)
        for X in (W, W.T):
            with pytest.raises(ValueError, match=r"^X must be finite, but it holds NaN or inf"):
                truncated_svd(X, 1, method="gram")


class _ShapeOnly:
    """Has a shape (of the right size) but no ndim: not an array."""

    shape = (8,)


class _NdimOnly:
    """Has an ndim but no shape: not an array."""

    ndim = 1


def test_products_need_both_shape_and_ndim():
    """An operand is an array only when it has ``shape`` AND ``ndim``: lacking either one
    is the library-type TypeError (whole message naming the type), never an AttributeError."""
    K, _ = _sum()  # shape (6, 8)
    for X in (_ShapeOnly(), _NdimOnly()):
        msg = (rf"^X must be an array of the factors' library, got {type(X).__name__}; "
               r"wrap it with numpy\.asarray / torch\.as_tensor first$")  # fmt: skip
        for product in (K.matmat, K.rmatmat, K.__matmul__):
            with pytest.raises(TypeError, match=msg):
                product(X)
