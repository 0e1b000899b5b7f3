"""``gpt2-dual inspect``: what a checkpoint holds (format, model, config, tensors, sizes)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Add ``inspect`` to the ``gpt2-dual`` subparsers."""
    ins = sub.add_parser(
        "inspect",
        help="show a checkpoint's format, config, heads, tensors and size",
        description="Describe a checkpoint without loading a framework.",
    )
    ins.add_argument("src", help="checkpoint folder or file (format detected), or Hub repo id")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    ins.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.src``."""
    from gpt2_dual.cli.progress import quiet_tensorflow_import, source_needs_tensorflow
    from gpt2_dual.convert.conversion import open_source
    from gpt2_dual.convert.describe import as_text, describe

    if source_needs_tensorflow(args.src):
        quiet_tensorflow_import(args.verbose)
    info = describe(open_source(args.src))
    sys.stdout.write((json.dumps(info, indent=2) if args.json else as_text(info)) + "\n")
    return 0
