"""Text data for distillation and evaluation: a built-in corpus, a local tokenizer, packing.

Everything here works offline. The built-in corpus is the English reference text that ships with
CPython (:mod:`pydoc_data.topics`, about 0.5 MB); :func:`builtin_tokenizer` trains a byte-level
BPE on its training split in well under a second, so small models can be distilled and evaluated
without downloading anything. Real corpora are read from local files with :func:`load_texts`.

Token streams are packed into fixed-length blocks (:func:`pack_tokens`, :class:`PackedDataset`)
and visited in a seeded, resumable order (:class:`BlockOrder`) whose position is the pair
``(epoch, index)``, so a checkpoint can restore it exactly.

Examples
--------
>>> from tqla_torch.training.data import PackedDataset, builtin_tokenizer
>>> tok = builtin_tokenizer(vocab_size=1024)
>>> ds = PackedDataset.from_source("builtin", tok, block_size=64, split="validation")
>>> ds.blocks.shape[1]
64

The file readers (txt, jsonl, Parquet, ``datasets`` folders) live in
:mod:`tqla_torch.training.readers`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tqla_torch.training.readers import (
    SUFFIXES,
    is_hf_dataset_dir,
    read_file,
    read_hf_dataset,
)

__all__ = [
    "EOS_TOKEN",
    "BlockOrder",
    "PackedDataset",
    "builtin_corpus",
    "builtin_documents",
    "builtin_tokenizer",
    "load_texts",
    "pack_tokens",
    "tokenize_texts",
]

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
"""End-of-text token of the built-in tokenizer (the same string GPT-2 uses)."""

_SPLITS = ("train", "validation")
_VALIDATION_FRACTION = 0.1


# --------------------------------------------------------------------------------------------
# Built-in corpus and tokenizer
# --------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


@functools.cache
def _builtin_documents(split: str) -> tuple[str, ...]:
    from pydoc_data.topics import topics

    keys = sorted(topics)
    n_validation = max(1, round(_VALIDATION_FRACTION * len(keys)))
    chosen = keys[: len(keys) - n_validation] if split == "train" else keys[-n_validation:]
    return tuple(topics[key] for key in chosen)


def builtin_documents(split: str = "train") -> list[str]:
    """Documents of the built-in corpus: CPython's ``pydoc_data.topics`` reference text.

    Each topic (``"assert"``, ``"class"``, ...) is one document. Topics are sorted by key; the
    last 10% of them (rounded, at least one) form the validation split, the rest the training
    split. The split is therefore identical on every machine running the same Python version.

    Parameters
    ----------
    split : {"train", "validation"}, default "train"
        Which part of the corpus.

    Returns
    -------
    list of str
        The documents, in key order.

    Examples
    --------
    >>> docs = builtin_documents("validation")
    >>> len(docs) > 0 and all(isinstance(d, str) for d in docs)
    True
    """
    _check_split(split)
    return list(_builtin_documents(split))


def builtin_corpus(split: str = "train") -> str:
    """The built-in corpus split as one string (documents separated by a blank line).

    Parameters
    ----------
    split : {"train", "validation"}, default "train"
        Which part of the corpus; see :func:`builtin_documents`.

    Returns
    -------
    str
        The text of the split.

    Examples
    --------
    >>> len(builtin_corpus("train")) > len(builtin_corpus("validation"))
    True
    """
    return "\n\n".join(builtin_documents(split))


@functools.cache
def _trained_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_builtin_documents("train"), trainer=trainer)
    logger.debug("trained built-in BPE tokenizer with %d tokens", tokenizer.get_vocab_size())
    return tokenizer.to_str()


def builtin_tokenizer(
    vocab_size: int = 4096, *, save_dir: str | os.PathLike[str] | None = None
) -> Any:
    """A byte-level BPE tokenizer trained on the built-in training corpus.

    It behaves like GPT-2's tokenizer (byte-level, no prefix space, ``<|endoftext|>`` as the
    beginning-, end- and unknown-token, no padding token) but needs no download. Training is
    deterministic and is done once per ``vocab_size`` and process; each call returns a new
    :class:`transformers.PreTrainedTokenizerFast` built from the cached result, so callers may
    modify the returned object freely.

    Parameters
    ----------
    vocab_size : int, default 4096
        Size of the vocabulary including the special token; at least 257 (256 bytes plus
        ``<|endoftext|>``).
    save_dir : str or os.PathLike, optional
        If given, the tokenizer is also written there with ``save_pretrained`` and can be
        reloaded with ``PreTrainedTokenizerFast.from_pretrained(save_dir)``.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        The tokenizer. Its vocabulary may be slightly smaller than ``vocab_size`` if the corpus
        has too few distinct merges.

    Raises
    ------
    ValueError
        If ``vocab_size`` is not an integer of at least 257.

    Examples
    --------
    >>> tok = builtin_tokenizer(vocab_size=512)
    >>> tok.decode(tok("Hello, world")["input_ids"])
    'Hello, world'
    >>> tok.eos_token
    '<|endoftext|>'
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size must be at least 257 (256 bytes + {EOS_TOKEN}), got {vocab_size}"
        )
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_tokenizer_json(int(vocab_size)))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=int(1e30),
    )
    if save_dir is not None:
        tokenizer.save_pretrained(os.fspath(save_dir))
    return tokenizer


# --------------------------------------------------------------------------------------------
# Loading text from local files
# --------------------------------------------------------------------------------------------


def load_texts(
    source: str | os.PathLike[str],
    *,
    text_field: str = "text",
    split: str = "train",
) -> list[str]:
    """Read documents from the built-in corpus or from local files.

    Parameters
    ----------
    source : str or os.PathLike
        One of

        - ``"builtin"``: the built-in corpus (:func:`builtin_documents`), one document per topic;
        - a ``.txt`` file (also ``.text``, ``.raw``, e.g. WikiText's ``wiki.test.raw``): the
          whole file is one document;
        - a ``.jsonl`` file: one document per line, taken from the field ``text_field``;
        - a ``.parquet`` file (needs ``pyarrow``): one document per row of column ``text_field``;
        - a folder written by ``datasets.Dataset.save_to_disk`` (needs ``datasets``);
        - any other folder: every ``.txt`` / ``.jsonl`` / ``.parquet`` file in it (not
          recursive), in sorted name order.
    text_field : str, default "text"
        Field or column holding the text in JSON lines, Parquet and dataset folders.
    split : {"train", "validation"} or str, default "train"
        Split of the built-in corpus, or of a ``DatasetDict`` folder.

    Returns
    -------
    list of str
        The documents.

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    ValueError
        For unsupported file types, malformed JSON lines, a missing text field or column
        (the documents come from the field/column named ``text_field``), a text column with
        nulls or non-strings, a missing ``split`` of a ``DatasetDict``, a folder without
        readable files, or a source without any document.
    ImportError
        If a dataset folder or Parquet file is given and ``datasets`` / ``pyarrow`` is missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
    >>> _ = p.write_text('{"text": "first"}\\n{"text": "second"}\\n')
    >>> load_texts(p)
    ['first', 'second']
    """
    if not isinstance(text_field, str) or not text_field:
        raise ValueError(f"text_field must be a non-empty str, got {text_field!r}")
    if isinstance(source, str) and source == "builtin":
        return builtin_documents(split)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be 'builtin' or a path (str or os.PathLike), got {type(source).__name__}"
        )
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"source: no such file or directory: {str(path)!r}")
    if path.is_file():
        texts = read_file(path, text_field)
    elif is_hf_dataset_dir(path):
        texts = read_hf_dataset(path, text_field, split)
    else:
        suffixes = SUFFIXES
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(
                f"source {str(path)!r}: folder holds no {suffixes} files and is not a saved "
                "Hugging Face dataset (a folder written by save_to_disk)"
            )
        texts = []
        for file in files:
            texts.extend(read_file(file, text_field))
    if not texts:
        raise ValueError(f"source {str(path)!r} holds no documents (no rows, lines or text)")
    return texts


# --------------------------------------------------------------------------------------------
# Tokenising and packing
# --------------------------------------------------------------------------------------------


def tokenize_texts(
    texts: str | Iterable[str], tokenizer: Any, *, add_eos: bool = True
) -> torch.Tensor:
    """Tokenise documents into one stream, each document followed by the EOS token.

    Parameters
    ----------
    texts : str or iterable of str
        One document or several.
    tokenizer : transformers.PreTrainedTokenizerBase
        Tokenizer of the model (for instance :func:`builtin_tokenizer`).
    add_eos : bool, default True
        Append ``tokenizer.eos_token_id`` after every document (GPT-2's document separator).

    Returns
    -------
    torch.Tensor
        1-D ``int64`` tensor of token ids.

    Raises
    ------
    ValueError
        If ``add_eos`` is set and the tokenizer has no EOS token.

    Examples
    --------
    >>> tok = builtin_tokenizer(vocab_size=512)
    >>> ids = tokenize_texts(["a b", "c"], tok)
    >>> int(ids[-1]) == tok.eos_token_id
    True
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is None:
        raise ValueError("tokenizer has no eos_token_id; pass add_eos=False or set eos_token")
    if not texts:
        return torch.zeros(0, dtype=torch.int64)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    pieces: list[int] = []
    for ids in encoded:
        pieces.extend(ids)
        if add_eos:
            pieces.append(int(eos))
    return torch.tensor(pieces, dtype=torch.int64)


def pack_tokens(token_ids: torch.Tensor | Sequence[int], block_size: int) -> torch.Tensor:
    """Cut a token stream into consecutive blocks of ``block_size`` tokens.

    The incomplete tail (fewer than ``block_size`` tokens) is dropped.

    Parameters
    ----------
    token_ids : torch.Tensor or sequence of int
        1-D token stream.
    block_size : int
        Tokens per block, at least 2 (a block must hold an input and a next token).

    Returns
    -------
    torch.Tensor
        ``int64`` tensor of shape ``[n_blocks, block_size]`` (a copy; ``n_blocks`` may be 0).

    Examples
    --------
    >>> pack_tokens(torch.arange(10), 4).tolist()
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be an int, got {type(block_size).__name__}")
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    ids = torch.as_tensor(token_ids)
    if ids.ndim != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"token_ids must hold integers, got dtype {ids.dtype}")
    n_blocks = ids.numel() // block_size
    return ids[: n_blocks * block_size].to(torch.int64).reshape(n_blocks, block_size).clone()


class PackedDataset(torch.utils.data.Dataset):
    """Fixed-length token blocks, indexable like a map-style :class:`~torch.utils.data.Dataset`.

    Parameters
    ----------
    blocks : torch.Tensor
        Integer tensor of shape ``[n_blocks, block_size]``; stored as ``int64``.

    Attributes
    ----------
    blocks : torch.Tensor
        The ``[n_blocks, block_size]`` ``int64`` blocks.

    Examples
    --------
    >>> ds = PackedDataset(torch.arange(12).reshape(3, 4))
    >>> len(ds), ds.block_size, ds[1].tolist()
    (3, 4, [4, 5, 6, 7])
    """

    def __init__(self, blocks: torch.Tensor) -> None:
        blocks = torch.as_tensor(blocks)
        if blocks.ndim != 2:
            raise ValueError(
                f"blocks must be 2-D [n_blocks, block_size], got {tuple(blocks.shape)}"
            )
        if blocks.dtype.is_floating_point or blocks.dtype.is_complex or blocks.dtype == torch.bool:
            raise ValueError(f"blocks must hold integer token ids, got dtype {blocks.dtype}")
        if blocks.shape[1] < 2:
            raise ValueError(f"blocks must have block_size >= 2, got {blocks.shape[1]}")
        if blocks.numel() and int(blocks.min()) < 0:
            raise ValueError("blocks must hold non-negative token ids")
        self.blocks = blocks.to(torch.int64).contiguous()

    @classmethod
    def from_texts(
        cls, texts: str | Iterable[str], tokenizer: Any, block_size: int
    ) -> PackedDataset:
        """Tokenise documents (joined with EOS) and pack them into blocks.

        Parameters
        ----------
        texts : str or iterable of str
            Documents.
        tokenizer : transformers.PreTrainedTokenizerBase
            Tokenizer of the model.
        block_size : int
            Tokens per block.

        Returns
        -------
        PackedDataset
        """
        return cls(pack_tokens(tokenize_texts(texts, tokenizer), block_size))

    @classmethod
    def from_source(
        cls,
        source: str | os.PathLike[str],
        tokenizer: Any,
        block_size: int,
        *,
        text_field: str = "text",
        split: str = "train",
    ) -> PackedDataset:
        """Read documents with :func:`load_texts`, tokenise and pack them.

        Parameters
        ----------
        source : str or os.PathLike
            ``"builtin"`` or a local path; see :func:`load_texts`.
        tokenizer : transformers.PreTrainedTokenizerBase
            Tokenizer of the model.
        block_size : int
            Tokens per block.
        text_field : str, default "text"
            Text field for JSON lines, Parquet and dataset folders.
        split : str, default "train"
            Split of the built-in corpus or of a ``DatasetDict``.

        Returns
        -------
        PackedDataset
        """
        texts = load_texts(source, text_field=text_field, split=split)
        return cls.from_texts(texts, tokenizer, block_size)

    @property
    def block_size(self) -> int:
        """Tokens per block."""
        return int(self.blocks.shape[1])

    @property
    def n_tokens(self) -> int:
        """Total number of tokens in all blocks."""
        return int(self.blocks.numel())

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blocks[index]


# --------------------------------------------------------------------------------------------
# Deterministic, resumable, shardable order
# --------------------------------------------------------------------------------------------


@dataclass
class BlockOrder:
    """A seeded, resumable order over block indices, sharded across data-parallel ranks.

    Every epoch visits a fresh permutation of ``range(n_blocks)`` drawn from
    ``numpy.random.default_rng([seed, epoch])`` (independent of any global RNG). Optimizer step
    ``k`` of an epoch takes the global samples ``perm[k*G:(k+1)*G]`` with
    ``G = world_size * batch_size * grad_accum`` (the global batch); within the step, global
    micro-batch ``m`` is ``perm[k*G + m*W:k*G + (m+1)*W]`` with ``W = world_size * batch_size``
    and rank ``r`` takes the ``r``-th contiguous slice of ``batch_size`` blocks of it. Hence
    which blocks a step trains on depends on ``seed`` and ``G`` only, not on how they are split
    over ranks and micro-batches. An epoch's incomplete tail (fewer than ``G`` blocks) is
    skipped.

    The position is ``(epoch, index)``: ``index`` counts the blocks of the current epoch's
    permutation already consumed by all ranks together. Restoring both fields resumes the order
    exactly.

    Parameters
    ----------
    n_blocks : int
        Number of blocks in the dataset.
    batch_size : int
        Blocks per micro-batch on this rank.
    seed : int, default 0
        Seed of the permutations.
    world_size : int, default 1
        Number of data-parallel ranks.
    rank : int, default 0
        This rank.
    grad_accum : int, default 1
        Micro-batches per optimizer step.
    epoch : int, default 0
        Starting epoch.
    index : int, default 0
        Starting position within the epoch.

    Examples
    --------
    >>> order = BlockOrder(n_blocks=10, batch_size=4, seed=1)
    >>> first = order.next_indices()
    >>> state = order.state_dict()
    >>> second = order.next_indices()
    >>> order.load_state_dict(state)
    >>> bool((order.next_indices() == second).all())
    True
    """

    n_blocks: int
    batch_size: int
    seed: int = 0
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1
    epoch: int = 0
    index: int = 0

    def __post_init__(self) -> None:
        for name in ("n_blocks", "batch_size", "world_size", "grad_accum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if self.step_blocks > self.n_blocks:
            raise ValueError(
                f"the dataset has {self.n_blocks} blocks, fewer than one global batch "
                f"(world_size * batch_size * grad_accum = {self.step_blocks}); use more data "
                "or a smaller batch"
            )
        if self.epoch < 0 or self.index < 0:
            raise ValueError(f"epoch and index must be >= 0, got ({self.epoch}, {self.index})")
        self._perm_epoch: int | None = None
        self._perm: np.ndarray | None = None

    @property
    def global_batch(self) -> int:
        """Blocks per micro-batch over all ranks."""
        return self.world_size * self.batch_size

    @property
    def step_blocks(self) -> int:
        """Blocks per optimizer step over all ranks and micro-batches (the global batch)."""
        return self.global_batch * self.grad_accum

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._perm = rng.permutation(self.n_blocks)
            self._perm_epoch = self.epoch
        assert self._perm is not None
        return self._perm

    def next_indices(self) -> torch.Tensor:
        """Indices of this rank's next micro-batch (advances the position for all ranks).

        Returns
        -------
        torch.Tensor
            ``int64`` tensor of ``batch_size`` block indices.
        """
        if self.index % self.step_blocks == 0 and self.index + self.step_blocks > self.n_blocks:
            self.epoch += 1  # a new epoch starts only where an optimizer step starts
            self.index = 0
        perm = self._permutation()
        start = self.index + self.rank * self.batch_size
        chosen = perm[start : start + self.batch_size]
        self.index += self.global_batch
        return torch.from_numpy(chosen.astype(np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_indices()

    def state_dict(self) -> dict[str, int]:
        """The position and the parameters that define the order."""
        return {
            "epoch": int(self.epoch),
            "index": int(self.index),
            "seed": int(self.seed),
            "n_blocks": int(self.n_blocks),
            "global_batch": int(self.step_blocks),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict`.

        Raises
        ------
        ValueError
            If the saved order used a different dataset size, seed or global batch
            (``global_batch`` in the state: blocks per optimizer step over all ranks).
        """
        for key, mine in (
            ("n_blocks", self.n_blocks),
            ("seed", self.seed),
            ("global_batch", self.step_blocks),
        ):
            if int(state[key]) != int(mine):
                raise ValueError(
                    f"data order mismatch: the saved position has {key}={state[key]}, this run "
                    f"has {key}={mine}; resume with the same data, seed and "
                    "world_size * batch_size * grad_accum"
                )
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
