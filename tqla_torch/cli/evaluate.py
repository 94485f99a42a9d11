"""``tqla evaluate``: perplexity on text and LAMBADA accuracy."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqla_torch.cli._common import (
    EXIT_OK,
    CLIError,
    Formatter,
    add_common,
    add_model_args,
    device_of,
    fmt_int,
    load,
    prepare_file,
    print_table,
    read_json,
    wrap,
)

EPILOG = """\
examples:
  tqla evaluate ./run/model                              # built-in validation split
  tqla evaluate ./gpt2 --data wiki.test.raw              # published protocol: 1024-token windows
  tqla evaluate ./gpt2 --data wiki.test.raw --stride 512 # sliding windows
  tqla evaluate ./gpt2 --data none --lambada lambada_test.jsonl --json scores.json
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subparser to ``sub``."""
    p = sub.add_parser(
        "evaluate",
        help="perplexity on text (published protocol or strided) and LAMBADA",
        description=wrap(
            "Perplexity of a causal LM on a text source and, optionally, LAMBADA "
            "last-word accuracy. Default protocol: non-overlapping windows of --window tokens, "
            "exp(mean of window NLL) (docs/distillation.md, Evaluation); --stride switches to "
            "sliding windows."
        ),
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_model_args(p)
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
    add_common(
        p, config_help="JSON object of defaults for this command's flags (window, stride, ...)"
    )
    p.set_defaults(handler=run)
    return p


def apply_json_defaults(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Re-parse with a ``--config`` JSON object as the subcommand's defaults (flags still win)."""
    if not getattr(args, "config", None):
        return args
    values = read_json(args.config, "--config")
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


# A little over ~80 lines: one flat sequence of checks and one branch per evaluation protocol
# (text perplexity, LAMBADA); splitting it would only pass the parsed arguments around.
def run(args: argparse.Namespace) -> int:
    from tqla_torch._models import check_vocabulary, count_parameters, load_tokenizer
    from tqla_torch.training.evaluate import lambada, text_perplexity

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
    device = device_of(args)
    loaded = load(args, args.model, device, args.base_model)
    tokenizer = load_tokenizer(args.tokenizer, args.model)
    model = loaded.model
    check_vocabulary(tokenizer, model)
    report: dict[str, Any] = {
        "model": args.model,
        "kind": loaded.kind,
        "parameters": count_parameters(model),
    }
    rows: list[tuple[str, str]] = [("parameters", fmt_int(report["parameters"]))]
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
            ("tokens scored", fmt_int(result.n_tokens)),
            ("windows", fmt_int(result.n_windows)),
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
            ("LAMBADA examples", fmt_int(lam.n_examples)),
        ]
    print(f"model: {args.model} ({loaded.kind})")
    print_table(rows, ("metric", "value"))
    if args.json:
        from tqla_torch._atomic import atomic_write_json

        atomic_write_json(prepare_file(args.json), report)
    return EXIT_OK
