"""The ``keras`` format: gpt2_dual.tf models in Keras 3 files, written and read back.

Every head goes canonical -> ``model.keras`` -> canonical bit for bit, in each dtype the writer
stores; ``*.weights.h5`` files with a ``config.json`` read the same; Keras' ``safe_mode`` stays
on when reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, tiny_config
from frameworks import PT, random_state
from gpt2_dual.checkpoint import loading
from gpt2_dual.checkpoint.safetensors_io import cast
from gpt2_dual.convert import formats
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.hub.resolve import bundled_vocab_dir

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.tf as gtf  # noqa: E402
from gpt2_dual.tf.weights import load_canonical  # noqa: E402

#: Keras 3.15's saving calls ``np.array`` on TensorFlow 2.21 variables, whose ``__array__``
#: predates numpy 2's ``copy`` keyword; numpy warns. Not gpt2_dual code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

TOKENIZER = {name: bundled_vocab_dir() / name for name in ("vocab.json", "merges.txt")}
GENERATION = {"do_sample": True, "max_length": 20, "top_k": 5}
WRITTEN = {"model.keras", "config.json", "generation_config.json", "vocab.json", "merges.txt"}


def _source(head: str, config, state: dict, **extra) -> Source:
    return Source("test", Path("memory"), config, head, loading.CanonicalView(state), **extra)


def _assert_same_state(view, state: dict, dtype: str) -> None:
    """Same names, dtype and bits (``state`` cast to ``dtype`` as the writer does)."""
    assert sorted(view.keys()) == sorted(state)
    for name, value in state.items():
        got, want = view[name], cast(value, dtype)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), f"{name} differs"


def _strip(config) -> dict:
    data = config.to_dict()
    for key in ("architectures", "dtype"):
        data.pop(key, None)
    return data


@pytest.mark.parametrize("head", HEADS)
def test_every_head_round_trips_bit_exact(tmp_path, head):
    config = tiny_config(pad_token_id=98)
    state = random_state(config, head)
    source = _source(head, config, state, generation_config=GENERATION, tokenizer_files=TOKENIZER)
    formats.write(source, tmp_path, "keras")
    assert {p.name for p in tmp_path.iterdir()} == WRITTEN  # no temporary files left
    assert (
        formats.detect(tmp_path) == "keras" and formats.detect(tmp_path / "model.keras") == "keras"
    )
    back = formats.read(tmp_path)
    assert (back.format, back.head) == ("keras", head)
    assert _strip(back.config) == config.to_dict()
    _assert_same_state(back.view, state, "float32")
    assert back.generation_config == GENERATION
    assert {n: p.read_bytes() for n, p in back.tokenizer_files.items()} == {
        n: p.read_bytes() for n, p in TOKENIZER.items()
    }
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == [type(gtf.build(head, config.copy())).__name__]
    assert written["dtype"] == "float32"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "bf16"])
def test_dtypes_are_keras_dtype_policies(tmp_path, dtype):
    config = tiny_config()
    state = random_state(config, "question_answering")
    formats.write(_source("question_answering", config, state), tmp_path, "keras", dtype=dtype)
    name = formats.DTYPES.get(dtype, dtype)
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert model.dtype_policy.name == name and {v.dtype for v in model.weights} == {name}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == name
    _assert_same_state(formats.read(tmp_path).view, state, name)


def test_no_dtype_keeps_the_sources(tmp_path):
    config = tiny_config()
    state = {k: cast(v, "bfloat16") for k, v in random_state(config, "base").items()}
    formats.write(_source("base", config, state), tmp_path, "keras")
    _assert_same_state(formats.read(tmp_path).view, state, "bfloat16")


def test_unknown_dtype_is_refused(tmp_path):
    config = tiny_config()
    source = _source("base", config, random_state(config, "base"))
    with pytest.raises(FormatError, match="dtype='int8' is not a dtype this writer stores"):
        formats.write(source, tmp_path, "keras", dtype="int8")


def test_a_state_that_does_not_fit_writes_nothing(tmp_path):
    config = tiny_config()
    state = random_state(config, "lm")
    del state["h.1.mlp.c_fc.bias"]
    with pytest.raises(loading.CheckpointError, match="lacks 1 of its tensors: h.1.mlp.c_fc.bias"):
        formats.write(_source("lm", config, state), tmp_path, "keras")
    assert list(tmp_path.iterdir()) == []


def test_written_model_matches_pytorch(tmp_path):
    config = tiny_config()
    state = random_state(config, "lm")
    formats.write(_source("lm", config, state), tmp_path, "keras")
    model = keras.saving.load_model(tmp_path / "model.keras")
    ids = np.random.default_rng(1).integers(0, 99, (BATCH, SEQ), dtype=np.int32)
    expected = PT.run(PT.build("lm", config, state), input_ids=ids)["logits"]
    assert_close(model(input_ids=ids)["logits"].numpy(), expected, what="model.keras logits")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weights_h5_beside_config_json(tmp_path, dtype):
    """``save_weights`` output; the dtype comes from config.json, else from the file."""
    config = tiny_config()
    state = random_state(config, "sequence_classification")
    model = gtf.build("sequence_classification", config.copy(), dtype=dtype)
    load_canonical(model, state)
    model.save_weights(tmp_path / "ckpt.weights.h5")
    if dtype == "float32":
        loading.save_config(config, "GPT2ForSequenceClassification", dtype, tmp_path)
    else:  # no dtype recorded
        config.copy(architectures=["GPT2ForSequenceClassification"]).save_pretrained(tmp_path)
    for path in (tmp_path, tmp_path / "ckpt.weights.h5"):
        assert formats.detect(path) == "keras"
        back = formats.read(path)
        assert back.head == "sequence_classification"
        _assert_same_state(back.view, state, dtype)


def test_weights_h5_without_a_gpt2_dual_config_is_not_this_format(tmp_path):
    model = gtf.build("base", tiny_config())
    model.save_weights(tmp_path / "ckpt.weights.h5")
    assert not formats.module("keras").detect(tmp_path / "ckpt.weights.h5")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert not formats.module("keras").detect(tmp_path)
    with pytest.raises(FormatError, match="is not a Keras file of gpt2_dual.tf"):
        formats.read(tmp_path, "keras")


def test_safe_mode_stays_on(tmp_path):
    inputs = keras.Input((3,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x + 1.0)(inputs))
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(FormatError, match="Keras could not load it:.*safe_mode"):
        formats.read(tmp_path / "lambda.keras")
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    dense.save(tmp_path / "dense.keras")
    with pytest.raises(FormatError, match="holds a Sequential, not a gpt2_dual.tf model"):
        formats.read(tmp_path / "dense.keras")


def test_tensors_of_other_heads_are_left_out(tmp_path):
    """A source seen as another head (``convert --head base``) writes that head's model."""
    config = tiny_config(tie_word_embeddings=False)
    state = random_state(config, "double_heads")
    formats.write(_source("base", config, state), tmp_path, "keras")
    back = formats.read(tmp_path)
    assert back.head == "base"
    _assert_same_state(back.view, random_state(config, "base"), "float32")
