"""The server's numpy sampler against transformers' logits warpers, and ``SamplingParams``'
limits with their exact messages."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_dual.errors import RequestError
from gpt2_dual.serve.params import SamplingParams
from gpt2_dual.serve.sampler import _filter_mass, log_softmax, penalize, pick, token_logprob

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V = 40
DRAWS = 20_000


def _logits(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(V) * 2).astype(np.float32)


def _reference_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """transformers' warpers in vLLM's order: temperature, top-k, top-p, min-p."""
    from transformers import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    x = torch.tensor(logits, dtype=torch.float64)[None]
    warpers = [TemperatureLogitsWarper(params.temperature)]
    if params.top_k > 0:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        warpers.append(TopPLogitsWarper(params.top_p))
    if params.min_p > 0:
        warpers.append(MinPLogitsWarper(params.min_p))
    for warper in warpers:
        x = warper(None, x)
    return torch.softmax(x, -1)[0].numpy()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.5, top_k=5),
        SamplingParams(temperature=1.3, top_p=0.7),
        SamplingParams(temperature=0.9, top_k=12, top_p=0.8),
        SamplingParams(temperature=1.0, min_p=0.1),
    ],
    ids=["plain", "top_k", "top_p", "top_k_top_p", "min_p"],
)
def test_draws_follow_transformers_warpers(params):
    logits = _logits(1)
    expected = _reference_probs(logits, params)
    rng = np.random.default_rng(0)
    counts = np.bincount([pick(logits, params, rng) for _ in range(DRAWS)], minlength=V)
    kept = expected > 0
    assert (counts[~kept] == 0).all()  # nothing outside the filter, ever
    observed, wanted = counts[kept], expected[kept] * DRAWS
    chi2 = ((observed - wanted) ** 2 / wanted).sum()
    dof = kept.sum() - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof) + 10, (chi2, dof)  # far beyond chance otherwise
    uniform = np.full(kept.sum(), DRAWS / kept.sum())
    if dof > 2:  # the same bound rejects a uniform sampler over the kept tokens
        assert ((uniform - wanted) ** 2 / wanted).sum() > dof + 6 * np.sqrt(2 * dof) + 10


def test_filter_mass_keeps_exactly_what_transformers_keeps():
    for seed in range(20):
        logits = _logits(seed).astype(np.float64)
        for top_p in (0.3, 0.75, 0.95):
            ours = np.isfinite(_filter_mass(logits.copy(), top_p, 0.0))
            ref = _reference_probs(logits.astype(np.float32), SamplingParams(top_p=top_p)) > 0
            assert (ours == ref).all(), (seed, top_p)


def test_greedy_is_the_argmax_and_penalties_follow_vllm():
    logits = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
    assert pick(logits, SamplingParams(temperature=0), None) == 2
    params = SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    out = penalize(logits, params, prompt_ids=[0], output_ids=[1, 1, 2])
    # repetition: seen ids 0, 1, 2 (prompt and output): positive / 2, negative * 2
    # then frequency * count + presence on output ids 1 (twice) and 2 (once)
    expected = [0.5, -4.0 - 1.0 - 0.25, 1.5 - 0.5 - 0.25, 0.5]
    np.testing.assert_allclose(out, expected)
    assert penalize(logits, SamplingParams(), [], [], blocked=[3])[3] == -np.inf


def test_logprobs_and_top_alternatives():
    logits = _logits(3)
    lp = log_softmax(logits)
    ref = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
    np.testing.assert_allclose(lp, ref, atol=1e-6)
    entry = token_logprob(lp, 7, 4)
    assert entry.token_id == 7 and entry.logprob == pytest.approx(ref[7], abs=1e-6)
    assert [t for t, _ in entry.top] == np.argsort(-ref)[:4].tolist()
    assert token_logprob(lp, 7, 0).top == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be at least 0; got -0.1"),
        ({"top_p": 0}, "top_p must be in (0, 1]; got 0"),
        ({"top_k": -2}, "top_k must be -1, 0 (off) or at least 1; got -2"),
        ({"max_tokens": 0}, "max_tokens must be at least 1; got 0"),
        ({"max_tokens": -5}, "max_tokens must be at least 1; got -5"),
        ({"n": 0}, "n must be an integer in [1, 128]; got 0"),
        ({"logprobs": 21}, "logprobs must be an integer in [0, 20]; got 21"),
        ({"presence_penalty": 2.5}, "presence_penalty must be in [-2, 2]; got 2.5"),
        ({"repetition_penalty": 0}, "repetition_penalty must be greater than 0; got 0"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens must be at most max_tokens=4; got 5"),
        ({"stop": ["a", ""]}, "stop must be non-empty strings; got ['a', '']"),
        ({"temperature": float("nan")}, "temperature must be at least 0; got nan"),
        ({"seed": 1.5}, "seed must be an integer; got 1.5"),
        ({"max_tokens": True}, "max_tokens must be at least 1; got True"),
    ],
)
def test_params_refused_with_the_field_and_limit(kwargs, message):
    with pytest.raises(RequestError) as err:
        SamplingParams(**kwargs)
    assert str(err.value) == message
    assert err.value.param == ("min_tokens" if "min_tokens" in kwargs else next(iter(kwargs)))
    assert err.value.status == 400 and err.value.type == "BadRequestError"


def test_stop_string_becomes_a_tuple():
    assert SamplingParams(stop="\n").stop == ("\n",)
