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


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    *,
    ignore_index: int = -100,
) -> DistillLoss:
    """Distillation loss: α·CE + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)).

    Both terms are means over the positions whose label is not ``ignore_index``; they are
    computed in float32 whatever the logits' dtype.

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

    Returns
    -------
    DistillLoss
        ``(loss, ce, kl)``; ``kl`` is exactly 0 when the logits are equal.

    Raises
    ------
    ValueError
        On mismatched shapes, out-of-range ``alpha``/``temperature``, or when every position is
        ignored.

    Examples
    --------
    >>> z = torch.randn(2, 5, 11)
    >>> y = torch.randint(0, 11, (2, 5))
    >>> terms = distillation_loss(z, z.clone(), y, alpha=0.5, temperature=2.0)
    >>> float(terms.kl)
    0.0
    """
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
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab).float()
    t = teacher_logits.detach().reshape(-1, vocab).float()
    y = labels.reshape(-1).long()
    mask = y != ignore_index
    n = mask.sum()
    if int(n) == 0:
        raise ValueError(f"labels: every position equals ignore_index={ignore_index}")
    ce = F.cross_entropy(s, y, ignore_index=ignore_index, reduction="sum") / n
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl_per_token = F.kl_div(log_ps, log_pt, log_target=True, reduction="none").sum(-1)
    kl = (kl_per_token * mask).sum() / n
    loss = alpha * ce + (1.0 - alpha) * (temperature**2) * kl
    return DistillLoss(loss, ce, kl)


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
        terms.append(F.mse_loss(hs.float(), ht.detach().float()))
    return torch.stack(terms).mean()
