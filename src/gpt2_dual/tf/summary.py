"""Pooling of the head models: one token per sequence, and the multiple-choice summary.

Shapes: B batch, N choices, T tokens, C ``n_embd``, F summary features.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import multiple_choice_features
from gpt2_dual.tf.attention import dense
from gpt2_dual.tf.layers import activation

__all__ = ["SequenceSummary", "gather_tokens", "last_non_pad_token"]


def last_non_pad_token(input_ids: tf.Tensor, pad_token_id: int) -> tf.Tensor:
    """Index of the right-most token that is not ``pad_token_id`` in each row (0 if none).

    Args:
        input_ids: ``(B, T)``.
        pad_token_id: the padding id.

    Returns:
        ``(B,)`` int32 indices; right, left and no padding all give the last real token.
    """
    T = ops.shape(input_ids)[-1]
    index = ops.arange(T, dtype="int32")
    return ops.cast(ops.argmax(index * ops.cast(input_ids != pad_token_id, "int32"), -1), "int32")


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


@keras.saving.register_keras_serializable(package="gpt2_dual")
class SequenceSummary(keras.layers.Layer):
    """The multiple-choice head: pool each sequence (``summary_type``), dropout, project
    (``summary``, when ``summary_use_proj``), activation, dropout.

    Pooling runs over the token axis: ``"cls_index"`` takes the token at ``cls_index``
    (default: the last), ``"last"``/``"first"`` the last/first token, ``"mean"`` their mean.
    transformers pools ``"last"``/``"first"``/``"mean"`` over axis 1, which for ``(B, N, T)``
    inputs is the choice axis; for ``(B, T)`` inputs both agree.

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
        if self.summary_type == "last":
            pooled = hidden[..., -1, :]
        elif self.summary_type == "first":
            pooled = hidden[..., 0, :]
        elif self.summary_type == "mean":
            pooled = ops.mean(hidden, axis=-2)
        else:
            if cls_index is None:
                T = ops.shape(hidden)[-2]
                cls_index = ops.full(ops.shape(hidden)[:-2], T - 1, dtype="int32")
            pooled = gather_tokens(hidden, cls_index)
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
