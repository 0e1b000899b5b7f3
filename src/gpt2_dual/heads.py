"""What differs between the six GPT-2 models, stated once as data for both frameworks.

Every model is the ``GPT2Model`` backbone (attribute ``transformer`` in the heads) plus at most
one small head layer. ``HEAD_SPECS`` names, per model: the class, the head attribute(s) holding
weights, how hidden states are pooled before the head, and the output fields. Converters, both
frameworks and the contract tests read this table; nothing else hard-codes it.

Pooling rules, in words (written once below; the contract tests keep a numpy oracle):

- ``"none"``: the head sees every position, ``(B, T, C) -> (B, T, out)``.
- ``"last_non_pad"``: per row, the last token that is not ``pad_token_id``: the index of the
  right-most non-pad token, so right padding, left padding and no padding all pick the last
  real token. Without ``pad_token_id`` only batch size 1 is allowed (as in transformers).
  transformers >= 4.45 uses the same right-most rule.
- ``"mc_token"``: per choice, the token at ``mc_token_ids`` (default: the last position),
  following ``summary_type`` (``cls_index``, ``last``, ``first``, ``mean``).

The rules both frameworks follow are written here once: the pooling above (``pool_sequence``,
``last_non_pad_index``, ``summarize_tokens``, run on a framework's ``ArrayOps``), the
sequence-classification loss choice (``problem_type_for``), the activation formulas
(``ACTIVATION_FORMULAS``: each framework maps the formula names to its own ops), and the
mistakes in a head call (``check_logits_to_keep``, ``check_sequence_batch``), which raise
``InputError`` with the same message in both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import InputError, InvalidInputError

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- head-call mistakes
def check_logits_to_keep(has_labels: bool, logits_to_keep: int) -> None:
    """The LM heads' ``logits_to_keep`` (logits of the last positions only) with ``labels``.

    Raises:
        InputError: both given (the loss needs the logits of every position).
    """
    if has_labels and logits_to_keep:
        raise InputError("labels need the logits of every position; leave logits_to_keep=0")


def check_sequence_batch(
    pad_token_id: int | None, batch: int | None, *, has_input_ids: bool, owner: str
) -> None:
    """Before ``GPT2ForSequenceClassification`` runs: can it find each row's last real token?

    Args:
        pad_token_id: ``config.pad_token_id``.
        batch: B (None: unknown, as while tracing; refused without ``pad_token_id``).
        has_input_ids: False with ``inputs_embeds``, where padding cannot be seen (the last
            position is used, with one warning per process).
        owner: the class name, for the warning.

    Raises:
        InputError: more than one row and no ``pad_token_id`` (transformers' message).
    """
    if pad_token_id is None and batch != 1:
        raise InputError("Cannot handle batch sizes > 1 if no padding token is defined.")
    if pad_token_id is not None and not has_input_ids:
        _warn_once(
            f"{owner} cannot see padding in inputs_embeds; it classifies the last position of "
            "each row"
        )


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


# --------------------------------------------------------------------------- pooling
class ArrayOps(Protocol):
    """The array operations the pooling rules need; ``pt/summary.py`` and ``tf/summary.py``
    each give one (``OPS``). Shapes as in the pooling functions below."""

    def positions(self, input_ids: Any) -> Any:
        """``(..., T)`` -> ``(T,)`` int32 ``0 .. T-1``, where ``input_ids`` lives."""

    def not_equal(self, input_ids: Any, value: int) -> Any:
        """int32 1 where ``input_ids != value``, else 0 (same shape)."""

    def argmax(self, values: Any) -> Any:
        """Index of the largest value along the last axis (the first of equal ones)."""

    def mean_tokens(self, hidden: Any) -> Any:
        """``(..., T, C)`` -> ``(..., C)``: the mean over the token axis."""

    def last_positions(self, hidden: Any) -> Any:
        """``(..., T, C)`` -> ``(...)`` int32, ``T - 1`` everywhere."""

    def gather_tokens(self, hidden: Any, index: Any) -> Any:
        """``(..., T, C)`` at ``(...)`` token indices -> ``(..., C)``."""


def last_non_pad_index(ops: ArrayOps, input_ids: Any, pad_token_id: int) -> Any:
    """``"last_non_pad"``: per row, the index of the right-most token that is not
    ``pad_token_id`` (0 if every token is), so right, left and no padding all give the last
    real token.

    Args:
        ops: the framework's ``ArrayOps``.
        input_ids: ``(B, T)``.
        pad_token_id: the padding id.

    Returns:
        ``(B,)`` indices.
    """
    return ops.argmax(ops.positions(input_ids) * ops.not_equal(input_ids, pad_token_id))


def pool_sequence(ops: ArrayOps, hidden: Any, input_ids: Any, pad_token_id: int | None) -> Any:
    """``GPT2ForSequenceClassification``'s token per row: ``(B, T, C)`` -> ``(B, C)``.

    The last non-pad token when the ids and a ``pad_token_id`` are known, else the last
    position (a batch of one, or ``inputs_embeds``: ``check_sequence_batch`` ran first).
    """
    if pad_token_id is None or input_ids is None:
        return hidden[:, -1]
    return ops.gather_tokens(hidden, last_non_pad_index(ops, input_ids, pad_token_id))


def summarize_tokens(ops: ArrayOps, summary_type: str, hidden: Any, cls_index: Any = None) -> Any:
    """``"mc_token"``: the multiple-choice summary's pooling, ``(..., T, C)`` -> ``(..., C)``.

    ``"cls_index"`` takes the token at ``cls_index`` ``(...)`` (None: the last one);
    ``"last"``/``"first"`` the last/first token; ``"mean"`` their mean. transformers pools
    ``"last"``/``"first"``/``"mean"`` over axis 1, which for ``(B, N, T)`` inputs is the choice
    axis; for ``(B, T)`` inputs both agree.
    """
    if summary_type == "last":
        return hidden[..., -1, :]
    if summary_type == "first":
        return hidden[..., 0, :]
    if summary_type == "mean":
        return ops.mean_tokens(hidden)
    if cls_index is None:
        cls_index = ops.last_positions(hidden)
    return ops.gather_tokens(hidden, cls_index)


# --------------------------------------------------------------------------- losses
def problem_type_for(num_labels: int, integer_labels: bool, problem_type: str | None = None) -> str:
    """The sequence-classification loss: ``problem_type`` when set, else transformers' rule:
    one label -> ``"regression"``; integer labels -> ``"single_label_classification"``; else
    ``"multi_label_classification"``.

    Args:
        num_labels: L.
        integer_labels: the labels have a signed integer dtype (numpy kind ``"i"``: int8 to
            int64; unsigned and bool labels are multi-hot targets).
        problem_type: ``config.problem_type`` (None: the rule above; the config is never
            written).
    """
    if problem_type:
        return problem_type
    if num_labels == 1:
        return "regression"
    return "single_label_classification" if integer_labels else "multi_label_classification"


# --------------------------------------------------------------------------- activations
#: The formula behind each activation name (the parameter-free names of transformers'
#: ``ACT2FN``, as ``gpt2_dual._config_checks.ACTIVATIONS``). Each framework maps the formula
#: names (``FORMULAS``) to its own ops.
ACTIVATION_FORMULAS: dict[str, str] = {
    "gelu": "gelu",
    "gelu_10": "gelu_10",
    "gelu_accurate": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_python": "gelu",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "laplace": "laplace",
    "leaky_relu": "leaky_relu",
    "linear": "identity",
    "mish": "mish",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "relu2": "relu2",
    "relu6": "relu6",
    "sigmoid": "sigmoid",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}

#: Constants of the formulas, as transformers' ``activations.py`` has them.
GELU_10_CLIP = 10.0
LAPLACE_MU, LAPLACE_SIGMA = 0.707107, 0.282095
LEAKY_RELU_SLOPE = 0.01  # PyTorch's default (Keras' is 0.2)
QUICK_GELU_SCALE = 1.702

#: Each formula, in words. The tanh-approximated GELU stands for transformers'
#: ``gelu_new``/``gelu_fast``/``gelu_accurate``/``gelu_pytorch_tanh`` alike: they differ only in
#: float32 rounding.
FORMULAS: dict[str, str] = {
    "gelu": "x * Phi(x), Phi the standard normal CDF (exact, with erf)",
    "gelu_tanh": "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))",
    "gelu_10": f"clip(gelu(x), -{GELU_10_CLIP}, {GELU_10_CLIP})",
    "laplace": f"0.5 * (1 + erf((x - {LAPLACE_MU}) / ({LAPLACE_SIGMA} * sqrt(2))))",
    "leaky_relu": f"x if x >= 0 else {LEAKY_RELU_SLOPE} * x",
    "identity": "x",
    "mish": "x * tanh(softplus(x))",
    "quick_gelu": f"x * sigmoid({QUICK_GELU_SCALE} * x)",
    "relu": "max(x, 0)",
    "relu2": "max(x, 0)**2",
    "relu6": "min(max(x, 0), 6)",
    "sigmoid": "1 / (1 + exp(-x))",
    "silu": "x * sigmoid(x)",
    "tanh": "tanh(x)",
}


def activation_formula(name: str) -> str:
    """The formula name (a key of ``FORMULAS``) of the activation called ``name``.

    Raises:
        InvalidInputError: unknown name; the message lists the known ones.
    """
    if name not in ACTIVATION_FORMULAS:
        raise InvalidInputError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATION_FORMULAS)}"
        )
    return ACTIVATION_FORMULAS[name]
