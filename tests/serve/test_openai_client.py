"""The official ``openai`` client against the server: completions (whole, streamed, several
choices), chat (vLLM's 400 without a template; with one, whole and streamed), the model list,
and every refusal raised as the client's own exception class with the server's message.
"""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

from http_fixtures import (  # noqa: E402, F401
    API_KEY,
    MODEL,
    N_POSITIONS,
    folder_fixture,
    reference_fixture,
    server_fixture,
)

from gpt2_dual.serve.protocol import NO_CHAT_TEMPLATE  # noqa: E402

GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
MESSAGES = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def test_a_greedy_completion_equals_generate(client, reference):
    out = client.completions.create(model=MODEL, prompt="Hello, I'm a", max_tokens=8, **GREEDY)
    ids = reference.tokenizer.encode("Hello, I'm a")
    assert out.choices[0].text == reference.text(reference.greedy(ids, 8))
    assert out.choices[0].finish_reason == "length" and out.object == "text_completion"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(ids), 8)
    assert out.model == MODEL and out.id.startswith("cmpl-")


def test_a_stream_concatenates_to_the_whole_completion(client):
    args = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 10, "n": 2, "seed": 5}
    whole = client.completions.create(**args)
    stream = client.completions.create(**args, stream=True, stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    chunks = list(stream)
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {c.index: c.text for c in whole.choices} and len(texts) == 2
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_legacy_logprobs_through_the_client(client):
    out = client.completions.create(model=MODEL, prompt="Hi", max_tokens=4, logprobs=2, **GREEDY)
    logprobs = out.choices[0].logprobs
    assert "".join(logprobs.tokens) == out.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs)  # greedy: the chosen is the top


def test_chat_without_a_template_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 400
    assert info.value.body["message"] == NO_CHAT_TEMPLATE


def test_chat_with_a_template_whole_and_streamed(client, server):
    tokenizer = server.engine.tokenizer
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    try:
        whole = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_completion_tokens=6, **GREEDY
        )
        plain = client.completions.create(
            model=MODEL, prompt="Tell me a story", max_tokens=6, **GREEDY
        )
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=6, stream=True, **GREEDY
        )
        chunks = list(stream)
    finally:
        tokenizer.chat_template = None
    message = whole.choices[0].message
    assert (message.role, message.content) == ("assistant", plain.choices[0].text)
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content


def test_the_model_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL, "alias"]
    assert models.data[0].model_extra["max_model_len"] == N_POSITIONS


@pytest.mark.parametrize(
    ("kwargs", "error", "param", "message"),
    [
        ({"model": "gpt-4", "prompt": "x"}, "NotFoundError", "model",
         "The model `gpt-4` does not exist."),
        ({"model": MODEL, "prompt": "x", "temperature": -1}, "BadRequestError", "temperature",
         "temperature must be at least 0; got -1.0"),
        ({"model": MODEL, "prompt": "x", "max_tokens": N_POSITIONS}, "BadRequestError",
         "max_tokens", f"This model's maximum context length is {N_POSITIONS} tokens. However, "
         f"you requested {N_POSITIONS + 1} tokens (1 in the messages, {N_POSITIONS} in the "
         "completion). Please reduce the length of the messages or completion."),
        ({"model": MODEL, "prompt": "x", "extra_body": {"top_k": "many"}}, "BadRequestError",
         "top_k", 'top_k must be an integer; got "many" (a string)'),
    ],
)  # fmt: skip
def test_refusals_raise_the_clients_exceptions(client, kwargs, error, param, message):
    with pytest.raises(getattr(openai, error)) as info:
        client.completions.create(**kwargs)
    assert info.value.param == param and info.value.body["message"] == message
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=1).choices[0].text


def test_a_wrong_key_raises_authentication_error(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert info.value.status_code == 401


def test_a_keras_model_serves_the_checkpoints_greedy_tokens(folder, reference):
    """The same app over ``gpt2_dual.tf``'s slot decoder: the folder loaded as a Keras model
    serves the greedy tokens the PyTorch model generates from the same checkpoint."""
    pytest.importorskip("tensorflow")
    from http_fixtures import serving

    prompts = ("Hello, I'm a", "The end")
    with serving(folder, framework="tf") as live:
        assert live.engine.framework == "tf"
        with openai.OpenAI(base_url=f"{live.url}/v1", api_key=API_KEY, max_retries=0) as c:
            outs = [
                c.completions.create(model=MODEL, prompt=p, max_tokens=6, **GREEDY) for p in prompts
            ]
    for prompt, out in zip(prompts, outs, strict=True):
        ids = reference.tokenizer.encode(prompt)
        assert out.choices[0].text == reference.text(reference.greedy(ids, 6)), prompt
