"""The rules every model input follows, written once for both frameworks (no torch, no TF).

The framework files (``pt/inputs.py``, ``tf/inputs.py``) describe each input as a ``Spec``
(name, shape, numpy dtype kind, dtype name) and call the checks here, so both raise the same
error class with the same message. Value rules are ``Rule`` rows; ``violations`` evaluates one
with operators only (``<``, ``>=``, ``!=``, ``&``, ``|``), so it runs on a torch tensor, a TF
tensor or a numpy array alike, and ``raise_for`` turns a numpy copy of the offender into the
message (only on the error path).

Rules (B batch, N choices, T new tokens, P cached tokens, C ``n_embd``, L ``num_labels``):

- ``input_ids``: integer dtype, ``(B, T)`` or ``(B, N, T)`` (sequence classification:
  ``(B, T)``), at least one row and one token, ids in ``[0, vocab_size)``. Exclusive with
  ``inputs_embeds``: floating ``(B, T, C)`` (or ``(B, N, T, C)``).
- ``P + T <= n_positions`` (and a ``StaticCache``'s ``max_length``).
- ``attention_mask``: bool, integer or float holding only 0 and 1, shape ``(..., P + T)``.
- ``token_type_ids``: integer, the shape of ``input_ids``, in ``[0, vocab_size)`` (they index
  ``wte``, as in transformers).
- ``position_ids``: integer, the shape of ``input_ids`` or one that broadcasts to it
  (``(1, T)``, ``(T,)``, ...), in ``[0, n_positions)``.
- ``past_key_values``: 0 or ``n_layer`` layers, keys and values ``(B, H, S, D)`` with the
  input's rows, ``n_head`` heads, ``head_dim``, and one ``S`` for every layer.
- ``labels``: LM heads: integer, the input's shape, in ``[0, vocab_size)`` or -100. Token
  classification: in ``[0, L)`` or -100. Sequence classification (transformers' semantics,
  ``config.problem_type`` or, when None: L == 1 regression, integer labels single-label, else
  multi-label): single-label ``(B,)`` integers in ``[0, L)`` or -100; regression ``B * L``
  numbers; multi-label ``(B, L)``.
- ``mc_token_ids``: integer, the input's leading shape ``(B, N)``, in ``[0, T)``;
  ``mc_labels``: integer ``(B,)`` in ``[0, N)`` or -100.
- ``start_positions``/``end_positions``: integer ``(B,)`` or ``(B, 1)``; values are clamped to
  ``[0, T]`` by the loss, as in transformers (``T`` is not counted), so any value is accepted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gpt2_dual.errors import InputTypeError, InvalidInputError, OutOfRangeError
from gpt2_dual.heads import problem_type_for

__all__ = [
    "HEAD_ARGS",
    "IGNORE_INDEX",
    "TENSOR_ARGS",
    "Rule",
    "Spec",
    "as_array",
    "check_backbone",
    "check_cache",
    "check_head",
    "check_length",
    "check_mask_shape",
    "forward_rules",
    "raise_for",
    "rows_of",
    "violations",
]

#: Label value that is not counted (transformers' convention).
IGNORE_INDEX = -100
#: Model arguments that are arrays (converted to the framework's tensors before the checks).
TENSOR_ARGS = (
    "input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
    "encoder_hidden_states", "encoder_attention_mask", "labels", "mc_token_ids", "mc_labels",
    "start_positions", "end_positions",
)  # fmt: skip
#: Arguments only a head takes (checked by ``check_head``).
HEAD_ARGS = ("labels", "mc_token_ids", "mc_labels", "start_positions", "end_positions")
_INT, _REAL, _MASK = "iu", "iuf", "biuf"
_KIND_WORDS = {_INT: "integers", _REAL: "numbers", _MASK: "0/1 (bool, int or float)", "f": "floats"}


class Spec(NamedTuple):
    """What the checks need to know of one input: no values."""

    name: str
    shape: tuple[int | None, ...]
    kind: str  # numpy dtype kind: b, i, u, f, c, U, S, O
    dtype: str  # for messages


class Rule(NamedTuple):
    """Values of ``name`` must be in ``[low, high)`` (or ``ignore``); ``mask``: only 0 and 1."""

    name: str
    low: int
    high: int
    limit: str  # the limit, in words, for the message
    ignore: int | None = None
    mask: bool = False


def _kind(spec: Spec | None, kinds: str) -> None:
    if spec is not None and spec.kind not in kinds:
        raise InputTypeError(f"{spec.name} must hold {_KIND_WORDS[kinds]}; got dtype {spec.dtype}")


def _shape(spec: Spec | None, allowed: Sequence[tuple], what: str) -> None:
    if spec is None or tuple(spec.shape) in [tuple(a) for a in allowed]:
        return
    if any(None in a for a in allowed) or None in spec.shape:  # traced: compare known sizes
        if any(_fits(spec.shape, a) for a in allowed):
            return
    raise InvalidInputError(
        f"{spec.name} has shape {tuple(spec.shape)}; expected "
        f"{' or '.join(str(tuple(a)) for a in allowed)} ({what})"
    )


def _broadcast_shapes(shape: tuple) -> list[tuple]:
    """Shapes that broadcast to ``shape`` keeping its last axis: ``(T,)``, ``(1, T)``, ...,
    ``shape`` itself (each leading axis 1 or its size, aligned on the right), full shape
    first."""
    *lead, last = shape
    found = [tuple(shape)]
    for rank in range(len(lead), -1, -1):
        tail = lead[len(lead) - rank :]
        for choice in itertools.product(*[sorted({1, n}, key=lambda v: v != n) for n in tail]):
            candidate = (*choice, last)
            if candidate not in found:
                found.append(candidate)
    return found


def _fits(shape: tuple, allowed: tuple) -> bool:
    return len(shape) == len(allowed) and all(
        a is None or b is None or a == b for a, b in zip(shape, allowed, strict=True)
    )


def check_backbone(
    config: Any, head: str, specs: dict[str, Spec | None]
) -> tuple[tuple[int | None, ...], int | None]:
    """Static rules of the backbone inputs (dtypes, ranks, shapes); ``specs`` by argument name.

    Returns:
        The leading shape ``(B,)`` or ``(B, N)`` and ``T``.
    """
    ids, embeds = specs.get("input_ids"), specs.get("inputs_embeds")
    if (ids is None) == (embeds is None):
        raise InvalidInputError(
            "You cannot specify both input_ids and inputs_embeds at the same time"
            if ids is not None
            else "You have to specify either input_ids or inputs_embeds"
        )
    ranks = (2,) if head == "sequence_classification" else (2, 3)
    if ids is not None:
        _kind(ids, _INT)
        shape, rank_of = tuple(ids.shape), len(ids.shape)
        words = "(batch, tokens)" + ("" if ranks == (2,) else " or (batch, choices, tokens)")
    else:
        _kind(embeds, "f")
        shape, rank_of = tuple(embeds.shape[:-1]), len(embeds.shape) - 1
        words = "(batch, tokens, n_embd)"
        words += "" if ranks == (2,) else " or (batch, choices, tokens, n_embd)"
        if rank_of in ranks and embeds.shape[-1] not in (None, config.n_embd):
            raise InvalidInputError(
                f"inputs_embeds has shape {tuple(embeds.shape)}; its last axis must be "
                f"n_embd={config.n_embd}"
            )
    given = ids or embeds
    if rank_of not in ranks:
        raise InvalidInputError(
            f"{given.name} has shape {tuple(given.shape)}; expected {words}"
            + ("; add a batch axis" if rank_of == ranks[0] - 1 else "")
        )
    if 0 in shape:
        raise InvalidInputError(
            f"{given.name} has shape {tuple(given.shape)}: it needs at least one row and one token"
        )
    lead, T = shape[:-1], shape[-1]
    _kind(specs.get("token_type_ids"), _INT)
    _shape(specs.get("token_type_ids"), [shape], "the shape of the input")
    _kind(specs.get("position_ids"), _INT)
    _shape(specs.get("position_ids"), _broadcast_shapes(shape), "the input's, or one that "
           "broadcasts to it, e.g. (1, T) as transformers takes for (B, N, T) inputs")
    mask = specs.get("attention_mask")
    _kind(mask, _MASK)
    if mask is not None and len(mask.shape) != len(shape):
        raise InvalidInputError(
            f"attention_mask has shape {tuple(mask.shape)}; expected {len(shape)} axes "
            f"{(*lead, 'cached + new tokens')}"
        )
    _kind(specs.get("encoder_attention_mask"), _MASK)
    _kind(specs.get("encoder_hidden_states"), "f")
    return lead, T


def forward_rules(config: Any) -> dict[str, Rule]:
    """Value rules of the backbone inputs, by argument name."""
    vocab = f"ids must be in [0, vocab_size={config.vocab_size})"
    return {
        "input_ids": Rule("input_ids", 0, config.vocab_size, vocab),
        "token_type_ids": Rule("token_type_ids", 0, config.vocab_size, vocab),
        "position_ids": Rule(
            "position_ids", 0, config.n_positions,
            f"positions must be in [0, n_positions={config.n_positions})",
        ),
        "attention_mask": Rule("attention_mask", 0, 2, "", mask=True),
    }  # fmt: skip


def check_length(config: Any, past: int, T: int, max_length: int | None = None) -> None:
    """``past + T`` within ``n_positions`` and a ``StaticCache``'s ``max_length``."""
    if past + T > config.n_positions:
        raise OutOfRangeError(
            f"sequence length {past + T} ({past} cached + {T} new tokens) exceeds "
            f"n_positions={config.n_positions}"
        )
    if max_length is not None and past + T > max_length:
        raise OutOfRangeError(
            f"the StaticCache holds max_length={max_length} positions; {past} cached "
            f"+ {T} new tokens do not fit"
        )


def check_mask_shape(
    mask_shape: tuple, lead: tuple, past: int, T: int, max_length: int | None = None
) -> None:
    allowed = [(*lead, past + T)] + ([(*lead, max_length)] if max_length is not None else [])
    if tuple(mask_shape) not in allowed:
        raise InvalidInputError(
            f"attention_mask has shape {tuple(mask_shape)}; expected "
            f"{' or '.join(str(a) for a in allowed)} (batch, {past} cached + {T} new tokens)"
        )


def check_cache(config: Any, layers: Sequence[tuple[tuple, tuple]], rows: int | None) -> None:
    """``layers``: the ``(key shape, value shape)`` of each cached layer (written part)."""
    if layers and len(layers) != config.n_layer:
        raise InvalidInputError(
            f"past_key_values has {len(layers)} layers; the model has n_layer={config.n_layer}"
        )
    expected = (rows, config.n_head, None, config.head_dim)
    length = None
    for i, shapes in enumerate(layers):
        for what, shape in zip(("key", "value"), shapes, strict=True):
            if not _fits(tuple(shape), expected):
                raise InvalidInputError(
                    f"past_key_values layer {i} {what} has shape {tuple(shape)}; expected "
                    f"(batch={rows}, n_head={config.n_head}, cached, "
                    f"head_dim={config.head_dim})"
                )
            length = shape[2] if length is None else length
            if None not in (length, shape[2]) and shape[2] != length:
                raise InvalidInputError(
                    f"past_key_values is ragged: layer {i} {what} caches {shape[2]} positions, "
                    f"layer 0 key caches {length}"
                )


def problem_type(config: Any, kind: str) -> str:
    """The loss of labels of numpy dtype ``kind`` (``gpt2_dual.heads.problem_type_for``)."""
    return problem_type_for(config.num_labels, kind == "i", config.problem_type)


def check_head(
    config: Any, head: str, lead: tuple, T: int | None, specs: dict[str, Spec | None]
) -> list[Rule]:
    """Static rules of a head's own inputs; returns the value rules that apply (``head_rules``)."""
    B = lead[0] if lead else None
    V = config.vocab_size
    labels = specs.get("labels")
    rules = []
    if head in ("lm", "double_heads", "token_classification") and labels is not None:
        _kind(labels, _INT)
        _shape(labels, [(*lead, T)], "the shape of the input")
        high, limit = (
            (config.num_labels, f"labels must be in [0, num_labels={config.num_labels}) or -100")
            if head == "token_classification"
            else (config.vocab_size, f"labels must be in [0, vocab_size={V}) or -100")
        )
        rules.append(Rule("labels", 0, high, limit, IGNORE_INDEX))
    if head == "sequence_classification" and labels is not None:
        rules += _sequence_labels(config, labels, B)
    if head == "double_heads":
        mc, mc_labels = specs.get("mc_token_ids"), specs.get("mc_labels")
        _kind(mc, _INT)
        _shape(mc, [lead], "the input's leading axes (batch, choices)")
        if mc is not None and T is not None:
            rules.append(Rule("mc_token_ids", 0, T, f"indices must be in [0, tokens={T})"))
        _kind(mc_labels, _INT)
        _shape(mc_labels, [(B,)], "(batch,)")
        if mc_labels is not None and len(lead) == 2 and lead[1] is not None:
            N = lead[1]
            rules.append(
                Rule("mc_labels", 0, N, f"choices must be in [0, choices={N}) or -100", -100)
            )
    for name in ("start_positions", "end_positions"):
        _kind(specs.get(name), _INT)
        _shape(specs.get(name), [(B,), (B, 1)], "(batch,)")
    return rules


def _sequence_labels(config: Any, labels: Spec, B: int | None) -> list[Rule]:
    L = config.num_labels
    kind = problem_type(config, labels.kind)
    if kind == "single_label_classification":
        _kind(labels, "i")
        _shape(labels, [(B,), (B, 1)], f"(batch,) class ids; problem_type={kind}")
        limit = f"labels must be in [0, num_labels={L}) or -100"
        return [Rule("labels", 0, L, limit, IGNORE_INDEX)]
    _kind(labels, _REAL)
    allowed = [(B, L)] + ([(B,)] if L == 1 else [])
    _shape(labels, allowed, f"problem_type={kind}")
    return []


def as_array(name: str, value: Any) -> np.ndarray:
    """A list (nested, rectangular), tuple, number or numpy array of numbers as numpy."""
    if isinstance(value, str | bytes) or not isinstance(
        value, list | tuple | np.ndarray | np.generic | int | float | bool
    ):
        raise InputTypeError(
            f"{name} must be a tensor, a numpy array or a nested list of numbers; got "
            f"{type(value).__name__}"
        )
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise InvalidInputError(f"{name} is not a rectangular array: {err}") from None
    if array.dtype.kind not in "biuf":
        raise InputTypeError(f"{name} must hold numbers; got dtype {array.dtype}")
    return array


def violations(x: Any, rule: Rule) -> Any:
    """Where ``x`` breaks ``rule``, as a boolean array of the framework's own kind."""
    if rule.mask:
        return (x != 0) & (x != 1)
    bad = (x < rule.low) | (x >= rule.high)
    return bad & (x != rule.ignore) if rule.ignore is not None else bad


def raise_for(values: np.ndarray, rule: Rule) -> None:
    """Raise for the first value of ``values`` that breaks ``rule``; return when none does."""
    values = np.asarray(values)
    bad = np.argwhere(violations(values, rule))
    if not len(bad):
        return
    where = tuple(int(i) for i in bad[0])
    value = values[where].item()
    value = int(value) if float(value).is_integer() else value
    if rule.mask:
        raise InvalidInputError(
            f"attention_mask{list(where)} = {value} is not 0 or 1: the mask holds 1 for real "
            "tokens and 0 for padding"
        )
    raise OutOfRangeError(f"{rule.name}{list(where)} = {value} is out of range: {rule.limit}")


def rows_of(lead: tuple) -> int | None:
    return None if None in lead else math.prod(lead)
