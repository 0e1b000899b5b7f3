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

This module, ``base`` and the task modules (``generation``, ``classification``, ``qa``) are
neutral: they tokenize, pad, and turn logits into answers in numpy. The
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
import os
from typing import Any

from gpt2_dual.pipelines.base import Pipeline
from gpt2_dual.pipelines.classification import (
    TextClassificationPipeline,
    TokenClassificationPipeline,
)
from gpt2_dual.pipelines.generation import TextGenerationPipeline
from gpt2_dual.pipelines.qa import QuestionAnsweringPipeline
from gpt2_dual.tokenizer.base import GPT2TokenizerBase

__all__ = ["SUPPORTED_TASKS", "TASK_ALIASES", "pipeline"]

#: task -> (model class name, pipeline class).
SUPPORTED_TASKS: dict[str, tuple[str, type[Pipeline]]] = {
    "text-generation": ("GPT2LMHeadModel", TextGenerationPipeline),
    "text-classification": ("GPT2ForSequenceClassification", TextClassificationPipeline),
    "token-classification": ("GPT2ForTokenClassification", TokenClassificationPipeline),
    "question-answering": ("GPT2ForQuestionAnswering", QuestionAnsweringPipeline),
}
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
    class_name, cls = SUPPORTED_TASKS[name]
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
        from gpt2_dual.tokenizer.fast import GPT2TokenizerFast

        return GPT2TokenizerFast.from_pretrained(tokenizer)
    if not isinstance(tokenizer, GPT2TokenizerBase):
        raise TypeError(
            f"tokenizer must be a gpt2_dual GPT2Tokenizer / GPT2TokenizerFast, a folder or a "
            f"repo id; got {type(tokenizer).__name__}"
        )
    return tokenizer


