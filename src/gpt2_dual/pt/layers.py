"""Activations by name, the MLP and the transformer block.

Shapes: B batch, T tokens, C ``n_embd``, I ``inner_dim`` (``n_inner`` or 4C).

Every activation name maps to the formula ``gpt2_dual.heads.ACTIVATION_FORMULAS`` gives it
(transformers' ``ACT2FN``); ``_OPS`` holds PyTorch's op for each formula. The tanh-approximated
GELU (``gelu_new``, GPT-2's own, and ``gelu_fast``, ``gelu_accurate``, ``gelu_python_tanh``,
``gelu_pytorch_tanh``) runs PyTorch's fused ``gelu(approximate="tanh")``: one kernel instead of
transformers' eight elementwise ops, equal to its formula within float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from gpt2_dual.heads import (
    ACTIVATION_FORMULAS,
    GELU_10_CLIP,
    LAPLACE_MU,
    LAPLACE_SIGMA,
    LEAKY_RELU_SLOPE,
    QUICK_GELU_SCALE,
    activation_formula,
)
from gpt2_dual.pt.attention import Attention, AttentionMask
from gpt2_dual.pt.cache import DynamicCache, StaticCache
from gpt2_dual.pt.linear import Conv1D

__all__ = ["ACTIVATIONS", "MLP", "Block", "activation"]

Activation = Callable[[torch.Tensor], torch.Tensor]


def _gelu_10(x: torch.Tensor) -> torch.Tensor:
    return torch.clip(F.gelu(x), -GELU_10_CLIP, GELU_10_CLIP)


def _laplace(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf((x - LAPLACE_MU).div(LAPLACE_SIGMA * math.sqrt(2.0))))


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(QUICK_GELU_SCALE * x)


def _relu2(x: torch.Tensor) -> torch.Tensor:
    return torch.square(F.relu(x))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: PyTorch's op for each formula of ``gpt2_dual.heads.FORMULAS``.
_OPS: dict[str, Activation] = {
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "gelu_10": _gelu_10,
    "laplace": _laplace,
    "leaky_relu": partial(F.leaky_relu, negative_slope=LEAKY_RELU_SLOPE),
    "identity": _identity,
    "mish": F.mish,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "relu2": _relu2,
    "relu6": F.relu6,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "tanh": torch.tanh,
}

#: Activation function by config name (transformers' ACT2FN names, parameter-free ones).
ACTIVATIONS: dict[str, Activation] = {
    name: _OPS[formula] for name, formula in ACTIVATION_FORMULAS.items()
}


def activation(name: str) -> Activation:
    """The activation function called ``name``.

    Raises:
        InvalidInputError: unknown name (a ``ValueError``); the message lists the known ones.
    """
    return _OPS[activation_formula(name)]


class MLP(nn.Module):
    """``c_fc`` (C -> I), activation, ``c_proj`` (I -> C), dropout.

    Args:
        n_embd: ``C``.
        inner_dim: ``I``.
        activation_function: a name of ``ACTIVATIONS``.
        resid_pdrop: dropout on the output.
    """

    def __init__(
        self, n_embd: int, inner_dim: int, *, activation_function: str, resid_pdrop: float = 0.0
    ) -> None:
        super().__init__()
        self.c_fc = Conv1D(n_embd, inner_dim)
        self.act = activation(activation_function)
        self.c_proj = Conv1D(inner_dim, n_embd)
        self.dropout = nn.Dropout(resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C) -> (B, T, C)``."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention, optional cross-attention, MLP, each added to
    the residual stream.

    Args:
        n_embd: ``C``.
        n_head: heads.
        inner_dim: MLP width.
        layer_idx: block index.
        layer_norm_epsilon: LayerNorm epsilon.
        activation_function: MLP activation name.
        add_cross_attention: add ``crossattention`` and ``ln_cross_attn``.
        resid_pdrop: dropout on each branch's output.
        **attention: keyword options of ``Attention`` (dropout, scaling, backend).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        inner_dim: int,
        *,
        layer_idx: int,
        layer_norm_epsilon: float,
        activation_function: str,
        add_cross_attention: bool = False,
        resid_pdrop: float = 0.0,
        **attention,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=layer_norm_epsilon)
        self.attn = Attention(
            n_embd, n_head, layer_idx=layer_idx, resid_pdrop=resid_pdrop, **attention
        )
        if add_cross_attention:
            self.crossattention = Attention(
                n_embd, n_head, layer_idx=layer_idx, resid_pdrop=resid_pdrop,
                is_cross_attention=True, **attention,
            )  # fmt: skip
            self.ln_cross_attn = nn.LayerNorm(n_embd, eps=layer_norm_epsilon)
        self.ln_2 = nn.LayerNorm(n_embd, eps=layer_norm_epsilon)
        self.mlp = MLP(
            n_embd, inner_dim, activation_function=activation_function, resid_pdrop=resid_pdrop
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: AttentionMask,
        *,
        cache: DynamicCache | StaticCache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_mask: AttentionMask | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One block.

        Args:
            x: ``(B, T, C)`` residual stream.
            mask: self-attention ``AttentionMask``.
            cache: KV cache to read and extend.
            encoder_hidden_states: ``(B, S_enc, C)``; cross-attention runs when given.
            encoder_mask: cross-attention ``AttentionMask``.
            output_attentions: also return attention probabilities.

        Returns:
            ``(B, T, C)``, self-attention probabilities, cross-attention probabilities (or
            None each).
        """
        a, weights = self.attn(self.ln_1(x), mask, cache=cache, output_attentions=output_attentions)
        x = x + a
        cross = None
        if encoder_hidden_states is not None:
            a, cross = self.crossattention(
                self.ln_cross_attn(x),
                encoder_mask if encoder_mask is not None else AttentionMask(),
                encoder_hidden_states=encoder_hidden_states,
                output_attentions=output_attentions,
            )
            x = x + a
        return x + self.mlp(self.ln_2(x)), weights, cross
