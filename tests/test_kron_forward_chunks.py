"""KroneckerLinear's factorized forward in chunks of tokens (tqla_torch/nn/_kron_forward.py):
the same function as the dense reconstruction, whatever the chunk size, with temporaries
bounded by the budget, and the plain (unchunked) path under autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tqla_torch.nn import KroneckerLinear
from tqla_torch.nn import _kron_forward as kf


def _layer(m1, n1, m2, n2, r, permute, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layer = KroneckerLinear(n1 * n2, m1 * m2, ((m1, n1), (m2, n2)), r, permute=permute)
    with torch.no_grad():
        if layer.input_perm is not None:
            layer.input_perm.copy_(torch.randperm(n1 * n2))
        if layer.output_perm is not None:
            layer.output_perm.copy_(torch.randperm(m1 * m2))
        layer.bias.normal_()
    return layer.to(dtype)


def _reference(layer, x):
    return torch.nn.functional.linear(x, layer.to_dense(), layer.bias)


def _tol(dtype, n):
    eps = torch.finfo(dtype).eps
    return 20 * eps * n**0.5


@given(
    m1=st.integers(1, 9),
    n1=st.integers(1, 9),
    m2=st.integers(1, 5),
    n2=st.integers(1, 5),
    r=st.integers(1, 3),
    T=st.integers(1, 40),
    chunk=st.integers(1, 41),
    permute=st.sampled_from(["none", "rows", "cols", "both"]),
)
def test_any_chunk_size_gives_the_dense_output(m1, n1, m2, n2, r, T, chunk, permute):
    """Chunks of any size (ragged last chunk included), both orders, every permute mode."""
    rank = min(r, m1 * n1, m2 * n2)
    layer = _layer(m1, n1, m2, n2, rank, permute)
    x = torch.randn(3, T, n1 * n2, dtype=torch.float64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kf, "_chunk_tokens", lambda *a: chunk)
        with torch.inference_mode():
            y = layer(x)
    with torch.no_grad():
        ref = _reference(layer, x)
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(y, ref, rtol=0, atol=_tol(torch.float64, n1 * n2 * rank) * scale)


@pytest.mark.parametrize("shape", [((768, 384), (4, 2)), ((384, 768), (2, 4))])
@pytest.mark.parametrize("permute", ["both", "none"])
def test_gpt2_shapes_are_chunked_within_budget(shape, permute, monkeypatch):
    """At 8×128 tokens the GPT-2 MLP layers run in several chunks whose temporaries respect
    the budget (or the GEMM floor), and the float32 output matches the dense one."""
    (m1, n1), (m2, n2) = shape
    layer = _layer(m1, n1, m2, n2, 4, permute, dtype=torch.float32)
    x = torch.randn(8, 128, n1 * n2)
    calls = []
    real = kf._chunk_tokens

    def spy(T, temp, out_per_token, rows, fraction):
        c = real(T, temp, out_per_token, rows, fraction)
        calls.append((T, temp, out_per_token, rows, c))
        return c

    monkeypatch.setattr(kf, "_chunk_tokens", spy)
    with torch.inference_mode():
        y = layer(x)
    (T, temp, out_tok, rows, chunk), = calls
    assert T == 1024 and 1 < chunk < T
    within = chunk * temp <= KroneckerLinear.memory_fraction * T * out_tok
    at_floor = chunk * rows <= kf._MIN_GEMM_ROWS + rows
    assert within or at_floor
    with torch.no_grad():
        ref = _reference(layer, x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_chunk_budget_arithmetic():
    # temporaries ≤ half the output: 1000 tokens × 10 outputs / 2 / 50 per token = 100
    assert kf._chunk_tokens(1000, 50, 10, 4, 0.5) == max(100, -(-kf._MIN_GEMM_ROWS // 4))
    assert kf._chunk_tokens(10, 1, 1, 1, 0.5) == kf._MIN_GEMM_ROWS  # floor: the whole input
    assert kf._chunk_tokens(10**6, 10, 10, 10**6, 0.5) == 5 * 10**5
    assert kf._chunk_tokens(10**6, 10, 10, 10**6, 0.25) == 25 * 10**4


def test_memory_fraction_none_runs_one_pass(monkeypatch):
    layer = _layer(64, 8, 4, 2, 2, "both", dtype=torch.float32)
    x = torch.randn(512, 16)
    calls = []
    monkeypatch.setattr(kf, "_chunk_tokens", lambda *a: calls.append(a) or 1)
    layer.memory_fraction = None
    with torch.inference_mode():
        y = layer(x)
    assert calls == []
    layer.memory_fraction = 0.5
    with torch.inference_mode():
        y2 = layer(x)  # chunks of one token
    assert len(calls) == 1
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)


def test_autograd_runs_unchunked_and_matches_dense():
    """With gradients (training) the forward is one pass (out= has no gradient) and its
    gradients are those of the dense reconstruction."""
    layer = _layer(6, 5, 3, 4, 2, "both")
    x = torch.randn(700, 20, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    grads = [x.grad.clone(), layer.A.grad.clone(), layer.B.grad.clone(), layer.bias.grad.clone()]
    for t in (x, layer.A, layer.B, layer.bias):
        t.grad = None
    (_reference(layer, x) * g).sum().backward()
    ref = [x.grad, layer.A.grad, layer.B.grad, layer.bias.grad]
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
