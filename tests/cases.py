"""Shared test tables. Tolerances live here and nowhere else.

Raising a tolerance is a reviewed change to this file, with the reason next to the number;
tests never pass their own ``atol``.
"""

from __future__ import annotations

import numpy as np

from gpt2_dual import GPT2Config
from gpt2_dual.heads import HEAD_SPECS

#: Tiny model: every size distinct, so a missing transpose or a swapped axis cannot hide.
TINY = dict(vocab_size=99, n_positions=24, n_embd=32, n_layer=2, n_head=4, n_inner=40, num_labels=3)
BATCH, SEQ = 3, 7
HEADS = tuple(HEAD_SPECS)

#: Max absolute difference allowed, by dtype of the computation compared.
ATOL = {
    "float32": 1e-5,  # the product's promise: fp32 logits within 1e-5 of transformers
    "bfloat16": 2e-2,  # bf16 against fp32 of the same framework
    "float16": 1e-2,  # fp16 against fp32 of the same framework
}
#: Relative part of the bound; none for float32, where the promise is absolute.
RTOL = {"float32": 0.0, "bfloat16": 2e-2, "float16": 1e-2}


def tiny_config(**changes) -> GPT2Config:
    """The tiny config with dropout off (deterministic forward) and ``changes`` applied."""
    base = dict(TINY, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
    return GPT2Config(**{**base, **changes})


def assert_close(actual, expected, dtype: str = "float32", what: str = "") -> None:
    """Fail with the max abs difference and the worst index, never a mean."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.size == 0:
        return
    diff = np.abs(actual - expected)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    limit = ATOL[dtype] + RTOL[dtype] * np.abs(expected)
    assert np.all(diff <= limit), (
        f"{what}: max |diff| {diff[worst]:.3g} at {worst} (actual {actual[worst]:.6g}, "
        f"expected {expected[worst]:.6g}) exceeds atol {ATOL[dtype]} + rtol {RTOL[dtype]}"
    )


#: Init statistics: how many standard errors a sample's std and mean may stray from the draw's.
INIT_SIGMAS = 6  # seeded draws never move; unseeded ones fail about once in 1e8 runs


def assert_normal_init(values, std: float, what: str = "") -> None:
    """``values`` look like draws of N(0, std): the sample std within INIT_SIGMAS standard
    errors (relative error 1/sqrt(2n)) and the mean within INIT_SIGMAS * std / sqrt(n)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    rel = values.std() / std - 1
    assert abs(rel) < INIT_SIGMAS / np.sqrt(2 * n), f"{what}: std {values.std():.4g} != {std} (n={n})"
    mean = values.mean()
    assert abs(mean) < INIT_SIGMAS * std / np.sqrt(n), f"{what}: mean {mean:.4g} (std {std}, n={n})"
