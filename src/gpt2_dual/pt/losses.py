"""Losses of the GPT-2 heads: small pure functions, numerically transformers' own.

Shapes: B batch, T tokens, V vocabulary, L labels, N choices. Every loss is a mean over the
counted items and is computed in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[..., t + 1]``.

    Args:
        logits: ``(..., T, V)``.
        labels: ``(..., T)`` token ids, ``-100`` where not counted (the labels are shifted
            here: pass ``labels = input_ids``).

    Returns:
        Mean over the counted positions (NaN when none is counted, as in transformers).
    """
    # Shift the labels, not the logits: no copy of the (..., T, V) tensor.
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        shifted.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
    )


def problem_type_for(num_labels: int, labels: torch.Tensor) -> str:
    """transformers' rule when ``config.problem_type`` is None (``gpt2_dual.heads
    .problem_type_for``): one label -> regression; signed integer labels -> single-label
    classification; else multi-label classification."""
    return heads.problem_type_for(num_labels, _signed_integer(labels))


def _signed_integer(labels: torch.Tensor) -> bool:
    dtype = labels.dtype
    return dtype.is_signed and not (dtype.is_floating_point or dtype.is_complex)


def sequence_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None
) -> torch.Tensor:
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
    labels = labels.to(logits.device)
    problem_type = heads.problem_type_for(num_labels, _signed_integer(labels), problem_type)
    logits = logits.float()
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1).long())
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per token.

    Args:
        logits: ``(B, T, L)``.
        labels: ``(B, T)`` class ids, ``-100`` where not counted.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device)
    )


def span_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """Question-answering span loss: mean of the start and end cross-entropies.

    Positions are clamped to ``[0, T]``; ``T`` (a position outside the input) is not counted.

    Args:
        start_logits: ``(B, T)``.
        end_logits: ``(B, T)``.
        start_positions: ``(B,)`` (or ``(B, 1)``) token index of each answer's start.
        end_positions: ``(B,)`` (or ``(B, 1)``) token index of each answer's end.
    """
    T = start_logits.shape[-1]

    def one(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        positions = positions.reshape(-1).to(logits.device).clamp(0, T)
        return F.cross_entropy(logits.float(), positions, ignore_index=T)

    return (one(start_logits, start_positions) + one(end_logits, end_positions)) / 2


def multiple_choice_loss(mc_logits: torch.Tensor, mc_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the choices.

    Args:
        mc_logits: ``(B, N)``.
        mc_labels: ``(B,)`` index of the right choice.
    """
    logits = mc_logits.float().reshape(-1, mc_logits.shape[-1])
    return F.cross_entropy(logits, mc_labels.reshape(-1).to(logits.device))
