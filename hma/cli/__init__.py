"""Command line: `hma …` subcommands and `hma-generate`, one module per stage of the data flow.

    common.py    exit codes, shared options
    data.py      hma formats list|convert, hma datasets list|show, hma sim generate
    tokens.py    hma tokenizer train|eval, hma tokenize, hma store inspect
    train.py     hma pretrain
    generate.py  hma-generate, hma simulate train-success, hma evaluate-policy, hma report
    policy.py    hma policy train|eval

Each module's `register(sub)` adds its parsers and sets a `handler` on each leaf command.
Building the parser imports nothing heavy (`hma --help` must not load torch); a handler imports
its stage when it runs. Errors a user can cause print one line naming the culprit and exit 2; no
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from hma.cli.common import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from hma.errors import HmaError

__all__ = ["EXIT_INCOMPLETE", "EXIT_OK", "EXIT_USAGE", "build_parser", "generate_main", "main"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from hma.cli import data, generate, policy, tokens, train

    parser = argparse.ArgumentParser(
        prog="hma",
        description="Heterogeneous Masked Autoregression: robot episodes -> token stores -> "
        "action-conditioned video world model -> synthetic robot data.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, tokens, train, generate, policy):
        module.register(sub)
    return parser


def run(handler: Handler, args: argparse.Namespace, prog: str) -> int:
    """Run a command handler; a user error becomes one `prog: error:` line and exit 2."""
    from hma import storage

    try:
        return handler(args)
    except HmaError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        if not storage.unreachable(e):
            raise
        hint = f" (${storage.ENDPOINT_ENV} is {os.environ.get(storage.ENDPOINT_ENV, 'unset')})"
        print(f"{prog}: error: cannot reach the object store: {e}{hint}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.handler, args, "hma")


def generate_main(argv: Sequence[str] | None = None) -> int:
    """`hma-generate`: exit 0 when every requested episode was written, 1 when some failed
    every attempt (they are reported, the rest is written), 2 on a usage or data error."""
    from hma.cli.generate import generate_command, generate_parser

    return run(generate_command, generate_parser().parse_args(argv), "hma-generate")
