"""``TrainingArguments``: one training run, with transformers' names, defaults and limits.

Every field is checked by ``validate()`` before anything is loaded or written; a value out of
range raises ``InvalidInputError`` naming the command-line flag, the value and the limit. The
flags of ``gpt2-dual train`` are these fields with dashes (``--learning-rate``).

Example:
    >>> TrainingArguments(model="gpt2", train_file="a.txt", output_dir="out",
    ...                   learning_rate=-1).validate()
    Traceback (most recent call last):
    ...
    gpt2_dual.errors.InvalidInputError: --learning-rate must be > 0; got -1
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gpt2_dual.errors import InvalidInputError

__all__ = ["DTYPES", "FRAMEWORKS", "OPTIMIZERS", "TrainingArguments", "default_cache_dir"]

OPTIMIZERS = ("adamw", "sgd")
DTYPES = ("float32", "bfloat16")
FRAMEWORKS = ("pt", "tf")
#: ``--dtype`` spellings, as ``generate`` takes them, and what each means for training.
_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def default_cache_dir() -> Path:
    """Where token caches live: ``$GPT2_DUAL_CACHE`` or ``~/.cache/gpt2_dual/tokens``."""
    root = os.environ.get("GPT2_DUAL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "gpt2_dual" / "tokens"


@dataclass
class TrainingArguments:
    """One run of ``gpt2-dual train`` (transformers' ``TrainingArguments`` names and defaults).

    Attributes:
        model: a checkpoint folder or Hub repo id to fine-tune; with ``from_scratch``, a preset
            name (``gpt2``, ``gpt2-medium``, ...) or a folder whose config alone is used.
        train_file: a text file, a folder of text files or a glob.
        output_dir: where checkpoints, logs and the final model go.
        validation_file: text for the ``eval_steps`` hook (perplexity over whole blocks).
        from_scratch: random weights (seeded by ``seed``) in the shape of ``model``.
        config_overrides: ``"n_layer=4,n_embd=256"`` applied to the config, as ``run_clm``.
        max_steps: optimizer steps of the run.
        batch_size: blocks per process and micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer step.
        block_size: tokens per block; default ``min(1024, n_positions)``.
        learning_rate, warmup_steps, lr_scheduler: the schedule (linear, cosine or constant).
        weight_decay: decoupled decay on every weight but biases and LayerNorm weights.
        optimizer: ``adamw`` or ``sgd``; ``adam_beta1``/``adam_beta2``/``adam_epsilon``.
        max_grad_norm: clip the gradient's global norm; 0 turns clipping off.
        seed: seeds the weights of ``from_scratch``, dropout and the order of the blocks.
        save_steps, eval_steps, logging_steps, save_total_limit: how often to checkpoint,
            evaluate and log, and how many checkpoints to keep (None: all).
        dtype: ``float32`` or ``bfloat16`` (mixed precision: float32 weights, bf16 products).
        gradient_checkpointing: recompute each block in the backward pass.
        framework: ``pt`` or ``tf``.
        fsdp: FSDP2 (``fully_shard``) instead of DDP under ``torchrun`` (PyTorch only).
        resume: continue from the newest checkpoint in ``output_dir``.
        overwrite: start over in an ``output_dir`` that holds an earlier run.
        cache_dir: where the token cache goes (``default_cache_dir()`` when None).
        quiet: no progress bar.
    """

    model: str
    train_file: str
    output_dir: str
    validation_file: str | None = None
    from_scratch: bool = False
    config_overrides: str | None = None
    max_steps: int = 1000
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    block_size: int | None = None
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int = 500
    eval_steps: int | None = None
    logging_steps: int = 1
    save_total_limit: int | None = None
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    framework: str = "pt"
    fsdp: bool = False
    resume: bool = False
    overwrite: bool = False
    cache_dir: str | None = None
    quiet: bool = False

    def validate(self) -> TrainingArguments:
        """Check every field (see the module docstring); returns ``self``, ``dtype`` made
        canonical (``bf16`` -> ``bfloat16``).

        Raises:
            InvalidInputError: a value out of range or contradictory flags.
        """
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "save_steps",
                     "logging_steps"):  # fmt: skip
            _at_least(name, getattr(self, name), 1)
        for name in ("block_size", "eval_steps", "save_total_limit"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        _at_least("seed", self.seed, 0)
        _positive("learning_rate", self.learning_rate)
        _positive("adam_epsilon", self.adam_epsilon)
        for name in ("weight_decay", "max_grad_norm"):
            _finite(name, getattr(self, name), lower=0.0)
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise InvalidInputError(f"{_flag(name)} must be in [0, 1); got {value!r}")
        _one_of("lr_scheduler", self.lr_scheduler, ("linear", "cosine", "constant"))
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("framework", self.framework, FRAMEWORKS)
        if self.dtype not in _DTYPE_NAMES:
            raise InvalidInputError(f"--dtype must be one of float32, bfloat16; got {self.dtype!r}")
        self.dtype = _DTYPE_NAMES[self.dtype]
        self._check_flags()
        return self

    def _check_flags(self) -> None:
        if self.resume and self.overwrite:
            raise InvalidInputError(
                "--resume and --overwrite contradict each other: --resume continues the run in "
                "--output-dir, --overwrite starts it over"
            )
        if self.fsdp and self.framework != "pt":
            raise InvalidInputError("--fsdp is PyTorch's FSDP2: use --framework pt")
        if self.eval_steps is not None and self.validation_file is None:
            raise InvalidInputError("--eval-steps needs --validation-file")
        if not str(self.output_dir).strip():
            raise InvalidInputError("--output-dir must name a folder; got ''")

    def token_cache_dir(self) -> Path:
        """The token cache's folder."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def overrides(self) -> dict[str, Any]:
        """``config_overrides`` as a dict of config fields (ints, floats or strings).

        Raises:
            InvalidInputError: an item that is not ``name=value``.
        """
        out: dict[str, Any] = {}
        for item in filter(None, (self.config_overrides or "").split(",")):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise InvalidInputError(
                    f"--config-overrides takes name=value items separated by commas; got {item!r}"
                )
            out[name.strip()] = _number(value.strip())
        return out

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (``training_args.json`` in every checkpoint)."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"{_flag(name)} must be an integer >= {low}; got {value!r}")


def _positive(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InvalidInputError(f"{_flag(name)} must be > 0; got {value!r}")


def _finite(name: str, value: Any, *, lower: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= lower)
    ):
        raise InvalidInputError(f"{_flag(name)} must be a number >= {lower:g}; got {value!r}")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"{_flag(name)} must be one of {', '.join(allowed)}; got {value!r}")


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)
