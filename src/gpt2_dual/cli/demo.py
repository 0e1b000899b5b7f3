"""``gpt2-dual demo``: the whole package in a few seconds, offline, with no arguments.

Builds a small GPT-2 with the real GPT-2 vocabulary (random weights: no real weights exist
offline), saves it from PyTorch, converts it PyTorch -> Keras -> transformers folder ->
transformers-TF ``tf_model.h5`` -> back to a transformers folder, cross-checking every
conversion in both frameworks, confirms the round trip is bit exact, and continues one prompt
greedily in both frameworks from the final folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The demo model: GPT-2's vocabulary and context, a small body (every other size distinct).
DEMO_CONFIG = dict(n_positions=128, n_embd=64, n_layer=2, n_head=4, n_inner=192)
#: (folder, format written) after the PyTorch save, in order.
CHAIN = (("2-keras", "keras"), ("3-transformers", "hf"), ("4-tf-h5", "tf-h5"),
         ("5-transformers-again", "hf"))  # fmt: skip
PROMPT = "Hello, I'm a language model,"
NEW_TOKENS = 8


def add_parser(sub: Any) -> None:
    """Add ``demo`` to the ``gpt2-dual`` subparsers."""
    demo = sub.add_parser(
        "demo",
        help="build, convert and cross-check a small GPT-2 in both frameworks (offline)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    demo.add_argument("--out", metavar="DIR", help="keep the checkpoints in DIR (default: "
                      "a temporary folder, removed at the end)")  # fmt: skip
    demo.set_defaults(run=run)


def build(folder: Path) -> Path:
    """Save a seeded random ``GPT2LMHeadModel`` with the real vocabulary and its tokenizer."""
    import torch

    from gpt2_dual import GPT2Config, GPT2TokenizerFast
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(**DEMO_CONFIG)
    GPT2LMHeadModel(config).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained("gpt2", local_files_only=True).save_pretrained(folder)
    return folder


def continue_prompt(folder: Path) -> dict[str, list[int]]:
    """Greedy tokens after ``PROMPT`` from ``folder``, in each framework."""
    from gpt2_dual import GPT2TokenizerFast
    from gpt2_dual.pt import GPT2LMHeadModel as PTModel
    from gpt2_dual.tf import GPT2LMHeadModel as TFModel

    ids = GPT2TokenizerFast.from_pretrained(folder)(PROMPT, return_tensors="np")["input_ids"]
    out = {}
    for name, cls in (("pt", PTModel), ("tf", TFModel)):
        model = cls.from_pretrained(folder)
        prompt = ids if name == "tf" else _torch(ids)
        tokens = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
                                pad_token_id=model.config.eos_token_id)  # fmt: skip
        out[name] = np.asarray(tokens)[0, ids.shape[1] :].tolist()
    return out


def _torch(ids: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(ids)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table; 1 when anything disagrees."""
    from gpt2_dual import GPT2TokenizerFast
    from gpt2_dual.cli.progress import quiet_tensorflow_import
    from gpt2_dual.convert import formats
    from gpt2_dual.convert.conversion import convert

    quiet_tensorflow_import(args.verbose)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpt2-dual-demo-"))
    try:
        start = time.perf_counter()
        previous = build(out / "1-pytorch")
        write = sys.stdout.write
        c = DEMO_CONFIG
        write(f"built a random GPT-2 ({c['n_layer']} layers, {c['n_embd']} wide, "
              f"{c['n_head']} heads, {c['n_positions']} positions, GPT-2's 50257-token "
              f"vocabulary) in gpt2_dual.pt and saved it to {previous}\n\n")  # fmt: skip
        write(f"{'step':<44} {'worst |diff|':>12} {'greedy':>7}  verdict\n")
        ok, first_step = True, True
        for name, fmt in CHAIN:
            target = out / name
            # each source after the first is the result just checked in both frameworks
            report = convert(previous, target, to=fmt, overwrite=True, source_in_tf=first_step)
            first_step = False
            worst = max(c.max_abs for c in report.outputs)
            greedy = "same" if all(g.ok for g in report.greedy) else "differs"
            step = f"{formats.detect(previous)} -> {fmt} ({target.name})"
            write(f"{step:<44} {worst:>12.2e} {greedy:>7}  {'PASS' if report.ok else 'FAIL'}\n")
            ok &= report.ok
            previous = target
        first, last = formats.read(out / "1-pytorch"), formats.read(previous)
        exact = sorted(first.view.keys()) == sorted(last.view.keys()) and all(
            np.array_equal(first.view[k], last.view[k]) for k in first.view.keys()
        )
        ok &= exact
        write(f"\nround trip back to a transformers folder: {'bit exact' if exact else 'DIFFERS'}"
              "\n")  # fmt: skip
        tokens = continue_prompt(previous)
        tok = GPT2TokenizerFast.from_pretrained(previous)
        same = tokens["pt"] == tokens["tf"]
        ok &= same
        write(f"greedy after {PROMPT!r} (random weights, so the words are random): "
              f"{tok.decode(tokens['pt'])!r}, {'the same' if same else 'DIFFERENT'} in "
              f"gpt2_dual.pt and gpt2_dual.tf\n")  # fmt: skip
        write(f"{'all checks passed' if ok else 'SOME CHECKS FAILED'} in "
              f"{time.perf_counter() - start:.1f} s\n")  # fmt: skip
        return 0 if ok else 1
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
