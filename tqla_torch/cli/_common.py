"""Helpers shared by the subcommands: errors, formatting, common flags, loading, plans."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("tqla_torch.cli")

EXIT_OK = 0
EXIT_USAGE = 2

PROG = "tqla"


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def wrap(text: str) -> str:
    """Fill a description to the help width (the formatter keeps descriptions as given)."""
    import textwrap

    return textwrap.fill(text, width=96)


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def add_common(
    parser: argparse.ArgumentParser,
    *,
    config_help: str | None,
    device: bool = True,
    seed: bool = False,
) -> None:
    """The options shared by subcommands; each lists only those it reads."""
    group = parser.add_argument_group("common options")
    if device:
        group.add_argument(
            "--device", help="'auto' (CUDA if available; the default), 'cpu', 'cuda', 'cuda:1'"
        )
    if seed:
        group.add_argument("--seed", type=int, help="random seed (default: 0)")
    if config_help is not None:
        group.add_argument("--config", metavar="FILE.json", help=config_help)
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: info, -vv: debug); errors show tracebacks",
    )


def add_model_args(parser: argparse.ArgumentParser, *, tokenizer: bool = True) -> None:
    parser.add_argument("model", metavar="MODEL", help="local folder or hub id")
    if tokenizer:
        parser.add_argument(
            "--tokenizer",
            help="tokenizer folder, hub id or 'builtin[:VOCAB]' (default: the model's)",
        )
    parser.add_argument(
        "--base-model",
        help="uncompressed model a tqla folder was made from, if it does not store it",
    )


def add_plan_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    # One of --preset / --config / --budget is required where ``required``; --budget may also
    # accompany a budget preset (auto_tt, auto_svd), so plan_config checks the combinations.
    group = parser.add_mutually_exclusive_group(required=False)
    group.add_argument(
        "--preset", help="named compression plan (tq_gpt2, kron_gpt2, svd_gpt2, ...)"
    )
    group.add_argument(
        "--config",
        metavar="FILE.json",
        help="compression config as JSON (CompressionConfig.to_dict() format)",
    )
    parser.add_argument(
        "--budget",
        type=parse_budget,
        metavar="N|FRACTION",
        help="automatic per-layer plan fitted to --data: parameters of the whole model "
        "after compression (an int) or a fraction of today's (a float in (0, 1])",
    )
    parser.add_argument(
        "--data",
        default="builtin",
        metavar="SOURCE",
        help="--budget: calibration texts ('builtin', a .txt/.jsonl/.parquet file or a "
        "datasets folder)",
    )
    parser.add_argument(
        "--calib-batches", type=int, default=16, metavar="N", help="--budget: calibration batches"
    )
    parser.add_argument(
        "--calib-block-size",
        type=int,
        default=None,
        metavar="T",
        help="--budget: tokens per row (default: 128, or the model's context length if shorter)",
    )
    parser.add_argument(
        "--methods",
        default="svd,kron",
        help="--budget: methods to choose from (svd,kron,permuted_kron; default svd,kron)",
    )
    parser.add_argument(
        "--sensitivity",
        default="fisher",
        choices=("fisher", "lwiq", "uniform"),
        help="--budget: per-module weight of the error (fisher)",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="--budget: also size the token embeddings (low rank, fitted to token frequencies)",
    )


def parse_budget(text: str) -> int | float:
    """``--budget``: an int parameter count or a float fraction in (0, 1]."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an int (parameters) or a fraction in (0, 1], got {text!r}"
        ) from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction must be in (0, 1], got {text!r}")
    return value


@contextlib.contextmanager
def logging_setup(verbosity: int, command: str) -> Iterator[None]:
    """Log tqla_torch to stderr at the requested level for the duration of one command.

    The ``tqla_torch`` logger's handlers, level and propagation, and transformers' verbosity
    and progress bars, are restored afterwards, so in-process callers (tests, notebooks) keep
    their own logging configuration.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    package = logging.getLogger("tqla_torch")
    demo = logging.getLogger("tqla_torch.training.demo")
    saved = (package.level, package.propagate, demo.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    if command == "demo" and verbosity <= 1:
        demo.setLevel(logging.INFO)  # the demo narrates its steps by default
    hf_logging: Any = None
    try:
        from transformers.utils import logging as hf_logging

        hf_saved = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
        hf_logging.set_verbosity(logging.INFO if verbosity >= 2 else logging.ERROR)
        if verbosity >= 2:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency of tqla_torch
        hf_logging = None
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect: Any = logging_redirect_tqdm(loggers=[package])
    except ImportError:  # pragma: no cover - tqdm is a dependency of tqla_torch
        redirect = contextlib.nullcontext()
    try:
        with redirect:  # log lines print above progress bars instead of through them
            yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        demo.setLevel(saved[2])
        if hf_logging is not None:
            hf_logging.set_verbosity(hf_saved[0])
            if hf_saved[1]:
                hf_logging.enable_progress_bar()
            else:
                hf_logging.disable_progress_bar()


def device_of(args: argparse.Namespace) -> str:
    from tqla_torch._models import resolve_device

    return str(resolve_device(args.device or "auto"))


def read_json(path: str, what: str) -> Any:
    from tqla_torch._models import read_json_file

    return read_json_file(path, what)


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Print a Markdown table to stdout."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def load(args: argparse.Namespace, name: str, device: str, base_model: str | None = None):
    from tqla_torch._models import load_model

    return load_model(name, device=device, base_model=base_model)


def try_tokenizer(spec: str | None, model_source: str) -> Any:
    """The tokenizer, or None (with a warning) when the model folder has none and none is given."""
    from tqla_torch._models import ModelLoadError, load_tokenizer

    if spec is not None:
        return load_tokenizer(spec)
    try:
        return load_tokenizer(None, model_source)
    except ModelLoadError as err:
        logger.warning("%s", err)
        return None


def fmt_int(n: int) -> str:
    return f"{n:,}"


def compression_config_from_file(path: str) -> Any:
    from tqla_torch.compression.config import CompressionConfig

    values = read_json(path, "compression config")
    return CompressionConfig.from_dict(values)


def call_preset(fn: Any, model: Any) -> Any:
    """Call a preset function, passing the model to those that size themselves from it."""
    import inspect

    if "model_or_config" in inspect.signature(fn).parameters:
        return fn(model)
    return fn()


def preset_config(name: str, model: Any) -> Any:
    """The single config of preset ``name`` (all steps of the recipe at once)."""
    from tqla_torch.compression.presets import presets

    if name.endswith("_steps"):
        raise CLIError(
            f"--preset {name!r}: name the preset without '_steps' ({name.removesuffix('_steps')})"
        )
    return call_preset(presets.get(name), model)


def preset_steps(name: str, model: Any) -> list[tuple[str, Any]]:
    """The stages of preset ``name`` as ``(stage name, CompressionConfig)`` pairs."""
    from tqla_torch.compression.presets import presets

    base = name.removesuffix("_steps")
    configs = call_preset(presets.get(base + "_steps"), model)
    names = ["embedding", "mlp", "embedding-2"] if len(configs) == 3 else []
    if not names:
        names = [f"step-{i + 1}" for i in range(len(configs))]
    return list(zip(names, configs))


def plan_config(args: argparse.Namespace, model: Any) -> Any:
    budget = getattr(args, "budget", None)
    if budget is not None:
        if args.preset is not None or args.config is not None:
            from tqla_torch.compression.presets import presets

            given = f"--preset {args.preset}" if args.preset is not None else "--config"
            raise CLIError(
                f"--budget goes alone (the automatic plan) or with one of the budget presets "
                f"{list(presets.auto)}, not with {given}"
            )
        return budget_config(args, model)
    if args.preset is None and args.config is None:
        raise CLIError("one of --preset, --config or --budget is required")
    if args.preset is not None:
        return preset_config(args.preset, model)
    return compression_config_from_file(args.config)


def budget_config(args: argparse.Namespace, model: Any) -> Any:
    """``--budget``: :func:`tqla_torch.plan_for_budget` on ``--data`` tokenised by the
    model's tokenizer (``--tokenizer``)."""
    from tqla_torch.compression.budget_plan import plan_for_budget
    from tqla_torch.training.data import load_texts, pack_tokens, tokenize_texts

    tokenizer = try_tokenizer(getattr(args, "tokenizer", None), args.model)
    if tokenizer is None:
        raise CLIError(
            "--budget needs a tokenizer for --data: the model folder has none; pass --tokenizer"
        )
    from tqla_torch._lm import max_positions

    limit = max_positions(model)
    if args.calib_block_size is None:
        args.calib_block_size = min(128, limit or 128)
    for name in ("calib_batches", "calib_block_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
    if limit is not None and args.calib_block_size > limit:
        raise CLIError(
            f"--calib-block-size {args.calib_block_size} is longer than the model's context "
            f"({limit} positions); give at most {limit}"
        )
    texts = load_texts(args.data)
    ids = pack_tokens(tokenize_texts(texts, tokenizer), args.calib_block_size)
    if len(ids) == 0:
        raise CLIError(f"--data {args.data!r}: fewer than {args.calib_block_size} tokens")
    ids = ids[: 4 * args.calib_batches]
    batches = [ids[i : i + 4] for i in range(0, len(ids), 4)]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    config = plan_for_budget(
        model,
        args.budget,
        batches,
        methods=methods,
        sensitivity=args.sensitivity,
        embeddings=args.embeddings,
    )
    print(config.auto_plan.table())
    return config


def save_model(model: Any, folder: Path) -> None:
    from tqla_torch.io import save_pretrained

    save_pretrained(model, folder)


def prepare_file(path: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def user_errors() -> tuple[type[BaseException], ...]:
    from tqla_torch._models import ModelLoadError

    return (
        CLIError,
        ModelLoadError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        ValueError,
    )
