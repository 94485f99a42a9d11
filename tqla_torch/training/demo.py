"""The built-in demo: train, compress five ways, distil, evaluate, report — no downloads.

:func:`run_demo` is what ``tqla demo`` runs:

1. trains a small GPT-2 teacher on the built-in corpus (:func:`tqla_torch.training.builtin_corpus`)
   with the built-in byte-level BPE tokenizer, or loads a local GPT-2 folder (``model=``);
2. compresses copies of it five ways at (near-)equal parameter count — permuted Kronecker
   (the TQCompressedGPT-2 plan adapted to the small model), plain Kronecker with the same
   shapes, low-rank SVD with ranks matched to the same parameter count, the automatic
   activation-aware plan (:func:`tqla_torch.compression.auto_gpt2_steps`: method, shape and
   rank of the tied token table and of every block layer from 8 calibration batches, at
   most the permuted plan's count), and tensor-train MLPs with LWIQ-allocated ranks at the
   low-rank plan's count;
3. distils each with the same token budget in three equal stages
   (:func:`tqla_torch.training.distill_stages`): embedding, MLPs, embedding again for the
   fixed plans; the whole automatic plan, then two stages of training only for ``auto``;
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

# Over ~600 lines: the configuration dataclass (every field documented for the CLI), the four
# methods' plans and the per-method compress/distil unit belong together; the report helpers
# already live in demo_report.py and the teacher in teacher.py.

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tqla_torch._atomic import atomic_write_json, atomic_write_text
from tqla_torch.training.demo_report import (
    METHOD_LABELS,
    DemoResult,
    environment_info,
    format_table,
    load_average,
    write_plot,
)
from tqla_torch.training.optim import seed_everything
from tqla_torch.training.teacher import build_demo_teacher, train_teacher

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

METHODS = ("permuted_kron", "kron", "svd", "auto", "tt")
"""Compression methods the demo compares, in table order (``auto``: the automatic
activation-aware plan at the permuted plan's parameter count; ``tt``: tensor-train MLPs
with LWIQ ranks)."""

AUTO_CALIB_BATCHES = 8
"""Calibration batches (of 4 training blocks) of the ``auto`` row's plan."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo`.

    The defaults are the full demo: 323 s (5.4 min) measured on an idle 2-core CPU with the first
    three methods, longer when other jobs share the cores (benchmarks/results/demo_cpu.md); the
    ``tt`` row adds an estimated 96 s there (benchmarks/results/demo_tt_row_cpu.md).  :meth:`quick`
    is a tiny version for tests (seconds).

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
        default=METHODS,
        metadata={"help": "compression methods, from permuted_kron, kron, svd, auto, tt"},
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
# Compression plans
# --------------------------------------------------------------------------------------------

_STAGE_NAMES = ("embedding", "mlp", "embedding-2")
_AUTO_STAGE_NAMES = ("plan", "train", "train-2")  # auto_gpt2_steps' "front" schedule


def method_plans(
    model: nn.Module,
    methods: tuple[str, ...] | list[str] = METHODS,
    data: Any = None,
    *,
    seed: int = 0,
) -> dict[str, list[tuple[str, Any]]]:
    """The three-stage compression recipe of each method, sized for ``model``.

    ``permuted_kron`` is :func:`tqla_torch.compression.tq_gpt2_steps` (embedding halved twice
    with column permutations, MLPs of the odd blocks at Kronecker rank 4 with row and column
    permutations), ``kron`` the same factor shapes without permutations
    (:func:`~tqla_torch.compression.kron_gpt2_steps`) and ``svd`` low-rank factors with ranks
    matched to the same parameter count (:func:`~tqla_torch.compression.svd_gpt2_steps`);
    ``auto`` lets :func:`~tqla_torch.compression.plan_for_budget` choose method, shape and
    rank of the token table (its tied LM head included in its error) and of every
    Linear/Conv1D layer of the blocks at the same parameter count, fitted activation-aware,
    all applied in the first stage; the other two stages only train
    (:func:`~tqla_torch.compression.auto_gpt2_steps`; needs ``data``), and
    ``tt`` the low-rank embedding stages with tensor-train MLPs whose ranks LWIQ allocates at
    the low-rank plan's parameter count
    (:func:`~tqla_torch.compression.tt_gpt2.tt_gpt2_steps`; needs ``data``).

    Parameters
    ----------
    model : torch.nn.Module
        A GPT-2 (``n_embd`` and the MLP width divisible by 4).
    methods : sequence of str
        Subset of :data:`METHODS`.
    data : iterable of batches, optional
        Calibration batches (token-id tensors): required by ``auto`` and ``tt`` (LWIQ).
    seed : int
        Seed of LWIQ's imprint/held-out split (``tt``).

    Returns
    -------
    dict
        ``{method: [(stage name, CompressionConfig or None), ...]}`` with stages
        ``embedding``, ``mlp``, ``embedding-2`` (``auto``: ``plan``, ``train``,
        ``train-2``; ``None`` is a stage that only trains).
    """
    from tqla_torch.compression.budget_plan import auto_gpt2_steps
    from tqla_torch.compression.presets import kron_gpt2_steps, svd_gpt2_steps, tq_gpt2_steps

    def auto() -> list[Any]:
        if data is None:
            raise ValueError("method 'auto' needs calibration data (data=)")
        return auto_gpt2_steps(model, data, seed=0)

    makers = {
        "permuted_kron": lambda: tq_gpt2_steps(),
        "kron": lambda: kron_gpt2_steps(),
        "svd": lambda: svd_gpt2_steps(model),
        "auto": auto,
        "tt": lambda: _tt_steps(model, data, seed),
    }
    plans: dict[str, list[tuple[str, Any]]] = {}
    for method in methods:
        if method not in makers:
            raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
        names = _AUTO_STAGE_NAMES if method == "auto" else _STAGE_NAMES
        plans[method] = list(zip(names, makers[method]()))
    return plans


def _tt_steps(model: nn.Module, data: Any, seed: int) -> list[Any]:
    from tqla_torch.compression.tt_gpt2 import tt_gpt2_steps

    if data is None:
        raise ValueError("method 'tt' needs data= (token-id batches for LWIQ's rank allocation)")
    return tt_gpt2_steps(model, data=data, seed=seed)


def _calibration_batches(train: Any, batch_size: int, n_batches: int = 2) -> list[torch.Tensor]:
    """The first ``n_batches`` batches of training blocks (LWIQ's calibration data)."""
    blocks = train.blocks
    n = min(len(blocks), batch_size * n_batches)
    return [blocks[i : i + batch_size] for i in range(0, n, batch_size)]


def _save_student(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    from tqla_torch.io import save_pretrained

    folder.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, folder)
    tokenizer.save_pretrained(os.fspath(folder))


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------

_FINGERPRINT_FILE = "demo_state.json"


def _fingerprint(config: DemoConfig) -> dict[str, Any]:
    """The settings that change the numbers (not the cosmetic ones)."""
    values = config.to_dict()
    for key in ("progress", "plot", "save_models", "methods", "eval_batch_size"):
        values.pop(key, None)
    return values


def _evaluate(model: nn.Module, ids: torch.Tensor, window: int, config: DemoConfig, device: Any):
    from tqla_torch.training.evaluate import perplexity

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


# Over ~80 lines: most of the body is the report dictionary literal; the work itself is done
# by train_teacher, the per-method compress/distil units and demo_report.
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
    ['teacher', 'permuted_kron', 'kron', 'svd', 'auto']
    """
    from tqla_torch._models import count_parameters, resolve_device
    from tqla_torch.training.data import PackedDataset, builtin_documents, tokenize_texts

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
    built = build_demo_teacher(config, out, device)
    teacher: nn.Module = built["model"]
    tokenizer = built["tokenizer"]
    block_size = int(built["block_size"])
    train = PackedDataset.from_source("builtin", tokenizer, block_size, split="train")
    val_ids = tokenize_texts(builtin_documents("validation"), tokenizer)
    if config.eval_tokens is not None:
        val_ids = val_ids[: config.eval_tokens]
    start = time.perf_counter()
    teacher_ppl = _evaluate(teacher, val_ids, block_size, config, device)
    teacher_params = count_parameters(teacher)
    logger.info(
        "teacher: %s parameters, validation ppl %.2f", f"{teacher_params:,}", teacher_ppl.ppl
    )
    rows: list[dict[str, Any]] = [
        _row(
            "teacher",
            teacher_params,
            None,
            teacher_ppl.ppl,
            built["train_s"] + time.perf_counter() - start,
        )
    ]

    # 2-4. compress, distil, evaluate each method -------------------------------------------
    run = _MethodRun(teacher, tokenizer, train, val_ids, block_size, config, device, out)
    calib = _calibration_batches(train, config.distill_batch_size)  # tt: LWIQ's batches
    auto_calib = _auto_calibration(train, config.seed) if "auto" in config.methods else None
    plans, plan_s = {}, {}
    for method in config.methods:  # timed one by one: the tt plan runs LWIQ on the teacher
        t_plan = time.perf_counter()
        plans[method] = method_plans(
            teacher, (method,), auto_calib if method == "auto" else calib, seed=config.seed
        )[method]
        plan_s[method] = time.perf_counter() - t_plan
    n_stages = max(len(stages) for stages in plans.values())
    stage_tokens = max(run.tokens_per_step, config.distill_tokens // n_stages)
    methods_report = []
    for method in config.methods:
        entry = run.method(method, plans[method], stage_tokens)
        entry["plan_s"] = plan_s[method]
        entry["wall_s"] += plan_s[method]
        entry["compression_ratio"] = teacher_params / entry["params"]
        methods_report.append(entry)
        rows.append(
            _row(method, entry["params"], entry["ppl_before"], entry["ppl_after"], entry["wall_s"])
        )

    # 5. report -----------------------------------------------------------------------------
    wall_s = time.perf_counter() - started
    report: dict[str, Any] = {
        "title": (
            "tqla demo: permuted Kronecker vs Kronecker vs low-rank SVD vs the automatic plan "
            "vs tensor train on a small GPT-2"
        ),
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
        "load_average_end": load_average(),
    }
    curves = {m["method"]: m["history"] for m in methods_report}
    files = _write_results(out, config, rows, report, curves, env)
    logger.info("demo finished in %.1f s; results in %s", wall_s, out)
    return DemoResult(rows=rows, report=report, output_dir=out, files=files)


def _auto_calibration(train: Any, seed: int) -> list[torch.Tensor]:
    """Training blocks for the ``auto`` row's plan: AUTO_CALIB_BATCHES batches of 4, seeded."""
    blocks = train.blocks
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(blocks), generator=g)[: 4 * AUTO_CALIB_BATCHES]
    return [blocks[idx[i : i + 4]] for i in range(0, len(idx), 4)]


def _row(
    method: str, params: int, before: float | None, after: float, wall_s: float
) -> dict[str, Any]:
    """One line of the results table (perplexities before and after distillation)."""
    return {
        "method": method,
        "label": METHOD_LABELS[method],
        "params": params,
        "ppl_before": before,
        "ppl_after": after,
        "wall_s": wall_s,
    }


def _write_results(
    out: Path,
    config: DemoConfig,
    rows: list[dict[str, Any]],
    report: dict[str, Any],
    curves: dict[str, Any],
    env: dict[str, Any],
) -> dict[str, Path]:
    """results.md, results.png (with ``config.plot``) and results.json; their paths."""
    files: dict[str, Path] = {}
    markdown = (
        f"# tqla demo results\n\n{format_table(rows)}\n\n"
        f"Total wall time: {report['wall_s']:.1f} s on {env['machine']['cpu']} "
        f"({env['machine']['torch_threads']} torch threads), {env['date']}.\n"
        f"torch {env['versions']['torch']}, transformers {env['versions']['transformers']}, "
        f"Python {env['versions']['python']}.\n"
    )
    files["markdown"] = out / "results.md"
    atomic_write_text(files["markdown"], markdown)
    if config.plot:
        files["png"] = out / "results.png"
        write_plot(files["png"], rows, curves)
    files["json"] = out / "results.json"
    atomic_write_json(files["json"], report)
    return files


@dataclass
class _MethodRun:
    """What every compression method of one demo run shares."""

    teacher: nn.Module
    tokenizer: Any
    train: Any
    val_ids: torch.Tensor
    block_size: int
    config: DemoConfig
    device: Any
    out: Path

    @property
    def tokens_per_step(self) -> int:
        return self.config.distill_batch_size * self.block_size

    def evaluate(self, model: nn.Module) -> Any:
        return _evaluate(model, self.val_ids, self.block_size, self.config, self.device)

    def method(
        self, method: str, stage_configs: list[tuple[str, Any]], stage_tokens: int
    ) -> dict[str, Any]:
        """Compress a copy of the teacher one-shot (perplexity before distillation), then
        compress and distil another copy stage by stage; the method's report entry."""
        from tqla_torch._models import count_parameters
        from tqla_torch.compression.apply import compress
        from tqla_torch.training.distill import Stage, distill_stages

        logger.info("%s: compressing (%d stages) and distilling", method, len(stage_configs))
        t_method = time.perf_counter()
        one_shot = copy.deepcopy(self.teacher)
        t_compress = time.perf_counter()
        for _, stage_config in stage_configs:
            if stage_config is not None:  # None: a stage that only trains
                compress(one_shot, stage_config)
        compress_s = time.perf_counter() - t_compress
        params = count_parameters(one_shot)
        ppl_before = self.evaluate(one_shot)
        del one_shot
        logger.info(
            "%s: %s parameters, ppl before distillation %.2f", method, f"{params:,}", ppl_before.ppl
        )
        student = copy.deepcopy(self.teacher)
        stages = [Stage(name, compress=cfg, tokens=stage_tokens) for name, cfg in stage_configs]
        t_distill = time.perf_counter()
        result = distill_stages(
            student, self.teacher, self.train, stages, self._distill_config(method, stage_tokens)
        )
        distill_s = time.perf_counter() - t_distill
        student.to("cpu")
        ppl_after = self.evaluate(student)
        student_params = count_parameters(student)
        if student_params != params:
            logger.warning(
                "%s: the staged student has %d parameters, the one-shot compression %d",
                method,
                student_params,
                params,
            )
        if self.config.save_models:
            _save_student(student, self.tokenizer, self.out / "models" / method)
        wall_s = time.perf_counter() - t_method
        logger.info("%s: ppl after distillation %.2f (%.1f s)", method, ppl_after.ppl, wall_s)
        return {
            "method": method,
            "label": METHOD_LABELS[method],
            "params": student_params,
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
                {"name": name, "tokens": stage_tokens,
                 "config": None if cfg is None else cfg.to_dict()}
                for name, cfg in stage_configs
            ],
            "history": result.history,
        }

    def _distill_config(self, method: str, stage_tokens: int) -> Any:
        from tqla_torch.training.distill import DistillConfig

        config = self.config
        steps_per_stage = math.ceil(stage_tokens / self.tokens_per_step)
        return DistillConfig(
            alpha=config.alpha,
            temperature=config.temperature,
            lr=config.distill_lr,
            warmup_steps=max(1, steps_per_stage // 10),
            min_lr_ratio=0.1,
            batch_size=config.distill_batch_size,
            seed=config.seed,
            checkpoint_dir=os.fspath(self.out / "checkpoints" / method),
            checkpoint_every=max(10, steps_per_stage // 2),
            log_every=max(1, steps_per_stage // 20),
            device=str(self.device),
            progress=config.progress,
        )
