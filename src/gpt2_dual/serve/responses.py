"""OpenAI's response bodies for ``/v1/completions`` and ``/v1/chat/completions``, as vLLM
writes them.

``ResponseBuilder`` takes a request's ``Event``\\ s (choice ``index`` of prompt ``p`` is choice
``p * n + index`` of the response, vLLM's order) and builds OpenAI's objects: stream chunks as
the events come, or the whole response at the end. Token strings are the tokenizer's decode of
the single id; the completions API's logprobs use the legacy form ``{tokens, token_logprobs,
top_logprobs, text_offset}``, the chat API's ``{content: [{token, logprob, bytes,
top_logprobs}]}``. Logprobs of ``-inf`` become -9999.0 (JSON has no infinity), as in vLLM.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gpt2_dual.errors import EngineClosedError, RequestError
from gpt2_dual.serve.protocol import ParsedRequest
from gpt2_dual.serve.sampler import TokenLogprob
from gpt2_dual.serve.scheduler import Event

__all__ = ["MIN_LOGPROB", "ResponseBuilder"]

#: The logprob written for ``-inf`` (JSON has no infinity), as vLLM writes it.
MIN_LOGPROB = -9999.0


@dataclass
class _Choice:
    index: int
    prompt: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None
    sent: int = 0  # characters streamed (the next text_offset)
    started: bool = False


class ResponseBuilder:
    """One request's answer, built from its events.

    Args:
        request: the parsed request.
        request_id: the response's ``id``.
        tokenizer: for token strings and the text of token-id prompts (``echo``).
    """

    def __init__(self, request: ParsedRequest, request_id: str, tokenizer: Any) -> None:
        self.request, self.id, self.tokenizer = request, request_id, tokenizer
        self.created = int(time.time())
        self.chat = request.kind == "chat"
        n = request.params.n
        self.choices = [
            _Choice(p * n + i, p) for p in range(len(request.prompts)) for i in range(n)
        ]
        self.prompt_logprobs: dict[int, list[TokenLogprob | None]] = {}
        self._tokens: dict[int, str] = {}

    @property
    def finished(self) -> bool:
        """Every choice has its finish reason."""
        return all(c.finish_reason is not None for c in self.choices)

    def add(self, prompt: int, event: Event) -> dict | None:
        """Record ``event`` of prompt ``prompt``; return its stream chunk, or None when the
        request does not stream or the event brings nothing to send."""
        choice = self.choices[prompt * self.request.params.n + event.index]
        choice.text += event.text
        choice.token_ids += event.token_ids
        choice.logprobs += event.logprobs or []
        if event.prompt_logprobs is not None:
            self.prompt_logprobs[prompt] = event.prompt_logprobs
        if event.finish_reason is not None:
            choice.finish_reason, choice.stop_reason = event.finish_reason, event.stop_reason
            choice.error = event.error
        if not self.request.stream:
            return None
        wants_logprobs = self.request.logprobs is not None
        if not (event.text or event.finish_reason or (event.token_ids and wants_logprobs)):
            return None
        return self._chunk([self._delta(choice, event)])

    def role_chunk(self) -> dict:
        """Chat streams open with the assistant's role for every choice (vLLM, OpenAI)."""
        return self._chunk([
            {"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None} for c in self.choices
        ])  # fmt: skip

    def usage(self) -> dict:
        """``{prompt_tokens, completion_tokens, total_tokens}`` over all prompts and choices."""
        prompt = sum(len(p) for p in self.request.prompts)
        completion = sum(len(c.token_ids) for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    def usage_chunk(self) -> dict:
        """A stream's last chunk with ``stream_options.include_usage``: no choices, usage."""
        return {**self._chunk([]), "usage": self.usage()}

    def failure(self) -> RequestError | None:
        """Why the request could not be answered: a choice aborted by the engine (stopping:
        503; a failed step: 500), or None."""
        for choice in self.choices:
            if choice.finish_reason == "abort":
                if choice.error:
                    return RequestError(f"generation failed: {choice.error}", status=500,
                                        type="InternalServerError")  # fmt: skip
                return EngineClosedError("the server stopped before the request finished")
        return None

    def response(self) -> dict:
        """The whole (non-streamed) response."""
        choices = [self._final(c) for c in self.choices]
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created,
                "model": self.request.model, "choices": choices, "usage": self.usage()}  # fmt: skip

    def _chunk(self, choices: list[dict]) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created,
                "model": self.request.model, "choices": choices}  # fmt: skip

    def _delta(self, choice: _Choice, event: Event) -> dict:
        text, ids, lps = event.text, list(event.token_ids), list(event.logprobs or [])
        if self.request.echo and not choice.started:
            text = self._prompt_text(choice.prompt) + text
            ids = self.request.prompts[choice.prompt] + ids
            lps = self._prompt_lps(choice.prompt) + lps
        choice.started = True
        out = {"index": choice.index, "logprobs": self._logprobs(ids, lps, choice.sent),
               "finish_reason": event.finish_reason, "stop_reason": event.stop_reason}  # fmt: skip
        choice.sent += len(text)
        if not self.chat:
            return {"index": choice.index, "text": text, **out}
        return {"index": choice.index, "delta": {"content": text} if text else {}, **out}

    def _final(self, choice: _Choice) -> dict:
        text, ids, lps = choice.text, choice.token_ids, list(choice.logprobs)
        if self.request.echo:
            text = self._prompt_text(choice.prompt) + text
            ids = self.request.prompts[choice.prompt] + ids
            lps = self._prompt_lps(choice.prompt) + lps
        out = {"index": choice.index, "logprobs": self._logprobs(ids, lps, 0),
               "finish_reason": choice.finish_reason,
               "stop_reason": choice.stop_reason}  # fmt: skip
        if not self.chat:
            return {"index": choice.index, "text": text, **out}
        return {"index": choice.index, "message": {"role": "assistant", "content": text}, **out}

    def _prompt_text(self, prompt: int) -> str:
        text = self.request.prompt_texts[prompt]
        if text is None:
            ids = self.request.prompts[prompt]
            text = self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        return text

    def _prompt_lps(self, prompt: int) -> list[TokenLogprob | None]:
        if self.request.logprobs is None:
            return []
        return list(self.prompt_logprobs.get(prompt, []))

    def _token(self, token_id: int) -> str:
        if token_id not in self._tokens:
            self._tokens[token_id] = self.tokenizer.decode(
                [token_id], clean_up_tokenization_spaces=False
            )
        return self._tokens[token_id]

    def _logprobs(self, ids: list[int], lps: list[TokenLogprob | None], offset: int) -> Any:
        k = self.request.logprobs
        if k is None:
            return None
        if self.chat:
            return {"content": [self._chat_logprob(lp, k) for lp in lps if lp is not None]}
        return self._legacy_logprobs(ids, lps, k, offset)

    def _legacy_logprobs(self, ids, lps, k: int, offset: int) -> dict:
        """The completions API's form; ``top_logprobs`` holds the chosen token and the ``k``
        likeliest (``k + 1`` entries at most, vLLM's and OpenAI's rule)."""
        tokens, token_logprobs, tops, offsets = [], [], [], []
        for token_id, lp in zip(ids, lps, strict=True):
            token = self._token(token_id)
            tokens.append(token)
            offsets.append(offset)
            offset += len(token)
            if lp is None:  # the first prompt token
                token_logprobs.append(None)
                tops.append(None)
                continue
            token_logprobs.append(_finite(lp.logprob))
            alternatives = [(lp.token_id, lp.logprob)]
            alternatives += [(i, v) for i, v in lp.top if i != lp.token_id]
            top: dict[str, float] = {}
            for i, v in alternatives[: k + 1]:
                top.setdefault(self._token(i), _finite(v))
            tops.append(top)
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops,
                "text_offset": offsets}  # fmt: skip

    def _chat_logprob(self, lp: TokenLogprob, k: int) -> dict:
        top = [self._chat_entry(i, v) for i, v in lp.top[:k]]
        return {**self._chat_entry(lp.token_id, lp.logprob), "top_logprobs": top}

    def _chat_entry(self, token_id: int, logprob: float) -> dict:
        token = self._token(token_id)
        return {"token": token, "logprob": _finite(logprob),
                "bytes": list(token.encode("utf-8", errors="replace"))}  # fmt: skip


def _finite(logprob: float) -> float:
    return max(float(logprob), MIN_LOGPROB)
