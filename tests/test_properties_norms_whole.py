"""tqla.spectral_norm stated whole (issue 15, fifth pass).

The two matrix-free methods are compared field by field with references written from the
module docstring (independent power iterations with the Halko–Martinsson–Tropp bound, and
Lanczos with full reorthogonalisation and the Kuczyński–Woźniakowski bound, each with the
16·n·eps rounding margin), at several scales (so that clamps such as max(‖·‖, 1e-300)
matter only where documented), including start vectors that E annihilates.  Around them:
the "auto" dispatch at its two thresholds, the exact method in every dtype, operators
(transpose, densification, residuals, SciPy, duck-typed objects) and every message whole.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import tqla
import tqla.norms as nm
from tqla.kron import KroneckerSum
from tqla.norms import NormEstimate, Operator, as_operator, float_dtype_eps, residual


def _margin(shape, dtype) -> float:
    return 16.0 * max(shape) * float(np.finfo(dtype).eps)


def _cols(Y):
    return np.sqrt(np.sum(Y * Y, axis=0))


def _nz(x):
    return np.where(x > 0, x, 1.0)


def ref_randomized(E, k, max_iter, rtol, delta, Y):
    """(The norms are tracked in float64 logarithms whatever E's dtype.)"""
    M, N = E.shape
    nrm = _cols(Y)
    logs = np.log(np.maximum(nrm.astype(np.float64), 1e-300))
    Y = Y / _nz(nrm)
    c = math.log((max_iter / delta) ** (1.0 / k) * math.sqrt(2.0 / math.pi))
    lower = upper = 0.0
    n = 0
    for q in range(1, max_iter + 1):
        Z1 = E @ Y
        lower = max(lower, float(np.max(_cols(Z1))))
        Z = E.T @ Z1
        n += 2
        zn = _cols(Z)
        if np.max(zn) == 0.0:
            return NormEstimate(0.0, 0.0, 0.0, "randomized", delta, n)
        logs = logs + np.log(np.maximum(zn.astype(np.float64), 1e-300))
        Y = Z / _nz(zn)
        upper = math.exp((c + float(np.max(logs))) / (2 * q))
        if upper <= (1.0 + rtol) * lower:
            break
    Q, _ = np.linalg.qr(Y)
    lower = max(lower, float(np.max(np.linalg.svd(E @ Q, compute_uv=False))))
    upper = max(upper, lower) * (1.0 + _margin(E.shape, E.dtype))
    return NormEstimate(lower, lower, upper, "randomized", delta, n + 1)


def ref_lanczos(E, max_iter, rtol, delta, v, near=None):
    """(``near``: a list that gets True when a breakdown test fell within a factor 4 of its
    threshold, where the library's and this reference's rounding may decide differently.)"""
    M, N = E.shape
    A = E @ E.T if M < N else E.T @ E
    n = A.shape[0]
    steps = min(n, max_iter)
    d = delta / steps
    V = [v / np.linalg.norm(v)]
    alphas, betas = [], []
    theta, upper, nprod, exhausted = 0.0, math.inf, 0, False
    for j in range(1, steps + 1):
        w = A @ V[-1]
        nprod += 2
        alphas.append(float(np.sum(w * V[-1])))
        Vm = np.concatenate(V, axis=1)
        w = w - Vm @ (Vm.T @ w)
        w = w - Vm @ (Vm.T @ w)
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta = max(float(np.linalg.eigvalsh(T)[-1]), 0.0)
        b = float(np.linalg.norm(w))
        thr = 64 * np.finfo(E.dtype).eps * max(theta, abs(alphas[-1]))
        if near is not None and thr / 4 < b < 4 * thr:
            near.append(True)
        if b <= thr or j == n:
            exhausted = True
            break
        eps = (math.log(1.648 * math.sqrt(n) / d) / (2 * j - 1)) ** 2
        if eps < 1.0:
            upper = math.sqrt(theta / (1.0 - eps))
            if upper <= (1.0 + rtol) * math.sqrt(theta):
                break
        betas.append(b)
        V.append(w / b)
    s = math.sqrt(theta)
    upper = (s if exhausted else upper) * (1.0 + _margin(E.shape, E.dtype))
    return NormEstimate(s, s, upper, "lanczos", 0.0 if exhausted else delta, nprod)


def _same(got: NormEstimate, want: NormEstimate, rel: float = 1e-10):
    assert (got.method, got.failure_prob, got.n_products) == (
        want.method,
        want.failure_prob,
        want.n_products,
    )
    for a, b in zip(got[:3], want[:3]):
        assert a == pytest.approx(b, rel=rel, abs=0)


def _matrix(seed, shape, scale, rank):
    rng = np.random.default_rng(seed)
    r = min(rank, *shape)
    return scale * (rng.standard_normal((shape[0], r)) @ rng.standard_normal((r, shape[1])))


SCALES = st.sampled_from([1e-30, 1e-3, 1.0, 1e20])
SHAPE = st.tuples(st.integers(1, 12), st.integers(1, 12))


@given(shape=SHAPE, seed=st.integers(0, 2**16), scale=SCALES, rank=st.integers(1, 12),
       k=st.integers(1, 5), steps=st.integers(1, 9),
       rtol=st.sampled_from([1e-12, 1e-3, 0.3, 1e9]),
       delta=st.sampled_from([1e-9, 0.25]))  # fmt: skip
@example(shape=(12, 2), seed=0, scale=1e-3, rank=1, k=3, steps=9, rtol=1e-12, delta=1e-9)
@settings(max_examples=60, deadline=None)
def test_randomized_is_the_reference(shape, seed, scale, rank, k, steps, rtol, delta):
    E = _matrix(seed, shape, scale, rank)
    got = tqla.spectral_norm(E, method="randomized", n_vectors=k, max_iter=steps, rtol=rtol,
                             failure_prob=delta, rng=seed)  # fmt: skip
    Y = np.random.default_rng(seed).standard_normal((shape[1], k))
    _same(got, ref_randomized(E, k, steps, rtol, delta, Y))


@given(seed=st.integers(0, 2**16), k=st.integers(1, 5), steps=st.integers(2, 6))
@settings(max_examples=10, deadline=None)
def test_randomized_tracks_float32_norms_in_float64_logarithms(seed, k, steps):
    E = _matrix(seed, (9, 7), 1.0, 7).astype(np.float32)
    got = tqla.spectral_norm(E, method="randomized", n_vectors=k, max_iter=steps, rtol=1e-12,
                             rng=seed)  # fmt: skip
    Y = np.random.default_rng(seed).standard_normal((7, k)).astype(np.float32)
    _same(got, ref_randomized(E, k, steps, 1e-12, 1e-6, Y), rel=1e-10)


@given(shape=SHAPE, seed=st.integers(0, 2**16), scale=SCALES, rank=st.integers(1, 12),
       steps=st.integers(1, 14), rtol=st.sampled_from([1e-12, 1e-3, 0.3]),
       delta=st.sampled_from([1e-9, 0.25]))  # fmt: skip
@example(shape=(9, 9), seed=0, scale=1.0, rank=9, steps=14, rtol=1e-12, delta=1e-9)
@example(shape=(5, 11), seed=1, scale=1e-3, rank=5, steps=3, rtol=1e-12, delta=0.25)
@settings(max_examples=60, deadline=None)
def test_lanczos_is_the_reference(shape, seed, scale, rank, steps, rtol, delta):
    E = _matrix(seed, shape, scale, rank)
    got = tqla.spectral_norm(E, method="lanczos", max_iter=steps, rtol=rtol, failure_prob=delta,
                             rng=seed)  # fmt: skip
    v = np.random.default_rng(seed).standard_normal((min(shape), 1))
    near: list[bool] = []
    want = ref_lanczos(E, steps, rtol, delta, v, near)
    # a residual within rounding of the breakdown threshold (a rank-deficient E once its
    # Krylov space is exhausted) may be decided either way by two evaluation orders; the
    # threshold itself is test_lanczos_breakdown_rule_is_64_eps_of_the_ritz_scale's
    assume(not near)
    _same(got, want, rel=1e-8)


def test_lanczos_stops_early_only_once_the_bound_is_within_rtol():
    """A well separated σ₁: with rtol = 0.5 the bound is met before the Krylov space is
    exhausted, and the estimate says so (failure_prob = δ)."""
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    E = (U * np.r_[100.0, np.linspace(1.0, 2.0, 39)]) @ U.T
    est = tqla.spectral_norm(E, method="lanczos", rtol=0.5, max_iter=40, rng=0)
    v = np.random.default_rng(0).standard_normal((40, 1))
    _same(est, ref_lanczos(E, 40, 0.5, 1e-6, v))
    assert est.failure_prob == 1e-6 and est.n_products < 2 * 40
    assert est.upper <= 1.5 * est.lower * (1 + _margin(E.shape, E.dtype))


def test_annihilated_start_vectors_are_skipped(monkeypatch):
    """A start vector in E's null space (and a zero one) keeps the bound finite: its column
    is not divided by zero and does not lower the max of the logs."""
    E = np.outer(np.arange(1.0, 6.0), [1.0, -1.0, 0.0])  # null space: (1, 1, 0), (0, 0, 1)
    Y = np.array([[1.0, 0.0, 0.3], [1.0, 0.0, 2.0], [0.0, 0.0, -1.0]])
    monkeypatch.setattr(nm, "_gaussian", lambda op, n, k, rng: Y.copy())
    got = tqla.spectral_norm(E, method="randomized", n_vectors=3, max_iter=4, rtol=1e-12)
    _same(got, ref_randomized(E, 3, 4, 1e-12, 1e-6, Y))
    assert math.isfinite(got.upper) and got.upper >= np.linalg.norm(E, 2)
    monkeypatch.setattr(nm, "_gaussian", lambda op, n, k, rng: Y[:, :2].copy())
    got = tqla.spectral_norm(E, method="randomized", n_vectors=2, max_iter=4)
    assert got == NormEstimate(0.0, 0.0, 0.0, "randomized", 1e-6, 2)


@pytest.mark.parametrize("method", ["lanczos", "randomized"])
def test_zero_matrix_and_default_options(method, monkeypatch):
    assert tqla.spectral_norm(np.zeros((3, 2)), method=method) == (
        NormEstimate(0.0, 0.0, 0.0, "lanczos", 0.0, 2)
        if method == "lanczos"
        else NormEstimate(0.0, 0.0, 0.0, "randomized", 1e-6, 2)
    )
    seen = {}
    real = nm._lanczos if method == "lanczos" else nm._randomized

    def spy(op, *args):
        seen["args"] = args
        seen["state"] = args[-1].bit_generator.state
        return real(op, *args)

    monkeypatch.setattr(nm, "_" + method, spy)
    E = np.random.default_rng(0).standard_normal((5, 4))
    tqla.spectral_norm(E, method=method, rng=3)
    args = seen["args"]
    want = (100, 0.01, 1e-6) if method == "lanczos" else (8, 100, 0.01, 1e-6)
    assert args[:-1] == want and all(type(a) is type(b) for a, b in zip(args, want))
    assert isinstance(args[-1], np.random.Generator)
    assert seen["state"] == np.random.default_rng(3).bit_generator.state


def test_auto_dispatch_at_its_two_thresholds(monkeypatch):
    E = np.random.default_rng(0).standard_normal((4, 6))  # M·N·min = 96, M·N = 24
    assert (nm.EXACT_MAX_WORK, nm.EXACT_MAX_OPERATOR_ENTRIES) == (4e9, 1 << 22)
    monkeypatch.setattr(nm, "EXACT_MAX_WORK", 96)
    assert tqla.spectral_norm(E).method == "exact"
    assert tqla.spectral_norm(E.T).method == "exact"
    monkeypatch.setattr(nm, "EXACT_MAX_WORK", 95)
    assert tqla.spectral_norm(E).method == "lanczos"
    Eo = residual(E, np.zeros_like(E))
    assert tqla.spectral_norm(Eo).method == "exact"  # an operator: the entry count rules
    monkeypatch.setattr(nm, "EXACT_MAX_OPERATOR_ENTRIES", 24)
    assert tqla.spectral_norm(Eo).method == "exact"
    monkeypatch.setattr(nm, "EXACT_MAX_OPERATOR_ENTRIES", 23)
    monkeypatch.setattr(nm, "EXACT_MAX_WORK", 10**9)
    est = tqla.spectral_norm(Eo, rng=0)
    assert est == tqla.spectral_norm(E, method="lanczos", rng=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_is_lapack_with_the_rounding_margin(dtype):
    E = np.random.default_rng(1).standard_normal((7, 3)).astype(dtype)
    s = float(np.max(np.linalg.svd(E, compute_uv=False)))
    est = tqla.spectral_norm(E, method="exact")
    up = s * (1 + 16 * 7 * float(np.finfo(dtype).eps))
    assert est == NormEstimate(est.estimate, est.estimate, up, "exact", 0.0, 0)
    assert est.estimate == pytest.approx(s, rel=10 * float(np.finfo(dtype).eps))
    assert est.upper == pytest.approx(up, rel=10 * float(np.finfo(dtype).eps))
    op = residual(E, np.zeros_like(E))
    est = tqla.spectral_norm(op, method="exact")
    assert est.n_products == 1 and est.method == "exact" and est.failure_prob == 0.0


def test_half_precision_is_computed_in_float32_with_a_coarse_margin():
    torch = pytest.importorskip("torch")
    E = np.random.default_rng(2).standard_normal((6, 5))
    Eh = torch.tensor(E, dtype=torch.bfloat16)
    est = tqla.spectral_norm(Eh, method="exact")
    s = float(torch.linalg.svdvals(Eh.float()).max())
    assert est == NormEstimate(s, s, s * (1 + 16 * 6 * 2.0**-7), "exact", 0.0, 0)
    K = KroneckerSum(torch.ones((1, 2, 5), dtype=torch.bfloat16),
                     torch.ones((1, 3, 1), dtype=torch.bfloat16))  # fmt: skip
    est = tqla.spectral_norm(K, method="exact")
    assert est.n_products == 1 and est.estimate == pytest.approx(math.sqrt(30), rel=1e-2)
    assert float_dtype_eps(torch, torch.float16) == 2.0**-7
    assert float_dtype_eps(np, np.float16) == 2.0**-7
    assert float_dtype_eps(np, np.float32) == float(np.finfo(np.float32).eps)
    assert float_dtype_eps(np, np.float64) == float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------
def _op(E, dense=None):
    return Operator(E.shape, E, lambda X: E @ X, lambda Y: E.T @ Y, dense)


def test_operator_fields_transpose_and_dense():
    E = np.random.default_rng(3).standard_normal((4, 3))
    op = _op(E)
    assert op.shape == (4, 3) and type(op.shape[0]) is int
    assert op.like is E and op.xp is not None and op.dtype == np.float64 and op.dense is None
    np.testing.assert_array_equal(op.to_dense(), E)
    T = op.T
    assert T.shape == (3, 4) and T.like is E and T.dense is None
    np.testing.assert_array_equal(T.mm(np.eye(4)), E.T)
    np.testing.assert_array_equal(T.tmm(np.eye(3)), E)
    np.testing.assert_array_equal(T.to_dense(), E.T)
    d = as_operator(E)
    assert d.dense is E and as_operator(d) is d
    np.testing.assert_array_equal(d.T.dense, E.T)
    np.testing.assert_array_equal(d.T.to_dense(), E.T)
    np.testing.assert_array_equal(d.mm(np.eye(3)), E)
    np.testing.assert_array_equal(d.tmm(np.eye(4)), E.T)


def test_to_dense_builds_the_identity_in_the_operators_library_and_dtype():
    torch = pytest.importorskip("torch")
    E = torch.tensor(np.random.default_rng(4).standard_normal((3, 5)), dtype=torch.float32)
    seen = []
    op = Operator(E.shape, E, lambda X: seen.append(X) or E @ X, lambda Y: E.T @ Y)
    D = op.to_dense()
    assert torch.equal(seen[0], torch.eye(5, dtype=torch.float32)) and torch.equal(D, E)


def test_as_operator_of_scipy_and_factored_objects():
    from scipy.sparse.linalg import aslinearoperator

    E = np.random.default_rng(5).standard_normal((6, 4))
    so = as_operator(aslinearoperator(E))
    assert so.shape == (6, 4) and so.dense is None and so.like.shape == (1, 1)
    assert so.dtype == np.float64
    X, Y = np.ones((4, 2)), np.ones((6, 2))
    np.testing.assert_array_equal(so.mm(X), E @ X)
    np.testing.assert_array_equal(so.tmm(Y), E.T @ Y)
    so32 = as_operator(aslinearoperator(E.astype(np.float32)))
    assert so32.dtype == np.float32
    K = tqla.kron_svd(E, ((3, 2), (2, 2)), 2)
    ko = as_operator(K)
    assert ko.shape == (6, 4) and ko.like is K.A and ko.dense is None
    np.testing.assert_allclose(ko.mm(X), K.to_dense() @ X, rtol=1e-13)
    np.testing.assert_allclose(ko.tmm(Y), K.to_dense().T @ Y, rtol=1e-13)
    H = tqla.HeteroKroneckerSum([K])
    assert as_operator(H).like is K.A


def test_residual_is_w_minus_k_by_products():
    rng = np.random.default_rng(6)
    W, Kd = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    R = residual(W, Kd)
    assert R.shape == (5, 4) and R.like is W and R.dense is None
    X, Y = rng.standard_normal((4, 2)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(R.mm(X), (W - Kd) @ X, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(R.tmm(Y), (W - Kd).T @ Y, rtol=1e-13, atol=1e-13)


BAD = [
    ({"method": "power"}, ValueError,
     "method must be one of 'auto', 'exact', 'lanczos', 'randomized', got 'power'"),
    ({"rtol": 0}, ValueError, "rtol must be a positive number, got 0"),
    ({"rtol": "1"}, ValueError, "rtol must be a positive number, got '1'"),
    ({"failure_prob": 1.0}, ValueError, "failure_prob must be in (0, 1), got 1.0"),
    ({"failure_prob": 0}, ValueError, "failure_prob must be in (0, 1), got 0"),
    ({"failure_prob": None}, ValueError, "failure_prob must be in (0, 1), got None"),
    ({"max_iter": 0}, ValueError, "max_iter must be >= 1, got 0"),
    ({"n_vectors": 0}, ValueError, "n_vectors must be >= 1, got 0"),
    ({"n_vectors": 1.5}, TypeError, "n_vectors must be an integer, got float 1.5"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, exc, message", BAD)
def test_bad_arguments_are_refused_with_the_whole_rule(kwargs, exc, message):
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        tqla.spectral_norm(np.eye(3), **kwargs)


def test_bad_operands_are_refused_with_the_whole_rule():
    from scipy.sparse.linalg import aslinearoperator

    msg = ("E must be a 2-D array, a KroneckerSum-like object (shape, matmat, .T) or a scipy "
           "LinearOperator, got object")  # fmt: skip
    with pytest.raises(TypeError, match=f"^{re.escape(msg)}$"):
        tqla.spectral_norm(object())
    with pytest.raises(TypeError, match=r"^W must be a 2-D array, .* got int$"):
        residual(3, np.eye(2))
    cplx = aslinearoperator(np.eye(2, dtype=np.complex128))
    with pytest.raises(TypeError, match=r"^E must have a real floating dtype, got complex128$"):
        tqla.spectral_norm(cplx)
    with pytest.raises(TypeError, match=r"^K must have a real floating dtype, got complex128$"):
        residual(np.eye(2), cplx)
    msg = "W of shape (3, 2) and K of shape (2, 3) must match"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        residual(np.ones((3, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="^K must be 2-D"):
        residual(np.ones((3, 2)), np.ones(3))


@pytest.mark.parametrize("c, exhausted", [(63.5, True), (64.5, False)])
def test_lanczos_breakdown_rule_is_64_eps_of_the_ritz_scale(c, exhausted, monkeypatch):
    """The Krylov space counts as exhausted when the new residual b ≤ 64·eps·max(θ, |α|):
    with eps set so that the first step's b is 63.5 or 64.5 of those units, the run stops
    after that step (as exact: failure_prob 0, upper = √θ with the margin) or goes on."""
    E = np.random.default_rng(7).standard_normal((9, 6))
    v = np.random.default_rng(0).standard_normal((6, 1))
    v = v / np.linalg.norm(v)
    w = E.T @ (E @ v)
    a = float(np.sum(w * v))
    for _ in range(2):
        w = w - v @ (v.T @ w)
    b = float(np.linalg.norm(w))
    eps = b / (c * max(a, abs(a)))
    monkeypatch.setattr(nm, "float_dtype_eps", lambda xp, dtype: eps)
    est = tqla.spectral_norm(E, method="lanczos", rtol=1e-12, rng=0)
    assert (est.n_products == 2) == exhausted  # (a later step may still stop by the rule)
    if exhausted:
        s = np.sqrt(a)
        assert est == NormEstimate(s, s, s * (1 + 16 * 9 * eps), "lanczos", 0.0, 2)


def test_dense_arrays_need_no_scipy(monkeypatch):
    """Without SciPy's LinearOperator nothing is taken for one: arrays and Kronecker sums
    are still measured."""
    import sys

    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)  # the import fails
    assert nm._is_scipy_operator(np.eye(2)) is False
    E = np.random.default_rng(8).standard_normal((5, 3))
    assert tqla.spectral_norm(E, method="exact").estimate == pytest.approx(
        np.linalg.norm(E, 2), rel=1e-14
    )
    K = tqla.kron_svd(np.ones((4, 4)), ((2, 2), (2, 2)), 1)
    assert tqla.spectral_norm(K, method="exact").estimate == pytest.approx(4.0, rel=1e-12)
