"""The ``gpt2-dual`` command line (also ``python -m gpt2_dual``): one small module per
subcommand, each a thin layer over library functions.

Every subcommand shares one error policy: a mistake the user can fix (a missing path, an
option out of range, an unknown repo, no network) prints one line,
``gpt2-dual <command>: error: <message>``, on stderr and exits with status 2; ``-v`` also
prints the traceback. Frameworks are imported only inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

import gpt2_dual
from gpt2_dual.cli import convert, demo, generate, inspect, tokenize

__all__ = ["USER_ERRORS", "build_parser", "main"]

#: What a user can fix: reported in one line, exit status 2.
USER_ERRORS = (OSError, ValueError, TypeError, KeyError, NotImplementedError, ImportError)

#: Subcommand modules: each has ``add_parser(subparsers)`` and sets ``run`` on its parser.
COMMANDS = (demo, convert, inspect, tokenize, generate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gpt2-dual``."""
    parser = argparse.ArgumentParser(
        prog="gpt2-dual",
        description="GPT-2 for PyTorch and TensorFlow/Keras: tools around gpt2_dual.",
    )
    parser.add_argument("--version", action="version", version=f"gpt2-dual {gpt2_dual.__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level; show tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _one_line(err: BaseException) -> str:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, KeyError) and message[:1] in ("'", '"'):
        message = message[1:-1]
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gpt2-dual``; returns the process exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except USER_ERRORS as err:
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write(f"gpt2-dual {args.command}: error: {_one_line(err)}\n")
        return 2
