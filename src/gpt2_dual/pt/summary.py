"""Pooling of the head models: one token per sequence, and the multiple-choice summary.

Shapes: B batch, N choices, T tokens, C ``n_embd``, F summary features.

The rules are ``gpt2_dual.heads``' (``last_non_pad_index``, ``pool_sequence``,
``summarize_tokens``); ``OPS`` gives them PyTorch's operations.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import last_non_pad_index, multiple_choice_features, summarize_tokens
from gpt2_dual.pt.layers import activation
from gpt2_dual.pt.linear import Linear

__all__ = ["OPS", "SequenceSummary", "gather_tokens", "last_non_pad_token"]


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


class _TorchOps:
    """``gpt2_dual.heads.ArrayOps`` in PyTorch."""

    @staticmethod
    def positions(input_ids: torch.Tensor) -> torch.Tensor:
        return torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)

    @staticmethod
    def not_equal(input_ids: torch.Tensor, value: int) -> torch.Tensor:
        return (input_ids != value).to(torch.int32)

    @staticmethod
    def argmax(values: torch.Tensor) -> torch.Tensor:
        return values.argmax(-1)

    @staticmethod
    def mean_tokens(hidden: torch.Tensor) -> torch.Tensor:
        return hidden.mean(dim=-2)

    @staticmethod
    def last_positions(hidden: torch.Tensor) -> torch.Tensor:
        return torch.full(hidden.shape[:-2], hidden.shape[-2] - 1, device=hidden.device)

    gather_tokens = staticmethod(gather_tokens)


#: The pooling rules' operations (``gpt2_dual.heads.ArrayOps``) on torch tensors.
OPS = _TorchOps()


def last_non_pad_token(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Index of the right-most token that is not ``pad_token_id`` in each row (0 if none).

    Args:
        input_ids: ``(B, T)``.
        pad_token_id: the padding id.

    Returns:
        ``(B,)`` int64 indices; right, left and no padding all give the last real token.
    """
    return last_non_pad_index(OPS, input_ids, pad_token_id)


class SequenceSummary(nn.Module):
    """The multiple-choice head: pool each sequence (``summary_type``), dropout, project
    (``summary``, when ``summary_use_proj``), activation, dropout.

    Pooling runs over the token axis (``gpt2_dual.heads.summarize_tokens``):
    ``"cls_index"`` takes the token at ``cls_index`` (default: the last), ``"last"``/``"first"``
    the last/first token, ``"mean"`` their mean.

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
        pooled = summarize_tokens(OPS, self.summary_type, hidden, cls_index)
        x = self.activation(self.summary(self.first_dropout(pooled)))
        return self.last_dropout(x)
