"""``gpt2-dual train MODEL --train-file F --output-dir D``: fine-tune (or train from scratch)
a GPT-2 causal LM on text, in either framework, on one process or many.

The flags are ``TrainingArguments``' fields in transformers' spelling (``--learning-rate``,
``--max-steps``, ``--gradient-accumulation-steps``, ...); the work is ``gpt2_dual.train``'s.
``torchrun --nproc-per-node N -m gpt2_dual train ...`` runs DDP (``--fsdp``: FSDP2);
``--framework tf`` with ``TF_CONFIG`` set runs ``MultiWorkerMirroredStrategy``. Errors a user
can fix (a missing train file, ``--block-size`` past ``n_positions``, an output folder that
holds another run, a loss that turned NaN) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from gpt2_dual.train.args import TrainingArguments

__all__ = ["add_parser", "run"]

USAGE = """%(prog)s MODEL --train-file TEXT --output-dir DIR [options]
       %(prog)s gpt2 --from-scratch --config-overrides n_layer=4 --train-file TEXT --output-dir DIR
       torchrun --nproc-per-node 2 -m gpt2_dual train MODEL ... [--fsdp]"""

_DEFAULTS = TrainingArguments(model="", train_file="", output_dir="")


def add_parser(sub: Any) -> None:
    """Add the ``train`` subcommand to the ``gpt2-dual`` subparsers."""
    p = sub.add_parser(
        "train",
        help="fine-tune or train GPT-2 on text files (checkpoints in transformers' layout)",
        usage=USAGE,
        description="Train a GPT-2 causal LM on text: tokenized once into a cache, blocks of "
        "--block-size tokens in an order fixed by --seed, checkpoints every --save-steps, "
        "the final model in --output-dir (transformers, vLLM and gpt2-dual serve load it).",
    )
    p.add_argument("model", metavar="MODEL",
                   help="checkpoint folder or Hub repo id; with --from-scratch a preset "
                        "(gpt2, gpt2-medium, ...) or a folder whose config is used")  # fmt: skip
    data = p.add_argument_group("data")
    data.add_argument("--train-file", required=True, help="a text file, a folder or a glob")
    data.add_argument("--validation-file", help="text for --eval-steps (loss and perplexity)")
    data.add_argument("--block-size", type=int, help="tokens per block (default: n_positions, "
                      "at most 1024)")  # fmt: skip
    data.add_argument("--cache-dir", help="token cache folder (default $GPT2_DUAL_CACHE or "
                      "~/.cache/gpt2_dual/tokens)")  # fmt: skip
    model = p.add_argument_group("model")
    model.add_argument("--from-scratch", action="store_true", help="random weights (seeded)")
    model.add_argument("--config-overrides", metavar="K=V,...",
                       help="config fields to change, e.g. n_layer=4,n_embd=256")  # fmt: skip
    model.add_argument("--framework", choices=("pt", "tf"), default="pt")
    model.add_argument("--dtype", default="float32", help="float32, or bfloat16 (mixed)")
    model.add_argument("--gradient-checkpointing", action="store_true")
    model.add_argument("--fsdp", action="store_true", help="FSDP2 under torchrun (pt)")
    _optimization_flags(p.add_argument_group("optimization"))
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", required=True)
    _int(out, "--save-steps", "checkpoint every N steps")
    _int(out, "--eval-steps", "evaluate on --validation-file every N steps")
    _int(out, "--logging-steps", "log every N steps")
    _int(out, "--save-total-limit", "keep the newest N checkpoints")
    runs = out.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    runs.add_argument("--overwrite", action="store_true", help="start over in --output-dir")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(run=run)


def _optimization_flags(group: Any) -> None:
    _int(group, "--max-steps", "optimizer steps")
    _int(group, "--batch-size", "blocks per process and micro-batch")
    _int(group, "--gradient-accumulation-steps", "micro-batches per step")
    _float(group, "--learning-rate", "peak learning rate")
    _int(group, "--warmup-steps", "linear warm-up steps")
    group.add_argument("--lr-scheduler", choices=("linear", "cosine", "constant"),
                       default=_DEFAULTS.lr_scheduler)  # fmt: skip
    _float(group, "--weight-decay", "decoupled weight decay (not on biases or LayerNorm)")
    group.add_argument("--optimizer", choices=("adamw", "sgd"), default=_DEFAULTS.optimizer)
    _float(group, "--max-grad-norm", "clip the gradient's norm (0: off)")
    _int(group, "--seed", "seeds weights, dropout and the order of the blocks")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _int(group: Any, flag: str, text: str) -> None:
    default = getattr(_DEFAULTS, _dest(flag))
    group.add_argument(flag, type=int, default=default, metavar="N",
                       help=f"{text} (default {default})")  # fmt: skip


def _float(group: Any, flag: str, text: str) -> None:
    default = getattr(_DEFAULTS, _dest(flag))
    group.add_argument(flag, type=float, default=default, metavar="X",
                       help=f"{text} (default {default:g})")  # fmt: skip


def arguments(args: argparse.Namespace) -> TrainingArguments:
    """``TrainingArguments`` from the parsed command line."""
    given = vars(args)
    return TrainingArguments(
        **{name: given[name] for name in TrainingArguments.field_names() if name in given}
    )


def run(args: argparse.Namespace) -> int:
    """Run ``gpt2-dual train``; user errors raise (``gpt2_dual.cli.main`` reports them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from gpt2_dual.train.trainer import train

    result = train(arguments(args).validate())
    summary = {
        "global_step": result.global_step, "loss": result.loss,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "eval_loss": result.eval_loss, "eval_perplexity": result.eval_perplexity,
        "output_dir": str(result.output_dir),
    }  # fmt: skip
    if result.is_main:  # torchrun's rank 0, TF_CONFIG's first task
        if args.json:
            sys.stdout.write(json.dumps(summary) + "\n")
        else:
            sys.stdout.write(
                f"step {result.global_step}: loss {result.loss:.4f}, "
                f"{result.tokens_per_second:,.0f} tokens/s; model saved to {result.output_dir}\n"
            )
    return 0
