"""The "question-answering" pipeline: the best answer span of a context (transformers' outputs).

Each example is encoded as transformers' GPT-2 fast tokenizer encodes a pair: the question's
tokens, then the context's (no separator). A context too long for ``max_seq_len`` is cut into
windows of the context tokens that overlap by ``doc_stride`` tokens, each run with the whole
question. Per window, start and end logits outside the context are masked, each is softmaxed,
and a span ``(s, e)`` scores ``p_start[s] * p_end[e]`` with ``s <= e < s + max_answer_len``.
Answers are character spans of the context: by default widened to whole words (GPT-2's
pre-tokenizer words, so a leading space belongs to its word), and spans of the same text
(ignoring case) add their scores.

Shapes: Q question tokens, W context tokens in a window, T = Q + W.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpt2_dual.pipelines.base import Pipeline, encode_with_offsets, word_ids

__all__ = ["QuestionAnsweringPipeline", "char_span", "window_starts"]

NULL_SCORE = 1_000_000.0  # transformers' starting "minimum null score"


class QuestionAnsweringPipeline(Pipeline):
    """Extract answers with ``GPT2ForQuestionAnswering``.

    Call forms: ``pipe(question=str, context=str)``; ``question`` a list with one context or a
    list of contexts of the same length; ``pipe(question, context)``; ``pipe({"question": ...,
    "context": ...})`` or a list of such dicts. One example gives a dict (or a list of ``top_k``
    dicts), several give a list of those.

    Call options:
        top_k: answers per example (default 1).
        max_answer_len: longest answer in tokens (default 15).
        max_seq_len: tokens per window, question included (default: 384, the tokenizer's
            ``model_max_length`` and the model's ``n_positions``, whichever is smallest).
        doc_stride: tokens shared by consecutive windows (default ``min(max_seq_len // 2,
            128)``).
        handle_impossible_answer: also offer the empty answer ``{"answer": "", "start": 0,
            "end": 0}`` with the lowest null score seen.
        align_to_words: widen answers to whole words (default True).

    Returns:
        ``{"score": float, "start": int, "end": int, "answer": str}`` with ``answer ==
        context[start:end]``.

    Example:
        >>> qa(question="Who jumps?", context="The quick brown fox jumps.")  # doctest: +SKIP
        {'score': 0.41, 'start': 15, 'end': 19, 'answer': ' fox'}
    """

    task = "question-answering"
    options = (
        "top_k",
        "max_answer_len",
        "max_seq_len",
        "doc_stride",
        "handle_impossible_answer",
        "align_to_words",
    )

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        """Answer each (question, context) example; see the class docstring."""
        params = self._options(kwargs)
        examples = _examples(args, question, context)
        results = [self._answer(q, c, params) for q, c in examples]
        return results[0] if len(results) == 1 else results

    def _answer(self, question: str, context: str, params: dict[str, Any]) -> Any:
        top_k = _positive(params.get("top_k", 1), "top_k")
        max_answer_len = _positive(params.get("max_answer_len", 15), "max_answer_len")
        max_seq_len = params.get("max_seq_len") or min(self.max_positions, 384)
        stride = params.get("doc_stride")
        stride = min(max_seq_len // 2, 128) if stride is None else stride
        if stride > max_seq_len:
            raise ValueError(f"doc_stride ({stride}) is larger than max_seq_len ({max_seq_len})")
        if max_seq_len > self.model.config.n_positions:
            raise ValueError(
                f"max_seq_len={max_seq_len} is more than the model's n_positions="
                f"{self.model.config.n_positions}"
            )
        q_ids = encode_with_offsets(self.tokenizer, question)[0]
        c_ids, offsets, _ = encode_with_offsets(self.tokenizer, context, add_special_tokens=False)
        width = max_seq_len - len(q_ids)
        if width < 1 or (width <= stride and len(c_ids) > width):
            raise ValueError(
                f"the question has {len(q_ids)} tokens: with max_seq_len={max_seq_len} and "
                f"doc_stride={stride} no window has room for new context tokens; shorten the "
                "question, raise max_seq_len or lower doc_stride"
            )
        words = word_ids(context, offsets)
        align = params.get("align_to_words", True)
        impossible = bool(params.get("handle_impossible_answer", False))
        pre_top = top_k * 2 + 10 if align else top_k
        answers: list[dict[str, Any]] = []
        null = NULL_SCORE
        for lo in window_starts(len(c_ids), width, stride):
            hi = min(lo + width, len(c_ids))
            ids = np.asarray([q_ids + c_ids[lo:hi]], dtype=np.int64)
            out = self.forward(ids, np.ones_like(ids))
            starts, ends, scores, window_null = _best_spans(
                out["start_logits"][0], out["end_logits"][0], len(q_ids), pre_top, max_answer_len
            )
            null = min(null, window_null)
            for s, e, score in zip(starts, ends, scores, strict=True):
                s, e = s - len(q_ids) + lo, e - len(q_ids) + lo  # context token indices
                start, end = char_span(offsets, words if align else None, s, e, (lo, hi))
                _add(answers, float(score), start, end, context[start:end])
        if impossible:
            answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _positive(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _examples(args: tuple[Any, ...], question: Any, context: Any) -> list[tuple[str, str]]:
    """The (question, context) pairs of a call, in the forms transformers accepts."""
    if args:
        if question is not None or context is not None:
            raise TypeError("pass the examples either positionally or as question=/context=")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            pairs = [tuple(args)]
        else:
            items = args[0] if len(args) == 1 else list(args)
            items = [items] if isinstance(items, dict) else items
            if not isinstance(items, list | tuple) or not all(isinstance(i, dict) for i in items):
                raise TypeError("examples must be dicts {'question': ..., 'context': ...}")
            try:
                pairs = [(i["question"], i["context"]) for i in items]
            except KeyError:
                raise KeyError("each example needs the keys 'question' and 'context'") from None
    elif isinstance(question, str) and isinstance(context, str):
        pairs = [(question, context)]
    elif isinstance(question, list) and isinstance(context, str):
        pairs = [(q, context) for q in question]
    elif isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise ValueError(f"{len(question)} questions but {len(context)} contexts")
        pairs = list(zip(question, context, strict=True))
    else:
        raise TypeError("question-answering takes question=str|list[str], context=str|list[str]")
    for q, c in pairs:
        if not isinstance(q, str) or not isinstance(c, str) or not q or not c:
            raise ValueError(f"question and context must be non-empty strings, got {q!r}, {c!r}")
    return pairs


def window_starts(length: int, width: int, stride: int) -> list[int]:
    """First context token of each window: windows of ``width`` tokens, consecutive ones sharing
    ``stride`` tokens, until the last reaches the end (``tokenizers``' overflow rule)."""
    starts = [0]
    while starts[-1] + width < length:
        starts.append(starts[-1] + width - stride)
    return starts


def _best_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, n_question: int, top: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The ``top`` best spans of one window ``(T,)`` logits: token indices ``(s, e)``, their
    scores, and the null score ``p_start[0] * p_end[0]`` (transformers' ``select_starts_ends``
    and ``decode_spans``)."""
    context = np.arange(start_logits.shape[0]) >= n_question
    probs = []
    for logits in (start_logits, end_logits):
        x = np.where(context, logits, -10000.0)
        x = np.exp(x - x.max())
        probs.append(x / x.sum())
    p_start, p_end = probs
    null = float(p_start[0] * p_end[0])
    p_start[0] = p_end[0] = 0.0
    candidates = np.tril(np.triu(np.outer(p_start, p_end)), max_len - 1)
    flat = candidates.ravel()
    if top == 1:
        order = np.array([np.argmax(flat)])
    elif flat.size < top:
        order = np.argsort(-flat)
    else:
        part = np.argpartition(-flat, top)[:top]
        order = part[np.argsort(-flat[part])]
    starts, ends = np.unravel_index(order, candidates.shape)
    keep = context[starts] & context[ends]
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[starts, ends], null


def char_span(
    offsets: list[tuple[int, int]],
    words: list[int] | None,
    s: int,
    e: int,
    window: tuple[int, int],
) -> tuple[int, int]:
    """Characters of the context tokens ``s..e``: from the start of ``s``'s word to the end of
    ``e``'s word (``words=None``: of the tokens themselves), only counting the tokens inside
    ``window = (lo, hi)``, as ``tokenizers``' ``word_to_chars`` does on an overflowing window."""
    if words is not None:
        lo, hi = window
        while s > lo and words[s - 1] == words[s]:
            s -= 1
        while e < hi - 1 and words[e + 1] == words[e]:
            e += 1
    return int(offsets[s][0]), int(offsets[e][1])


def _add(answers: list[dict[str, Any]], score: float, start: int, end: int, text: str) -> None:
    """Record an answer; one of the same text (ignoring case) gets the score added instead."""
    for answer in answers:
        if answer["answer"].lower() == text.lower():
            answer["score"] += score
            return
    answers.append({"score": score, "start": start, "end": end, "answer": text})
