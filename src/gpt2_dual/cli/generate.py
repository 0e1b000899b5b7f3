"""``gpt2-dual generate``: continue prompts with a GPT-2 checkpoint, streamed to the terminal.

``gpt2-dual generate MODEL PROMPT``: the model comes first, as ``convert``, ``check`` and
``inspect`` take it (``--model MODEL`` works too; then the one argument is the prompt), and
options may stand anywhere. Prompts come from the command line, from standard input (``-``:
one prompt per line), or from an ``--interactive`` loop. Each continuation is printed after its
prompt as the tokens arrive (``TextStreamer``), or at the end with ``--no-stream``; both print
the same text. Decoding is greedy unless ``--sample``. Errors a user can fix (no such model
folder, an option out of range) print one line to stderr and exit with status 2
(``gpt2_dual.cli``); naming the model twice or not at all is a usage error (status 2 too).

The framework is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

from gpt2_dual.cli.loading import add_loading_flags, loading_options
from gpt2_dual.generation.streamers import TextStreamer

DEFAULT_MAX_NEW_TOKENS = 50
#: How continuations are decoded, streamed or not (so both print the same text).
_DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
#: The forms of the command; options may stand anywhere.
USAGE = """%(prog)s MODEL PROMPT [options]
       %(prog)s MODEL - [options] < prompts.txt     (one prompt per line)
       %(prog)s MODEL --interactive [options]
       %(prog)s --model MODEL PROMPT [options]"""


def add_parser(sub: Any) -> None:
    """Add the ``generate`` subcommand to the ``gpt2-dual`` subparsers."""
    gen = sub.add_parser(
        "generate",
        help="continue a prompt with a GPT-2 checkpoint, streamed to the terminal",
        usage=USAGE,
        description="Continue prompts with a GPT-2 checkpoint (greedy unless --sample), e.g. "
        "gpt2-dual generate ./my-gpt2 --max-new-tokens 20 'Once upon a time'",
    )
    gen.add_argument("model_arg", nargs="?", metavar="MODEL",
                     help="checkpoint folder or Hub repo id")  # fmt: skip
    gen.add_argument(
        "prompt", nargs="?", metavar="PROMPT",
        help="the prompt, or - to read prompts from stdin (one per line)",
    )  # fmt: skip
    gen.add_argument(
        "--model", metavar="MODEL", help="the model as an option; then the argument is the prompt"
    )
    gen.add_argument(
        "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
        help=f"tokens to generate at most (default {DEFAULT_MAX_NEW_TOKENS})",
    )  # fmt: skip
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    gen.add_argument("--top-k", type=int, metavar="K", help="sample from the K likeliest tokens")
    gen.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass")
    gen.add_argument("--seed", type=int, metavar="S", help="random seed for sampling")
    gen.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search width")
    add_loading_flags(gen)
    gen.add_argument(
        "--no-stream", action="store_true", help="print each continuation when it is complete"
    )
    gen.add_argument(
        "--interactive", action="store_true",
        help="read prompts from stdin in a loop; an empty line or EOF ends it",
    )  # fmt: skip
    gen.set_defaults(run=run, usage_error=gen.error)


class _Streamer(TextStreamer):
    """Prints the prompt as typed once generation starts (after the options were checked),
    then the continuation as it arrives."""

    def __init__(self, tokenizer: Any, prompt: str) -> None:
        super().__init__(tokenizer, skip_prompt=True, **_DECODE)
        self.prompt = prompt

    def put(self, value: Any) -> None:
        if self.next_tokens_are_prompt:
            self.on_finalized_text(self.prompt)
        super().put(value)


def _generate_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``generate`` options of the command line; ValueError for contradictory ones."""
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    given = [f"--{k.replace('_', '-')}" for k, v in sampling.items() if v is not None]
    if given and not args.sample:
        raise ValueError(f"{', '.join(given)}: sampling options; add --sample")
    kwargs: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "do_sample": args.sample,
    }
    kwargs.update({k: v for k, v in sampling.items() if v is not None})
    if args.seed is not None:
        kwargs["seed"] = args.seed
    return kwargs


def _model_and_prompt(args: argparse.Namespace) -> tuple[str, str | None]:
    """The model and the prompt, from ``MODEL [PROMPT]`` or ``--model MODEL [PROMPT]``; a usage
    error (exit status 2) when the model is named twice or not at all."""
    words = [w for w in (args.model_arg, args.prompt) if w is not None]
    if args.model is None:
        if not words:
            args.usage_error("give the model: gpt2-dual generate MODEL PROMPT (a checkpoint "
                             "folder or Hub repo id)")  # fmt: skip
        return words[0], words[1] if len(words) > 1 else None
    if len(words) > 1:
        args.usage_error(f"the model is named twice, --model {args.model!r} and {words[0]!r}; "
                         "name it once: gpt2-dual generate MODEL PROMPT")  # fmt: skip
    return args.model, words[0] if words else None


def _prompts(args: argparse.Namespace) -> Iterator[str]:
    """The prompts: the argument, stdin's lines, or an interactive loop."""
    if args.interactive:
        while True:
            if sys.stdin.isatty():
                sys.stderr.write("> ")
                sys.stderr.flush()
            line = sys.stdin.readline()
            if not line.strip():
                return
            yield line.rstrip("\r\n")
    elif args.prompt == "-":
        for line in sys.stdin:
            if line.strip():
                yield line.rstrip("\r\n")
    else:
        yield args.prompt


def run(args: argparse.Namespace) -> int:
    """Run ``gpt2-dual generate``; user errors raise (``gpt2_dual.cli.main`` reports them)."""
    args.model, args.prompt = _model_and_prompt(args)
    if args.prompt is None and not args.interactive:
        raise ValueError(
            f"give a prompt after the model {args.model!r}, - to read prompts from stdin, or "
            "--interactive"
        )
    if args.prompt is not None and args.interactive:
        raise ValueError("--interactive reads the prompts from stdin; give no prompt")
    for name in ("max_new_tokens", "num_beams"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    kwargs = _generate_kwargs(args)
    load = loading_options(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines: not here
    from gpt2_dual.pipelines.factory import pipeline

    pipe = pipeline(
        "text-generation",
        model=args.model,
        **load,
    )
    stream = not args.no_stream and args.num_beams == 1
    for prompt in _prompts(args):
        if stream:
            pipe(prompt, streamer=_Streamer(pipe.tokenizer, prompt), **kwargs)
        else:
            (out,) = pipe(prompt, **_DECODE, **kwargs)
            sys.stdout.write(out["generated_text"] + "\n")
            sys.stdout.flush()
    return 0
