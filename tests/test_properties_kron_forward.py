"""The fused Kronecker forward (tqla_torch/nn/_kron_forward.py) stated whole.

Both association orders give the dense layer's output; beyond that every route is observed:

* the chunk size: ``_chunk_tokens`` receives exactly the temporaries per token of the order
  (gathered input + intermediate + un-permuted output), the output size and the GEMM rows
  per token, and each chunk is written into its slice of the one output tensor;
* ``_chunk_tokens`` itself is the largest chunk within the budget, raised to the GEMM floor;
* the "B first" order accumulates its r GEMMs in place (``torch.addmm(..., out=)`` into the
  first product, recorded by a ``TorchFunctionMode``) exactly when no gradient is needed;
* with any of x, A, B requiring a gradient the forward is one pass without ``out=`` and its
  gradients are those of the dense reconstruction; without (``no_grad``, or nothing
  trainable) it is chunked.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from _spies import torch_call_recorder  # noqa: E402

from tqla_torch.nn import _kron_forward as kf  # noqa: E402


class _Record(torch_call_recorder()):
    """Every torch function call: (name, args, kwargs)."""

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]


def _factors(m1, n1, m2, n2, r, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, m1, n1, generator=g, dtype=dtype)
    B = torch.randn(r, m2, n2, generator=g, dtype=dtype)
    return A, B


def _perms(m1, n1, m2, n2, permute, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    ip = torch.randperm(n1 * n2, generator=g) if permute in ("cols", "both") else None
    op = torch.randperm(m1 * m2, generator=g) if permute in ("rows", "both") else None
    return ip, op


def _dense(A, B, ip, op, x, bias):
    """y = (K · x[..., ip])[..., op] + bias with K = Σ A_k ⊗ B_k formed explicitly."""
    K = sum(torch.kron(A[k], B[k]) for k in range(A.shape[0]))
    xi = x if ip is None else x[:, ip]
    y = xi @ K.T
    y = y if op is None else y[:, op]
    return y if bias is None else y + bias


def _temp(m1, n1, m2, n2, r, order, ip, op):
    """Temporaries per token of one chunk, from the docstring's account of each order."""
    gathered_in = 0 if ip is None else n1 * n2
    if order == "a_first":  # Z (n2·r·m1), then the output gather's source
        return gathered_in + n2 * r * m1 + (0 if op is None else m1 * m2), n2
    return gathered_in + m2 * r * n1 + m2 * m1, m2  # Z (m2·r·n1) and Yt (m2·m1)


def _spy_steps(monkeypatch) -> list[tuple[str, int, torch.Tensor | None]]:
    """Record (order, tokens, out) of every call of the two per-chunk steps."""
    seen: list[tuple[str, int, torch.Tensor | None]] = []
    for name in ("_a_first", "_b_first"):
        real = getattr(kf, name)

        def spy(x, A, B, idx_in, oidx, out, _real=real, _name=name):
            seen.append((_name[1:], int(x.shape[0]), out))
            return _real(x, A, B, idx_in, oidx, out)

        monkeypatch.setattr(kf, name, spy)
    return seen


def _tol(A, B):
    return 1e-10 * max(1.0, float(A.abs().max() * B.abs().max())) * A.shape[0] * A[0].numel()


# --------------------------------------------------------------------------------------
# _chunk_tokens: the largest chunk within the budget, raised to the GEMM floor
# --------------------------------------------------------------------------------------
@given(
    T=st.integers(1, 5000),
    temp=st.integers(0, 3000),
    out=st.integers(1, 3000),
    rows=st.integers(1, 600),
    fraction=st.sampled_from([0.125, 0.25, 0.5, 0.75, 1.0, 2.0]),  # exact in binary
)
@example(T=10, temp=0, out=1, rows=1000, fraction=0.5)  # no temporaries: the budget is 5
@example(T=10, temp=1, out=1, rows=1000, fraction=0.125)  # budget 1, floor 1
@example(T=3, temp=50, out=1, rows=1000, fraction=0.5)  # budget 0, floor 1: one token
@example(T=1000, temp=3, out=1, rows=1000, fraction=0.5)  # 500 // 3 = 166 (floor division)
def test_chunk_tokens_is_the_budget_raised_to_the_gemm_floor(T, temp, out, rows, fraction):
    c = kf._chunk_tokens(T, temp, out, rows, fraction)
    budget = math.floor(Fraction(fraction) * T * out / max(1, temp))
    floor = math.ceil(Fraction(kf._MIN_GEMM_ROWS, rows))
    assert type(c) is int and c == max(budget, floor, 1)


def test_chunk_tokens_constants():
    assert (kf._TEMP_FRACTION, kf._MIN_GEMM_ROWS) == (0.5, 256)
    assert kf._chunk_tokens(10**6, 10, 10, 10**6, 0.5) == 5 * 10**5
    assert kf._chunk_tokens(10, 1, 1, 3, 0.5) == 86  # ⌈256 / 3⌉ GEMM rows
    assert kf._chunk_tokens(10, 1, 1, 512, 0.0) == 1


# --------------------------------------------------------------------------------------
# The chunk arithmetic of factorized_forward and the chunks it writes
# --------------------------------------------------------------------------------------
@given(
    m1=st.integers(1, 5),
    n1=st.integers(1, 5),
    m2=st.integers(1, 5),
    n2=st.integers(1, 5),
    r=st.integers(1, 3),
    T=st.integers(1, 700),
    fraction=st.sampled_from([0.125, 0.25, 0.5, 1.0]),
    order=st.sampled_from(["a_first", "b_first"]),
    permute=st.sampled_from(["none", "rows", "cols", "both"]),
    bias=st.booleans(),
)
@example(m1=4, n1=3, m2=2, n2=5, r=2, T=700, fraction=0.125, order="a_first", permute="cols",
         bias=True)  # fmt: skip
@example(m1=4, n1=3, m2=2, n2=5, r=2, T=700, fraction=0.125, order="a_first", permute="rows",
         bias=False)  # fmt: skip
@example(m1=4, n1=3, m2=2, n2=5, r=3, T=700, fraction=0.125, order="b_first", permute="both",
         bias=True)  # fmt: skip
def test_chunks_follow_the_temporaries_of_the_order(
    m1, n1, m2, n2, r, T, fraction, order, permute, bias
):
    A, B = _factors(m1, n1, m2, n2, r)
    ip, op = _perms(m1, n1, m2, n2, permute)
    b = torch.randn(m1 * m2, dtype=torch.float64) if bias else None
    x = torch.randn(T, n1 * n2, dtype=torch.float64)
    budget_calls = []
    real = kf._chunk_tokens
    with pytest.MonkeyPatch.context() as mp:

        def spy(*args):
            budget_calls.append(args)
            return real(*args)

        mp.setattr(kf, "_chunk_tokens", spy)
        steps = _spy_steps(mp)
        with torch.no_grad():
            y = kf.factorized_forward(x, A, B, ip, op, order, b, fraction)
    temp, rows = _temp(m1, n1, m2, n2, r, order, ip, op)
    assert budget_calls == [(T, temp, m1 * m2, rows, fraction)]
    assert all(type(v) is int for v in budget_calls[0][:4])
    chunk = real(T, temp, m1 * m2, rows, fraction)
    starts = list(range(0, T, chunk))
    assert [(o, n) for o, n, _ in steps] == [(order, min(chunk, T - s)) for s in starts]
    if chunk >= T:
        assert steps[0][2] is None  # one pass: the step's own result, no output buffer
    else:  # every chunk is written into its rows of the one output
        for s, (_, n, out) in zip(starts, steps):
            assert out.shape == (n, m1 * m2) and out.data_ptr() == y[s].data_ptr()
    assert y.shape == (T, m1 * m2) and y.is_contiguous()
    torch.testing.assert_close(y, _dense(A, B, ip, op, x, b), rtol=0, atol=_tol(A, B))


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_one_pass_without_a_budget_or_when_the_chunk_covers_the_input(order, monkeypatch):
    A, B = _factors(3, 2, 2, 4, 2)
    ip, op = _perms(3, 2, 2, 4, "both")
    x = torch.randn(50, 8, dtype=torch.float64)
    steps = _spy_steps(monkeypatch)
    with torch.no_grad():
        y = kf.factorized_forward(x, A, B, ip, op, order, None, None)  # no budget
        monkeypatch.setattr(kf, "_chunk_tokens", lambda *a: 50)  # a chunk of exactly T
        y2 = kf.factorized_forward(x, A, B, ip, op, order)
        monkeypatch.setattr(kf, "_chunk_tokens", lambda *a: 49)
        y3 = kf.factorized_forward(x, A, B, ip, op, order)
    assert [(n, out is None) for _, n, out in steps] == [(50, True), (50, True), (49, False),
                                                         (1, False)]  # fmt: skip
    ref = _dense(A, B, ip, op, x, None)
    for v in (y, y2, y3):
        torch.testing.assert_close(v, ref, rtol=0, atol=_tol(A, B))


def test_default_budget_is_the_module_fraction(monkeypatch):
    seen = []
    monkeypatch.setattr(kf, "_chunk_tokens", lambda *a: seen.append(a) or a[0])
    A, B = _factors(2, 2, 2, 2, 1)
    with torch.no_grad():
        kf.factorized_forward(torch.randn(7, 4, dtype=torch.float64), A, B, None, None, "a_first")
    assert seen == [(7, 4, 4, 2, kf._TEMP_FRACTION)]


# --------------------------------------------------------------------------------------
# In-place accumulation of the "B first" order, and the autograd route
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("permute", ["none", "both"])
def test_b_first_accumulates_its_gemms_in_place_without_gradients(r, permute):
    A, B = _factors(3, 4, 2, 2, r)
    ip, op = _perms(3, 4, 2, 2, permute)
    x = torch.randn(6, 8, dtype=torch.float64)
    A.requires_grad_(True)  # trainable factors, but no gradient is being recorded
    B.requires_grad_(True)
    with torch.no_grad(), _Record() as rec:
        y = kf.factorized_forward(x, A, B, ip, op, "b_first", None, None)
    ((first_args, _),) = rec.named("mm")
    acc = rec.named("addmm")
    assert len(acc) == r - 1
    for args, kwargs in acc:  # every term is added into the first product's storage
        assert set(kwargs) == {"out"} and kwargs["out"] is args[0]
        assert args[0].data_ptr() == acc[0][0][0].data_ptr()
    torch.testing.assert_close(y, _dense(A.detach(), B.detach(), ip, op, x, None), rtol=0,
                               atol=_tol(A.detach(), B.detach()))  # fmt: skip


_TRAINABLE = [("x",), ("A",), ("B",), ("x", "A"), ("A", "B"), ("x", "B"), ("x", "A", "B")]


@pytest.mark.parametrize("trainable", _TRAINABLE)
@pytest.mark.parametrize("order", ["a_first", "b_first"])
@pytest.mark.parametrize("permute", ["none", "both"])
def test_any_input_needing_a_gradient_runs_one_pass_without_out(
    trainable, order, permute, monkeypatch
):
    """Whichever of x, A, B is trainable (a frozen factor, a frozen layer fed a trainable
    input), the forward is one pass with no ``out=`` and gives the dense gradients."""
    m1, n1, m2, n2, r = 3, 4, 2, 2, 3
    A, B = _factors(m1, n1, m2, n2, r)
    ip, op = _perms(m1, n1, m2, n2, permute)
    x = torch.randn(600, n1 * n2, dtype=torch.float64)
    bias = torch.randn(m1 * m2, dtype=torch.float64)
    leaves = {"x": x, "A": A, "B": B}
    for name in trainable:
        leaves[name].requires_grad_(True)
    steps = _spy_steps(monkeypatch)
    with _Record() as rec:
        y = kf.factorized_forward(x, A, B, ip, op, order, bias, 0.125)
    assert [(o, n, out) for o, n, out in steps] == [(order, 600, None)]
    assert all(k.get("out") is None for _name, _args, k in rec.calls)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [leaves[n] for n in trainable])
    want = torch.autograd.grad(
        (_dense(A, B, ip, op, x, bias) * g).sum(), [leaves[n] for n in trainable]
    )
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["a_first", "b_first"])
@pytest.mark.parametrize("mode", ["frozen", "no_grad", "inference"])
def test_without_a_gradient_the_forward_is_chunked_and_accumulates_in_place(
    order, mode, monkeypatch
):
    """Grad mode on but nothing trainable, or trainable tensors under no_grad/inference
    mode: chunks (each with its output slice) and, B first, in-place accumulation."""
    m1, n1, m2, n2, r = 3, 4, 2, 2, 2
    A, B = _factors(m1, n1, m2, n2, r)
    ip, op = _perms(m1, n1, m2, n2, "both")
    x = torch.randn(600, n1 * n2, dtype=torch.float64)
    if mode != "frozen":
        for t in (x, A, B):
            t.requires_grad_(True)
    ctx = {"frozen": torch.enable_grad, "no_grad": torch.no_grad,
           "inference": torch.inference_mode}[mode]  # fmt: skip
    steps = _spy_steps(monkeypatch)
    with ctx(), _Record() as rec:
        y = kf.factorized_forward(x, A, B, ip, op, order, None, 0.125)
    assert len(steps) > 1 and all(out is not None for _, _, out in steps)
    acc = rec.named("addmm")
    assert len(acc) == ((r - 1) * len(steps) if order == "b_first" else 0)
    assert all(k.get("out") is a[0] for a, k in acc)
    with torch.no_grad():
        ref = _dense(A, B, ip, op, x, None)
    torch.testing.assert_close(y, ref, rtol=0, atol=_tol(A.detach(), B.detach()))


# --------------------------------------------------------------------------------------
# The orders' building blocks
# --------------------------------------------------------------------------------------
@given(
    m1=st.integers(1, 6),
    m2=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_output_index_maps_the_transposed_layout_to_the_permuted_output(m1, m2, seed):
    op = torch.randperm(m1 * m2, generator=torch.Generator().manual_seed(seed))
    idx = kf._output_index(op, m1, m2)
    Yt = torch.arange(m1 * m2).view(m1, m2).t()  # entry (i2, i1) holds canonical i1·m2 + i2
    assert idx.dtype == torch.int64
    assert torch.equal(Yt.reshape(-1)[idx], op)


def test_input_transposed_is_a_view_without_and_one_gather_with_a_permutation():
    x = torch.arange(24.0).view(2, 12)
    v = kf._input_transposed(x, None, 3, 4)
    assert v.shape == (2, 4, 3) and v.data_ptr() == x.data_ptr()
    assert torch.equal(v, x.view(2, 3, 4).transpose(1, 2))
    p = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    with _Record() as rec:
        g = kf._input_transposed(x, p, 3, 4)
    assert [n for n, _, _ in rec.calls if n == "index_select"] == ["index_select"]
    assert torch.equal(g, x[:, p].view(2, 4, 3))


def test_needs_grad_requires_grad_mode_and_a_trainable_tensor():
    a, b = torch.zeros(1), torch.zeros(1, requires_grad=True)
    assert kf._needs_grad(a, b) and kf._needs_grad(b, a) and not kf._needs_grad(a, a)
    assert not kf._needs_grad() and not kf._needs_grad(a)
    with torch.no_grad():
        assert not kf._needs_grad(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_cuda_forward_matches_the_cpu_forward(order):
    A, B = _factors(3, 4, 2, 2, 2)
    ip, op = _perms(3, 4, 2, 2, "both")
    x = torch.randn(600, 8, dtype=torch.float64)
    with torch.no_grad():
        cpu = kf.factorized_forward(x, A, B, ip, op, order, None, 0.125)
        dev = [t.cuda() for t in (x, A, B, ip, op)]
        gpu = kf.factorized_forward(*dev[:3], dev[3], dev[4], order, None, 0.125)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
