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
    # Keras int8 (model.quantize("int8"): int8 weights per output column, activations per row,
    # absmax/127) against float32 of the same model, at the tests' weights (std 0.2, ~5x
    # GPT-2's, so larger activations): seen 0.08 at |x| <= 4.5. Exactness is the job of
    # "keras_int8_rule"; this row bounds the size of int8's own error.
    "keras_int8": 0.15,
    # The same Keras int8 rule recomputed in numpy (float64) from the model's int8 kernels and
    # scales: the same integers, only float32 rounding differs (seen: 1e-6 at |x| <= 4.5). One
    # activation rounded the other way (x * scale within float32 noise of a .5 boundary) would
    # cost ~5e-3 at the tests' weights and fail here: none occurs with the tests' inputs.
    "keras_int8_rule": 2e-5,
    # bitsandbytes 4-bit/8-bit (float32 model) against transformers' bitsandbytes model: the
    # quantized weights are equal byte for byte, only our float32 parts' summation order differs
    # (1e-5; seen: 0 for the LM, 2e-7 for a classifier); a quantized layer rounds its input to
    # bfloat16 (4-bit CPU kernel) or int8 (8-bit), so such a difference may move one rounding
    # step: the relative part is one bfloat16 step, 2^-8.
    "bnb": 1e-5,
    # the same with the layers kept in full precision in float16 (attention, LayerNorm and head
    # of two implementations in float16; seen 3e-3 at |logit| <= 1.6): float16's own row
    "bnb_float16": 1e-2,
}
#: Relative part of the bound; none for float32, where the promise is absolute.
RTOL = {
    "float32": 0.0, "bfloat16": 2e-2, "float16": 1e-2, "keras_int8": 5e-2, "keras_int8_rule": 0.0,
    "bnb": 2**-8, "bnb_float16": 1e-2,
}


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
