"""tqla.svd stated whole (fifth mutation pass): every route of :func:`tqla.truncated_svd`
against a restatement of its documented algorithm, which route runs for every method
(spied), every argument handed on (rank, method, rng, dtype), the sign rule on every route
and at its ties, and every message matched whole.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tqla.svd as tsvd
from tqla import truncated_svd

ROUTES = ("gram", "full", "randomized")


# --------------------------------------------------------------------------------------
# Restatements of the documented algorithms (independent of tqla's code)
# --------------------------------------------------------------------------------------
def _signs(S: np.ndarray) -> np.ndarray:
    """+-1 per row: the first entry of largest magnitude of each row made positive."""
    out = np.ones((S.shape[0], 1))
    for k, row in enumerate(S):
        j = int(np.argmax(np.abs(row)))
        if row[j] < 0:
            out[k] = -1.0
    return out


def _sign_rule(U: np.ndarray, Vh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rule on the smaller side (Vh when n <= m, else U's columns)."""
    sg = _signs(Vh) if Vh.shape[1] <= U.shape[0] else _signs(U.T)
    return U * sg.T, Vh * sg


def _ref_full(X, r):
    U, s, Vh = np.linalg.svd(X, full_matrices=False)
    U, Vh = _sign_rule(U[:, :r], Vh[:r])
    return U, s[:r], Vh


def _ref_randomized(X, r, seed):
    rng = np.random.default_rng(seed)
    q, p = X.shape
    ell = min(r + 10, q, p)
    Q = np.linalg.qr(X @ rng.standard_normal((p, ell)).astype(X.dtype))[0]
    for _ in range(4):
        Q = np.linalg.qr(X @ np.linalg.qr(X.T @ Q)[0])[0]
    Ub, s, Vh = np.linalg.svd(Q.T @ X, full_matrices=False)
    U, Vh = _sign_rule(Q @ Ub[:, :r], Vh[:r])
    return U, s[:r], Vh


def _ref_gram(X, r):
    Xd = X.astype(np.float64)
    right = X.shape[1] <= X.shape[0]
    A = Xd if right else Xd.T  # the small side is A's columns
    lam, V = np.linalg.eigh(A.T @ A)
    lam, V = lam[::-1][:r], V[:, ::-1][:, :r]
    V = V * _signs(V.T).T
    s = np.sqrt(np.maximum(lam, 0.0))
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    big = (A @ V) * inv
    U, Vh = (big, V.T) if right else (V, big.T)
    return U.astype(X.dtype), s.astype(X.dtype), Vh.astype(X.dtype)


REFS = {
    "full": lambda X, r, seed: _ref_full(X, r),
    "randomized": _ref_randomized,
    "gram": lambda X, r, seed: _ref_gram(X, r),
}


@st.composite
def problems(draw, max_dim=9):
    m, n = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    r = draw(st.integers(1, min(m, n)))
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    return np.random.default_rng(seed).standard_normal((m, n)).astype(dtype), r, seed


@given(case=problems(), method=st.sampled_from(ROUTES))
@example(case=(np.random.default_rng(0).standard_normal((30, 20)), 3, 0), method="randomized")
@example(case=(np.random.default_rng(1).standard_normal((12, 25)), 4, 1), method="randomized")
@example(case=(np.random.default_rng(2).standard_normal((5, 5)), 5, 2), method="gram")
@example(case=(np.random.default_rng(3).standard_normal((4, 7)), 2, 3), method="gram")
def test_every_route_is_its_documented_algorithm(case, method):
    """Each route equals a restatement of its algorithm (with the sign rule), not only a
    good approximation: the randomized route with oversampling 10 and 4 QR power
    iterations from ``rng``, the Gram route in float64 on the small side."""
    X, r, seed = case
    U, s, Vh = truncated_svd(X, r, method=method, rng=seed)
    Ur, sr, Vr = REFS[method](X, r, seed)
    for got, want in ((U, Ur), (s, sr), (Vh, Vr)):
        assert got.dtype == X.dtype and got.shape == want.shape
    eps = np.finfo(X.dtype).eps
    scale = float(np.linalg.norm(X, 2))
    np.testing.assert_allclose(s, sr, atol=50 * eps * scale)
    # vectors: compare the products with s (unique where singular values are separated
    # only, so compare the weighted vectors of this exact restatement)
    sv = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    gaps = np.diff(-np.concatenate([sv[:r], [0.0]]))
    if gaps.min() > 1e-3 * sv[0]:
        tol = (1e3 if method == "gram" else 50) * eps * max(scale, 1.0) / gaps.min()
        np.testing.assert_allclose(U, Ur, atol=tol)
        np.testing.assert_allclose(Vh, Vr, atol=tol)
    assert U.flags.c_contiguous and Vh.flags.c_contiguous


class _Calls:
    """Records the calls of functions of tqla.svd (calling through)."""

    def __init__(self, monkeypatch, *names):
        self.log: list[tuple[str, tuple, dict]] = []
        for name in names:
            real = getattr(tsvd, name)

            def spy(*args, _real=real, _name=name, **kwargs):
                self.log.append((_name, args, kwargs))
                return _real(*args, **kwargs)

            monkeypatch.setattr(tsvd, name, spy)

    def names(self):
        return [c[0] for c in self.log]


def test_each_method_runs_its_route_with_every_argument(monkeypatch):
    calls = _Calls(monkeypatch, "_gram_svd", "svd_rows", "_randomized", "auto_method")
    X = np.random.default_rng(0).standard_normal((7, 5))
    truncated_svd(X, 2, method="gram")
    assert calls.names() == ["_gram_svd"]
    assert calls.log[0][1][0] is np and calls.log[0][1][1] is X and calls.log[0][1][2] == 2
    calls.log.clear()
    truncated_svd(X, 3, method="full", rng=5)
    assert calls.names() == ["svd_rows"]
    assert calls.log[0][1][1:] == (X, 3, "full", 5) and calls.log[0][1][0] is np
    calls.log.clear()
    g = np.random.default_rng(9)
    truncated_svd(X, 2, method="randomized", rng=g)
    assert calls.names() == ["svd_rows", "_randomized"]
    assert calls.log[0][1][1:] == (X, 2, "randomized", g)
    assert calls.log[1][1][1:] == (X, 2, g) and calls.log[1][2] == {}
    calls.log.clear()
    truncated_svd(X, 2)  # method="auto" by default: a small side of 5 <= 4096 -> gram
    assert calls.names() == ["auto_method", "_gram_svd"]
    assert calls.log[0][1] == (5, 2, 4096)
    calls.log.clear()
    truncated_svd(X.T, 1, method="auto")
    assert calls.log[0][1] == (5, 1, 4096)
    calls.log.clear()
    truncated_svd(X, 2, method="randomized")  # rng=None: fresh entropy
    assert calls.log[0][1][4] is None and isinstance(calls.log[1][1][3], np.random.Generator)


@pytest.mark.parametrize("rank, route", [(1, "randomized"), (2, "full")])
def test_auto_leaves_the_gram_route_above_its_side(monkeypatch, rank, route):
    monkeypatch.setattr(tsvd, "TRUNCATED_GRAM_MAX_SIDE", 11)
    calls = _Calls(monkeypatch, "_gram_svd", "svd_rows", "_randomized")
    X = np.random.default_rng(0).standard_normal((12, 15))
    U, s, Vh = truncated_svd(X, rank, rng=4)
    assert [c[1][3] for c in calls.log if c[0] == "svd_rows"] == [route]
    assert "_gram_svd" not in calls.names()
    Ur, sr, Vr = truncated_svd(X, rank, method=route, rng=4)
    np.testing.assert_array_equal(s, sr)


def test_constants_are_the_documented_ones():
    assert tsvd.TRUNCATED_GRAM_MAX_SIDE == 4096
    assert tsvd.METHODS == ("auto", "gram", "full", "randomized")


@pytest.mark.parametrize("gmax", [0, 5, 12])
def test_auto_method_is_the_documented_rule(gmax):
    for small in range(1, 40):
        for rank in range(1, small + 1):
            want = "gram" if small <= gmax else "randomized" if 10 * rank <= small else "full"
            assert tsvd.auto_method(small, rank, gmax) == want, (small, rank, gmax)


def test_check_method_returns_the_method_or_names_the_rule():
    for m in ("auto", "gram", "full", "randomized"):
        assert tsvd.check_method(m) == m
    for bad, shown in (("qr", "'qr'"), (None, "None"), ("Full", "'Full'")):
        msg = f"^method must be one of 'auto', 'gram', 'full', 'randomized', got {shown}$"
        with pytest.raises(ValueError, match=msg):
            tsvd.check_method(bad)


@pytest.mark.parametrize("method", ["auto", *ROUTES])
@pytest.mark.parametrize("dtype", [np.float16])
def test_half_precision_is_the_float32_call_cast_back(monkeypatch, method, dtype):
    calls = _Calls(monkeypatch, "truncated_svd")
    X = np.random.default_rng(0).standard_normal((9, 6)).astype(dtype)
    U, s, Vh = tsvd.truncated_svd(X, 2, method=method, rng=7)
    (_, args0, kw0), (_, args1, kw1) = calls.log
    assert args1[0].dtype == np.float32 and np.array_equal(args1[0], X.astype(np.float32))
    assert args1[1] == 2 and kw1 == {"method": method, "rng": 7}
    U32, s32, V32 = truncated_svd(X.astype(np.float32), 2, method=method, rng=7)
    for got, want in ((U, U32), (s, s32), (Vh, V32)):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want.astype(dtype))


def test_rng_reaches_the_randomized_route():
    X = np.random.default_rng(0).standard_normal((40, 30))
    g = np.random.default_rng(3)
    state = g.bit_generator.state
    a = truncated_svd(X, 2, method="randomized", rng=g)
    assert g.bit_generator.state != state  # the generator passed is the one drawn from
    for x, y in zip(a, truncated_svd(X, 2, method="randomized", rng=3), strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a, _ref_randomized(X, 2, 3), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-12)


def test_randomized_route_draws_and_iterates_as_documented(monkeypatch):
    """One Gaussian block of rank + 10 columns (capped at the small side), 1 + 2·4 QR
    factorizations and one thin SVD of the (ell, p) projection."""
    log = []
    for name in ("qr", "svd"):
        real = getattr(np.linalg, name)

        def spy(A, *args, _real=real, _name=name, **kwargs):
            log.append((_name, A.shape, args, kwargs))
            return _real(A, *args, **kwargs)

        monkeypatch.setattr(np.linalg, name, spy)
    X = np.random.default_rng(0).standard_normal((30, 20))
    truncated_svd(X, 3, method="randomized", rng=0)
    assert [c[0] for c in log] == ["qr"] * 9 + ["svd"]
    assert log[0][1] == (30, 13) and log[1][1] == (20, 13) and log[-1][1] == (13, 20)
    assert log[-1][3] == {"full_matrices": False}
    log.clear()
    truncated_svd(X, 15, method="randomized", rng=0)  # 15 + 10 > 20: capped
    assert log[0][1] == (30, 20)
    log.clear()
    truncated_svd(X, 3, method="full")
    assert log == [("svd", (30, 20), (), {"full_matrices": False})]


def test_gram_route_overflow_falls_back_to_full(monkeypatch):
    calls = _Calls(monkeypatch, "_gram_svd", "svd_rows")
    X = np.random.default_rng(0).standard_normal((8, 5)) * 1e200
    out = truncated_svd(X, 2, method="gram")
    assert calls.names() == ["_gram_svd", "svd_rows"] and calls.log[1][1][3] == "full"
    for got, want in zip(out, truncated_svd(X, 2, method="full"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert out[0].flags.c_contiguous
    calls.log.clear()
    assert truncated_svd(X.T, 2, method="gram")[0].flags.c_contiguous


def test_gram_of_float32_input_is_formed_in_float64():
    """A singular value of 3e-4·s[0] is lost in a float32 Gram matrix (its square is
    below float32's resolution of 1), kept in float64."""
    rng = np.random.default_rng(0)
    Q1 = np.linalg.qr(rng.standard_normal((20, 6)))[0]
    Q2 = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    X = ((Q1 * [1.0, 0.5, 3e-4, 2e-4, 1e-4, 5e-5]) @ Q2).astype(np.float32)
    ref = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    for Xi in (X, X.T):
        U, s, Vh = truncated_svd(Xi, 3, method="gram")
        assert s.dtype == U.dtype == Vh.dtype == np.float32
        np.testing.assert_allclose(s, ref[:3], rtol=1e-5)


def test_zero_singular_values_give_zero_vectors_on_the_gram_route():
    """Exactly rank-deficient X (its Gram matrix is exact): the large side's vectors of the
    zero singular values are zero, never NaN; the small side's are unit eigenvectors."""
    X = np.zeros((4, 3))
    X[0, 0], X[1, 2] = 3.0, -2.0
    for Xi in (X, X.T):
        U, s, Vh = truncated_svd(Xi, 3, method="gram")
        np.testing.assert_array_equal(s, [3.0, 2.0, 0.0])
        big, small = (U.T, Vh) if Xi.shape[1] <= Xi.shape[0] else (Vh, U.T)
        np.testing.assert_array_equal(big[2], 0.0)
        assert abs(np.linalg.norm(small[2]) - 1.0) < 1e-12
        np.testing.assert_allclose((U * s) @ Vh, Xi, atol=1e-14)


def test_top_from_gram_clips_negative_eigenvalues_and_orders_them():
    G = np.diag([1.0, -1e-3, 4.0])
    lam, Vt = tsvd.top_from_gram(np, G, 3)
    np.testing.assert_array_equal(lam, [4.0, 1.0, 0.0])
    np.testing.assert_array_equal(np.abs(Vt), [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    lam, Vt = tsvd.top_from_gram(np, G, 1)
    np.testing.assert_array_equal(lam, [4.0])
    assert Vt.shape == (1, 3)


def test_row_signs_make_the_first_largest_entry_positive():
    S = np.array([[-1.0, 1.0], [1.0, -1.0], [0.5, -2.0], [-3.0, 2.0]])
    np.testing.assert_array_equal(tsvd.row_signs(np, S), [[-1.0], [1.0], [-1.0], [-1.0]])
    L, R = np.arange(6.0).reshape(2, 3) - 2.5, np.array([[1.0, -2.0, 0.0], [3.0, 1.0, 1.0]])
    for Li, Ri, dec in ((L, R, "R"), (L[:, :2], R, "L"), (L, R[:, :2], "R")):
        sg = tsvd.row_signs(np, Ri if dec == "R" else Li)
        a, b = tsvd.sign_fix(np, Li, Ri)
        np.testing.assert_array_equal(a, Li * sg)
        np.testing.assert_array_equal(b, Ri * sg)


@pytest.mark.parametrize("method", ROUTES)
def test_sign_rule_ties_on_every_route(method):
    """Vh[0] = (1, -1)/√2: the first of the two largest entries is made positive; at a
    square X the rule is on Vh (n <= m)."""
    X = np.array([[1.0, -1.0], [2.0, -2.0], [0.0, 0.0]])
    for Xi in (X, X[:2], X.T):
        U, s, Vh = truncated_svd(Xi, 1, method=method, rng=0)
        small = Vh[0] if Xi.shape[1] <= Xi.shape[0] else U[:, 0]
        assert small[0] > 0 and abs(abs(small[0]) - np.abs(small).max()) < 1e-12
    Xs = np.random.default_rng(5).standard_normal((4, 4))
    U, s, Vh = truncated_svd(Xs, 4, method=method, rng=0)
    picked = Vh[np.arange(4), np.argmax(np.abs(Vh), axis=1)]
    assert np.all(picked > 0)


def test_inv_or_zero():
    x = np.array([2.0, 0.0, -1.0, 0.5])
    np.testing.assert_array_equal(tsvd.inv_or_zero(np, x), [0.5, 0.0, 0.0, 2.0])


def test_gram_rows_scales_by_the_root_when_asked():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 4))
    G = X.T @ X
    big, small, sigma = tsvd.gram_rows(np, G, 3, lambda V: X @ V, root=True)
    U, s, Vh = _ref_gram(X, 3)
    np.testing.assert_allclose(sigma, s, rtol=1e-12)
    np.testing.assert_allclose(small, Vh * np.sqrt(s)[:, None], atol=1e-12)
    np.testing.assert_allclose(big, U.T * np.sqrt(s)[:, None], atol=1e-12)
    big, small, sigma = tsvd.gram_rows(np, G, 3, lambda V: X @ V, root=False)
    np.testing.assert_allclose(small, Vh, atol=1e-12)
    np.testing.assert_allclose(big, U.T, atol=1e-12)


def test_truncated_svd_messages_are_whole():
    X = np.ones((4, 3))
    cases = [
        (4, ValueError, r"^rank must satisfy 1 <= rank <= min\(m, n\) = 3, got 4$"),
        (0, ValueError, r"^rank must be >= 1, got 0$"),
        (1.0, TypeError, r"^rank must be an integer, got float 1\.0$"),
        (True, TypeError, r"^rank must be an integer, got bool True$"),
    ]
    for rank, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            truncated_svd(X, rank)
    with pytest.raises(ValueError, match=r"^X must be 2-D, got 1-D array of shape \(3,\)$"):
        truncated_svd(np.ones(3), 1)
    with pytest.raises(ValueError, match=r"^X must be finite, but it holds NaN or infinity$"):
        truncated_svd(np.array([[np.inf, 1.0]]), 1)
    with pytest.raises(TypeError, match=r"^rng must be None, an int seed or a numpy\.random"):
        truncated_svd(X, 1, method="randomized", rng=1.5)


@pytest.mark.parametrize("method", ["auto", *ROUTES])
@pytest.mark.parametrize("shape", [(7, 5), (4, 9), (5, 5)])
def test_every_route_stays_on_a_second_device(method, shape):
    """array_api_strict's "device1" refuses to combine with arrays on its CPU device, so a
    helper array created on the default device (a lost ``device=``) fails here as it would
    on a GPU; the results equal NumPy's."""
    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device("device1")
    X = np.random.default_rng(1).standard_normal(shape)
    out = truncated_svd(xs.asarray(X, device=dev), 3, method=method, rng=2)
    want = truncated_svd(X, 3, method=method, rng=2)
    for got, ref in zip(out, want, strict=True):
        assert got.device == dev
        host = np.asarray(got.to_device(xs.Device("CPU_DEVICE")))
        np.testing.assert_allclose(host, ref, atol=1e-10)


def test_gram_of_float32_input_is_formed_in_float64_on_every_backend(backend):
    """The float32 -> float64 cast of the Gram route is explicit on every library (torch
    and array_api_strict have no default float64 for a dtype-less cast)."""
    rng = np.random.default_rng(0)
    Q1 = np.linalg.qr(rng.standard_normal((20, 6)))[0]
    Q2 = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    X = ((Q1 * [1.0, 0.5, 3e-4, 2e-4, 1e-4, 5e-5]) @ Q2).astype(np.float32)
    ref = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    for Xi in (X, X.T):
        U, s, Vh = truncated_svd(backend.asarray(Xi), 3, method="gram")
        assert s.dtype == U.dtype == Vh.dtype == backend.dtype(np.float32)
        np.testing.assert_allclose(backend.to_numpy(s), ref[:3], rtol=1e-5)


def test_gram_route_casts_only_float32_input(monkeypatch):
    """float64 input is used as it is (no cast, no copy of X); float32 input is cast once,
    to float64, and the factors are cast back to float32."""
    log: list[tuple[object, object]] = []
    real = np.astype

    def spy(x, dtype, /, **kwargs):
        log.append((x, dtype))
        return real(x, dtype, **kwargs)

    monkeypatch.setattr(np, "astype", spy)
    X = np.random.default_rng(1).standard_normal((9, 4))
    for Xi in (X, X.T):
        log.clear()
        truncated_svd(Xi, 2, method="gram")
        assert not any(x is Xi for x, _ in log) and all(d != np.float64 for _, d in log)
        X32 = Xi.astype(np.float32)
        log.clear()
        U, s, Vh = truncated_svd(X32, 2, method="gram")
        casts_of_x = [d for x, d in log if x is X32]
        assert casts_of_x == [np.float64]
        assert U.dtype == s.dtype == Vh.dtype == np.float32
