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
    text = read_text(args.text)
    sys.stdout.write(json.dumps(tokenizer.encode(text)) + "\n")
    return 0


def read_text(arg: str) -> str:
    """The text to encode: ``arg``, or standard input for ``-``, as UTF-8.

    Raises:
        InvalidInputError: the bytes are not UTF-8 (names the offset and byte); GPT-2's
            byte-level BPE could encode any bytes, but a tokenizer encodes text.
    """
    from gpt2_dual.errors import InvalidInputError

    if arg == "-":
        where, data = "standard input", sys.stdin.buffer.read()
    else:  # undecodable command-line bytes arrive as lone surrogates (surrogateescape)
        where, data = "the text argument", arg.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInputError(
            f"{where} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start}; "
            "convert it first (e.g. iconv -f latin1 -t utf-8)"
        ) from None
