"""Perplexity of a causal language model over a long text, by transformers' sliding window.

The method is the one of transformers' guide "Perplexity of fixed-length models"
(``docs/source/en/perplexity.md``), number for number. Windows of at most ``block_size`` tokens
start every ``stride`` tokens; each window scores only the tokens the previous window did not
reach (``trg_len``; the rest of it is context, the guide's ``labels[:, :-trg_len] = -100``);
the loop stops at the window that reaches the end of the text. The guide then weighs each
window's mean loss by ``trg_len - 1`` ("the model only calculates loss over trg_len - 1
labels"), which is true of the first window only: a later window averages ``trg_len`` labels.
We keep that weighting so that our numbers are the guide's numbers:

    loss = sum_w mean_w * (trg_len_w - 1) / sum_w (trg_len_w - 1),   perplexity = exp(loss)

With ``stride == block_size`` the windows are disjoint and ``loss`` is the plain mean NLL of
every predicted token. One departure: a window with nothing to predict (one token: the text is
one token longer than a multiple of ``block_size`` with ``stride == block_size``) adds nothing,
where the guide's loop would add ``0 * nan``.

The model enters through ``nll_sum(window_ids, trg_len)``; ``model_nll_sum`` builds one for a
gpt2_dual.pt or gpt2_dual.tf ``GPT2LMHeadModel`` (the framework is imported then). Windows of
the same length and ``trg_len`` (all but the first and the last two, at most) go to the model
``batch_size`` at a time; the result does not depend on it beyond float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpt2_dual.errors import InvalidInputError, OutOfRangeError

__all__ = [
    "EvalResult",
    "NllSum",
    "model_nll_sum",
    "perplexity",
    "window_batches",
    "windows",
]

#: ``nll_sum(window_ids, trg_len) -> (sum, count)``: ``window_ids`` ``(B, L)`` int64, B windows
#: of the same length that share ``trg_len``; the sum of the negative log-likelihoods (natural
#: log) of the tokens each window scores (its last ``trg_len`` tokens that have a token before
#: them), over all B rows, and how many tokens that is.
NllSum = Callable[[np.ndarray, int], tuple[float, int]]
#: One window: ``(begin, end, trg_len)``, tokens ``[begin, end)`` of which the last ``trg_len``
#: are scored.
Window = tuple[int, int, int]


@dataclass(frozen=True)
class EvalResult:
    """A sliding-window evaluation.

    Attributes:
        loss: the average negative log-likelihood per token (nats), the guide's
            ``nll_sum / n_tokens``.
        perplexity: ``exp(loss)``.
        tokens: the number of tokens ``loss`` averages over (the guide's ``n_tokens``: for
            each window ``trg_len - 1``).
    """

    loss: float
    perplexity: float
    tokens: int


def windows(n_tokens: int, *, block_size: int, stride: int) -> list[Window]:
    """The guide's windows over ``n_tokens`` tokens, in order.

    Returns:
        ``[(begin, end, trg_len), ...]``: ``begin`` runs over ``range(0, n_tokens, stride)``,
        ``end = min(begin + block_size, n_tokens)``, ``trg_len = end - previous end``; the last
        window is the first that reaches ``n_tokens``.

    Raises:
        OutOfRangeError: ``n_tokens < 0``, ``block_size < 1`` or ``stride`` not in
            ``1..block_size``.

    Example:
        >>> windows(10, block_size=4, stride=2)
        [(0, 4, 4), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    """
    _check_sizes(block_size, stride)
    if n_tokens < 0:
        raise OutOfRangeError(f"n_tokens={n_tokens} is negative")
    spans: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + block_size, n_tokens)
        spans.append((begin, end, end - prev_end))
        prev_end = end
        if end == n_tokens:
            break
    return spans


def window_batches(spans: Sequence[Window], batch_size: int) -> list[list[Window]]:
    """``spans`` in order, cut into batches of at most ``batch_size`` neighbours that share
    their length and ``trg_len`` (so one ``nll_sum`` call takes each batch).

    Raises:
        OutOfRangeError: ``batch_size < 1``.
    """
    if batch_size < 1:
        raise OutOfRangeError(f"batch_size={batch_size} is out of range: at least 1")
    batches: list[list[Window]] = []
    for span in spans:
        last = batches[-1] if batches else None
        if last is not None and len(last) < batch_size and _shape(last[0]) == _shape(span):
            last.append(span)
        else:
            batches.append([span])
    return batches


def perplexity(
    tokens: np.ndarray,
    nll_sum: NllSum,
    *,
    block_size: int,
    stride: int,
    batch_size: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Sliding-window perplexity of ``tokens`` (module docstring: the guide's formula).

    Args:
        tokens: ``(N,)`` token ids, ``N >= 2``.
        nll_sum: the model (see ``NllSum``; ``model_nll_sum`` makes one).
        block_size: the longest window (at most the model's ``n_positions``; at least 2).
        stride: how far each window starts after the previous one (``1..block_size``).
        batch_size: windows per ``nll_sum`` call at most.
        on_batch: called as ``on_batch(windows_done, windows_total)`` before each call.

    Returns:
        ``EvalResult(loss, perplexity, tokens)``.

    Raises:
        InvalidInputError: fewer than 2 tokens, or ``tokens`` not 1-D.
        OutOfRangeError: ``block_size < 2``, ``stride`` or ``batch_size`` out of range.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise InvalidInputError(f"tokens must be 1-D token ids; got shape {tokens.shape}")
    if len(tokens) < 2:
        raise InvalidInputError(f"perplexity needs at least 2 tokens; got {len(tokens)}")
    if block_size < 2:
        raise OutOfRangeError(f"block_size={block_size} is out of range: at least 2")
    spans = windows(len(tokens), block_size=block_size, stride=stride)
    total_nll, n_tokens, done = 0.0, 0, 0
    for batch in window_batches(spans, batch_size):
        if on_batch is not None:
            on_batch(done, len(spans))
        _, _, trg_len = batch[0]
        ids = np.stack([tokens[begin:end] for begin, end, _ in batch]).astype(np.int64)
        nll, count = nll_sum(ids, trg_len)
        num_loss_tokens = trg_len - 1  # the guide's num_valid_tokens - batch_size, per window
        if count:  # each window's mean loss (count / len(batch) tokens) times its weight
            total_nll += float(nll) * len(batch) / count * num_loss_tokens
        n_tokens += num_loss_tokens * len(batch)
        done += len(batch)
    loss = total_nll / n_tokens
    return EvalResult(loss=loss, perplexity=math.exp(loss), tokens=n_tokens)


def model_nll_sum(model: Any) -> NllSum:
    """``nll_sum`` for a gpt2_dual.pt or gpt2_dual.tf ``GPT2LMHeadModel``: no dropout, no
    gradients, logits only where a scored token is predicted (``logits_to_keep``), the
    log-softmax in float32 whatever the model's dtype, the sum in float64. PyTorch runs where
    the parameters are; TensorFlow runs a ``tf.function`` under XLA when the model's rule for
    forwards says so (``jit_compile_for("forward")``), compiled once per window shape.

    Raises:
        TypeError: another kind of model.
    """
    module = type(model).__module__
    if module.startswith("gpt2_dual.pt."):
        return _pt_nll_sum(model)
    if module.startswith("gpt2_dual.tf."):
        return _tf_nll_sum(model)
    raise TypeError(
        f"model must be a gpt2_dual.pt or gpt2_dual.tf GPT2LMHeadModel; got "
        f"{module}.{type(model).__name__}"
    )


def _check_sizes(block_size: int, stride: int) -> None:
    if block_size < 1:
        raise OutOfRangeError(f"block_size={block_size} is out of range: at least 1")
    if not 1 <= stride <= block_size:
        raise OutOfRangeError(f"stride={stride} is out of range: 1 to block_size={block_size}")


def _shape(span: Window) -> tuple[int, int]:
    begin, end, trg_len = span
    return end - begin, trg_len


def _scored(length: int, trg_len: int) -> tuple[int, int]:
    """``(first, keep)``: the first scored position of a window of ``length`` tokens, and how
    many positions' logits predict the scored tokens (from ``first - 1``; the last position's
    logits come along, unused)."""
    first = max(1, length - trg_len)
    return first, length - first + 1


def _pt_nll_sum(model: Any) -> NllSum:
    import torch

    def nll_sum(window_ids: np.ndarray, trg_len: int) -> tuple[float, int]:
        rows, length = window_ids.shape
        first, keep = _scored(length, trg_len)
        ids = torch.as_tensor(window_ids, device=model.device)
        training = model.training
        model.eval()  # no dropout; a model in training mode goes back to it
        try:
            with torch.inference_mode():
                logits = model(input_ids=ids, logits_to_keep=keep).logits[:, :-1]  # (B, keep-1, V)
                nll = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    ids[:, first:].reshape(-1),
                    reduction="none",
                )
                return nll.double().sum().item(), rows * (length - first)
        finally:
            model.train(training)

    return nll_sum


def _tf_nll_sum(model: Any) -> NllSum:
    import tensorflow as tf

    rule = getattr(model, "jit_compile_for", None)
    jit = bool(rule("forward")) if callable(rule) else True
    programs: dict[tuple[int, int, int], Any] = {}

    def program(rows: int, length: int, trg_len: int) -> Any:
        first, keep = _scored(length, trg_len)

        def step(ids: Any) -> Any:
            logits = model(ids, logits_to_keep=keep, training=False)["logits"][:, :-1]
            return tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=ids[:, first:], logits=tf.cast(logits, tf.float32)
            )  # (B, keep - 1)

        spec = tf.TensorSpec((rows, length), tf.int32)
        return tf.function(step, input_signature=[spec], jit_compile=jit, autograph=False)

    def nll_sum(window_ids: np.ndarray, trg_len: int) -> tuple[float, int]:
        rows, length = window_ids.shape
        key = (rows, length, trg_len)
        if key not in programs:
            programs[key] = program(*key)
        nll = programs[key](tf.constant(window_ids, tf.int32)).numpy()
        return float(nll.astype(np.float64).sum()), int(nll.size)

    return nll_sum
