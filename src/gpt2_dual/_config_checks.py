"""Field validators of ``GPT2Config``: each returns the (normalised) value or raises ValueError
(``InvalidInputError``; ``OutOfRangeError`` for sizes past the limits below).

Size limits, so an absurd ``config.json`` (``n_positions: 2**40``) is refused with its value
and limit before anything is allocated, instead of exhausting memory:

- every size field (``vocab_size``, ``n_positions``, ``n_embd``, ``n_layer``, ``n_head``,
  ``n_inner``) is at most ``MAX_SIZE`` = 2**31 - 1 (TensorFlow and many kernels index with
  int32);
- the parameters the sizes imply (``parameter_count``) are at most ``MAX_PARAMETERS`` = 10**11,
  65 times GPT-2 XL (400 GB in float32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gpt2_dual.errors import InvalidInputError, OutOfRangeError

#: Largest value of a size field (int32 indexing).
MAX_SIZE = 2**31 - 1
#: Largest number of parameters a config may imply (``parameter_count``).
MAX_PARAMETERS = 10**11

#: Activation names accepted for ``activation_function`` and ``summary_activation``: the
#: parameter-free entries of transformers' ``ACT2FN`` (``prelu``/``xielu`` carry weights).
ACTIVATIONS = frozenset({
    "gelu", "gelu_10", "gelu_accurate", "gelu_fast", "gelu_new", "gelu_python",
    "gelu_python_tanh", "gelu_pytorch_tanh", "laplace", "leaky_relu", "linear", "mish",
    "quick_gelu", "relu", "relu2", "relu6", "sigmoid", "silu", "swish", "tanh",
})  # fmt: skip
SUMMARY_TYPES = ("last", "first", "mean", "cls_index")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def _fail(name: str, value: Any, rule: str) -> ValueError:
    return InvalidInputError(f"GPT2Config.{name}={value!r:.200} is invalid: {rule}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> Any:
    if not _is_int(value) or value <= 0:
        raise _fail(name, value, "must be a positive integer")
    if value > MAX_SIZE:
        raise OutOfRangeError(
            f"GPT2Config.{name}={value} is invalid: must be at most {MAX_SIZE} (2**31 - 1)"
        )
    return value


def parameter_count(config: Any) -> int:
    """Parameters of a ``GPT2LMHeadModel`` (tied head) with ``config``'s sizes."""
    d, inner = config.n_embd, config.inner_dim
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (2 * d * inner + inner + d)
    if config.add_cross_attention:
        block += 2 * d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d)
    return (config.vocab_size + config.n_positions) * d + config.n_layer * block + 2 * d


def check_sizes(config: Any) -> None:
    """Raise OutOfRangeError when the sizes imply more than ``MAX_PARAMETERS`` parameters."""
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        sizes = ", ".join(
            f"{k}={getattr(config, k)}"
            for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_inner")
        )
        raise OutOfRangeError(
            f"GPT2Config({sizes}) implies {count:.3g} parameters; the limit is "
            f"{MAX_PARAMETERS:.0e} (gpt2_dual._config_checks.MAX_PARAMETERS)"
        )


def _optional_positive_int(name: str, value: Any) -> Any:
    return value if value is None else _positive_int(name, value)


def _token_id(name: str, value: Any) -> Any:
    if value is None:
        return value
    if _is_int(value) and value >= 0:
        return value
    if isinstance(value, list | tuple) and value and all(_is_int(v) and v >= 0 for v in value):
        return list(value)  # transformers allows several eos ids
    raise _fail(name, value, "must be None, a non-negative integer or a list of them")


def _probability(name: str, value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
        raise _fail(name, value, "must be a number in [0, 1)")
    return float(value)


def _positive_float(name: str, value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise _fail(name, value, "must be a number > 0")
    return float(value)


def _non_negative_float(name: str, value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise _fail(name, value, "must be a number >= 0")
    return float(value)


def _flag(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise _fail(name, value, "must be True or False")
    return value


def _one_of(choices: Any, *, optional: bool = False) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if (optional and value is None) or value in choices:
            return value
        listed = ", ".join(repr(c) for c in sorted(choices))
        raise _fail(name, value, f"must be {'None or ' if optional else ''}one of {listed}")

    return check


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "vocab_size": _positive_int,
    "n_positions": _positive_int,
    "n_embd": _positive_int,
    "n_layer": _positive_int,
    "n_head": _positive_int,
    "n_inner": _optional_positive_int,
    "activation_function": _one_of(ACTIVATIONS),
    "resid_pdrop": _probability,
    "embd_pdrop": _probability,
    "attn_pdrop": _probability,
    "summary_first_dropout": _probability,
    "layer_norm_epsilon": _positive_float,
    "initializer_range": _non_negative_float,
    "summary_type": _one_of(SUMMARY_TYPES),
    "summary_activation": _one_of(ACTIVATIONS, optional=True),
    "summary_use_proj": _flag,
    "summary_proj_to_labels": _flag,
    "scale_attn_weights": _flag,
    "use_cache": _flag,
    "scale_attn_by_inverse_layer_idx": _flag,
    "reorder_and_upcast_attn": _flag,
    "add_cross_attention": _flag,
    "tie_word_embeddings": _flag,
    "bos_token_id": _token_id,
    "eos_token_id": _token_id,
    "pad_token_id": _token_id,
    "problem_type": _one_of(PROBLEM_TYPES, optional=True),
}


def _check_id2label(value: Any) -> dict[int, str]:
    if not isinstance(value, Mapping) or not value:
        raise _fail("id2label", value, "must be a non-empty dict of label index -> name")
    try:
        labels = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise _fail("id2label", value, "keys must be integers (or their strings)") from None
    if sorted(labels) != list(range(len(labels))):
        raise _fail("id2label", value, f"keys must be 0..{len(labels) - 1}")
    return labels


def near_miss(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` is one edit away from, if any, ignoring case.

    One edit is one insertion, deletion, substitution or swap of two adjacent characters
    (Damerau-Levenshtein distance 1, in its optimal-string-alignment form): ``n_layers``,
    ``n_heads``, ``vocab_sise``, ``n_embed``, ``N_LAYER`` and ``n_ebmd`` are near misses.
    Names starting with ``_`` are private (transformers writes ``_num_labels``,
    ``_name_or_path``) and never a near miss.

    Args:
        name: the key that is not a known field.
        known: the field names (and aliases) to compare with.

    Returns:
        The first known name (in sorted order) within one edit, or ``None``.

    Example:
        >>> near_miss("n_layers", ["n_layer", "n_head"])
        'n_layer'
    """
    if name.startswith("_"):
        return None
    low = name.lower()
    for candidate in sorted(known):
        if candidate != name and _within_one_edit(low, candidate.lower()):
            return candidate
    return None


def _within_one_edit(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True  # substitution
        i = diffs[0]
        return len(diffs) == 2 and diffs[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k, (x, y) in enumerate(zip(short, long, strict=False)) if x != y), len(short))
    return short[i:] == long[i + 1 :]  # one insertion
