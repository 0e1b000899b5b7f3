"""``pipeline(task, model=...)``: transformers' pipelines for the GPT-2 heads, in both frameworks.

Four tasks, with transformers' call forms, options and output structures:

========================  ===============================  ========================================
task (alias)              model class                      ``pipe(...)`` returns
========================  ===============================  ========================================
"text-generation"         ``GPT2LMHeadModel``              ``[{"generated_text": str}]`` per prompt
"text-classification"     ``GPT2ForSequenceClassification``  ``[{"label": str, "score": float}]``
("sentiment-analysis")
"token-classification"    ``GPT2ForTokenClassification``   per text, a list of ``{"entity", "score",
("ner")                                                    "index", "word", "start", "end"}``
"question-answering"      ``GPT2ForQuestionAnswering``     ``{"score", "start", "end", "answer"}``
========================  ===============================  ========================================

This module and the task modules (``pipelines_generation``, ``pipelines_classification``,
``pipelines_qa``) are neutral: they tokenize, pad, and turn logits into answers in numpy. The
framework work (loading, placing, one forward pass, ``generate``) is in ``gpt2_dual.pt.pipelines``
and ``gpt2_dual.tf.pipelines``, two small modules with the same functions, imported when a
pipeline is built.

Differences from transformers, on purpose: scores are Python floats (transformers gives numpy
float32 for token classification); token classification supports ``aggregation_strategy="none"``
only; text pairs and chat inputs are refused; windows and truncation never exceed the model's
``n_positions``.

Example:
    >>> from gpt2_dual import pipeline
    >>> pipe = pipeline("text-generation", model="path/to/checkpoint")  # doctest: +SKIP
    >>> pipe("Hello, I'm a language model,", max_new_tokens=5, do_sample=False)  # doctest: +SKIP
    [{'generated_text': "Hello, I'm a language model, and I'm not"}]
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gpt2_dual.tokenizer import GPT2TokenizerBase
from gpt2_dual.tokenizer_vocab import token_bytes

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_TASKS", "TASK_ALIASES", "Pipeline", "pipeline"]

#: task -> (model class name, module of the pipeline class, pipeline class name).
SUPPORTED_TASKS: dict[str, tuple[str, str, str]] = {
    "text-generation": (
        "GPT2LMHeadModel", "gpt2_dual.pipelines_generation", "TextGenerationPipeline"
    ),
    "text-classification": (
        "GPT2ForSequenceClassification",
        "gpt2_dual.pipelines_classification",
        "TextClassificationPipeline",
    ),
    "token-classification": (
        "GPT2ForTokenClassification",
        "gpt2_dual.pipelines_classification",
        "TokenClassificationPipeline",
    ),
    "question-answering": (
        "GPT2ForQuestionAnswering", "gpt2_dual.pipelines_qa", "QuestionAnsweringPipeline"
    ),
}  # fmt: skip
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
FRAMEWORKS = ("pt", "tf")


def pipeline(
    task: str,
    model: Any = None,
    tokenizer: Any = None,
    framework: str | None = None,
    dtype: Any = None,
    device: Any = None,
    *,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Pipeline:
    """Build the pipeline of ``task`` around a GPT-2 model and tokenizer.

    Args:
        task: "text-generation", "text-classification" ("sentiment-analysis"),
            "token-classification" ("ner") or "question-answering".
        model: a checkpoint folder or Hub repo id (loaded with the task's model class'
            ``from_pretrained``), or a gpt2_dual.pt / gpt2_dual.tf model of that class.
        tokenizer: a gpt2_dual tokenizer, or a folder / repo id to load ``GPT2TokenizerFast``
            from; None loads it from ``model`` when ``model`` is a folder or repo id.
        framework: "pt" or "tf"; default: a model object's own framework, else "pt" when torch
            is installed, else "tf".
        dtype: pt: a torch dtype or its name ("float16", "bfloat16", "float32", "auto");
            tf: a Keras dtype policy name ("bfloat16", "mixed_bfloat16", "auto", ...), only
            when the pipeline loads the model.
        device: pt: an int (-1: CPU, k: ``cuda:k``), "cpu", "cuda", "cuda:0" or a
            ``torch.device``; tf: the same ints and strings ("gpu:0" too), run under
            ``tf.device``. Default: CPU for pt, TensorFlow's placement for tf.
        model_kwargs: more ``from_pretrained`` keywords (``revision``, ``attn_implementation``,
            ``num_labels``, ...).
        **kwargs: ``batch_size`` and the task's call options, used as defaults for each call
            (``max_new_tokens=20``, ``top_k=None``, ...).

    Returns:
        The task's ``Pipeline``; call it on text(s).

    Raises:
        KeyError: unknown task (the message lists the tasks).
        ValueError: no model, a model of another head, a bad framework, dtype or device.
        TypeError: a model or tokenizer that is not a gpt2_dual one.
        FileNotFoundError: the folder has no checkpoint or no tokenizer files.

    Example:
        >>> clf = pipeline("sentiment-analysis", model="my-gpt2-classifier")  # doctest: +SKIP
        >>> clf("What a lovely day")  # doctest: +SKIP
        [{'label': 'POSITIVE', 'score': 0.98}]
    """
    name = TASK_ALIASES.get(task, task)
    if name not in SUPPORTED_TASKS:
        known = sorted([*SUPPORTED_TASKS, *TASK_ALIASES])
        raise KeyError(f"unknown task {task!r}; available tasks: {known}")
    class_name, module_name, pipeline_name = SUPPORTED_TASKS[name]
    if model is None:
        raise ValueError(
            f"pipeline({task!r}) needs model=: a checkpoint folder, a Hub repo id or a "
            f"gpt2_dual {class_name}"
        )
    loading = isinstance(model, str | os.PathLike)
    if framework is None:
        framework = _default_framework(None if loading else model)
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be 'pt' or 'tf', got {framework!r}")
    backend = importlib.import_module(f"gpt2_dual.{framework}.pipelines")
    if loading:
        source = model
        model = backend.load(class_name, source, dtype=dtype, device=device, **(model_kwargs or {}))
        if tokenizer is None:
            tokenizer = source
    else:
        _check_model(model, class_name, framework)
        model = backend.place(model, dtype=dtype, device=device)
        if tokenizer is None:
            raise ValueError(
                "pass tokenizer= (a gpt2_dual tokenizer or the folder holding its files) "
                "with a model object; it is loaded from model= only for folders and repo ids"
            )
    tokenizer = _tokenizer(tokenizer)
    cls = getattr(importlib.import_module(module_name), pipeline_name)
    return cls(model, tokenizer, framework=framework, backend=backend, device=device, **kwargs)


def _default_framework(model: Any) -> str:
    if model is not None:
        module = type(model).__module__
        for framework in FRAMEWORKS:
            if module.startswith(f"gpt2_dual.{framework}."):
                return framework
        raise TypeError(
            f"model must be a gpt2_dual.pt or gpt2_dual.tf model, a folder or a repo id; got "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    return "pt" if importlib.util.find_spec("torch") is not None else "tf"


def _check_model(model: Any, class_name: str, framework: str) -> None:
    if _default_framework(model) != framework:
        raise ValueError(f"framework={framework!r} does not match the model's {type(model)}")
    if type(model).__name__ != class_name:
        raise ValueError(f"this task needs a {class_name}, got a {type(model).__name__}")


def _tokenizer(tokenizer: Any) -> GPT2TokenizerBase:
    if isinstance(tokenizer, str | os.PathLike):
        from gpt2_dual.tokenizer_fast import GPT2TokenizerFast

        return GPT2TokenizerFast.from_pretrained(tokenizer)
    if not isinstance(tokenizer, GPT2TokenizerBase):
        raise TypeError(
            f"tokenizer must be a gpt2_dual GPT2Tokenizer / GPT2TokenizerFast, a folder or a "
            f"repo id; got {type(tokenizer).__name__}"
        )
    return tokenizer


class Pipeline:
    """What the four task pipelines share: the model, tokenizer, backend and default options.

    Attributes:
        task: the task name.
        model: the gpt2_dual model.
        tokenizer: the gpt2_dual tokenizer.
        framework: "pt" or "tf".
    """

    task = ""
    #: options a call accepts besides ``batch_size`` (task-specific; checked by ``_options``).
    options: tuple[str, ...] = ()

    def __init__(
        self,
        model: Any,
        tokenizer: GPT2TokenizerBase,
        *,
        framework: str,
        backend: Any,
        device: Any = None,
        batch_size: int | None = None,
        **defaults: Any,
    ) -> None:
        self.model, self.tokenizer, self.framework = model, tokenizer, framework
        self._backend = backend
        self._scope = backend.device_scope(device)
        self._defaults = {"batch_size": batch_size or 1, **defaults}
        self._options(self._defaults)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Call options over the pipeline's defaults; TypeError for unknown ones."""
        params = {**self._defaults, **kwargs}
        unknown = sorted(set(params) - {"batch_size", *self.options})
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {unknown}; it takes "
                f"{sorted({'batch_size', *self.options})}"
            )
        size = params["batch_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"batch_size must be a positive int, got {size!r}")
        return params

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """One forward pass: ``(B, T)`` int64 ids and mask in; float32 numpy outputs
        (``logits``, ``start_logits``, ``end_logits``) out."""
        with self._scope():
            return self._backend.forward(self.model, input_ids, attention_mask)

    @property
    def max_positions(self) -> int:
        """Longest input: the model's ``n_positions`` and the tokenizer's ``model_max_length``."""
        return min(self.model.config.n_positions, self.tokenizer.model_max_length)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, framework={self.framework!r}, "
            f"model={type(self.model).__name__})"
        )


# ----- neutral helpers the tasks share ----------------------------------------------------------


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive chunks of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids padded to one length on ``side``: ``(B, T)`` int64 ids and mask."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols], mask[i, cols] = row, 1
    return ids, mask


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float64-safe shift by the max)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def encode_with_offsets(
    tokenizer: GPT2TokenizerBase,
    text: str,
    limit: int | None = None,
    add_special_tokens: bool = True,
) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Ids, character offsets and special-tokens mask of ``text``, as transformers' fast
    tokenizers give them (the BOS the tokenizer adds is special and has offsets (0, 0); tokens
    written in the text, ``<|endoftext|>`` included, are not).

    The fast tokenizer reports offsets itself; for the pure-Python one they come from the
    tokens' bytes (``offsets_from_bytes``), with the same results.

    Args:
        tokenizer: a gpt2_dual tokenizer.
        text: the text.
        limit: keep at most this many tokens (BOS included), cut on the right.
        add_special_tokens: add the tokenizer's BOS when it has ``add_bos_token``.

    Returns:
        ``(ids, offsets, special)``: lists of one entry per token.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    except NotImplementedError:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        offsets = offsets_from_bytes(tokenizer, text, ids)
    special = [0] * len(ids)
    if add_special_tokens and tokenizer.add_bos_token and tokenizer.bos_token_id is not None:
        ids, offsets, special = [tokenizer.bos_token_id, *ids], [(0, 0), *offsets], [1, *special]
    if limit is not None:
        ids, offsets, special = ids[:limit], offsets[:limit], special[:limit]
    return ids, offsets, special


def offsets_from_bytes(
    tokenizer: GPT2TokenizerBase, text: str, ids: Sequence[int]
) -> list[tuple[int, int]]:
    """Character span of each token of ``text`` (encoded without special tokens), from the
    tokens' bytes: a token covers the characters its bytes touch, so the tokens of one
    multi-byte character share its span. A space the tokenizer added (``add_prefix_space``)
    and whitespace an added token strips are not part of any span.

    Raises:
        ValueError: the tokens do not spell ``text`` (ids from another text or tokenizer).
    """
    data = text.encode("utf-8")
    char_of = np.repeat(np.arange(len(text) + 1), [*(len(c.encode()) for c in text), 1])
    added = {i: t.content.encode("utf-8") for i, t in tokenizer.added_tokens_decoder.items()}
    pos, out = 0, []
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        piece = added.get(token_id) or token_bytes(token)
        start = pos
        while (
            start < len(data)
            and data[start : start + 1].isspace()
            and not data.startswith(piece, start)
        ):
            start += 1  # whitespace stripped by an added token
        if data.startswith(piece, start):
            pos = start + len(piece)
        elif piece.startswith(b" ") and data.startswith(piece[1:], pos):
            start, pos = pos, pos + len(piece) - 1  # the space add_prefix_space put in front
        else:
            raise ValueError(f"token {token!r} at byte {pos} does not match the text {text!r}")
        end = int(char_of[pos - 1]) + 1 if pos > start else int(char_of[start])
        out.append((int(char_of[start]), end))
    return out


def word_ids(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Index of the pre-tokenizer word (GPT-2's regex split of ``text``) holding each token,
    found from the token's start offset: the words of transformers' fast GPT-2 tokenizer."""
    import regex

    from gpt2_dual.tokenizer_bpe import PATTERN

    starts = [m.start() for m in regex.finditer(PATTERN, text)] or [0]
    return [max(bisect_right(starts, start) - 1, 0) for start, _ in offsets]
