"""Activations by name, the MLP and the transformer block, as Keras layers.

Shapes: B batch, T tokens, C ``n_embd``, I ``inner_dim`` (``n_inner`` or 4C).

Every activation name maps to the formula ``gpt2_dual.heads.ACTIVATION_FORMULAS`` gives it
(transformers' ``ACT2FN``); ``_OPS`` holds Keras' op for each formula. The tanh-approximated
GELU (``gelu_new``, GPT-2's own, and ``gelu_fast``, ``gelu_accurate``, ``gelu_python_tanh``,
``gelu_pytorch_tanh``) runs ``gelu(approximate=True)``, transformers' ``gelu_new`` formula, equal
to the others within float32 rounding. ``leaky_relu`` uses PyTorch's slope 0.01 (Keras' default
is 0.2).

Layers take explicit sizes, so ``get_config`` lists a few scalars. LayerNorms get the config's
``layer_norm_epsilon`` explicitly (Keras' default is 1e-3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.heads import (
    ACTIVATION_FORMULAS,
    GELU_10_CLIP,
    LAPLACE_MU,
    LAPLACE_SIGMA,
    LEAKY_RELU_SLOPE,
    QUICK_GELU_SCALE,
    activation_formula,
)
from gpt2_dual.tf.attention import Attention, AttentionMask, dense
from gpt2_dual.tf.cache import DynamicCache, StaticCache

__all__ = ["ACTIVATIONS", "MLP", "Block", "activation"]

Activation = Callable[[tf.Tensor], tf.Tensor]


def _gelu(x: tf.Tensor) -> tf.Tensor:
    return ops.gelu(x, approximate=False)


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    return ops.gelu(x, approximate=True)


def _gelu_10(x: tf.Tensor) -> tf.Tensor:
    return ops.clip(_gelu(x), -GELU_10_CLIP, GELU_10_CLIP)


def _laplace(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * (1.0 + ops.erf((x - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))))


def _leaky_relu(x: tf.Tensor) -> tf.Tensor:
    return ops.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)


def _mish(x: tf.Tensor) -> tf.Tensor:
    return x * ops.tanh(ops.softplus(x))


def _quick_gelu(x: tf.Tensor) -> tf.Tensor:
    return x * ops.sigmoid(QUICK_GELU_SCALE * x)


def _relu2(x: tf.Tensor) -> tf.Tensor:
    return ops.square(ops.relu(x))


def _identity(x: tf.Tensor) -> tf.Tensor:
    return x


#: Keras' op for each formula of ``gpt2_dual.heads.FORMULAS``.
_OPS: dict[str, Activation] = {
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "gelu_10": _gelu_10,
    "laplace": _laplace,
    "leaky_relu": _leaky_relu,
    "identity": _identity,
    "mish": _mish,
    "quick_gelu": _quick_gelu,
    "relu": ops.relu,
    "relu2": _relu2,
    "relu6": ops.relu6,
    "sigmoid": ops.sigmoid,
    "silu": ops.silu,
    "tanh": ops.tanh,
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


@keras.saving.register_keras_serializable(package="gpt2_dual")
class MLP(keras.layers.Layer):
    """``c_fc`` (C -> I), activation, ``c_proj`` (I -> C), dropout.

    Args:
        n_embd: ``C``.
        inner_dim: ``I``.
        activation_function: a name of ``ACTIVATIONS``.
        resid_pdrop: dropout on the output.
        initializer_range: std of the normal initializer of ``c_fc``.
        proj_initializer_range: std for ``c_proj`` (None: ``initializer_range``).
        **kwargs: Keras layer keywords (``name``, ``dtype``).
    """

    def __init__(
        self,
        n_embd: int,
        inner_dim: int,
        *,
        activation_function: str,
        resid_pdrop: float = 0.0,
        initializer_range: float = 0.02,
        proj_initializer_range: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._args = dict(
            n_embd=n_embd, inner_dim=inner_dim, activation_function=activation_function,
            resid_pdrop=resid_pdrop, initializer_range=initializer_range,
            proj_initializer_range=proj_initializer_range,
        )  # fmt: skip
        self.n_embd, self.inner_dim = n_embd, inner_dim
        proj_std = initializer_range if proj_initializer_range is None else proj_initializer_range
        self.c_fc = dense(inner_dim, initializer_range, self, name="c_fc")
        self.act = activation(activation_function)
        self.c_proj = dense(n_embd, proj_std, self, name="c_proj")
        self.dropout = keras.layers.Dropout(resid_pdrop, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        self.c_fc.build((None, None, self.n_embd))
        self.c_proj.build((None, None, self.inner_dim))

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, T, C) -> (B, T, C)``."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))), training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._args}


@keras.saving.register_keras_serializable(package="gpt2_dual")
class Block(keras.layers.Layer):
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
        attn_pdrop: dropout on attention probabilities.
        scale_attn_weights: scale scores by 1/sqrt(D).
        scale_by_inverse_layer_idx: also scale scores by 1/(layer_idx + 1).
        reorder_and_upcast: compute q @ k^T and softmax in float32.
        initializer_range: std of the normal initializer of the input projections.
        proj_initializer_range: std for the output projections (``c_proj``).
        **kwargs: Keras layer keywords (``name``, ``dtype``).
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
        attn_pdrop: float = 0.0,
        scale_attn_weights: bool = True,
        scale_by_inverse_layer_idx: bool = False,
        reorder_and_upcast: bool = False,
        initializer_range: float = 0.02,
        proj_initializer_range: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._convert_input_args = False  # the cache must arrive as is: see Attention
        self._args = dict(
            n_embd=n_embd, n_head=n_head, inner_dim=inner_dim, layer_idx=layer_idx,
            layer_norm_epsilon=layer_norm_epsilon, activation_function=activation_function,
            add_cross_attention=add_cross_attention, resid_pdrop=resid_pdrop,
            attn_pdrop=attn_pdrop, scale_attn_weights=scale_attn_weights,
            scale_by_inverse_layer_idx=scale_by_inverse_layer_idx,
            reorder_and_upcast=reorder_and_upcast, initializer_range=initializer_range,
            proj_initializer_range=proj_initializer_range,
        )  # fmt: skip
        self.n_embd = n_embd
        attention = dict(
            layer_idx=layer_idx, attn_pdrop=attn_pdrop, resid_pdrop=resid_pdrop,
            scale_attn_weights=scale_attn_weights,
            scale_by_inverse_layer_idx=scale_by_inverse_layer_idx,
            reorder_and_upcast=reorder_and_upcast, initializer_range=initializer_range,
            proj_initializer_range=proj_initializer_range, dtype=self.dtype_policy,
        )  # fmt: skip
        self.ln_1 = layer_norm(layer_norm_epsilon, self, "ln_1")
        self.attn = Attention(n_embd, n_head, name="attn", **attention)
        self.add_cross_attention = add_cross_attention
        if add_cross_attention:
            self.crossattention = Attention(
                n_embd, n_head, is_cross_attention=True, name="crossattention", **attention
            )
            self.ln_cross_attn = layer_norm(layer_norm_epsilon, self, "ln_cross_attn")
        self.ln_2 = layer_norm(layer_norm_epsilon, self, "ln_2")
        self.mlp = MLP(
            n_embd, inner_dim, activation_function=activation_function, resid_pdrop=resid_pdrop,
            initializer_range=initializer_range, proj_initializer_range=proj_initializer_range,
            dtype=self.dtype_policy, name="mlp",
        )  # fmt: skip

    def build(self, input_shape: Any = None) -> None:
        shape = (None, None, self.n_embd)
        layers = [self.ln_1, self.attn, self.ln_2, self.mlp]
        if self.add_cross_attention:
            layers += [self.crossattention, self.ln_cross_attn]
        for layer in layers:
            layer.build(shape)

    def call(
        self,
        x: tf.Tensor,
        attn_mask: AttentionMask,
        *,
        cache: DynamicCache | StaticCache | None = None,
        encoder_hidden_states: tf.Tensor | None = None,
        encoder_mask: AttentionMask | None = None,
        output_attentions: bool = False,
        training: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
        """One block.

        Args:
            x: ``(B, T, C)`` residual stream.
            attn_mask: self-attention ``AttentionMask``.
            cache: KV cache to read and extend.
            encoder_hidden_states: ``(B, S_enc, C)``; cross-attention runs when given.
            encoder_mask: cross-attention ``AttentionMask``.
            output_attentions: also return attention probabilities.
            training: apply dropout.

        Returns:
            ``(B, T, C)``, self-attention probabilities, cross-attention probabilities (or
            None each).
        """
        a, weights = self.attn(
            self.ln_1(x), attn_mask, cache=cache, output_attentions=output_attentions,
            training=training,
        )  # fmt: skip
        x = x + a
        cross = None
        if encoder_hidden_states is not None:
            a, cross = self.crossattention(
                self.ln_cross_attn(x),
                encoder_mask if encoder_mask is not None else AttentionMask(),
                encoder_hidden_states=encoder_hidden_states,
                output_attentions=output_attentions,
                training=training,
            )
            x = x + a
        return x + self.mlp(self.ln_2(x), training=training), weights, cross

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._args}


def layer_norm(
    epsilon: float, parent: keras.layers.Layer, name: str
) -> keras.layers.LayerNormalization:
    """A LayerNorm over the last axis with an explicit epsilon and the parent's dtype policy."""
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype=parent.dtype_policy, name=name)
