"""``gpt2_dual.pt.slots``: sequences joining a batch of fixed cache slots decode exactly as
``generate`` decodes each alone; prefill and decode logits equal the model's forward; bad sizes
raise. The same contract for TensorFlow is ``test_slots_tf.py``; the cases are
``slot_cases.py``."""

from __future__ import annotations

import numpy as np
import pytest
import slot_cases as sc

from cases import assert_close

torch = pytest.importorskip("torch")

import gpt2_dual.pt as gpt  # noqa: E402
from gpt2_dual.errors import InvalidInputError  # noqa: E402
from gpt2_dual.pt.slots import SlotDecoder  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return gpt.GPT2LMHeadModel(sc.config()).eval()


@pytest.fixture(scope="module")
def decoder(model):
    return SlotDecoder(model, sc.NUM_SLOTS, sc.MAX_LENGTH)


@pytest.fixture(scope="module")
def runs(decoder):
    return sc.run_schedule(decoder)


@torch.inference_mode()
def forward(model, ids) -> np.ndarray:
    return model(torch.tensor([ids])).logits[0].float().numpy()  # (T, V)


def greedy(model, prompt, new: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=new, do_sample=False, eos_token_id=None,
        pad_token_id=0,
    )  # fmt: skip
    return out[0, len(prompt) :].tolist()


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


@pytest.mark.parametrize("prompt", [0, 3], ids=["short", "long"])
def test_prefill_all_logits_equal_the_forward(model, decoder, prompt):
    ids = sc.PROMPTS[prompt]
    logits = decoder.prefill(4, ids, all_logits=True)
    assert logits.dtype == np.float32
    assert_close(logits, forward(model, ids), what=f"prompt {prompt}")
    assert_close(decoder.prefill(4, ids), logits[-1], what="last position")


def test_attributes(decoder, model):
    assert decoder.framework == "pt"
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
