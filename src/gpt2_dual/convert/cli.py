"""The ``gpt2-dual`` command line (argparse). Subcommands stay thin: they call library functions.

Frameworks are imported only inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import gpt2_dual
from gpt2_dual.convert import cli_generate


def _tokenize(args: argparse.Namespace) -> int:
    from gpt2_dual import GPT2Tokenizer, GPT2TokenizerFast

    cls = GPT2Tokenizer if args.pure else GPT2TokenizerFast
    tokenizer = cls.from_pretrained(args.tokenizer)
    text = sys.stdin.read() if args.text == "-" else args.text
    ids = tokenizer.encode(text)
    sys.stdout.write(json.dumps(ids) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gpt2-dual``."""
    parser = argparse.ArgumentParser(
        prog="gpt2-dual",
        description="GPT-2 for PyTorch and TensorFlow/Keras: tools around gpt2_dual.",
    )
    parser.add_argument("--version", action="version", version=f"gpt2-dual {gpt2_dual.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tok = sub.add_parser("tokenize", help="print the GPT-2 token ids of a text as JSON")
    tok.add_argument("text", help="the text, or - to read standard input")
    tok.add_argument(
        "--tokenizer", default="gpt2", help="local folder or Hub repo id (default: gpt2)"
    )
    tok.add_argument("--pure", action="store_true", help="use the pure-Python tokenizer")
    tok.set_defaults(run=_tokenize)
    cli_generate.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gpt2-dual``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
