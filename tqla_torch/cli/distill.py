"""``tqla distill``: distil a compressed student from its teacher (resumable)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from tqla_torch.cli._common import (
    EXIT_OK,
    CLIError,
    Formatter,
    add_common,
    compression_config_from_file,
    fmt_int,
    load,
    logger,
    preset_steps,
    print_table,
    read_json,
    save_model,
    wrap,
)

EPILOG = """\
examples:
  # the three-stage recipe of a preset (embedding, MLPs, embedding again), 1M tokens per stage
  tqla distill --teacher ./gpt2 --preset tq_gpt2 --data train.jsonl --output ./run \\
      --tokens-per-stage 1000000 --batch-size 8 --lr 3e-4
  # an already compressed student, one stage of 500 steps, settings from a JSON file
  tqla distill --teacher ./gpt2 --student ./gpt2-tq --data builtin --output ./run2 \\
      --config distill.json --max-steps 500
Checkpoints go to OUTPUT/checkpoints; running the same command again resumes from the
newest one (a finished run is not repeated). The distilled model is saved to OUTPUT/model
and the loss history to OUTPUT/distill.json. --config takes a JSON object of DistillConfig
fields; flags given on the command line override it.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``distill`` subparser to ``sub``."""
    p = sub.add_parser(
        "distill",
        help="distil a compressed student from its teacher (resumable)",
        description=wrap(
            "Knowledge distillation of a compressed student from a teacher. The "
            "student is a compressed folder (--student, one stage) or made from the teacher with "
            "a preset applied stage by stage (--preset: embedding, MLPs, embedding again for "
            "tq_gpt2) or with a JSON compression config (--compression-config, one stage)."
        ),
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument("--teacher", required=True, metavar="MODEL", help="teacher: folder or hub id")
    student = p.add_mutually_exclusive_group(required=True)
    student.add_argument("--student", metavar="MODEL", help="compressed (or any) student model")
    student.add_argument("--preset", help="make the student from the teacher with this preset")
    student.add_argument(
        "--compression-config", metavar="FILE.json", help="make the student with this config"
    )
    p.add_argument(
        "--data",
        required=True,
        help="'builtin', a .txt/.jsonl/.parquet file, a folder of them or a saved HF dataset",
    )
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="run folder")
    p.add_argument("--tokenizer", help="tokenizer (default: the teacher's)")
    p.add_argument("--base-model", help="base model for a tqla student folder, if needed")
    p.add_argument(
        "--text-field",
        default="text",
        help="field of JSON lines, column of Parquet files and datasets folders (default: text)",
    )
    p.add_argument("--split", default="train", help="split of builtin / dataset folders")
    p.add_argument(
        "--block-size",
        type=int,
        help="tokens per training block (default: min(1024, teacher n_positions))",
    )
    p.add_argument(
        "--steps-per-stage", type=int, help="optimizer steps of each stage (sets Stage.steps)"
    )
    p.add_argument("--tokens-per-stage", type=int, help="tokens of each stage (sets Stage.tokens)")
    add_distill_config_flags(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_common(
        p,
        seed=True,
        config_help="DistillConfig as JSON (fields: alpha, temperature, lr, max_steps, ...)",
    )
    p.set_defaults(handler=run)
    return p


def distill_fields() -> list[dataclasses.Field]:
    from tqla_torch.training.distill import DistillConfig

    skip = {"checkpoint_dir", "device", "seed", "progress"}
    return [f for f in dataclasses.fields(DistillConfig) if f.name not in skip]


def field_type(f: dataclasses.Field) -> Any:
    text = str(f.type)
    if "bool" in text:
        return "bool"
    if "int" in text and "float" not in text:
        return int
    if "float" in text:
        return float
    return str


def none_or(kind: Any) -> Any:
    """An argparse type that also accepts ``none`` (for fields whose value may be None)."""

    def convert(text: str) -> Any:
        if text.strip().lower() in {"none", "null"}:
            return None
        return kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def add_distill_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "distillation settings (DistillConfig fields; override --config)"
    )
    for f in distill_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = field_type(f)
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        dest = f"dc_{f.name}"
        if kind == "bool":
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                dest=dest,
                help=help_text,
            )
            continue
        kwargs: dict[str, Any] = {}
        if f.name == "mixed_precision":
            kwargs["choices"] = ["no", "bf16"]
        nullable = "None" in str(f.type)
        group.add_argument(
            flag,
            type=none_or(kind) if nullable else kind,
            default=argparse.SUPPRESS,
            dest=dest,
            metavar="N" if kind is int else "X" if kind is float else "STR",
            help=help_text,
            **kwargs,
        )


def distill_config(args: argparse.Namespace, output: Path) -> Any:
    from tqla_torch.training.distill import DistillConfig

    values: dict[str, Any] = {}
    if args.config:
        loaded = read_json(args.config, "--config")
        if not isinstance(loaded, dict):
            raise CLIError(
                f"--config {args.config!r} must hold a JSON object of DistillConfig fields"
            )
        values.update(loaded)
    for f in distill_fields():
        dest = f"dc_{f.name}"
        if hasattr(args, dest):  # given on the command line (the flags default to SUPPRESS)
            values[f.name] = getattr(args, dest)
    values.setdefault("checkpoint_dir", os.fspath(output / "checkpoints"))
    if args.device is not None or "device" not in values:
        values["device"] = args.device or "auto"
    if args.seed is not None:
        values["seed"] = args.seed
    if args.progress is False:
        values["progress"] = False
    return DistillConfig.from_dict(values)


def _check_distill_args(args: argparse.Namespace, output: Path) -> None:
    """Refuse bad paths and sizes before anything is loaded."""
    if output.exists() and not output.is_dir():
        raise CLIError(f"--output {str(output)!r} exists and is not a folder")
    if args.data != "builtin" and not Path(args.data).exists():
        raise CLIError(f"--data: no such file or folder: {args.data!r}")
    for name in ("steps_per_stage", "tokens_per_stage", "block_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.compression_config is not None and not Path(args.compression_config).is_file():
        raise CLIError(f"--compression-config: no such file: {args.compression_config!r}")


def _check_training_budget(args: argparse.Namespace, config: Any) -> None:
    if (
        args.steps_per_stage is None
        and args.tokens_per_stage is None
        and config.max_steps is None
        and config.max_tokens is None
    ):
        raise CLIError(
            "no training budget: pass --max-steps, --max-tokens, --steps-per-stage or "
            "--tokens-per-stage (or max_steps / max_tokens in --config)"
        )


def _models_and_stages(args: argparse.Namespace) -> tuple[Any, Any, Any, list]:
    """Teacher, student, tokenizer and the stages (name, compression config or None)."""
    import copy

    from tqla_torch._models import check_vocabulary, load_tokenizer

    teacher = load(args, args.teacher, "cpu").model
    plan_steps: list[tuple[str, Any]] | None = None
    if args.preset is not None:
        plan_steps = preset_steps(args.preset, teacher)
    elif args.compression_config is not None:
        plan_steps = [("compress", compression_config_from_file(args.compression_config))]
    tokenizer = load_tokenizer(args.tokenizer, args.teacher)
    check_vocabulary(tokenizer, teacher)
    if args.student is not None:
        student = load(args, args.student, "cpu", args.base_model).model
        check_vocabulary(tokenizer, student)
        stage_specs: list[tuple[str, Any]] = [("distill", None)]
    else:
        assert plan_steps is not None
        student = copy.deepcopy(teacher)
        stage_specs = plan_steps
    return teacher, student, tokenizer, stage_specs


def _packed_data(args: argparse.Namespace, tokenizer: Any, teacher: Any, config: Any):
    from tqla_torch._lm import max_positions
    from tqla_torch.training.data import PackedDataset

    block_size = args.block_size or min(1024, max_positions(teacher) or 1024)
    data = PackedDataset.from_source(
        args.data, tokenizer, block_size, text_field=args.text_field, split=args.split
    )
    if len(data) < config.batch_size:
        raise CLIError(
            f"--data gives {len(data)} blocks of {block_size} tokens, fewer than one batch "
            f"({config.batch_size}); use more data, a smaller --batch-size or --block-size"
        )
    return data, block_size


def run(args: argparse.Namespace) -> int:
    from tqla_torch._models import count_parameters, save_tokenizer
    from tqla_torch.training.distill import Stage, distill_stages

    output = Path(args.output)
    _check_distill_args(args, output)
    config = distill_config(args, output)
    _check_training_budget(args, config)
    teacher, student, tokenizer, stage_specs = _models_and_stages(args)
    data, block_size = _packed_data(args, tokenizer, teacher, config)
    stages = [
        Stage(name, compress=cfg, steps=args.steps_per_stage, tokens=args.tokens_per_stage)
        for name, cfg in stage_specs
    ]
    from tqla_torch.training.loop import grad_accum_for

    world = int(os.environ.get("WORLD_SIZE", "1"))
    logger.info(
        "distilling %d stage(s) %s on %d blocks of %d tokens (%d tokens per step)",
        len(stages),
        [s.name for s in stages],
        len(data),
        block_size,
        world * config.batch_size * grad_accum_for(config, world) * block_size,
    )
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = distill_stages(student, teacher, data, stages, config)
    wall = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes and reports
        return EXIT_OK
    student.to("cpu")
    model_dir = output / "model"
    save_model(student, model_dir)
    save_tokenizer(tokenizer, model_dir)
    counts = (count_parameters(teacher), count_parameters(student))
    _report(args, output, block_size, stages, config, counts, result, wall)
    print(f"saved the distilled student to {model_dir}")
    return EXIT_OK


def _report(args, output, block_size, stages, config, counts, result, wall) -> None:
    """Write distill.json atomically and print the summary table."""
    from tqla_torch._atomic import atomic_write_json

    params_teacher, params_student = counts
    summary = {
        "teacher": args.teacher,
        "student": args.student,
        "preset": args.preset,
        "compression_config": args.compression_config,
        "data": args.data,
        "block_size": block_size,
        "stages": [
            {"name": s.name, "steps": s.steps, "tokens": s.tokens, "compress": s.descriptor()}
            for s in stages
        ],
        "config": config.to_dict(),
        "params_teacher": params_teacher,
        "params_student": params_student,
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "resumed_from": result.resumed_from,
        "final_loss": result.final_loss,
        "wall_s": wall,
        "history": result.history,
    }
    atomic_write_json(output / "distill.json", summary)
    final = "—" if result.final_loss is None else f"{result.final_loss:.4f}"
    print_table(
        [
            ("teacher parameters", fmt_int(params_teacher)),
            ("student parameters", fmt_int(params_student)),
            ("stages", ", ".join(s.name for s in stages)),
            ("optimizer steps", fmt_int(result.step)),
            ("tokens", fmt_int(result.tokens_seen)),
            ("final loss", final),
            ("resumed from", result.resumed_from or "—"),
            ("wall time (s)", f"{wall:.1f}"),
        ],
        ("distillation", "value"),
    )
