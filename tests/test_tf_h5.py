"""transformers 4.x TensorFlow checkpoints (``tf_model.h5``, format ``"tf-h5"``).

- the committed fixtures (``tests/fixtures/make_tf_h5.py``: tiny ``TFGPT2*`` models saved by
  transformers 4.57) load through both frameworks' ``from_pretrained`` and give transformers'
  outputs;
- canonical -> ``write`` -> ``read`` is bit exact for every head TF has, and ``write`` of a
  fixture reproduces transformers' file dataset for dataset;
- transformers' own ``TFGPT2*.from_pretrained`` loads what we write with nothing missing or
  unexpected and gives our PyTorch outputs (in a subprocess: transformers' TF runs on tf_keras);
- a misshapen, missing or foreign tensor is an error that names it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cases import assert_close, tiny_config
from frameworks import FRAMEWORKS, PT, has, random_state
from gpt2_dual.checkpoint import hf
from gpt2_dual.checkpoint.loading import CanonicalView, CheckpointError
from gpt2_dual.checkpoint.names import params
from gpt2_dual.checkpoint.names import tf_h5 as names
from gpt2_dual.convert import formats, hf_format, tf_h5
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.heads import HEAD_BY_CLASS, HEAD_SPECS

h5py = pytest.importorskip("h5py")

FIXTURES = Path(__file__).parent / "fixtures" / "tf_h5"
SCRIPT = Path(__file__).parent / "fixtures" / "make_tf_h5.py"
TF_HEADS = tuple(names.TF_CLASSES)
INPUTS = ("input_ids", "attention_mask", "position_ids", "mc_token_ids")
#: Output fields per head, as transformers names them (the fixtures' npz keys).
FIELDS = {
    "base": ("last_hidden_state",),
    "lm": ("logits",),
    "double_heads": ("logits", "mc_logits"),
    "sequence_classification": ("logits",),
}


def _fixture(head: str) -> Path:
    return FIXTURES / names.TF_CLASSES[head]


def _run(fw, model, data) -> dict[str, np.ndarray]:
    return fw.run(model, **{k: data[k] for k in INPUTS if k in data})


def _source(head: str, config=None, state=None) -> Source:
    config = config or tiny_config(pad_token_id=98)
    state = random_state(config, head) if state is None else state
    return Source("hf", Path("."), config, head, CanonicalView(state))


# --------------------------------------------------------------------------- the table
@pytest.mark.parametrize("head", TF_HEADS)
@pytest.mark.parametrize("changes", [{}, {"add_cross_attention": True}])
def test_table_covers_every_parameter_and_names_round_trip(head, changes):
    config = tiny_config(**changes)
    rows = names.h5_params(config, head)
    assert [r.canonical for r in rows] == [p.canonical for p in params(config, head)]
    assert len({r.name for r in rows}) == len(rows)
    for row in rows:
        assert names.from_name(row.name) == row
        shape = tuple(p.shape(config) for p in params(config, head) if p.canonical == row.canonical)
        assert row.canonical_shape(row.stored_shape(shape[0])) == shape[0]


def test_heads_without_a_tf_class_and_untied_lm_heads_are_refused():
    for head in set(HEAD_SPECS) - set(TF_HEADS):
        with pytest.raises(ValueError, match=f"no TensorFlow GPT-2 for head {head!r}"):
            names.h5_params(tiny_config(), head)
    with pytest.raises(ValueError, match="cannot hold a separate lm_head.weight"):
        names.h5_params(tiny_config(tie_word_embeddings=False), "lm")


@pytest.mark.parametrize(
    "model_name, head",
    [("tfgpt2lm_head_model", "lm"), ("tfgpt2lm_head_model_1", "lm"), ("tfgp_t2_model", "base"),
     ("tfgpt2_for_sequence_classification", "sequence_classification"), ("tfbert_model", None)],
)  # fmt: skip
def test_head_of_model_name(model_name, head):
    assert names.head_of_model_name(model_name) == head


# --------------------------------------------------------------------------- fixtures
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("head", TF_HEADS)
def test_transformers_tf_fixture_loads_with_its_outputs(fw, head, caplog):
    expected = dict(np.load(_fixture(head) / "expected.npz"))
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        model = fw.load(head, _fixture(head))
    assert not caplog.records, caplog.text  # nothing missing, unused or initialized
    out = _run(fw, model, expected)
    for field in FIELDS[head]:
        assert_close(out[field], expected[field], what=f"{fw.name} {head}.{field}")


@pytest.mark.parametrize("head", TF_HEADS)
def test_read_fixture(head):
    folder = _fixture(head)
    assert tf_h5.detect(folder) and tf_h5.detect(folder / hf.TF_WEIGHTS)
    assert not hf_format.detect(folder)  # "hf" (detected first) leaves tf_model.h5 to us
    source = tf_h5.read(folder)
    assert (source.format, source.head, source.config.n_embd) == ("tf-h5", head, 32)
    assert source.view.model_names == {names.MODEL_NAMES[head]}
    assert (source.generation_config is not None) == (head == "lm")
    assert sorted(source.view.keys()) == sorted(p.canonical for p in params(source.config, head))
    assert source.view.shape("h.1.mlp.c_fc.bias") == (40,)
    assert source.view["h.1.mlp.c_fc.bias"].shape == (40,)
    assert source.view.dtype("wte.weight") == "F32"


def test_head_from_model_name_when_config_has_no_architectures(tmp_path):
    folder = _copy(_fixture("lm"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    assert tf_h5.read(folder).head == "lm"


@pytest.mark.parametrize("head", TF_HEADS)
def test_write_reproduces_transformers_file(head, tmp_path):
    tf_h5.write(tf_h5.read(_fixture(head)), tmp_path)
    ours, theirs = _tree(tmp_path / hf.TF_WEIGHTS), _tree(_fixture(head) / hf.TF_WEIGHTS)
    assert ours.keys() == theirs.keys()
    for path, (attrs, value) in theirs.items():
        assert sorted(ours[path][0]) == sorted(attrs), path  # layer_names order differs
        if value is not None:
            np.testing.assert_array_equal(ours[path][1], value, err_msg=path)
            assert ours[path][1].dtype == value.dtype, path
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [HEAD_SPECS[head].class_name]


def _tree(path: Path) -> dict[str, tuple[list, np.ndarray | None]]:
    """HDF5 path -> (list attributes, dataset value or None), root included ('')."""
    out = {}
    with h5py.File(path) as f:

        def visit(name, obj):
            attrs = [list(map(str, np.atleast_1d(v))) for k, v in obj.attrs.items()]
            value = obj[()] if isinstance(obj, h5py.Dataset) else None
            out[name] = ([a for attr in attrs for a in attr], value)

        visit("", f)
        f.visititems(visit)
    return out


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("head", TF_HEADS)
@pytest.mark.parametrize("dtype", [None, "float16"])
def test_round_trip_is_bit_exact(head, dtype, tmp_path):
    source = _source(head)
    tf_h5.write(source, tmp_path, dtype=dtype)
    back = tf_h5.read(tmp_path)
    assert back.head == head and back.config.to_dict()["n_inner"] == 40
    state = source.view._state
    assert sorted(back.view.keys()) == sorted(state)
    for name, array in state.items():
        want = array if dtype is None else array.astype(dtype)
        got = back.view[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_cross_attention_round_trip(tmp_path):
    source = _source("base", tiny_config(add_cross_attention=True))
    tf_h5.write(source, tmp_path)
    back = tf_h5.read(tmp_path).view
    assert "h.1.crossattention.q_attn.bias" in back.keys()
    for name, array in source.view._state.items():
        np.testing.assert_array_equal(back[name], array, err_msg=name)


def test_write_copies_side_files(tmp_path):
    vocab = tmp_path / "vocab.json"
    vocab.write_text("{}")
    source = _source("lm")
    source.generation_config = {"max_length": 9}
    source.tokenizer_files = {"vocab.json": vocab}
    formats.write(source, tmp_path / "out", "tf-h5")
    back = formats.read(tmp_path / "out", "tf-h5")
    assert back.generation_config == {"max_length": 9}
    assert set(back.tokenizer_files) == {"vocab.json"}


@pytest.mark.parametrize(
    "head, changes, dtype, match",
    [
        ("question_answering", {}, None, "no TensorFlow GPT-2 for head 'question_answering'"),
        ("lm", {"tie_word_embeddings": False}, None, "cannot hold a separate lm_head.weight"),
        ("lm", {}, "bfloat16", "tf-h5 cannot store bfloat16"),
    ],
)
def test_write_refuses_what_transformers_tf_cannot_load(head, changes, dtype, match, tmp_path):
    with pytest.raises(FormatError, match=match):
        tf_h5.write(_source(head, tiny_config(**changes)), tmp_path, dtype=dtype)
    assert list(tmp_path.iterdir()) == []


def test_write_of_an_incomplete_source_names_the_tensor_and_writes_nothing(tmp_path):
    state = random_state(tiny_config(), "sequence_classification")
    del state["score.weight"]
    with pytest.raises(CheckpointError, match="lacks 1 of its tensors: score.weight"):
        tf_h5.write(_source("sequence_classification", state=state), tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- transformers TF
def _transformers_tf_available() -> bool:
    return has("tf_keras") and has("tensorflow") and has("transformers")


@pytest.mark.skipif(
    not _transformers_tf_available(), reason="needs tensorflow, tf_keras, transformers"
)
def test_transformers_tf_loads_what_we_write(tmp_path):
    """Every TF head in float32, and the LM head in float16 (transformers casts to its float32
    variables; compared with our model on the same float16-rounded weights)."""
    config = tiny_config(pad_token_id=98)
    cases = [(head, "float32") for head in TF_HEADS] + [("lm", "float16")]
    folders, states = {}, {}
    for head, dtype in cases:
        folder = tmp_path / "ours" / f"{names.TF_CLASSES[head]}-{dtype}"
        folder.mkdir(parents=True)
        states[folder.name] = random_state(config, head, seed=3)
        tf_h5.write(_source(head, config, states[folder.name]), folder, dtype=dtype)
        states[folder.name] = {
            k: v.astype(dtype).astype(np.float32) for k, v in states[folder.name].items()
        }
        folders[folder.name] = head
    out = tmp_path / "transformers"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    paths = [str(tmp_path / "ours" / name) for name in folders]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "check", str(out), *paths],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name, head in folders.items():
        theirs, state = out / name, states[name]
        info = json.loads((theirs / "info.json").read_text())
        assert info == {"class": names.TF_CLASSES[head], "missing_keys": [],
                        "unexpected_keys": [], "mismatched_keys": []}  # fmt: skip
        data = dict(np.load(theirs / "outputs.npz"))
        ours = _run(PT, PT.build(head, config, state), data)
        for field in FIELDS[head]:
            assert_close(ours[field], data[field], what=f"transformers TF vs pt {name}.{field}")
        # transformers' sharded tf_model.h5 (+ index) reads back as what it loaded
        sharded = tf_h5.read(theirs / "sharded")
        assert len(hf.find_checkpoint(theirs / "sharded").files) > 1
        assert sharded.head == head and sorted(sharded.view.keys()) == sorted(state)
        for key, array in state.items():
            np.testing.assert_array_equal(sharded.view[key], array, err_msg=key)


# --------------------------------------------------------------------------- errors
@pytest.fixture(
    params=[
        pytest.param("gpt2_dual.pt", id="pt", marks=pytest.mark.skipif(not has("torch"), reason="no torch")),
        pytest.param("gpt2_dual.tf", id="tf", marks=pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow")),
    ]
)  # fmt: skip
def gpt(request):
    return importlib.import_module(request.param)


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _edit_h5(folder: Path, change) -> None:
    """Call ``change(transformer_group, stored_name_prefix)`` on a copied LM fixture."""
    with h5py.File(folder / hf.TF_WEIGHTS, "r+") as f:
        change(f["transformer"], f"{names.MODEL_NAMES['lm']}/transformer/")


def test_misshapen_tensor_is_named(gpt, tmp_path):
    folder = _copy(_fixture("lm"), tmp_path)

    def change(group, prefix):
        del group[prefix + "h_._0/attn/c_attn/weight:0"]
        group[prefix + "h_._0/attn/c_attn/weight:0"] = np.zeros((32, 95), np.float32)
        del group[prefix + "h_._1/mlp/c_fc/bias:0"]
        group[prefix + "h_._1/mlp/c_fc/bias:0"] = np.zeros((2, 40), np.float32)

    _edit_h5(folder, change)
    with pytest.raises(
        CheckpointError,
        match=r"h\.0\.attn\.c_attn\.weight: expected \(32, 96\), found \(32, 95\); "
        r"h\.1\.mlp\.c_fc\.bias: expected \(40,\), found \(2, 40\)",
    ):
        gpt.GPT2LMHeadModel.from_pretrained(folder)


def test_missing_tensor_is_named(gpt, tmp_path):
    folder = _copy(_fixture("lm"), tmp_path)

    def change(group, prefix):
        del group[prefix + "h_._0/ln_2/beta:0"]
        kept = [n for n in group.attrs["weight_names"] if not n.endswith("h_._0/ln_2/beta:0")]
        group.attrs["weight_names"] = kept

    _edit_h5(folder, change)
    with pytest.raises(CheckpointError, match=r"missing 1: h\.0\.ln_2\.bias \(check"):
        gpt.GPT2LMHeadModel.from_pretrained(folder)


def test_weight_listed_but_not_stored_is_named(tmp_path):
    folder = _copy(_fixture("lm"), tmp_path)
    _edit_h5(folder, lambda group, prefix: group.__delitem__(prefix + "ln_f/gamma:0"))
    with pytest.raises(CheckpointError, match=r"weight 'transformer/ln_f/gamma:0' is listed"):
        tf_h5.read(folder)


def test_old_embedding_name_reads_and_unknown_weights_are_named(tmp_path):
    folder = _copy(_fixture("lm"), tmp_path)

    def change(group, prefix):
        group.move(prefix + "wte/embeddings:0", prefix + "wte/weight:0")
        group[prefix + "h_._0/attn/extra:0"] = np.zeros(3, np.float32)
        renamed = [
            str(n).replace("wte/embeddings:0", "wte/weight:0") for n in group.attrs["weight_names"]
        ]
        group.attrs["weight_names"] = [*renamed, prefix + "h_._0/attn/extra:0"]

    _edit_h5(folder, change)
    view = tf_h5.read(folder).view
    np.testing.assert_array_equal(view["wte.weight"], tf_h5.read(_fixture("lm")).view["wte.weight"])
    assert "h.0.attn.extra" in view.keys()
    gpt = pytest.importorskip("gpt2_dual.pt")
    with pytest.raises(CheckpointError, match=r"unexpected 1: h\.0\.attn\.extra"):
        gpt.GPT2LMHeadModel.from_pretrained(folder)


def test_foreign_or_damaged_h5_is_refused(tmp_path):
    folder = _copy(_fixture("base"), tmp_path)
    (folder / hf.TF_WEIGHTS).write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(ValueError, match=r"tf_model\.h5 is not a valid HDF5 file"):
        tf_h5.read(folder)
    with h5py.File(folder / hf.TF_WEIGHTS, "w") as f:
        f["x"] = np.zeros(2)
    with pytest.raises(ValueError, match="is not a Keras HDF5 weights file"):
        tf_h5.read(folder)


def test_find_checkpoint_takes_tf_h5_last_unless_asked(tmp_path):
    (tmp_path / hf.TF_WEIGHTS).touch()
    assert hf.find_checkpoint(tmp_path).format == "tf-h5"
    (tmp_path / hf.BIN_WEIGHTS).touch()
    assert hf.find_checkpoint(tmp_path).format == "bin"
    assert hf.find_checkpoint(tmp_path, formats=("safetensors", "tf-h5", "bin")).format == "tf-h5"


def test_fixture_class_names_match_heads():
    assert {HEAD_BY_CLASS[d.name.removeprefix("TF")] for d in FIXTURES.iterdir()} == set(TF_HEADS)


@pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow")
def test_tf_reads_tf_model_h5_rather_than_refuse_a_bin_beside_it(tmp_path):
    from frameworks_tf import TF

    folder = _copy(_fixture("lm"), tmp_path)
    (folder / hf.BIN_WEIGHTS).write_bytes(b"not read")
    expected = dict(np.load(folder / "expected.npz"))
    out = _run(TF, TF.load("lm", folder), expected)
    assert_close(out["logits"], expected["logits"], what="tf lm.logits")
