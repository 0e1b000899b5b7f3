"""Pooling of the head models: one token per sequence, and the multiple-choice summary.

Shapes: B batch, N choices, T tokens, C ``n_embd``, F summary features.

The rules are ``gpt2_dual.heads``' (``last_non_pad_index``, ``pool_sequence``,
``summarize_tokens``); ``OPS`` gives them Keras' operations.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import last_non_pad_index, multiple_choice_features, summarize_tokens
from gpt2_dual.tf.attention import dense
from gpt2_dual.tf.layers import activation

__all__ = ["OPS", "SequenceSummary", "gather_tokens", "last_non_pad_token"]


def gather_tokens(hidden: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """Pick one token per sequence.

    Args:
        hidden: ``(..., T, C)``.
        index: ``(...)`` token index per sequence.

    Returns:
        ``(..., C)``.
    """
    index = ops.cast(index, "int32")[..., None, None]  # (..., 1, 1), broadcast over C
    return ops.squeeze(ops.take_along_axis(hidden, index, axis=-2), -2)


class _KerasOps:
    """``gpt2_dual.heads.ArrayOps`` in Keras (shapes may be unknown while tracing)."""

    @staticmethod
    def positions(input_ids: tf.Tensor) -> tf.Tensor:
        return ops.arange(ops.shape(input_ids)[-1], dtype="int32")

    @staticmethod
    def not_equal(input_ids: tf.Tensor, value: int) -> tf.Tensor:
        return ops.cast(input_ids != value, "int32")

    @staticmethod
    def argmax(values: tf.Tensor) -> tf.Tensor:
        return ops.cast(ops.argmax(values, -1), "int32")

    @staticmethod
    def mean_tokens(hidden: tf.Tensor) -> tf.Tensor:
        return ops.mean(hidden, axis=-2)

    @staticmethod
    def last_positions(hidden: tf.Tensor) -> tf.Tensor:
        shape = ops.shape(hidden)
        return ops.full(shape[:-2], shape[-2] - 1, dtype="int32")

    gather_tokens = staticmethod(gather_tokens)


#: The pooling rules' operations (``gpt2_dual.heads.ArrayOps``) on TensorFlow tensors.
OPS = _KerasOps()


def last_non_pad_token(input_ids: tf.Tensor, pad_token_id: int) -> tf.Tensor:
    """Index of the right-most token that is not ``pad_token_id`` in each row (0 if none).

    Args:
        input_ids: ``(B, T)``.
        pad_token_id: the padding id.

    Returns:
        ``(B,)`` int32 indices; right, left and no padding all give the last real token.
    """
    return last_non_pad_index(OPS, input_ids, pad_token_id)


@keras.saving.register_keras_serializable(package="gpt2_dual")
class SequenceSummary(keras.layers.Layer):
    """The multiple-choice head: pool each sequence (``summary_type``), dropout, project
    (``summary``, when ``summary_use_proj``), activation, dropout.

    Pooling runs over the token axis (``gpt2_dual.heads.summarize_tokens``):
    ``"cls_index"`` takes the token at ``cls_index`` (default: the last), ``"last"``/``"first"``
    the last/first token, ``"mean"`` their mean.

    Args:
        config: reads ``summary_*``, ``n_embd`` and ``summary_last_dropout`` (extra key).
        **kwargs: Keras layer keywords (``name``, ``dtype``).
    """

    def __init__(self, config: GPT2Config, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.n_embd, self.summary_type = config.n_embd, config.summary_type
        policy = self.dtype_policy
        self.first_dropout = keras.layers.Dropout(config.summary_first_dropout, dtype=policy)
        self.summary = None
        if config.summary_use_proj:
            features = multiple_choice_features(config)
            self.summary = dense(features, config.initializer_range, self, name="summary")
        self.activation = activation(config.summary_activation or "linear")
        last = float(config.extra.get("summary_last_dropout") or 0.0)
        self.last_dropout = keras.layers.Dropout(last, dtype=policy)

    def build(self, input_shape: Any = None) -> None:
        if self.summary is not None:
            self.summary.build((None, self.n_embd))

    def call(
        self, hidden: tf.Tensor, cls_index: tf.Tensor | None = None, training: bool = False
    ) -> tf.Tensor:
        """``(..., T, C)`` hidden states -> ``(..., F)`` summaries."""
        pooled = summarize_tokens(OPS, self.summary_type, hidden, cls_index)
        x = self.first_dropout(pooled, training=training)
        if self.summary is not None:
            x = self.summary(x)
        return self.last_dropout(self.activation(x), training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SequenceSummary:
        config = dict(config)
        return cls(GPT2Config.from_dict(config.pop("config")), **config)
