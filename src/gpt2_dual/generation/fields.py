"""The fields of ``GenerationConfig`` as data: what ``generate`` implements (with transformers'
defaults), what it refuses, and what one call resolves to. Shared by ``config`` and ``checks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CACHE_IMPLEMENTATIONS", "DEFAULTS", "UNSUPPORTED", "Resolved", "as_id_list"]

#: The fields ``generate`` implements, with transformers' defaults.
DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "stop_strings": None,
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "length_penalty": 1.0,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "use_cache": True,
    "cache_implementation": None,
    "disable_compile": False,
}

#: transformers decoding options that ``generate`` does not implement, with the value that
#: means "off". A config holding another value is refused rather than silently ignored.
UNSUPPORTED: dict[str, Any] = {
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "min_p": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "force_words_ids": None,
    "constraints": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "guidance_scale": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "watermarking_config": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "dola_layers": None,
    "max_time": None,
    "low_memory": None,
    "output_attentions": False,
    "output_hidden_states": False,
}

CACHE_IMPLEMENTATIONS = ("dynamic", "static")


@dataclass(frozen=True)
class Resolved:
    """What one ``generate`` call will do, fixed before any model work.

    Attributes:
        max_new_tokens: tokens to generate per row at most.
        min_new_tokens: new tokens before an end-of-sequence token is allowed.
        eos_token_ids: ids that end a row (may be empty).
        pad_token_id: the id written after a row ended.
        mode: ``"greedy"``, ``"sample"``, ``"beam"`` or ``"beam_sample"``.
    """

    max_new_tokens: int
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    mode: str


def as_id_list(value: int | Sequence[int] | None) -> tuple[int, ...]:
    """``eos_token_id`` as a tuple of ints (None: empty)."""
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(value)
