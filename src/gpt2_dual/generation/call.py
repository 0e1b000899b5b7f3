"""One ``generate`` call, checked and merged before any model work, for both frameworks:
``generate``'s keywords over the model's ``GenerationConfig`` (``merge``), the prompt
(``check_prompt``), and both at once (``prepare_call``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpt2_dual.generation.config import GenerationConfig
from gpt2_dual.generation.fields import DEFAULTS, Resolved

__all__ = ["check_prompt", "merge", "prepare_call"]


def merge(
    default: GenerationConfig, generation_config: GenerationConfig | None, kwargs: Mapping[str, Any]
) -> GenerationConfig:
    """The config of one call: ``generation_config`` (else the model's), with ``kwargs`` on top.

    Raises:
        TypeError: a keyword that is neither a config field nor a ``generate`` argument.
    """
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise TypeError(
            "generation_config must be a gpt2_dual GenerationConfig, got "
            f"{type(generation_config).__name__}"
        )
    base = generation_config if generation_config is not None else default
    unknown = sorted(k for k in kwargs if k not in DEFAULTS)
    if unknown:
        raise TypeError(
            f"generate() got unknown keyword(s) {unknown}; generation options are the fields "
            "of gpt2_dual.GenerationConfig"
        )
    return base.copy(**kwargs)


def _as_array(value: Any, name: str) -> Any:
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor, array or nested list of ints: {err}") from None
    if array.dtype == bool:
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[0] == 0:
        raise ValueError(
            f"{name} must be (batch, tokens) with at least one token; got {array.shape}"
        )
    return array.astype(np.int64)


def check_prompt(input_ids: Any, attention_mask: Any, vocab_size: int) -> tuple[Any, Any]:
    """Validate a prompt for ``generate`` (any framework's tensors, numpy or lists).

    Returns:
        ``input_ids`` ``(B, T)`` int64 numpy and ``attention_mask`` ``(B, T)`` int64 numpy or
        None (no mask, or a mask without padding). A 1-D prompt is one row.

    Raises:
        ValueError: ids outside ``[0, vocab_size)``, a mask of another shape, mask values other
            than 0/1, a row without real tokens, or right padding (generation continues at the
            end of each row: pad on the left, ``tokenizer.padding_side = "left"``).
        TypeError: non-integer ids.
    """
    if input_ids is None:
        raise ValueError("generate needs input_ids (B, T): the prompt")
    ids = _as_array(input_ids, "input_ids")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"input_ids holds token id {bad}, outside [0, vocab_size={vocab_size})")
    if attention_mask is None:
        return ids, None
    mask = _as_array(attention_mask, "attention_mask")
    if mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask has shape {mask.shape}; expected {ids.shape}, the shape of input_ids"
        )
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    if (mask.sum(1) == 0).any():
        raise ValueError("attention_mask has a row without real tokens (all 0)")
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError(
            "attention_mask has padding after real tokens (right padding); generation continues "
            'at the end of each row, so pad on the left: tokenizer.padding_side = "left"'
        )
    return ids, (None if mask.all() else mask)


def prepare_call(
    model_config: Any,
    default: GenerationConfig,
    generation_config: GenerationConfig | None,
    kwargs: Mapping[str, Any],
    input_ids: Any,
    attention_mask: Any,
    *,
    streamer: Any,
    tokenizer: Any,
) -> tuple[GenerationConfig, Any, Any, Resolved, Any]:
    """Everything both frameworks' ``generate`` checks before any model work.

    Returns:
        The call's config, the prompt ``(B, T)`` and mask (numpy, see ``check_prompt``), the
        resolved lengths and ids, and a ``StopStrings`` (None without ``stop_strings``).

    Raises:
        TypeError, ValueError: see ``merge``, ``check_prompt`` and ``GenerationConfig.resolve``;
            also a streamer with more than one row or with beam search.
    """
    from gpt2_dual.generation.stopping import StopStrings

    config = merge(default, generation_config, kwargs)
    ids, mask = check_prompt(input_ids, attention_mask, model_config.vocab_size)
    resolved = config.resolve(
        prompt_length=ids.shape[1],
        n_positions=model_config.n_positions,
        vocab_size=model_config.vocab_size,
    )
    rows = ids.shape[0] * config.num_return_sequences
    if streamer is not None and (rows != 1 or config.num_beams > 1):
        raise ValueError(
            "a streamer needs one prompt, num_return_sequences=1 and num_beams=1; got "
            f"{ids.shape[0]} prompt(s), {config.num_return_sequences}, {config.num_beams}"
        )
    stop = StopStrings(tokenizer, config.stop_strings) if config.stop_strings else None
    return config, ids, mask, resolved, stop
