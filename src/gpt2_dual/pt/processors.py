"""Logits processors of ``generate``: transformers' rules, applied in transformers' order.

Shapes: R rows (batch x beams), L tokens so far, V vocabulary. Every processor takes the
token history ``seq`` ``(R, L)``, its validity ``ok`` ``(R, L)`` (False at left padding) and
``scores`` ``(R, V)`` float32, and returns new scores.

Order (as transformers' ``_get_logits_processor``): repetition penalty, no-repeat n-gram, bad
words, minimum length; then, when sampling, temperature, top-k, top-p, typical-p. One
deliberate difference: padding positions (``ok`` False) are not part of the history, so a row of
a left-padded batch is processed as it would be alone (transformers counts the pad tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from gpt2_dual.generation.config import GenerationConfig
from gpt2_dual.generation.fields import Resolved

__all__ = ["Processor", "build_processors"]

#: ``(seq, ok, scores, step) -> scores``; ``step`` counts new tokens before this one.
Processor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

NEG_INF = float("-inf")


def _presence(seq: torch.Tensor, ok: torch.Tensor, vocab: int) -> torch.Tensor:
    """``(R, V)`` bool: which ids occur at valid positions of each row."""
    counts = torch.zeros(seq.shape[0], vocab, dtype=torch.float32, device=seq.device)
    return counts.scatter_add_(1, seq, ok.float()) > 0


def repetition_penalty(penalty: float) -> Processor:
    """Divide positive (multiply negative) scores of tokens already in the row by ``penalty``."""

    def apply(seq, ok, scores, step):
        seen = _presence(seq, ok, scores.shape[-1])
        penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
        return torch.where(seen, penalized, scores)

    return apply


def no_repeat_ngram(n: int) -> Processor:
    """Ban every token that would complete an ``n``-gram already in the row."""

    def apply(seq, ok, scores, step):
        length = seq.shape[1]
        if length < n:  # no n-gram yet
            return scores
        windows = seq.unfold(1, n, 1)  # (R, L - n + 1, n)
        windows_ok = ok.unfold(1, n, 1).all(-1)
        key = seq[:, length - n + 1 :]  # (R, n - 1), the last n - 1 tokens
        key_ok = ok[:, length - n + 1 :].all(-1, keepdim=True)
        match = (windows[..., : n - 1] == key[:, None, :]).all(-1) & windows_ok & key_ok
        banned = torch.zeros_like(scores).scatter_add_(1, windows[..., n - 1], match.float())
        return scores.masked_fill(banned > 0, NEG_INF)

    return apply


def bad_words(words: Sequence[Sequence[int]], eos: Sequence[int]) -> Processor:
    """Ban the last token of each bad sequence when the row ends with the rest of it; a bad
    sequence that is just an end-of-sequence id is ignored (as transformers does)."""
    words = [list(w) for w in words if not (len(w) == 1 and w[0] in eos)]
    single = [w[0] for w in words if len(w) == 1]
    multi = [w for w in words if len(w) > 1]

    def apply(seq, ok, scores, step):
        banned = torch.zeros_like(scores, dtype=torch.bool)
        if single:
            banned[:, single] = True
        for word in multi:
            if seq.shape[1] < len(word):  # longer than the history: ignored, as transformers
                continue
            prefix = torch.tensor(word[:-1], device=seq.device)
            k = len(prefix)
            hit = (seq[:, -k:] == prefix).all(-1) & ok[:, -k:].all(-1)
            banned[:, word[-1]] |= hit
        return scores.masked_fill(banned, NEG_INF)

    return apply


def min_new_tokens(count: int, eos: Sequence[int]) -> Processor:
    """No end-of-sequence token before ``count`` new tokens."""
    eos = list(eos)

    def apply(seq, ok, scores, step):
        if step >= count:
            return scores
        scores = scores.clone()
        scores[:, eos] = NEG_INF
        return scores

    return apply


def temperature(value: float) -> Processor:
    return lambda seq, ok, scores, step: scores / value


def top_k(k: int, keep: int) -> Processor:
    """Keep the ``max(k, keep)`` best scores (ties with the last kept score stay)."""

    def apply(seq, ok, scores, step):
        kth = torch.topk(scores, min(max(k, keep), scores.shape[-1]))[0][..., -1, None]
        return scores.masked_fill(scores < kth, NEG_INF)

    return apply


def top_p(p: float, keep: int) -> Processor:
    """Keep the smallest set of best tokens whose probability reaches ``p`` (at least ``keep``)."""

    def apply(seq, ok, scores, step):
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - p)
        remove[..., -keep:] = False
        return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)

    return apply


def typical_p(mass: float, keep: int) -> Processor:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy,
    up to probability ``mass``."""

    def apply(seq, ok, scores, step):
        logp = torch.log_softmax(scores, -1)
        entropy = -(logp * logp.exp()).nansum(-1, keepdim=True)
        shifted, order = torch.sort((-logp - entropy).abs(), descending=False)
        cumulative = scores.gather(-1, order).softmax(-1).cumsum(-1)
        last = (cumulative < mass).sum(1).clamp_(max=scores.shape[-1] - 1)
        remove = shifted > shifted.gather(1, last[:, None])
        remove[..., :keep] = False
        return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)

    return apply


def build_processors(config: GenerationConfig, resolved: Resolved) -> list[Processor]:
    """The processors one call needs, in transformers' order (none that would do nothing)."""
    eos = resolved.eos_token_ids
    found: list[Processor] = []
    if config.repetition_penalty != 1.0:
        found.append(repetition_penalty(config.repetition_penalty))
    if config.no_repeat_ngram_size > 0:
        found.append(no_repeat_ngram(config.no_repeat_ngram_size))
    if config.bad_words_ids:
        found.append(bad_words(config.bad_words_ids, eos))
    if resolved.min_new_tokens > 0 and eos:
        found.append(min_new_tokens(resolved.min_new_tokens, eos))
    if config.do_sample:
        keep = len(eos) + 1 if config.num_beams > 1 and eos else (2 if config.num_beams > 1 else 1)
        if config.temperature != 1.0:
            found.append(temperature(config.temperature))
        if config.top_k != 0:
            found.append(top_k(config.top_k, keep))
        if config.top_p < 1.0:
            found.append(top_p(config.top_p, keep))
        if config.typical_p < 1.0:
            found.append(typical_p(config.typical_p, keep))
    return found


def apply_all(
    processors: Sequence[Processor],
    seq: torch.Tensor,
    ok: torch.Tensor,
    scores: torch.Tensor,
    step: int,
) -> torch.Tensor:
    """Run ``processors`` in order."""
    for processor in processors:
        scores = processor(seq, ok, scores, step)
    return scores
