"""The ``keras-hub`` format: KerasHub GPT-2 presets, read and written without keras_hub.

The name table maps every backbone parameter once and its layouts invert; canonical -> preset
-> canonical is bit exact. With keras_hub installed (a test-only reference), presets KerasHub
saves read into gpt2_dual.pt and gpt2_dual.tf with KerasHub's own hidden states and logits,
and presets gpt2_dual writes load with ``from_preset`` and give ours.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cases import assert_close, tiny_config
from frameworks import PT, has, random_state
from gpt2_dual.checkpoint import loading
from gpt2_dual.checkpoint.names import backbone_params
from gpt2_dual.checkpoint.names import keras_hub as table
from gpt2_dual.checkpoint.safetensors_io import cast
from gpt2_dual.convert import formats
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.errors import MalformedFileError
from gpt2_dual.hub.resolve import bundled_vocab_dir

#: Keras 3.15's saving calls ``np.array`` on TensorFlow 2.21 variables, whose ``__array__``
#: predates numpy 2's ``copy`` keyword; numpy warns. Not gpt2_dual code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

TOKENIZER = {name: bundled_vocab_dir() / name for name in ("vocab.json", "merges.txt")}
FULL_VOCAB = 50257  # the bundled tokenizer's, for the causal LM tests


def _source(head: str, config, state: dict, tokenizer=None) -> Source:
    view = loading.CanonicalView(state)
    return Source("test", Path("memory"), config, head, view, tokenizer_files=tokenizer or {})


def _assert_same_state(view, state: dict, dtype: str) -> None:
    assert sorted(view.keys()) == sorted(state)
    for name, value in state.items():
        got, want = view[name], cast(value, dtype)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), f"{name} differs"


# --------------------------------------------------------------------------- the table
def test_table_maps_every_backbone_parameter_once():
    config = tiny_config()
    rows = table.hub_params(config)
    assert [r.canonical for r in rows] == [p.canonical for p in backbone_params(config)]
    datasets = [d for r in rows for d in r.datasets]
    assert len(datasets) == len(set(datasets))
    groups = {d.rsplit("/vars/", 1)[0] for d in datasets}
    assert groups <= set(table.layer_names(config))


def test_layouts_invert_and_have_keras_hub_shapes():
    config = tiny_config()
    state = random_state(config, "base")
    for row in table.hub_params(config):
        parts = table.from_canonical(row, state[row.canonical], config)
        shapes = table.hub_shapes(row, config, state[row.canonical].shape)
        assert [p.shape for p in parts] == shapes, row.canonical
        assert np.array_equal(table.to_canonical(row, parts, config), state[row.canonical])
    q = table.from_canonical(table.hub_params(config)[4], state["h.0.attn.c_attn.weight"], config)
    assert np.array_equal(q[1][:, 2, :], state["h.0.attn.c_attn.weight"][:, 32 + 16 : 32 + 24])


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("head", ["base", "lm"])
@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
def test_round_trip_is_bit_exact(tmp_path, head, dtype):
    config = tiny_config(n_inner=None) if head == "lm" else tiny_config()
    state = random_state(config, head)
    formats.write(_source(head, config, state, TOKENIZER), tmp_path, "keras-hub", dtype=dtype)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert formats.detect(tmp_path) == "keras-hub"
    back = formats.read(tmp_path)
    assert (back.format, back.head) == ("keras-hub", head)
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
                  "resid_pdrop", "embd_pdrop", "attn_pdrop"):  # fmt: skip
        assert getattr(back.config, field) == getattr(config, field), field
    _assert_same_state(back.view, state, dtype or "float32")
    assert {n: p.read_bytes() for n, p in back.tokenizer_files.items()} == {
        n: p.read_bytes() for n, p in TOKENIZER.items()
    }
    hub = json.loads((tmp_path / "config.json").read_text())
    assert hub["config"]["intermediate_dim"] == config.inner_dim
    assert hub["config"]["dtype"]["config"]["name"] == (dtype or "float32")


def test_a_tokenizer_json_becomes_the_assets(tmp_path):
    config = tiny_config()
    tokenizer = {"tokenizer.json": bundled_vocab_dir() / "tokenizer.json"}
    formats.write(_source("base", config, random_state(config, "base"), tokenizer),
                  tmp_path, "keras-hub")  # fmt: skip
    assets = tmp_path / "assets" / "tokenizer"
    assert json.loads((assets / "vocabulary.json").read_text()) == json.loads(
        TOKENIZER["vocab.json"].read_text()
    )
    ours = (assets / "merges.txt").read_text().splitlines()
    bundled = TOKENIZER["merges.txt"].read_text().splitlines()
    assert ours == bundled


@pytest.mark.parametrize(
    "head, change, field",
    [
        ("base", {"activation_function": "gelu"}, "activation_function='gelu'"),
        ("base", {"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon=1e-06"),
        ("base", {"scale_attn_weights": False}, "scale_attn_weights=False"),
        ("base", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ("base", {"add_cross_attention": True}, "add_cross_attention=True"),
        ("lm", {"tie_word_embeddings": False}, "tie_word_embeddings=False"),
        ("sequence_classification", {}, "no model for head 'sequence_classification'"),
    ],
)
def test_what_keras_hub_cannot_represent_is_refused(tmp_path, head, change, field):
    config = tiny_config(**change)
    source = _source(head, config, random_state(config, head))
    with pytest.raises(FormatError, match=field.replace("(", r"\(")):
        formats.write(source, tmp_path, "keras-hub")
    assert list(tmp_path.iterdir()) == []


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    config = tiny_config()
    formats.write(_source("base", config, random_state(config, "base")), tmp_path, "keras-hub")
    hub = json.loads((tmp_path / "config.json").read_text())
    hub["config"]["num_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(hub))
    with pytest.raises(FormatError, match=r"unexpected 16: layers/transformer_decoder_1/"):
        formats.read(tmp_path)


def test_sublayers_named_by_private_attribute_read_the_same(tmp_path):
    """Keras versions name ``MultiHeadAttention``'s sublayers ``query_dense`` or
    ``_query_dense``; both read."""
    import h5py

    config = tiny_config()
    state = random_state(config, "base")
    formats.write(_source("base", config, state), tmp_path, "keras-hub")
    with h5py.File(tmp_path / "model.weights.h5", "r+") as f:
        for i in ("", "_1"):
            attention = f[f"layers/transformer_decoder{i}/_self_attention_layer"]
            for name in ("query_dense", "key_dense", "value_dense", "output_dense"):
                attention.move(name, f"_{name}")
    _assert_same_state(formats.read(tmp_path).view, state, "float32")


def test_presets_are_read_and_written_without_keras(tmp_path):
    code = f"""
import sys
import numpy as np
from pathlib import Path
from gpt2_dual import GPT2Config
from gpt2_dual.convert import formats
from gpt2_dual.checkpoint import loading
from gpt2_dual.checkpoint.names import canonical_shapes
config = GPT2Config(vocab_size=99, n_positions=24, n_embd=32, n_layer=2, n_head=4)
rng = np.random.default_rng(0)
state = {{k: rng.normal(size=s).astype("float32") for k, s in canonical_shapes(config, "lm").items()}}
view = loading.CanonicalView(state)
formats.write(formats.Source("t", Path("."), config, "lm", view), {str(tmp_path)!r}, "keras-hub")
back = formats.read({str(tmp_path)!r})
assert np.array_equal(back.view["h.1.attn.c_attn.weight"], state["h.1.attn.c_attn.weight"])
heavy = sorted(m for m in ("keras", "keras_hub", "tensorflow", "torch") if m in sys.modules)
assert back.head == "lm" and not heavy, heavy
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_transformers_folder_is_not_a_keras_hub_preset(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    (tmp_path / "model.weights.h5").write_bytes(b"")
    assert not formats.module("keras-hub").detect(tmp_path)


@pytest.mark.parametrize("shard", ["../outside.weights.h5", "/tmp/outside.weights.h5", "C:x.h5"])
def test_a_shard_index_pointing_outside_the_preset_is_refused(tmp_path, shard):
    config = tiny_config()
    formats.write(_source("base", config, random_state(config, "base")), tmp_path, "keras-hub")
    (tmp_path / table.WEIGHTS_FILE).rename(tmp_path.parent / "outside.weights.h5")
    index = tmp_path / table.SHARDED_WEIGHTS_INDEX
    index.write_text(json.dumps({"weight_map": {"backbone/layers": shard}}))
    with pytest.raises(MalformedFileError) as err:
        formats.read(tmp_path)
    assert str(err.value) == (
        f"{index}: weight_map['backbone/layers'] names {shard!r}, not a file in the index's "
        "folder (no leading '/', drive, '..' or '\\')"
    )


# --------------------------------------------------------------------------- against KerasHub
@pytest.fixture(scope="module")
def keras_hub():
    return pytest.importorskip("keras_hub")


def _inputs(vocab_size: int) -> dict[str, np.ndarray]:
    """Token ids with a right-padded, a left-padded and a full row."""
    ids = np.random.default_rng(1).integers(0, vocab_size, (3, 7), dtype=np.int32)
    mask = np.ones_like(ids)
    mask[0, -2:] = 0
    mask[1, :3] = 0
    return {"token_ids": ids, "padding_mask": mask}


def _randomize(model) -> None:
    """Non-symmetric random values in every variable (LayerNorm scales around 1)."""
    rng = np.random.default_rng(0)
    for v in model.weights:
        value = rng.normal(0.0, 0.2, v.shape) + (1.0 if v.path.endswith("gamma") else 0.0)
        v.assign(value.astype("float32"))


def _ours(head: str, config, state: dict, inputs: dict) -> dict[str, np.ndarray]:
    """The main output of gpt2_dual.pt and gpt2_dual.tf, with KerasHub's positions: arange,
    padding included (ours would count positions from the mask)."""
    from frameworks_tf import TF

    field = "logits" if head == "lm" else "last_hidden_state"
    ids, mask = inputs["token_ids"], inputs["padding_mask"]
    positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape)
    out = {}
    for fw in (PT, TF) if has("tensorflow") else (PT,):
        model = fw.build(head, config, state)
        got = fw.run(model, input_ids=ids, attention_mask=mask, position_ids=positions)
        out[fw.name] = got[field]
    return out


def _compare(ours: dict, theirs: np.ndarray, mask: np.ndarray, what: str) -> None:
    real = mask.astype(bool)  # padded positions differ by design: compare the real ones
    for name, value in ours.items():
        assert_close(value[real], theirs[real], what=f"{name} vs KerasHub {what}")


def _view_state(view) -> dict[str, np.ndarray]:
    return {name: view[name] for name in view.keys()}


def test_reads_a_keras_hub_backbone(keras_hub, tmp_path):
    config = tiny_config()
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=99, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=40,
        max_sequence_length=24, dropout=0.0,
    )  # fmt: skip
    _randomize(backbone)
    inputs = _inputs(99)
    expected = np.asarray(backbone(inputs))
    backbone.save_to_preset(str(tmp_path / "one"))
    backbone.save_to_preset(str(tmp_path / "shards"), max_shard_size=0.00002)  # ~20 kB each
    assert len(list((tmp_path / "shards").glob("*.weights.h5"))) > 1
    source = formats.read(tmp_path / "one")
    assert (source.format, source.head, source.tokenizer_files) == ("keras-hub", "base", {})
    assert source.config.inner_dim == 40 and source.config.n_positions == 24
    state = _view_state(source.view)
    _compare(_ours("base", config, state, inputs), expected, inputs["padding_mask"], "hidden")
    _assert_same_state(formats.read(tmp_path / "shards").view, state, "float32")


def _causal_lm(keras_hub, vocab_size: int):
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=str(TOKENIZER["vocab.json"]), merges=str(TOKENIZER["merges.txt"])
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=8)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab_size, num_layers=2, num_heads=4, hidden_dim=32,
        intermediate_dim=128, max_sequence_length=24, dropout=0.0,
    )  # fmt: skip
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def test_reads_a_keras_hub_causal_lm(keras_hub, tmp_path):
    lm = _causal_lm(keras_hub, FULL_VOCAB)
    _randomize(lm)
    inputs = _inputs(FULL_VOCAB)
    expected = np.asarray(lm(inputs))
    lm.save_to_preset(str(tmp_path))
    source = formats.read(tmp_path)
    assert (source.head, source.config.n_inner, source.config.tie_word_embeddings) == (
        "lm", None, True
    )  # fmt: skip
    assert {n: p.read_bytes() for n, p in source.tokenizer_files.items()} == {
        n: p.read_bytes() for n, p in TOKENIZER.items()
    }
    state = _view_state(source.view)
    ours = _ours("lm", source.config, state, inputs)
    _compare(ours, expected, inputs["padding_mask"], "logits")


@pytest.mark.parametrize("head", ["base", "lm"])
def test_keras_hub_loads_what_we_write(keras_hub, tmp_path, head):
    config = tiny_config(vocab_size=FULL_VOCAB) if head == "lm" else tiny_config()
    state = random_state(config, head)
    formats.write(_source(head, config, state, TOKENIZER), tmp_path, "keras-hub")
    inputs = _inputs(config.vocab_size)
    if head == "base":
        model = keras_hub.models.GPT2Backbone.from_preset(str(tmp_path))
    else:
        model = keras_hub.models.GPT2CausalLM.from_preset(str(tmp_path))
        text = "Hello world, it's <|endoftext|> me"
        from gpt2_dual import GPT2Tokenizer

        ids = GPT2Tokenizer.from_pretrained(bundled_vocab_dir()).encode(text)
        assert np.asarray(model.preprocessor.tokenizer(text)).tolist() == ids
    _compare(_ours(head, config, state, inputs), np.asarray(model(inputs)),
             inputs["padding_mask"], head)  # fmt: skip


def test_keras_hub_loads_a_bfloat16_preset(keras_hub, tmp_path):
    config = tiny_config()
    state = random_state(config, "base")
    formats.write(_source("base", config, state), tmp_path, "keras-hub", dtype="bfloat16")
    model = keras_hub.models.GPT2Backbone.from_preset(str(tmp_path), dtype="bfloat16")
    variables = {v.path: v for v in model.weights}
    got = variables["transformer_layer_1/self_attention/key/kernel"].numpy().reshape(32, 32)
    want = cast(state["h.1.attn.c_attn.weight"][:, 32:64], "bfloat16")
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_tensors_of_other_heads_are_left_out(tmp_path):
    config = tiny_config(tie_word_embeddings=False)
    state = random_state(config, "lm")  # with its own lm_head.weight
    formats.write(_source("base", config, state), tmp_path, "keras-hub")
    _assert_same_state(formats.read(tmp_path).view, random_state(config, "base"), "float32")


def test_a_missing_tensor_is_named(tmp_path):
    config = tiny_config()
    state = random_state(config, "base")
    del state["h.0.attn.c_attn.bias"]
    with pytest.raises(
        loading.CheckpointError, match="lacks 1 of its tensors: h.0.attn.c_attn.bias"
    ):
        formats.write(_source("base", config, state), tmp_path, "keras-hub")
