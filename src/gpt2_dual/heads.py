"""What differs between the six GPT-2 models, stated once as data for both frameworks.

Every model is the ``GPT2Model`` backbone (attribute ``transformer`` in the heads) plus at most
one small head layer. ``HEAD_SPECS`` names, per model: the class, the head attribute(s) holding
weights, how hidden states are pooled before the head, and the output fields. Converters, both
frameworks and the contract tests read this table; nothing else hard-codes it.

Pooling rules, in words (each framework implements them once, the tests keep a numpy oracle):

- ``"none"``: the head sees every position, ``(B, T, C) -> (B, T, out)``.
- ``"last_non_pad"``: per row, the last token that is not ``pad_token_id``: the index of the
  right-most non-pad token, so right padding, left padding and no padding all pick the last
  real token. Without ``pad_token_id`` only batch size 1 is allowed (as in transformers).
  transformers >= 4.45 uses the same right-most rule.
- ``"mc_token"``: per choice, the token at ``mc_token_ids`` (default: the last position),
  following ``summary_type`` (``cls_index``, ``last``, ``first``, ``mean``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpt2_dual.config import GPT2Config


@dataclass(frozen=True)
class HeadSpec:
    """One model's head, as data.

    Attributes:
        name: key in ``HEAD_SPECS``.
        class_name: the public class, the same in ``gpt2_dual.pt`` and ``gpt2_dual.tf``.
        attrs: attributes holding head weights (``()`` for the bare backbone).
        pooling: ``"none"``, ``"last_non_pad"`` or ``"mc_token"`` (see the module docstring).
        outputs: main output fields, in transformers' order.
        out_features: size of the head's last axis for a config.
    """

    name: str
    class_name: str
    attrs: tuple[str, ...]
    pooling: str
    outputs: tuple[str, ...]
    out_features: Callable[[GPT2Config], int]


HEAD_SPECS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec("base", "GPT2Model", (), "none", ("last_hidden_state",), lambda c: c.n_embd),
        HeadSpec(
            "lm", "GPT2LMHeadModel", ("lm_head",), "none", ("logits",), lambda c: c.vocab_size
        ),
        HeadSpec(
            "double_heads",
            "GPT2DoubleHeadsModel",
            ("lm_head", "multiple_choice_head"),
            "mc_token",
            ("logits", "mc_logits"),
            lambda c: c.vocab_size,
        ),
        HeadSpec(
            "question_answering",
            "GPT2ForQuestionAnswering",
            ("qa_outputs",),
            "none",
            ("start_logits", "end_logits"),
            lambda c: 2,
        ),
        HeadSpec(
            "sequence_classification",
            "GPT2ForSequenceClassification",
            ("score",),
            "last_non_pad",
            ("logits",),
            lambda c: c.num_labels,
        ),
        HeadSpec(
            "token_classification",
            "GPT2ForTokenClassification",
            ("classifier",),
            "none",
            ("logits",),
            lambda c: c.num_labels,
        ),
    )
}

#: Head name by public class name, e.g. ``"GPT2LMHeadModel" -> "lm"``.
HEAD_BY_CLASS = {spec.class_name: name for name, spec in HEAD_SPECS.items()}


def multiple_choice_features(config: GPT2Config) -> int:
    """Output size of the double-heads summary: 1 score per choice when projecting to labels.

    transformers' ``GPT2DoubleHeadsModel`` sets ``config.num_labels = 1`` (mutating the config);
    we compute the same size without touching the config.
    """
    if not config.summary_use_proj:
        return config.n_embd
    return 1 if config.summary_proj_to_labels else config.n_embd


def token_classifier_dropout(config: GPT2Config) -> float:
    """Dropout before the token classifier: ``classifier_dropout``, else ``hidden_dropout``,
    else 0.1, read from the config's extra keys as transformers does."""
    for key in ("classifier_dropout", "hidden_dropout"):
        value = config.extra.get(key)
        if value is not None:
            return float(value)
    return 0.1
