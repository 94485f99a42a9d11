"""Knowledge distillation of a (compressed) student from a frozen teacher.

The loss (methods.md §3) is

.. math::

    L = \\alpha\\,\\mathrm{CE}(z_s, y) + (1-\\alpha)\\,T^2\\,
        \\mathrm{KL}\\big(\\mathrm{softmax}(z_t/T)\\,\\|\\,\\mathrm{softmax}(z_s/T)\\big)
        \\;[+\\;\\beta\\,\\tfrac{1}{L}\\textstyle\\sum_l \\mathrm{MSE}(h_s^l, h_t^l)]

averaged over tokens, with the teacher in eval mode, without gradients. :func:`distill` runs it
for one budget; :func:`distill_stages` runs a multi-step schedule of :class:`Stage` objects, each
of which may first compress the student in place. Runs checkpoint atomically and resume
bit-exactly on CPU; under ``torchrun`` they train data-parallel.

Examples
--------
>>> import copy, torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from tqla_torch.training.data import PackedDataset, builtin_tokenizer
>>> tok = builtin_tokenizer(vocab_size=512)
>>> data = PackedDataset.from_source("builtin", tok, block_size=32, split="validation")
>>> cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=32, vocab_size=len(tok),
...                  bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
>>> teacher = GPT2LMHeadModel(cfg)
>>> student = copy.deepcopy(teacher)
>>> result = distill(student, teacher, data,
...                  DistillConfig(max_steps=2, batch_size=2, device="cpu", progress=False))
>>> result.step
2
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tqla_torch._atomic import atomic_torch_save, remove_stale_temporaries
from tqla_torch._lm import lm_forward, max_positions, vocab_size
from tqla_torch.training.data import BlockOrder, PackedDataset

__all__ = [
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "Stage",
    "distill",
    "distill_stages",
    "distillation_loss",
    "hidden_state_mse",
    "latest_checkpoint",
    "published_recipe",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "tqla-distill-checkpoint"
_CHECKPOINT_VERSION = 1
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{8,})\.pt$")
_MIXED_PRECISION = ("no", "bf16")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass
class DistillConfig:
    """Hyper-parameters and run settings of a distillation.

    All fields are JSON-serialisable (:meth:`to_dict`, :meth:`from_dict`) and validated on
    construction; a bad value raises :class:`ValueError` naming the field and the rule.

    Examples
    --------
    >>> cfg = DistillConfig(alpha=0.5, temperature=2.0, max_steps=100)
    >>> DistillConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> DistillConfig(alpha=1.5)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in [0, 1], got 1.5
    """

    alpha: float = field(
        default=0.5, metadata={"help": "weight of the cross-entropy term; 1 - alpha weighs KL"}
    )
    temperature: float = field(
        default=2.0, metadata={"help": "softmax temperature T of the KL term (> 0)"}
    )
    hidden_mse: float = field(
        default=0.0,
        metadata={"help": "weight of the per-block hidden-state MSE (0 = off; needs equal depth)"},
    )
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate of AdamW (> 0)"})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay on matrices (biases/norms: none)"}
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "linear warm-up steps at the start of every stage"}
    )
    min_lr_ratio: float = field(
        default=0.0, metadata={"help": "cosine decay ends at min_lr_ratio * lr, in [0, 1]"}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "optimizer steps per stage (None: use max_tokens)"}
    )
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "tokens per stage over all ranks (None: use max_steps); the smaller wins"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "blocks per micro-batch and rank"})
    grad_accum: int = field(
        default=1, metadata={"help": "micro-batches accumulated per optimizer step"}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "gradient clipping norm (None: no clipping)"}
    )
    mixed_precision: str = field(
        default="no", metadata={"help": "'no' or 'bf16' (bf16 autocast, CUDA only)"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the data order and of the RNGs (plus the rank)"}
    )
    checkpoint_dir: str | None = field(
        default=None, metadata={"help": "where checkpoints go and are resumed from (None: off)"}
    )
    checkpoint_every: int = field(
        default=0,
        metadata={"help": "checkpoint every N optimizer steps (0: only at the end of each stage)"},
    )
    keep_checkpoints: int = field(default=1, metadata={"help": "how many checkpoints to keep"})
    log_every: int = field(default=10, metadata={"help": "log loss, lr and tokens/s every N steps"})
    device: str = field(
        default="auto", metadata={"help": "'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1'..."}
    )
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar (rank 0)"})

    def __post_init__(self) -> None:
        def real(name: str) -> float:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return float(value)

        def integer(name: str, minimum: int) -> int:
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
            return int(value)

        alpha = real("alpha")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if real("temperature") <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if real("hidden_mse") < 0:
            raise ValueError(f"hidden_mse must be >= 0, got {self.hidden_mse!r}")
        if real("lr") <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if real("weight_decay") < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= real("min_lr_ratio") <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        integer("warmup_steps", 0)
        for name in ("max_steps", "max_tokens"):
            if getattr(self, name) is not None:
                integer(name, 1)
        integer("batch_size", 1)
        integer("grad_accum", 1)
        if self.max_grad_norm is not None and real("max_grad_norm") <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.mixed_precision not in _MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {_MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        integer("seed", 0)
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise ValueError(
                    "checkpoint_dir must be a path or None, got "
                    f"{type(self.checkpoint_dir).__name__}"
                )
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        integer("checkpoint_every", 0)
        integer("keep_checkpoints", 1)
        integer("log_every", 1)
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a str, got {type(self.device).__name__}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError) as err:
                raise ValueError(
                    f"device must be 'auto' or a torch device string, got {self.device!r}"
                ) from err
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be a bool, got {self.progress!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DistillConfig:
        """Build a config from :meth:`to_dict` output (or a JSON object).

        Raises
        ------
        ValueError
            If ``values`` has keys that are not fields.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DistillConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


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
    if not _is_real(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not _is_real(temperature) or not float(temperature) > 0 or math.isinf(temperature):
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


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One step of a multi-step distillation schedule.

    Parameters
    ----------
    name : str
        Label for logs and checkpoints.
    compress : None, callable or compression config, optional
        Applied to the student in place before the stage trains: ``None`` (train only), a
        callable ``f(student) -> None``, or an object with a ``to_dict()`` method (a
        ``tqla_torch`` compression config), which is passed to
        ``tqla_torch.compress(student, config)``.
    steps : int, optional
        Optimizer steps of this stage.
    tokens : int, optional
        Tokens (over all ranks) of this stage; converted to steps, rounding up. When both are
        given the smaller budget wins; when neither is, ``DistillConfig.max_steps`` /
        ``max_tokens`` apply.

    Examples
    --------
    >>> Stage("warm-up", steps=100)
    Stage(name='warm-up', compress=None, steps=100, tokens=None)
    """

    name: str
    compress: Any = None
    steps: int | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Stage.name must be a non-empty str, got {self.name!r}")
        for attr in ("steps", "tokens"):
            value = getattr(self, attr)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"Stage {self.name!r}: {attr} must be an int >= 1, got {value!r}")
        c = self.compress
        if c is not None and not callable(getattr(c, "to_dict", None)) and not callable(c):
            raise ValueError(
                f"Stage {self.name!r}: compress must be None, a callable f(student) or a "
                f"compression config with to_dict(), got {type(c).__name__}"
            )

    def _descriptor(self) -> str | None:
        c = self.compress
        if c is None:
            return None
        if callable(getattr(c, "to_dict", None)):
            return "config:" + json.dumps(c.to_dict(), sort_keys=True, default=str)
        return "callable:" + getattr(c, "__qualname__", type(c).__qualname__)


def published_recipe(
    embedding: Any,
    mlp: Any,
    *,
    embedding_again: Any = None,
    steps: int | None = None,
    tokens: int | None = None,
) -> list[Stage]:
    """The TQCompressedGPT-2 schedule: compress the embedding, then the MLPs, then the embedding
    again, distilling after each step (methods.md §3).

    Parameters
    ----------
    embedding : compression config or callable
        Compression of the token embedding (first halving).
    mlp : compression config or callable
        Compression of the MLP layers.
    embedding_again : compression config or callable, optional
        Second embedding compression; defaults to ``embedding``.
    steps, tokens : int, optional
        Budget of each stage (see :class:`Stage`).

    Returns
    -------
    list of Stage
        Three stages named ``"embedding"``, ``"mlp"``, ``"embedding-2"``.
    """
    again = embedding if embedding_again is None else embedding_again
    return [
        Stage("embedding", compress=embedding, steps=steps, tokens=tokens),
        Stage("mlp", compress=mlp, steps=steps, tokens=tokens),
        Stage("embedding-2", compress=again, steps=steps, tokens=tokens),
    ]


def _apply_compression(stage: Stage, student: nn.Module) -> None:
    c = stage.compress
    if c is None:
        return
    if callable(getattr(c, "to_dict", None)):
        from tqla_torch.compression.apply import compress

        report = compress(student, c)
        logger.info("stage %r: compressed the student: %s", stage.name, report)
    else:
        c(student)
        logger.info("stage %r: applied %s to the student", stage.name, stage._descriptor())


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistillResult:
    """What a distillation run did.

    Attributes
    ----------
    history : list of dict
        One record per logged step: ``stage``, ``stage_index``, ``step`` (global optimizer
        step), ``stage_step``, ``loss``, ``ce``, ``kl``, ``hidden_mse``, ``lr``, ``grad_norm``
        (None without clipping), ``tokens`` (seen so far) and ``tokens_per_s``. A resumed run
        includes the records written before the interruption (a record whose logging interval
        spans the interruption averages only the steps after it).
    step : int
        Optimizer steps taken over all stages.
    tokens_seen : int
        Tokens fed to the student over all ranks.
    resumed_from : str or None
        Checkpoint the run resumed from.
    """

    history: list[dict[str, Any]]
    step: int
    tokens_seen: int
    resumed_from: str | None = None

    @property
    def final_loss(self) -> float | None:
        """Loss of the last logged step (None if nothing was logged)."""
        return self.history[-1]["loss"] if self.history else None


# --------------------------------------------------------------------------------------------
# Helpers: device, distributed, RNG, schedules, checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class _DistContext:
    world_size: int = 1
    rank: int = 0
    created_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup(config: DistillConfig) -> tuple[_DistContext, torch.device]:
    import torch.distributed as dist

    requested = config.device
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={config.device!r} but CUDA is not available")
    if config.mixed_precision == "bf16" and device.type != "cuda":
        raise ValueError(
            "mixed_precision='bf16' uses CUDA autocast and needs a CUDA device, got device "
            f"{device}"
        )

    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = _DistContext()
    if dist.is_available() and dist.is_initialized():
        ctx.world_size, ctx.rank = dist.get_world_size(), dist.get_rank()
    elif env_world > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        ctx = _DistContext(dist.get_world_size(), dist.get_rank(), created_group=True)
    if ctx.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ctx.rank)))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return ctx, device


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global RNG is seeded on purpose
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - checkpointed
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restored from a checkpoint
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class _WarmupCosine:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to ``floor``."""

    warmup: int
    total: int
    floor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _checkpoint_path(directory: Path, global_step: int) -> Path:
    return directory / f"checkpoint-{global_step:08d}.pt"


def _list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    """The most recent complete checkpoint in ``checkpoint_dir``, or None.

    Parameters
    ----------
    checkpoint_dir : str or os.PathLike
        A ``DistillConfig.checkpoint_dir``.

    Returns
    -------
    pathlib.Path or None
    """
    found = _list_checkpoints(Path(checkpoint_dir))
    return found[-1] if found else None


def _param_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _as_blocks(data: Any) -> torch.Tensor:
    if isinstance(data, PackedDataset):
        return data.blocks
    if isinstance(data, torch.Tensor):
        return PackedDataset(data).blocks
    raise TypeError(
        f"data must be a PackedDataset or a [n_blocks, block_size] integer tensor, "
        f"got {type(data).__name__}"
    )


def _stage_steps(stage: Stage, config: DistillConfig, tokens_per_step: int) -> int:
    steps, tokens = stage.steps, stage.tokens
    if steps is None and tokens is None:
        steps, tokens = config.max_steps, config.max_tokens
    if steps is None and tokens is None:
        raise ValueError(
            f"stage {stage.name!r} has no budget: set Stage.steps / Stage.tokens or "
            "DistillConfig.max_steps / max_tokens"
        )
    budgets = []
    if steps is not None:
        budgets.append(int(steps))
    if tokens is not None:
        budgets.append(max(1, math.ceil(int(tokens) / tokens_per_step)))
    return min(budgets)


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: PackedDataset | torch.Tensor,
    config: DistillConfig,
) -> DistillResult:
    """Distil ``student`` from ``teacher`` for ``config.max_steps`` / ``config.max_tokens``.

    A single-stage :func:`distill_stages` (stage name ``"distill"``, no compression); see it
    for the details of the loop, checkpoints, resumption and data parallelism.

    Parameters
    ----------
    student : torch.nn.Module
        Model being trained, in place. Called as ``student(input_ids)``; it returns logits or an
        object with ``.logits`` (Hugging Face causal LMs).
    teacher : torch.nn.Module
        Frozen reference model with the same vocabulary.
    data : PackedDataset or torch.Tensor
        Token blocks ``[n_blocks, block_size]``.
    config : DistillConfig
        Hyper-parameters; ``max_steps`` or ``max_tokens`` must be set.

    Returns
    -------
    DistillResult
    """
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
    if config.max_steps is None and config.max_tokens is None:
        raise ValueError("config: set max_steps or max_tokens (both are None)")
    return distill_stages(student, teacher, data, [Stage("distill")], config)


def distill_stages(
    student: nn.Module,
    teacher: nn.Module,
    data: PackedDataset | torch.Tensor,
    stages: Sequence[Stage],
    config: DistillConfig,
) -> DistillResult:
    """Run a multi-step distillation schedule: for each stage, compress, then distil.

    Every stage optionally compresses the student in place (:attr:`Stage.compress`), then
    trains all parameters that require gradients with a fresh AdamW (decay on matrices only)
    and a fresh schedule: linear warm-up over ``warmup_steps``, then cosine decay
    towards ``min_lr_ratio * lr``, reached at the end of the stage. Each optimizer step accumulates
    ``grad_accum`` micro-batches of ``batch_size`` blocks, clips the gradient norm to
    ``max_grad_norm`` and minimises :func:`distillation_loss` (plus ``hidden_mse`` times
    :func:`hidden_state_mse` over the block outputs). The teacher is frozen for the run: eval
    mode, parameters not requiring gradients, forward under :func:`torch.no_grad`; its mode and
    ``requires_grad`` flags are restored when the run ends, so ``copy.deepcopy(teacher)``
    afterwards still gives a trainable student.

    **Seeds.** At the start, Python's, NumPy's and torch's global RNGs are seeded with
    ``config.seed + rank``; the data order (:class:`~tqla_torch.training.data.BlockOrder`) depends on
    ``config.seed`` only and continues across stages.

    **Checkpoints.** With ``checkpoint_dir`` set, a checkpoint is written atomically every
    ``checkpoint_every`` optimizer steps and at the end of each stage, holding the student's
    state dict, optimizer, scheduler, every rank's RNG states, the data position, the stage index
    and step and the history; the newest ``keep_checkpoints`` are kept. If the directory
    already holds a checkpoint, the run resumes from it: the compression of every stage up to
    and including the checkpoint's stage is re-applied (so the module structure matches), then
    all states are loaded. A run killed at any moment and restarted with the same arguments ends
    with bit-identical weights on CPU (given the same number of threads).

    **Data parallelism.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is
    initialised (NCCL on CUDA, Gloo on CPU) unless it already is, the student is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel` for every stage and each rank takes its
    slice of every global micro-batch, so the global batch is
    ``world_size * batch_size * grad_accum`` blocks. Only rank 0 logs, shows progress and writes
    checkpoints. A process group created here is destroyed at the end.

    Parameters
    ----------
    student : torch.nn.Module
        Model being compressed and trained, in place (moved to the device). Its training/eval
        mode is restored at the end.
    teacher : torch.nn.Module
        Frozen reference (moved to the device; in eval mode and ``requires_grad_(False)``
        during the run, both restored afterwards).
    data : PackedDataset or torch.Tensor
        Token blocks ``[n_blocks, block_size]``, kept on the CPU and moved per micro-batch.
    stages : sequence of Stage
        The schedule; names must be unique.
    config : DistillConfig
        Hyper-parameters and run settings.

    Returns
    -------
    DistillResult

    Raises
    ------
    ValueError
        On an empty or inconsistent schedule, a student sharing parameters with the teacher,
        blocks longer than the model's positions or token ids outside its vocabulary, a
        checkpoint written by a different schedule or world size, or bf16 without CUDA.
    """
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
    stages = list(stages)
    if not stages:
        raise ValueError("stages must not be empty")
    for i, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise TypeError(f"stages[{i}] must be a Stage, got {type(stage).__name__}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    if student is teacher:
        raise ValueError("student and teacher must be different modules (deep-copy the teacher)")
    teacher_ids = {id(p) for p in teacher.parameters()}
    if any(id(p) in teacher_ids for p in student.parameters()):
        raise ValueError("student shares parameters with teacher; pass a deep copy as student")

    blocks = _as_blocks(data)
    block_size = blocks.shape[1]
    for role, model in (("student", student), ("teacher", teacher)):
        n_positions, vocab = max_positions(model), vocab_size(model)
        if n_positions is not None and block_size > n_positions:
            raise ValueError(
                f"data block_size {block_size} exceeds the {role}'s n_positions {n_positions}"
            )
        if vocab is not None and blocks.numel() and int(blocks.max()) >= vocab:
            raise ValueError(
                f"data holds token id {int(blocks.max())}, outside the {role}'s vocab_size {vocab}"
            )

    ctx, device = _setup(config)
    student_training, teacher_training = student.training, teacher.training
    teacher_flags = [(p, p.requires_grad) for p in teacher.parameters()]
    try:
        return _run(student, teacher, blocks, stages, config, ctx, device)
    finally:
        student.train(student_training)
        teacher.train(teacher_training)
        for p, flag in teacher_flags:
            p.requires_grad_(flag)
        if ctx.created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(
    student: nn.Module,
    teacher: nn.Module,
    blocks: torch.Tensor,
    stages: list[Stage],
    config: DistillConfig,
    ctx: _DistContext,
    device: torch.device,
) -> DistillResult:
    import torch.distributed as dist
    from tqdm.auto import tqdm

    block_size = int(blocks.shape[1])
    tokens_per_step = ctx.world_size * config.batch_size * config.grad_accum * block_size
    budgets = [_stage_steps(stage, config, tokens_per_step) for stage in stages]
    fingerprint = [
        {"name": s.name, "steps": n, "compress": s._descriptor()} for s, n in zip(stages, budgets)
    ]
    want_hidden = config.hidden_mse > 0
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.mixed_precision == "bf16"
        else contextlib.nullcontext()
    )

    teacher.eval()
    teacher.requires_grad_(False)
    teacher.to(device)
    student.to(device)
    _seed_all(config.seed + ctx.rank)
    order = BlockOrder(
        n_blocks=int(blocks.shape[0]),
        batch_size=config.batch_size,
        seed=config.seed,
        world_size=ctx.world_size,
        rank=ctx.rank,
    )

    # ---- resume ---------------------------------------------------------------------------
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    resume_path: Path | None = None
    if ckpt_dir is not None and ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(ckpt_dir)
        resume_path = latest_checkpoint(ckpt_dir)
    if ctx.enabled:
        shared = [None if resume_path is None else os.fspath(resume_path)]
        dist.broadcast_object_list(shared, src=0)
        resume_path = None if shared[0] is None else Path(shared[0])

    history: list[dict[str, Any]] = []
    global_step = 0
    tokens_seen = 0
    start_stage, start_step = 0, 0
    resume_state: dict[str, Any] | None = None
    if resume_path is not None:
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("format") != _CHECKPOINT_FORMAT or state.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"{resume_path} is not a tqla distillation checkpoint (version 1)")
        if state["stages"] != fingerprint:
            raise ValueError(
                f"checkpoint {resume_path} was written for the schedule {state['stages']}, this "
                f"run has {fingerprint}; use the same stages and budgets or a new checkpoint_dir"
            )
        if state["world_size"] != ctx.world_size:
            raise ValueError(
                f"checkpoint {resume_path} was written by {state['world_size']} processes, this "
                f"run has {ctx.world_size}"
            )
        for i in range(state["stage"] + 1):
            _apply_compression(stages[i], student)
        student.to(device)
        student.load_state_dict(state["model"])
        order.load_state_dict(state["data"])
        history = list(state["history"])
        global_step, tokens_seen = int(state["global_step"]), int(state["tokens_seen"])
        if state["stage_done"]:
            start_stage, start_step = state["stage"] + 1, 0
            _set_rng_state(state["rng"][ctx.rank], device)
        else:
            start_stage, start_step = state["stage"], int(state["stage_step"])
            resume_state = state
        if ctx.is_main:
            logger.info(
                "resuming from %s (stage %r, step %d)",
                resume_path,
                stages[state["stage"]].name,
                state["stage_step"],
            )

    def save_checkpoint(
        stage_index: int, stage_step: int, done: bool, optimizer: Any, scheduler: Any
    ) -> None:
        rng = _rng_state(device)
        if ctx.enabled:
            gathered: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        if not ctx.is_main:
            return
        assert ckpt_dir is not None
        state = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "stages": fingerprint,
            "world_size": ctx.world_size,
            "stage": stage_index,
            "stage_step": stage_step,
            "stage_done": done,
            "global_step": global_step,
            "tokens_seen": tokens_seen,
            "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_all,
            "data": order.state_dict(),
            "history": history,
            "config": config.to_dict(),
        }
        path = _checkpoint_path(ckpt_dir, global_step)
        atomic_torch_save(state, path)
        for old in _list_checkpoints(ckpt_dir)[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        logger.debug("wrote checkpoint %s", path)

    # ---- stages ---------------------------------------------------------------------------
    for stage_index in range(start_stage, len(stages)):
        stage = stages[stage_index]
        total = budgets[stage_index]
        resuming_here = resume_state is not None and stage_index == start_stage
        if not resuming_here:
            _apply_compression(stage, student)
            student.to(device)
        named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"stage {stage.name!r}: the student has no trainable parameters")
        params = [p for _, p in named]
        model: nn.Module = student
        if ctx.enabled:
            model = nn.parallel.DistributedDataParallel(
                student, device_ids=[device.index] if device.type == "cuda" else None
            )
        optimizer = torch.optim.AdamW(
            _param_groups(named, config.weight_decay), lr=config.lr, betas=(0.9, 0.999)
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _WarmupCosine(config.warmup_steps, total, config.min_lr_ratio)
        )
        step = 0
        if resuming_here:
            assert resume_state is not None
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            _set_rng_state(resume_state["rng"][ctx.rank], device)
            step = start_step
            resume_state = None

        student.train()
        metrics = torch.zeros(4, dtype=torch.float64, device=device)
        micro_since_log = 0
        t_log = time.perf_counter()
        tokens_at_log = tokens_seen
        bar = tqdm(
            total=total,
            initial=step,
            desc=stage.name,
            disable=not (config.progress and ctx.is_main),
            dynamic_ncols=True,
        )
        try:
            while step < total:
                for micro in range(config.grad_accum):
                    idx = order.next_indices()
                    batch = blocks[idx].to(device, non_blocking=True)
                    # next-token labels; the last position has none (full logits avoid a copy)
                    labels = torch.full_like(batch, -100)
                    labels[:, :-1] = batch[:, 1:]
                    sync = (
                        model.no_sync()
                        if ctx.enabled and micro < config.grad_accum - 1
                        else contextlib.nullcontext()
                    )
                    with sync:
                        with amp:
                            s_logits, s_hidden = lm_forward(
                                model, batch, output_hidden_states=want_hidden
                            )
                            with torch.no_grad():
                                t_logits, t_hidden = lm_forward(
                                    teacher, batch, output_hidden_states=want_hidden
                                )
                        terms = distillation_loss(
                            s_logits, t_logits, labels, config.alpha, config.temperature
                        )
                        loss = terms.loss
                        if want_hidden:
                            assert s_hidden is not None and t_hidden is not None
                            h_mse = hidden_state_mse(s_hidden[1:], t_hidden[1:])
                            loss = loss + config.hidden_mse * h_mse
                        else:
                            h_mse = torch.zeros((), device=device)
                        (loss / config.grad_accum).backward()
                    metrics += torch.stack(
                        [loss.detach(), terms.ce.detach(), terms.kl.detach(), h_mse.detach()]
                    ).double()
                    micro_since_log += 1
                grad_norm = None
                if config.max_grad_norm is not None:
                    grad_norm = float(nn.utils.clip_grad_norm_(params, config.max_grad_norm))
                    if not math.isfinite(grad_norm):
                        raise FloatingPointError(
                            f"stage {stage.name!r} step {step + 1}: the gradient norm is "
                            f"{grad_norm}; the weights were not updated (lower lr, check the "
                            "data and models for NaN/inf)"
                        )
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                global_step += 1
                tokens_seen += tokens_per_step
                bar.update(1)

                if step % config.log_every == 0 or step == total:
                    if ctx.enabled:
                        dist.all_reduce(metrics)
                    avg = (metrics / (micro_since_log * ctx.world_size)).tolist()
                    elapsed = time.perf_counter() - t_log
                    record = {
                        "stage": stage.name,
                        "stage_index": stage_index,
                        "step": global_step,
                        "stage_step": step,
                        "loss": avg[0],
                        "ce": avg[1],
                        "kl": avg[2],
                        "hidden_mse": avg[3],
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens": tokens_seen,
                        "tokens_per_s": (tokens_seen - tokens_at_log) / max(elapsed, 1e-9),
                    }
                    history.append(record)
                    if ctx.is_main:
                        logger.info(
                            "stage %s step %d/%d loss %.4f ce %.4f kl %.4f lr %.3g tokens/s %.0f",
                            stage.name,
                            step,
                            total,
                            record["loss"],
                            record["ce"],
                            record["kl"],
                            lr,
                            record["tokens_per_s"],
                        )
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                    metrics.zero_()
                    micro_since_log = 0
                    t_log, tokens_at_log = time.perf_counter(), tokens_seen

                if ckpt_dir is not None and (
                    step == total
                    or (config.checkpoint_every and step % config.checkpoint_every == 0)
                ):
                    save_checkpoint(stage_index, step, step == total, optimizer, scheduler)
        finally:
            bar.close()
        del model, optimizer, scheduler
        if ctx.enabled:
            gc.collect()  # release this stage's DDP wrapper (and its hooks) before the next one

    return DistillResult(
        history=history,
        step=global_step,
        tokens_seen=tokens_seen,
        resumed_from=None if resume_path is None else os.fspath(resume_path),
    )
