"""TensorFlow-only behaviour of ``generate``: one compiled program per shape bucket (trace
counts), XLA and graph mode give the same tokens, the host loop (streamers, stop strings) gives
the same tokens as the compiled loop, beam search with stop strings, the returned cache, the
double-heads model, tokenizer tensors. Parity with transformers for every option is in
``tests/test_generate.py`` (graph mode there; XLA is checked equal here)."""

from __future__ import annotations

import numpy as np
import pytest

from cases import assert_close
from generation_ref import reference_checkpoint, reference_generate, scores_equal

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gpt2_dual  # noqa: E402
import gpt2_dual.tf as gtf  # noqa: E402
from gpt2_dual import GPT2Config, GPT2TokenizerFast, TextStreamer  # noqa: E402
from gpt2_dual.tf.generate import PROMPT_BUCKET, compiled_programs  # noqa: E402

VOCAB, POSITIONS, EOS = 99, 40, 98
PROMPT = np.array([[5, 17, 42, 8, 61, 23], [70, 3, 3, 19, 88, 41]], dtype=np.int64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf_gen_ref")
    model = reference_checkpoint(
        folder, vocab=VOCAB, positions=POSITIONS, eos=EOS, init=0.2, n_inner=None
    )
    return model, folder


@pytest.fixture(scope="module")
def ours(reference):
    return gtf.GPT2LMHeadModel.from_pretrained(reference[1])


@pytest.fixture(scope="module")
def tokenizer():
    return GPT2TokenizerFast.from_pretrained("gpt2")


def theirs(reference, input_ids, **kwargs):
    return reference_generate(reference[0], input_ids, **kwargs)


def frequent_token(reference) -> int:
    """A token greedy decoding of PROMPT[0] produces early (as an eos id it ends rows)."""
    return int(theirs(reference, PROMPT[:1], max_new_tokens=3, pad_token_id=0)[0, -1])


def test_second_prompt_length_in_bucket_does_not_retrace(reference):
    model = gtf.GPT2LMHeadModel.from_pretrained(reference[1])  # its own program cache
    options = dict(eos_token_id=None, pad_token_id=0)
    for length, new in ((6, 6), (3, 6), (5, 9)):  # one bucket of prompts and of cache slots
        got = model.generate(PROMPT[:, :length], max_new_tokens=new, **options)
        expected = theirs(reference, PROMPT[:, :length], max_new_tokens=new, **options)
        np.testing.assert_array_equal(got, expected)
    (program,) = compiled_programs(model).values()
    assert program.experimental_get_tracing_count() == 1
    longer = np.tile(PROMPT, 3)[:, : PROMPT_BUCKET + 2]  # the next prompt bucket
    got = model.generate(longer, max_new_tokens=4, **options)
    np.testing.assert_array_equal(got, theirs(reference, longer, max_new_tokens=4, **options))
    assert program.experimental_get_tracing_count() == 2
    assert len(compiled_programs(model)) == 1


def test_numbers_and_seed_are_inputs_not_compiled_in(ours):
    options = dict(do_sample=True, max_new_tokens=5, eos_token_id=None, top_p=0.9,
                   repetition_penalty=1.2, jit_compile=False)  # fmt: skip
    first = ours.generate(PROMPT, temperature=0.7, seed=1, **options)
    ours.generate(PROMPT, temperature=1.4, seed=2, top_k=7, **options)  # top_k: compiled in
    again = ours.generate(PROMPT, temperature=0.7, seed=1, **options)
    np.testing.assert_array_equal(again, first)
    counts = {
        key[1].spec.top_k: fn.experimental_get_tracing_count()
        for key, fn in compiled_programs(ours).items()
        if key[0] == "decode" and key[1].spec.top_p and key[1].spec.repetition
    }
    assert counts == {50: 1, 7: 1}


XLA_CASES = {
    "sample_all_processors": dict(
        do_sample=True, seed=7, temperature=1.3, top_k=20, top_p=0.9, typical_p=0.95,
        repetition_penalty=1.3, no_repeat_ngram_size=2, bad_words_ids=[[5], [17, 42]],
        min_new_tokens=3, num_return_sequences=2, max_new_tokens=10,
    ),
    "beam_sample": dict(do_sample=True, seed=3, num_beams=3, num_return_sequences=2,
                        length_penalty=0.7, max_new_tokens=8),
    "beam_never": dict(num_beams=4, early_stopping="never", length_penalty=1.5,
                       max_new_tokens=8, num_return_sequences=3),
}  # fmt: skip


@pytest.mark.parametrize("case", XLA_CASES)
def test_xla_equals_graph_mode(ours, reference, case):
    kwargs = dict(XLA_CASES[case], eos_token_id=[frequent_token(reference), EOS], pad_token_id=0,
                  return_dict_in_generate=True, output_scores=True)  # fmt: skip
    xla = ours.generate(PROMPT, jit_compile=True, **kwargs)
    graph = ours.generate(PROMPT, jit_compile=False, **kwargs)
    assert xla.sequences.dtype == tf.int32
    np.testing.assert_array_equal(xla.sequences, graph.sequences)
    assert len(xla.scores) == len(graph.scores) > 0
    for step, (a, b) in enumerate(zip(xla.scores, graph.scores, strict=True)):
        scores_equal(a, b, f"scores of step {step}")
    if kwargs.get("num_beams", 1) > 1:
        np.testing.assert_array_equal(xla.beam_indices, graph.beam_indices)
        assert_close(xla.sequences_scores, graph.sequences_scores, what="sequences_scores")


def test_host_loop_and_streamer_equal_compiled_loop(ours, tokenizer, capsys):
    """The host loop under XLA (the default) against the compiled loop in graph mode (XLA
    equals graph mode for the compiled loop: ``test_xla_equals_graph_mode``)."""
    kwargs = dict(do_sample=True, seed=5, top_k=0, max_new_tokens=9, eos_token_id=None)
    compiled = ours.generate(PROMPT[:1], jit_compile=False, **kwargs)[0]
    streamed = ours.generate(PROMPT[:1], streamer=TextStreamer(tokenizer), **kwargs)[0]
    np.testing.assert_array_equal(streamed, compiled)
    assert capsys.readouterr().out == tokenizer.decode(np.asarray(compiled)) + "\n"
    assert {key[0] for key in compiled_programs(ours)} >= {"decode", "decode_advance"}


def test_beam_search_with_stop_strings_equals_transformers(ours, reference, tokenizer):
    their_tokenizer = transformers.GPT2TokenizerFast.from_pretrained(
        next(iter(gpt2_dual.__path__)) + "/data/gpt2"
    )
    kwargs = dict(max_new_tokens=10, num_beams=3, pad_token_id=0, eos_token_id=EOS)
    full = theirs(reference, PROMPT, **kwargs)  # the search without stop strings
    stops = [tokenizer.decode(full[0, 9:11]), tokenizer.decode(full[1, 12:14])]
    kwargs["stop_strings"] = stops
    expected = theirs(reference, PROMPT, tokenizer=their_tokenizer, **kwargs)
    got = ours.generate(PROMPT, tokenizer=tokenizer, jit_compile=False, **kwargs)
    np.testing.assert_array_equal(got, expected)
    assert got.shape[1] < full.shape[1]  # a stop string ended the search early


def test_past_key_values_are_transformers_cache(ours, reference):
    kwargs = dict(max_new_tokens=5, eos_token_id=None, pad_token_id=0,
                  return_dict_in_generate=True)  # fmt: skip
    got = ours.generate(PROMPT, jit_compile=False, **kwargs).past_key_values
    expected = theirs(reference, PROMPT, **kwargs).past_key_values
    assert got.get_seq_length() == PROMPT.shape[1] + 4  # the newest token is not cached
    pairs = zip(got.to_legacy_cache(), expected.to_legacy_cache(), strict=True)
    for layer, ((k, v), (k_ref, v_ref)) in enumerate(pairs):
        assert_close(k, k_ref.numpy(), what=f"keys of layer {layer}")
        assert_close(v, v_ref.numpy(), what=f"values of layer {layer}")


def test_double_heads_model_generates_as_lm_head(reference):
    """The LM head's tokens: transformers' GPT2LMHeadModel on the same checkpoint."""
    double = gtf.GPT2DoubleHeadsModel.from_pretrained(reference[1])
    assert double.generation_config.eos_token_id == EOS
    kwargs = dict(max_new_tokens=6, num_beams=2, pad_token_id=0)
    np.testing.assert_array_equal(
        double.generate(PROMPT, jit_compile=False, **kwargs), theirs(reference, PROMPT, **kwargs)
    )


def test_tokenizer_tf_tensors_unpack_into_generate(tokenizer):
    config = GPT2Config(n_positions=32, n_embd=16, n_layer=1, n_head=2, initializer_range=0.5)
    model = gtf.GPT2LMHeadModel(config)
    tokenizer = GPT2TokenizerFast.from_pretrained("gpt2", padding_side="left")
    tokenizer.pad_token = tokenizer.eos_token
    texts = ["Hello world, how", "Hi"]
    batch = tokenizer(texts, return_tensors="tf", padding=True)
    out = model.generate(**batch, max_new_tokens=4, jit_compile=False)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.int32
    width = batch["input_ids"].shape[1]
    for row, text in enumerate(texts):
        alone = model.generate(**tokenizer([text], return_tensors="np"), max_new_tokens=4,
                               jit_compile=False)  # fmt: skip
        np.testing.assert_array_equal(out[row, width:], alone[0, -4:])


def test_seed_none_draws_a_new_seed(ours):
    kwargs = dict(do_sample=True, temperature=3.0, top_k=0, max_new_tokens=12,
                  eos_token_id=None, jit_compile=False)  # fmt: skip
    assert not np.array_equal(ours.generate(PROMPT, **kwargs), ours.generate(PROMPT, **kwargs))


def test_seed_must_be_an_integer(ours):
    with pytest.raises(TypeError, match="^seed must be an integer or None, got float$"):
        ours.generate(PROMPT, do_sample=True, seed=1.5, max_new_tokens=2)
