"""Input handling of ``GPT2Model.call``: conversion, validation, folding, positions, in one place.

Shapes: B batch, T new tokens, P cached tokens, S' mask length, C ``n_embd``.

Conversion: lists and numpy arrays become tensors; ids, masks and positions int32.

Validation: the rules live in ``gpt2_dual._input_checks`` (shared with ``gpt2_dual.pt``);
errors are ``gpt2_dual.errors`` classes naming the argument, the value and the limit, raised
before any model work, the same class and message as on the PyTorch side. Dtypes are checked
before any cast (float ids are refused, never truncated).

Compiled calls: inside ``tf.function``/XLA only static facts are checked (dtypes, ranks, the
shapes and lengths known while tracing). Values (ids, positions and labels in range, a 0/1
mask) are checked only in eager calls: reading them would need a host sync,
``tf.debugging`` assertions do not compile under XLA, and XLA's gather clamps out-of-range
ids instead of failing. ``generate`` checks its prompt on the host before compiling
(``generation.call.check_prompt``); other compiled callers must pass valid values, as
``torch.compile`` callers must on the PyTorch side.

Positions: without ``position_ids``, a mask with padding decides them: ``cumsum(mask) - 1``
clamped at 0, continuing over the cached part. A left-padded row then gets the same positions,
hence the same logits, as the same row unpadded. Without padding they are ``P .. P + T - 1``.
Run eagerly, an all-ones mask counts as no padding (no mask tensor is built); traced, a given
mask is always applied (the same numbers).

``input_ids`` may carry extra leading axes, ``(B, N, T)`` for multiple choice: they are folded
into the batch (masks, token types and positions alike) and restored on every output, hidden
states and attentions included.

Positional lists: transformers' TF models also take their arguments as one list or tuple in
their ``call`` order, ``model([input_ids, None, attention_mask])``; ``from_list`` turns
such a list into keywords (``POSITIONAL_ORDER``, per head).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gpt2_dual import _input_checks as rules
from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import GPT2DualError, InputError
from gpt2_dual.tf.cache import DynamicCache, StaticCache

__all__ = [
    "POSITIONAL_ORDER",
    "InputError",
    "as_tensor",
    "check_head_inputs",
    "check_inputs",
    "fold",
    "from_list",
    "is_int",
    "positions",
    "unfold",
]


def as_tensor(value: Any, dtype: str | None = None) -> tf.Tensor | None:
    """Lists and numpy arrays to tensors (None stays None), cast to ``dtype`` when given (to
    int32, a bool or 0/1 float mask becomes 0/1)."""
    if value is None:
        return None
    tensor = ops.convert_to_tensor(value)
    if dtype is None or keras.backend.standardize_dtype(tensor.dtype) == dtype:
        return tensor
    return ops.cast(tensor, dtype)


def convert(name: str, value: Any) -> tf.Tensor | None:
    """``as_tensor`` without a cast, refusing strings and ragged lists with gpt2_dual errors."""
    if value is None or isinstance(value, tf.Tensor | tf.Variable):
        return value
    if isinstance(value, list | tuple | np.ndarray | np.generic | int | float | bool | str | bytes):
        value = rules.as_array(name, value)
    return ops.convert_to_tensor(value)


def spec(name: str, value: Any) -> rules.Spec | None:
    """The shape and dtype of one input (None stays None)."""
    if value is None:
        return None
    dtype = tf.as_dtype(value.dtype)
    kind = (
        "b" if dtype.is_bool
        else "c" if dtype.is_complex
        else "f" if dtype.is_floating
        else ("u" if dtype.is_unsigned else "i") if dtype.is_integer
        else "U" if dtype == tf.string
        else "O"
    )  # fmt: skip
    return rules.Spec(name, tuple(value.shape), kind, dtype.name)


def is_int(value: Any, number: int) -> bool:
    """``value == number`` for a Python int; False for a tensor (unknown while tracing)."""
    return isinstance(value, int) and value == number


def check_head_inputs(config: GPT2Config, head: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with every array-like argument a tensor (not cast), after the head's own rules
    (labels, ``mc_token_ids``, ...): shapes always, values when eager."""
    kwargs = {k: convert(k, v) if k in rules.TENSOR_ARGS else v for k, v in kwargs.items()}
    if head == "base":
        return kwargs
    given = {n: spec(n, kwargs.get(n)) for n in ("input_ids", "inputs_embeds")}
    lead, T = rules.check_backbone(config, head, given)
    specs = {n: spec(n, kwargs.get(n)) for n in rules.HEAD_ARGS}
    found = rules.check_head(config, head, lead, T, specs)
    if tf.executing_eagerly():
        for rule in found:
            rules.raise_for(kwargs[rule.name].numpy(), rule)
    return kwargs


def check_inputs(
    config: GPT2Config,
    input_ids: tf.Tensor | None,
    inputs_embeds: tf.Tensor | None,
    attention_mask: tf.Tensor | None,
    token_type_ids: tf.Tensor | None,
    cache: DynamicCache | StaticCache | None,
    encoder: tf.Tensor | None,
    encoder_mask: tf.Tensor | None,
    dtype: str,
    position_ids: tf.Tensor | None = None,
) -> tuple[int | tf.Tensor, bool | None]:
    """Validate the inputs of one forward (rules: ``gpt2_dual._input_checks``), before any cast.

    Returns:
        The cached length (an int; a 0-d tensor with a ``StaticCache`` while tracing) and
        whether the mask has padding (None when unknown: while tracing).

    Raises:
        InvalidInputError, InputTypeError, OutOfRangeError: naming the input, the offending
            value or shape, and the limit (marked so Keras does not rewrite them).
    """
    try:
        return _check_inputs(
            config, input_ids, inputs_embeds, attention_mask, token_type_ids, cache, encoder,
            encoder_mask, dtype, position_ids,
        )  # fmt: skip
    except GPT2DualError as err:
        err._keras_call_info_injected = True  # Keras' own "already explained" marker
        raise


def _check_inputs(
    config, input_ids, inputs_embeds, attention_mask, token_type_ids, cache, encoder,
    encoder_mask, dtype, position_ids,
):  # fmt: skip
    given = {
        "input_ids": input_ids, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
        "token_type_ids": token_type_ids, "position_ids": position_ids,
        "encoder_hidden_states": encoder, "encoder_attention_mask": encoder_mask,
    }  # fmt: skip
    lead, T = rules.check_backbone(config, "base", {n: spec(n, v) for n, v in given.items()})
    if encoder is not None and not config.add_cross_attention:
        raise InputError(
            "encoder_hidden_states were given but the model has no cross-attention; build it "
            "with config.add_cross_attention=True"
        )
    if encoder is not None and encoder_mask is not None:
        expected = tuple(encoder.shape[:2])
        if None not in expected and tuple(encoder_mask.shape) != expected:
            raise InputError(
                f"encoder_attention_mask has shape {tuple(encoder_mask.shape)}; expected "
                f"{expected} (batch, encoder length)"
            )
    rows = rules.rows_of(lead)
    static = isinstance(cache, StaticCache)
    if static:
        _check_static(cache, rows, dtype)
    if cache is not None:
        layers = zip(cache.keys, cache.values, strict=True)
        rules.check_cache(config, [(tuple(k.shape), tuple(v.shape)) for k, v in layers], rows)
    past = cache.get_seq_length() if cache is not None else 0
    max_length = cache.max_length if static else None
    if not tf.executing_eagerly():  # traced: static facts only
        if isinstance(past, int) and T is not None:
            rules.check_length(config, past, T, max_length)
        return past, (None if attention_mask is not None else False)
    for name, rule in rules.forward_rules(config).items():
        if given[name] is not None:
            rules.raise_for(given[name].numpy(), rule)
    rules.check_length(config, past, T, max_length)
    if attention_mask is not None:
        rules.check_mask_shape(attention_mask.shape, lead, past, T, max_length)
    padded = attention_mask is not None and not bool(np.all(attention_mask.numpy()))
    return past, padded


def _check_static(cache: StaticCache, rows: int | None, dtype: str) -> None:
    if rows is not None and rows != cache.batch_size:
        raise InputError(f"the StaticCache holds {cache.batch_size} rows; the input has {rows}")
    if keras.backend.standardize_dtype(dtype) != cache.dtype:
        raise InputError(f"the StaticCache is {cache.dtype}; the model is {dtype}")


def fold(*tensors):
    """Fold leading axes into the batch: ids ``(..., T)``, embeds ``(..., T, C)``."""
    input_ids, inputs_embeds = tensors[:2]
    lead = ops.shape(input_ids)[:-1] if input_ids is not None else ops.shape(inputs_embeds)[:-2]
    if len(lead) == 1:
        return lead, tensors
    folded = [t if t is None else ops.reshape(t, (-1, ops.shape(t)[-1])) for t in tensors]
    if inputs_embeds is not None:
        folded[1] = ops.reshape(inputs_embeds, (-1, *ops.shape(inputs_embeds)[-2:]))
    return lead, folded


def unfold(x: tf.Tensor, lead: tuple, trailing: int) -> tf.Tensor:
    return x if len(lead) == 1 else ops.reshape(x, (*lead, *ops.shape(x)[-trailing:]))


def positions(key_ok, attention_mask, query_pos) -> tf.Tensor:
    """Position of each new token: from the mask when it has padding, else its cache slot."""
    if key_ok is None:
        return query_pos[None, :]  # (1, T)
    counted = ops.cumsum(attention_mask, axis=-1) - 1  # (B, S'), real tokens counted from 0
    return ops.take(ops.maximum(counted, 0), query_pos, axis=1)  # (B, T)


_SHARED = ("input_ids", "past_key_values", "attention_mask", "token_type_ids", "position_ids",
           "head_mask", "inputs_embeds")  # fmt: skip
_FLAGS = ("use_cache", "output_attentions", "output_hidden_states", "return_dict")
_ENCODER = ("encoder_hidden_states", "encoder_attention_mask")

#: Argument order of a positional list, per head: transformers' TF ``call`` order (its
#: ``TFGPT2Model``, ``TFGPT2LMHeadModel``, ``TFGPT2DoubleHeadsModel``,
#: ``TFGPT2ForSequenceClassification``); transformers has no TF question-answering or
#: token-classification GPT-2, so those two follow its PyTorch ``forward`` order.
POSITIONAL_ORDER: dict[str, tuple[str, ...]] = {
    "base": (*_SHARED, *_ENCODER, *_FLAGS, "training"),
    "lm": (*_SHARED, *_ENCODER, *_FLAGS, "labels", "training"),
    "double_heads": (*_SHARED, "mc_token_ids", *_FLAGS, "training"),
    "sequence_classification": (*_SHARED, *_FLAGS, "labels", "training"),
    "token_classification": (*_SHARED, "labels", *_FLAGS),
    "question_answering": (
        "input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask",
        "inputs_embeds", "start_positions", "end_positions", "output_attentions",
        "output_hidden_states", "return_dict",
    ),
}  # fmt: skip

#: transformers arguments gpt2_dual dropped on purpose (README, "Differences").
_DROPPED = ("head_mask", "return_dict")


def _is_positional(inputs: Any) -> bool:
    """Whether a list or tuple is transformers' positional form rather than token ids: it holds
    a None, a bool, a cache, or a tensor or array of rank 2 or more. Token ids as nested Python
    lists (``[[15496, 995]]``) or as a list of 1-D rows are not."""
    if not isinstance(inputs, list | tuple):
        return False
    for item in inputs:
        if item is None or isinstance(item, bool | DynamicCache | StaticCache):
            return True
        shape = getattr(item, "shape", None)
        if shape is not None and len(shape) >= 2:
            return True
    return False


def from_list(head: str, inputs: Any) -> Any:
    """transformers' positional form (``[input_ids, None, attention_mask]``) as a dict of
    keywords, None entries left out; any other ``inputs`` unchanged.

    Args:
        head: the model's head name (a key of ``POSITIONAL_ORDER``).
        inputs: the model's first argument.

    Raises:
        TypeError: more values than the head's order has, or a value for an argument
            gpt2_dual dropped (``head_mask``, ``return_dict``).
    """
    if not _is_positional(inputs):
        return inputs
    order = POSITIONAL_ORDER[head]
    if len(inputs) > len(order):
        raise TypeError(
            f"got {len(inputs)} positional inputs; transformers' order for this model has "
            f"{len(order)}: {list(order)}"
        )
    named = zip(order[: len(inputs)], inputs, strict=True)
    kwargs = {name: value for name, value in named if value is not None}
    dropped = sorted(set(kwargs) & set(_DROPPED))
    if dropped:
        raise TypeError(
            f"{dropped} given in the positional list: gpt2_dual does not take "
            f"{' or '.join(dropped)} (outputs are always typed, heads are never masked); "
            "leave those entries None"
        )
    return kwargs
