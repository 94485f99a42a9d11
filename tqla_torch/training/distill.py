"""Knowledge distillation of a (compressed) student from a frozen teacher.

The loss (``docs/distillation.md``, "The loss") is

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

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tqla_torch._dataclasses import dataclass_from_dict
from tqla_torch._lm import max_positions, vocab_size
from tqla_torch.training.checkpoint import latest_checkpoint
from tqla_torch.training.data import PackedDataset
from tqla_torch.training.loop import grad_accum_for, run_stages, setup
from tqla_torch.training.losses import (
    DistillLoss,
    distillation_loss,
    hidden_state_mse,
    is_int,
    is_real,
)

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

_MIXED_PRECISION = ("no", "bf16")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


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
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "blocks per optimizer step over all ranks (None: world_size * batch_size "
            "* grad_accum); when set, grad_accum is derived for any number of processes"
        },
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
            if not is_real(value) or not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return float(value)

        def integer(name: str, minimum: int) -> int:
            value = getattr(self, name)
            if not is_int(value) or value < minimum:
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
        if self.global_batch_size is not None:
            integer("global_batch_size", 1)
            if self.grad_accum != 1:
                raise ValueError(
                    "set grad_accum or global_batch_size, not both: with global_batch_size the "
                    f"accumulation is derived (got grad_accum={self.grad_accum!r})"
                )
            if self.global_batch_size % self.batch_size:
                raise ValueError(
                    f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                    f"batch_size ({self.batch_size})"
                )
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
            usage = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError) as err:
                raise ValueError(usage) from err
            if kind not in ("cpu", "cuda"):  # 'meta' holds no data: nothing could be trained
                raise ValueError(usage)
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
        return dataclass_from_dict(cls, values)


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
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"Stage {self.name!r}: {attr} must be an int >= 1, got {value!r}")
        c = self.compress
        if c is not None and not callable(getattr(c, "to_dict", None)) and not callable(c):
            raise ValueError(
                f"Stage {self.name!r}: compress must be None, a callable f(student) or a "
                f"compression config with to_dict(), got {type(c).__name__}"
            )

    def descriptor(self) -> str | None:
        """How the stage compresses, as a string (recorded in checkpoints), or None."""
        c = self.compress
        if c is None:
            return None
        if callable(getattr(c, "to_dict", None)):
            return "config:" + json.dumps(c.to_dict(), sort_keys=True, default=str)
        return "callable:" + getattr(c, "__qualname__", type(c).__qualname__)

    def apply(self, student: nn.Module) -> None:
        """Apply :attr:`compress` to ``student`` in place (nothing when it is None)."""
        c = self.compress
        if c is None:
            return
        if callable(getattr(c, "to_dict", None)):
            from tqla_torch.compression import apply

            report = apply.compress(student, c)
            logger.info("stage %r: compressed the student: %s", self.name, report)
        else:
            c(student)
            logger.info("stage %r: applied %s to the student", self.name, self.descriptor())


def published_recipe(
    embedding: Any,
    mlp: Any,
    *,
    embedding_again: Any = None,
    steps: int | None = None,
    tokens: int | None = None,
) -> list[Stage]:
    """The TQCompressedGPT-2 schedule: compress the embedding, then the MLPs, then the embedding
    again, distilling after each step (``docs/torch.md``, "Presets").

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
        includes the records written before the interruption, and the logging window the
        interruption cut is restored from the checkpoint, so the records (but
        ``tokens_per_s``) and :attr:`final_loss` equal those of an uninterrupted run.
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
        """Mean loss of the last logging window, which always ends at the last step (None if
        nothing was logged); independent of where a resume cut the run."""
        return self.history[-1]["loss"] if self.history else None


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
    mode, parameters not requiring gradients, forward once per micro-batch under
    :func:`torch.inference_mode` (before the student's); its mode and
    ``requires_grad`` flags are restored when the run ends, so ``copy.deepcopy(teacher)``
    afterwards still gives a trainable student.

    **Seeds.** At the start, Python's, NumPy's and torch's global RNGs are seeded with
    ``config.seed + rank``; the data order (:class:`~tqla_torch.training.BlockOrder`) depends on
    ``config.seed`` only and continues across stages.

    **Checkpoints.** With ``checkpoint_dir`` set, a checkpoint is written atomically every
    ``checkpoint_every`` optimizer steps and at the end of each stage, holding the student's
    state dict, optimizer, scheduler, every rank's RNG states, the data position, the stage index
    and step and the history; the newest ``keep_checkpoints`` are kept. If the directory
    already holds a checkpoint, the run resumes from it: the compression of every stage up to
    and including the checkpoint's stage is re-applied (so the module structure matches), then
    all states are loaded. A run killed at any moment and restarted with the same arguments ends
    with bit-identical weights on CPU (given the same number of threads). A resume refuses
    settings that differ from the checkpoint's (all but ``checkpoint_dir``,
    ``checkpoint_every``, ``keep_checkpoints``, ``device``, ``progress``, and ``batch_size``,
    ``grad_accum``, ``global_batch_size`` as long as the global batch is the same), naming them; a
    newest checkpoint that cannot be read (truncated, empty) is skipped with a warning for
    the previous complete one, and with none readable the run stops with one clear error.

    **Data parallelism.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is
    initialised (NCCL on CUDA, Gloo on CPU) unless it already is, the student is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel` for every stage and each rank takes its
    slice of every global micro-batch, so the global batch is
    ``world_size * batch_size * grad_accum`` blocks, or ``global_batch_size`` when that is set
    (the accumulation is then ``global_batch_size / (world_size * batch_size)``, which must be a
    whole number). Only rank 0 logs, shows progress and writes checkpoints. A process group
    created here is destroyed at the end.

    **Elastic resume.** The data order depends on the seed and the global batch only (global
    sample index → rank shard), and the loss of a step is the mean over its global batch, so a
    checkpoint written by ``N`` processes resumes on ``M`` as long as the global batch (blocks
    per optimizer step) is the same: ``batch_size``, ``grad_accum`` and ``global_batch_size``
    may change on resume, the global batch may not (a clear error names both). When the world
    size changes, every rank's RNGs are re-seeded from ``seed``, the rank and the step (dropout
    masks then differ from an uninterrupted run; without dropout the results agree to rounding).

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
        checkpoint written by a different schedule or global batch, a ``global_batch_size`` that
        ``world_size * batch_size`` does not divide, or bf16 without CUDA.
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

    ctx, device = setup(config)
    student_training, teacher_training = student.training, teacher.training
    teacher_flags = [(p, p.requires_grad) for p in teacher.parameters()]
    try:  # from here on, a process group created by setup() is destroyed whatever happens
        accum = grad_accum_for(config, ctx.world_size)
        tokens_per_step = ctx.world_size * config.batch_size * accum * block_size
        budgets = [_stage_steps(stage, config, tokens_per_step) for stage in stages]
        run = run_stages(student, teacher, blocks, stages, budgets, config, ctx, device)
        return DistillResult(
            history=run.history,
            step=run.global_step,
            tokens_seen=run.tokens_seen,
            resumed_from=None if run.resumed_from is None else os.fspath(run.resumed_from),
        )
    finally:
        student.train(student_training)
        teacher.train(teacher_training)
        for p, flag in teacher_flags:
            p.requires_grad_(flag)
        if ctx.created_group:
            import torch.distributed as dist

            dist.destroy_process_group()
