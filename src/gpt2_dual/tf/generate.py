"""XLA decoding over the fixed-size cache: prefill once, then one compiled step per token.

Shapes: B batch, T prompt tokens, S_max cache positions, V vocabulary.

A ``StaticCache`` keeps every shape fixed from step to step: its buffers are
``(B, H, S_max, D)``, each step writes one token at the cache's length with
``dynamic_update_slice``, and attention masks the slots not written yet. So ``compile_decode``
compiles one XLA program for the first step and reuses it for every later one (no retrace:
the length is a tensor inside the cache, not a Python number). A padded batch passes its
attention mask at the full width ``(B, S_max)``, 0 for padding and 1 elsewhere (future slots
are hidden by causality), so the mask's shape is fixed too.

Full generation (sampling, stopping, bucketed prompt lengths) comes later; these are its steps.

Example:
    >>> cache = StaticCache(model.config, batch_size=1, max_length=64)  # doctest: +SKIP
    >>> logits, cache = prefill(model, prompt_ids, cache)  # doctest: +SKIP
    >>> step = compile_decode(model)  # doctest: +SKIP
    >>> token = tf.argmax(logits, -1, output_type=tf.int32)[:, None]  # doctest: +SKIP
    >>> logits, cache = step(token, cache)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from gpt2_dual.tf.cache import StaticCache

__all__ = ["compile_decode", "decode_step", "prefill"]


def prefill(
    model: Any,
    input_ids: tf.Tensor,
    cache: StaticCache,
    *,
    attention_mask: tf.Tensor | None = None,
) -> tuple[tf.Tensor, StaticCache]:
    """Run the prompt through ``model``, writing its keys and values into ``cache``.

    Args:
        model: a gpt2_dual.tf model with an LM head (``GPT2LMHeadModel``).
        input_ids: ``(B, T)`` prompt ids.
        cache: an empty (or partly filled) ``StaticCache`` of ``B`` rows.
        attention_mask: ``(B, S_max)`` (or ``(B, P + T)``), 0 for padding.

    Returns:
        The next-token logits ``(B, V)`` and the new cache.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out["logits"][:, -1, :], out["past_key_values"]


def decode_step(
    model: Any,
    token: tf.Tensor,
    cache: StaticCache,
    *,
    attention_mask: tf.Tensor | None = None,
) -> tuple[tf.Tensor, StaticCache]:
    """One token per row through ``model``, written at the cache's length.

    Args:
        model: a gpt2_dual.tf model with an LM head.
        token: ``(B, 1)`` ids of the newest token of each row.
        cache: the ``StaticCache`` from ``prefill`` or the previous step.
        attention_mask: ``(B, S_max)``, 0 for padding (fixed width: no retrace).

    Returns:
        The next-token logits ``(B, V)`` and the new cache.
    """
    return prefill(model, token, cache, attention_mask=attention_mask)


def compile_decode(model: Any) -> Callable[..., tuple[tf.Tensor, StaticCache]]:
    """``decode_step`` for ``model`` under ``tf.function(jit_compile=True)``.

    Call it as ``step(token, cache)`` or ``step(token, cache, attention_mask=mask)``; it
    compiles once per input shape and cache size.
    """

    def step(token, cache, attention_mask=None):
        return decode_step(model, token, cache, attention_mask=attention_mask)

    return tf.function(step, jit_compile=True)
