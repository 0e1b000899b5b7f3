"""``gpt2-dual tokenize``: print the GPT-2 token ids of a text as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Add the ``tokenize`` subcommand to the ``gpt2-dual`` subparsers."""
    tok = sub.add_parser("tokenize", help="print the GPT-2 token ids of a text as JSON")
    tok.add_argument("text", help="the text, or - to read standard input")
    tok.add_argument(
        "--tokenizer", default="gpt2", help="local folder or Hub repo id (default: gpt2)"
    )
    tok.add_argument("--pure", action="store_true", help="use the pure-Python tokenizer")
    tok.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Encode ``args.text`` (stdin for ``-``) and print the ids."""
    from gpt2_dual import GPT2Tokenizer, GPT2TokenizerFast

    cls = GPT2Tokenizer if args.pure else GPT2TokenizerFast
    tokenizer = cls.from_pretrained(args.tokenizer)
    text = sys.stdin.read() if args.text == "-" else args.text
    sys.stdout.write(json.dumps(tokenizer.encode(text)) + "\n")
    return 0
