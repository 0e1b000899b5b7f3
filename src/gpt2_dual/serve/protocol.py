"""OpenAI's request and response bodies for ``/v1/completions`` and ``/v1/chat/completions``,
as vLLM serves them.

Requests: ``parse_completion`` and ``parse_chat`` check a JSON body (field types, the model
name, the prompt or messages) and return a ``ParsedRequest``: the prompts as token ids and one
``SamplingParams``. A bad body raises ``RequestError`` naming the field (400; an unknown model
404). Fields this server does not know are ignored and logged, as vLLM does; fields it knows
but cannot honour (``suffix``, ``logit_bias``, tools) are refused rather than ignored.

Responses are built in ``responses.py``.

Example:
    >>> body = {"prompt": "Hi", "max_tokens": 4}
    >>> req = parse_completion(body, tokenizer, ["gpt2"])  # doctest: +SKIP
    >>> req.prompts, req.params.max_tokens  # doctest: +SKIP
    ([[17250]], 4)
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from gpt2_dual.errors import RequestError
from gpt2_dual.serve.params import SamplingParams, is_int

logger = logging.getLogger(__name__)

__all__ = [
    "NO_CHAT_TEMPLATE", "ParsedRequest", "error_body", "new_request_id",
    "parse_chat", "parse_completion", "render_chat",
]  # fmt: skip

#: vLLM's answer (400) to a chat request when the tokenizer has no chat template (GPT-2's case).
NO_CHAT_TEMPLATE = (
    "As of transformers v4.44, default chat template is no longer allowed, so you must provide "
    "a chat template if the tokenizer does not define one."
)
#: Sampling fields passed to ``SamplingParams`` as they are, with their JSON type.
SAMPLING = {
    "n": int, "temperature": float, "top_p": float, "top_k": int, "min_p": float, "seed": int,
    "presence_penalty": float, "frequency_penalty": float, "repetition_penalty": float,
    "ignore_eos": bool, "min_tokens": int,
}  # fmt: skip
COMMON = {*SAMPLING, "model", "max_tokens", "stop", "stop_token_ids", "stream", "stream_options",
          "logprobs", "user", "best_of"}  # fmt: skip
COMPLETION_FIELDS = COMMON | {"prompt", "echo"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens", "top_logprobs",
                        "add_generation_prompt", "tool_choice"}  # fmt: skip
#: Fields that would change the answer and that this server cannot honour.
UNSUPPORTED = ("suffix", "logit_bias", "prompt_embeds", "tools", "functions", "response_format")
#: The lowest logprob written (vLLM's stand-in for -inf).
_KINDS = {int: "an integer", float: "a number", bool: "a boolean", str: "a string",
          dict: "an object", list: "an array"}  # fmt: skip


@dataclass
class ParsedRequest:
    """A checked request, ready for ``Engine.submit``.

    Attributes:
        kind: ``"completion"`` or ``"chat"``.
        model: the model name the response reports.
        prompts: one list of token ids per prompt (chat: the rendered conversation).
        prompt_texts: each prompt's text when given as text (for ``echo``), else None.
        params: how to decode (the same for every prompt).
        stream: answer with server-sent events.
        include_usage: end a stream with a usage chunk (``stream_options.include_usage``).
        echo: put the prompt before the completion (completions only).
        logprobs: alternatives per token to report (completions: ``logprobs``; chat:
            ``top_logprobs``), or None for no logprobs.
    """

    kind: str
    model: str
    prompts: list[list[int]]
    prompt_texts: list[str | None]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    logprobs: int | None = None


def new_request_id(kind: str) -> str:
    """``cmpl-<hex>`` for completions, ``chatcmpl-<hex>`` for chat."""
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def error_body(err: RequestError) -> dict[str, Any]:
    """OpenAI's error object; ``code`` is the HTTP status unless the error names one (vLLM)."""
    code = err.code if err.code is not None else err.status
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": code}}


def parse_completion(body: Any, tokenizer: Any, served_model_names: list[str]) -> ParsedRequest:
    """Check a ``/v1/completions`` body (a parsed JSON object).

    Raises:
        RequestError: a field of the wrong type or value, no prompt, an unknown model (404).
    """
    model = _begin(body, served_model_names, COMPLETION_FIELDS)
    prompts, texts = _prompts(body.get("prompt"), tokenizer)
    echo = _get(body, "echo", bool, False)
    logprobs = _get(body, "logprobs", int)
    max_tokens = _get(body, "max_tokens", int) if "max_tokens" in body else 16
    params = _sampling(body, max_tokens, logprobs, logprobs if echo else None)
    stream, usage = _stream(body)
    return ParsedRequest("completion", model, prompts, texts, params, stream, usage, echo, logprobs)


def parse_chat(body: Any, tokenizer: Any, served_model_names: list[str]) -> ParsedRequest:
    """Check a ``/v1/chat/completions`` body and render its messages with the chat template.

    Raises:
        RequestError: a bad field, no messages, an unknown model (404), no chat template.
    """
    model = _begin(body, served_model_names, CHAT_FIELDS)
    messages = _messages(body.get("messages"))
    if tokenizer.chat_template is None:
        raise RequestError(NO_CHAT_TEMPLATE)
    logprobs = _get(body, "logprobs", bool, False)
    top = _get(body, "top_logprobs", int)
    if top and not logprobs:
        raise RequestError(
            "when using `top_logprobs`, `logprobs` must be set to true.", param="top_logprobs"
        )
    k = (top or 0) if logprobs else None
    max_tokens = _get(body, "max_completion_tokens", int)
    max_tokens = _get(body, "max_tokens", int) if max_tokens is None else max_tokens
    params = _sampling(body, max_tokens, k, None)
    add = _get(body, "add_generation_prompt", bool, True)
    text = render_chat(tokenizer, messages, add_generation_prompt=add)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    stream, usage = _stream(body)
    return ParsedRequest("chat", model, [ids], [text], params, stream, usage, False, k)


def render_chat(tokenizer: Any, messages: list[dict], *, add_generation_prompt: bool) -> str:
    """The conversation as the tokenizer's chat template writes it (Jinja2, sandboxed, with
    transformers' globals: ``raise_exception``, ``tojson`` and the special tokens).

    Raises:
        RequestError: no template (vLLM's message), or the template fails on these messages.
    """
    if tokenizer.chat_template is None:
        raise RequestError(NO_CHAT_TEMPLATE)
    try:
        import jinja2
    except ImportError as err:  # the serve extra installs it
        raise RequestError(
            "rendering a chat template needs Jinja2 (pip install 'gpt2_dual[serve]')",
            status=500, type="InternalServerError",
        ) from err  # fmt: skip
    try:
        template = _compiled(tokenizer.get_chat_template())
        return template.render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            **tokenizer.special_tokens_map,
        )  # fmt: skip
    except jinja2.TemplateError as err:
        message = f"the chat template failed on these messages: {err}"
        raise RequestError(message, param="messages") from None


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> Any:
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


# -- request fields -------------------------------------------------------------------------
def _begin(body: Any, served_model_names: list[str], known: set[str]) -> str:
    """The model name to report, after the checks every body gets."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object; got {_describe(body)}")
    model = _get(body, "model", str)
    if model is not None and model not in served_model_names:
        raise RequestError(f"The model `{model}` does not exist.", status=404, param="model")
    for name in UNSUPPORTED:
        value = body.get(name)
        if value is not None and not (name == "response_format" and _is_text_format(value)):
            raise RequestError(f"{name} is not supported by this server", param=name)
    best_of = _get(body, "best_of", int)
    if best_of is not None and best_of != _get(body, "n", int, 1):
        raise RequestError("best_of is not supported by this server (only best_of = n)",
                           param="best_of")  # fmt: skip
    if unknown := sorted(set(body) - known - set(UNSUPPORTED)):
        logger.warning("The following fields were present in the request but ignored: %s", unknown)
    return served_model_names[0] if model is None else model


def _is_text_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


def _get(body: dict, name: str, kind: type, default: Any = None) -> Any:
    """``body[name]`` checked against a JSON type (``null`` or absent: ``default``)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) != (kind is bool):
        raise _wrong_type(name, kind, value)
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 16.0: an integer, as pydantic (vLLM) reads it
    if not isinstance(value, kind):
        raise _wrong_type(name, kind, value)
    return value


def _wrong_type(name: str, kind: type, value: Any) -> RequestError:
    return RequestError(f"{name} must be {_KINDS[kind]}; got {_describe(value)}", param=name)


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), "null")  # fmt: skip
    text = json.dumps(value, ensure_ascii=False)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


def _sampling(
    body: dict, max_tokens: int | None, logprobs: int | None, prompt_logprobs: int | None
) -> SamplingParams:
    values = {name: _get(body, name, kind) for name, kind in SAMPLING.items()}
    values = {name: value for name, value in values.items() if value is not None}
    return SamplingParams(
        **values, max_tokens=max_tokens, stop=_stop(body.get("stop")),
        stop_token_ids=_int_list(body, "stop_token_ids"), logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )  # fmt: skip


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise RequestError(
        f"stop must be a string or an array of strings; got {_describe(value)}", param="stop"
    )


def _int_list(body: dict, name: str) -> tuple[int, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if isinstance(value, list) and all(is_int(v) for v in value):
        return tuple(value)
    raise RequestError(f"{name} must be an array of integers; got {_describe(value)}", param=name)


def _stream(body: dict) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage`` (vLLM's default: True when given)."""
    stream = _get(body, "stream", bool, False)
    options = _get(body, "stream_options", dict)
    if options is None:
        return stream, False
    if not stream:
        raise RequestError(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )
    return stream, _get(options, "include_usage", bool, True)


def _prompts(value: Any, tokenizer: Any) -> tuple[list[list[int]], list[str | None]]:
    """A string, strings, token ids or lists of token ids -> (id lists, texts)."""
    if value is None:
        raise RequestError("prompt is required", param="prompt")
    if isinstance(value, str):
        return [list(tokenizer.encode(value))], [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return [list(tokenizer.encode(p)) for p in value], list(value)
        if all(is_int(t) for t in value):
            return [list(value)], [None]
        if all(isinstance(p, list) and all(is_int(t) for t in p) for p in value):
            return [list(p) for p in value], [None] * len(value)
    raise RequestError(
        "prompt must be a string, an array of strings, an array of token ids or an array of "
        f"arrays of token ids; got {_describe(value)}",
        param="prompt",
    )


def _messages(value: Any) -> list[dict]:
    """Chat messages, each content a string (text parts joined by newlines, as vLLM does)."""
    if value is None:
        raise RequestError("messages is required", param="messages")
    if not isinstance(value, list) or not value:
        raise RequestError(
            f"messages must be a non-empty array of messages; got {_describe(value)}",
            param="messages",
        )
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string role",
                               param="messages")  # fmt: skip
        content = message.get("content")
        if isinstance(content, list) and all(_is_text_part(p) for p in content):
            content = "\n".join(p["text"] for p in content)
        elif content is not None and not isinstance(content, str):
            raise RequestError(
                f"messages[{i}].content must be a string or an array of text parts",
                param="messages",
            )
        out.append({**message, "content": content})
    return out


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )
