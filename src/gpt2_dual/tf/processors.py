"""Logits processors and token choice of ``generate`` in TensorFlow, traceable into one XLA
program (fixed shapes, no host reads).

Shapes: R rows (batch x beams), S history slots (the fixed-size buffer of the loop), V
vocabulary. The history is ``seq`` ``(R, S)`` with ``ok`` ``(R, S)`` bool: True at real tokens
written so far (False at left padding and at slots not written yet); ``cur`` is the 0-d slot
the next token goes to, ``step`` the number of new tokens before it.

Rules and order are transformers' (``logits_process.py`` of 4.57, as ``gpt2_dual.pt``):
repetition penalty, no-repeat n-gram, bad words, minimum new tokens; then, when sampling,
temperature, top-k, top-p, typical-p. One deliberate difference, shared with PyTorch: padding
is not part of the history, so a row of a left-padded batch is processed as it is alone.

What a call uses is split in two: ``ProcessorSpec`` (static, hashable: which processors, the
ids they name, ``top_k``), which selects the compiled program, and ``values`` (0-d tensors:
penalty, temperature, ...), its inputs, so changing a number does not compile again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from gpt2_dual.generation.config import GenerationConfig
from gpt2_dual.generation.fields import Resolved
from gpt2_dual.tf.topk import bisect, kth_largest, sortable

__all__ = ["ProcessorSpec", "choose", "gumbel", "process", "values"]

NEG_INF = float("-inf")


@dataclass(frozen=True)
class ProcessorSpec:
    """The static part of the processors of one call (part of the compiled program's key).

    Attributes:
        repetition: apply ``repetition_penalty``.
        ngram: ``no_repeat_ngram_size`` (0: off).
        bad_single: banned ids (bad words of one token).
        bad_multi: bad words of several tokens.
        min_new: hold end-of-sequence ids back for ``min_new_tokens`` steps.
        eos: the end-of-sequence ids.
        temperature, top_p, typical: apply that warper.
        top_k: ``top_k`` (0: off).
        keep: warpers' ``min_tokens_to_keep``.
    """

    repetition: bool = False
    ngram: int = 0
    bad_single: tuple[int, ...] = ()
    bad_multi: tuple[tuple[int, ...], ...] = ()
    min_new: bool = False
    eos: tuple[int, ...] = ()
    temperature: bool = False
    top_k: int = 0
    top_p: bool = False
    typical: bool = False
    keep: int = 1

    @classmethod
    def build(cls, config: GenerationConfig, resolved: Resolved) -> ProcessorSpec:
        """The processors transformers would run for ``config`` (none that would do nothing)."""
        eos = resolved.eos_token_ids
        # transformers drops a bad word that is just an end-of-sequence id
        words = [tuple(w) for w in config.bad_words_ids or () if not (len(w) == 1 and w[0] in eos)]
        sample = config.do_sample
        beams = config.num_beams > 1
        return cls(
            repetition=config.repetition_penalty != 1.0,
            ngram=config.no_repeat_ngram_size,
            bad_single=tuple(sorted({w[0] for w in words if len(w) == 1})),
            bad_multi=tuple(dict.fromkeys(w for w in words if len(w) > 1)),
            min_new=resolved.min_new_tokens > 0 and bool(eos),
            eos=eos,
            temperature=sample and config.temperature != 1.0,
            top_k=config.top_k if sample else 0,
            top_p=sample and config.top_p < 1.0,
            typical=sample and config.typical_p < 1.0,
            keep=(len(eos) + 1 if eos else 2) if beams else 1,
        )


def values(config: GenerationConfig, resolved: Resolved) -> dict[str, tf.Tensor]:
    """The numbers of one call as 0-d tensors (inputs of the compiled program)."""
    f32 = np.float32
    return {
        "repetition_penalty": tf.constant(f32(config.repetition_penalty)),
        "temperature": tf.constant(f32(config.temperature)),
        "top_p_floor": tf.constant(f32(1.0 - config.top_p)),  # transformers' `<= 1 - top_p`
        "typical_p": tf.constant(f32(config.typical_p)),
        "length_penalty": tf.constant(float(config.length_penalty), tf.float64),
        "min_new_tokens": tf.constant(resolved.min_new_tokens, tf.int32),
    }


def process(
    spec: ProcessorSpec,
    vals: dict[str, tf.Tensor],
    seq: tf.Tensor,
    ok: tf.Tensor,
    cur: tf.Tensor,
    step: tf.Tensor,
    scores: tf.Tensor,
) -> tf.Tensor:
    """Run the processors of ``spec`` in transformers' order on ``scores`` ``(R, V)``."""
    if spec.repetition:
        scores = _repetition_penalty(seq, ok, scores, vals["repetition_penalty"])
    if spec.ngram:
        scores = _no_repeat_ngram(seq, ok, cur, scores, spec.ngram)
    if spec.bad_single or spec.bad_multi:
        scores = _bad_words(spec, seq, ok, cur, scores)
    if spec.min_new:
        held = (step < vals["min_new_tokens"]) & _id_mask(spec.eos, scores.shape[-1])
        scores = tf.where(held[None, :], NEG_INF, scores)
    if spec.temperature:
        scores = scores / vals["temperature"]
    if spec.top_k:
        scores = _top_k(scores, min(max(spec.top_k, spec.keep), scores.shape[-1]))
    if spec.top_p:
        scores = _top_p(scores, vals["top_p_floor"], spec.keep)
    if spec.typical:
        scores = _typical(scores, vals["typical_p"], spec.keep)
    return scores


def _id_mask(ids: tuple[int, ...], vocab: int) -> tf.Tensor:
    """``(V,)`` bool, True at ``ids``."""
    mask = np.zeros(vocab, dtype=bool)
    mask[list(ids)] = True
    return tf.constant(mask)


def _row_scatter(ids: tf.Tensor, weights: tf.Tensor, vocab: int) -> tf.Tensor:
    """``(R, V)`` float32: per row, the sum of ``weights`` ``(R, L)`` at ids ``(R, L)``."""
    rows = tf.broadcast_to(tf.range(tf.shape(ids)[0])[:, None], tf.shape(ids))
    index = tf.stack([rows, ids], axis=-1)
    zeros = tf.zeros([tf.shape(ids)[0], vocab], tf.float32)
    return tf.tensor_scatter_nd_add(zeros, index, tf.cast(weights, tf.float32))


def _repetition_penalty(seq, ok, scores, penalty):
    """Divide positive (multiply negative) scores of ids in the history by ``penalty``."""
    seen = _row_scatter(seq, ok, scores.shape[-1]) > 0
    penalized = tf.where(scores < 0, scores * penalty, scores / penalty)
    return tf.where(seen, penalized, scores)


def _tail(seq, ok, cur, k: int):
    """The ``k`` slots before ``cur``: ids ``(R, k)`` and whether all are real ``(R,)``."""
    pos = cur - k + tf.range(k)
    safe = tf.maximum(pos, 0)
    ids = tf.gather(seq, safe, axis=1)
    real = tf.reduce_all(tf.gather(ok, safe, axis=1) & (pos >= 0)[None, :], axis=1)
    return ids, real


def _no_repeat_ngram(seq, ok, cur, scores, n: int):
    """Ban every id that would complete an ``n``-gram already in the history."""
    width = seq.shape[1] - n + 1
    if width <= 0:
        return scores
    windows = tf.stack([seq[:, i : i + width] for i in range(n)], axis=-1)  # (R, W, n)
    windows_ok = tf.reduce_all(tf.stack([ok[:, i : i + width] for i in range(n)], -1), -1)
    key, key_ok = _tail(seq, ok, cur, n - 1)  # (R, n - 1)
    same = tf.reduce_all(tf.equal(windows[..., : n - 1], key[:, None, :]), axis=-1)
    match = same & windows_ok & key_ok[:, None]  # (R, W)
    banned = _row_scatter(windows[..., n - 1], match, scores.shape[-1]) > 0
    return tf.where(banned, NEG_INF, scores)


def _bad_words(spec: ProcessorSpec, seq, ok, cur, scores):
    """Ban single bad ids, and the last id of a bad word whose prefix ends the history (only
    once the history is as long as the word, as transformers)."""
    vocab = scores.shape[-1]
    banned = tf.zeros_like(scores, dtype=tf.bool)
    if spec.bad_single:
        banned |= _id_mask(spec.bad_single, vocab)[None, :]
    length = tf.reduce_sum(tf.cast(ok, tf.int32), axis=1)  # (R,) real tokens so far
    for word in spec.bad_multi:
        k = len(word) - 1
        ids, real = _tail(seq, ok, cur, k)
        hit = tf.reduce_all(tf.equal(ids, tf.constant(word[:-1], ids.dtype)), 1)
        hit &= real & (length > k)
        banned |= hit[:, None] & _id_mask((word[-1],), vocab)[None, :]
    return tf.where(banned, NEG_INF, scores)


def _top_k(scores, k: int):
    """Keep the ``k`` best scores (and those tied with the ``k``-th)."""
    keys = sortable(scores)
    return tf.where(keys < kth_largest(keys, k), NEG_INF, scores)


def _mass_up_to(keys: tf.Tensor, probs: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
    """``t`` ``(R, 1)`` -> ``(R,)``: probability of the ids whose key is at most ``t``."""
    return lambda t: tf.reduce_sum(tf.where(keys <= t, probs, 0.0), axis=1)


def _top_p(scores, floor, keep: int):
    """Keep the best ids whose probabilities reach ``1 - floor`` (at least ``keep``): remove
    the worst ids while their total probability stays at most ``floor`` (transformers' sorted
    cumulative sum, found by bisection)."""
    keys = sortable(scores)
    mass = _mass_up_to(keys, tf.nn.softmax(scores, axis=-1))
    cut = bisect(lambda t: mass(t) <= floor, tf.shape(scores)[0])
    remove = (keys <= cut) & (keys < kth_largest(keys, keep))
    return tf.where(remove, NEG_INF, scores)


def _typical(scores, mass, keep: int):
    """Locally typical sampling: keep the ids whose surprise is closest to the entropy, up to
    probability ``mass`` (at least ``keep``)."""
    logp = tf.nn.log_softmax(scores, axis=-1)
    terms = logp * tf.exp(logp)
    entropy = -tf.reduce_sum(tf.where(tf.math.is_nan(terms), 0.0, terms), -1, keepdims=True)
    keys = sortable(tf.abs(-logp - entropy))  # shifted scores, >= 0
    rows = tf.shape(scores)[0]
    up_to = _mass_up_to(keys, tf.nn.softmax(scores, axis=-1))
    below = bisect(lambda t: up_to(t) < mass, rows)  # ids in the order before the cut
    bound = tf.reduce_min(tf.where(keys > below, keys, tf.int32.max), axis=1, keepdims=True)
    kept = bisect(lambda t: tf.reduce_sum(tf.cast(keys <= t, tf.int32), 1) < keep, rows) + 1
    return tf.where((keys > bound) & (keys > kept), NEG_INF, scores)


def gumbel(shape, seed: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """Gumbel(0, 1) noise ``shape`` float32 from ``seed`` ``(2,)`` int64 and ``step``.

    Stateless (Philox): the same seed and step give the same noise with XLA and without (the
    random bits are drawn as integers, identical on both paths, and mapped to (0, 1) here).
    """
    key = tf.stack([seed[0], seed[1] + tf.cast(step, tf.int64)])
    bits = tf.random.stateless_uniform(
        shape, seed=key, minval=None, maxval=None, dtype=tf.int32, alg="philox"
    )
    uniform = (tf.cast(tf.bitwise.bitwise_and(bits, 0x7FFFFF), tf.float32) + 0.5) * 2.0**-23
    return -tf.math.log(-tf.math.log(uniform))


def choose(scores: tf.Tensor, sample: bool, seed: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """``(R,)`` int32 next ids: argmax, or a draw from ``softmax(scores)`` (Gumbel-max)."""
    if sample:
        scores = scores + gumbel(tf.shape(scores), seed, step)
    return tf.argmax(scores, axis=-1, output_type=tf.int32)
