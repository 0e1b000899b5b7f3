"""The engine and its scheduler against independent oracles: ``generate``, a plain no-cache
loop with transformers' logits processors, transformers' forward logits.

Sequences join and leave between steps, in slots above and below each other; greedy tokens
must equal ``generate`` for each prompt alone whatever else runs. Faults (a full queue, a
cancel, a stop with requests in flight, a too-long request) get their typed error or
``"abort"`` and leave every slot free.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt2_dual import GPT2Config, GPT2TokenizerFast  # noqa: E402
from gpt2_dual.errors import EngineClosedError, QueueFullError, RequestError  # noqa: E402
from gpt2_dual.serve import Engine, SamplingParams  # noqa: E402

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
PROMPTS = [
    "Hello world", "The quick brown fox jumps over", "A", "Once upon a time there was a",
    "x y z", "In 1999, the",
]  # fmt: skip


def _model(n_positions: int = 64):
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_positions=n_positions, n_embd=48, n_layer=3, n_head=4, initializer_range=0.3
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def tok():
    return GPT2TokenizerFast.from_pretrained("gpt2")


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def saved(model, tok, tmp_path_factory) -> str:
    """``model`` and the tokenizer saved to a folder (read by ``Engine.from_pretrained``)."""
    folder = tmp_path_factory.mktemp("engine_lm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _generate(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def test_greedy_equals_generate_in_a_changing_batch(model, tok):
    engine = Engine(model, tok, max_num_seqs=3)  # 6 prompts, 3 slots: they queue, join, leave
    lengths = [3, 12, 7, 1, 12, 5]  # finishing at different steps frees slots mid-batch
    events: dict[int, list] = {i: [] for i in range(len(PROMPTS))}
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
        engine.submit(tok.encode(prompt), params, events[i].append)
        engine.scheduler.step()  # each arrives one step after the previous
    while not engine.scheduler.idle:
        engine.scheduler.step()
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        tokens = [t for e in events[i] for t in e.token_ids]
        assert tokens == _generate(model, tok.encode(prompt), n), prompt
        assert events[i][-1].finish_reason == "length"
        text = "".join(e.text for e in events[i])
        assert text == tok.decode(tokens, skip_special_tokens=True)
    assert sorted(engine.scheduler.free) == [0, 1, 2] and not engine.scheduler.running


def test_keras_model_greedy_equals_its_generate_in_a_changing_batch(tok):
    """Token prompts on a small vocabulary (the vocabulary is not what is tested here; each
    XLA program of the slot decoder compiles faster)."""
    pytest.importorskip("tensorflow")
    import keras

    from gpt2_dual.tf import GPT2LMHeadModel

    keras.utils.set_random_seed(0)
    config = GPT2Config(
        vocab_size=97, n_positions=64, n_embd=48, n_layer=3, n_head=4, initializer_range=0.3,
        bos_token_id=96, eos_token_id=96,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    engine = Engine(model, tok, max_num_seqs=2)  # 5 prompts, 2 slots: they queue, join, leave
    prompts = [[5, 17, 42, 8], [70, 3, 3, 19, 88, 41, 7], [33, 2], [9], [44, 60, 27]]
    lengths = [3, 9, 6, 1, 9]
    events: dict[int, list] = {i: [] for i in range(len(lengths))}
    for i, (ids, n) in enumerate(zip(prompts, lengths, strict=True)):
        params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
        engine.submit(ids, params, events[i].append)
        engine.scheduler.step()
    while not engine.scheduler.idle:
        engine.scheduler.step()
    assert engine.decoder.framework == "tf"
    for i, (ids, n) in enumerate(zip(prompts, lengths, strict=True)):
        ref = model.generate(np.array([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             jit_compile=False)  # fmt: skip
        tokens = [t for e in events[i] for t in e.token_ids]
        assert tokens == np.asarray(ref)[0, len(ids) :].tolist(), ids
    assert len({t for e in events.values() for x in e for t in x.token_ids}) > len(prompts)


def test_offline_generate_batch_and_token_prompts(model, tok):
    engine = Engine(model, tok, max_num_seqs=4)
    as_ids = [tok.encode(p) for p in PROMPTS]
    by_text = engine.generate(PROMPTS, GREEDY, use_tqdm=False)
    by_ids = engine.generate(as_ids, GREEDY, use_tqdm=False)
    for prompt, ids, a, b in zip(PROMPTS, as_ids, by_text, by_ids, strict=True):
        assert a.prompt == prompt and a.prompt_token_ids == ids and b.prompt is None
        assert a.outputs[0].token_ids == b.outputs[0].token_ids == _generate(model, ids, 12)


def test_seeded_sampling_is_reproducible_whatever_runs_beside(model, tok):
    params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=10, seed=7, n=2)
    alone = Engine(model, tok, max_num_seqs=2).generate(["Hello"], params, use_tqdm=False)[0]
    crowd = Engine(model, tok, max_num_seqs=5).generate(
        ["x", "Hello", "The end"], params, use_tqdm=False
    )
    assert [c.token_ids for c in crowd[1].outputs] == [c.token_ids for c in alone.outputs]
    assert alone.outputs[0].token_ids != alone.outputs[1].token_ids  # each choice its own draw
    other = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=10, seed=8)
    again = Engine(model, tok, max_num_seqs=1).generate(["Hello"], other, use_tqdm=False)[0]
    assert again.outputs[0].token_ids != alone.outputs[0].token_ids
    negative = SamplingParams(temperature=0.8, max_tokens=10, seed=-3)  # vLLM takes any int
    twice = Engine(model, tok, max_num_seqs=2).generate(["Hi", "Hi"], negative, use_tqdm=False)
    assert twice[0].outputs[0].token_ids == twice[1].outputs[0].token_ids


def test_logprobs_equal_transformers_log_softmax(model, tok, saved):
    transformers = pytest.importorskip("transformers")
    ref = transformers.GPT2LMHeadModel.from_pretrained(saved).eval()
    ids = tok.encode("The quick brown fox")
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3, prompt_logprobs=2)
    out = Engine(model, tok, max_num_seqs=2).generate([ids], params, use_tqdm=False)[0]
    choice = out.outputs[0]
    full = torch.tensor([ids + choice.token_ids])
    with torch.no_grad():
        lp = torch.log_softmax(ref(full).logits[0].double(), -1).numpy()
    P = len(ids)
    assert out.prompt_logprobs[0] is None
    for i, entry in enumerate(out.prompt_logprobs[1:], start=1):  # token i from row i - 1
        assert entry.token_id == ids[i]
        np.testing.assert_allclose(entry.logprob, lp[i - 1, ids[i]], atol=1e-4)
        assert [t for t, _ in entry.top] == np.argsort(-lp[i - 1])[:2].tolist()
    for j, entry in enumerate(choice.logprobs):
        row = lp[P - 1 + j]
        np.testing.assert_allclose(entry.logprob, row[choice.token_ids[j]], atol=1e-4)
        np.testing.assert_allclose([v for _, v in entry.top], np.sort(row)[::-1][:3], atol=1e-4)
        assert entry.top[0][0] == choice.token_ids[j]  # greedy: the likeliest


def _reference_penalized_greedy(model, ids, params, steps):
    """A plain no-cache loop; repetition penalty by transformers' own processor, frequency and
    presence penalties by vLLM's formula written out per token."""
    from transformers import RepetitionPenaltyLogitsProcessor

    rep = RepetitionPenaltyLogitsProcessor(params.repetition_penalty)
    seq = list(ids)
    for _ in range(steps):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[:, -1].float()
        logits = rep(torch.tensor([seq]), logits)[0].numpy().astype(np.float64)
        out = seq[len(ids) :]
        for t in set(out):
            logits[t] -= params.frequency_penalty * out.count(t) + params.presence_penalty
        seq.append(int(np.argmax(logits)))
    return seq[len(ids) :]


@pytest.mark.parametrize(
    "penalties",
    [
        {"repetition_penalty": 1.8},
        {"frequency_penalty": 1.5},
        {"presence_penalty": 2.0},
        {"repetition_penalty": 0.7, "frequency_penalty": -0.5, "presence_penalty": 0.5},
    ],
)
def test_penalties_equal_a_plain_loop(model, tok, penalties):
    pytest.importorskip("transformers")
    params = SamplingParams(temperature=0, max_tokens=15, ignore_eos=True, **penalties)
    ids = tok.encode("the the the cat sat on the mat")
    out = Engine(model, tok, max_num_seqs=2).generate([ids], params, use_tqdm=False)[0]
    expected = _reference_penalized_greedy(model, ids, params, 15)
    assert out.outputs[0].token_ids == expected
    assert expected != _generate(model, ids, 15)  # the penalty changed something


def test_stop_strings_and_stop_tokens(model, tok):
    engine = Engine(model, tok, max_num_seqs=2)
    ids = tok.encode("Once upon a time")
    free = engine.generate([ids], SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)
    text, tokens = free[0].outputs[0].text, free[0].outputs[0].token_ids
    stop = text[5:9]  # a piece of the middle of the text, maybe across tokens
    cut = engine.generate([ids], SamplingParams(temperature=0, max_tokens=12, stop=[stop, "@@"]),
                          use_tqdm=False)[0].outputs[0]  # fmt: skip
    assert cut.text == text[: text.index(stop)]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert tokens[: len(cut.token_ids)] == cut.token_ids and len(cut.token_ids) < 12
    by_token = engine.generate(
        [ids], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[tokens[3]]),
        use_tqdm=False,
    )[0].outputs[0]  # fmt: skip
    first = tokens.index(tokens[3])
    assert by_token.token_ids == tokens[: first + 1] and by_token.stop_reason == tokens[3]
    held = engine.generate(
        [ids],
        SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[tokens[0]], min_tokens=4),
        use_tqdm=False,
    )[0].outputs[0]
    assert len(held.token_ids) >= 4 and tokens[0] not in held.token_ids[:4]


def test_eos_stops_unless_ignored(model, tok):
    ids = tok.encode("Hello")
    tokens = _generate(model, ids, 8)
    # a token greedy decoding first reaches after at least one other token
    k = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    engine = Engine(model, tok, max_num_seqs=1)
    engine.eos_token_id = engine.scheduler.eos = tokens[k]
    out = engine.generate([ids], SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    assert out[0].outputs[0].token_ids == tokens[: k + 1]
    assert out[0].outputs[0].finish_reason == "stop"
    on = engine.generate([ids], GREEDY, use_tqdm=False)[0].outputs[0]
    assert len(on.token_ids) == 12 and on.finish_reason == "length"


def test_context_limit_and_prompt_checks(model, tok):
    engine = Engine(model, tok, max_num_seqs=2, max_model_len=20)
    ids = tok.encode("one two three four five")  # 5 tokens
    with pytest.raises(RequestError) as err:
        engine.submit(ids, SamplingParams(max_tokens=16), print)
    assert str(err.value) == (
        "This model's maximum context length is 20 tokens. However, you requested 21 tokens "
        "(5 in the messages, 16 in the completion). Please reduce the length of the messages "
        "or completion."
    )
    assert err.value.param == "max_tokens" and err.value.status == 400
    with pytest.raises(RequestError, match=r"token id 50257 in the prompt is outside the vocab"):
        engine.submit([1, 50257], SamplingParams(), print)
    with pytest.raises(RequestError, match="the prompt is empty"):
        engine.submit([], SamplingParams(), print)
    to_end = engine.generate([ids], SamplingParams(temperature=0, max_tokens=None, ignore_eos=True),
                             use_tqdm=False)[0].outputs[0]  # fmt: skip
    assert len(to_end.token_ids) == 15 and to_end.finish_reason == "length"


def test_cache_grows_to_max_model_len_and_never_past_max_num_seqs(tok):
    model = _model(n_positions=200)
    engine = Engine(model, tok, max_num_seqs=3, max_model_len=200)
    cache = engine.decoder.cache
    assert cache.keys[0].shape[:3] == (3, 4, 128)  # starts small
    ids = list(range(100, 250))  # 150 tokens: past the first allocation
    out = engine.generate([ids, ids[:10]], GREEDY, use_tqdm=False)
    assert cache.keys[0].shape[:3] == (3, 4, 200)
    assert out[0].outputs[0].token_ids == _generate(model, ids, 12)
    assert out[1].outputs[0].token_ids == _generate(model, ids[:10], 12)
    assert engine.kv_bytes_per_slot == 2 * 3 * 48 * 200 * 4  # k and v, layers, width, positions


def test_queue_limit_cancel_and_stop(model, tok):
    engine = Engine(model, tok, max_num_seqs=1, max_queue=1)
    ids = tok.encode("Hello")
    long = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    seen: list = []
    first = engine.submit(ids, long, seen.append)  # will run
    engine.scheduler.step()
    engine.submit(ids, long, seen.append)  # waits (the one queue place)
    with pytest.raises(QueueFullError, match=r"the queue is full \(1 requests waiting\)") as err:
        engine.submit(ids, long, seen.append)
    assert err.value.status == 429
    first.cancel()
    engine.scheduler.step()  # the cancel frees the slot; the waiting one takes it
    assert [e.finish_reason for e in seen if e.finish_reason] == ["abort"]
    assert engine.stats().running == 1 and engine.stats().waiting == 0
    engine.start()
    engine.stop(timeout=0.0)  # in flight: aborted at once
    assert [e.finish_reason for e in seen if e.finish_reason] == ["abort", "abort"]
    assert engine.scheduler.idle and sorted(engine.scheduler.free) == [0]
    with pytest.raises(EngineClosedError) as closed:
        engine.submit(ids, long, seen.append)
    assert closed.value.status == 503


def test_stop_lets_in_flight_requests_finish(model, tok):
    engine = Engine(model, tok, max_num_seqs=2)
    done = threading.Event()
    seen: list = []

    def sink(event):
        seen.append(event)
        if event.finish_reason:
            done.set()

    engine.start()
    engine.submit(tok.encode("Hello"), GREEDY, sink)
    engine.stop(timeout=30.0)
    assert done.is_set() and seen[-1].finish_reason == "length"
    assert sum(len(e.token_ids) for e in seen) == 12


@pytest.mark.parametrize("bits", [8, 4])
def test_bitsandbytes_models_serve_their_own_greedy_tokens(tok, saved, bits):
    pytest.importorskip("bitsandbytes")
    from gpt2_dual.quantization import BitsAndBytesConfig

    config = (
        BitsAndBytesConfig(load_in_8bit=True)
        if bits == 8
        else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="float32")
    )
    engine = Engine.from_pretrained(saved, quantization_config=config, max_num_seqs=2)
    assert type(engine.model.transformer.h[0].attn.c_attn).__name__.startswith("Linear")
    ids = [tok.encode(p) for p in PROMPTS[:3]]
    greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    out = engine.generate(ids, greedy, use_tqdm=False)
    for prompt, result in zip(ids, out, strict=True):
        assert result.outputs[0].token_ids == _generate(engine.model, prompt, 6)


def test_run_in_the_calling_thread_until_stop(model, tok):
    engine = Engine(model, tok, max_num_seqs=2)
    seen: list = []

    def stop_when_done(event):
        seen.append(event)
        if event.finish_reason:  # on the engine's thread: stop must not wait for itself
            threading.Thread(target=engine.stop, args=(5.0,)).start()

    engine.submit(tok.encode("Hello"), GREEDY, stop_when_done)
    engine.run()  # returns once stopped and idle
    assert seen[-1].finish_reason == "length" and engine.closed
    assert sum(len(e.token_ids) for e in seen) == 12
    with pytest.raises(RuntimeError, match="already runs"):
        started = Engine(model, tok, max_num_seqs=1)
        started.start()
        started.run()
