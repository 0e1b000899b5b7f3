"""The ``gpt2-dual`` command line (also ``python -m gpt2_dual``): one small module per
subcommand, each a thin layer over library functions.

Every subcommand shares one error policy: a mistake the user can fix (a missing path, an
option out of range, an unknown repo, no network, a malformed file, a pickle our ``.bin``
reader refused) prints one line, ``gpt2-dual <command>: error: <message>``, on stderr and exits
with status 2, as argparse does for a bad option; ``-v`` also prints the traceback. Anything
else is a bug and keeps its traceback (exit status 1). Ctrl-C exits with status 130, quietly.
Frameworks are imported only inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import linecache
import logging
import os
import pickle
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import gpt2_dual
from gpt2_dual.cli import convert, demo, evaluate, generate, inspect, serve, tokenize, train
from gpt2_dual.errors import GPT2DualError

__all__ = ["USER_ERRORS", "build_parser", "is_user_error", "main"]

#: What a user can fix wherever it is raised, reported in one line with exit status 2:
#: gpt2_dual's typed errors, files and folders (missing, unreadable, malformed; the Hub), a
#: pickle that ``torch.load(weights_only=True)`` refused, an optional package not installed.
USER_ERRORS = (GPT2DualError, OSError, pickle.UnpicklingError, ImportError)
#: What a user can fix when gpt2_dual raised it on purpose (a ``raise`` statement in
#: gpt2_dual's code, with a message); from a library or a failed operation it is a bug.
CHECKED_ERRORS = (ValueError, TypeError, KeyError, NotImplementedError)
_PACKAGE = Path(gpt2_dual.__file__).resolve().parent

VERBOSE_HELP = "log at INFO level; show tracebacks"
#: Subcommand modules: each has ``add_parser(subparsers)`` and sets ``run`` on its parser.
COMMANDS = (demo, convert, inspect, tokenize, generate, serve, train, evaluate)


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that takes options and arguments in any order, as in
    ``gpt2-dual generate MODEL --max-new-tokens 20 PROMPT`` (plain argparse refuses a second
    optional argument, ``nargs="?"``, once an option stands between them)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        if self._intermixing:  # parse_known_intermixed_args calls back here (Python < 3.12)
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gpt2-dual``."""
    parser = argparse.ArgumentParser(
        prog="gpt2-dual",
        description="GPT-2 for PyTorch and TensorFlow/Keras: tools around gpt2_dual.",
    )
    parser.add_argument("--version", action="version", version=f"gpt2-dual {gpt2_dual.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        command.add_parser(sub)
    for command_parser in sub.choices.values():  # also after the command: convert A B -v
        command_parser.add_argument("-v", "--verbose", action="store_true",
                                    default=argparse.SUPPRESS, help=VERBOSE_HELP)  # fmt: skip
    return parser


def _one_line(err: BaseException) -> str:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, KeyError) and message[:1] in ("'", '"'):
        message = message[1:-1]
    return message


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` reports a mistake the user can fix (one line) rather than a bug."""
    if isinstance(err, USER_ERRORS):
        return True
    if not isinstance(err, CHECKED_ERRORS) or not str(err).strip():
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    line = linecache.getline(str(where), tb.tb_lineno).strip()
    return where.is_relative_to(_PACKAGE) and line.startswith("raise ")


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
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write("\n")
        return 130
    except Exception as err:
        if not is_user_error(err):
            raise
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write(f"gpt2-dual {args.command}: error: {_one_line(err)}\n")
        return 2
