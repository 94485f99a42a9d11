"""``tqla inspect``: dry run of a compression plan on a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqla_torch.cli._common import (
    EXIT_OK,
    CLIError,
    Formatter,
    add_common,
    add_model_args,
    add_plan_args,
    load,
    plan_config,
    prepare_file,
    wrap,
)

EPILOG = """\
examples:
  tqla inspect ./gpt2 --preset tq_gpt2
  tqla inspect ./gpt2 --config plan.json --json report.json
  tqla inspect ./gpt2 --budget 0.65 --data notes.txt   # automatic plan, fitted to the data
  tqla inspect gpt2 --preset svd_gpt2          # hub id, from the local cache
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``inspect`` subparser to ``sub``."""
    p = sub.add_parser(
        "inspect",
        help="dry run: which modules a plan compresses, parameters before/after",
        description=wrap(
            "Dry run of a compression plan on a model: the matched modules, their "
            "factor shapes and ranks, and the parameter count before and after. Nothing is "
            "computed or written (except --json)."
        ),
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_model_args(p, tokenizer=False)
    add_plan_args(p, required=True)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    add_common(p, config_help=None, device=False)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tqla_torch.compression.apply import inspect

    if args.config is not None and not Path(args.config).is_file():
        raise CLIError(f"--config: no such file: {args.config!r}")
    loaded = load(args, args.model, "cpu", args.base_model)
    config = plan_config(args, loaded.model)
    report = inspect(loaded.model, config)
    print(f"model: {args.model} ({loaded.kind})")
    print(report)
    if args.json:
        from tqla_torch._atomic import atomic_write_json

        atomic_write_json(prepare_file(args.json), report.to_dict())
    return EXIT_OK
