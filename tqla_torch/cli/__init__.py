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
import sys
import traceback
from collections.abc import Sequence

from tqla_torch.cli import compress, demo, distill, evaluate, inspect
from tqla_torch.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CLIError,
    Formatter,
    logging_setup,
    user_errors,
    wrap,
)
from tqla_torch.cli.evaluate import apply_json_defaults

__all__ = ["CLIError", "build_parser", "main"]

# One module per subcommand, in the order ``tqla --help`` lists them.
SUBCOMMANDS = {
    "inspect": inspect,
    "compress": compress,
    "distill": distill,
    "evaluate": evaluate,
    "demo": demo,
}

MAIN_EPILOG = """\
examples:
  tqla demo                                    # the built-in demo, no downloads (~7 min)
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


def build_parser() -> argparse.ArgumentParser:
    """The ``tqla`` argument parser (argparse with one subparser per subcommand).

    Returns
    -------
    argparse.ArgumentParser
    """
    from tqla_torch import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=wrap(
            "Compress transformers with permuted Kronecker, Kronecker and low-rank "
            "factorizations; distil, evaluate, and run the built-in demo."
        ),
        epilog=MAIN_EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    subparsers = {name: mod.add_parser(sub) for name, mod in SUBCOMMANDS.items()}
    parser.set_defaults(_subparsers=subparsers)
    return parser


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
        with logging_setup(args.verbose, args.command):
            if args.command == "evaluate":
                args = apply_json_defaults(parser, args, argv)
            return int(args.handler(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except user_errors() as err:
        if args.verbose:
            traceback.print_exc()
        message = str(err) if str(err) else type(err).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
