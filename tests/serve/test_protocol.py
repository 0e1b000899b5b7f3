"""OpenAI request bodies -> prompts and ``SamplingParams``, and events -> OpenAI's objects, with
the real GPT-2 tokenizer and no server: types, defaults, the model name, every refusal's
message and param, and the response shapes (legacy and chat logprobs, echo, choice order).
"""

from __future__ import annotations

import logging
import math

import pytest

pytest.importorskip("jinja2")

from gpt2_dual import GPT2TokenizerFast  # noqa: E402
from gpt2_dual.errors import RequestError  # noqa: E402
from gpt2_dual.serve import Event, SamplingParams, TokenLogprob  # noqa: E402
from gpt2_dual.serve.protocol import (  # noqa: E402
    NO_CHAT_TEMPLATE,
    error_body,
    new_request_id,
    parse_chat,
    parse_completion,
)
from gpt2_dual.serve.responses import ResponseBuilder  # noqa: E402

NAMES = ["tiny", "alias"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return GPT2TokenizerFast.from_pretrained("gpt2")


@pytest.fixture
def chat_tok():
    tokenizer = GPT2TokenizerFast.from_pretrained("gpt2")
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def _refused(call, *args) -> RequestError:
    with pytest.raises(RequestError) as info:
        call(*args)
    return info.value


def test_prompt_forms_become_token_id_lists(tok):
    hello = tok.encode("Hello world")
    assert parse_completion({"prompt": "Hello world"}, tok, NAMES).prompts == [hello]
    both = parse_completion({"prompt": ["Hello world", "Hi"]}, tok, NAMES)
    assert both.prompts == [hello, tok.encode("Hi")] and both.prompt_texts == ["Hello world", "Hi"]
    ids = parse_completion({"prompt": [15496, 995]}, tok, NAMES)
    assert ids.prompts == [[15496, 995]] and ids.prompt_texts == [None]
    lists = parse_completion({"prompt": [[1, 2], [3]]}, tok, NAMES)
    assert lists.prompts == [[1, 2], [3]]


def test_defaults_are_vllms(tok):
    req = parse_completion({"prompt": "x"}, tok, NAMES)
    assert req.params == SamplingParams(max_tokens=16)
    assert req.model == "tiny" and not req.stream and not req.echo and req.logprobs is None
    assert (
        parse_completion({"prompt": "x", "max_tokens": None}, tok, NAMES).params.max_tokens is None
    )
    assert parse_completion({"prompt": "x", "model": "alias"}, tok, NAMES).model == "alias"


def test_every_sampling_field_reaches_sampling_params(tok):
    body = {
        "prompt": "x", "max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 3, "min_p": 0.1,
        "n": 2, "seed": 11, "stop": ["a", "b"], "stop_token_ids": [5], "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "repetition_penalty": 1.2, "ignore_eos": True, "min_tokens": 2,
        "logprobs": 3, "echo": True, "user": "me",
    }  # fmt: skip
    req = parse_completion(body, tok, NAMES)
    assert req.params == SamplingParams(
        n=2, max_tokens=7, temperature=0.0, top_p=0.5, top_k=3, min_p=0.1, seed=11,
        stop=("a", "b"), stop_token_ids=(5,), ignore_eos=True, min_tokens=2, logprobs=3,
        prompt_logprobs=3, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.2,
    )  # fmt: skip
    assert req.echo and req.logprobs == 3
    assert parse_completion({"prompt": "x", "stop": "END"}, tok, NAMES).params.stop == ("END",)
    assert parse_completion({"prompt": "x", "max_tokens": 8.0}, tok, NAMES).params.max_tokens == 8


def test_stream_options(tok):
    on = parse_completion({"prompt": "x", "stream": True, "stream_options": {}}, tok, NAMES)
    assert on.stream and on.include_usage  # vLLM's default once stream_options is given
    off = {"prompt": "x", "stream": True, "stream_options": {"include_usage": False}}
    assert not parse_completion(off, tok, NAMES).include_usage
    err = _refused(parse_completion, {"prompt": "x", "stream_options": {}}, tok, NAMES)
    assert err.message == "Stream options can only be defined when `stream=True`."
    assert err.param == "stream_options"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"prompt": "x", "max_tokens": "ten"}, "max_tokens",
         'max_tokens must be an integer; got "ten" (a string)'),
        ({"prompt": "x", "temperature": "hot"}, "temperature",
         'temperature must be a number; got "hot" (a string)'),
        ({"prompt": "x", "n": True}, "n", "n must be an integer; got true (a boolean)"),
        ({"prompt": "x", "stream": 1}, "stream", "stream must be a boolean; got 1 (an integer)"),
        ({"prompt": "x", "logprobs": 1.5}, "logprobs", "logprobs must be an integer; got 1.5 (a number)"),
        ({"prompt": "x", "stop": 3}, "stop", "stop must be a string or an array of strings; got 3 (an integer)"),
        ({"prompt": "x", "stop_token_ids": ["a"]}, "stop_token_ids",
         'stop_token_ids must be an array of integers; got ["a"] (an array)'),
        ({"prompt": "x", "model": 3}, "model", "model must be a string; got 3 (an integer)"),
        ({}, "prompt", "prompt is required"),
        ({"prompt": None}, "prompt", "prompt is required"),
        ({"prompt": 5}, "prompt", "prompt must be a string, an array of strings, an array of "
         "token ids or an array of arrays of token ids; got 5 (an integer)"),
        ({"prompt": []}, "prompt", "prompt must be a string, an array of strings, an array of "
         "token ids or an array of arrays of token ids; got [] (an array)"),
        ({"prompt": [1, "a"]}, "prompt", "prompt must be a string, an array of strings, an array "
         'of token ids or an array of arrays of token ids; got [1, "a"] (an array)'),
        ({"prompt": "x", "temperature": -0.5}, "temperature", "temperature must be at least 0; got -0.5"),
        ({"prompt": "x", "max_tokens": -1}, "max_tokens", "max_tokens must be at least 1; got -1"),
        ({"prompt": "x", "logit_bias": {"1": 2}}, "logit_bias", "logit_bias is not supported by this server"),
        ({"prompt": "x", "suffix": "y"}, "suffix", "suffix is not supported by this server"),
        ({"prompt": "x", "best_of": 3}, "best_of", "best_of is not supported by this server (only best_of = n)"),
    ],
)  # fmt: skip
def test_a_bad_field_is_a_400_naming_it(tok, body, param, message):
    err = _refused(parse_completion, body, tok, NAMES)
    assert (err.status, err.type, err.param, err.message) == (
        400,
        "BadRequestError",
        param,
        message,
    )


def test_a_body_that_is_not_an_object(tok):
    err = _refused(parse_completion, [1, 2], tok, NAMES)
    assert (
        err.status == 400
        and err.message == "the request body must be a JSON object; got [1, 2] (an array)"
    )


def test_an_unknown_model_is_a_404(tok):
    err = _refused(parse_completion, {"model": "gpt-4", "prompt": "x"}, tok, NAMES)
    assert error_body(err) == {"error": {
        "message": "The model `gpt-4` does not exist.", "type": "NotFoundError", "param": "model",
        "code": 404,
    }}  # fmt: skip


def test_unknown_fields_are_ignored_and_logged(tok, caplog):
    with caplog.at_level(logging.WARNING, logger="gpt2_dual.serve.protocol"):
        req = parse_completion({"prompt": "x", "foo": 1, "bar": None}, tok, NAMES)
    assert req.params == SamplingParams()
    assert "ignored: ['bar', 'foo']" in caplog.text
    plain = parse_completion({"prompt": "x", "response_format": {"type": "text"}}, tok, NAMES)
    assert plain.params == SamplingParams()


def test_chat_without_a_template_is_vllms_400(tok):
    body = {"messages": [{"role": "user", "content": "hi"}]}
    err = _refused(parse_chat, body, tok, NAMES)
    assert (err.status, err.message) == (400, NO_CHAT_TEMPLATE)


def test_chat_renders_the_template_and_reads_its_fields(chat_tok):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                             {"type": "text", "text": "there"}]}]  # fmt: skip
    body = {"messages": messages, "max_tokens": 3, "max_completion_tokens": 5, "logprobs": True,
            "top_logprobs": 2, "temperature": 0}  # fmt: skip
    req = parse_chat(body, chat_tok, NAMES)
    text = "<|system|>Be brief.\n<|user|>Hi\nthere\n<|assistant|>"
    assert req.prompt_texts == [text] and req.prompts == [chat_tok.encode(text)]
    assert req.params == SamplingParams(max_tokens=5, temperature=0.0, logprobs=2)
    assert req.kind == "chat" and req.logprobs == 2
    plain = parse_chat({"messages": messages[:1]}, chat_tok, NAMES)
    assert plain.params.max_tokens is None and plain.params.logprobs is None  # up to the context
    assert parse_chat({"messages": messages[:1], "logprobs": True}, chat_tok, NAMES).logprobs == 0


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({}, "messages", "messages is required"),
        ({"messages": []}, "messages", "messages must be a non-empty array of messages; got [] (an array)"),
        ({"messages": ["hi"]}, "messages", "messages[0] must be an object with a string role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages",
         "messages[0].content must be a string or an array of text parts"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs",
         "when using `top_logprobs`, `logprobs` must be set to true."),
    ],
)  # fmt: skip
def test_bad_chat_bodies(chat_tok, body, param, message):
    err = _refused(parse_chat, body, chat_tok, NAMES)
    assert (err.status, err.param, err.message) == (400, param, message)


def test_a_template_that_raises_is_a_400(chat_tok):
    chat_tok.chat_template = "{{ raise_exception('only user messages') }}"
    err = _refused(parse_chat, {"messages": [{"role": "system", "content": "x"}]}, chat_tok, NAMES)
    assert err.param == "messages"
    assert err.message == "the chat template failed on these messages: only user messages"


def test_request_ids():
    assert new_request_id("completion").startswith("cmpl-")
    rid = new_request_id("chat")
    assert rid.startswith("chatcmpl-") and len(rid) == len("chatcmpl-") + 32


def _lp(token_id: int, logprob: float, top: list[tuple[int, float]]) -> TokenLogprob:
    return TokenLogprob(token_id, logprob, top)


def test_completion_response_choices_in_prompt_major_order(tok):
    req = parse_completion({"prompt": ["a", "b"], "n": 2, "max_tokens": 2}, tok, NAMES)
    builder = ResponseBuilder(req, "cmpl-1", tok)
    assert builder.add(1, Event(1, [262], " the", finish_reason="length")) is None  # no stream
    builder.add(0, Event(0, [11], ",", finish_reason="stop", stop_reason="x"))
    assert not builder.finished
    builder.add(1, Event(0, [13, 13], "..", finish_reason="length"))
    builder.add(0, Event(1, [], "", finish_reason="length"))
    assert builder.finished and builder.failure() is None
    out = builder.response()
    assert [(c["index"], c["text"], c["finish_reason"], c["stop_reason"]) for c in out["choices"]] == [
        (0, ",", "stop", "x"), (1, "", "length", None), (2, "..", "length", None),
        (3, " the", "length", None),
    ]  # fmt: skip
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert out["object"] == "text_completion" and out["id"] == "cmpl-1" and out["model"] == "tiny"


def test_legacy_logprobs_with_echo(tok):
    ids = tok.encode("Hello world")  # [15496, 995]
    body = {"prompt": ids, "echo": True, "logprobs": 1, "stream": True}
    req = parse_completion(body, tok, NAMES)
    builder = ResponseBuilder(req, "cmpl-1", tok)
    prompt_lps = [None, _lp(995, -2.0, [(11, -1.0)])]
    first = Event(0, [11], ",", [_lp(11, -0.5, [(11, -0.5)])], prompt_logprobs=prompt_lps)
    chunk = builder.add(0, first)
    last = Event(0, [0], "!", [_lp(0, -math.inf, [(11, -0.1)])], finish_reason="length")
    builder.add(0, last)
    assert chunk["choices"][0]["text"] == "Hello world,"  # the stream's first chunk echoes too
    choice = builder.response()["choices"][0]
    assert choice["text"] == "Hello world,!"
    assert choice["logprobs"] == {
        "tokens": ["Hello", " world", ",", "!"],
        "token_logprobs": [None, -2.0, -0.5, -9999.0],
        "top_logprobs": [None, {" world": -2.0, ",": -1.0}, {",": -0.5}, {"!": -9999.0, ",": -0.1}],
        "text_offset": [0, 5, 11, 12],
    }


def test_stream_chunks_skip_empty_events_and_carry_offsets(tok):
    req = parse_completion({"prompt": "a", "logprobs": 0, "stream": True}, tok, NAMES)
    builder = ResponseBuilder(req, "cmpl-1", tok)
    assert builder.add(0, Event(0, [], "")) is None
    one = builder.add(0, Event(0, [32], "A", [_lp(32, -1.0, [])]))["choices"][0]
    two = builder.add(0, Event(0, [33], "B", [_lp(33, -2.0, [])], finish_reason="length"))
    assert one["logprobs"]["text_offset"] == [0] and one["finish_reason"] is None
    assert two["choices"][0]["logprobs"]["text_offset"] == [1]
    assert two["choices"][0]["finish_reason"] == "length"
    usage = builder.usage_chunk()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2


def test_chat_shapes_and_logprobs(chat_tok):
    body = {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 1,
            "stream": True}  # fmt: skip
    req = parse_chat(body, chat_tok, NAMES)
    builder = ResponseBuilder(req, "chatcmpl-1", chat_tok)
    role = builder.role_chunk()["choices"][0]
    assert role["delta"] == {"role": "assistant", "content": ""}
    chunk = builder.add(
        0, Event(0, [40], "I", [_lp(40, -0.25, [(40, -0.25)])], finish_reason="stop")
    )
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"content": "I"}
    out = builder.response()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "I"}
    assert out["choices"][0]["logprobs"] == {"content": [{
        "token": "I", "logprob": -0.25, "bytes": [73],
        "top_logprobs": [{"token": "I", "logprob": -0.25, "bytes": [73]}],
    }]}  # fmt: skip


def test_an_aborted_choice_is_a_failure(tok):
    req = parse_completion({"prompt": "a"}, tok, NAMES)
    stopped = ResponseBuilder(req, "cmpl-1", tok)
    stopped.add(0, Event(0, [], "", finish_reason="abort"))
    assert (stopped.failure().status, stopped.failure().type) == (503, "ServiceUnavailableError")
    broken = ResponseBuilder(req, "cmpl-2", tok)
    broken.add(0, Event(0, [], "", finish_reason="abort", error="RuntimeError: boom"))
    assert broken.failure().status == 500
    assert broken.failure().message == "generation failed: RuntimeError: boom"
