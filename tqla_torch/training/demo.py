"""The built-in demo: train, compress three ways, distil, evaluate, report — no downloads.

:func:`run_demo` is what ``tqla demo`` runs:

1. trains a small GPT-2 teacher on the built-in corpus (:func:`tqla_torch.training.data.builtin_corpus`)
   with the built-in byte-level BPE tokenizer, or loads a local GPT-2 folder (``model=``);
2. compresses copies of it three ways at (near-)equal parameter count — permuted Kronecker
   (the TQCompressedGPT-2 plan adapted to the small model), plain Kronecker with the same
   shapes, and low-rank SVD with ranks matched to the same parameter count;
3. distils each with the same token budget through the three-stage recipe (embedding, MLPs,
   embedding again; :func:`tqla_torch.training.distill_stages`);
4. evaluates perplexity on the built-in validation split for the teacher and for every
   student before distillation (all stages applied at once, no training) and after;
5. writes ``results.json`` (configuration, versions, machine, date, every number and loss
   curve), ``results.md`` (the table) and ``results.png`` (the plot) into the output folder,
   atomically, plus the teacher and the distilled students as loadable model folders.

Everything is seeded; two runs with the same configuration on the same machine (and number of
threads) give the same numbers. Distillation checkpoints live under ``<output>/checkpoints``,
so an interrupted demo restarted with the same arguments resumes where it stopped.

Examples
--------
>>> cfg = DemoConfig.quick()  # the tiny version the tests run
>>> cfg.teacher_steps < DemoConfig().teacher_steps
True
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import io
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tqla_torch._atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from tqla_torch.training.optim import adamw_warmup_cosine, clip_gradients, seed_everything

__all__ = [
    "METHODS",
    "DemoConfig",
    "DemoResult",
    "environment_info",
    "format_table",
    "method_plans",
    "run_demo",
    "train_teacher",
]

logger = logging.getLogger(__name__)

METHODS = ("permuted_kron", "kron", "svd")
"""Compression methods the demo compares, in table order."""

_METHOD_LABELS = {
    "teacher": "teacher (dense)",
    "permuted_kron": "permuted Kronecker",
    "kron": "Kronecker",
    "svd": "low-rank SVD",
}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo`.

    The defaults are the full demo: about 5.5 minutes on an idle 2-core CPU, longer when other
    jobs share the cores (benchmarks/results/demo_cpu.md); :meth:`quick` is a tiny version for
    tests (seconds).

    Examples
    --------
    >>> DemoConfig(n_embd=64, n_head=2).n_embd
    64
    >>> DemoConfig(n_embd=30, n_head=4)
    Traceback (most recent call last):
    ...
    ValueError: n_embd (30) must be divisible by n_head (4)
    """

    vocab_size: int = field(
        default=4096, metadata={"help": "vocabulary of the built-in BPE tokenizer"}
    )
    n_embd: int = field(default=256, metadata={"help": "teacher hidden size"})
    n_layer: int = field(default=4, metadata={"help": "teacher blocks"})
    n_head: int = field(default=4, metadata={"help": "teacher attention heads"})
    block_size: int = field(
        default=128, metadata={"help": "tokens per training block and the teacher's n_positions"}
    )
    teacher_steps: int = field(default=300, metadata={"help": "teacher training steps"})
    teacher_batch_size: int = field(default=16, metadata={"help": "teacher blocks per step"})
    teacher_lr: float = field(default=2e-3, metadata={"help": "teacher peak learning rate"})
    distill_tokens: int = field(
        default=196_608,
        metadata={"help": "distillation tokens per method, split evenly over the stages"},
    )
    distill_batch_size: int = field(default=16, metadata={"help": "distillation blocks per step"})
    distill_lr: float = field(default=1e-3, metadata={"help": "distillation peak learning rate"})
    alpha: float = field(default=0.5, metadata={"help": "weight of the cross-entropy term"})
    temperature: float = field(default=2.0, metadata={"help": "distillation temperature"})
    methods: tuple[str, ...] = field(
        default=METHODS, metadata={"help": "compression methods, from permuted_kron, kron, svd"}
    )
    eval_batch_size: int = field(default=8, metadata={"help": "windows per evaluation pass"})
    eval_tokens: int | None = field(
        default=None,
        metadata={"help": "evaluate on the first N validation tokens only (None: all of them)"},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "local GPT-2 folder to use as the teacher instead of training one"},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "tokenizer for model= (default: the model folder's)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of everything random"})
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda' or 'auto'"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})
    plot: bool = field(default=True, metadata={"help": "write results.png"})
    save_models: bool = field(
        default=True, metadata={"help": "save the teacher and the distilled students"}
    )

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "n_embd",
            "n_layer",
            "n_head",
            "block_size",
            "teacher_steps",
            "teacher_batch_size",
            "distill_tokens",
            "distill_batch_size",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.eval_tokens is not None and (
            isinstance(self.eval_tokens, bool)
            or not isinstance(self.eval_tokens, (int, np.integer))
            or self.eval_tokens < 2
        ):
            raise ValueError(f"eval_tokens must be None or an int >= 2, got {self.eval_tokens!r}")
        if self.vocab_size < 257:
            raise ValueError(f"vocab_size must be at least 257, got {self.vocab_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_embd % 4:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by 4: the embedding is halved twice"
            )
        if self.block_size < 2:
            raise ValueError(f"block_size must be at least 2, got {self.block_size}")
        for name in ("teacher_lr", "distill_lr", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.alpha, bool) or not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if isinstance(self.methods, str):
            self.methods = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        self.methods = tuple(self.methods)
        if not self.methods:
            raise ValueError("methods must name at least one of " + ", ".join(METHODS))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat, got {list(self.methods)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A tiny demo for tests and smoke checks (seconds, not minutes).

        Parameters
        ----------
        **overrides
            Fields to change on top of the quick settings.

        Returns
        -------
        DemoConfig
        """
        values: dict[str, Any] = {
            "vocab_size": 512,
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 2,
            "block_size": 32,
            "teacher_steps": 30,
            "teacher_batch_size": 8,
            "teacher_lr": 3e-3,
            "distill_tokens": 3 * 4 * 8 * 32,
            "distill_batch_size": 8,
            "distill_lr": 2e-3,
            "eval_tokens": 2048,
            "eval_batch_size": 16,
        }
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        values = dataclasses.asdict(self)
        values["methods"] = list(self.methods)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DemoConfig:
        """Build from a JSON object; unknown keys raise :class:`ValueError`."""
        from tqla_torch._dataclasses import dataclass_from_dict

        values = dict(values) if isinstance(values, dict) else values
        if isinstance(values, dict) and isinstance(values.get("methods"), list):
            values["methods"] = tuple(values["methods"])
        return dataclass_from_dict(cls, values)


# --------------------------------------------------------------------------------------------
# Teacher
# --------------------------------------------------------------------------------------------


def train_teacher(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str | torch.device = "cpu",
    warmup_steps: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train a causal LM from scratch with AdamW and a warm-up + cosine schedule.

    A plain next-token cross-entropy loop (no teacher), deterministic for a given ``seed``:
    each epoch visits the blocks in a fresh seeded permutation.

    Parameters
    ----------
    model : torch.nn.Module
        Hugging Face causal LM, trained in place.
    blocks : torch.Tensor
        ``[n_blocks, block_size]`` token ids.
    steps : int
        Optimizer steps.
    batch_size : int
        Blocks per step.
    lr : float
        Peak learning rate.
    seed : int, default 0
        Seed of the block order.
    device : str or torch.device, default "cpu"
        Where to train.
    warmup_steps : int, optional
        Linear warm-up; default 5% of ``steps`` (at least 1).
    progress : bool, default True
        Show a tqdm bar.

    Returns
    -------
    list of dict
        ``{"step", "loss", "lr", "tokens"}`` for every step.

    Examples
    --------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8,
    ...                                vocab_size=50, bos_token_id=0, eos_token_id=0))
    >>> hist = train_teacher(m, torch.randint(0, 50, (8, 8)), steps=2, batch_size=4, lr=1e-3,
    ...                      progress=False)
    >>> len(hist)
    2
    """
    from tqdm.auto import tqdm

    if blocks.ndim != 2 or blocks.shape[0] < 1:
        raise ValueError(f"blocks must be [n_blocks >= 1, block_size], got {tuple(blocks.shape)}")
    n_blocks, block_size = int(blocks.shape[0]), int(blocks.shape[1])
    batch_size = min(batch_size, n_blocks)
    warmup = max(1, steps // 20) if warmup_steps is None else max(0, warmup_steps)
    device = torch.device(device)
    model.to(device)
    model.train()
    optimizer, scheduler = adamw_warmup_cosine(
        model.parameters(),
        lr=lr,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        warmup=warmup,
        total=steps,
        floor=0.1,
    )
    epoch, position = 0, 0
    order = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    history: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="teacher", disable=not progress, dynamic_ncols=True)
    try:
        for step in range(steps):
            if position + batch_size > n_blocks:
                epoch, position = epoch + 1, 0
                order = np.random.default_rng([seed, epoch]).permutation(n_blocks)
            idx = torch.from_numpy(order[position : position + batch_size].astype(np.int64))
            position += batch_size
            batch = blocks[idx].to(device)
            out = model(batch, labels=batch, use_cache=False)
            out.loss.backward()
            clip_gradients(list(model.parameters()), 1.0)
            current_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(out.loss.detach())
            history.append(
                {
                    "step": step + 1,
                    "loss": loss,
                    "lr": current_lr,
                    "tokens": (step + 1) * batch_size * block_size,
                }
            )
            bar.update(1)
            if (step + 1) % 10 == 0 or step + 1 == steps:
                bar.set_postfix(loss=f"{loss:.3f}")
                logger.info(
                    "teacher step %d/%d loss %.4f lr %.3g", step + 1, steps, loss, current_lr
                )
    finally:
        bar.close()
    model.eval()
    return history


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote.

    Attributes
    ----------
    rows : list of dict
        One row per model (the teacher first): ``method``, ``label``, ``params``,
        ``ppl_before``, ``ppl_after``, ``wall_s``.
    report : dict
        Everything written to ``results.json``.
    output_dir : pathlib.Path
        Where the files are.
    files : dict of str to pathlib.Path
        ``"json"``, ``"markdown"`` and (with ``plot=True``) ``"png"``.
    """

    rows: list[dict[str, Any]]
    report: dict[str, Any]
    output_dir: Path
    files: dict[str, Path]

    @property
    def table(self) -> str:
        """The results as a Markdown table."""
        return format_table(self.rows)


def _fmt_params(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _fmt_ppl(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "inf"
    return f"{value:.2f}" if value < 1e5 else f"{value:.3g}"


def _fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Format demo rows as a Markdown table.

    Parameters
    ----------
    rows : list of dict
        Rows as in :attr:`DemoResult.rows`.

    Returns
    -------
    str

    Examples
    --------
    >>> print(format_table([{"label": "teacher (dense)", "params": 1000, "ppl_before": None,
    ...                      "ppl_after": 12.5, "wall_s": 3.0}]))
    | method | parameters | ppl before distillation | ppl after distillation | wall time (s) |
    |---|---:|---:|---:|---:|
    | teacher (dense) | 1,000 | — | 12.50 | 3.0 |
    """
    header = (
        "| method | parameters | ppl before distillation | ppl after distillation | wall time (s) |"
    )
    lines = [
        header,
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {_fmt_params(row.get('params'))} | "
            f"{_fmt_ppl(row.get('ppl_before'))} | {_fmt_ppl(row.get('ppl_after'))} | "
            f"{_fmt_seconds(row.get('wall_s'))} |"
        )
    return "\n".join(lines)


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes slow the demo down), if known."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not available on Windows
        return None


def environment_info() -> dict[str, Any]:
    """Versions, machine and date, for result files.

    Returns
    -------
    dict
        ``date`` (UTC, ISO 8601), ``versions``, ``machine`` (with the load average at the
        time of the call) and ``command``.
    """
    import tqla_torch

    cpu_name = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "tqla": _package_version("tqla") or getattr(tqla_torch, "__version__", None),
            "torch": torch.__version__,
            "transformers": _package_version("transformers"),
            "tokenizers": _package_version("tokenizers"),
            "numpy": np.__version__,
            "scipy": _package_version("scipy"),
        },
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": _load_average(),
        },
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
    }


def _write_plot(path: Path, rows: list[dict[str, Any]], curves: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_bar, ax_loss = fig.subplots(1, 2, width_ratios=[1, 1.4])

    compressed = [r for r in rows if r["method"] != "teacher"]
    teacher = next((r for r in rows if r["method"] == "teacher"), None)
    x = np.arange(len(compressed))
    width = 0.38
    before = [r["ppl_before"] if r["ppl_before"] is not None else np.nan for r in compressed]
    after = [r["ppl_after"] if r["ppl_after"] is not None else np.nan for r in compressed]
    ax_bar.bar(x - width / 2, before, width, label="before distillation", color="#bbbbbb")
    ax_bar.bar(x + width / 2, after, width, label="after distillation", color="#3b6ea8")
    if teacher is not None and teacher["ppl_after"] is not None:
        ax_bar.axhline(teacher["ppl_after"], color="black", ls="--", lw=1, label="teacher")
    ax_bar.set_xticks(x, [f"{r['label']}\n{r['params']:,} params" for r in compressed], fontsize=8)
    ax_bar.set_yscale("log")
    ax_bar.set_ylabel("validation perplexity (log scale)")
    ax_bar.set_title("perplexity on the built-in validation split")
    ax_bar.legend(fontsize=8)

    boundaries: set[int] = set()
    for method, history in curves.items():
        if not history:
            continue
        tokens = [h["tokens"] for h in history]
        losses = [h["loss"] for h in history]
        ax_loss.plot(tokens, losses, label=_METHOD_LABELS.get(method, method), lw=1.2)
        for previous, record in zip(history, history[1:]):
            if record["stage_index"] != previous["stage_index"]:
                boundaries.add(previous["tokens"])
    for x_boundary in sorted(boundaries):
        ax_loss.axvline(x_boundary, color="#999999", lw=0.8, ls=":")
    ax_loss.set_xlabel("distillation tokens")
    ax_loss.set_ylabel("distillation loss")
    ax_loss.set_title("loss per stage: embedding → MLPs → embedding again")
    ax_loss.legend(fontsize=8)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# Compression plans
# --------------------------------------------------------------------------------------------

_STAGE_NAMES = ("embedding", "mlp", "embedding-2")


def method_plans(
    model: nn.Module, methods: tuple[str, ...] | list[str] = METHODS
) -> dict[str, list[tuple[str, Any]]]:
    """The three-stage compression recipe of each method, sized for ``model``.

    ``permuted_kron`` is :func:`tqla_torch.compression.presets.tq_gpt2_steps` (embedding halved twice with
    column permutations, MLPs of the odd blocks at Kronecker rank 4 with input and output
    permutations), ``kron`` the same factor shapes without permutations
    (:func:`~tqla_torch.compression.presets.kron_gpt2_steps`) and ``svd`` low-rank factors with ranks matched
    to the same parameter count (:func:`~tqla_torch.compression.presets.svd_gpt2_steps`).

    Parameters
    ----------
    model : torch.nn.Module
        A GPT-2 (``n_embd`` and the MLP width divisible by 4).
    methods : sequence of str
        Subset of :data:`METHODS`.

    Returns
    -------
    dict
        ``{method: [(stage name, CompressionConfig), ...]}`` with stages ``embedding``,
        ``mlp``, ``embedding-2``.
    """
    from tqla_torch.compression.presets import kron_gpt2_steps, svd_gpt2_steps, tq_gpt2_steps

    makers = {
        "permuted_kron": lambda: tq_gpt2_steps(),
        "kron": lambda: kron_gpt2_steps(),
        "svd": lambda: svd_gpt2_steps(model),
    }
    plans: dict[str, list[tuple[str, Any]]] = {}
    for method in methods:
        if method not in makers:
            raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
        plans[method] = list(zip(_STAGE_NAMES, makers[method]()))
    return plans


def _save_student(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    from tqla_torch.io import save_pretrained

    folder.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, folder)
    tokenizer.save_pretrained(os.fspath(folder))


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------

_FINGERPRINT_FILE = "demo_state.json"
_TEACHER_FILE = "demo_teacher.json"


def _fingerprint(config: DemoConfig) -> dict[str, Any]:
    """The settings that change the numbers (not the cosmetic ones)."""
    values = config.to_dict()
    for key in ("progress", "plot", "save_models", "methods", "eval_batch_size"):
        values.pop(key, None)
    return values


def _teacher_fingerprint(config: DemoConfig) -> dict[str, Any]:
    keys = (
        "vocab_size",
        "n_embd",
        "n_layer",
        "n_head",
        "block_size",
        "teacher_steps",
        "teacher_batch_size",
        "teacher_lr",
        "seed",
        "device",
    )
    return {k: getattr(config, k) for k in keys}


def _evaluate(model: nn.Module, ids: torch.Tensor, window: int, config: DemoConfig, device: Any):
    from tqla_torch.evaluate import perplexity

    result = perplexity(model, ids, window=window, batch_size=config.eval_batch_size, device=device)
    model.to("cpu")
    return result


def _prepare_output(out: Path, config: DemoConfig) -> None:
    """Create ``out``; drop checkpoints left by a run with different settings."""
    import shutil

    from tqla_torch._atomic import remove_stale_temporaries

    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    state_file = out / _FINGERPRINT_FILE
    fingerprint = _fingerprint(config)
    if state_file.is_file():
        import json

        try:
            previous = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != fingerprint:
            for sub in ("checkpoints", "teacher"):
                if (out / sub).exists():
                    logger.warning(
                        "%s was written with other demo settings; removing %s", out, out / sub
                    )
                    shutil.rmtree(out / sub)
    atomic_write_json(state_file, fingerprint)


def _build_teacher(config: DemoConfig, out: Path, device: torch.device) -> dict[str, Any]:
    """Train (or reuse, or load) the teacher. Returns model, tokenizer and teacher facts."""
    import json

    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch._models import load_model, load_tokenizer
    from tqla_torch.training.data import PackedDataset, builtin_tokenizer

    if config.model is not None:
        loaded = load_model(config.model, device="cpu")
        tokenizer = load_tokenizer(config.tokenizer, config.model)
        model = loaded.model
        from tqla_torch._lm import max_positions

        block_size = min(config.block_size, max_positions(model) or config.block_size)
        return {
            "model": model,
            "tokenizer": tokenizer,
            "block_size": block_size,
            "source": config.model,
            "history": [],
            "train_s": 0.0,
            "reused": False,
        }

    tokenizer = builtin_tokenizer(vocab_size=config.vocab_size)
    block_size = config.block_size
    teacher_dir = out / "teacher"
    marker = teacher_dir / _TEACHER_FILE
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if saved.get("fingerprint") == _teacher_fingerprint(config):
            logger.info("reusing the teacher trained earlier in %s", teacher_dir)
            model = GPT2LMHeadModel.from_pretrained(os.fspath(teacher_dir), local_files_only=True)
            model.eval()
            return {
                "model": model,
                "tokenizer": tokenizer,
                "block_size": block_size,
                "source": "trained (reused from an earlier run)",
                "history": saved.get("history", []),
                "train_s": float(saved.get("train_s", 0.0)),
                "reused": True,
            }

    gpt_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(gpt_config)
    blocks = PackedDataset.from_source("builtin", tokenizer, block_size, split="train").blocks
    logger.info(
        "training the teacher: %s parameters, %d steps of %d x %d tokens",
        f"{sum(p.numel() for p in model.parameters()):,}",
        config.teacher_steps,
        config.teacher_batch_size,
        block_size,
    )
    start = time.perf_counter()
    history = train_teacher(
        model,
        blocks,
        steps=config.teacher_steps,
        batch_size=config.teacher_batch_size,
        lr=config.teacher_lr,
        seed=config.seed,
        device=device,
        progress=config.progress,
    )
    train_s = time.perf_counter() - start
    model.to("cpu")
    if config.save_models:
        teacher_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(os.fspath(teacher_dir))
        tokenizer.save_pretrained(os.fspath(teacher_dir))
        atomic_write_json(
            marker,
            {"fingerprint": _teacher_fingerprint(config), "history": history, "train_s": train_s},
        )
    return {
        "model": model,
        "tokenizer": tokenizer,
        "block_size": block_size,
        "source": "trained on the built-in corpus",
        "history": history,
        "train_s": train_s,
        "reused": False,
    }


def run_demo(
    config: DemoConfig | None = None, output_dir: str | os.PathLike[str] = "tqla-demo"
) -> DemoResult:
    """Run the built-in demo and write its report.

    Parameters
    ----------
    config : DemoConfig, optional
        Settings; default :class:`DemoConfig` (the full demo).
    output_dir : str or os.PathLike, default "tqla-demo"
        Folder for ``results.json``, ``results.md``, ``results.png``, the models and the
        checkpoints; created if needed. Rerunning into the same folder with the same settings
        reuses the teacher and resumes the distillations.

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> import tempfile
    >>> result = run_demo(DemoConfig.quick(progress=False, plot=False), tempfile.mkdtemp())
    ... # doctest: +SKIP
    >>> [row["method"] for row in result.rows]  # doctest: +SKIP
    ['teacher', 'permuted_kron', 'kron', 'svd']
    """
    from tqla_torch._models import count_parameters, resolve_device
    from tqla_torch.compression.apply import compress
    from tqla_torch.training.data import PackedDataset, builtin_documents, tokenize_texts
    from tqla_torch.training.distill import DistillConfig, Stage, distill_stages

    config = DemoConfig() if config is None else config
    if not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig, got {type(config).__name__}")
    out = Path(output_dir)
    device = resolve_device(config.device)
    started = time.perf_counter()
    env = environment_info()
    _prepare_output(out, config)
    seed_everything(config.seed)

    # 1. teacher ---------------------------------------------------------------------------
    built = _build_teacher(config, out, device)
    teacher: nn.Module = built["model"]
    tokenizer = built["tokenizer"]
    block_size = int(built["block_size"])
    train = PackedDataset.from_source("builtin", tokenizer, block_size, split="train")
    val_ids = tokenize_texts(builtin_documents("validation"), tokenizer)
    if config.eval_tokens is not None:
        val_ids = val_ids[: config.eval_tokens]
    start = time.perf_counter()
    teacher_ppl = _evaluate(teacher, val_ids, block_size, config, device)
    teacher_eval_s = time.perf_counter() - start
    teacher_params = count_parameters(teacher)
    logger.info(
        "teacher: %s parameters, validation ppl %.2f", f"{teacher_params:,}", teacher_ppl.ppl
    )
    rows: list[dict[str, Any]] = [
        {
            "method": "teacher",
            "label": _METHOD_LABELS["teacher"],
            "params": teacher_params,
            "ppl_before": None,
            "ppl_after": teacher_ppl.ppl,
            "wall_s": built["train_s"] + teacher_eval_s,
        }
    ]

    # 2-4. compress, distil, evaluate -------------------------------------------------------
    plans = method_plans(teacher, config.methods)
    n_stages = max(len(stages) for stages in plans.values())
    tokens_per_step = config.distill_batch_size * block_size
    stage_tokens = max(tokens_per_step, config.distill_tokens // n_stages)
    methods_report: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    for method in config.methods:
        stage_configs = plans[method]
        logger.info("%s: compressing (%d stages) and distilling", method, len(stage_configs))
        t_method = time.perf_counter()

        one_shot = copy.deepcopy(teacher)
        t_compress = time.perf_counter()
        for _, stage_config in stage_configs:
            compress(one_shot, stage_config)
        compress_s = time.perf_counter() - t_compress
        params = count_parameters(one_shot)
        ppl_before = _evaluate(one_shot, val_ids, block_size, config, device)
        del one_shot
        logger.info(
            "%s: %s parameters, ppl before distillation %.2f", method, f"{params:,}", ppl_before.ppl
        )

        student = copy.deepcopy(teacher)
        stages = [Stage(name, compress=cfg, tokens=stage_tokens) for name, cfg in stage_configs]
        steps_per_stage = math.ceil(stage_tokens / tokens_per_step)
        distill_config = DistillConfig(
            alpha=config.alpha,
            temperature=config.temperature,
            lr=config.distill_lr,
            warmup_steps=max(1, steps_per_stage // 10),
            min_lr_ratio=0.1,
            batch_size=config.distill_batch_size,
            seed=config.seed,
            checkpoint_dir=os.fspath(out / "checkpoints" / method),
            checkpoint_every=max(10, steps_per_stage // 2),
            log_every=max(1, steps_per_stage // 20),
            device=str(device),
            progress=config.progress,
        )
        t_distill = time.perf_counter()
        result = distill_stages(student, teacher, train, stages, distill_config)
        distill_s = time.perf_counter() - t_distill
        student.to("cpu")
        ppl_after = _evaluate(student, val_ids, block_size, config, device)
        student_params = count_parameters(student)
        if student_params != params:
            logger.warning(
                "%s: the staged student has %d parameters, the one-shot compression %d",
                method,
                student_params,
                params,
            )
        if config.save_models:
            _save_student(student, tokenizer, out / "models" / method)
        wall_s = time.perf_counter() - t_method
        logger.info("%s: ppl after distillation %.2f (%.1f s)", method, ppl_after.ppl, wall_s)
        rows.append(
            {
                "method": method,
                "label": _METHOD_LABELS[method],
                "params": student_params,
                "ppl_before": ppl_before.ppl,
                "ppl_after": ppl_after.ppl,
                "wall_s": wall_s,
            }
        )
        curves[method] = result.history
        methods_report.append(
            {
                "method": method,
                "label": _METHOD_LABELS[method],
                "params": student_params,
                "compression_ratio": teacher_params / student_params,
                "ppl_before": ppl_before.ppl,
                "ppl_after": ppl_after.ppl,
                "nll_before": ppl_before.nll,
                "nll_after": ppl_after.nll,
                "wall_s": wall_s,
                "compress_s": compress_s,
                "distill_s": distill_s,
                "distill_steps": result.step,
                "distill_tokens": result.tokens_seen,
                "resumed_from": result.resumed_from,
                "stages": [
                    {"name": name, "tokens": stage_tokens, "config": cfg.to_dict()}
                    for name, cfg in stage_configs
                ],
                "history": result.history,
            }
        )
        del student

    # 5. report -----------------------------------------------------------------------------
    wall_s = time.perf_counter() - started
    report: dict[str, Any] = {
        "title": "tqla demo: permuted Kronecker vs Kronecker vs low-rank SVD on a small GPT-2",
        **env,
        "config": config.to_dict(),
        "data": {
            "corpus": "builtin (CPython pydoc_data.topics)",
            "train_tokens": train.n_tokens,
            "validation_tokens": int(val_ids.numel()),
            "block_size": block_size,
            "tokenizer_vocab": len(tokenizer),
        },
        "evaluation": {
            "protocol": f"non-overlapping windows of {block_size} tokens, exp(mean window NLL)",
            "split": "validation",
        },
        "teacher": {
            "source": built["source"],
            "params": teacher_params,
            "ppl": teacher_ppl.ppl,
            "nll": teacher_ppl.nll,
            "train_s": built["train_s"],
            "reused": built["reused"],
            "config": teacher.config.to_dict() if hasattr(teacher, "config") else None,
            "history": built["history"],
        },
        "methods": methods_report,
        "rows": rows,
        "wall_s": wall_s,
        "load_average_end": _load_average(),
    }
    files: dict[str, Path] = {}
    table = format_table(rows)
    markdown = (
        f"# tqla demo results\n\n{table}\n\n"
        f"Total wall time: {wall_s:.1f} s on {env['machine']['cpu']} "
        f"({env['machine']['torch_threads']} torch threads), {env['date']}.\n"
        f"torch {env['versions']['torch']}, transformers {env['versions']['transformers']}, "
        f"Python {env['versions']['python']}.\n"
    )
    files["markdown"] = out / "results.md"
    atomic_write_text(files["markdown"], markdown)
    if config.plot:
        files["png"] = out / "results.png"
        _write_plot(files["png"], rows, curves)
    files["json"] = out / "results.json"
    atomic_write_json(files["json"], report)
    logger.info("demo finished in %.1f s; results in %s", wall_s, out)
    return DemoResult(rows=rows, report=report, output_dir=out, files=files)
