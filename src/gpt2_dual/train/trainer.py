"""``train(args)``: the loop behind ``gpt2-dual train``, the same for both frameworks.

The order of work: check every argument and the output folder (nothing is written before
that passes), load the tokenizer and the model (``TrainStep`` of the framework, which also joins
the processes that ``torchrun`` or ``TF_CONFIG`` started), tokenize the text once into the
token cache, then run optimizer steps. Each step's blocks come from ``BlockOrder`` (the seed and
the step number alone), so N processes with batch B see exactly the batches of one process with
N*B, and a resumed run sees the batches the interrupted one would have. Every
``logging_steps`` the loss, learning rate and gradient norm go to ``trainer_state.json``'s
``log_history`` and to TensorBoard; every ``eval_steps`` the validation text's loss and
perplexity; every ``save_steps`` a checkpoint (weights in transformers' layout, optimizer,
random state, trainer state) is written atomically. A loss that is not finite stops the run
with ``TrainingError`` naming the step; the checkpoints already written stay as they were.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import atomic_write_text
from gpt2_dual.config import PRESETS, GPT2Config
from gpt2_dual.errors import InvalidInputError, OutOfRangeError, TrainingError
from gpt2_dual.train.args import TrainingArguments
from gpt2_dual.train.checkpoints import (
    claim_output_dir,
    clear_run,
    latest_checkpoint,
    write_checkpoint,
)
from gpt2_dual.train.data import BlockOrder, blocks, build_token_cache, num_blocks, text_files
from gpt2_dual.train.logs import EventWriter, Progress, TrainerState
from gpt2_dual.train.schedule import learning_rate

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "train"]

#: The most validation blocks one evaluation reads (bounded cost inside training).
MAX_EVAL_BLOCKS = 256
STATE_FILE = "trainer_state.json"
ARGS_FILE = "training_args.json"


@dataclass
class TrainResult:
    """What a finished run reports.

    Attributes:
        global_step: optimizer steps taken in all (also those before a resume).
        loss: the last step's loss.
        output_dir: the folder holding the final model.
        tokens_per_second: training tokens per second over this process's run (all processes).
        eval_loss, eval_perplexity: the last evaluation, or None.
        is_main: whether this process is the job's first (the one that reports).
    """

    global_step: int
    loss: float
    output_dir: Path
    tokens_per_second: float
    eval_loss: float | None = None
    eval_perplexity: float | None = None
    is_main: bool = True


def train(args: TrainingArguments) -> TrainResult:
    """Run one training job (see the module docstring).

    Raises:
        InvalidInputError / OutOfRangeError: an argument out of range (``--block-size`` past
            ``n_positions``, fewer tokens than one block).
        FileNotFoundError: no training or validation text.
        TrainingError: an output folder that holds another run or cannot be written; a loss
            that is not finite.
    """
    args.validate()
    output_dir = Path(args.output_dir)
    train_files = _files(args.train_file, "--train-file")
    valid_files = (
        _files(args.validation_file, "--validation-file") if args.validation_file else None
    )
    config = _config(args)
    block_size = _block_size(args, config)
    tokenizer = _tokenizer(args)
    resume_from = None
    if _step_module(args.framework).process_rank() == 0:  # the others look once it has checked
        resume_from = claim_output_dir(output_dir, resume=args.resume, overwrite=args.overwrite)
        if args.resume and resume_from is None and (output_dir / STATE_FILE).exists():
            raise TrainingError(
                f"--output-dir {output_dir} holds a finished run without checkpoints; nothing to "
                "--resume from (pass --overwrite to start over)"
            )
    step = _train_step(args, config)
    try:
        return _run(args, step, tokenizer, block_size, train_files, valid_files, resume_from)
    finally:
        step.close()


def _run(args, step, tokenizer, block_size, train_files, valid_files, resume_from) -> TrainResult:
    output_dir = Path(args.output_dir)
    step.barrier()
    if args.resume and not step.is_main:
        resume_from = latest_checkpoint(output_dir)
    tokens = _tokens(step, train_files, tokenizer, args, block_size, "--train-file")
    valid = None
    if valid_files is not None:
        valid = _tokens(step, valid_files, tokenizer, args, block_size, "--validation-file")
    order = BlockOrder(num_blocks(len(tokens), block_size), args.seed)
    state = _state(args)
    if resume_from is not None:
        step.load_weights(resume_from)
        step.load_state(resume_from)
        state = TrainerState.load(resume_from / STATE_FILE)
        logger.info("resumed from %s at step %d", resume_from, state.global_step)
    elif args.overwrite and step.is_main:
        clear_run(output_dir)
    step.barrier()
    loop = _Loop(args, step, tokenizer, state, order, tokens, valid, block_size)
    return loop.run()


class _Loop:
    """The steps of one run, with logging, evaluation and checkpoints."""

    def __init__(self, args, step, tokenizer, state, order, tokens, valid, block_size) -> None:
        self.args, self.step, self.tokenizer, self.state = args, step, tokenizer, state
        self.order, self.tokens, self.valid, self.block_size = order, tokens, valid, block_size
        self.output_dir = Path(args.output_dir)
        self.tokens_per_step = (
            args.batch_size * args.gradient_accumulation_steps * step.world_size * block_size
        )
        self.events = EventWriter(self.output_dir / "runs") if step.is_main else None
        self.last_eval: dict[str, float] = {}

    def run(self) -> TrainResult:
        args, step, state = self.args, self.step, self.state
        progress = Progress(args.max_steps, initial=state.global_step, is_main=step.is_main,
                            quiet=args.quiet)  # fmt: skip
        start, first = time.perf_counter(), state.global_step
        result = None
        try:
            for number in range(state.global_step, args.max_steps):
                result = step(self._micro_batches(number))
                self._check_finite(result, number + 1)
                self._after_step(number + 1, result)
                rate = self.tokens_per_step * (number + 1 - first) / (time.perf_counter() - start)
                progress.update(number + 1, loss=result.loss, tokens_per_second=rate)
            elapsed = time.perf_counter() - start
            self._finish()
        finally:
            progress.close()
            if self.events is not None:
                self.events.close()
        steps_run = args.max_steps - first
        return TrainResult(
            global_step=state.global_step,
            loss=result.loss if result is not None else math.nan,
            output_dir=self.output_dir,
            tokens_per_second=self.tokens_per_step * steps_run / elapsed if steps_run else 0.0,
            eval_loss=self.last_eval.get("eval_loss"),
            eval_perplexity=self.last_eval.get("eval_perplexity"),
            is_main=step.is_main,
        )

    def _micro_batches(self, number: int) -> list[np.ndarray]:
        args, step = self.args, self.step
        return [
            blocks(
                self.tokens,
                self.order.micro_batch(
                    number,
                    micro,
                    batch_size=args.batch_size,
                    accumulation=args.gradient_accumulation_steps,
                    rank=step.rank,
                    world_size=step.world_size,
                ),
                self.block_size,
            )  # fmt: skip
            for micro in range(args.gradient_accumulation_steps)
        ]

    def _check_finite(self, result: Any, number: int) -> None:
        if math.isfinite(result.loss):
            return
        last = latest_checkpoint(self.output_dir)
        kept = f"{last.name} is the last good checkpoint" if last else "no checkpoint was written"
        raise TrainingError(
            f"the loss is {result.loss} at step {number}; training stopped ({kept}; try a "
            f"lower --learning-rate)"
        )

    def _after_step(self, number: int, result: Any) -> None:
        args, state = self.args, self.state
        state.global_step = number
        state.epoch = self._epoch(number)
        state.num_input_tokens_seen += self.tokens_per_step
        if number % args.logging_steps == 0 or number == args.max_steps:
            entry = {
                "epoch": state.epoch, "grad_norm": result.grad_norm,
                "learning_rate": result.learning_rate, "loss": result.loss, "step": number,
            }  # fmt: skip
            state.log_history.append(entry)
            self._scalars(number, {"train/loss": result.loss,
                                   "train/learning_rate": result.learning_rate,
                                   "train/grad_norm": result.grad_norm})  # fmt: skip
        if args.eval_steps and (number % args.eval_steps == 0 or number == args.max_steps):
            self._evaluate(number)
        if number % args.save_steps == 0:  # the last step too, as transformers' Trainer
            self._checkpoint(number)

    def _epoch(self, number: int) -> float:
        args = self.args
        return self.order.epoch(
            number, batch_size=args.batch_size, accumulation=args.gradient_accumulation_steps,
            world_size=self.step.world_size,
        )  # fmt: skip

    def _scalars(self, number: int, values: dict[str, float]) -> None:
        if self.events is not None:
            self.events.scalars(number, values)

    def _evaluate(self, number: int) -> None:
        """Loss and perplexity over the validation text's whole blocks (every process computes
        the same numbers: FSDP's forward is a collective)."""
        n = min(num_blocks(len(self.valid), self.block_size), MAX_EVAL_BLOCKS)
        total, count = 0.0, 0
        for start in range(0, n, self.args.batch_size):
            ids = blocks(self.valid, np.arange(start, min(n, start + self.args.batch_size)),
                         self.block_size)  # fmt: skip
            nll, tokens = self.step.loss_only(ids)
            total, count = total + nll, count + tokens
        loss = total / count
        self.last_eval = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700.0))}
        self.state.log_history.append({"epoch": self.state.epoch, **self.last_eval,
                                       "step": number})  # fmt: skip
        self._scalars(number, {"eval/loss": loss, "eval/perplexity": self.last_eval[
            "eval_perplexity"]})  # fmt: skip

    def _checkpoint(self, number: int) -> None:
        step, state = self.step, self.state

        def write(folder: Path) -> None:
            step.save_model(folder)
            step.save_state(folder)
            if step.is_main:
                self.tokenizer.save_pretrained(folder)
                state.save(folder / STATE_FILE)
                _write_args(self.args, folder)

        limit = self.args.save_total_limit
        write_checkpoint(self.output_dir, number, write, is_main=step.is_main,
                         barrier=step.barrier, save_total_limit=limit)  # fmt: skip

    def _finish(self) -> None:
        step = self.step
        step.save_model(self.output_dir)
        if step.is_main:
            self.tokenizer.save_pretrained(self.output_dir)
            self.state.save(self.output_dir / STATE_FILE)
            _write_args(self.args, self.output_dir)
        step.barrier()


def _write_args(args: TrainingArguments, folder: Path) -> None:
    atomic_write_text(folder / ARGS_FILE, json.dumps(args.to_dict(), indent=2, sort_keys=True))


def _state(args: TrainingArguments) -> TrainerState:
    return TrainerState(
        global_step=0, epoch=0.0, max_steps=args.max_steps, logging_steps=args.logging_steps,
        eval_steps=args.eval_steps, save_steps=args.save_steps,
        train_batch_size=args.batch_size, num_input_tokens_seen=0, total_flos=0.0,
        log_history=[],
    )  # fmt: skip


# ------------------------------------------------------------------------ what to train
def _config(args: TrainingArguments) -> GPT2Config:
    """The model's config: a preset's or a folder's/repo's, with ``--config-overrides``."""
    overrides = args.overrides()
    if args.from_scratch and args.model in PRESETS:
        return GPT2Config.from_preset(args.model, **overrides)
    return GPT2Config.from_pretrained(args.model, **overrides)


def _files(spec: str, flag: str) -> list[Path]:
    """``text_files(spec)``, its errors naming the flag."""
    try:
        return text_files(spec)
    except (FileNotFoundError, InvalidInputError) as err:
        raise type(err)(f"{flag} {err}") from None


def _block_size(args: TrainingArguments, config: GPT2Config) -> int:
    if args.block_size is None:
        return min(1024, config.n_positions)
    if args.block_size > config.n_positions:
        raise OutOfRangeError(
            f"--block-size {args.block_size} is past the model's n_positions "
            f"({config.n_positions}); use at most {config.n_positions}"
        )
    return args.block_size


def _tokenizer(args: TrainingArguments) -> Any:
    """The model folder's tokenizer; the bundled GPT-2 one for a preset or a folder without
    tokenizer files."""
    from gpt2_dual.tokenizer.fast import GPT2TokenizerFast

    if not (args.from_scratch and args.model in PRESETS):
        try:
            return GPT2TokenizerFast.from_pretrained(args.model)
        except FileNotFoundError:
            logger.warning("%s has no tokenizer files: using GPT-2's", args.model)
    return GPT2TokenizerFast.from_pretrained("gpt2")


def _tokens(step, files, tokenizer, args, block_size: int, flag: str) -> np.ndarray:
    """The token cache of ``files`` (built by the main process first, then reused by the
    others); at least one block of tokens."""
    cache_dir = args.token_cache_dir()
    if step.is_main:
        cache = build_token_cache(files, tokenizer, cache_dir)
        step.barrier()
    else:
        step.barrier()
        cache = build_token_cache(files, tokenizer, cache_dir)
    n = len(cache.tokens)
    if n < block_size:
        raise OutOfRangeError(
            f"{flag} has {n} tokens, fewer than one block of --block-size {block_size}; give "
            f"more text or a smaller --block-size"
        )
    logger.info("%s: %d tokens (%s)", flag, n, "cache reused" if cache.reused else "tokenized")
    return cache.tokens


def _step_module(framework: str) -> Any:
    """``gpt2_dual.pt.train_step`` or ``gpt2_dual.tf.train_step`` (imported here: only the
    framework asked for)."""
    if framework == "pt":
        from gpt2_dual.pt import train_step
    else:
        from gpt2_dual.tf import train_step
    return train_step


def _train_step(args: TrainingArguments, config: GPT2Config) -> Any:
    TrainStep = _step_module(args.framework).TrainStep  # noqa: N806 (a class)
    options: dict[str, Any] = {
        "optimizer": args.optimizer, "weight_decay": args.weight_decay,
        "adam_beta1": args.adam_beta1, "adam_beta2": args.adam_beta2,
        "adam_epsilon": args.adam_epsilon, "max_grad_norm": args.max_grad_norm or None,
        "dtype": args.dtype, "gradient_checkpointing": args.gradient_checkpointing,
        "seed": args.seed,
        "lr_at": partial(learning_rate, base=args.learning_rate, warmup_steps=args.warmup_steps,
                         max_steps=args.max_steps, kind=args.lr_scheduler),
    }  # fmt: skip
    if args.framework == "pt":
        options["fsdp"] = args.fsdp
    return TrainStep(_model_loader(args, config), **options)


def _model_loader(args: TrainingArguments, config: GPT2Config) -> Callable[[], Any]:
    """A function that builds the model (called by ``TrainStep`` after seeding, inside TF's
    distribution scope): random weights for ``--from-scratch``, else the checkpoint's."""

    def load() -> Any:
        if args.framework == "pt":
            from gpt2_dual.pt import GPT2LMHeadModel

            if args.from_scratch:
                return GPT2LMHeadModel(config)
            return GPT2LMHeadModel.from_pretrained(args.model, config=config, dtype=None)
        from gpt2_dual.tf import GPT2LMHeadModel

        if args.from_scratch:
            model = GPT2LMHeadModel(config)
            model.build()
            return model
        return GPT2LMHeadModel.from_pretrained(args.model, config=config)

    return load
