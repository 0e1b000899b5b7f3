"""Pooling of the head models: one token per sequence, and the multiple-choice summary.

Shapes: B batch, N choices, T tokens, C ``n_embd``, F summary features.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import multiple_choice_features
from gpt2_dual.pt.layers import activation
from gpt2_dual.pt.linear import Linear

__all__ = ["SequenceSummary", "gather_tokens", "last_non_pad_token"]


def last_non_pad_token(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Index of the right-most token that is not ``pad_token_id`` in each row (0 if none).

    Args:
        input_ids: ``(B, T)``.
        pad_token_id: the padding id.

    Returns:
        ``(B,)`` int64 indices; right, left and no padding all give the last real token.
    """
    T = input_ids.shape[-1]
    index = torch.arange(T, device=input_ids.device, dtype=torch.int32)
    return (index * (input_ids != pad_token_id)).argmax(-1)


def gather_tokens(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick one token per sequence.

    Args:
        hidden: ``(..., T, C)``.
        index: ``(...)`` token index per sequence.

    Returns:
        ``(..., C)``.
    """
    index = index.to(hidden.device, torch.long)[..., None, None]
    return hidden.gather(-2, index.expand(*index.shape[:-1], hidden.shape[-1])).squeeze(-2)


class SequenceSummary(nn.Module):
    """The multiple-choice head: pool each sequence (``summary_type``), dropout, project
    (``summary``, when ``summary_use_proj``), activation, dropout.

    Pooling runs over the token axis: ``"cls_index"`` takes the token at ``cls_index``
    (default: the last), ``"last"``/``"first"`` the last/first token, ``"mean"`` their mean.
    transformers pools ``"last"``/``"first"``/``"mean"`` over axis 1, which for ``(B, N, T)``
    inputs is the choice axis; for ``(B, T)`` inputs both agree.

    Args:
        config: reads ``summary_*``, ``n_embd`` and ``summary_last_dropout`` (extra key).
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.summary_type = config.summary_type
        self.first_dropout = nn.Dropout(config.summary_first_dropout)
        self.summary: nn.Module = nn.Identity()
        if config.summary_use_proj:
            self.summary = Linear(config.n_embd, multiple_choice_features(config))
        name = config.summary_activation
        self.activation = activation(name) if name else activation("linear")
        self.last_dropout = nn.Dropout(float(config.extra.get("summary_last_dropout") or 0.0))

    def forward(self, hidden: torch.Tensor, cls_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., T, C)`` hidden states -> ``(..., F)`` summaries."""
        if self.summary_type == "last":
            pooled = hidden[..., -1, :]
        elif self.summary_type == "first":
            pooled = hidden[..., 0, :]
        elif self.summary_type == "mean":
            pooled = hidden.mean(dim=-2)
        else:
            if cls_index is None:
                last = hidden.shape[-2] - 1
                cls_index = torch.full(hidden.shape[:-2], last, device=hidden.device)
            pooled = gather_tokens(hidden, cls_index)
        x = self.activation(self.summary(self.first_dropout(pooled)))
        return self.last_dropout(x)
