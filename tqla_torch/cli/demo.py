"""``tqla demo``: the built-in end-to-end demo (no downloads)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from tqla_torch.cli._common import EXIT_OK, CLIError, Formatter, add_common, read_json, wrap

EPILOG = """\
examples:
  tqla demo                                   # full demo into ./tqla-demo (~7 min, 2 idle cores)
  tqla demo --quick --output /tmp/demo        # tiny, for a smoke test
  tqla demo --model ./my-gpt2 --tokenizer ./my-gpt2   # use a local GPT-2 as the teacher
  tqla demo --methods permuted_kron,svd --distill-tokens 100000
Writes results.json (everything), results.md (the table), results.png (plot), the teacher
and the distilled students (teacher/, models/METHOD/) and resumable checkpoints.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subparser to ``sub``."""
    p = sub.add_parser(
        "demo",
        help="the built-in demo: train, compress four ways, distil, evaluate (no downloads)",
        description=wrap(
            "Train a small GPT-2 on the built-in corpus (or take --model), compress it "
            "with permuted Kronecker, plain Kronecker, low-rank SVD and tensor-train MLPs (LWIQ "
            "ranks) at equal parameter count, "
            "distil each with the same token budget, evaluate, and write a table, a plot and a "
            "JSON report."
        ),
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument(
        "--output", "-o", default="tqla-demo", metavar="DIR", help="output folder (tqla-demo)"
    )
    p.add_argument("--quick", action="store_true", help="tiny version for smoke tests")
    p.add_argument("--model", metavar="DIR", help="local GPT-2 folder to use as the teacher")
    p.add_argument("--tokenizer", help="tokenizer for --model (default: the model folder's)")
    p.add_argument(
        "--methods", help="comma-separated subset of permuted_kron,kron,svd,auto,tt (default: all)"
    )
    p.add_argument("--teacher-steps", type=int, help="teacher training steps")
    p.add_argument(
        "--steps",
        type=int,
        help="distillation steps per stage (sets distill tokens = steps*batch*block*3)",
    )
    p.add_argument("--distill-tokens", "--tokens", type=int, help="distillation tokens per method")
    p.add_argument("--no-plot", dest="plot", action="store_false", default=None, help="no PNG")
    p.add_argument(
        "--no-save-models",
        dest="save_models",
        action="store_false",
        default=None,
        help="do not save the teacher and students",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no tqdm bars"
    )
    add_common(
        p, seed=True, config_help="DemoConfig as JSON (n_embd, teacher_steps, distill_tokens, ...)"
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tqla_torch.training.demo import DemoConfig, run_demo

    values: dict[str, Any] = {}
    if args.config:
        loaded = read_json(args.config, "--config")
        if not isinstance(loaded, dict):
            raise CLIError(f"--config {args.config!r} must hold a JSON object of DemoConfig fields")
        values.update(loaded)
    if args.model is not None:
        if not Path(args.model).is_dir():
            raise CLIError(f"--model: model folder {args.model!r} does not exist")
        values["model"] = args.model
    overrides = {
        "tokenizer": args.tokenizer,
        "methods": args.methods,
        "teacher_steps": args.teacher_steps,
        "distill_tokens": args.distill_tokens,
        "plot": args.plot,
        "save_models": args.save_models,
        "progress": args.progress,
        "seed": args.seed,
        "device": args.device,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = DemoConfig.quick(**values) if args.quick else DemoConfig.from_dict(values)
    if args.steps is not None:
        if args.steps < 1:
            raise CLIError(f"--steps must be >= 1, got {args.steps}")
        config = dataclasses.replace(
            config,
            distill_tokens=args.steps * 3 * config.distill_batch_size * config.block_size,
        )
    result = run_demo(config, args.output)
    print(result.table)
    print()
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    print(f"total wall time: {result.report['wall_s']:.1f} s")
    return EXIT_OK
