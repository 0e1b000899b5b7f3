"""Turning one row of logits into the next token, in numpy, as vLLM does.

The scheduler calls these per sequence on the float32 logits ``(V,)`` the framework step
returned; nothing here knows a framework. Order (vLLM's): the ``min_tokens`` mask, the
repetition penalty (prompt and output tokens), the frequency and presence penalties (output
tokens), then for sampling the temperature, top-k, top-p and min-p filters and one draw from the
request's own generator (Gumbel-max: the argmax of ``logits / T + Gumbel noise`` is a draw
from ``softmax(logits / T)`` restricted to the kept tokens). Greedy is the argmax of the
penalized logits. Logprobs are always those of the raw logits (vLLM's ``raw_logprobs``).

Example:
    >>> import numpy as np
    >>> pick(np.array([0.0, 2.0, 1.0], np.float32), SamplingParams(temperature=0), None)
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpt2_dual.serve.params import SamplingParams

__all__ = ["TokenLogprob", "log_softmax", "penalize", "pick", "token_logprob"]


@dataclass
class TokenLogprob:
    """One token's log-probability under the raw logits, and the likeliest alternatives.

    Attributes:
        token_id: the token.
        logprob: ``log_softmax(logits)[token_id]``.
        top: ``(id, logprob)`` of the ``k`` likeliest tokens, likeliest first.
    """

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``(..., V) -> (..., V)`` log-probabilities, computed in float64 then float32."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


def token_logprob(logprobs: np.ndarray, token_id: int, k: int) -> TokenLogprob:
    """The ``TokenLogprob`` of ``token_id`` with the ``k`` likeliest of ``logprobs`` ``(V,)``."""
    top: list[tuple[int, float]] = []
    if k > 0:
        ids = np.argpartition(-logprobs, k - 1)[:k]
        ids = ids[np.argsort(-logprobs[ids], kind="stable")]
        top = [(int(i), float(logprobs[i])) for i in ids]
    return TokenLogprob(int(token_id), float(logprobs[token_id]), top)


def penalize(
    logits: np.ndarray,
    params: SamplingParams,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    blocked: Sequence[int] = (),
) -> np.ndarray:
    """Apply the ``min_tokens`` mask (``blocked`` ids get -inf) and the three penalties to a
    copy of ``logits`` ``(V,)``."""
    out = np.array(logits, dtype=np.float32, copy=True)
    if blocked:
        out[np.asarray(blocked)] = -np.inf
    if params.repetition_penalty != 1.0:
        seen = np.unique(np.asarray([*prompt_ids, *output_ids], dtype=np.int64))
        vals = out[seen]
        rp = params.repetition_penalty
        out[seen] = np.where(vals > 0, vals / rp, vals * rp)
    if (params.frequency_penalty or params.presence_penalty) and output_ids:
        ids, counts = np.unique(np.asarray(output_ids, dtype=np.int64), return_counts=True)
        out[ids] -= params.frequency_penalty * counts + params.presence_penalty
    return out


def pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None) -> int:
    """The next token from penalized ``logits`` ``(V,)``: the argmax when greedy, else one draw
    from the filtered, tempered distribution with ``rng``."""
    if params.greedy:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / params.temperature
    V = x.shape[0]
    if 0 < params.top_k < V:
        kth = np.partition(x, V - params.top_k)[V - params.top_k]
        x[x < kth] = -np.inf
    if params.top_p < 1.0 or params.min_p > 0.0:
        x = _filter_mass(x, params.top_p, params.min_p)
    rng = rng if rng is not None else np.random.default_rng()
    return int(np.argmax(x + rng.gumbel(size=V)))


def _filter_mass(x: np.ndarray, top_p: float, min_p: float) -> np.ndarray:
    """Keep the smallest set of likeliest tokens holding ``top_p`` of the mass (the token
    that crosses it included), and those at least ``min_p`` times the likeliest."""
    finite = np.isfinite(x)
    ids = np.flatnonzero(finite)
    probs = np.exp(x[ids] - x[ids].max())
    probs /= probs.sum()
    keep = np.ones(len(ids), dtype=bool)
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]  # mass of the likelier tokens
        keep[order[before >= top_p]] = False
    if min_p > 0.0:
        keep &= probs >= min_p * probs.max()
    out = np.full_like(x, -np.inf)
    out[ids[keep]] = x[ids[keep]]
    return out
