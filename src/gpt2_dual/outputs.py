"""Typed model outputs shared by both frameworks, with transformers' field names.

A model always returns the same output type, whatever flags it is called with; fields that
were not asked for are ``None``. Fields hold tensors of the active framework. As in
transformers, an output can be read as ``out.logits``, ``out["logits"]`` or ``out[0]``
(integer indexing skips ``None`` fields), and ``to_tuple()`` gives the non-``None`` fields.
Keras models return plain dicts with the same keys; ``as_output`` wraps one.

Shapes (B batch, T tokens, C ``n_embd``, V ``vocab_size``, N choices):
``last_hidden_state`` (B, T, C); ``logits`` (B, T, V) for the LM heads, (B, num_labels) for
sequence classification, (B, T, num_labels) for token classification; ``mc_logits`` (B, N);
``start_logits``/``end_logits`` (B, T); ``hidden_states`` a tuple of n_layer + 1 tensors
(B, T, C), embeddings first; ``attentions`` a tuple of n_layer tensors (B, H, T, S).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelOutput:
    """Base class: attribute, key and (non-None) index access, like transformers' outputs."""

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set")
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        """Names of the fields that are not None, in declaration order."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.keys())

    def to_tuple(self) -> tuple[Any, ...]:
        """The non-None fields in declaration order."""
        return tuple(self.values())


@dataclass(frozen=True)
class BaseModelOutput(ModelOutput):
    """Output of ``GPT2Model``."""

    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class CausalLMOutput(ModelOutput):
    """Output of ``GPT2LMHeadModel``."""

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class DoubleHeadsModelOutput(ModelOutput):
    """Output of ``GPT2DoubleHeadsModel``."""

    loss: Any = None
    mc_loss: Any = None
    logits: Any = None
    mc_logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class QuestionAnsweringModelOutput(ModelOutput):
    """Output of ``GPT2ForQuestionAnswering``."""

    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class SequenceClassifierOutput(ModelOutput):
    """Output of ``GPT2ForSequenceClassification``."""

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class TokenClassifierOutput(ModelOutput):
    """Output of ``GPT2ForTokenClassification``."""

    loss: Any = None
    logits: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class GenerateOutput(ModelOutput):
    """What ``generate(..., return_dict_in_generate=True)`` returns (transformers'
    ``GenerateDecoderOnlyOutput`` / ``GenerateBeamDecoderOnlyOutput`` fields).

    Shapes (R = B * num_return_sequences rows, L = prompt + new tokens, N = generated steps):
    ``sequences`` (R, L); ``scores`` and ``logits`` tuples of N tensors (B * num_beams, V)
    (``scores``: processed, ``logits``: raw); beam search only: ``sequences_scores`` (R,) and
    ``beam_indices`` (R, N), -1 past a sequence's end.
    """

    sequences: Any = None
    sequences_scores: Any = None
    scores: tuple[Any, ...] | None = None
    logits: tuple[Any, ...] | None = None
    beam_indices: Any = None
    past_key_values: Any = None


#: Output class per head name (keys of ``gpt2_dual.heads.HEAD_SPECS``).
OUTPUT_TYPES: dict[str, type[ModelOutput]] = {
    "base": BaseModelOutput,
    "lm": CausalLMOutput,
    "double_heads": DoubleHeadsModelOutput,
    "question_answering": QuestionAnsweringModelOutput,
    "sequence_classification": SequenceClassifierOutput,
    "token_classification": TokenClassifierOutput,
}


def as_output(head: str, mapping: Mapping[str, Any]) -> ModelOutput:
    """Wrap a Keras model's output dict in the head's output type.

    Raises:
        KeyError: ``mapping`` has a key the head's output type does not define.
    """
    cls = OUTPUT_TYPES[head]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise KeyError(f"{cls.__name__} has no fields {unknown}; it has {sorted(names)}")
    return cls(**mapping)
