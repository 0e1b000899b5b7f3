"""Losses of the GPT-2 heads: small pure functions, numerically transformers' own.

Shapes: B batch, T tokens, V vocabulary, L labels, N choices. Every loss is a mean over the
counted items and is computed in float32 whatever the logits' dtype. Written with static
shapes and masks (no boolean indexing), so they compile under XLA.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from gpt2_dual import heads

__all__ = [
    "IGNORE_INDEX",
    "causal_lm_loss",
    "multiple_choice_loss",
    "problem_type_for",
    "sequence_classification_loss",
    "span_loss",
    "token_classification_loss",
]

#: Label value that is not counted (transformers' convention).
IGNORE_INDEX = -100


def _cross_entropy(
    logits: tf.Tensor, labels: tf.Tensor, ignore_index: int = IGNORE_INDEX
) -> tf.Tensor:
    """Mean cross-entropy of ``(M, K)`` logits against ``(M,)`` ids, skipping ``ignore_index``
    (NaN when nothing is counted, as in PyTorch)."""
    labels = ops.cast(labels, "int32")
    counted = labels != ignore_index
    safe = ops.where(counted, labels, 0)
    per_item = ops.sparse_categorical_crossentropy(
        safe, ops.cast(logits, "float32"), from_logits=True
    )  # (M,)
    weight = ops.cast(counted, "float32")
    return ops.sum(per_item * weight) / ops.sum(weight)


def causal_lm_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[..., t + 1]``.

    Args:
        logits: ``(..., T, V)``.
        labels: ``(..., T)`` token ids, ``-100`` where not counted (the labels are shifted
            here: pass ``labels = input_ids``).

    Returns:
        Mean over the counted positions (NaN when none is counted, as in transformers).
    """
    labels = ops.cast(labels, "int32")
    # Shift the labels, not the logits: no copy of the (..., T, V) tensor.
    ignored = ops.full_like(labels[..., :1], IGNORE_INDEX)
    shifted = ops.concatenate([labels[..., 1:], ignored], axis=-1)
    V = ops.shape(logits)[-1]
    return _cross_entropy(ops.reshape(logits, (-1, V)), ops.reshape(shifted, (-1,)))


def problem_type_for(num_labels: int, labels: tf.Tensor) -> str:
    """transformers' rule when ``config.problem_type`` is None (``gpt2_dual.heads
    .problem_type_for``): one label -> regression; signed integer labels -> single-label
    classification; else multi-label classification."""
    return heads.problem_type_for(num_labels, _signed_integer(labels))


def _signed_integer(labels: tf.Tensor) -> bool:
    return labels.dtype.is_integer and not labels.dtype.is_unsigned


def sequence_classification_loss(
    logits: tf.Tensor, labels: tf.Tensor, problem_type: str | None
) -> tf.Tensor:
    """Loss of pooled sequence logits.

    Args:
        logits: ``(B, L)``.
        labels: ``(B,)`` class ids, ``(B,)``/``(B, L)`` floats (regression), or ``(B, L)``
            multi-hot targets.
        problem_type: ``"regression"`` (MSE), ``"single_label_classification"``
            (cross-entropy) or ``"multi_label_classification"`` (BCE with logits); None picks
            one with ``problem_type_for`` (the config is never written).

    Returns:
        The mean loss.
    """
    num_labels = logits.shape[-1]
    problem_type = heads.problem_type_for(num_labels, _signed_integer(labels), problem_type)
    logits = ops.cast(logits, "float32")
    if problem_type == "regression":
        labels = ops.cast(labels, "float32")
        if num_labels == 1:
            return ops.mean(ops.square(ops.squeeze(logits) - ops.squeeze(labels)))
        return ops.mean(ops.square(logits - labels))
    if problem_type == "single_label_classification":
        return _cross_entropy(ops.reshape(logits, (-1, num_labels)), ops.reshape(labels, (-1,)))
    targets = ops.cast(labels, "float32")
    return ops.mean(ops.binary_crossentropy(targets, logits, from_logits=True))


def token_classification_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Cross-entropy per token.

    Args:
        logits: ``(B, T, L)``.
        labels: ``(B, T)`` class ids, ``-100`` where not counted.
    """
    L = ops.shape(logits)[-1]
    return _cross_entropy(ops.reshape(logits, (-1, L)), ops.reshape(labels, (-1,)))


def span_loss(
    start_logits: tf.Tensor,
    end_logits: tf.Tensor,
    start_positions: tf.Tensor,
    end_positions: tf.Tensor,
) -> tf.Tensor:
    """Question-answering span loss: mean of the start and end cross-entropies.

    Positions are clamped to ``[0, T]``; ``T`` (a position outside the input) is not counted.

    Args:
        start_logits: ``(B, T)``.
        end_logits: ``(B, T)``.
        start_positions: ``(B,)`` (or ``(B, 1)``) token index of each answer's start.
        end_positions: ``(B,)`` (or ``(B, 1)``) token index of each answer's end.
    """
    T = ops.shape(start_logits)[-1]

    def one(logits: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        positions = ops.clip(ops.reshape(ops.cast(positions, "int32"), (-1,)), 0, T)
        return _cross_entropy(logits, positions, ignore_index=T)

    return (one(start_logits, start_positions) + one(end_logits, end_positions)) / 2


def multiple_choice_loss(mc_logits: tf.Tensor, mc_labels: tf.Tensor) -> tf.Tensor:
    """Cross-entropy over the choices.

    Args:
        mc_logits: ``(B, N)``.
        mc_labels: ``(B,)`` index of the right choice.
    """
    N = ops.shape(mc_logits)[-1]
    return _cross_entropy(ops.reshape(mc_logits, (-1, N)), ops.reshape(mc_labels, (-1,)))
