"""gpt2_dual.tf's sampler on its own, below ``generate``.

- The Gumbel-max draw (``processors.choose``) follows ``softmax`` of the filtered scores: a
  chi-square test of many seeded draws from one small logits vector, against the probabilities
  of the numpy reference filters (``tests/generation_ref.py``), with a threshold that a uniform
  sampler and a sampler that skips the filters are shown, in the test, to fail.
- The bisection top-k (``topk.top_k``) against ``tf.math.top_k``, and the top-k, top-p and
  typical-p processors against the numpy references, on rows with ties, ``-inf`` and ``-0.0``.
  One documented difference: a tie at the top-p cut is kept whole (see
  ``test_top_p_equals_numpy_reference_but_keeps_a_tie_at_the_cut_whole``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import generation_ref as ref
from cases import assert_close

tf = pytest.importorskip("tensorflow")

from gpt2_dual import GenerationConfig  # noqa: E402
from gpt2_dual.tf import processors, topk  # noqa: E402

NEG_INF = -np.inf


def tf_filters(scores: np.ndarray, **options) -> np.ndarray:
    """The TF processors ``generate`` would run for ``do_sample=True`` and ``options``, applied
    to ``scores`` ``(R, V)`` (no history: the sampling filters only)."""
    config = GenerationConfig(do_sample=True, max_new_tokens=1, **options)
    resolved = config.resolve(prompt_length=1, n_positions=8, vocab_size=scores.shape[-1])
    spec = processors.ProcessorSpec.build(config, resolved)
    rows = scores.shape[0]
    seq, ok = tf.zeros([rows, 1], tf.int32), tf.zeros([rows, 1], tf.bool)
    vals = processors.values(config, resolved)
    one, zero = tf.constant(1), tf.constant(0)
    return processors.process(spec, vals, seq, ok, one, zero, tf.constant(scores)).numpy()


def assert_same_filter(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected), err_msg=what)
    assert_close(got[np.isfinite(got)], expected[np.isfinite(expected)], what=what)


# ---------------------------------------------------------------------------------------------
# The draw: chi-square of many seeded draws
# ---------------------------------------------------------------------------------------------

#: A tie (2.2, 2.2), a removed -inf, a -0.0; after the filters 5 tokens are left.
LOGITS = np.array([3.0, 2.2, 2.2, 1.0, 0.5, -0.0, NEG_INF, -1.0, -2.5], np.float32)
FILTERS = dict(temperature=0.8, top_k=7, top_p=0.97)
DRAWS = 20_000
#: Upper 1e-6 tail of the standard normal: a correct sampler with any other seed fails the
#: threshold below less than once in a million runs (this one's seed is fixed: it never moves).
Z_1E6 = 4.753


def chi_square_limit(df: int) -> float:
    """The chi-square value of upper tail about 1e-6 (Wilson-Hilferty's approximation; on the
    safe side here: the exact tail at df=4 is 4.2e-7)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + Z_1E6 * math.sqrt(h)) ** 3


def chi_square(tokens: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's statistic of ``tokens`` against ``probs`` ``(V,)``; inf if a token of
    probability 0 was drawn."""
    counts = np.bincount(tokens, minlength=probs.size).astype(np.float64)
    if counts[probs == 0].any():
        return math.inf
    expected = len(tokens) * probs[probs > 0]
    return float(((counts[probs > 0] - expected) ** 2 / expected).sum())


def tf_draws(scores: np.ndarray, seed: int, step: int, jit: bool = False) -> np.ndarray:
    """``DRAWS`` tokens from ``softmax(scores)`` ``(V,)`` by gpt2_dual.tf's Gumbel-max, one
    row each (the noise of one seed and step covers every row and token)."""
    batch = tf.constant(np.tile(scores, (DRAWS, 1)))
    key = tf.constant([seed, 0], tf.int64)

    def draw(batch, key, step):
        return processors.choose(batch, True, key, step)

    fn = tf.function(draw, jit_compile=True) if jit else draw
    return fn(batch, key, tf.constant(step)).numpy()


def test_gumbel_max_draws_follow_the_filtered_softmax():
    filtered = ref.warp(LOGITS[None], **{f"{k}_": v for k, v in FILTERS.items()})[0]
    assert_same_filter(tf_filters(LOGITS[None], **FILTERS)[0], filtered, "TF filters")
    kept = np.isfinite(filtered)
    assert kept.sum() == 5 and not kept[5:].any()  # top_k drops -inf, -2.5; top_p -0.0, -1.0
    probs = np.where(kept, np.exp(filtered.astype(np.float64) - filtered[kept].max()), 0.0)
    probs /= probs.sum()
    limit = chi_square_limit(int(kept.sum()) - 1)

    tokens = tf_draws(filtered, seed=1234, step=0)
    assert chi_square(tokens, probs) < limit, np.bincount(tokens, minlength=LOGITS.size)
    later = tf_draws(filtered, seed=1234, step=3)  # another step: other noise, same law
    assert (later != tokens).any() and chi_square(later, probs) < limit

    # The test has the power to fail: a uniform sampler over the same kept tokens fails it
    # in expectation (its expected statistic is at least DRAWS x the distance below) and in
    # this draw ...
    uniform = kept / kept.sum()
    distance = float((((uniform - probs) ** 2)[kept] / probs[kept]).sum())
    assert DRAWS * distance > 10 * limit
    rng = np.random.default_rng(0)
    assert chi_square(rng.choice(np.flatnonzero(kept), DRAWS), probs) > limit
    # ... and so do one that skips the filters (it draws removed tokens) and one that keeps
    # the right tokens but skips the temperature (wrong proportions only).
    assert chi_square(tf_draws(LOGITS, seed=1234, step=0), probs) == math.inf
    no_temperature = np.where(kept, LOGITS, NEG_INF)
    assert chi_square(tf_draws(no_temperature, seed=1234, step=0), probs) > limit


def test_xla_draws_the_same_tokens():
    filtered = ref.warp(LOGITS[None], **{f"{k}_": v for k, v in FILTERS.items()})[0]
    np.testing.assert_array_equal(
        tf_draws(filtered, seed=7, step=2, jit=True), tf_draws(filtered, seed=7, step=2)
    )


# ---------------------------------------------------------------------------------------------
# Top-k, top-p, typical-p with ties, -inf and -0.0
# ---------------------------------------------------------------------------------------------


def hard_rows() -> np.ndarray:
    """``(R, 12)`` float32 rows full of ties, with ``-inf`` and ``-0.0`` next to ``0.0``."""
    fixed = [
        [0.0, -0.0, -1.0, NEG_INF, 2.0, 2.0, -0.0, 0.0, 1.0, 1.0, NEG_INF, -1.0],
        [1.0] * 12,
        [NEG_INF] * 10 + [0.5, -0.0],
        [-0.0, 0.0] * 6,
        [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 0.0, -0.0, -3.0, -3.0, NEG_INF, -5.0],
    ]
    rng = np.random.default_rng(0)
    values = np.array([NEG_INF, -2.0, -0.5, -0.0, 0.0, 0.5, 1.5], np.float32)
    drawn = rng.choice(values, size=(6, 12))
    drawn[:, 0] = 1.5  # every row has a finite score
    return np.concatenate([np.array(fixed, np.float32), drawn.astype(np.float32)])


def test_hard_rows_hold_what_they_claim():
    rows = hard_rows()
    negative_zero = (rows == 0) & np.signbit(rows)
    assert negative_zero.any(1).sum() >= 5 and np.isneginf(rows).any(1).sum() >= 5
    assert all(len(np.unique(r)) < len(r) for r in rows)  # ties in every row


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 12])
def test_bisection_top_k_equals_tf_math_top_k(k):
    rows = tf.constant(hard_rows())
    values, index = topk.top_k(rows, k)
    expected_values, expected_index = tf.math.top_k(rows, k)
    np.testing.assert_array_equal(index, expected_index)  # ties: the lower index first
    np.testing.assert_array_equal(np.signbit(values), np.signbit(expected_values))
    np.testing.assert_array_equal(values, expected_values)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 12])
@pytest.mark.parametrize("beams", [1, 2], ids=["keep1", "keep2"])
def test_top_k_filter_equals_numpy_reference(k, beams):
    """Ties with the k-th score stay, ``-0.0`` ties with ``0.0`` (transformers' ``<``)."""
    rows = hard_rows()
    got = tf_filters(rows, top_k=k, num_beams=beams)
    assert_same_filter(got, ref.top_k(rows, k, keep=beams), f"top_k={k} keep={beams}")


@pytest.mark.parametrize("mass", [0.2, 0.45, 0.7, 0.93])
@pytest.mark.parametrize("beams", [1, 2], ids=["keep1", "keep2"])
def test_typical_p_filter_equals_numpy_reference(mass, beams):
    rows = hard_rows()
    got = tf_filters(rows, typical_p=mass, top_k=0, num_beams=beams)
    assert_same_filter(got, ref.typical_p(rows, mass, keep=beams), f"typical_p={mass}")


@pytest.mark.parametrize("p", [0.1, 0.3, 0.55, 0.8, 0.93])
@pytest.mark.parametrize("beams", [1, 2], ids=["keep1", "keep2"])
def test_top_p_equals_numpy_reference_but_keeps_a_tie_at_the_cut_whole(p, beams):
    """transformers (and the reference) sort the scores and remove a prefix of the sorted
    order, so a tie at the cut can be split, some of the equal tokens kept and some removed,
    by the sort's order of equal values. gpt2_dual.tf finds the cut by bisection over score
    values and keeps such a tie whole: it keeps exactly the tokens scored at least as high as
    the lowest one transformers keeps. Without a tie at the cut, the two are the same."""
    rows = hard_rows()
    expected = ref.top_p(rows, p, keep=beams)
    lowest_kept = np.where(np.isfinite(expected), rows, np.inf).min(-1, keepdims=True)
    whole_ties = np.where(rows >= lowest_kept, rows, NEG_INF)
    got = tf_filters(rows, top_p=p, top_k=0, num_beams=beams)
    assert_same_filter(got, whole_ties, f"top_p={p} keep={beams}")
    split = (np.isfinite(whole_ties) != np.isfinite(expected)).any(-1)
    same = ~split
    assert same.any() and split.any()
    assert_same_filter(got[same], expected[same], f"top_p={p}: rows without a split tie")


def test_top_p_tie_at_the_cut_is_the_documented_difference():
    """Four equal tokens and top_p=0.3: transformers keeps two of them, gpt2_dual.tf all four."""
    rows = np.zeros((1, 4), np.float32)
    assert np.isfinite(ref.top_p(rows, 0.3)).sum() == 2
    assert np.isfinite(tf_filters(rows, top_p=0.3, top_k=0)).sum() == 4
