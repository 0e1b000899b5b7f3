"""numpy references of transformers' sampling filters (``logits_process.py`` in 4.57), the
oracle of ``test_generate.py``'s filter tests. Each takes scores ``(R, V)`` float32 and returns
new scores, ``-inf`` where a token is removed. ``test_numpy_reference_is_transformers`` checks
these against transformers' own processors. Also the shared checkpoint, transformers' ``generate``
on numpy, and ``scores_equal`` for processed scores."""

from __future__ import annotations

import numpy as np

from cases import assert_close


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def temperature(scores: np.ndarray, t: float) -> np.ndarray:
    return scores / np.float32(t)


def top_k(scores: np.ndarray, k: int, keep: int = 1) -> np.ndarray:
    k = min(max(k, keep), scores.shape[-1])
    kth = np.sort(scores, -1)[:, -k][:, None]
    return np.where(scores < kth, -np.inf, scores).astype(np.float32)


def _unsort(remove_sorted: np.ndarray, order: np.ndarray) -> np.ndarray:
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, -1)
    return remove


def top_p(scores: np.ndarray, p: float, keep: int = 1) -> np.ndarray:
    order = np.argsort(scores, -1, kind="stable")  # ascending
    cumulative = np.cumsum(_softmax(np.take_along_axis(scores, order, -1)), -1)
    remove = cumulative <= 1 - p
    remove[:, -keep:] = False
    return np.where(_unsort(remove, order), -np.inf, scores).astype(np.float32)


def typical_p(scores: np.ndarray, mass: float, keep: int = 1) -> np.ndarray:
    logp = _log_softmax(scores.astype(np.float64))
    with np.errstate(invalid="ignore"):  # -inf * 0 is nan, dropped by nansum as transformers
        entropy = -np.nansum(logp * np.exp(logp), -1, keepdims=True)
    shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, -1, kind="stable")
    sorted_shifted = np.take_along_axis(shifted, order, -1)
    cumulative = np.cumsum(_softmax(np.take_along_axis(scores, order, -1)), -1)
    last = np.minimum((cumulative < mass).sum(1), scores.shape[-1] - 1)
    remove = sorted_shifted > sorted_shifted[np.arange(len(last)), last][:, None]
    remove[:, :keep] = False
    return np.where(_unsort(remove, order), -np.inf, scores).astype(np.float32)


def warp(scores: np.ndarray, *, temperature_: float = 1.0, top_k_: int = 50,
         top_p_: float = 1.0, typical_p_: float = 1.0) -> np.ndarray:  # fmt: skip
    """transformers' sampling warpers in its order, for ``do_sample=True`` with one beam."""
    if temperature_ != 1.0:
        scores = temperature(scores, temperature_)
    if top_k_:
        scores = top_k(scores, top_k_)
    if top_p_ < 1.0:
        scores = top_p(scores, top_p_)
    if typical_p_ < 1.0:
        scores = typical_p(scores, typical_p_)
    return scores


def scores_equal(actual, expected, what: str) -> None:
    """Processed scores agree: ``-inf`` (a removed token) at the same places, the finite
    values within the float32 tolerance of ``cases.py``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected), err_msg=what)
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], what=what)


def reference_checkpoint(
    folder, *, vocab: int, positions: int, eos: int, init: float, n_inner: int | None = 40
):
    """transformers' tiny GPT-2 LM with random weights, saved to ``folder``; the model.

    ``init`` (initializer_range) large keeps logits well apart, so a 1e-5 difference cannot
    flip an argmax or a beam ranking."""
    import torch
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=positions, n_embd=32, n_layer=2, n_head=4, n_inner=n_inner,
        initializer_range=init, bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def reference_generate(model, input_ids, attention_mask=None, **kwargs):
    """transformers' ``generate`` on numpy inputs: numpy ids, or its output object when
    ``return_dict_in_generate``."""
    import torch

    ids = torch.from_numpy(np.asarray(input_ids))
    mask = torch.ones_like(ids) if attention_mask is None else torch.from_numpy(attention_mask)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, **kwargs)
    return out if kwargs.get("return_dict_in_generate") else out.numpy()
