"""Validation of ``GenerationConfig`` and of one ``generate`` call, in one place for both
frameworks. Every rule raises ``ValueError`` (``TypeError`` for an unknown keyword) naming the
field, the value and the limit, before any model work."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gpt2_dual.generation.fields import (
    CACHE_IMPLEMENTATIONS,
    UNSUPPORTED,
    Resolved,
    as_id_list,
)

if TYPE_CHECKING:
    from gpt2_dual.generation.config import GenerationConfig


def _bad(name: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"GenerationConfig.{name}={value!r} is invalid: {rule}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(config: GenerationConfig, name: str, low: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        raise _bad(name, value, f"must be an integer >= {low}" + (" or None" if optional else ""))


def _real_in(config: GenerationConfig, name: str, low: float, high: float, low_open: bool) -> None:
    value = getattr(config, name)
    ok = _is_real(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = "(" if low_open else "["
        raise _bad(name, value, f"must be a number in {bound}{low}, {high}]")


def _ids(name: str, value: Any) -> tuple[int, ...]:
    ids = as_id_list(value) if not isinstance(value, str) else None
    if ids is None or not all(_is_int(i) and i >= 0 for i in ids):
        raise _bad(name, value, "must be a non-negative integer id or a list of them")
    return ids


def check_config(config: GenerationConfig) -> None:
    """Each field alone, then the combinations (see ``GenerationConfig.validate``)."""
    flags = ("do_sample", "output_scores", "output_logits", "return_dict_in_generate",
             "use_cache", "disable_compile")  # fmt: skip
    for name in flags:
        if not isinstance(getattr(config, name), bool):
            raise _bad(name, getattr(config, name), "must be True or False")
    _int_at_least(config, "max_length", 1)
    _int_at_least(config, "max_new_tokens", 1, optional=True)
    _int_at_least(config, "min_length", 0)
    _int_at_least(config, "min_new_tokens", 0, optional=True)
    _int_at_least(config, "num_beams", 1)
    _int_at_least(config, "num_return_sequences", 1)
    _int_at_least(config, "top_k", 0)
    _int_at_least(config, "no_repeat_ngram_size", 0)
    _real_in(config, "temperature", 0.0, float("inf"), low_open=True)
    _real_in(config, "top_p", 0.0, 1.0, low_open=True)
    _real_in(config, "typical_p", 0.0, 1.0, low_open=True)
    _real_in(config, "repetition_penalty", 0.0, float("inf"), low_open=True)
    if not _is_real(config.length_penalty):
        raise _bad("length_penalty", config.length_penalty, "must be a number")
    if config.early_stopping not in (True, False, "never"):
        raise _bad("early_stopping", config.early_stopping, 'must be True, False or "never"')
    if config.cache_implementation not in (None, *CACHE_IMPLEMENTATIONS):
        raise _bad(
            "cache_implementation", config.cache_implementation,
            f"must be None or one of {list(CACHE_IMPLEMENTATIONS)}",
        )  # fmt: skip
    for name in ("pad_token_id", "bos_token_id"):
        value = getattr(config, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise _bad(name, value, "must be a non-negative integer id or None")
    _ids("eos_token_id", config.eos_token_id)
    _check_bad_words(config.bad_words_ids)
    _check_stop_strings(config.stop_strings)
    _check_combinations(config)
    _check_unsupported(config.extra)


def _check_bad_words(value: Any) -> None:
    if value is None:
        return
    rule = "must be a list of non-empty lists of non-negative integer ids"
    if not isinstance(value, list | tuple) or not value:
        raise _bad("bad_words_ids", value, rule)
    for seq in value:
        if not isinstance(seq, list | tuple) or not seq:
            raise _bad("bad_words_ids", value, rule)
        if not all(_is_int(i) and i >= 0 for i in seq):
            raise _bad("bad_words_ids", value, rule)


def _check_stop_strings(value: Any) -> None:
    if value is None:
        return
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list | tuple) or not strings:
        raise _bad("stop_strings", value, "must be a string or a non-empty list of strings")
    if not all(isinstance(s, str) and s for s in strings):
        raise _bad("stop_strings", value, "must be a string or a non-empty list of strings")


def _check_combinations(config: GenerationConfig) -> None:
    beams, n = config.num_beams, config.num_return_sequences
    if n > 1 and beams == 1 and not config.do_sample:
        raise ValueError(
            f"num_return_sequences={n} needs do_sample=True or num_beams >= {n}: greedy "
            "decoding gives one sequence per prompt"
        )
    if beams > 1 and n > beams:
        raise ValueError(
            f"num_return_sequences={n} must be at most num_beams={beams}: beam search "
            "returns its best beams"
        )
    if config.max_new_tokens is not None and config.min_new_tokens is not None:
        if config.min_new_tokens > config.max_new_tokens:
            raise ValueError(
                f"min_new_tokens={config.min_new_tokens} exceeds "
                f"max_new_tokens={config.max_new_tokens}"
            )
    if config.min_length > config.max_length and config.max_new_tokens is None:
        raise ValueError(f"min_length={config.min_length} exceeds max_length={config.max_length}")


def _check_unsupported(extra: Mapping[str, Any]) -> None:
    for name, off in UNSUPPORTED.items():
        if name in extra and extra[name] != off:
            raise ValueError(
                f"GenerationConfig.{name}={extra[name]!r} is not supported by gpt2_dual's "
                f"generate; leave it at {off!r}"
            )


def resolve(
    config: GenerationConfig, prompt_length: int, n_positions: int, vocab_size: int
) -> Resolved:
    """See ``GenerationConfig.resolve``."""
    check_config(config)
    if config.max_new_tokens is not None:
        new = config.max_new_tokens
    else:
        new = config.max_length - prompt_length
        if new < 1:
            raise ValueError(
                f"max_length={config.max_length} leaves no room for new tokens after a prompt "
                f"of {prompt_length} tokens; set max_new_tokens instead"
            )
    if prompt_length + new > n_positions:
        raise ValueError(
            f"a prompt of {prompt_length} tokens plus {new} new tokens is "
            f"{prompt_length + new} positions, past the model's n_positions={n_positions}; "
            f"lower max_new_tokens to at most {max(n_positions - prompt_length, 0)}"
        )
    min_new = max(config.min_new_tokens or 0, config.min_length - prompt_length, 0)
    if min_new > new:
        raise ValueError(f"min_new_tokens={min_new} exceeds the {new} new tokens allowed")
    eos = _ids("eos_token_id", config.eos_token_id)
    pad = config.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    named = {
        "eos_token_id": eos,
        "pad_token_id": (pad,),
        "bos_token_id": as_id_list(config.bos_token_id),
        "bad_words_ids": [i for word in config.bad_words_ids or () for i in word],
    }
    for name, ids in named.items():
        for i in ids:
            if i >= vocab_size:
                raise _bad(name, i, f"ids must be below vocab_size={vocab_size}")
    sample = config.do_sample
    mode = (
        ("beam_sample" if sample else "beam")
        if config.num_beams > 1
        else ("sample" if sample else "greedy")
    )
    return Resolved(new, min_new, eos, pad, mode)
