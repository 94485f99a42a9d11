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
  tqla compress ./gpt2 --preset auto_tt --budget 0.5 --output ./gpt2-tt
--budget alone builds the automatic per-layer plan (method, shape and rank per module, fitted to
the inputs seen on --data); with a budget preset (auto_tt, auto_svd) it sets one rank per module
with LWIQ instead. A budget is an int (parameters after compression) or a fraction of today's
count; the calibration text is --data (default: the built-in corpus), tokenized with the
model's tokenizer.
The output folder is loadable with tqla_torch.from_pretrained(dir) and by every tqla
subcommand; the tokenizer of the input model (or --tokenizer) is saved next to it.
A Hugging Face checkpoint folder (config.json + safetensors, sharded or not) is compressed
module by module without loading the dense model (bounded memory), resumably: rerun the same
command after an interruption and it continues (--in-memory loads the whole model instead;
budget plans fitted to --data always do). Under torchrun the modules are spread over the
processes:
  torchrun --nproc-per-node 2 -m tqla_torch compress ./gpt2-medium --preset tq_gpt2 -o ./out
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
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder, replacing only the files tqla writes",
    )
    p.add_argument(
        "--calibration-blocks",
        type=int,
        default=64,
        metavar="N",
        help="budget presets: token blocks of calibration text LWIQ reads",
    )
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="load the whole dense model first even when MODEL is a checkpoint folder "
        "(default there: module by module, bounded memory, resumable)",
    )
    add_common(p, config_help=None)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tqla_torch._atomic import atomic_write_json
    from tqla_torch._models import save_tokenizer
    from tqla_torch.compression.apply import compress
    from tqla_torch.io import prepare_output_folder

    _init_distributed()
    output = Path(args.output)
    if _streams(args):
        return _run_streaming(args, output)
    prepare_output_folder(output, inputs=[args.model, args.base_model], overwrite=args.overwrite)
    if args.config is not None and not Path(args.config).is_file():
        raise CLIError(f"--config: no such file: {args.config!r}")
    device = device_of(args)
    loaded = load(args, args.model, device, args.base_model)
    tokenizer = try_tokenizer(args.tokenizer, args.model)
    config = _budget_config(args, loaded.model, tokenizer) or plan_config(args, loaded.model)
    start = time.perf_counter()
    report = compress(loaded.model, config)
    seconds = time.perf_counter() - start
    if _rank() != 0:  # torchrun: every rank has the whole model; rank 0 saves it
        return EXIT_OK
    loaded.model.to("cpu")
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


def _rank() -> int:
    from tqla_torch.compression.distributed import world

    return world()[0]


def _init_distributed() -> None:
    """Join the process group ``torchrun`` describes (gloo on CPU, NCCL with CUDA)."""
    import os

    import torch

    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _streams(args: argparse.Namespace) -> bool:
    """Compress module by module from the folder (no dense model in memory)?"""
    from tqla_torch._hf_folder import is_hf_compressed_folder
    from tqla_torch.compression.presets import presets
    from tqla_torch.io import is_compressed_folder

    folder = Path(args.model)
    return (
        not args.in_memory
        and folder.is_dir()
        and (folder / "config.json").is_file()
        and not is_compressed_folder(folder)
        and not is_hf_compressed_folder(folder)
        and args.base_model is None
        and args.budget is None
        and args.preset not in presets.auto
        and device_of(args) == "cpu"
    )


def _run_streaming(args: argparse.Namespace, output: Path) -> int:
    from tqla_torch._atomic import atomic_write_json
    from tqla_torch._models import save_tokenizer
    from tqla_torch.compression.streaming import compress_folder, meta_model

    if args.config is not None and not Path(args.config).is_file():
        raise CLIError(f"--config: no such file: {args.config!r}")
    config = plan_config(args, meta_model(args.model))
    tokenizer = try_tokenizer(args.tokenizer, args.model)
    start = time.perf_counter()
    report = compress_folder(args.model, output, config, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    if _rank() != 0:
        return EXIT_OK
    if tokenizer is not None:
        save_tokenizer(tokenizer, output)
    atomic_write_json(
        output / "tqla_compress_report.json",
        {"source": args.model, "seconds": seconds, "streamed": True, **report.to_dict()},
    )
    print(report)
    print(f"compressed in {seconds:.1f} s (module by module); saved to {output}")
    return EXIT_OK


def _calibration(args: argparse.Namespace, model: Any, tokenizer: Any) -> list[Any]:
    """Batches of token blocks of the calibration text, for LWIQ."""
    from tqla_torch._lm import max_positions
    from tqla_torch.training.data import PackedDataset

    if tokenizer is None:
        raise CLIError(
            f"--preset {args.preset}: calibration text needs a tokenizer (the model folder has "
            "none: give --tokenizer)"
        )
    if args.calibration_blocks < 1:
        raise CLIError(f"--calibration-blocks must be >= 1, got {args.calibration_blocks}")
    block = min(128, max_positions(model) or 128)
    blocks = PackedDataset.from_source(args.data, tokenizer, block_size=block).blocks
    blocks = blocks[: args.calibration_blocks]
    return [blocks[i : i + 8] for i in range(0, len(blocks), 8)]


def _budget_config(args: argparse.Namespace, model: Any, tokenizer: Any) -> Any:
    """The config of a budget preset (None for the other presets and config files)."""
    from tqla_torch.compression.presets import presets

    if args.preset not in presets.auto:
        return None  # --budget alone is the automatic plan (plan_config)
    if args.budget is None:
        raise CLIError(f"--preset {args.preset} needs --budget (a count or a fraction)")
    data = _calibration(args, model, tokenizer)
    try:
        return presets.get(args.preset)(model, budget=args.budget, data=data)
    except ValueError as err:
        raise CLIError(f"--preset {args.preset}: {err}") from None
