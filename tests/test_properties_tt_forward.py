"""tqla_torch.nn._tt_forward stated whole: the mode rule and its prime factors, the parameter
and cost counts, each contraction step's GEMM (shapes, batched or transposed, the bias fused
or added in place) observed with a TorchFunctionMode, the dense matrix, and the float64 fit
with every argument handed on (fifth pass of issue 15)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import tqla  # noqa: E402
from tqla.tt import check_ranks  # noqa: E402
from tqla_torch.nn import _tt_forward as ttf  # noqa: E402


class _Gemms(TorchFunctionMode):
    """Records (name, operand shapes) of every product and bias addition."""

    NAMES = {"matmul", "__matmul__", "addmm", "add_", "add", "__add__", "__iadd__", "mm", "bmm"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            self.calls.append(
                (name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
            )
        return func(*args, **(kwargs or {}))


def _cores(rm, cm, rank, seed=0):
    full = check_ranks(rank, [m * n for m, n in zip(rm, cm)])
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(full[t], rm[t], cm[t], full[t + 1], dtype=torch.float64, generator=g)
        for t in range(len(rm))
    ]


def _dense_ref(cores):
    rm = [G.shape[1] for G in cores]
    cm = [G.shape[2] for G in cores]
    W = torch.zeros(math.prod(rm), math.prod(cm), dtype=torch.float64)
    for i, ii in enumerate(itertools.product(*map(range, rm))):
        for j, jj in enumerate(itertools.product(*map(range, cm))):
            v = torch.ones(1, 1, dtype=torch.float64)
            for G, a, b in zip(cores, ii, jj):
                v = v @ G[:, a, b, :]
            W[i, j] = v[0, 0]
    return W


# --------------------------------------------------------------------------------------
# Rules and counts
# --------------------------------------------------------------------------------------
@given(st.integers(1, 5000))
@example(1)
@example(2)
@example(4)
@example(9)
@example(49)
def test_prime_factors_multiply_back_and_are_prime_and_sorted(n):
    f = ttf._prime_factors(n)
    assert math.prod(f) == n and f == sorted(f)
    assert all(p >= 2 and all(p % q for q in range(2, int(p**0.5) + 1)) for p in f)


@given(n=st.integers(1, 3000), d=st.integers(1, 4))
@example(n=768, d=3)
@example(n=50257, d=2)
@example(n=12, d=2)
def test_tt_modes_places_the_largest_primes_first_on_the_smallest_mode(n, d):
    modes = [1] * d
    for p in sorted(ttf._prime_factors(n), reverse=True):
        modes[modes.index(min(modes))] *= p
    out = ttf.tt_modes(n, d)
    assert out == tuple(sorted(modes)) and all(type(v) is int for v in out)
    assert math.prod(out) == n and len(out) == d
    assert ttf.tt_modes(np.int64(n), np.int64(d)) == out
    assert ttf.tt_modes(768, 3) == (8, 8, 12) and ttf.tt_modes(3072, 3) == (12, 16, 16)
    assert ttf.tt_modes(12, 2) == (3, 4) and ttf.tt_modes(50257, 2) == (29, 1733)


@given(
    pairs=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
    rank=st.integers(1, 5),
    k=st.integers(1, 7),
)
def test_params_and_costs_are_their_definitions(pairs, rank, k):
    rm, cm = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    full = check_ranks(rank, [m * n for m, n in pairs])
    assert ttf._params(rm, cm, full) == sum(
        full[t] * rm[t] * cm[t] * full[t + 1] for t in range(len(pairs))
    )
    T = tqla.TTMatrix([np.ones((full[t], rm[t], cm[t], full[t + 1])) for t in range(len(rm))])
    assert ttf._costs(rm, cm, full, k) == T.matmat_costs(k)
    assert ttf._check_layer_ranks(rank, rm, cm) == full
    assert ttf._check_layer_ranks(list(full[1:-1]), rm, cm) == full


# --------------------------------------------------------------------------------------
# The contraction, step by step
# --------------------------------------------------------------------------------------
def _left_steps(rm, cm, full, b, bias):
    out, rows = [], b
    for t in range(len(rm)):
        r, m, n, r2, w = full[t], rm[t], cm[t], full[t + 1], math.prod(cm[t + 1 :])
        if w == 1:
            out.append(("matmul", ((rows, r * n), (r * n, m * r2))))
        elif w >= ttf._BATCHED_MIN:
            out.append(("matmul", ((m * r2, r * n), (rows, r * n, w))))
        else:
            out.append(("matmul", ((rows * w, r * n), (r * n, m * r2))))
        rows *= m
    if bias:
        out.append(("add_", ((b, math.prod(rm)), (math.prod(rm),))))
    return out


def _right_steps(rm, cm, full, b, bias):
    out, w = [], 1
    rows = b * math.prod(cm[:-1])
    fused = False
    for t in range(len(rm) - 1, -1, -1):
        r, m, n, r2 = full[t], rm[t], cm[t], full[t + 1]
        if w == 1:
            if t == 0 and bias:
                out.append(("addmm", ((math.prod(rm),), (rows, n * r2), (n * r2, r * m))))
                fused = True
            else:
                out.append(("matmul", ((rows, n * r2), (n * r2, r * m))))
        elif w >= ttf._BATCHED_MIN:
            out.append(("matmul", ((r * m, n * r2), (rows, n * r2, w))))
        else:
            out.append(("matmul", ((rows * w, n * r2), (n * r2, r * m))))
        w *= m
        if t > 0:
            rows //= cm[t - 1]
    if bias and not fused:
        out.append(("add", ((b, math.prod(rm)), (math.prod(rm),))))
    return out


@given(
    pairs=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 3)), min_size=1, max_size=3),
    rank=st.integers(1, 2),
    b=st.integers(1, 3),
    bias=st.booleans(),
    order=st.sampled_from(["left_first", "right_first", None]),
)
@example(pairs=[(2, 2), (32, 2)], rank=2, b=1, bias=True, order="right_first")  # width 32
@example(pairs=[(2, 2), (31, 2)], rank=2, b=2, bias=True, order="right_first")  # width 31
@example(pairs=[(2, 2), (2, 32)], rank=2, b=1, bias=True, order="left_first")
@example(pairs=[(2, 2), (2, 31)], rank=2, b=2, bias=False, order="left_first")
@example(pairs=[(3, 2), (1, 2)], rank=2, b=2, bias=True, order="right_first")  # fused bias
@example(pairs=[(1, 6), (6, 1)], rank=2, b=3, bias=True, order=None)  # left far cheaper
@example(pairs=[(6, 1), (1, 6)], rank=2, b=3, bias=True, order=None)  # right far cheaper
@settings(max_examples=25, deadline=None)
def test_each_step_is_the_gemm_its_order_and_width_ask_for(pairs, rank, b, bias, order):
    """tt_forward computes x·Wᵀ (+ bias); left first adds the bias in place on the fresh
    GEMM result, right first fuses it into the last GEMM when nothing lies on its right;
    each step is a plain, batched or transposed-state GEMM by its right width; without an
    order the cheaper one runs (ties: left first)."""
    rm = tuple(p[0] for p in pairs)
    cm = tuple(p[1] for p in pairs)
    cores = _cores(rm, cm, rank)
    full = (1, *(int(G.shape[3]) for G in cores))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, math.prod(cm), dtype=torch.float64, generator=g)
    bv = torch.randn(math.prod(rm), dtype=torch.float64, generator=g) if bias else None
    W = ttf._dense(cores)
    want_y = x @ W.T + (bv if bias else 0)
    with torch.no_grad(), _Gemms() as spy:
        y = ttf.tt_forward(cores, x, order, bv)
    torch.testing.assert_close(y, want_y, rtol=1e-10, atol=1e-10 * (1 + float(x.abs().sum())))
    left, right = ttf._costs(rm, cm, full, b)
    run = order or ("left_first" if left <= right else "right_first")
    steps = (_left_steps if run == "left_first" else _right_steps)(rm, cm, full, b, bias)
    assert spy.calls == steps


def test_forward_with_a_bias_is_differentiable_in_both_orders():
    cores = [G.requires_grad_(True) for G in _cores((2, 3), (3, 2), 2)]
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    for order in ("left_first", "right_first"):
        y = ttf.tt_forward(cores, x, order, bias)
        (y**2).sum().backward()
        W = ttf._dense([G.detach() for G in cores])
        want = (x.detach() @ W.T + bias.detach()) * 2
        torch.testing.assert_close(bias.grad, want.sum(0))
        torch.testing.assert_close(x.grad, want @ W)
        for t in (bias, x, *cores):
            t.grad = None


@given(
    pairs=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3),
    rank=st.integers(1, 3),
)
@settings(max_examples=20)
def test_dense_is_the_product_of_the_core_slices(pairs, rank):
    rm, cm = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    cores = _cores(rm, cm, rank, seed=3)
    W = ttf._dense(cores)
    assert W.shape == (math.prod(rm), math.prod(cm))
    torch.testing.assert_close(W, _dense_ref(cores), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------
def test_fit_cores_hands_every_argument_to_the_decomposition(monkeypatch):
    calls = []
    real_tt, real_wt = tqla.tt_matrix, tqla.whitened_tt_matrix

    def spy_tt(W, rm, cm, **kw):
        calls.append(("tt", W, rm, cm, None, kw))
        return real_tt(W, rm, cm, **kw)

    def spy_wt(W, C, rm, cm, **kw):
        calls.append(("wt", W, rm, cm, C, kw))
        return real_wt(W, C, rm, cm, **kw)

    monkeypatch.setattr(tqla, "tt_matrix", spy_tt)
    monkeypatch.setattr(tqla, "whitened_tt_matrix", spy_wt)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=g, requires_grad=True)
    for ranks, eps in ((2, None), (None, 0.4), ([3], None)):
        calls.clear()
        cores, err = ttf._fit_cores(w, (2, 3), (4, 2), ranks, eps)
        ((kind, W, rm, cm, C, kw),) = calls
        assert kind == "tt" and (rm, cm, C) == ((2, 3), (4, 2), None)
        assert kw == {"ranks": ranks, "eps": eps}
        assert W.dtype == torch.float64 and not W.requires_grad
        torch.testing.assert_close(W, w.detach().double(), rtol=0, atol=0)
        T = real_tt(w.detach().double(), (2, 3), (4, 2), ranks=ranks, eps=eps)
        assert all(G.dtype == torch.float32 and not G.requires_grad for G in cores)
        for G, H in zip(cores, T.cores, strict=True):
            torch.testing.assert_close(G, H.float(), rtol=0, atol=0)
        D = T.to_dense()
        assert err == pytest.approx(float(torch.linalg.norm(D - W) / torch.linalg.norm(W)))
    X = torch.randn(20, 8, generator=g)
    moment = (X.T @ X / 20).requires_grad_(True)
    calls.clear()
    cores, err = ttf._fit_cores(w, (2, 3), (4, 2), 2, None, moment, 0.25)
    ((kind, W, rm, cm, C, kw),) = calls
    assert kind == "wt" and (rm, cm) == ((2, 3), (4, 2))
    assert kw == {"ranks": 2, "eps": None, "damp": 0.25}
    assert C.dtype == torch.float64 and not C.requires_grad
    torch.testing.assert_close(C, moment.detach().double(), rtol=0, atol=0)
    T = real_wt(w.detach().double(), moment.detach().double(), (2, 3), (4, 2), ranks=2,
                damp=0.25)  # fmt: skip
    for G, H in zip(cores, T.cores, strict=True):
        torch.testing.assert_close(G, H.float(), rtol=0, atol=0)
    # the plain relative error of the whitened fit
    Wd = w.detach().double()
    assert err == pytest.approx(float(torch.linalg.norm(T.to_dense() - Wd) / torch.linalg.norm(Wd)))
    calls.clear()
    ttf._fit_cores(w, (2, 3), (4, 2), 2, None, moment)  # damp defaults to 0
    assert calls[0][0] == "wt" and calls[0][5] == {"ranks": 2, "eps": None, "damp": 0.0}


@pytest.mark.parametrize("b", [0, 1, 3])
@pytest.mark.parametrize("pairs", [[(1, 6), (6, 1)], [(6, 1), (1, 6)]])
def test_without_an_order_the_batch_size_decides_and_an_empty_batch_ties(pairs, b, monkeypatch):
    """order=None runs left first iff its multiply-adds for the b rows of x are <= right
    first's: an empty batch costs 0 both ways and runs left first whatever the cores."""
    rm = tuple(p[0] for p in pairs)
    cm = tuple(p[1] for p in pairs)
    cores = _cores(rm, cm, 2)
    full = (1, *(int(G.shape[3]) for G in cores))
    ran = []
    real_left, real_right = ttf._left_first, ttf._right_first
    monkeypatch.setattr(ttf, "_left_first", lambda *a: ran.append("left_first") or real_left(*a))
    monkeypatch.setattr(ttf, "_right_first", lambda *a: ran.append("right_first") or real_right(*a))
    x = torch.randn(b, math.prod(cm), dtype=torch.float64)
    with torch.no_grad():
        y = ttf.tt_forward(cores, x)
    assert y.shape == (b, math.prod(rm))
    left, right = ttf._costs(rm, cm, full, b)
    assert ran == ["left_first" if left <= right else "right_first"]
    if b == 0:
        assert ran == ["left_first"]
    else:
        assert ran == [("left_first", "right_first")[pairs[0] == (6, 1)]]


@pytest.mark.parametrize("order", ["left_first", "right_first", None])
def test_an_empty_batch_gives_an_empty_result(order):
    """x of shape (0, N) gives y of shape (0, M) in both orders, as nn.Linear does (a
    reshape to (0, -1) would be ambiguous and fail)."""
    cores = _cores((2, 3), (3, 2), 2)
    bias = torch.randn(6, dtype=torch.float64)
    y = ttf.tt_forward(cores, torch.zeros(0, 6, dtype=torch.float64), order, bias)
    assert y.shape == (0, 6) and y.dtype == torch.float64
