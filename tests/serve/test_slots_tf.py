"""``gpt2_dual.tf.slots``: sequences joining a batch of fixed cache slots decode exactly as
``generate`` decodes each alone; prefill and decode logits equal the model's forward; bucketed
shapes trace few programs; graph mode, bfloat16, Keras int8 and bad inputs. The same contract for PyTorch
is ``test_slots_pt.py``; the cases are ``slot_cases.py``."""

from __future__ import annotations

import numpy as np
import pytest
import slot_cases as sc

from cases import assert_close

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.tf as gtf  # noqa: E402
from gpt2_dual.errors import InvalidInputError  # noqa: E402
from gpt2_dual.tf.slots import SlotDecoder, bucket  # noqa: E402


def build(dtype: str | None = None, **changes):
    keras.utils.set_random_seed(0)
    return gtf.GPT2LMHeadModel(sc.config(**changes), dtype=dtype)


@pytest.fixture(scope="module")
def model():
    return build()


@pytest.fixture(scope="module")
def decoder(model):
    return SlotDecoder(model, sc.NUM_SLOTS, sc.MAX_LENGTH)


@pytest.fixture(scope="module")
def runs(decoder):
    return sc.run_schedule(decoder)


def forward(model, ids) -> np.ndarray:
    return model(input_ids=np.array([ids]))["logits"].numpy()[0]  # (T, V)


def greedy(model, prompt, new: int) -> list[int]:
    out = model.generate(
        np.array([prompt]), max_new_tokens=new, do_sample=False, eos_token_id=None,
        pad_token_id=0, jit_compile=False,
    )  # fmt: skip
    return np.asarray(out)[0, len(prompt) :].tolist()


def test_joining_sequences_give_the_tokens_of_generate_alone(model, runs):
    sc.check_tokens_vary(runs)
    for join, run in zip(sc.SCHEDULE, runs, strict=True):
        assert run.tokens == greedy(model, run.prompt, join.new), join


def test_each_logits_row_equals_the_forward_of_the_whole_sequence(model, runs):
    for join, run in zip(sc.SCHEDULE, runs, strict=True):
        full = forward(model, run.prompt + run.tokens[:-1])  # (P + new - 1, V)
        assert_close(np.stack(run.logits), full[len(run.prompt) - 1 :], what=str(join))


def test_a_live_slot_left_out_of_a_step_keeps_its_keys(model, decoder):
    runs = sc.run_schedule(decoder, sc.PAUSED)
    for join, run in zip(sc.PAUSED, runs, strict=True):
        full = forward(model, run.prompt + run.tokens[:-1])
        assert_close(np.stack(run.logits), full[len(run.prompt) - 1 :], what=str(join))
        assert run.tokens == greedy(model, run.prompt, join.new), join


@pytest.mark.parametrize("prompt", [0, 3], ids=["width16", "width32"])
def test_prefill_all_logits_equal_the_forward(model, decoder, prompt):
    ids = sc.PROMPTS[prompt]
    logits = decoder.prefill(4, ids, all_logits=True)
    assert logits.dtype == np.float32
    assert_close(logits, forward(model, ids), what=f"prompt {prompt}")
    assert_close(decoder.prefill(4, ids), logits[-1], what="last position")


def test_steps_inside_a_bucket_reuse_its_program(decoder):
    count = decoder.programs["decode"].experimental_get_tracing_count
    decoder.decode([1, 2], [5, 6], [3, 4])  # 4 rows, 16 keys
    traced = count()
    decoder.decode([0, 2], [7, 8], [9, 15])
    decoder.decode([3], [9], [0])
    assert count() == traced
    decoder.decode([3], [9], [16])  # 32 keys
    assert count() == traced + 1


def test_bucket_sizes():
    assert [bucket(n, 16, 40) for n in (1, 16, 17, 32, 33, 40)] == [16, 16, 32, 32, 40, 40]
    assert [bucket(n, 1, 6) for n in (1, 2, 3, 5, 6)] == [1, 2, 4, 6, 6]


def test_graph_mode_gives_the_same_numbers_and_the_schedule_traces_few_programs(model, runs):
    graph = SlotDecoder(model, sc.NUM_SLOTS, sc.MAX_LENGTH, jit_compile=False)
    assert graph.jit_compile == {"prefill": False, "decode": False}
    for xla, run in zip(runs, sc.run_schedule(graph), strict=True):
        assert run.tokens == xla.tokens
        assert_close(np.stack(run.logits), np.stack(xla.logits), what="graph vs XLA")
    counts = {k: f.experimental_get_tracing_count() for k, f in graph.programs.items()}
    # decode (rows, keys): (4, 16) steps 0-1 and 8-9, (6, 16) step 2, (6, 32) steps 3-7;
    # prefill widths 16 and 32
    assert counts == {"prefill": 2, "decode": 3}


def test_bfloat16_model_gives_float32_logits_close_to_float32():
    """Decode runs under XLA, so the variables hold the bits as uint16; on a CPU with oneDNN
    prefill runs in graph mode (the rule), on the same variables. Init std 0.1: the
    table's bfloat16 row bounds bf16 against fp32 at moderate activations (0.3 puts the
    model's own bf16 forward 0.09 off)."""
    model = build("mixed_bfloat16", initializer_range=0.1, n_layer=2)
    dec = SlotDecoder(model, 2, 24)
    assert dec.cache.keys[0].dtype == tf.uint16
    assert dec.kv_bytes_per_slot == 2 * 2 * 4 * 24 * 12 * 2  # 16-bit keys and values
    ids = sc.PROMPTS[1]
    first = dec.prefill(1, ids[:-1])
    got = dec.decode([1], [ids[-1]], [len(ids) - 1])[0]
    expected = forward(build(initializer_range=0.1, n_layer=2), ids)
    assert first.dtype == got.dtype == np.float32
    assert_close(first, expected[-2], "bfloat16", what="prefill")
    assert_close(got, expected[-1], "bfloat16", what="decode")


def test_keras_int8_model_runs_its_own_quantized_blocks():
    """The decoder calls the model's blocks: an int8 model's logits are its own forward's."""
    model = build(initializer_range=0.1, n_layer=2)
    model.quantize("int8")
    dec = SlotDecoder(model, 2, 24)
    ids = sc.PROMPTS[1]
    first = dec.prefill(0, ids[:-1])
    got = dec.decode([0], [ids[-1]], [len(ids) - 1])[0]
    expected = forward(model, ids)
    assert_close(first, expected[-2], "keras_int8_rule", what="prefill")
    assert_close(got, expected[-1], "keras_int8_rule", what="decode")


def test_attributes(decoder, model):
    assert decoder.framework == "tf"
    assert decoder.jit_compile["decode"]  # prefill: the model's rule (XLA for float32 on a CPU)
    assert (decoder.num_slots, decoder.max_length) == (sc.NUM_SLOTS, sc.MAX_LENGTH)
    assert decoder.vocab_size == model.config.vocab_size == sc.CONFIG["vocab_size"]
    assert decoder.kv_bytes_per_slot == sc.kv_bytes(4)


@pytest.mark.parametrize("case", range(3))
def test_bad_sizes_raise(model, case):
    kwargs, message = sc.error_cases(sc.CONFIG["n_positions"])[case]
    with pytest.raises(InvalidInputError) as info:
        SlotDecoder(model, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("case", range(2))
def test_a_prompt_that_does_not_fit_raises(decoder, case):
    ids, message = sc.prompt_error_cases()[case]
    with pytest.raises(InvalidInputError) as info:
        decoder.prefill(0, ids)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("slots", "tokens", "positions", "message"),
    [
        ([6], [1], [3], "slots must be distinct, in [0, 6); got [6]"),
        ([1, 1], [1, 2], [3, 3], "slots must be distinct, in [0, 6); got [1, 1]"),
        ([], [], [], "slots must be distinct, in [0, 6); got []"),
        ([0], [1], [40], "positions must be in [0, 40); got [40]"),
        (
            [0, 1], [1], [3, 4],
            "decode needs one token and one position per slot; got 2 slots, 1 tokens, 2 positions",
        ),
    ],
)  # fmt: skip
def test_bad_rows_raise_before_any_work(decoder, slots, tokens, positions, message):
    """Under XLA an index past the cache would be dropped silently, not refused."""
    with pytest.raises(InvalidInputError) as info:
        decoder.decode(slots, tokens, positions)
    assert str(info.value) == message
