"""``gpt2-dual eval``: the perplexity of a GPT-2 checkpoint on a text file.

``gpt2-dual eval MODEL --file F``: transformers' sliding-window perplexity
(``gpt2_dual.train.evaluate``) with windows of ``--block-size`` tokens (default: the model's
``n_positions``) every ``--stride`` tokens (default: ``--block-size``, disjoint windows). The
model loads as ``gpt2-dual generate`` loads it (a folder or a Hub repo id; ``--framework``,
``--dtype``, ``--device``, the bitsandbytes flags), the tokenizer from the same place, or the
bundled GPT-2 tokenizer when the folder has none. Prints a short table, or with ``--json`` one
line ``{"perplexity": .., "loss": .., "tokens": ..}`` on stdout. Errors a user can fix print one
line on stderr and exit with status 2 (``gpt2_dual.cli``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from gpt2_dual.cli.loading import add_loading_flags, loading_options
from gpt2_dual.errors import InvalidInputError, OutOfRangeError

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Add the ``eval`` subcommand to the ``gpt2-dual`` subparsers."""
    ev = sub.add_parser(
        "eval",
        help="perplexity of a GPT-2 checkpoint on a text file (sliding window)",
        description="Perplexity of a GPT-2 checkpoint on a text file, by transformers' "
        "sliding-window method, e.g. gpt2-dual eval ./my-gpt2 --file test.txt --stride 512",
    )
    ev.add_argument("model", metavar="MODEL", help="checkpoint folder or Hub repo id")
    ev.add_argument("--file", required=True, metavar="F", help="the text (UTF-8)")
    ev.add_argument(
        "--block-size", type=int, metavar="N",
        help="tokens per window, at most the model's n_positions (default: n_positions)",
    )  # fmt: skip
    ev.add_argument(
        "--stride", type=int, metavar="S",
        help="tokens between window starts, 1 to --block-size (default: --block-size)",
    )  # fmt: skip
    ev.add_argument(
        "--batch-size", type=int, default=1, metavar="N",
        help="windows per forward pass (default 1)",
    )  # fmt: skip
    ev.add_argument(
        "--json", action="store_true",
        help='print one JSON line {"perplexity", "loss", "tokens"} instead of a table',
    )  # fmt: skip
    add_loading_flags(ev)
    ev.set_defaults(run=run)


def read_file(path: str) -> str:
    """The text of ``--file`` as UTF-8.

    Raises:
        FileNotFoundError: no such file.
        InvalidInputError: the file is empty or not UTF-8 (names the offset and the byte).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--file {path}: no such file")
    data = file.read_bytes()
    if not data:
        raise InvalidInputError(f"--file {path} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInputError(
            f"--file {path} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset "
            f"{err.start}; convert it first (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def window_sizes(args: argparse.Namespace, n_positions: int) -> tuple[int, int]:
    """``(block_size, stride)`` from the flags and the model's ``n_positions``.

    Raises:
        OutOfRangeError: ``--block-size`` not in ``2..n_positions``, ``--stride`` not in
            ``1..block_size``.
    """
    block_size = n_positions if args.block_size is None else args.block_size
    if not 2 <= block_size <= n_positions:
        raise OutOfRangeError(
            f"--block-size {block_size} is out of range: 2 to the model's n_positions {n_positions}"
        )
    stride = block_size if args.stride is None else args.stride
    if not 1 <= stride <= block_size:
        raise OutOfRangeError(f"--stride {stride} is out of range: 1 to --block-size {block_size}")
    return block_size, stride


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, scope)``: the ``GPT2LMHeadModel`` loaded as ``generate`` loads it,
    the tokenizer of the same folder or repo (the bundled GPT-2 one when it has none), and the
    device scope its calls run under."""
    from gpt2_dual.cli.progress import quiet_tensorflow_import
    from gpt2_dual.pipelines.factory import pipeline
    from gpt2_dual.tokenizer.fast import GPT2TokenizerFast

    load = loading_options(args)
    if load["framework"] == "tf":
        quiet_tensorflow_import(args.verbose)
    try:
        tokenizer, missing = GPT2TokenizerFast.from_pretrained(args.model), False
    except FileNotFoundError:  # or no such folder: then loading the model says so
        tokenizer, missing = GPT2TokenizerFast.from_pretrained("gpt2", local_files_only=True), True
    pipe = pipeline("text-generation", model=args.model, tokenizer=tokenizer, **load)
    if missing:
        logger.warning("%s has no tokenizer files; using the bundled GPT-2 tokenizer", args.model)
    backend = importlib.import_module(f"gpt2_dual.{pipe.framework}.pipelines")
    return pipe.model, tokenizer, backend.device_scope(load["device"])


def _tokens(tokenizer: Any, text: str, path: str, vocab_size: int) -> Any:
    import numpy as np

    ids = np.asarray(tokenizer.encode(text, verbose=False), dtype=np.int64)
    if len(ids) < 2:
        raise InvalidInputError(
            f"--file {path} is {len(ids)} token long; perplexity needs at least 2 tokens"
        )
    if int(ids.max()) >= vocab_size:
        raise OutOfRangeError(
            f"--file {path}: token id {int(ids.max())} is past the model's vocab_size "
            f"{vocab_size}; the tokenizer does not belong to this model"
        )
    return ids


def _table(args: argparse.Namespace, n_text: int, windows: int, result: Any) -> str:
    rows = [
        ("model", args.model),
        ("file", f"{args.file} ({n_text} tokens)"),
        ("windows", f"{windows} (block size {args.block_size}, stride {args.stride})"),
        ("tokens scored", str(result.tokens)),
        ("loss", f"{result.loss:.4f}"),
        ("perplexity", f"{result.perplexity:.4f}"),
    ]
    return "".join(f"{name:<14} {value}\n" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    """Run ``gpt2-dual eval``; user errors raise (``gpt2_dual.cli.main`` reports them)."""
    if args.batch_size < 1:
        raise OutOfRangeError(f"--batch-size {args.batch_size} is out of range: at least 1")
    text = read_file(args.file)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from gpt2_dual.cli.progress import Steps
    from gpt2_dual.train import evaluate

    model, tokenizer, scope = _load(args)
    args.block_size, args.stride = window_sizes(args, model.config.n_positions)
    ids = _tokens(tokenizer, text, args.file, model.config.vocab_size)
    model_nll = evaluate.model_nll_sum(model)

    def nll_sum(window_ids: Any, trg_len: int) -> tuple[float, int]:
        with scope():
            return model_nll(window_ids, trg_len)

    spans = evaluate.windows(len(ids), block_size=args.block_size, stride=args.stride)
    steps = Steps("eval", len(evaluate.window_batches(spans, args.batch_size)))
    try:
        result = evaluate.perplexity(
            ids, nll_sum, block_size=args.block_size,
            stride=args.stride, batch_size=args.batch_size,
            on_batch=lambda done, total: steps(f"window {done + 1}/{total}"),
        )  # fmt: skip
    finally:
        steps.close()
    if args.json:
        fields = {"perplexity": result.perplexity, "loss": result.loss, "tokens": result.tokens}
        sys.stdout.write(json.dumps(fields) + "\n")
    else:
        sys.stdout.write(_table(args, len(ids), len(spans), result))
    return 0
