"""Perplexity and LAMBADA evaluation of causal language models.

Two perplexity protocols are offered by :func:`perplexity`:

- **non-overlapping windows** (default, the published protocol of methods.md §3): the token
  stream is cut into consecutive windows of ``window`` tokens; each window is scored on its own
  (every token but the first is predicted from the ones before it in the window) and
  ``PPL = exp(mean over windows of the window's mean NLL)``;
- **strided sliding windows** (``stride=...``, as in the Hugging Face perplexity guide):
  windows of up to ``window`` tokens start every ``stride`` tokens, only the tokens not scored
  by an earlier window are scored, and ``PPL = exp(total NLL / scored tokens)``.

:func:`lambada` measures last-word accuracy and last-word perplexity on LAMBADA-style examples.
WikiText and other raw text files go through :func:`text_perplexity`.

Examples
--------
>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64,
...                                    vocab_size=100, bos_token_id=0, eos_token_id=0))
>>> result = perplexity(model, torch.randint(0, 100, (300,)), window=64)
>>> result.n_windows
5
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tqla_torch._lm import lm_forward, max_positions
from tqla_torch.training.data import load_texts, tokenize_texts

__all__ = [
    "LambadaResult",
    "PerplexityResult",
    "lambada",
    "load_lambada",
    "perplexity",
    "text_perplexity",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerplexityResult:
    """Result of :func:`perplexity`.

    Attributes
    ----------
    ppl : float
        Perplexity, ``exp(nll)``.
    nll : float
        Mean negative log-likelihood in nats: the mean over windows of the windows' mean NLL
        (non-overlapping protocol) or the mean over scored tokens (strided protocol).
    n_tokens : int
        Tokens scored.
    n_windows : int
        Windows run through the model.
    tokens_per_s : float
        Scored tokens per second of wall time.
    """

    ppl: float
    nll: float
    n_tokens: int
    n_windows: int
    tokens_per_s: float


@dataclass(frozen=True)
class LambadaResult:
    """Result of :func:`lambada`.

    Attributes
    ----------
    accuracy : float
        Fraction of examples whose final word is predicted exactly by greedy decoding.
    ppl : float
        ``exp`` of the mean over examples of the final word's NLL (summed over its tokens).
    nll : float
        That mean NLL in nats.
    n_examples : int
        Examples evaluated.
    """

    accuracy: float
    ppl: float
    nll: float
    n_examples: int


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    return device


def _as_token_stream(token_ids: Any) -> torch.Tensor:
    if isinstance(token_ids, torch.Tensor):
        ids = token_ids.detach().cpu()
    else:
        ids = torch.as_tensor(np.asarray(token_ids))
    if ids.ndim != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"token_ids must hold integers, got dtype {ids.dtype}")
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError("token_ids must be non-negative")
    return ids.to(torch.int64)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@torch.inference_mode()
def _window_nll(
    model: nn.Module,
    ids: torch.Tensor,
    windows: list[tuple[int, int, int]],
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[list[float], list[int]]:
    """Sum of NLL and count of the last ``n_score`` predicted tokens of each window."""
    from tqdm.auto import tqdm

    sums = [0.0] * len(windows)
    counts = [0] * len(windows)
    by_length: dict[int, list[int]] = {}
    for i, (start, end, _) in enumerate(windows):
        by_length.setdefault(end - start, []).append(i)
    bar = tqdm(total=len(windows), desc="perplexity", disable=not progress, dynamic_ncols=True)
    try:
        for length, members in by_length.items():
            for b in range(0, len(members), batch_size):
                chunk = members[b : b + batch_size]
                batch = torch.stack([ids[windows[i][0] : windows[i][1]] for i in chunk]).to(device)
                logits = lm_forward(model, batch)[0][:, :-1].float()
                nll = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
                ).reshape(len(chunk), length - 1)
                for row, i in enumerate(chunk):
                    n_score = windows[i][2]
                    sums[i] = float(nll[row, length - 1 - n_score :].double().sum())
                    counts[i] = n_score
                bar.update(len(chunk))
    finally:
        bar.close()
    return sums, counts


def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor | Sequence[int] | np.ndarray,
    *,
    window: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity of a causal LM on a token stream.

    Parameters
    ----------
    model : torch.nn.Module
        Causal LM called as ``model(input_ids)``, returning logits or an object with
        ``.logits``. It is put in eval mode for the evaluation and its mode restored afterwards.
    token_ids : torch.Tensor, sequence of int or numpy.ndarray
        1-D token stream (for example :func:`tqla_torch.data.tokenize_texts` of a test set).
    window : int, default 1024
        Tokens per window; clipped to the model's ``n_positions`` (``max_position_embeddings``).
    stride : int, optional
        ``None``: non-overlapping windows, ``PPL = exp(mean of window mean NLL)``; the last,
        shorter window is included when it has at least 2 tokens. An int in ``[1, window]``:
        strided sliding windows, ``PPL = exp(total NLL / scored tokens)``.
    batch_size : int, default 8
        Windows per forward pass.
    device : str or torch.device, optional
        Device to evaluate on; the model is moved there. Default: where the model's
        parameters are.
    progress : bool, default False
        Show a tqdm progress bar.

    Returns
    -------
    PerplexityResult

    Raises
    ------
    ValueError
        If ``token_ids`` is not a 1-D integer stream of at least one window (after
        clipping ``window`` to the model's context), or ``window``, ``stride`` or
        ``batch_size`` are out of range.

    Examples
    --------
    >>> import torch
    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, ids):
    ...         return torch.zeros(*ids.shape, 10)
    >>> round(perplexity(Uniform(), torch.arange(50) % 10, window=8).ppl, 6)
    10.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ids = _as_token_stream(token_ids)
    window = _check_positive_int("window", window)
    batch_size = _check_positive_int("batch_size", batch_size)
    n_positions = max_positions(model)
    if n_positions is not None and window > n_positions:
        logger.info("window %d clipped to the model's n_positions %d", window, n_positions)
        window = int(n_positions)
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    if stride is not None:
        stride = _check_positive_int("stride", stride)
        if stride > window:
            raise ValueError(f"stride must be <= window ({window}), got {stride}")

    n = ids.numel()
    if n < window:  # a perplexity from a few tokens says nothing and looks like a result
        raise ValueError(
            f"token_ids has {n} token{'' if n == 1 else 's'}, fewer than one window of "
            f"{window}: evaluate a longer "
            f"text or pass a smaller window (--window)"
        )
    windows: list[tuple[int, int, int]] = []  # (start, end, number of scored tokens)
    if stride is None:
        for start in range(0, n, window):
            end = min(start + window, n)
            if end - start >= 2:
                windows.append((start, end, end - start - 1))
    else:
        prev_end = 0
        for start in range(0, n, stride):
            end = min(start + window, n)
            n_score = min(end - prev_end, end - start - 1)
            if n_score > 0:
                windows.append((start, end, n_score))
            prev_end = end
            if end == n:
                break

    device = _resolve_device(model, device)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        sums, counts = _window_nll(model, ids, windows, batch_size, device, progress)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - t0
    n_tokens = sum(counts)
    if stride is None:
        nll = float(np.mean([s / c for s, c in zip(sums, counts)]))
    else:
        nll = sum(sums) / n_tokens
    return PerplexityResult(
        ppl=math.exp(nll),
        nll=nll,
        n_tokens=n_tokens,
        n_windows=len(windows),
        tokens_per_s=n_tokens / max(elapsed, 1e-9),
    )


def text_perplexity(
    model: nn.Module,
    tokenizer: Any,
    source: str | os.PathLike[str],
    *,
    text_field: str = "text",
    split: str = "validation",
    **kwargs: Any,
) -> PerplexityResult:
    """Perplexity on text read from a file, folder or the built-in corpus.

    The documents from :func:`tqla_torch.data.load_texts` are tokenised into one stream (each
    followed by the EOS token) and passed to :func:`perplexity`. A WikiText raw test file
    (``wiki.test.raw``) is a single document.

    Parameters
    ----------
    model : torch.nn.Module
        Causal LM.
    tokenizer : transformers.PreTrainedTokenizerBase
        The model's tokenizer.
    source : str or os.PathLike
        ``"builtin"`` or a local path; see :func:`tqla_torch.data.load_texts`.
    text_field : str, default "text"
        Text field of JSON lines / Parquet / dataset folders.
    split : str, default "validation"
        Split of the built-in corpus or of a ``DatasetDict`` folder.
    **kwargs
        ``window``, ``stride``, ``batch_size``, ``device``, ``progress`` of :func:`perplexity`.

    Returns
    -------
    PerplexityResult
    """
    texts = load_texts(source, text_field=text_field, split=split)
    return perplexity(model, tokenize_texts(texts, tokenizer), **kwargs)


def load_lambada(path: str | os.PathLike[str], *, text_field: str = "text") -> list[str]:
    """Read LAMBADA examples from a local file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.jsonl`` file with one ``{"text": ...}`` object per line (the OpenAI release), or a
        plain-text file with one example per line. Blank lines are skipped.
    text_field : str, default "text"
        Field holding the text in JSON lines.

    Returns
    -------
    list of str

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        On malformed JSON lines or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file: {str(path)!r}")
    if path.suffix.lower() == ".jsonl":
        examples = load_texts(path, text_field=text_field)
    else:
        examples = path.read_text(encoding="utf-8").splitlines()
    examples = [e.strip() for e in examples if e.strip()]
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def _split_last_word(text: str, position: int) -> tuple[str, str]:
    text = text.strip()
    cut = text.rfind(" ")
    if cut <= 0:
        raise ValueError(f"examples[{position}] has no context before its last word: {text!r}")
    return text[:cut], text[cut:]


@torch.inference_mode()
def lambada(
    model: nn.Module,
    tokenizer: Any,
    examples: str | os.PathLike[str] | Iterable[str],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> LambadaResult:
    """LAMBADA last-word accuracy and perplexity.

    Each example is split at its last space into a context and a final word (with its leading
    space). The final word's tokens are scored given the context; the example counts as correct
    when greedy prediction reproduces every one of them. Inputs longer than the model's
    ``n_positions`` keep their last ``n_positions`` tokens.

    Parameters
    ----------
    model : torch.nn.Module
        Causal LM; put in eval mode during the evaluation, mode restored afterwards.
    tokenizer : transformers.PreTrainedTokenizerBase
        The model's tokenizer.
    examples : str, os.PathLike or iterable of str
        A path read with :func:`load_lambada`, or the example texts.
    batch_size : int, default 16
        Examples per forward pass (right-padded, with an attention mask).
    device : str or torch.device, optional
        Device to evaluate on (the model is moved there); default: the model's.
    progress : bool, default False
        Show a tqdm progress bar.

    Returns
    -------
    LambadaResult

    Raises
    ------
    ValueError
        If an example has no space-separated last word or the example list is empty.
    """
    from tqdm.auto import tqdm

    if isinstance(examples, (str, os.PathLike)):
        examples = load_lambada(examples)
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    batch_size = _check_positive_int("batch_size", batch_size)
    limit = max_positions(model)
    pairs = []
    for i, text in enumerate(examples):
        if not isinstance(text, str):
            raise TypeError(f"examples[{i}] must be a str, got {type(text).__name__}")
        context, target = _split_last_word(text, i)
        ctx_ids = tokenizer(context, add_special_tokens=False, verbose=False)["input_ids"]
        tgt_ids = tokenizer(target, add_special_tokens=False, verbose=False)["input_ids"]
        if not ctx_ids or not tgt_ids:
            raise ValueError(f"examples[{i}] tokenises to an empty context or last word")
        full = ctx_ids + tgt_ids
        if limit is not None and len(full) > limit:
            if len(tgt_ids) >= limit:
                raise ValueError(
                    f"examples[{i}]: the last word has {len(tgt_ids)} tokens, not fewer than the "
                    f"model's n_positions {limit}"
                )
            full = full[-limit:]
        pairs.append((full, len(tgt_ids)))

    device = _resolve_device(model, device)
    was_training = model.training
    model.eval()
    correct = 0
    nll_total = 0.0
    bar = tqdm(total=len(pairs), desc="lambada", disable=not progress, dynamic_ncols=True)
    try:
        for b in range(0, len(pairs), batch_size):
            chunk = pairs[b : b + batch_size]
            width = max(len(full) for full, _ in chunk)
            input_ids = torch.zeros(len(chunk), width, dtype=torch.int64)
            mask = torch.zeros(len(chunk), width, dtype=torch.int64)
            for row, (full, _) in enumerate(chunk):
                input_ids[row, : len(full)] = torch.tensor(full)
                mask[row, : len(full)] = 1
            logits = lm_forward(model, input_ids.to(device), attention_mask=mask.to(device))[
                0
            ].float()
            for row, (full, n_target) in enumerate(chunk):
                length = len(full)
                pred_logits = logits[row, length - 1 - n_target : length - 1]
                target = torch.tensor(full[length - n_target :], device=pred_logits.device)
                nll_total += float(F.cross_entropy(pred_logits, target, reduction="sum"))
                correct += bool((pred_logits.argmax(-1) == target).all())
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    nll = nll_total / len(pairs)
    return LambadaResult(
        accuracy=correct / len(pairs), ppl=math.exp(nll), nll=nll, n_examples=len(pairs)
    )
