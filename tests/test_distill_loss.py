"""The fused, chunked distillation loss against the unfused reference (``chunk_size=0``):
equal values and gradients to rounding, for any chunking, and a fraction of the memory."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from tqla_torch.training.losses import CHUNK_ELEMENTS, distillation_loss


def _inputs(rows=3, seq=7, vocab=50, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randn(rows, seq, vocab, generator=gen) * 3).to(dtype).requires_grad_()
    t = (torch.randn(rows, seq, vocab, generator=gen) * 3).to(dtype)
    y = torch.randint(0, vocab, (rows, seq), generator=gen)
    y[0, 0] = -100
    y[-1, -1] = -100
    return s, t, y


def _terms_and_grad(s, t, y, alpha, temperature, chunk, scale=1.0):
    s.grad = None
    terms = distillation_loss(s, t, y, alpha, temperature, chunk_size=chunk)
    (terms.loss * scale).backward()
    return terms, s.grad.clone()


@pytest.mark.parametrize("chunk", [1, 4, 7, 21, 1000, None])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_chunked_equals_reference(chunk, alpha, temperature):
    s, t, y = _inputs()
    ref, g_ref = _terms_and_grad(s, t, y, alpha, temperature, 0, scale=0.5)
    got, g_got = _terms_and_grad(s, t, y, alpha, temperature, chunk, scale=0.5)
    # float32 sums over 50 classes and 19 tokens: a few ulps of the loss's magnitude
    for a, b in ((got.loss, ref.loss), (got.ce, ref.ce), (got.kl, ref.kl)):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-8)
    assert g_got[0, 0].abs().sum() == 0 and g_got[-1, -1].abs().sum() == 0  # ignored positions
    assert not got.ce.requires_grad and not got.kl.requires_grad


def test_chunked_kl_is_exactly_zero_for_equal_logits():
    s, _, y = _inputs()
    terms = distillation_loss(s, s.detach().clone(), y, 0.5, 2.0, chunk_size=5)
    assert terms.kl.item() == 0.0


def test_chunked_bf16_logits_keep_their_dtype():
    s, t, y = _inputs(dtype=torch.bfloat16)
    ref, g_ref = _terms_and_grad(s, t, y, 0.5, 2.0, 0)
    got, g_got = _terms_and_grad(s, t, y, 0.5, 2.0, 4)
    assert got.loss.dtype == torch.float32 and g_got.dtype == torch.bfloat16
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=1.6e-2, atol=1e-5)  # bf16 rounding of the grad


def test_chunked_without_gradients_and_with_inference_teacher():
    s, t, y = _inputs()
    with torch.inference_mode():
        t_inf = t * 1.0
    plain = distillation_loss(s.detach(), t, y, 0.5, 2.0, chunk_size=0)
    fused = distillation_loss(s.detach(), t_inf, y, 0.5, 2.0, chunk_size=3)
    assert not fused.loss.requires_grad
    torch.testing.assert_close(fused.loss, plain.loss, rtol=1e-5, atol=1e-6)
    trained = distillation_loss(s, t_inf, y, 0.5, 2.0, chunk_size=3)
    trained.loss.backward()
    assert s.grad is not None


def test_chunked_backward_runs_once():
    s, t, y = _inputs()
    terms = distillation_loss(s, t, y, 0.5, 2.0, chunk_size=4)
    terms.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="ran twice.*chunk_size=0"):
        terms.loss.backward()


def test_chunk_size_rules():
    s, t, y = _inputs()
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(ValueError, match="chunk_size must be None or an int >= 0"):
            distillation_loss(s, t, y, 0.5, 2.0, chunk_size=bad)
    assert CHUNK_ELEMENTS // 50257 >= 1  # GPT-2's vocabulary: whole rows per chunk


def _peak_bytes(fn) -> int:
    """Peak of torch's CPU allocations during fn(), from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type().name == "CPU"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def test_chunked_peak_memory_is_under_a_quarter_of_the_reference():
    s, t, y = _inputs(rows=2, seq=128, vocab=4000)
    peaks = {}
    for chunk in (0, 16):

        def step(chunk=chunk):
            distillation_loss(s, t, y, 0.5, 2.0, chunk_size=chunk).loss.backward()

        s.grad = None
        peaks[chunk] = _peak_bytes(step)
    logits_bytes = s.numel() * s.element_size()
    # the reference keeps several logits-sized intermediates; the fused loss one gradient buffer
    assert peaks[0] > 3 * logits_bytes
    assert peaks[16] <= peaks[0] / 4
    assert peaks[16] < 1.5 * logits_bytes  # the gradient + a few 16-row temporaries
