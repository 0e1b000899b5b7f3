"""``gpt2_dual.tf.GPT2Preprocessor`` / ``GPT2CausalLMPreprocessor``: raw strings to packed model
inputs in ``tf.data``, with the ids of our tokenizers and of KerasHub's GPT-2 preprocessors
(test-only reference, built from the bundled vocabulary), and ``fit`` on the result.
"""

from __future__ import annotations

import numpy as np
import pytest

from cases import tiny_config
from gpt2_dual import GPT2Tokenizer, GPT2TokenizerFast
from gpt2_dual.hub.resolve import bundled_vocab_dir

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

from gpt2_dual.tf import (  # noqa: E402
    GPT2CausalLMPreprocessor,
    GPT2LMHeadModel,
    GPT2Preprocessor,
)

#: Keras 3.15 calls ``np.array`` on TensorFlow 2.21 variables, whose ``__array__`` predates
#: numpy 2's ``copy`` keyword; numpy warns. Not gpt2_dual code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

EOT = 50256
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces,   three inside\nand a newline\n\n",
    "Numbers 1234567 and symbols #$%&*() don't, we'll, I'm.",
    "Ünïcödé: café naïve 日本語 😀 emoji",
    "text<|endoftext|>more text",
    "",
]
#: Options KerasHub's preprocessors take, each combination checked.
START_END = [(True, True), (True, False), (False, True), (False, False)]


@pytest.fixture(scope="module")
def fast() -> GPT2TokenizerFast:
    return GPT2TokenizerFast.from_pretrained("gpt2")


@pytest.fixture(scope="module")
def slow() -> GPT2Tokenizer:
    return GPT2Tokenizer.from_pretrained("gpt2")


def _expected(tok, texts, length, start=True, end=True, pad=0):
    """Packing by hand from the tokenizer's own ids: (B, T) ids and mask."""
    ids = np.full((len(texts), length), pad, np.int32)
    mask = np.zeros((len(texts), length), np.int32)
    keep = length - start - end
    for row, text in enumerate(texts):
        packed = [EOT] * start + tok.encode(text)[:keep] + [EOT] * end
        ids[row, : len(packed)], mask[row, : len(packed)] = packed, 1
    return ids, mask


# --------------------------------------------------------------------------- packing
@pytest.mark.parametrize("tok_name", ["fast", "slow"])
@pytest.mark.parametrize(("start", "end"), START_END)
def test_ids_are_our_tokenizers_packed(request, tok_name, start, end):
    """Both tokenizers, all start/end options, texts shorter and longer than T (truncated)."""
    tok = request.getfixturevalue(tok_name)
    pre = GPT2Preprocessor(tok, sequence_length=12, add_start_token=start, add_end_token=end)
    out = pre(TEXTS)
    ids, mask = _expected(tok, TEXTS, 12, start, end)
    np.testing.assert_array_equal(out["input_ids"].numpy(), ids)
    np.testing.assert_array_equal(out["attention_mask"].numpy(), mask)
    assert out["input_ids"].dtype == tf.int32 and out["attention_mask"].dtype == tf.int32


def test_scalar_string_gives_unbatched_rows(fast):
    pre = GPT2Preprocessor(fast, sequence_length=6)
    out = pre("Hello world")
    assert out["input_ids"].shape == (6,)
    assert out["input_ids"].numpy().tolist() == [EOT, 15496, 995, EOT, 0, 0]
    assert out["attention_mask"].numpy().tolist() == [1, 1, 1, 1, 0, 0]
    same = pre(np.array(["Hello world"]))  # numpy input, batched
    np.testing.assert_array_equal(same["input_ids"].numpy()[0], out["input_ids"].numpy())


def test_truncation_keeps_the_head_and_the_end_token(fast):
    """KerasHub's rule: cut the text's ids, then add start/end; nothing warns."""
    text = " ".join(["word"] * 50)
    ids = GPT2Preprocessor(fast, sequence_length=5)(text)["input_ids"].numpy().tolist()
    assert ids == [EOT, *fast.encode(text)[:3], EOT]
    overridden = GPT2Preprocessor(fast, sequence_length=5)(text, sequence_length=3)
    assert overridden["input_ids"].numpy().tolist() == [EOT, fast.encode(text)[0], EOT]


def test_pad_token_and_labels(fast):
    pre = GPT2Preprocessor(fast, sequence_length=6, pad_token_id=EOT, return_labels=True)
    out = pre(["Hello world", "Hi"])
    assert out["input_ids"].numpy().tolist()[1] == [EOT, 17250, EOT, EOT, EOT, EOT]
    assert out["labels"].numpy().tolist() == [
        [EOT, 15496, 995, EOT, -100, -100],
        [EOT, 17250, EOT, -100, -100, -100],
    ]
    padded = GPT2TokenizerFast.from_pretrained("gpt2", pad_token="<|endoftext|>")
    assert GPT2Preprocessor(padded).pad_token_id == EOT  # the tokenizer's pad token


def test_x_y_sample_weight_pass_through(fast):
    x, y, w = GPT2Preprocessor(fast, sequence_length=4)(
        ["Hi"], tf.constant([3]), tf.constant([0.5])
    )
    assert set(x) == {"input_ids", "attention_mask"}
    assert y.numpy().tolist() == [3] and w.numpy().tolist() == [0.5]


def test_bad_inputs_are_refused(fast):
    with pytest.raises(ValueError, match="rank 0 or 1"):
        GPT2Preprocessor(fast, sequence_length=4)([["a", "b"]])
    with pytest.raises(ValueError, match="positive int"):
        GPT2Preprocessor(fast, sequence_length=0)
    with pytest.raises(TypeError, match="tokenizer must be"):
        GPT2Preprocessor(object())
    with pytest.raises(ValueError, match="makes y and sample_weight"):
        GPT2CausalLMPreprocessor(fast, sequence_length=4)(["a"], tf.constant([1]))
    with pytest.raises(ValueError, match="returns y itself"):
        GPT2CausalLMPreprocessor(fast, return_labels=True)


# --------------------------------------------------------------------------- causal LM
def test_causal_lm_targets_are_the_ids_shifted_left(fast):
    """T + 1 tokens packed, x the first T, y and sample_weight the last T."""
    x, y, w = GPT2CausalLMPreprocessor(fast, sequence_length=12)(TEXTS)
    ids, mask = _expected(fast, TEXTS, 13)
    np.testing.assert_array_equal(x["input_ids"].numpy(), ids[:, :-1])
    np.testing.assert_array_equal(x["attention_mask"].numpy(), mask[:, :-1])
    np.testing.assert_array_equal(y.numpy(), ids[:, 1:])
    np.testing.assert_array_equal(w.numpy(), mask[:, 1:].astype(np.float32))
    assert w.dtype == tf.float32


# --------------------------------------------------------------------------- tf.data
def test_dataset_map_batched_and_unbatched(fast):
    pre = GPT2CausalLMPreprocessor(fast, sequence_length=10)
    strings = tf.data.Dataset.from_tensor_slices(TEXTS)
    batched = strings.batch(3).map(pre, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    x_spec, y_spec, w_spec = batched.element_spec
    assert x_spec["input_ids"].shape.as_list() == [None, 10] and y_spec.shape[-1] == 10
    got = np.concatenate([y.numpy() for _, y, _ in batched])
    np.testing.assert_array_equal(got, _expected(fast, TEXTS, 11)[0][:, 1:])
    rows = list(strings.map(pre))
    assert rows[0][0]["input_ids"].shape == (10,)
    np.testing.assert_array_equal(np.stack([y.numpy() for _, y, _ in rows]), got)


# --------------------------------------------------------------------------- KerasHub
@pytest.fixture(scope="module")
def hub_tokenizer():
    keras_hub = pytest.importorskip("keras_hub")
    folder = bundled_vocab_dir()
    return keras_hub.models.GPT2Tokenizer(
        vocabulary=str(folder / "vocab.json"), merges=str(folder / "merges.txt")
    )


@pytest.mark.parametrize(("start", "end"), START_END)
def test_matches_keras_hub_preprocessors(fast, hub_tokenizer, start, end):
    """Same ids and masks as KerasHub's (named token_ids / padding_mask there, bool mask)."""
    import keras_hub

    options = dict(sequence_length=12, add_start_token=start, add_end_token=end)
    theirs = keras_hub.models.GPT2Preprocessor(hub_tokenizer, **options)(tf.constant(TEXTS))
    ours = GPT2Preprocessor(fast, **options)(TEXTS)
    np.testing.assert_array_equal(ours["input_ids"].numpy(), theirs["token_ids"].numpy())
    np.testing.assert_array_equal(ours["attention_mask"].numpy(), theirs["padding_mask"].numpy())

    hub_lm = keras_hub.models.GPT2CausalLMPreprocessor(hub_tokenizer, **options)
    hx, hy, hw = hub_lm(tf.constant(TEXTS))
    x, y, w = GPT2CausalLMPreprocessor(fast, **options)(TEXTS)
    np.testing.assert_array_equal(x["input_ids"].numpy(), hx["token_ids"].numpy())
    np.testing.assert_array_equal(x["attention_mask"].numpy(), hx["padding_mask"].numpy())
    np.testing.assert_array_equal(y.numpy(), hy.numpy())
    np.testing.assert_array_equal(w.numpy(), np.asarray(hw, np.float32))


# --------------------------------------------------------------------------- fit
CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 4
#: One block: how many is not what these test (the vocabulary is: the tokenizer's ids)
FIT_LAYERS = 1


def _fit_losses(model, ds) -> list[float]:
    return model.fit(ds, epochs=4, verbose=0, shuffle=False).history["loss"]


def test_fit_with_a_keras_loss_on_preprocessed_text(fast):
    """Eagerly, for speed (a Keras loss in traced steps: ``test_keras_habits_tf.py``)."""
    keras.utils.set_random_seed(0)
    model = GPT2LMHeadModel(tiny_config(vocab_size=fast.vocab_size, n_layer=FIT_LAYERS))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["sparse_categorical_accuracy"],
        run_eagerly=True,
    )
    pre = GPT2CausalLMPreprocessor(fast, sequence_length=10)
    ds = tf.data.Dataset.from_tensor_slices(CORPUS).batch(4).map(pre)
    losses = _fit_losses(model, ds)
    assert losses[-1] < 0.7 * losses[0], losses


def test_fit_with_the_models_own_loss_on_preprocessed_text(fast):
    """Eagerly, for speed (the model's own loss in traced steps: ``test_keras_tf.py``)."""
    keras.utils.set_random_seed(0)
    model = GPT2LMHeadModel(tiny_config(vocab_size=fast.vocab_size, n_layer=FIT_LAYERS))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    pre = GPT2Preprocessor(fast, sequence_length=11, return_labels=True)
    ds = tf.data.Dataset.from_tensor_slices(CORPUS).batch(4).map(pre)
    losses = _fit_losses(model, ds)
    assert losses[-1] < 0.7 * losses[0], losses


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("cls", [GPT2Preprocessor, GPT2CausalLMPreprocessor])
def test_config_round_trip_reloads_the_tokenizer_by_path(cls):
    tok = GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=True)
    pre = cls(tok, sequence_length=9, add_end_token=False, pad_token_id=7)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pre))
    assert type(again) is cls and type(again.tokenizer) is GPT2Tokenizer
    assert again.tokenizer.add_prefix_space and again.get_config() == pre.get_config()
    np.testing.assert_array_equal(
        keras.tree.flatten(again(TEXTS[:3]))[0].numpy(), keras.tree.flatten(pre(TEXTS[:3]))[0]
    )


def test_config_refuses_a_tokenizer_it_cannot_reload(tmp_path):
    folder = bundled_vocab_dir()
    unnamed = GPT2TokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
    with pytest.raises(ValueError, match="save_pretrained"):
        GPT2Preprocessor(unnamed).get_config()
    grown = GPT2TokenizerFast.from_pretrained("gpt2")
    grown.add_tokens(["<|new|>"])
    config = GPT2Preprocessor(grown).get_config()
    with pytest.raises(ValueError, match="saved one had 50258"):
        GPT2Preprocessor.from_config(config)
    grown.save_pretrained(tmp_path)
    saved = GPT2Preprocessor(str(tmp_path)).get_config()  # a folder path loads as given
    assert len(GPT2Preprocessor.from_config(saved).tokenizer) == 50258
