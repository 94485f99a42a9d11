"""``tqla compress``: compress a model with a preset or config and save it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tqla_torch.cli._common import (
    EXIT_OK,
    CLIError,
    Formatter,
    add_common,
    add_model_args,
    add_plan_args,
    check_output_dir,
    device_of,
    load,
    plan_config,
    save_model,
    try_tokenizer,
    wrap,
)

EPILOG = """\
examples:
  tqla compress ./gpt2 --preset tq_gpt2 --output ./gpt2-tq
  tqla compress ./gpt2 --config plan.json --output ./gpt2-custom --device cuda
  tqla compress ./gpt2 --budget 0.65 --data builtin --output ./gpt2-auto
The output folder is loadable with tqla_torch.from_pretrained(dir) and by every tqla
subcommand; the tokenizer of the input model (or --tokenizer) is saved next to it.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``compress`` subparser to ``sub``."""
    p = sub.add_parser(
        "compress",
        help="compress a model with a preset or config and save it",
        description=wrap(
            "Compress a model in place with a named preset or a JSON compression "
            "config (all steps of a multi-step preset at once) and save it with "
            "tqla_torch.save_pretrained."
        ),
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_model_args(p)
    add_plan_args(p, required=True)
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing, non-empty output folder"
    )
    add_common(p, config_help=None)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tqla_torch._atomic import atomic_write_json
    from tqla_torch._models import save_tokenizer
    from tqla_torch.compression.apply import compress

    output = Path(args.output)
    check_output_dir(output, args.overwrite)
    if args.config is not None and not Path(args.config).is_file():
        raise CLIError(f"--config: no such file: {args.config!r}")
    device = device_of(args)
    loaded = load(args, args.model, device, args.base_model)
    config = plan_config(args, loaded.model)
    tokenizer = try_tokenizer(args.tokenizer, args.model)
    start = time.perf_counter()
    report = compress(loaded.model, config)
    seconds = time.perf_counter() - start
    loaded.model.to("cpu")
    if output.is_dir() and args.overwrite:
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    save_model(loaded.model, output)
    if tokenizer is not None:
        save_tokenizer(tokenizer, output)
    atomic_write_json(
        output / "tqla_compress_report.json",
        {"source": args.model, "seconds": seconds, **report.to_dict()},
    )
    print(report)
    print(f"compressed in {seconds:.1f} s; saved to {output}")
    return EXIT_OK
