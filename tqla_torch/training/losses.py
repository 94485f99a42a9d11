"""Distillation losses: α·CE + (1−α)·T²·KL between student and teacher logits, and the
optional hidden-state MSE (see ``docs/distillation.md``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DistillLoss", "distillation_loss", "hidden_state_mse"]


def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class DistillLoss(NamedTuple):
    """Terms of :func:`distillation_loss` (0-d tensors, token means)."""

    loss: torch.Tensor
    """``alpha * ce + (1 - alpha) * temperature**2 * kl``."""
    ce: torch.Tensor
    """Cross-entropy of the student against the labels."""
    kl: torch.Tensor
    """KL(teacher_T || student_T) at temperature T, without the T² factor."""


#: Elements (rows x vocabulary) of one chunk of the fused loss when ``chunk_size`` is None:
#: each float32 temporary of a chunk then takes about 16 MiB, whatever the vocabulary.
CHUNK_ELEMENTS = 2**22


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    *,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> DistillLoss:
    """Distillation loss: α·CE + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)).

    Both terms are means over the positions whose label is not ``ignore_index``; they are
    computed in float32 whatever the logits' dtype.

    By default the loss is computed in chunks of positions by one fused autograd function: each
    chunk's softmaxes, KL and cross-entropy are formed in float32, reduced, and the chunk's
    gradient with respect to the student's logits is written straight into one buffer of the
    logits' shape and dtype, so no logits-sized intermediate (log-softmaxes, float32 copies,
    the KL's elementwise terms) is ever materialised or kept for the backward pass. The peak
    extra memory is that gradient buffer (which any backward pass through the logits needs)
    plus a few chunk-sized temporaries (``docs/distributed_training.md``, "Chunked KL").

    Parameters
    ----------
    student_logits : torch.Tensor
        ``[..., vocab]`` logits of the student.
    teacher_logits : torch.Tensor
        Teacher logits of the same shape (no gradient flows into them).
    labels : torch.Tensor
        Integer targets of shape ``student_logits.shape[:-1]``, already aligned with the logits
        (for a causal LM: the next tokens, ``input_ids[:, 1:]`` against ``logits[:, :-1]``).
    alpha : float
        Weight of the cross-entropy, in [0, 1].
    temperature : float
        Softmax temperature, > 0.
    ignore_index : int, default -100
        Label value of positions excluded from both terms.
    chunk_size : int or None, default None
        Positions per chunk of the fused computation; None chooses
        ``max(1, CHUNK_ELEMENTS // vocab)``. ``0`` selects the unfused reference: plain
        autograd over the whole tensors, which keeps several logits-sized intermediates (for
        tests and memory comparisons).

    Returns
    -------
    DistillLoss
        ``(loss, ce, kl)``; ``kl`` is exactly 0 when the logits are equal. Only ``loss``
        carries a gradient in the fused path (``ce`` and ``kl`` are detached values for
        logging); its backward pass may run once (no ``retain_graph`` double backward).

    Raises
    ------
    ValueError
        On mismatched shapes, out-of-range ``alpha``/``temperature``/``chunk_size``, or when
        every position is ignored.

    Examples
    --------
    >>> z = torch.randn(2, 5, 11)
    >>> y = torch.randint(0, 11, (2, 5))
    >>> terms = distillation_loss(z, z.clone(), y, alpha=0.5, temperature=2.0)
    >>> float(terms.kl)
    0.0
    >>> s = torch.randn(2, 5, 11, requires_grad=True)
    >>> fused = distillation_loss(s, z, y, 0.5, 2.0, chunk_size=3)
    >>> plain = distillation_loss(s, z, y, 0.5, 2.0, chunk_size=0)
    >>> bool(torch.allclose(fused.loss, plain.loss))
    True
    """
    _check_loss_inputs(student_logits, teacher_logits, labels, alpha, temperature)
    if chunk_size is not None and (not is_int(chunk_size) or chunk_size < 0):
        raise ValueError(f"chunk_size must be None or an int >= 0, got {chunk_size!r}")
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab)
    t = teacher_logits.detach().reshape(-1, vocab)
    y = labels.reshape(-1).long()
    n = int((y != ignore_index).sum())
    if n == 0:
        raise ValueError(f"labels: every position equals ignore_index={ignore_index}")
    alpha, temperature = float(alpha), float(temperature)
    if chunk_size == 0:
        return _reference_loss(s, t, y, alpha, temperature, ignore_index, n)
    rows = chunk_size if chunk_size is not None else max(1, CHUNK_ELEMENTS // max(vocab, 1))
    loss, ce, kl = _FusedDistillLoss.apply(s, t, y, alpha, temperature, ignore_index, rows, n)
    return DistillLoss(loss, ce, kl)


def _check_loss_inputs(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: Any,
    temperature: Any,
) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.ndim < 2:
        raise ValueError(f"logits must be at least 2-D [..., vocab], got {student_logits.ndim}-D")
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(student_logits.shape[:-1])} (the logits without the "
            f"vocabulary axis), got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if not is_real(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not is_real(temperature) or not float(temperature) > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _reference_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    temperature: float,
    ignore_index: int,
    n: int,
) -> DistillLoss:
    """The unfused loss over whole ``[rows, vocab]`` tensors (``chunk_size=0``)."""
    s, t = s.float(), t.float()
    mask = y != ignore_index
    ce = F.cross_entropy(s, y, ignore_index=ignore_index, reduction="sum") / n
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl_per_token = F.kl_div(log_ps, log_pt, log_target=True, reduction="none").sum(-1)
    kl = (kl_per_token * mask).sum() / n
    loss = alpha * ce + (1.0 - alpha) * (temperature**2) * kl
    return DistillLoss(loss, ce, kl)


def _chunk_terms(
    sc: torch.Tensor,
    tc: torch.Tensor,
    yc: torch.Tensor,
    settings: tuple[float, float, int, int],
    grad_out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE and KL of one chunk (float32 rows ``sc``, ``tc``); when ``grad_out`` (the
    chunk's slice of the gradient buffer) is given, the gradient of the mean loss
    ``(alpha * ce_rows + (1 - alpha) * T**2 * kl_rows).sum() / n`` is written into it."""
    alpha, temperature, ignore_index, n = settings
    mask = yc != ignore_index
    all_kept = bool(mask.all())
    safe = yc[:, None] if all_kept else torch.where(mask, yc, 0)[:, None]
    inv_t = 1.0 / temperature
    log_ps = torch.log_softmax(sc * inv_t if temperature != 1.0 else sc, dim=-1)
    log_pt = torch.log_softmax(tc * inv_t if temperature != 1.0 else tc, dim=-1)
    diff = log_pt - log_ps
    p_t = log_pt.exp_()  # log_pt is not needed any more
    kl_rows = torch.linalg.vecdot(diff, p_t)
    del diff
    log_p1 = log_ps if temperature == 1.0 else torch.log_softmax(sc, dim=-1)
    ce_rows = -log_p1.gather(1, safe).squeeze(1)
    if not all_kept:
        ce_rows, kl_rows = ce_rows * mask, kl_rows * mask
    if grad_out is None:
        return ce_rows.sum(), kl_rows.sum()
    # d/ds [alpha CE] = alpha (p_1 - onehot);  d/ds [(1 - alpha) T^2 KL] = (1 - alpha) T (p_T - p_t)
    # with p_1 = softmax(s), p_T = softmax(s / T), p_t = softmax(t / T); all divided by n
    a, b = alpha / n, (1.0 - alpha) * temperature / n
    grad = log_ps.exp_()  # p_T (for T == 1 also p_1; ce_rows is already taken)
    if temperature == 1.0:
        grad.mul_(a + b)
    else:
        grad.mul_(b)
        if alpha != 0.0:
            grad.add_(log_p1.exp_(), alpha=a)
    if b != 0.0:
        grad.sub_(p_t, alpha=b)
    if alpha != 0.0:
        grad.scatter_add_(1, safe, torch.full(safe.shape, -a, dtype=grad.dtype, device=grad.device))
    if not all_kept:
        grad[~mask] = 0.0
    grad_out.copy_(grad)
    return ce_rows.sum(), kl_rows.sum()


def hidden_state_mse(
    student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Mean over blocks of the mean squared error between student and teacher hidden states.

    Parameters
    ----------
    student_hidden, teacher_hidden : sequence of torch.Tensor
        One ``[batch, seq, width]`` tensor per block (for Hugging Face models
        ``outputs.hidden_states[1:]``), in the same order and of the same shapes.

    Returns
    -------
    torch.Tensor
        0-d float32 tensor.

    Examples
    --------
    >>> h = [torch.ones(1, 2, 3), torch.zeros(1, 2, 3)]
    >>> float(hidden_state_mse(h, [torch.zeros(1, 2, 3)] * 2))
    0.5
    """
    student_hidden = list(student_hidden)
    teacher_hidden = list(teacher_hidden)
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError(
            "hidden_mse needs the same non-zero number of blocks in student and teacher, got "
            f"{len(student_hidden)} and {len(teacher_hidden)}"
        )
    terms = []
    for i, (hs, ht) in enumerate(zip(student_hidden, teacher_hidden)):
        if hs.shape != ht.shape:
            raise ValueError(
                f"hidden state of block {i}: student shape {tuple(hs.shape)} != teacher shape "
                f"{tuple(ht.shape)}"
            )
        ht = ht.detach()
        if ht.is_inference():  # a teacher run under torch.inference_mode: autograd may save it
            ht = ht.clone()
        terms.append(F.mse_loss(hs.float(), ht.float()))
    return torch.stack(terms).mean()


class _FusedDistillLoss(torch.autograd.Function):
    """The chunked loss of :func:`distillation_loss`: the gradient with respect to the student's
    logits is formed chunk by chunk during the forward pass (one logits-sized buffer) and only
    scaled in the backward pass, so nothing else logits-sized is saved."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        s: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        alpha: float,
        temperature: float,
        ignore_index: int,
        rows: int,
        n: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        want_grad = bool(ctx.needs_input_grad[0])
        grad = torch.empty_like(s) if want_grad else None
        ce = torch.zeros((), dtype=torch.float64, device=s.device)
        kl = torch.zeros((), dtype=torch.float64, device=s.device)
        settings = (alpha, temperature, ignore_index, n)
        for start in range(0, s.shape[0], rows):
            stop = min(start + rows, s.shape[0])
            ce_c, kl_c = _chunk_terms(
                s[start:stop].float(),
                t[start:stop].float(),
                y[start:stop],
                settings,
                None if grad is None else grad[start:stop],
            )
            ce += ce_c
            kl += kl_c
        ce = (ce / n).float()
        kl = (kl / n).float()
        loss = alpha * ce + (1.0 - alpha) * (temperature**2) * kl
        ctx.mark_non_differentiable(ce, kl)
        ctx.grad = grad
        return loss, ce, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "distillation_loss: the backward pass of the chunked loss ran twice (it keeps "
                "one gradient buffer); use chunk_size=0 for retain_graph=True"
            )
        ctx.grad = None
        if grad_loss is not None and not bool(grad_loss == 1):
            grad.mul_(grad_loss.to(grad.dtype))
        return grad, None, None, None, None, None, None, None
