"""Keras 3 GPT-2 models on the TensorFlow backend, with transformers' names and numbers.

Importing this package imports keras and tensorflow, and fails with a clear ``ImportError``
when Keras runs another backend (Keras picks its backend once, at import: set
``KERAS_BACKEND=tensorflow`` first). The six models mirror ``gpt2_dual.pt`` class for class,
share ``GPT2PreTrainedModel`` (``get_config``/``from_config``, ``from_pretrained``,
``save_pretrained``, the model's own loss in ``fit``) and return ``ModelOutputDict``: a dict of
the set fields, readable as ``out["logits"]`` and as ``out.logits``.

Example:
    >>> from gpt2_dual import GPT2Config
    >>> from gpt2_dual.tf import GPT2LMHeadModel
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4))
    >>> model({"input_ids": [[15496, 995]]}).logits.shape
    TensorShape([1, 2, 50257])
"""

from __future__ import annotations

import keras

if keras.config.backend() != "tensorflow":
    raise ImportError(
        f"gpt2_dual.tf needs Keras on the TensorFlow backend, but Keras runs the "
        f"{keras.config.backend()!r} backend; set KERAS_BACKEND=tensorflow before keras is "
        "first imported (or use gpt2_dual.pt)"
    )

from gpt2_dual.config import GPT2Config  # noqa: E402
from gpt2_dual.heads import HEAD_SPECS  # noqa: E402
from gpt2_dual.tf.cache import DynamicCache, StaticCache  # noqa: E402
from gpt2_dual.tf.heads import (  # noqa: E402
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)
from gpt2_dual.tf.int8 import QuantizedModelError  # noqa: E402
from gpt2_dual.tf.model import GPT2Model, GPT2PreTrainedModel  # noqa: E402
from gpt2_dual.tf.outputs import ModelOutputDict  # noqa: E402
from gpt2_dual.tf.preprocessing import GPT2CausalLMPreprocessor, GPT2Preprocessor  # noqa: E402

__all__ = [
    "MODEL_CLASSES",
    "DynamicCache",
    "GPT2CausalLMPreprocessor",
    "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2LMHeadModel",
    "GPT2Model",
    "GPT2PreTrainedModel",
    "GPT2Preprocessor",
    "ModelOutputDict",
    "QuantizedModelError",
    "StaticCache",
    "build",
]

#: Model class by head name (keys of ``gpt2_dual.heads.HEAD_SPECS``).
MODEL_CLASSES: dict[str, type[GPT2PreTrainedModel]] = {
    name: globals()[spec.class_name] for name, spec in HEAD_SPECS.items()
}


def build(head: str, config: GPT2Config, **kwargs) -> GPT2PreTrainedModel:
    """A new, randomly initialized model of ``head`` (a key of ``HEAD_SPECS``).

    Args:
        head: the head name.
        config: the model's config.
        **kwargs: Keras model keywords (``name``, ``dtype``).

    Raises:
        KeyError: unknown head; the message lists the known ones.
    """
    if head not in MODEL_CLASSES:
        raise KeyError(f"unknown head {head!r}; choose one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[head](config, **kwargs)
