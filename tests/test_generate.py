"""``generate`` in both frameworks against transformers' ``generate`` (the reference, PyTorch),
a plain no-cache greedy loop, a numpy reference of the sampling filters, and single rows; stop
strings against transformers' ``StopStringCriteria``. TF runs in graph mode here, and under
XLA (its default) for the cases marked ``xla_every_run`` (all of them with ``GPT2_DUAL_TF_XLA=1``).
PyTorch sampling token for token with transformers: ``test_sampling_transformers.py``.

One random checkpoint, written by transformers, loaded by each framework's ``from_pretrained``.
Its weights are large (initializer_range 0.3) so logits are well apart and a 1e-5 difference
cannot flip an argmax or a beam ranking.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cases import assert_close
from frameworks import FRAMEWORKS
from generation_ref import reference_checkpoint, reference_generate, scores_equal, warp
from gpt2_dual import GenerationConfig, GPT2TokenizerFast, TextIteratorStreamer, TextStreamer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, POSITIONS, EOS = 97, 48, 96
PROMPT = np.array([[5, 17, 42, 8, 61, 23], [70, 3, 3, 19, 88, 41]], dtype=np.int64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """transformers' tiny GPT-2 with random weights, saved; returns (model, folder)."""
    folder = tmp_path_factory.mktemp("gen_ref")
    return reference_checkpoint(folder, vocab=VOCAB, positions=POSITIONS, eos=EOS, init=0.3), folder


@pytest.fixture(scope="module", params=FRAMEWORKS)
def fw(request):
    return request.param


@pytest.fixture(scope="module")
def ours(fw, reference):
    return fw.load("lm", reference[1])


def theirs(reference, input_ids, attention_mask=None, **kwargs):
    kwargs.setdefault("pad_token_id", 0)
    return reference_generate(reference[0], input_ids, attention_mask, **kwargs)


def frequent_token(reference) -> int:
    """A token greedy decoding of PROMPT[0] produces early: as an eos id it ends rows early."""
    return int(theirs(reference, PROMPT, max_new_tokens=4, eos_token_id=None)[0, -2])


CASES = {
    "greedy": dict(max_new_tokens=10),
    "repetition_penalty": dict(max_new_tokens=10, repetition_penalty=1.6),
    "repetition_penalty_below_1": dict(max_new_tokens=10, repetition_penalty=0.7),
    "no_repeat_ngram": dict(max_new_tokens=14, no_repeat_ngram_size=2),
    "bad_words": dict(max_new_tokens=10, bad_words_ids=[[5], [17, 42], [EOS]]),
    "beams": dict(max_new_tokens=9, num_beams=3),
    "beams_return_2": dict(max_new_tokens=9, num_beams=3, num_return_sequences=2),
    "beams_length_penalty": dict(max_new_tokens=9, num_beams=3, length_penalty=-0.5),
    "beams_early_true": dict(max_new_tokens=9, num_beams=3, early_stopping=True),
    "beams_early_never": dict(max_new_tokens=9, num_beams=3, early_stopping="never"),
    "beams_repetition": dict(
        max_new_tokens=9, num_beams=2, repetition_penalty=1.4, no_repeat_ngram_size=3
    ),
}


#: TF ``generate`` compiles with XLA by default; these run under XLA in every run (marked
#: ``xla_every_run``), the rest in graph mode unless ``GPT2_DUAL_TF_XLA=1``: greedy and left
#: padding (each XLA compile takes seconds). Beams with eos ids and seeded sampling under XLA
#: equal graph mode in ``tests/tf/test_generate_tf.py`` (``test_xla_equals_graph_mode``).
XLA = pytest.mark.xla_every_run


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=XLA) if c == "greedy" else c for c in CASES]
)
def test_equals_transformers(ours, fw, reference, case):
    kwargs = CASES[case]
    got = fw.generate(ours, PROMPT, pad_token_id=0, **kwargs)
    np.testing.assert_array_equal(got, theirs(reference, PROMPT, **kwargs))


@pytest.mark.parametrize("beams,eos_list", [(1, False), (1, True), (3, False), (3, True)])
def test_eos_ends_rows_as_transformers(ours, fw, reference, beams, eos_list):
    eos = frequent_token(reference)
    eos_ids = [eos, EOS] if eos_list else eos
    kwargs = dict(max_new_tokens=12, num_beams=beams, eos_token_id=eos_ids)
    expected = theirs(reference, PROMPT, **kwargs)
    if beams == 1:
        assert expected.shape[1] == PROMPT.shape[1] + 12 and (expected[0, -1] == 0)  # ended early
    np.testing.assert_array_equal(fw.generate(ours, PROMPT, pad_token_id=0, **kwargs), expected)


def test_bad_word_longer_than_the_history_is_ignored_as_transformers(ours, fw, reference):
    prompt = PROMPT[:, 4:]  # two tokens
    first = int(theirs(reference, prompt, max_new_tokens=1)[0, -1])
    kwargs = dict(max_new_tokens=5, bad_words_ids=[[*prompt[0], first], [prompt[0, 1], first]])
    expected = theirs(reference, prompt, **kwargs)  # the 3-token word waits for a 3-token history
    assert expected[0, 2] != first
    np.testing.assert_array_equal(fw.generate(ours, prompt, pad_token_id=0, **kwargs), expected)


def test_min_new_tokens_holds_eos_back(ours, fw, reference):
    eos = frequent_token(reference)
    kwargs = dict(max_new_tokens=8, min_new_tokens=5, eos_token_id=eos)
    expected = theirs(reference, PROMPT, **kwargs)
    assert eos not in expected[:, PROMPT.shape[1] : PROMPT.shape[1] + 5]
    np.testing.assert_array_equal(fw.generate(ours, PROMPT, pad_token_id=0, **kwargs), expected)


def test_beam_scores_as_transformers(ours, fw, reference):
    kwargs = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)  # fmt: skip
    got = fw.generate(ours, PROMPT, pad_token_id=0, **kwargs)
    ref = theirs(reference, PROMPT, **kwargs)
    np.testing.assert_array_equal(got.sequences, ref.sequences.numpy())
    np.testing.assert_array_equal(got.beam_indices, ref.beam_indices.numpy())
    assert_close(got.sequences_scores, ref.sequences_scores.numpy(), what="sequences_scores")
    assert len(got.scores) == len(ref.scores) == len(got.logits)
    assert any(np.isinf(s).any() for s in got.scores), "no banned n-gram: -inf not compared"
    for step, (a, b) in enumerate(zip(got.scores, ref.scores, strict=True)):
        scores_equal(a, b.numpy(), what=f"processed scores of step {step}")
    for step, (a, b) in enumerate(zip(got.logits, ref.logits, strict=True)):
        assert_close(a, b.numpy(), what=f"raw logits of step {step}")


def _no_cache_greedy(fw, model, prompt: np.ndarray, steps: int) -> np.ndarray:
    seq = prompt
    for _ in range(steps):
        logits = fw.run(model, input_ids=seq, use_cache=False)["logits"][:, -1]
        seq = np.concatenate([seq, logits.argmax(-1)[:, None]], 1)
    return seq


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_cached_loop_equals_no_cache_loop(ours, fw, cache):
    got = fw.generate(ours, PROMPT, max_new_tokens=8, eos_token_id=None, cache_implementation=cache)
    np.testing.assert_array_equal(got, _no_cache_greedy(fw, ours, PROMPT, 8))


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(dict(), id="greedy", marks=XLA),
        pytest.param(dict(repetition_penalty=1.5, no_repeat_ngram_size=2), id="history"),
        pytest.param(dict(num_beams=3), id="beams"),
    ],
)
def test_left_padded_rows_equal_single_rows(ours, fw, reference, options):
    """Each row of a left-padded batch continues as the row alone, unpadded, continues in
    transformers (the reference)."""
    rows = [np.array([[5, 17, 42, 8, 61, 23]]), np.array([[70, 41]]), np.array([[9, 9, 9, 1]])]
    width = max(r.shape[1] for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - r.shape[1] :], mask[i, width - r.shape[1] :] = r[0], 1
    kwargs = dict(max_new_tokens=7, eos_token_id=None, pad_token_id=0, **options)
    batch = fw.generate(ours, ids, mask, **kwargs)
    for i, r in enumerate(rows):
        alone = theirs(reference, r, **kwargs)
        np.testing.assert_array_equal(batch[i, width:], alone[0, r.shape[1] :], err_msg=f"row {i}")


FILTERS = {
    "temperature": dict(temperature=0.7, top_k=0),
    "top_k": dict(top_k=5),
    "top_p": dict(top_p=0.8, top_k=0),
    "typical_p": dict(typical_p=0.6, top_k=0),
    "all": dict(temperature=1.3, top_k=20, top_p=0.9, typical_p=0.9),
}


@pytest.mark.parametrize("name", FILTERS)
def test_sampling_filters_equal_numpy_reference(ours, fw, name):
    options = FILTERS[name]
    out = fw.generate(ours, PROMPT, do_sample=True, seed=3, max_new_tokens=4, eos_token_id=None,
                      return_dict_in_generate=True, output_scores=True, output_logits=True,
                      **options)  # fmt: skip
    ref_kw = {f"{k}_": v for k, v in options.items()}
    for step, (raw, scores) in enumerate(zip(out.logits, out.scores, strict=True)):
        expected = warp(np.asarray(raw, np.float32), **ref_kw)
        kept = np.isfinite(expected)
        np.testing.assert_array_equal(np.isfinite(scores), kept, err_msg=f"step {step}")
        assert 0 < kept.sum(-1).min() and (name == "temperature" or kept.sum(-1).max() < VOCAB)
        assert_close(scores[kept], expected[kept], what=f"step {step}")
        chosen = out.sequences[:, PROMPT.shape[1] + step]
        assert kept[np.arange(len(chosen)), chosen].all(), "sampled a removed token"


def test_numpy_reference_is_transformers():
    from transformers.generation import logits_process as lp

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, (4, VOCAB)).astype(np.float32)
    checks = [
        (lp.TemperatureLogitsWarper(0.7), dict(temperature_=0.7, top_k_=0)),
        (lp.TopKLogitsWarper(7), dict(top_k_=7)),
        (lp.TopPLogitsWarper(0.8), dict(top_p_=0.8, top_k_=0)),
        (lp.TypicalLogitsWarper(0.6), dict(typical_p_=0.6, top_k_=0)),
    ]
    for processor, options in checks:
        expected = processor(None, torch.from_numpy(scores)).numpy()
        got = warp(scores, **options)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
        assert_close(got[np.isfinite(got)], expected[np.isfinite(expected)], what=str(processor))


def test_sampling_reproducible_with_seed(ours, fw):
    kwargs = dict(do_sample=True, max_new_tokens=8, eos_token_id=None, top_k=0)
    first = fw.generate(ours, PROMPT, seed=11, **kwargs)
    np.testing.assert_array_equal(fw.generate(ours, PROMPT, seed=11, **kwargs), first)
    other = fw.generate(ours, PROMPT, seed=12, **kwargs)
    assert (other != first).any(), "a different seed drew the same 16 tokens"


def test_sampling_with_top_k_1_is_greedy(ours, fw):
    greedy = fw.generate(ours, PROMPT, max_new_tokens=8, eos_token_id=None)
    top1 = fw.generate(ours, PROMPT, seed=5, do_sample=True, top_k=1, max_new_tokens=8,
                       eos_token_id=None)  # fmt: skip
    np.testing.assert_array_equal(top1, greedy)


def test_num_return_sequences_with_sampling(ours, fw):
    out = fw.generate(ours, PROMPT, do_sample=True, seed=0, num_return_sequences=3,
                      max_new_tokens=5, eos_token_id=None)  # fmt: skip
    assert out.shape == (6, PROMPT.shape[1] + 5)
    np.testing.assert_array_equal(out[:3, : PROMPT.shape[1]], np.repeat(PROMPT[:1], 3, 0))
    np.testing.assert_array_equal(out[3:, : PROMPT.shape[1]], np.repeat(PROMPT[1:], 3, 0))


ERRORS = [
    (
        dict(top_p=1.5),
        ValueError,
        "GenerationConfig.top_p=1.5 is invalid: must be a number in (0.0, 1.0]",
    ),
    (
        dict(num_beams=2, num_return_sequences=3),
        ValueError,
        "num_return_sequences=3 must be at most num_beams=2: beam search returns its best beams",
    ),
    (
        dict(num_return_sequences=2),
        ValueError,
        "num_return_sequences=2 needs do_sample=True or num_beams >= 2: greedy decoding gives one sequence per prompt",
    ),
    (
        dict(max_new_tokens=43),
        ValueError,
        "a prompt of 6 tokens plus 43 new tokens is 49 positions, past the model's n_positions=48; lower max_new_tokens to at most 42",
    ),
    (
        dict(max_length=5),
        ValueError,
        "max_length=5 leaves no room for new tokens after a prompt of 6 tokens; set max_new_tokens instead",
    ),
    (
        dict(temprature=0.5),
        TypeError,
        "generate() got unknown keyword(s) ['temprature']; generation options are the fields of gpt2_dual.GenerationConfig",
    ),
    (
        dict(eos_token_id=VOCAB),
        ValueError,
        f"GenerationConfig.eos_token_id={VOCAB} is invalid: ids must be below vocab_size={VOCAB}",
    ),
    (
        dict(cache_implementation="sliding"),
        ValueError,
        "GenerationConfig.cache_implementation='sliding' is invalid: must be None or one of ['dynamic', 'static']",
    ),
    (
        dict(stop_strings=["x"]),
        ValueError,
        "stop_strings needs the tokenizer to read the text: pass generate(..., stop_strings=..., tokenizer=tokenizer)",
    ),
    (
        dict(attention_mask=np.array([[0, 2, 1, 1, 1, 1]] * 2)),
        ValueError,
        "attention_mask must hold only 0 (padding) and 1 (real token)",
    ),
    (
        dict(attention_mask=np.array([[1, 1, 1, 1, 1, 0]] * 2)),
        ValueError,
        'attention_mask has padding after real tokens (right padding); generation continues at the end of each row, so pad on the left: tokenizer.padding_side = "left"',
    ),
    (
        dict(input_ids=np.array([[1, VOCAB]])),
        ValueError,
        f"input_ids holds token id {VOCAB}, outside [0, vocab_size={VOCAB})",
    ),
    (
        dict(input_ids=np.array([[1.5, 2.0]], np.float32)),
        TypeError,
        "input_ids must hold integers, got dtype float32",
    ),
]


@pytest.mark.parametrize("kwargs,error,message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_clear_errors_before_work(ours, fw, kwargs, error, message):
    kwargs = dict(kwargs)
    ids = kwargs.pop("input_ids", PROMPT)
    with pytest.raises(error) as info:
        fw.generate(ours, ids, **kwargs)
    assert str(info.value) == message


def test_unsupported_transformers_option_refused(ours, fw):
    config = GenerationConfig(max_new_tokens=3, num_beam_groups=2)
    with pytest.raises(ValueError, match=r"^GenerationConfig.num_beam_groups=2 is not supported"):
        fw.generate(ours, PROMPT, generation_config=config)


@pytest.fixture(scope="module")
def tokenizer():
    return GPT2TokenizerFast.from_pretrained("gpt2")


def test_stop_strings_end_rows(ours, fw, reference, tokenizer):
    full = theirs(reference, PROMPT[:1], max_new_tokens=10, eos_token_id=None)[0]  # no stop
    new_text = tokenizer.decode(full[PROMPT.shape[1] :])
    stop = new_text[4:6]  # ends inside the 5th or 6th new token (ids < 97 are one byte each)
    got = fw.generate(ours, PROMPT[:1], max_new_tokens=10, eos_token_id=None,
                      stop_strings=[stop], tokenizer=tokenizer)[0]  # fmt: skip
    text = tokenizer.decode(got[PROMPT.shape[1] :])
    assert text.endswith(stop) and text == new_text[: len(text)] and stop not in text[:-1]


@pytest.mark.parametrize("beams", [1, 2])
def test_stop_strings_do_not_see_left_padding(ours, fw, reference, tokenizer, beams):
    # id 0 is "!": a stop string that starts in the padding must not stop the padded row
    kwargs = dict(max_new_tokens=6, eos_token_id=None, pad_token_id=0, num_beams=beams)
    alone = theirs(reference, PROMPT[1:], **kwargs)[0]  # the row unpadded, without stop strings
    stop = "!" + tokenizer.decode(alone[: PROMPT.shape[1] + 1])
    ids = np.concatenate([np.zeros((2, 3), np.int64), PROMPT], 1)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ids[0, :3] = PROMPT[0, :3]  # row 0 is not padded
    batch = fw.generate(ours, ids, mask, stop_strings=stop, tokenizer=tokenizer, **kwargs)
    assert batch.shape[1] == ids.shape[1] + 6, "the padded row stopped at its first token"
    np.testing.assert_array_equal(batch[1, 3:], alone)


#: Stop strings and rows (GPT-2 vocabulary pieces, or a text to encode): the stop decision after
#: each token is compared with transformers' ``StopStringCriteria`` (whose docstring gives the
#: "stop" rows: overhangs on either side of the stop string count, a stop string that no longer
#: touches the newest token does not).
STOP_TABLE = {
    "stop": (["stop"], [
        ["st", "op"], ["stop"], ["st", "open"], ["Ġsto", "pped"], ["las", "tops"],
        ["s", "to", "pped"], ["stop", "at"], ["st", "op", "at"], ["test", "op"],
        ["Ġmanifesto", "pped"], ["sp", "ot", "s"], "Don't stop me now, stop!",
    ]),
    "several": (["\n\n", "END", "!"], [
        "Hello\n\nworld END", "THE END.\n\n", ["EN", "D"], ["Ċ", "ĊĊ"], ["Ċ", "Hello", "Ċ"],
        "Wow!!",
    ]),
    "whole_characters": (["café", " €5"], [
        "café €5 😀", ["Ġcaf", "Ã©"], ["ĠcafÃ©"], ["ĠâĤ¬", "5"], ["c", "af", "Ã©", "Ġ"],
    ]),
}  # fmt: skip


@pytest.fixture(scope="module")
def their_tokenizer():
    """transformers' fast GPT-2 tokenizer on the bundled GPT-2 files."""
    import gpt2_dual

    return transformers.GPT2TokenizerFast.from_pretrained(
        next(iter(gpt2_dual.__path__)) + "/data/gpt2"
    )


def _row_ids(tokenizer, their_tokenizer, row) -> list[int]:
    if isinstance(row, str):
        ids = tokenizer(row)["input_ids"]
        assert ids == their_tokenizer(row)["input_ids"], row
        return ids
    ids = tokenizer.convert_tokens_to_ids(row)
    assert tokenizer.convert_ids_to_tokens(ids) == row, f"not all GPT-2 pieces: {row}"
    return ids


@pytest.mark.parametrize("case", STOP_TABLE)
def test_stop_decisions_equal_transformers_stop_string_criteria(tokenizer, their_tokenizer, case):
    from transformers.generation.stopping_criteria import StopStringCriteria

    from gpt2_dual.generation.stopping import StopStrings

    stops, rows = STOP_TABLE[case]
    ours, ref = StopStrings(tokenizer, stops), StopStringCriteria(their_tokenizer, stops)
    decisions = []
    for row in rows:
        ids = _row_ids(tokenizer, their_tokenizer, row)
        got = [ours.hit(ids[:n]) for n in range(1, len(ids) + 1)]
        expected = [bool(ref(torch.tensor([ids[:n]]), None)[0]) for n in range(1, len(ids) + 1)]
        assert got == expected, f"{row!r}: ours {got}, transformers {expected}"
        decisions += got
    assert any(decisions) and not all(decisions)


def test_stop_strings_match_bytes_where_transformers_matches_characters(tokenizer, their_tokenizer):
    """A documented difference: gpt2_dual matches UTF-8 bytes, so a character split across
    byte-level tokens matches too; transformers matches each token's own decoded text, where a
    partial character is U+FFFD, and cannot build a stop string that no token holds whole."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    from gpt2_dual.generation.stopping import StopStrings

    split = tokenizer.convert_tokens_to_ids(["c", "af", "Ã", "©"])  # é as its two bytes
    assert tokenizer.decode(split) == "café"
    assert StopStrings(tokenizer, ["café"]).hit(split)
    assert not StopStringCriteria(their_tokenizer, ["café"])(torch.tensor([split]), None)[0]
    emoji = tokenizer("a 😀")["input_ids"]
    assert len(emoji) > 2 and StopStrings(tokenizer, "😀").hit(emoji)
    with pytest.raises(ValueError, match="unable to identify tokens matching"):
        StopStringCriteria(their_tokenizer, ["😀"])


def test_streamers_show_what_generate_returns(ours, fw, reference, tokenizer, capsys):
    kwargs = dict(max_new_tokens=9, eos_token_id=None)
    ids = fw.generate(ours, PROMPT[:1], streamer=TextStreamer(tokenizer), **kwargs)[0]
    assert capsys.readouterr().out == tokenizer.decode(ids) + "\n"
    np.testing.assert_array_equal(ids, theirs(reference, PROMPT[:1], **kwargs)[0])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
    worker = threading.Thread(
        target=fw.generate, args=(ours, PROMPT[:1]), kwargs=dict(streamer=streamer, **kwargs)
    )
    worker.start()
    pieces = list(streamer)
    worker.join()
    assert "".join(pieces) == tokenizer.decode(ids[PROMPT.shape[1] :]) and len(pieces) > 1


def test_streamer_releases_whole_characters_only(tokenizer):
    text = "naïve café €5 😀 done"
    ids = tokenizer(text)["input_ids"]
    assert any("\ufffd" in tokenizer.decode(ids[: i + 1]) for i in range(len(ids)))  # splits
    pieces = []
    streamer = TextStreamer(tokenizer)
    streamer.on_finalized_text = lambda piece, stream_end=False: pieces.append(piece)
    for i in ids:
        streamer.put(np.array([i]))
    streamer.end()
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_streamer_refuses_a_batch(ours, fw, tokenizer):
    with pytest.raises(ValueError, match="a streamer needs one prompt"):
        fw.generate(ours, PROMPT, streamer=TextStreamer(tokenizer), max_new_tokens=2)


def test_generation_config_file_round_trips_with_transformers(tmp_path):
    ours = GenerationConfig(max_new_tokens=7, do_sample=True, top_p=0.9, eos_token_id=[1, 2],
                            bad_words_ids=[[3]], pad_token_id=0)  # fmt: skip
    ours.save_pretrained(tmp_path)
    ref = transformers.GenerationConfig.from_pretrained(tmp_path)
    for name, value in ours.to_diff_dict().items():
        assert getattr(ref, name) == value, name
    ref.num_beams = 4
    ref.save_pretrained(tmp_path)
    back = GenerationConfig.from_pretrained(tmp_path)
    assert back.num_beams == 4 and back.top_p == 0.9 and back.eos_token_id == [1, 2]
    assert GenerationConfig.from_dict(back.to_dict()) == back


def test_from_pretrained_reads_and_save_pretrained_writes_generation_config(
    fw, reference, tmp_path
):
    ref = transformers.GenerationConfig.from_pretrained(reference[1])
    ref.max_new_tokens, ref.repetition_penalty = 5, 1.3
    folder = tmp_path / "ckpt"
    reference[0].save_pretrained(folder)
    ref.save_pretrained(folder)
    model = fw.load("lm", folder)
    assert model.generation_config.max_new_tokens == 5
    expected = theirs(reference, PROMPT, max_new_tokens=5, repetition_penalty=1.3)
    np.testing.assert_array_equal(fw.generate(model, PROMPT, pad_token_id=0), expected)
    model.save_pretrained(tmp_path / "again")
    again = transformers.GenerationConfig.from_pretrained(tmp_path / "again")
    assert again.max_new_tokens == 5 and again.repetition_penalty == 1.3
