"""``SamplingParams``: how one request is decoded, with vLLM's names, defaults and limits.

Every field is checked when the object is built; a value out of range raises ``RequestError``
(HTTP 400) naming the field and its limit, so a server answers a bad request before it
queues. The semantics are vLLM's (``vllm.SamplingParams``): ``temperature=0`` is greedy;
``top_k`` 0 or -1 is off; penalties follow vLLM's order (repetition on prompt and output,
then frequency and presence on the output, then temperature, top-k, top-p, min-p); ``stop``
strings end a sequence and are cut from its text; ``min_tokens`` holds back the end-of-text
token and ``stop_token_ids`` until that many tokens exist; ``ignore_eos`` keeps going past
the end-of-text token.

Example:
    >>> SamplingParams(temperature=0, max_tokens=8).greedy
    True
    >>> SamplingParams(top_p=0)
    Traceback (most recent call last):
    ...
    gpt2_dual.errors.RequestError: top_p must be in (0, 1]; got 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpt2_dual.errors import RequestError

__all__ = ["MAX_LOGPROBS", "SamplingParams"]

#: The most alternatives per token ``logprobs`` may ask for (vLLM's default ``max_logprobs``).
MAX_LOGPROBS = 20
#: The most choices one request may ask for.
MAX_N = 128


def _bad(name: str, rule: str, value: Any) -> RequestError:
    return RequestError(f"{name} must be {rule}; got {value!r}", param=name)


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request (vLLM's ``SamplingParams`` fields and defaults).

    Attributes:
        n: choices to generate, each its own sequence.
        max_tokens: tokens to generate at most; None: up to the context.
        temperature: 0 for greedy, else the softmax temperature.
        top_p: nucleus mass, in (0, 1].
        top_k: keep the k likeliest tokens; 0 or -1 keep all.
        min_p: drop tokens below ``min_p`` times the likeliest one's probability.
        seed: a seed for this request's random draws (reproducible whatever else runs).
        stop: strings that end a choice (cut from its text).
        stop_token_ids: token ids that end a choice (kept in ``token_ids``, not in text).
        ignore_eos: do not stop at the end-of-text token.
        min_tokens: tokens to generate before eos or ``stop_token_ids`` may end a choice.
        logprobs: alternatives to report per generated token (0..20); None: no logprobs.
        prompt_logprobs: the same for the prompt's tokens (``echo`` with ``logprobs``).
        presence_penalty: subtracted once from a token's logit if it was generated, [-2, 2].
        frequency_penalty: subtracted per time a token was generated, [-2, 2].
        repetition_penalty: divides positive (multiplies negative) logits of tokens seen in
            the prompt or the output; 1 is off, must be > 0.
    """

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        self._check_ints()
        self._check_floats()
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise _bad("stop", "non-empty strings", list(self.stop))
        if any(not is_int(t) or t < 0 for t in self.stop_token_ids):
            raise _bad("stop_token_ids", "non-negative integers", list(self.stop_token_ids))

    def _check_ints(self) -> None:
        if not is_int(self.n) or not 1 <= self.n <= MAX_N:
            raise _bad("n", f"an integer in [1, {MAX_N}]", self.n)
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < 1):
            raise _bad("max_tokens", "at least 1", self.max_tokens)
        if not is_int(self.top_k) or self.top_k < -1:
            raise _bad("top_k", "-1, 0 (off) or at least 1", self.top_k)
        if not is_int(self.min_tokens) or self.min_tokens < 0:
            raise _bad("min_tokens", "at least 0", self.min_tokens)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise _bad("min_tokens", f"at most max_tokens={self.max_tokens}", self.min_tokens)
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or not 0 <= value <= MAX_LOGPROBS):
                raise _bad(name, f"an integer in [0, {MAX_LOGPROBS}]", value)
        if self.seed is not None and not is_int(self.seed):
            raise _bad("seed", "an integer", self.seed)

    def _check_floats(self) -> None:
        rules = {
            "temperature": (lambda v: v >= 0, "at least 0"),
            "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "min_p": (lambda v: 0 <= v <= 1, "in [0, 1]"),
            "presence_penalty": (lambda v: -2 <= v <= 2, "in [-2, 2]"),
            "frequency_penalty": (lambda v: -2 <= v <= 2, "in [-2, 2]"),
            "repetition_penalty": (lambda v: v > 0, "greater than 0"),
        }
        for name, (ok, rule) in rules.items():
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not ok(value):
                raise _bad(name, rule, value)

    @property
    def greedy(self) -> bool:
        """Greedy decoding (``temperature == 0``)."""
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Any of the three penalties is on."""
        return bool(
            self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
        )


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON and Python both let True pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)
