"""OpenAI's original GPT-2 release (format "openai"): names, config, tokenizer files, parity.

The fixture writes a tiny release exactly as openai/gpt-2 lays one out: a TF1 checkpoint saved
by ``tf.compat.v1.train.Saver`` from variables made under OpenAI's variable scopes
(``model/h0/attn/c_attn/w`` of shape ``(1, C, 3C)``, ...), ``hparams.json``, ``checkpoint``,
and ``encoder.json``/``vocab.bpe`` (the bundled vocabulary, byte-identical to OpenAI's). The
reference is transformers 4.57's own importer, ``load_tf_weights_in_gpt2``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from cases import assert_close
from frameworks import FRAMEWORKS, has
from gpt2_dual.checkpoint.loading import CheckpointError
from gpt2_dual.checkpoint.names import canonical_shapes
from gpt2_dual.checkpoint.names import openai as names
from gpt2_dual.convert import formats
from gpt2_dual.convert import openai as reader
from gpt2_dual.hub.bundled import bundled_vocab_dir

pytestmark = pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow")

#: Every size distinct: n_vocab 99, n_ctx 24, n_embd 32 (3C 96, 4C 128), n_head 4, n_layer 2.
HPARAMS = {"n_vocab": 99, "n_ctx": 24, "n_embd": 32, "n_head": 4, "n_layer": 2}
IDS = np.array([[5, 17, 98, 0, 42, 7, 63], [11, 3, 76, 54, 2, 0, 0]], dtype=np.int64)
MASK = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], dtype=np.int64)  # right padding
#: Explicit, as transformers does not derive positions from the mask (gpt2_dual does).
POSITIONS = np.broadcast_to(np.arange(IDS.shape[1]), IDS.shape).copy()
INPUTS = {"input_ids": IDS, "attention_mask": MASK, "position_ids": POSITIONS}


def release_variables(h: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """OpenAI's variables for ``h``, named and shaped as ``src/model.py`` makes them, with
    non-symmetric random values (gains around 1)."""
    c, shapes = h["n_embd"], {"model/wte": (h["n_vocab"], h["n_embd"])}
    shapes["model/wpe"] = (h["n_ctx"], c)
    for i in range(h["n_layer"]):
        for ln in ("ln_1", "ln_2"):
            shapes |= {f"model/h{i}/{ln}/g": (c,), f"model/h{i}/{ln}/b": (c,)}
        for conv, nx, nf in (("attn/c_attn", c, 3 * c), ("attn/c_proj", c, c),
                             ("mlp/c_fc", c, 4 * c), ("mlp/c_proj", 4 * c, c)):  # fmt: skip
            shapes |= {f"model/h{i}/{conv}/w": (1, nx, nf), f"model/h{i}/{conv}/b": (nf,)}
    shapes |= {"model/ln_f/g": (c,), "model/ln_f/b": (c,)}
    out = {}
    for name, shape in shapes.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        out[name] = rng.normal(0.0, 0.2, shape).astype(np.float32) + (name.endswith("/g"))
    return out


def write_release(folder: Path, variables: dict[str, np.ndarray], hparams=HPARAMS) -> Path:
    """A release folder: TF1 checkpoint written by a Saver in graph mode, plus the JSON and
    tokenizer files. Variables are created under nested variable scopes, as OpenAI's code does."""
    import tensorflow as tf

    folder.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in variables.items():
            *scopes, leaf = name.split("/")
            with tf.compat.v1.variable_scope("/".join(scopes)):
                tf.compat.v1.get_variable(leaf, initializer=value)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(folder / "model.ckpt"))
    # As released: the bookkeeping file names the checkpoint relative to the folder.
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    (folder / "hparams.json").write_text(json.dumps(hparams, indent=2))
    shutil.copyfile(bundled_vocab_dir() / "vocab.json", folder / "encoder.json")
    shutil.copyfile(bundled_vocab_dir() / "merges.txt", folder / "vocab.bpe")
    return folder


@pytest.fixture(scope="module")
def variables() -> dict[str, np.ndarray]:
    return release_variables(HPARAMS)


@pytest.fixture(scope="module")
def release(tmp_path_factory, variables) -> Path:
    return write_release(tmp_path_factory.mktemp("openai") / "124M", variables)


@pytest.fixture(scope="module")
def transformers_logits(release) -> np.ndarray:
    """Logits of transformers' GPT2LMHeadModel filled by ``load_tf_weights_in_gpt2``.

    The importer walks names from the model it is given (``wte``, ``h``, ...), so it gets the
    backbone, ``model.transformer``, as transformers' converter passes a ``GPT2Model``; the LM
    head shares ``wte``'s parameter, whose data the importer replaces in place.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.gpt2.modeling_gpt2 import load_tf_weights_in_gpt2

    config = transformers.GPT2Config(
        vocab_size=HPARAMS["n_vocab"], n_positions=HPARAMS["n_ctx"], n_embd=HPARAMS["n_embd"],
        n_head=HPARAMS["n_head"], n_layer=HPARAMS["n_layer"], attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    load_tf_weights_in_gpt2(model.transformer, config, str(release / "model.ckpt"))
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in INPUTS.items()})
    return out.logits.numpy()


# --------------------------------------------------------------------------- table and config
def test_table_is_a_bijection_onto_the_lm_model():
    config = reader.config_from_hparams(HPARAMS)
    rows = names.variables(config)
    assert [r.canonical for r in rows] == list(canonical_shapes(config, "lm"))
    assert {r.variable for r in rows} == set(release_variables(HPARAMS))
    for row in rows:
        assert row.shape == ((1, *row.canonical_shape) if row.leading_one else row.canonical_shape)


def test_detect(release, tmp_path):
    assert reader.detect(release)
    assert reader.detect(release / "model.ckpt")  # the prefix transformers' importer takes
    assert not reader.detect(release / "hparams.json")
    no_hparams = shutil.copytree(release, tmp_path / "copy")
    (no_hparams / "hparams.json").unlink()
    assert not reader.detect(no_hparams)


def test_read_config_head_and_tokenizer_files(release):
    source = formats.read(release, format="openai")
    assert (source.format, source.head, source.generation_config) == ("openai", "lm", None)
    c = source.config
    sizes = (c.vocab_size, c.n_positions, c.n_embd, c.n_head, c.n_layer, c.n_ctx)
    assert sizes == (99, 24, 32, 4, 2, 24)
    assert (c.activation_function, c.layer_norm_epsilon, c.tie_word_embeddings) == (
        "gelu_new", 1e-5, True,
    )  # fmt: skip
    assert source.tokenizer_files == {
        "vocab.json": release / "encoder.json", "merges.txt": release / "vocab.bpe",
    }  # fmt: skip


def test_tokenizer_files_load_as_gpt2(release, tmp_path):
    from gpt2_dual import GPT2Tokenizer

    source = reader.read(release)
    formats.copy_tokenizer_files(source, tmp_path)
    tokenizer = GPT2Tokenizer.from_pretrained(tmp_path)
    assert tokenizer.encode("Hello world<|endoftext|>") == [15496, 995, 50256]
    assert tokenizer.eos_token == "<|endoftext|>"


def test_view_is_the_release_in_canonical_layout(release, variables):
    source = reader.read(release)
    view = source.view
    assert view.keys() == list(canonical_shapes(source.config, "lm"))
    assert view.shape("h.1.mlp.c_fc.weight") == (32, 128)
    np.testing.assert_array_equal(view["h.1.mlp.c_fc.weight"], variables["model/h1/mlp/c_fc/w"][0])
    np.testing.assert_array_equal(view["h.0.ln_2.weight"], variables["model/h0/ln_2/g"])
    np.testing.assert_array_equal(view["wpe.weight"], variables["model/wpe"])
    assert view.ignored == []


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_logits_match_transformers_importer(fw, release, transformers_logits):
    source = reader.read(release)
    model = fw.build(source.head, source.config)
    weights = importlib.import_module(f"gpt2_dual.{fw.name.split('-')[0]}.weights")
    report = weights.load_canonical(model, source.view)
    assert (report.missing, report.unexpected) == ((), ())
    logits = fw.run(model, **INPUTS)["logits"]
    assert_close(logits, transformers_logits, what=f"{fw.name} vs transformers")


def test_converted_folder_loads_in_transformers(release, transformers_logits, tmp_path):
    """The user's path: ``gpt2-dual convert`` to a transformers folder, then transformers'
    own ``from_pretrained``."""
    import torch
    import transformers

    from gpt2_dual.convert import conversion

    conversion.convert(release, tmp_path / "hf", to="hf", verify=False)
    model = transformers.GPT2LMHeadModel.from_pretrained(
        tmp_path / "hf", attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in INPUTS.items()}).logits.numpy()
    assert_close(logits, transformers_logits, what="converted folder in transformers")
    assert (tmp_path / "hf" / "vocab.json").read_bytes() == (release / "encoder.json").read_bytes()


# --------------------------------------------------------------------------- errors
def test_missing_hparams(release, tmp_path):
    folder = shutil.copytree(release, tmp_path / "run1")
    (folder / "hparams.json").unlink()
    message = (
        f"{folder}: no hparams.json; OpenAI's GPT-2 release keeps the model sizes there "
        "(n_vocab, n_ctx, n_embd, n_head, n_layer)"
    )
    with pytest.raises(formats.FormatError) as err:
        reader.read(folder)
    assert str(err.value) == message


def test_hparams_missing_key(release, tmp_path):
    folder = shutil.copytree(release, tmp_path / "run1")
    hparams = dict(HPARAMS)
    del hparams["n_head"]
    (folder / "hparams.json").write_text(json.dumps(hparams))
    with pytest.raises(formats.FormatError) as err:
        reader.read(folder)
    assert str(err.value) == f"{folder / 'hparams.json'}: missing n_head"


def test_misshapen_variable(variables, tmp_path):
    bad = dict(variables)
    bad["model/h1/attn/c_proj/w"] = bad["model/h1/attn/c_proj/w"][0]  # squeezed (C, C)
    folder = write_release(tmp_path / "bad", bad)
    with pytest.raises(CheckpointError) as err:
        reader.read(folder)
    assert str(err.value) == (
        f"{folder / 'model.ckpt'} does not match hparams.json: misshapen 1: "
        "model/h1/attn/c_proj/w: expected (1, 32, 32), found (32, 32)"
    )


def test_missing_and_unknown_variables(variables, tmp_path):
    bad = dict(variables)
    bad["model/ln_f/gain"] = bad.pop("model/ln_f/g")
    del bad["model/h0/mlp/c_fc/b"]
    folder = write_release(tmp_path / "bad", bad)
    with pytest.raises(CheckpointError) as err:
        reader.read(folder)
    assert str(err.value) == (
        f"{folder / 'model.ckpt'} does not match hparams.json: "
        "missing 2: model/h0/mlp/c_fc/b, model/ln_f/g; unknown 1: model/ln_f/gain"
    )


def test_sizes_from_hparams_must_match_the_checkpoint(release, tmp_path):
    folder = shutil.copytree(release, tmp_path / "run1")
    (folder / "hparams.json").write_text(json.dumps({**HPARAMS, "n_layer": 1}))
    with pytest.raises(CheckpointError, match=r"unknown 12: model/h1/attn/c_attn/b, "):
        reader.read(folder)


def test_checkpoint_file_names_another_prefix(variables, tmp_path):
    folder = write_release(tmp_path / "run1", variables)
    for path in folder.glob("model.ckpt.*"):
        path.rename(folder / path.name.replace("model.ckpt", "model-1000"))
    (folder / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/model-1000"\n')
    source = reader.read(folder)
    assert source.view.prefix == folder / "model-1000"
    np.testing.assert_array_equal(source.view["wte.weight"], variables["model/wte"])


def test_truncated_data_file_names_the_variable(variables, tmp_path):
    folder = write_release(tmp_path / "run1", variables)
    data = folder / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    view = reader.read(folder).view  # the index is intact: names and shapes check out
    with pytest.raises(formats.FormatError, match=r"model\.ckpt: cannot read model/wte: "):
        view["wte.weight"]
