"""gpt2_dual.tf models follow Keras conventions: configs, ``.keras`` files, weights files,
``summary``, ``fit`` with the model's own loss on ``tf.data``, XLA training, mixed precision
and a SavedModel serving signature.

Every comparison is against the same model (or its float32 twin) in the same process, with
tolerances from ``tests/cases.py``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, tiny_config
from gpt2_dual.heads import HEAD_SPECS

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.tf as gpt  # noqa: E402

#: Keras 3.15's saving and ``get_weights`` call ``np.array`` on TensorFlow 2.21 variables, whose
#: ``__array__`` predates numpy 2's ``copy`` keyword; numpy warns. Not gpt2_dual code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

PAD = 98
LOSS_HEADS = tuple(h for h in HEADS if h != "base")
CHOICES = 2
#: Config changes of the training tests: one block (how many is not what they test; each block
#: adds ops to every eager step and to every trace)
TRAIN = dict(n_layer=1)


def _config(**changes):
    return tiny_config(pad_token_id=PAD, **changes)


def _inputs(head: str, batch: int = BATCH, seed: int = 1) -> dict[str, np.ndarray]:
    """Model inputs, int32 as ``tf.data`` and SavedModel signatures carry them."""
    rng = np.random.default_rng(seed)
    if head == "double_heads":
        ids = rng.integers(0, PAD, (batch, CHOICES, SEQ), dtype=np.int32)
        return {"input_ids": ids, "mc_token_ids": np.full((batch, CHOICES), SEQ - 1, np.int32)}
    ids = rng.integers(0, PAD, (batch, SEQ), dtype=np.int32)
    mask = np.ones_like(ids)
    mask[0, -2:] = 0  # right padding in one row
    return {"input_ids": ids, "attention_mask": mask}


def _labels(head: str, inputs: dict, seed: int = 2) -> dict[str, np.ndarray]:
    """Labels of the head's loss, learnable from the inputs (a few steps must lower the loss)."""
    ids = inputs["input_ids"]
    rng = np.random.default_rng(seed)
    batch = len(ids)
    if head == "lm":
        return {"labels": ids}
    if head == "double_heads":
        return {"labels": ids, "mc_labels": rng.integers(0, CHOICES, batch, dtype=np.int32)}
    if head == "question_answering":
        start = rng.integers(0, SEQ - 1, batch, dtype=np.int32)
        return {"start_positions": start, "end_positions": start + 1}
    if head == "sequence_classification":
        return {"labels": (ids[:, 0] % 3).astype(np.int32)}
    return {"labels": (ids % 3).astype(np.int32)}  # token classification


def _main(model, inputs: dict, head: str) -> dict[str, np.ndarray]:
    out = model(inputs)
    return {f: np.asarray(tf.cast(out[f], tf.float32)) for f in HEAD_SPECS[head].outputs}


def _assert_same(a: dict, b: dict, head: str, dtype: str = "float32") -> None:
    for field in HEAD_SPECS[head].outputs:
        assert_close(a[field], b[field], dtype, what=f"{head}.{field}")


# --------------------------------------------------------------------------- configs and files
@pytest.mark.parametrize("head", HEADS)
def test_get_config_from_config_round_trip(head):
    model = gpt.build(head, _config(tie_word_embeddings=False, summary_activation="tanh"))
    config = model.get_config()
    json.dumps(config)  # plain JSON, as Keras stores it
    again = type(model).from_config(config)
    assert type(again) is type(model) and again.config == model.config
    assert again.config is not model.config
    again.set_weights(model.get_weights())
    inputs = _inputs(head)
    _assert_same(_main(again, inputs, head), _main(model, inputs, head), head)


@pytest.mark.parametrize("head", HEADS)
def test_keras_file_round_trip(tmp_path, head):
    model = gpt.build(head, _config())
    inputs = _inputs(head)
    expected = _main(model, inputs, head)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model) and loaded.config == model.config
    _assert_same(_main(loaded, inputs, head), expected, head)


def test_save_weights_load_weights(tmp_path):
    config = _config(tie_word_embeddings=False)
    model = gpt.GPT2DoubleHeadsModel(config)
    model.save_weights(tmp_path / "model.weights.h5")
    other = gpt.GPT2DoubleHeadsModel(config.copy())
    inputs = _inputs("double_heads")
    before = _main(other, inputs, "double_heads")
    assert not np.allclose(before["logits"], _main(model, inputs, "double_heads")["logits"])
    other.load_weights(tmp_path / "model.weights.h5")
    _assert_same(_main(other, inputs, "double_heads"), _main(model, inputs, "double_heads"),
                 "double_heads")  # fmt: skip


def test_summary_lists_the_layers():
    model = gpt.GPT2LMHeadModel(_config(tie_word_embeddings=False))
    text = io.StringIO()
    model.summary(expand_nested=True, print_fn=lambda line, **_: text.write(line + "\n"))
    for layer in ("transformer (GPT2Model)", "wte (Embedding)", "h_1 (Block)", "ln_f", "lm_head"):
        assert layer in text.getvalue(), layer
    assert f"Total params: {model.count_params():,}" in text.getvalue()


# --------------------------------------------------------------------------- training
def _dataset(head: str, batch: int = 8) -> tf.data.Dataset:
    inputs = _inputs(head, batch=batch, seed=3)
    return tf.data.Dataset.from_tensor_slices({**inputs, **_labels(head, inputs)}).batch(4)


@pytest.mark.parametrize("head", LOSS_HEADS)
def test_fit_with_the_models_own_loss_lowers_it(head):
    """Every head trains on its own loss; eagerly here (tracing is covered below, for speed)."""
    keras.utils.set_random_seed(0)
    model = gpt.build(head, _config(**TRAIN))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    losses = model.fit(_dataset(head), epochs=3, verbose=0, shuffle=False).history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses


def test_fit_under_xla_matches_fit_in_graph_mode():
    runs = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = gpt.GPT2LMHeadModel(_config(**TRAIN))
        model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit)
        history = model.fit(_dataset("lm"), epochs=3, verbose=0, shuffle=False)
        runs.append(history.history["loss"])
    assert runs[1][-1] < runs[1][0]
    assert_close(runs[1], runs[0], what="loss per epoch, XLA vs not")


def test_targets_as_y_are_refused():
    model = gpt.GPT2ForSequenceClassification(_config())
    model.compile(optimizer="sgd")
    inputs = _inputs("sequence_classification")
    with pytest.raises(ValueError, match="computes its own loss from the labels in its input"):
        model.fit(inputs, np.zeros(BATCH, np.int32), epochs=1, verbose=0)


def test_predict_on_tf_data_returns_the_fields():
    model = gpt.GPT2ForTokenClassification(_config())
    inputs = _inputs("token_classification", batch=8)
    got = model.predict(tf.data.Dataset.from_tensor_slices(inputs).batch(4), verbose=0)
    assert_close(got["logits"], _main(model, inputs, "token_classification")["logits"])


# --------------------------------------------------------------------------- precision, export
@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("head", ["lm", "double_heads", "question_answering"])
def test_mixed_bfloat16_is_close_to_float32(head, mixed_bfloat16):
    model = gpt.build(head, _config())
    keras.mixed_precision.set_global_policy("float32")
    reference = gpt.build(head, _config())
    reference.set_weights(model.get_weights())
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in model.weights} == {"float32"}  # float32 variables, bf16 compute
    inputs = _inputs(head)
    out = model({**inputs, **_labels(head, inputs)})
    assert out[HEAD_SPECS[head].outputs[0]].dtype == tf.bfloat16
    assert out["loss"].dtype == tf.float32  # losses in float32
    _assert_same(_main(model, inputs, head), _main(reference, inputs, head), head, "bfloat16")


@pytest.mark.parametrize("head", ["lm", "sequence_classification"])
def test_export_needs_no_input_signature(tmp_path, head):
    model = getattr(gpt, HEAD_SPECS[head].class_name)(_config())
    model.export(tmp_path / "served")
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    inputs = _inputs(head, batch=2, seed=3)
    feed = {k: tf.constant(inputs[k], tf.int32) for k in ("input_ids", "attention_mask")}
    served = loaded.serve(feed)
    main = HEAD_SPECS[head].outputs[0]
    assert main in served and "past_key_values" not in served and "loss" not in served
    expected = model(feed, use_cache=False)[main]
    assert_close(served[main].numpy(), expected.numpy(), what=f"served {main}")
    assert "serving_default" in loaded.signatures


def test_saved_model_serving_signature(tmp_path):
    model = gpt.GPT2LMHeadModel(_config())
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def serve(input_ids, attention_mask):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return {"logits": out["logits"]}

    tf.saved_model.save(model, str(tmp_path / "saved"), signatures={"serving_default": serve})
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    signature = loaded.signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == ["attention_mask", "input_ids"]
    for batch, seed in ((BATCH, 1), (1, 5)):  # dynamic batch size
        inputs = _inputs("lm", batch=batch, seed=seed)
        got = signature(**{k: tf.constant(v) for k, v in inputs.items()})["logits"]
        assert_close(got.numpy(), _main(model, inputs, "lm")["logits"], what="served logits")
