"""The HTTP app over real sockets (uvicorn on 127.0.0.1, raw httpx): answers equal the model's
own ``generate`` and a numpy log-softmax, streams equal whole answers, each fault gets its
status and error object and the server serves on, and a client that leaves frees its slots.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")

from http_fixtures import (  # noqa: E402, F401
    API_KEY,
    AUTH,
    MAX_BODY,
    MODEL,
    N_POSITIONS,
    folder_fixture,
    reference_fixture,
    server_fixture,
    serving,
    wait_until,
)

from gpt2_dual.serve.protocol import NO_CHAT_TEMPLATE  # noqa: E402

GREEDY = {"model": MODEL, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def _post(client, body: dict, path: str = "/v1/completions") -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _stream(client, body: dict, path: str = "/v1/completions") -> list[dict]:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


def _texts(chunks: list[dict], key=lambda c: c["text"]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            out[choice["index"]] = out.get(choice["index"], "") + key(choice)
    return out


def _serves(client) -> None:
    """The server still answers a small request."""
    assert _post(client, {**GREEDY, "prompt": "ok", "max_tokens": 1})["choices"][0]["text"]


def test_greedy_completions_equal_generate(client, reference):
    prompts = ["Hello world", "The quick brown fox jumps over"]
    out = _post(client, {**GREEDY, "prompt": prompts, "max_tokens": 10, "logprobs": 0})
    ids = [reference.tokenizer.encode(p) for p in prompts]
    for prompt_ids, choice in zip(ids, out["choices"], strict=True):
        expected = reference.greedy(prompt_ids, 10)
        assert choice["logprobs"]["tokens"] == [reference.token(t) for t in expected]
        assert choice["text"] == reference.text(expected)
        assert choice["finish_reason"] == "length" and choice["stop_reason"] is None
    assert out["usage"] == {"prompt_tokens": len(ids[0]) + len(ids[1]), "completion_tokens": 20,
                            "total_tokens": len(ids[0]) + len(ids[1]) + 20}  # fmt: skip
    assert out["id"].startswith("cmpl-") and out["object"] == "text_completion"
    by_ids = _post(client, {**GREEDY, "prompt": ids, "max_tokens": 10})
    assert [c["text"] for c in by_ids["choices"]] == [c["text"] for c in out["choices"]]


def test_a_stream_equals_the_whole_answer_and_n_choices_interleave(client):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "n": 2, "seed": 3,
            "temperature": 0.9, "ignore_eos": True}  # fmt: skip
    whole = _post(client, body)
    chunks = _stream(client, {**body, "stream_options": {"include_usage": True}})
    texts = [c["text"] for c in whole["choices"]]
    assert _texts(chunks[:-1]) == dict(enumerate(texts))
    assert texts[0] != texts[1]  # each choice its own draw
    assert _post(client, body)["choices"] == whole["choices"]  # seeded: the same again
    order = [c["choices"][0]["index"] for c in chunks[:-1]]
    assert order != sorted(order)  # choices interleave as they are generated
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert {c["choices"][0]["finish_reason"] for c in chunks[-3:-1]} == {"length"}
    assert "usage" not in _stream(client, body)[-1]  # usage only when asked


def test_stop_strings_cut_the_text(client):
    body = {**GREEDY, "prompt": "Once upon a time", "max_tokens": 20}
    text = _post(client, body)["choices"][0]["text"]
    stop = text[6:10]
    cut = _post(client, {**body, "stop": ["@@never@@", stop]})["choices"][0]
    assert cut["text"] == text[: text.index(stop)]
    assert cut["finish_reason"] == "stop" and cut["stop_reason"] == stop
    assert _texts(_stream(client, {**body, "stop": stop})) == {0: cut["text"]}


def test_logprobs_and_echo_equal_a_numpy_log_softmax(client, reference):
    ids = reference.tokenizer.encode("The quick brown fox")
    body = {**GREEDY, "prompt": ids, "max_tokens": 6, "logprobs": 3, "echo": True}
    choice = _post(client, body)["choices"][0]
    generated = reference.greedy(ids, 6)
    lp = reference.log_softmax(ids + generated)  # row t: the distribution of token t + 1
    everything = ids + generated
    assert choice["text"] == reference.text(ids) + reference.text(generated)
    got = choice["logprobs"]
    assert got["tokens"] == [reference.token(t) for t in everything]
    assert got["token_logprobs"][0] is None and got["top_logprobs"][0] is None
    expected = [lp[t - 1, everything[t]] for t in range(1, len(everything))]
    np.testing.assert_allclose(got["token_logprobs"][1:], expected, atol=1e-4)
    for t in range(1, len(everything)):
        top = np.argsort(-lp[t - 1])[:3].tolist()
        wanted = {reference.token(i): lp[t - 1, i] for i in [everything[t], *top]}
        assert got["top_logprobs"][t].keys() == wanted.keys()
        np.testing.assert_allclose(list(got["top_logprobs"][t].values()),
                                   [wanted[k] for k in got["top_logprobs"][t]], atol=1e-4)  # fmt: skip
    assert got["text_offset"] == np.cumsum([0, *map(len, got["tokens"][:-1])]).tolist()
    streamed = _stream(client, body)
    assert _texts(streamed) == {0: choice["text"]}
    tokens = [tok for c in streamed for tok in c["choices"][0]["logprobs"]["tokens"]]
    assert tokens == got["tokens"]


@pytest.fixture
def chat_template(server):
    tokenizer = server.engine.tokenizer
    tokenizer.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    yield "user: Tell me a story\n"
    tokenizer.chat_template = None


def test_chat_with_a_template_equals_completions_of_the_rendered_prompt(client, chat_template):
    messages = [{"role": "user", "content": "Tell me a story"}]
    body = {**GREEDY, "messages": messages, "max_completion_tokens": 8}
    out = _post(client, body, "/v1/chat/completions")
    plain = _post(client, {**GREEDY, "prompt": chat_template, "max_tokens": 8})
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["choices"][0]["message"] == {"role": "assistant",
                                            "content": plain["choices"][0]["text"]}  # fmt: skip
    assert out["usage"] == plain["usage"]
    chunks = _stream(client, body, "/v1/chat/completions")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = _texts(chunks[1:], key=lambda c: c["delta"].get("content", ""))
    assert content == {0: plain["choices"][0]["text"]}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_without_a_template_is_a_400(client):
    response = client.post("/v1/chat/completions",
                           json={"messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["message"] == NO_CHAT_TEMPLATE


TOO_LONG = (
    "This model's maximum context length is 512 tokens. However, you requested {} tokens ({} in "
    "the messages, {} in the completion). Please reduce the length of the messages or completion."
)


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        (b'{"prompt": "x",', 400, None, "the request body is not valid JSON: Expecting property "
         "name enclosed in double quotes: line 1 column 16 (char 15)"),
        (b'{"prompt": "x", "temperature": NaN}', 400, None,
         "the request body is not valid JSON: NaN is not a JSON number"),
        (b"\xff\xfe{}", 400, None, None),
        ({"model": MODEL}, 400, "prompt", "prompt is required"),
        ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens", "max_tokens must be at least 1; got -1"),
        ({"prompt": [1] * 500, "max_tokens": 100}, 400, "max_tokens", TOO_LONG.format(600, 500, 100)),
        ({"prompt": [1] * 600, "max_tokens": 1}, 400, "prompt", TOO_LONG.format(601, 600, 1)),
        ({"prompt": "x", "temperature": -1}, 400, "temperature", "temperature must be at least 0; got -1.0"),
        ({"prompt": "x", "model": "gpt-4"}, 404, "model", "The model `gpt-4` does not exist."),
        ({"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens",
         'max_tokens must be an integer; got "ten" (a string)'),
        ({"prompt": [50257]}, 400, "prompt",
         "token id 50257 in the prompt is outside the vocabulary [0, 50257)"),
        ({"prompt": ""}, 400, "prompt", "the prompt is empty; give at least one token"),
    ],
)  # fmt: skip
def test_each_fault_is_an_error_object_and_the_server_serves_on(
    client, body, status, param, message
):
    if isinstance(body, dict):
        response = client.post("/v1/completions", json=body)
    else:
        response = client.post("/v1/completions", content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == status
    assert error["type"] == {400: "BadRequestError", 404: "NotFoundError"}[status]
    if message is not None:
        assert error["message"] == message
    _serves(client)


def test_a_refused_later_prompt_cancels_the_earlier_ones(server, client):
    before = _aborts(server)
    body = {**GREEDY, "prompt": [[1, 2], [1] * 600], "max_tokens": N_POSITIONS - 10}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert wait_until(lambda: server.engine.wait_idle(0) and _aborts(server) == before + 1)


def test_the_api_key_guards_v1_only(server, client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        for method, path in (("POST", "/v1/completions"), ("GET", "/v1/models")):
            response = httpx.request(method, server.url + path, headers=headers, json={})
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "AuthenticationError"
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 200
    _serves(client)


def test_a_body_over_the_limit_is_a_413(server, client):
    big = json.dumps({"prompt": "x" * MAX_BODY}).encode()
    chunked = iter([b'{"prompt": "', b"x" * (MAX_BODY // 2), b"x" * (MAX_BODY // 2), b'"}'])
    for content in (big, chunked):  # Content-Length, then a chunked body counted as it comes
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as fresh:
            response = fresh.post("/v1/completions", content=content)
        assert response.status_code == 413
        assert response.json()["error"] == {
            "message": f"the request body is larger than the limit of {MAX_BODY} bytes",
            "type": "RequestTooLargeError", "param": None, "code": 413,
        }  # fmt: skip
    _serves(client)


def test_models_health_metrics_and_unknown_routes(server, client):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [MODEL, "alias"] and models["object"] == "list"
    assert {m["max_model_len"] for m in models["data"]} == {N_POSITIONS}
    health = client.get("/health")
    assert health.status_code == 200 and health.content == b""
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    assert client.get("/v1/completions").status_code == 405


def _metrics(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in response.text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_what_was_served(server, client):
    before = _metrics(client)
    _post(client, {**GREEDY, "prompt": "Hello", "max_tokens": 3})
    after = _metrics(client)
    stats = server.engine.stats()
    label = f'model_name="{MODEL}"'
    length = f'gpt2_dual_request_success_total{{finished_reason="length",{label}}}'
    assert after[length] == stats.requests_total["length"] == before[length] + 1
    assert after[f"gpt2_dual_generation_tokens_total{{{label}}}"] == stats.generation_tokens_total
    assert after[f"gpt2_dual_prompt_tokens_total{{{label}}}"] == stats.prompt_tokens_total
    assert after[f"gpt2_dual_max_num_seqs{{{label}}}"] == 4
    assert after[f"gpt2_dual_kv_cache_bytes_per_slot{{{label}}}"] == server.engine.kv_bytes_per_slot
    for name in ("time_to_first_token", "e2e_request_latency"):
        prefix = f"gpt2_dual_{name}_seconds"
        assert after[f"{prefix}_count{{{label}}}"] == before[f"{prefix}_count{{{label}}}"] + 1
        buckets = [v for k, v in after.items() if k.startswith(f"{prefix}_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == after[f"{prefix}_count{{{label}}}"]
        assert after[f'{prefix}_bucket{{{label},le="+Inf"}}'] == buckets[-1]


def _aborts(server) -> int:
    return server.engine.stats().requests_total.get("abort", 0)


def test_a_stream_client_that_leaves_frees_its_slots(server):
    before = _aborts(server)
    body = {**GREEDY, "prompt": "Hi", "max_tokens": N_POSITIONS - 10, "n": 2, "stream": True}
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as leaving:
        with leaving.stream("POST", "/v1/completions", json=body) as response:
            first = next(line for line in response.iter_lines() if line)
            assert first.startswith("data: ")
    assert wait_until(lambda: server.engine.stats().running == 0 and _aborts(server) == before + 1)


def test_a_waiting_client_that_leaves_frees_its_slots(server):
    before = _aborts(server)
    body = json.dumps({**GREEDY, "prompt": "Hi", "max_tokens": N_POSITIONS - 10, "n": 4}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode() + body)
        assert wait_until(lambda: server.engine.stats().running == 4)
    assert wait_until(lambda: server.engine.stats().running == 0 and _aborts(server) == before + 1)


def test_a_full_queue_is_a_429_and_a_stopped_engine_a_503(folder):
    with (
        serving(folder, start_engine=False, max_queue=1, max_num_seqs=1) as live,
        httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as client,
    ):
        body = {**GREEDY, "prompt": "Hi", "max_tokens": 3}
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as queued:
            assert queued.status_code == 200 and live.engine.stats().waiting == 1
            full = client.post("/v1/completions", json=body)
            assert full.status_code == 429
            assert full.json()["error"] == {
                "message": "the queue is full (1 requests waiting); retry later",
                "type": "RateLimitError", "param": None, "code": 429,
            }  # fmt: skip
            live.engine.start()
            lines = [line for line in queued.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in lines[-2]
        _serves(client)
        long = {**body, "max_tokens": N_POSITIONS - 10, "stream": True}
        with client.stream("POST", "/v1/completions", json=long) as running:
            events = (line for line in running.iter_lines() if line)
            lines = [next(events)]  # running now
            stopper = threading.Thread(target=live.engine.stop)  # aborts at once (timeout 0)
            stopper.start()
            lines += list(events)
        stopper.join(30)
        assert lines[-1] == "data: [DONE]" and '"finish_reason":"abort"' in lines[-2]
        closed = client.post("/v1/completions", json=body)
        assert closed.status_code == 503
        assert closed.json()["error"]["message"] == "the server is shutting down; no new requests"
        assert closed.json()["error"]["type"] == "ServiceUnavailableError"
        assert client.get("/health").status_code == 503  # load balancers stop sending


def test_histograms_and_the_exposition_from_recent_samples():
    from gpt2_dual.serve import Stats
    from gpt2_dual.serve.metrics import Histogram, render

    hist = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 2.0, 0.05):  # a value on a bound counts in that bucket (le)
        hist.observe(value)
    assert hist.cumulative() == [(0.1, 2), (1.0, 3), (math.inf, 4)] and hist.count == 4
    stats = Stats({"stop": 2, "other": 1}, 10, 20, 1, 0, 4, 1024, [0.003, 0.3], [0.4])
    lines = render(stats, 'a"b').splitlines()
    label = 'model_name="a\\"b"'
    for reason, count in (("stop", 2), ("length", 0), ("abort", 0), ("other", 1)):
        assert (
            f'gpt2_dual_request_success_total{{finished_reason="{reason}",{label}}} {count}'
            in lines
        )
    ttft = "gpt2_dual_time_to_first_token_seconds"
    assert f'{ttft}_bucket{{{label},le="0.001"}} 0' in lines
    assert f'{ttft}_bucket{{{label},le="0.005"}} 1' in lines
    assert f'{ttft}_bucket{{{label},le="0.5"}} 2' in lines
    assert f'{ttft}_bucket{{{label},le="+Inf"}} 2' in lines
    assert f"{ttft}_count{{{label}}} 2" in lines and f"{ttft}_sum{{{label}}} 0.303" in lines
    assert (
        f"# HELP {ttft} Time to first token in seconds (over the engine's recent requests, "
        "at most the last 10000)." in lines
    )
    declared = {line.split()[2]: line.split()[3] for line in lines if line.startswith("# TYPE")}
    sample = re.compile(r'^([a-z0-9_]+)\{([a-z_]+="(?:[^"\\]|\\.)*",?)+\} [0-9.e+-]+$')
    for line in (line for line in lines if not line.startswith("#")):
        name = sample.match(line).group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in declared else name
        assert family in declared, line
