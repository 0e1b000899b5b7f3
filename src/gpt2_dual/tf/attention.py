"""GPT-2 attention: one layer, one attention function, one masking rule.

Shapes: B batch, T new (query) tokens, S key positions (cached + new, or the static cache's
``S_max``, or the encoder's length for cross-attention), C ``n_embd``, H heads, D ``C // H``.

``Attention`` projects once (``c_attn``: ``(B, T, C) -> (B, T, 3C)``, a single fused matmul),
splits the result into q, k, v ``(B, H, T, D)``, stores k and v in the cache, runs ``attend``
and projects out with ``c_proj``. Cross-attention (``is_cross_attention``) takes q from
``q_attn`` and k, v from ``c_attn`` (``C -> 2C``) of the encoder states; its keys are
recomputed on every call (they are not cached).

One backend: the explicit math (scores, mask, float32 softmax, weighted sum) in ``keras.ops``.
Under ``tf.function(jit_compile=True)`` XLA fuses it; TensorFlow has no fused attention kernel
on CPU to call instead (Keras' ``dot_product_attention`` runs the same math on this backend).
A whole causal sequence (``T == S``, no cache before it) runs in blocks of ``ROW_BLOCK`` query
rows that skip the keys after their last row, all of them masked anyway (see ``attend``).

Masking rule (the same as ``gpt2_dual.pt``): one boolean mask, True where a query may attend a
key: the key is not in the future (``key_pos <= query_pos``) and is a real token
(``attention_mask``). A query that would see no key at all (a padding query at the start of a
left-padded row) sees itself instead, so no row is fully masked; every other row, padding
queries of right-padded rows included, is exactly transformers' mask. Masked scores become
``finfo(dtype).min`` (never a -1e4 constant). Softmax runs in float32 under float16/bfloat16
(mixed precision).

All scale options of the config apply: ``scale_attn_weights`` (1/sqrt(D)),
``scale_attn_by_inverse_layer_idx`` (1/(layer_idx + 1)) and ``reorder_and_upcast_attn`` (q @ k^T
in float32). transformers' TensorFlow GPT-2 never implemented the last two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.tf.cache import DynamicCache, StaticCache

__all__ = ["Attention", "AttentionMask", "attend", "causal_mask"]


class AttentionMask(NamedTuple):
    """Masking facts for one forward, built once by the model and shared by every layer.

    Attributes:
        dense: ``(B | 1, 1, T, S)`` bool, True = may attend; None means plain causal attention
            with ``T == S``, or a single query that sees every key.
    """

    dense: tf.Tensor | None = None


def causal_mask(
    key_ok: tf.Tensor | None, query_pos: tf.Tensor, key_length: int | tf.Tensor
) -> AttentionMask:
    """The masking rule for self-attention.

    Args:
        key_ok: ``(B, S')`` bool, real tokens among the first ``S' <= S`` key slots (slots past
            ``S'`` are counted real: they are future slots, excluded by causality); None when
            nothing is padded.
        query_pos: ``(T,)`` int32, cache slot (= sequence position) of each new token.
        key_length: ``S``.

    Returns:
        The ``AttentionMask``.
    """
    key_pos = ops.arange(key_length, dtype="int32")
    mask = key_pos[None, :] <= query_pos[:, None]  # (T, S), causal
    if key_ok is None:
        return AttentionMask(mask[None, None])  # (1, 1, T, S)
    missing = key_length - ops.shape(key_ok)[-1]
    if not isinstance(missing, int) or missing > 0:  # future slots of a static cache
        key_ok = ops.concatenate([key_ok, ops.ones((ops.shape(key_ok)[0], missing), "bool")], -1)
    # (B, 1, T, S): causal and real; a query that sees nothing sees itself
    mask = mask[None, None] & key_ok[:, None, None, :]
    itself = key_pos[None, :] == query_pos[:, None]  # (T, S)
    return AttentionMask(mask | (itself & ~ops.any(mask, axis=-1, keepdims=True)))


#: Query rows per block of causal self-attention over a full sequence (see ``attend``).
ROW_BLOCK = 128


def attend(
    q: tf.Tensor,
    k: tf.Tensor,
    v: tf.Tensor,
    mask: AttentionMask,
    *,
    causal: bool = True,
    scale: float | None = None,
    dropout: Callable[[tf.Tensor], tf.Tensor] | None = None,
    upcast: bool = False,
    need_weights: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Scaled dot-product attention.

    Causal self-attention over a whole sequence (``T == S``, static, at least two
    ``ROW_BLOCK``s, no dropout, no returned weights) runs in blocks of ``ROW_BLOCK`` query
    rows, each against the keys up to its last row only: the keys after it are masked for
    every query of the block (causality), so skipping them changes nothing but the work, which
    drops to ``(n + 1) / 2n`` of the full ``T x S`` scores for ``n`` blocks.

    Args:
        q: ``(B, H, T, D)`` queries.
        k: ``(B, H, S, D)`` keys.
        v: ``(B, H, S, D)`` values.
        mask: the ``AttentionMask`` (see ``causal_mask``); ``AttentionMask()`` for none.
        causal: self-attention (True) or cross-attention (False, no causal rule).
        scale: factor on q @ k^T (None: 1/sqrt(D)).
        dropout: applied to the attention probabilities (a Keras ``Dropout`` while training).
        upcast: compute q @ k^T and softmax in float32 (``reorder_and_upcast_attn``).
        need_weights: also return the probabilities.

    Returns:
        ``(B, T, H * D)`` outputs, and ``(B, H, T, S)`` probabilities or None.
    """
    B, H, T, D = ops.shape(q)
    S = ops.shape(k)[2]
    scale = D**-0.5 if scale is None else scale
    if upcast:  # transformers' _upcast_and_reordered_attn: float32 scores
        q, k = ops.cast(q, "float32"), ops.cast(k, "float32")
    dense = mask.dense
    if dense is None and causal and not (isinstance(T, int) and T == 1):
        # plain causal, T == S: query t sees keys 0..t (bottom-right aligned when S > T)
        dense = ops.arange(S)[None, :] <= ops.arange(T)[:, None] + (S - T)
    whole = causal and isinstance(T, int) and isinstance(S, int) and T == S
    if whole and T >= 2 * ROW_BLOCK and dropout is None and not need_weights:
        # T == S: query t is key slot t (no cache before it), so keys past a block's last row
        # are masked for the whole block
        y = ops.concatenate(
            [
                _attend(
                    q[:, :, start : start + ROW_BLOCK],
                    k[:, :, : start + ROW_BLOCK],
                    v[:, :, : start + ROW_BLOCK],
                    dense[..., start : start + ROW_BLOCK, : start + ROW_BLOCK],
                    scale,
                )[0]
                for start in range(0, T, ROW_BLOCK)
            ],
            axis=2,
        )
        probs = None
    else:
        y, probs = _attend(q, k, v, dense, scale, dropout, need_weights)
    y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, H * D))
    return y, probs


def _attend(
    q: tf.Tensor,
    k: tf.Tensor,
    v: tf.Tensor,
    dense: tf.Tensor | None,
    scale: float,
    dropout: Callable[[tf.Tensor], tf.Tensor] | None = None,
    need_weights: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """``attend``'s math on ``(B, H, T, D)`` heads: ``(B, H, T, D)`` outputs, probabilities."""
    scores = ops.einsum("bhtd,bhsd->bhts", q, k)  # (B, H, T, S); no transposed copy of k
    if scale != 1.0:
        scores = scores * ops.cast(scale, scores.dtype)
    if dense is not None:
        scores = ops.where(dense, scores, tf.as_dtype(scores.dtype).min)
    # tf.nn.softmax: keras.ops.softmax warns on a one-key axis (one token, no cache)
    probs = ops.cast(tf.nn.softmax(ops.cast(scores, "float32"), axis=-1), v.dtype)
    if dropout is not None:
        probs = dropout(probs)
    return ops.matmul(probs, v), (probs if need_weights else None)


@keras.saving.register_keras_serializable(package="gpt2_dual")
class Attention(keras.layers.Layer):
    """Multi-head self-attention (or cross-attention) of one GPT-2 block.

    Args:
        n_embd: model width ``C``.
        n_head: heads ``H``; ``C`` must be divisible by it.
        layer_idx: block index (cache slot, and ``scale_by_inverse_layer_idx``).
        attn_pdrop: dropout on attention probabilities.
        resid_pdrop: dropout on the output projection.
        scale_attn_weights: scale scores by 1/sqrt(D).
        scale_by_inverse_layer_idx: also scale scores by 1/(layer_idx + 1).
        reorder_and_upcast: compute q @ k^T and softmax in float32.
        is_cross_attention: attend to encoder states (adds ``q_attn``; ``c_attn`` is C -> 2C).
        initializer_range: std of the normal initializer of ``c_attn`` and ``q_attn``.
        proj_initializer_range: std for ``c_proj`` (None: ``initializer_range``).
        **kwargs: Keras layer keywords (``name``, ``dtype``).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        layer_idx: int = 0,
        attn_pdrop: float = 0.0,
        resid_pdrop: float = 0.0,
        scale_attn_weights: bool = True,
        scale_by_inverse_layer_idx: bool = False,
        reorder_and_upcast: bool = False,
        is_cross_attention: bool = False,
        initializer_range: float = 0.02,
        proj_initializer_range: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Keras would rebuild every nested argument (the cache too) before ``call``; the cache
        # must arrive as the model's own object, which ``update`` extends for the model to
        # return. Inputs are tensors of the right dtype already (the model converted them).
        self._convert_input_args = False
        self._args = dict(
            n_embd=n_embd, n_head=n_head, layer_idx=layer_idx, attn_pdrop=attn_pdrop,
            resid_pdrop=resid_pdrop, scale_attn_weights=scale_attn_weights,
            scale_by_inverse_layer_idx=scale_by_inverse_layer_idx,
            reorder_and_upcast=reorder_and_upcast, is_cross_attention=is_cross_attention,
            initializer_range=initializer_range, proj_initializer_range=proj_initializer_range,
        )  # fmt: skip
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.layer_idx, self.is_cross_attention = layer_idx, is_cross_attention
        self.reorder_and_upcast = reorder_and_upcast
        self.scale = (self.head_dim**-0.5 if scale_attn_weights else 1.0) / (
            layer_idx + 1 if scale_by_inverse_layer_idx else 1
        )
        proj_std = initializer_range if proj_initializer_range is None else proj_initializer_range
        width = (2 if is_cross_attention else 3) * n_embd
        self.c_attn = dense(width, initializer_range, self, name="c_attn")
        if is_cross_attention:
            self.q_attn = dense(n_embd, initializer_range, self, name="q_attn")
        self.c_proj = dense(n_embd, proj_std, self, name="c_proj")
        self.attn_dropout = keras.layers.Dropout(attn_pdrop, dtype=self.dtype_policy)
        self.resid_dropout = keras.layers.Dropout(resid_pdrop, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        for layer in (self.c_attn, getattr(self, "q_attn", None), self.c_proj):
            if layer is not None:
                layer.build((None, None, self.n_embd))

    def call(
        self,
        x: tf.Tensor,
        attn_mask: AttentionMask,
        *,
        cache: DynamicCache | StaticCache | None = None,
        encoder_hidden_states: tf.Tensor | None = None,
        output_attentions: bool = False,
        training: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Attend and project.

        Args:
            x: ``(B, T, C)`` normalised hidden states.
            attn_mask: the forward's ``AttentionMask`` (the encoder's, for cross-attention);
                not called ``mask``, which Keras reserves for its own masking.
            cache: self-attention cache to read and extend.
            encoder_hidden_states: ``(B, S, C)``, required for cross-attention.
            output_attentions: also return the ``(B, H, T, S)`` probabilities.
            training: apply dropout.

        Returns:
            ``(B, T, C)`` output and the probabilities or None.
        """
        B, T = ops.shape(x)[0], ops.shape(x)[1]
        H, D = self.n_head, self.head_dim
        if self.is_cross_attention:
            q = ops.transpose(ops.reshape(self.q_attn(x), (B, T, H, D)), (0, 2, 1, 3))
            S = ops.shape(encoder_hidden_states)[1]
            # (B, S, 2C) -> (2, B, H, S, D)
            kv = ops.reshape(self.c_attn(encoder_hidden_states), (B, S, 2, H, D))
            k, v = ops.unstack(ops.transpose(kv, (2, 0, 3, 1, 4)), 2, axis=0)
        else:
            qkv = ops.reshape(self.c_attn(x), (B, T, 3, H, D))
            q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v)  # (B, H, S, D)
        y, weights = attend(
            q, k, v, attn_mask,
            causal=not self.is_cross_attention,
            scale=self.scale,
            dropout=(lambda p: self.attn_dropout(p, training=True)) if training else None,
            upcast=self.reorder_and_upcast,
            need_weights=output_attentions,
        )  # fmt: skip
        return self.resid_dropout(self.c_proj(y), training=training), weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._args}


def dense(
    units: int, std: float, parent: keras.layers.Layer, *, name: str, bias: bool = True
) -> keras.layers.Dense:
    """A ``Dense`` layer with a N(0, std) kernel, zero bias and the parent's dtype policy."""
    return keras.layers.Dense(
        units,
        use_bias=bias,
        kernel_initializer=keras.initializers.RandomNormal(stddev=std),
        dtype=parent.dtype_policy,
        name=name,
    )
