"""The ``tqla`` command: inspect, compress, distil and evaluate transformers; run the demo.

Run ``tqla --help`` or ``tqla SUBCOMMAND --help`` for the flags and examples; docs/cli.md has
the full reference. Every subcommand is also callable in-process::

    from tqla_torch.cli import main
    exit_code = main(["evaluate", "path/to/model", "--data", "builtin"])

Errors the user can fix (a missing model folder or data file, a malformed JSON config, an unknown
preset, an unreachable hub) print one line to stderr and exit with status 2; ``-v`` adds the
traceback. Results go to stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger("tqla_torch.cli")

EXIT_OK = 0
EXIT_USAGE = 2

_PROG = "tqla"


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_MAIN_EPILOG = """\
examples:
  tqla demo                                    # the built-in demo, no downloads (~6 min CPU)
  tqla demo --quick --output /tmp/demo         # a tiny version (seconds)
  tqla inspect ./gpt2 --preset tq_gpt2         # what the plan would compress, params before/after
  tqla compress ./gpt2 --preset tq_gpt2 --output ./gpt2-tq
  tqla distill --teacher ./gpt2 --preset tq_gpt2 --data train.txt --output ./run \\
      --tokens-per-stage 1000000
  tqla evaluate ./run/model --data wiki.test.raw --lambada lambada_test.jsonl

A MODEL is a local Hugging Face folder (config.json + weights), a tqla compressed folder
(from `tqla compress` / save_pretrained) or a hub id such as gpt2 (needs the hub or a cached
copy; HF_HUB_OFFLINE=1 never touches the network).
"""

_INSPECT_EPILOG = """\
examples:
  tqla inspect ./gpt2 --preset tq_gpt2
  tqla inspect ./gpt2 --config plan.json --json report.json
  tqla inspect gpt2 --preset svd_gpt2          # hub id, from the local cache
"""

_COMPRESS_EPILOG = """\
examples:
  tqla compress ./gpt2 --preset tq_gpt2 --output ./gpt2-tq
  tqla compress ./gpt2 --config plan.json --output ./gpt2-custom --device cuda
The output folder is loadable with tqla_torch.from_pretrained(dir) and by every tqla
subcommand; the tokenizer of the input model (or --tokenizer) is saved next to it.
"""

_DISTILL_EPILOG = """\
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

_EVALUATE_EPILOG = """\
examples:
  tqla evaluate ./run/model                              # built-in validation split
  tqla evaluate ./gpt2 --data wiki.test.raw              # published protocol: 1024-token windows
  tqla evaluate ./gpt2 --data wiki.test.raw --stride 512 # sliding windows
  tqla evaluate ./gpt2 --data none --lambada lambada_test.jsonl --json scores.json
"""

_DEMO_EPILOG = """\
examples:
  tqla demo                                   # full demo into ./tqla-demo (~6 min, 2 CPU cores)
  tqla demo --quick --output /tmp/demo        # tiny, for a smoke test
  tqla demo --model ./my-gpt2 --tokenizer ./my-gpt2   # use a local GPT-2 as the teacher
  tqla demo --methods permuted_kron,svd --distill-tokens 100000
Writes results.json (everything), results.md (the table), results.png (plot), the teacher
and the distilled students (teacher/, models/METHOD/) and resumable checkpoints.
"""


def _wrap(text: str) -> str:
    """Fill a description to the help width (the formatter keeps descriptions as given)."""
    import textwrap

    return textwrap.fill(text, width=96)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _add_common(parser: argparse.ArgumentParser, *, config_help: str | None) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--device", help="'auto' (CUDA if available; the default), 'cpu', 'cuda', 'cuda:1'"
    )
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


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="local folder or hub id")
    parser.add_argument(
        "--tokenizer",
        help="tokenizer folder, hub id or 'builtin[:VOCAB]' (default: the model's)",
    )
    parser.add_argument(
        "--base-model",
        help="uncompressed model a tqla folder was made from, if it does not store it",
    )


def _add_plan_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--preset", help="named compression plan (tq_gpt2, kron_gpt2, svd_gpt2, ...)"
    )
    group.add_argument(
        "--config",
        metavar="FILE.json",
        help="compression config as JSON (CompressionConfig.to_dict() format)",
    )


def _distill_fields() -> list[dataclasses.Field]:
    from tqla_torch.training.distill import DistillConfig

    skip = {"checkpoint_dir", "device", "seed", "progress"}
    return [f for f in dataclasses.fields(DistillConfig) if f.name not in skip]


def _field_type(f: dataclasses.Field) -> Any:
    text = str(f.type)
    if "bool" in text:
        return "bool"
    if "int" in text and "float" not in text:
        return int
    if "float" in text:
        return float
    return str


def _none_or(kind: Any) -> Any:
    """An argparse type that also accepts ``none`` (for fields whose value may be None)."""

    def convert(text: str) -> Any:
        if text.strip().lower() in {"none", "null"}:
            return None
        return kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def _add_distill_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "distillation settings (DistillConfig fields; override --config)"
    )
    for f in _distill_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f)
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
            type=_none_or(kind) if nullable else kind,
            default=argparse.SUPPRESS,
            dest=dest,
            metavar="N" if kind is int else "X" if kind is float else "STR",
            help=help_text,
            **kwargs,
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``tqla`` argument parser (argparse with one subparser per subcommand).

    Returns
    -------
    argparse.ArgumentParser
    """
    from tqla_torch import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=_wrap(
            "Compress transformers with permuted Kronecker, Kronecker and low-rank "
            "factorizations; distil, evaluate, and run the built-in demo."
        ),
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    subparsers: dict[str, argparse.ArgumentParser] = {}

    # inspect ----------------------------------------------------------------------------
    p = sub.add_parser(
        "inspect",
        help="dry run: which modules a plan compresses, parameters before/after",
        description=_wrap(
            "Dry run of a compression plan on a model: the matched modules, their "
            "factor shapes and ranks, and the parameter count before and after. Nothing is "
            "computed or written (except --json)."
        ),
        epilog=_INSPECT_EPILOG,
        formatter_class=_Formatter,
    )
    _add_model_args(p)
    _add_plan_args(p, required=True)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    _add_common(p, config_help=None)
    p.set_defaults(handler=_cmd_inspect)
    subparsers["inspect"] = p

    # compress ---------------------------------------------------------------------------
    p = sub.add_parser(
        "compress",
        help="compress a model with a preset or config and save it",
        description=_wrap(
            "Compress a model in place with a named preset or a JSON compression "
            "config (all steps of a multi-step preset at once) and save it with "
            "tqla_torch.save_pretrained."
        ),
        epilog=_COMPRESS_EPILOG,
        formatter_class=_Formatter,
    )
    _add_model_args(p)
    _add_plan_args(p, required=True)
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing, non-empty output folder"
    )
    _add_common(p, config_help=None)
    p.set_defaults(handler=_cmd_compress)
    subparsers["compress"] = p

    # distill ----------------------------------------------------------------------------
    p = sub.add_parser(
        "distill",
        help="distil a compressed student from its teacher (resumable)",
        description=_wrap(
            "Knowledge distillation of a compressed student from a teacher. The "
            "student is a compressed folder (--student, one stage) or made from the teacher with "
            "a preset applied stage by stage (--preset: embedding, MLPs, embedding again for "
            "tq_gpt2) or with a JSON compression config (--compression-config, one stage)."
        ),
        epilog=_DISTILL_EPILOG,
        formatter_class=_Formatter,
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
    p.add_argument("--text-field", default="text", help="text field of JSON lines (default: text)")
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
    _add_distill_config_flags(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_common(
        p, config_help="DistillConfig as JSON (fields: alpha, temperature, lr, max_steps, ...)"
    )
    p.set_defaults(handler=_cmd_distill)
    subparsers["distill"] = p

    # evaluate ---------------------------------------------------------------------------
    p = sub.add_parser(
        "evaluate",
        help="perplexity on text (published protocol or strided) and LAMBADA",
        description=_wrap(
            "Perplexity of a causal LM on a text source and, optionally, LAMBADA "
            "last-word accuracy. Default protocol: non-overlapping windows of --window tokens, "
            "exp(mean of window NLL) (methods.md §3); --stride switches to sliding windows."
        ),
        epilog=_EVALUATE_EPILOG,
        formatter_class=_Formatter,
    )
    _add_model_args(p)
    p.add_argument(
        "--data",
        default="builtin",
        help="'builtin' (validation split), a text/jsonl file, a folder, or 'none' "
        "(default: builtin)",
    )
    p.add_argument("--split", default="validation", help="split of builtin / dataset folders")
    p.add_argument("--text-field", default="text", help="text field of JSON lines")
    p.add_argument("--window", type=int, default=1024, help="window length (default: 1024)")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: non-overlapping)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--lambada", metavar="FILE", help="LAMBADA .jsonl (or one example a line)")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_common(
        p, config_help="JSON object of defaults for this command's flags (window, stride, ...)"
    )
    p.set_defaults(handler=_cmd_evaluate)
    subparsers["evaluate"] = p

    # demo -------------------------------------------------------------------------------
    p = sub.add_parser(
        "demo",
        help="the built-in demo: train, compress three ways, distil, evaluate (no downloads)",
        description=_wrap(
            "Train a small GPT-2 on the built-in corpus (or take --model), compress it "
            "with permuted Kronecker, plain Kronecker and low-rank SVD at equal parameter count, "
            "distil each with the same token budget, evaluate, and write a table, a plot and a "
            "JSON report."
        ),
        epilog=_DEMO_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--output", "-o", default="tqla-demo", metavar="DIR", help="output folder (tqla-demo)"
    )
    p.add_argument("--quick", action="store_true", help="tiny version for smoke tests")
    p.add_argument("--model", metavar="DIR", help="local GPT-2 folder to use as the teacher")
    p.add_argument("--tokenizer", help="tokenizer for --model (default: the model folder's)")
    p.add_argument(
        "--methods", help="comma-separated subset of permuted_kron,kron,svd (default: all)"
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
    _add_common(p, config_help="DemoConfig as JSON (n_embd, teacher_steps, distill_tokens, ...)")
    p.set_defaults(handler=_cmd_demo)
    subparsers["demo"] = p
    parser.set_defaults(_subparsers=subparsers)
    return parser


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging_setup(verbosity: int, command: str) -> Iterator[None]:
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


def _device(args: argparse.Namespace) -> str:
    from tqla_torch._models import resolve_device

    return str(resolve_device(args.device or "auto"))


def _read_json(path: str, what: str) -> Any:
    from tqla_torch._models import read_json_file

    return read_json_file(path, what)


def _print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Print a Markdown table to stdout."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def _check_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise CLIError(f"--output {str(path)!r} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CLIError(f"--output {str(path)!r} is not empty; pass --overwrite to replace it")


def _load(args: argparse.Namespace, name: str, device: str, base_model: str | None = None):
    from tqla_torch._models import load_model

    return load_model(name, device=device, base_model=base_model)


def _try_tokenizer(spec: str | None, model_source: str) -> Any:
    """The tokenizer, or None (with a warning) when the model folder has none and none is given."""
    from tqla_torch._models import ModelLoadError, load_tokenizer

    if spec is not None:
        return load_tokenizer(spec)
    try:
        return load_tokenizer(None, model_source)
    except ModelLoadError as err:
        logger.warning("%s", err)
        return None


def _fmt_int(n: int) -> str:
    return f"{n:,}"


# --------------------------------------------------------------------------------------------
# Compression plans: presets and config files
# --------------------------------------------------------------------------------------------


def _compression_config_from_file(path: str) -> Any:
    from tqla_torch.compression.config import CompressionConfig

    values = _read_json(path, "compression config")
    return CompressionConfig.from_dict(values)


def _call_preset(fn: Any, model: Any) -> Any:
    """Call a preset function, passing the model to those that size themselves from it."""
    import inspect

    if "model_or_config" in inspect.signature(fn).parameters:
        return fn(model)
    return fn()


def _preset_config(name: str, model: Any) -> Any:
    """The single config of preset ``name`` (all steps of the recipe at once)."""
    from tqla_torch.compression.presets import presets

    if name.endswith("_steps"):
        raise CLIError(
            f"--preset {name!r}: name the preset without '_steps' ({name.removesuffix('_steps')})"
        )
    return _call_preset(presets.get(name), model)


def _preset_steps(name: str, model: Any) -> list[tuple[str, Any]]:
    """The stages of preset ``name`` as ``(stage name, CompressionConfig)`` pairs."""
    from tqla_torch.compression.presets import presets

    base = name.removesuffix("_steps")
    configs = _call_preset(presets.get(base + "_steps"), model)
    names = ["embedding", "mlp", "embedding-2"] if len(configs) == 3 else []
    if not names:
        names = [f"step-{i + 1}" for i in range(len(configs))]
    return list(zip(names, configs))


def _plan_config(args: argparse.Namespace, model: Any) -> Any:
    if args.preset is not None:
        return _preset_config(args.preset, model)
    return _compression_config_from_file(args.config)


def _save_model(model: Any, folder: Path) -> None:
    from tqla_torch.io import save_pretrained

    save_pretrained(model, folder)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tqla_torch.compression.apply import inspect

    if args.config is not None and not Path(args.config).is_file():
        raise CLIError(f"--config: no such file: {args.config!r}")
    loaded = _load(args, args.model, "cpu", args.base_model)
    config = _plan_config(args, loaded.model)
    report = inspect(loaded.model, config)
    print(f"model: {args.model} ({loaded.kind})")
    print(report)
    if args.json:
        from tqla_torch._atomic import atomic_write_json

        atomic_write_json(_prepare_file(args.json), report.to_dict())
    return EXIT_OK


def _cmd_compress(args: argparse.Namespace) -> int:
    from tqla_torch._atomic import atomic_write_json
    from tqla_torch._models import save_tokenizer
    from tqla_torch.compression.apply import compress

    output = Path(args.output)
    _check_output_dir(output, args.overwrite)
    if args.config is not None and not Path(args.config).is_file():
        raise CLIError(f"--config: no such file: {args.config!r}")
    device = _device(args)
    loaded = _load(args, args.model, device, args.base_model)
    config = _plan_config(args, loaded.model)
    tokenizer = _try_tokenizer(args.tokenizer, args.model)
    start = time.perf_counter()
    report = compress(loaded.model, config)
    seconds = time.perf_counter() - start
    loaded.model.to("cpu")
    if output.is_dir() and args.overwrite:
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    _save_model(loaded.model, output)
    if tokenizer is not None:
        save_tokenizer(tokenizer, output)
    atomic_write_json(
        output / "tqla_compress_report.json",
        {"source": args.model, "seconds": seconds, **report.to_dict()},
    )
    print(report)
    print(f"compressed in {seconds:.1f} s; saved to {output}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _apply_json_defaults(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Re-parse with a ``--config`` JSON object as the subcommand's defaults (flags still win)."""
    if not getattr(args, "config", None):
        return args
    values = _read_json(args.config, "--config")
    if not isinstance(values, dict):
        raise CLIError(f"--config {args.config!r} must hold a JSON object of flag defaults")
    subparser = args._subparsers[args.command]
    known = {
        action.dest
        for action in subparser._actions
        if action.dest not in {"help", "config", "model", "handler"}
    }
    normalized = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(normalized) - known)
    if unknown:
        raise CLIError(f"--config {args.config!r}: unknown keys {unknown}; known: {sorted(known)}")
    subparser.set_defaults(**normalized)
    return parser.parse_args(argv)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tqla_torch._models import count_parameters, load_tokenizer
    from tqla_torch.evaluate import lambada, text_perplexity

    data = None if args.data.lower() == "none" else args.data
    if data is None and args.lambada is None:
        raise CLIError("nothing to evaluate: --data none and no --lambada")
    if data is not None and data != "builtin" and not Path(data).exists():
        raise CLIError(f"--data: no such file or folder: {data!r}")
    if args.lambada is not None and not Path(args.lambada).is_file():
        raise CLIError(f"--lambada: no such file: {args.lambada!r}")
    for name in ("window", "batch_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    device = _device(args)
    loaded = _load(args, args.model, device, args.base_model)
    tokenizer = load_tokenizer(args.tokenizer, args.model)
    model = loaded.model
    report: dict[str, Any] = {
        "model": args.model,
        "kind": loaded.kind,
        "parameters": count_parameters(model),
    }
    rows: list[tuple[str, str]] = [("parameters", _fmt_int(report["parameters"]))]
    if data is not None:
        start = time.perf_counter()
        result = text_perplexity(
            model,
            tokenizer,
            data,
            text_field=args.text_field,
            split=args.split,
            window=args.window,
            stride=args.stride,
            batch_size=args.batch_size,
            device=device,
            progress=args.progress,
        )
        protocol = (
            f"non-overlapping windows of {args.window}"
            if args.stride is None
            else f"windows of {args.window}, stride {args.stride}"
        )
        report["perplexity"] = {
            "data": data,
            "split": args.split if data == "builtin" else None,
            "protocol": protocol,
            "window": args.window,
            "stride": args.stride,
            **dataclasses.asdict(result),
            "wall_s": time.perf_counter() - start,
        }
        label = f"builtin {args.split}" if data == "builtin" else Path(data).name
        rows += [
            (f"perplexity ({label}; {protocol})", f"{result.ppl:.3f}"),
            ("tokens scored", _fmt_int(result.n_tokens)),
            ("windows", _fmt_int(result.n_windows)),
        ]
    if args.lambada is not None:
        start = time.perf_counter()
        lam = lambada(
            model,
            tokenizer,
            args.lambada,
            batch_size=args.batch_size,
            device=device,
            progress=args.progress,
        )
        report["lambada"] = {
            "file": args.lambada,
            **dataclasses.asdict(lam),
            "wall_s": time.perf_counter() - start,
        }
        rows += [
            ("LAMBADA accuracy", f"{lam.accuracy:.4f}"),
            ("LAMBADA last-word perplexity", f"{lam.ppl:.3f}"),
            ("LAMBADA examples", _fmt_int(lam.n_examples)),
        ]
    print(f"model: {args.model} ({loaded.kind})")
    _print_table(rows, ("metric", "value"))
    if args.json:
        from tqla_torch._atomic import atomic_write_json

        atomic_write_json(_prepare_file(args.json), report)
    return EXIT_OK


def _prepare_file(path: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


# --------------------------------------------------------------------------------------------
# distill
# --------------------------------------------------------------------------------------------


def _distill_config(args: argparse.Namespace, output: Path) -> Any:
    from tqla_torch.training.distill import DistillConfig

    values: dict[str, Any] = {}
    if args.config:
        loaded = _read_json(args.config, "--config")
        if not isinstance(loaded, dict):
            raise CLIError(
                f"--config {args.config!r} must hold a JSON object of DistillConfig fields"
            )
        values.update(loaded)
    for f in _distill_fields():
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


def _cmd_distill(args: argparse.Namespace) -> int:
    import copy

    from tqla_torch._atomic import atomic_write_json
    from tqla_torch._models import count_parameters, load_tokenizer, save_tokenizer
    from tqla_torch.training.data import PackedDataset
    from tqla_torch.training.distill import Stage, distill_stages

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise CLIError(f"--output {str(output)!r} exists and is not a folder")
    if args.data != "builtin" and not Path(args.data).exists():
        raise CLIError(f"--data: no such file or folder: {args.data!r}")
    for name in ("steps_per_stage", "tokens_per_stage", "block_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    config = _distill_config(args, output)
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
    if args.compression_config is not None and not Path(args.compression_config).is_file():
        raise CLIError(f"--compression-config: no such file: {args.compression_config!r}")
    teacher = _load(args, args.teacher, "cpu").model
    plan_steps: list[tuple[str, Any]] | None = None
    if args.preset is not None:
        plan_steps = _preset_steps(args.preset, teacher)
    elif args.compression_config is not None:
        plan_steps = [("compress", _compression_config_from_file(args.compression_config))]
    tokenizer = load_tokenizer(args.tokenizer, args.teacher)
    if args.student is not None:
        student = _load(args, args.student, "cpu", args.base_model).model
        stage_specs: list[tuple[str, Any]] = [("distill", None)]
    else:
        assert plan_steps is not None
        student = copy.deepcopy(teacher)
        stage_specs = plan_steps
    from tqla_torch._lm import max_positions

    block_size = args.block_size or min(1024, max_positions(teacher) or 1024)
    data = PackedDataset.from_source(
        args.data, tokenizer, block_size, text_field=args.text_field, split=args.split
    )
    tokens_per_step = config.batch_size * config.grad_accum * block_size
    if len(data) < config.batch_size:
        raise CLIError(
            f"--data gives {len(data)} blocks of {block_size} tokens, fewer than one batch "
            f"({config.batch_size}); use more data, a smaller --batch-size or --block-size"
        )
    stages = [
        Stage(name, compress=cfg, steps=args.steps_per_stage, tokens=args.tokens_per_stage)
        for name, cfg in stage_specs
    ]
    params_teacher = count_parameters(teacher)
    logger.info(
        "distilling %d stage(s) %s on %d blocks of %d tokens (%d tokens per step)",
        len(stages),
        [s.name for s in stages],
        len(data),
        block_size,
        tokens_per_step,
    )
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = distill_stages(student, teacher, data, stages, config)
    wall = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes and reports
        return EXIT_OK
    student.to("cpu")
    model_dir = output / "model"
    _save_model(student, model_dir)
    save_tokenizer(tokenizer, model_dir)
    params_student = count_parameters(student)
    summary = {
        "teacher": args.teacher,
        "student": args.student,
        "preset": args.preset,
        "compression_config": args.compression_config,
        "data": args.data,
        "block_size": block_size,
        "stages": [
            {"name": s.name, "steps": s.steps, "tokens": s.tokens, "compress": s._descriptor()}
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
    _print_table(
        [
            ("teacher parameters", _fmt_int(params_teacher)),
            ("student parameters", _fmt_int(params_student)),
            ("stages", ", ".join(s.name for s in stages)),
            ("optimizer steps", _fmt_int(result.step)),
            ("tokens", _fmt_int(result.tokens_seen)),
            ("final loss", final),
            ("resumed from", result.resumed_from or "—"),
            ("wall time (s)", f"{wall:.1f}"),
        ],
        ("distillation", "value"),
    )
    print(f"saved the distilled student to {model_dir}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from tqla_torch.training.demo import DemoConfig, run_demo

    values: dict[str, Any] = {}
    if args.config:
        loaded = _read_json(args.config, "--config")
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


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _user_errors() -> tuple[type[BaseException], ...]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tqla`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 for usage errors and errors the user can fix (missing
        model, data or config files, malformed JSON, unknown presets, unreachable hub).

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    tqla 0.1.0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    try:
        with _logging_setup(args.verbose, args.command):
            if args.command == "evaluate":
                args = _apply_json_defaults(parser, args, argv)
            return int(args.handler(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{_PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if args.verbose:
            traceback.print_exc()
        message = str(err) if str(err) else type(err).__name__
        print(f"{_PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
