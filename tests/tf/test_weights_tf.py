"""gpt2_dual.tf checkpoints against transformers (PyTorch) and gpt2_dual.pt: load, save,
cross-head, errors, dtypes, the Hub, and no torch import on the loading path.

Every numeric check compares with transformers' own PyTorch model on the same inputs (weights
drawn at random, non-symmetric, so a missing transpose on a square matrix shows).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, assert_normal_init, tiny_config
from gpt2_dual.checkpoint import hf
from gpt2_dual.checkpoint.names import to_canonical_key
from gpt2_dual.generation.config import GENERATION_CONFIG_NAME as GEN
from gpt2_dual.heads import HEAD_SPECS
from hub_server import hf_env_fixture, hub_fixture  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.pt as gpt_pt  # noqa: E402
import gpt2_dual.tf as gpt  # noqa: E402
from gpt2_dual.tf.weights import (  # noqa: E402
    CheckpointError,
    LoadReport,
    load_canonical,
    to_canonical,
)

PAD = 98  # pad_token_id of the tests' config; input ids stay below it


# --------------------------------------------------------------------------- helpers
def _config(**changes):
    return tiny_config(pad_token_id=PAD, **changes)


def _ours(head: str):
    return getattr(gpt, HEAD_SPECS[head].class_name)


def _hf_model(head: str, config, seed: int = 0):
    """transformers' model of ``head`` with every parameter random (LayerNorms and biases too)."""
    torch.manual_seed(seed)
    model = getattr(transformers, HEAD_SPECS[head].class_name)(
        transformers.GPT2Config(**config.to_dict())
    )
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def _inputs(head: str, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if head == "double_heads":  # (B, choices, T) and the token each choice is scored on
        ids = rng.integers(0, PAD, (BATCH, 2, SEQ))
        return {"input_ids": ids, "mc_token_ids": rng.integers(0, SEQ, (BATCH, 2))}
    ids = rng.integers(0, PAD, (BATCH, SEQ))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _outputs(model, head: str, inputs: dict) -> dict[str, np.ndarray]:
    """Main output fields as float32 numpy, from a gpt2_dual.tf, gpt2_dual.pt or transformers
    model."""
    if isinstance(model, keras.Model):
        out = model(inputs)
        return {f: np.asarray(keras.ops.cast(out[f], "float32")) for f in HEAD_SPECS[head].outputs}
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return {f: getattr(out, f).float().numpy() for f in HEAD_SPECS[head].outputs}


def _assert_same_outputs(ours, theirs, head: str, dtype: str = "float32") -> None:
    inputs = _inputs(head)
    mine, ref = _outputs(ours, head, inputs), _outputs(theirs, head, inputs)
    for field in HEAD_SPECS[head].outputs:
        assert_close(mine[field], ref[field], dtype, what=f"{head}.{field}")


def _rewrite_safetensors(folder: Path, change) -> None:
    """Apply ``change`` to the dict of tensors of ``folder/model.safetensors`` and rewrite it."""
    from safetensors.numpy import load_file, save_file

    path = folder / hf.SAFE_WEIGHTS
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def _saved(tmp_path: Path, head: str, **changes) -> Path:
    _hf_model(head, _config(**changes)).save_pretrained(tmp_path / "src")
    return tmp_path / "src"


def _assert_same_weights(a, b) -> None:
    """Every variable of two gpt2_dual.tf models, bit for bit."""
    paths = [[v.path.split("/", 1)[1] for v in m.weights] for m in (a, b)]  # minus model name
    assert paths[0] == paths[1]
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=x.path)


# --------------------------------------------------------------------------- transformers -> ours
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("head", HEADS)
def test_transformers_checkpoint_loads_with_same_outputs(tmp_path, head, sharded):
    theirs = _hf_model(head, _config())
    theirs.save_pretrained(tmp_path, max_shard_size=3000 if sharded else "5GB")
    assert (tmp_path / hf.SAFE_INDEX).is_file() == sharded
    _assert_same_outputs(_ours(head).from_pretrained(tmp_path), theirs, head)


@pytest.mark.parametrize("head", HEADS)
def test_to_canonical_is_transformers_state_dict(tmp_path, head):
    theirs = _hf_model(head, _config(tie_word_embeddings=False))
    theirs.save_pretrained(tmp_path)
    state = to_canonical(_ours(head).from_pretrained(tmp_path))
    expected = {}
    for key, tensor in theirs.state_dict().items():
        if to_canonical_key(key) is not None:
            expected[to_canonical_key(key)] = tensor.numpy()
    assert sorted(state) == sorted(expected)
    for name, array in state.items():
        assert array.flags.c_contiguous and array.dtype == np.float32
        np.testing.assert_array_equal(array, expected[name], err_msg=name)


def test_lm_checkpoint_into_sequence_classification_initializes_score(tmp_path, caplog):
    theirs = _hf_model("lm", _config())
    theirs.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        ours = gpt.GPT2ForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    messages = [r.getMessage() for r in caplog.records]
    assert any("newly initialized: score.weight" in m for m in messages), messages
    kernel = np.asarray(ours.score.kernel)
    assert ours.config.num_labels == 4 and kernel.shape == (32, 4)
    assert_normal_init(kernel, ours.config.initializer_range, "score")  # transformers' init
    inputs = _inputs("base")
    hidden = np.asarray(ours.transformer(inputs).last_hidden_state)
    with torch.no_grad():
        ref = theirs.transformer(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    assert_close(hidden, ref.last_hidden_state.numpy(), what="backbone of the LM checkpoint")


def test_base_checkpoint_into_lm_head_ties_lm_head(tmp_path, caplog):
    _hf_model("base", _config()).save_pretrained(tmp_path)  # keys without "transformer."
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        ours = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert caplog.records == []  # tied lm_head: nothing is missing
    assert ours.lm_head is None and ours.get_output_embeddings() is ours.transformer.wte
    _assert_same_outputs(ours, theirs, "lm")


def test_head_weights_of_another_head_are_reported_unused(tmp_path, caplog):
    _hf_model("token_classification", _config()).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        gpt.GPT2Model.from_pretrained(tmp_path)
    assert "were not used when initializing GPT2Model: classifier.bias, classifier.weight" in (
        caplog.text
    )  # in the file's (sorted) order


def test_old_mask_buffers_are_ignored(tmp_path):
    theirs = _hf_model("lm", _config())
    theirs.save_pretrained(tmp_path)

    def add_buffers(state):
        for i in range(2):
            state[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 24, 24), dtype=bool))
            state[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)

    _rewrite_safetensors(tmp_path, add_buffers)
    _assert_same_outputs(gpt.GPT2LMHeadModel.from_pretrained(tmp_path), theirs, "lm")


def test_tied_lm_head_that_differs_from_wte_warns(tmp_path, caplog):
    _hf_model("lm", _config()).save_pretrained(tmp_path)

    def add_lm_head(state):
        state["lm_head.weight"] = state["transformer.wte.weight"] + 1.0

    _rewrite_safetensors(tmp_path, add_lm_head)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        ours = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert "lm_head.weight differs from wte.weight" in caplog.text
    assert ours.lm_head is None


# --------------------------------------------------------------------------- ours -> PyTorch
@pytest.mark.parametrize("head", HEADS)
def test_saved_checkpoint_loads_in_transformers_and_pt_without_warnings(tmp_path, head, caplog):
    ours = _ours(head).from_pretrained(_saved(tmp_path, head))
    ours.save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == [HEAD_SPECS[head].class_name]
    assert config["dtype"] == "float32"
    cls = getattr(transformers, HEAD_SPECS[head].class_name)
    theirs, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    _assert_same_outputs(ours, theirs.eval(), head)
    with caplog.at_level(logging.INFO, logger="gpt2_dual"):
        pt = getattr(gpt_pt, HEAD_SPECS[head].class_name).from_pretrained(tmp_path / "out")
    assert caplog.records == []
    _assert_same_outputs(ours, pt, head)


def test_saved_keys_match_transformers_for_the_same_class(tmp_path):
    from safetensors import safe_open

    for head in ("base", "lm", "double_heads"):
        _hf_model(head, _config()).save_pretrained(tmp_path / f"hf_{head}")
        _ours(head).from_pretrained(tmp_path / f"hf_{head}").save_pretrained(tmp_path / head)
        keys = [
            set(safe_open(str(tmp_path / f / hf.SAFE_WEIGHTS), "np").keys())
            for f in (f"hf_{head}", head)
        ]
        assert keys[0] == keys[1], head


@pytest.mark.parametrize("head", HEADS)
def test_round_trip_is_bit_exact(tmp_path, head):
    ours = _ours(head).from_pretrained(_saved(tmp_path, head, tie_word_embeddings=False))
    ours.save_pretrained(tmp_path / "out")
    _assert_same_weights(ours, _ours(head).from_pretrained(tmp_path / "out"))


def test_sharded_save_writes_index_and_loads_back(tmp_path):
    ours = gpt.GPT2LMHeadModel.from_pretrained(_saved(tmp_path, "lm"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "pytorch_model.bin").write_bytes(b"stale")
    files = ours.save_pretrained(tmp_path / "out", max_shard_size="10KB")
    names = sorted(p.name for p in files)
    shards = [n for n in names if n.startswith("model-")]
    assert len(shards) > 2 and names == sorted([*shards, hf.SAFE_INDEX, "config.json", GEN])
    assert sorted(os.listdir(tmp_path / "out")) == names  # the stale .bin is gone
    index = json.loads((tmp_path / "out" / hf.SAFE_INDEX).read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert "transformer.h.1.mlp.c_proj.weight" in index["weight_map"]
    again = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    _assert_same_weights(ours, again)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    _assert_same_outputs(again, theirs.eval(), "lm")


def test_canonical_round_trip_into_a_fresh_model():
    source = gpt.GPT2ForQuestionAnswering(_config())
    state = to_canonical(source)
    copy = dict(state)
    target = gpt.GPT2ForQuestionAnswering(_config())
    assert load_canonical(target, state) == LoadReport()
    assert state.keys() == copy.keys() and all(state[k] is copy[k] for k in state)  # not mutated
    _assert_same_weights(source, target)


def test_canonical_state_loads_into_pt_with_same_outputs():
    """The canonical dict is the interchange format: TF -> numpy -> PT, no files."""
    from gpt2_dual.pt.weights import load_canonical as load_pt

    ours = gpt.GPT2DoubleHeadsModel(_config(tie_word_embeddings=False))
    pt = gpt_pt.GPT2DoubleHeadsModel(_config(tie_word_embeddings=False)).eval()
    load_pt(pt, to_canonical(ours))
    _assert_same_outputs(ours, pt, "double_heads")


# --------------------------------------------------------------------------- errors
def test_load_canonical_strict_names_missing_and_unexpected_at_once():
    model = gpt.GPT2ForTokenClassification(_config())
    state = to_canonical(model)
    del state["ln_f.bias"], state["classifier.weight"]
    state["score.weight"] = np.zeros((3, 32), dtype=np.float32)
    model.transformer.ln_f.beta.assign(np.full(32, 5.0, np.float32))
    with pytest.raises(
        CheckpointError,
        match=r"missing 2: ln_f\.bias, classifier\.weight; unexpected 1: score\.weight",
    ):
        load_canonical(model, state)
    np.testing.assert_array_equal(model.transformer.ln_f.beta, np.full(32, 5.0))  # untouched
    report = load_canonical(model, state, strict=False)
    assert report.missing == ("ln_f.bias", "classifier.weight")
    assert report.unexpected == ("score.weight",)
    np.testing.assert_array_equal(model.transformer.ln_f.beta, np.zeros(32))  # re-initialized


def test_only_pytorch_bin_says_how_to_convert(tmp_path):
    _hf_model("base", _config()).save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(
        FileNotFoundError,
        match=r"no safetensors weights .* it has .*pytorch_model\.bin, which gpt2_dual\.tf does "
        r"not read .* gpt2_dual\.pt\.GPT2Model\.from_pretrained\(path\)\.save_pretrained",
    ):
        gpt.GPT2Model.from_pretrained(tmp_path)


def test_bad_options_are_refused(tmp_path):
    folder = _saved(tmp_path, "base")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['n_layers'\]"):
        gpt.GPT2Model.from_pretrained(folder, n_layers=3)
    with pytest.raises(
        TypeError, match=r"config must be a gpt2_dual GPT2Config, got transformers\..*GPT2Config"
    ):
        gpt.GPT2Model.from_pretrained(folder, config=transformers.GPT2Config())
    with pytest.raises(ValueError, match="dtype must be a floating Keras dtype policy.*got 'int8'"):
        gpt.GPT2Model.from_pretrained(folder, dtype="int8")
    with pytest.raises(ValueError, match="dtype must be a floating Keras dtype policy.*got 'fp32'"):
        gpt.GPT2Model.from_pretrained(folder, dtype="fp32")


def test_variable_outside_the_table_is_a_loading_error(tmp_path):
    class Extra(gpt.GPT2Model):
        def build(self, input_shape=None):
            super().build(input_shape)
            self.stray = self.add_weight(shape=(2,), name="stray")

    with pytest.raises(RuntimeError, match=r"left variables unloaded: \['.*stray'\]"):
        Extra.from_pretrained(_saved(tmp_path, "base"))


def test_interrupted_save_leaves_old_files_intact(tmp_path):
    ours = gpt.GPT2LMHeadModel.from_pretrained(_saved(tmp_path, "lm"))
    out = tmp_path / "out"
    ours.save_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    wte = ours.transformer.wte.embeddings
    wte.assign(wte + 1.0)
    # The OS refuses to grow any file past 4 KB: the weights write fails half way.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            ours.save_pretrained(out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no *.tmp left either


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("policy", ["bfloat16", "mixed_bfloat16"])
def test_bfloat16_loading_is_close_to_float32(tmp_path, policy):
    folder = _saved(tmp_path, "lm")
    ours = gpt.GPT2LMHeadModel.from_pretrained(folder, dtype=policy)
    variable_dtype = "float32" if policy.startswith("mixed") else "bfloat16"
    assert {v.dtype for v in ours.weights} == {variable_dtype}
    assert ours.transformer.h[0].attn.c_attn.compute_dtype == "bfloat16"
    _assert_same_outputs(ours, gpt.GPT2LMHeadModel.from_pretrained(folder), "lm", "bfloat16")


def test_bfloat16_save_keeps_dtype_and_auto_restores_it(tmp_path):
    from safetensors import safe_open

    ours = gpt.GPT2LMHeadModel.from_pretrained(_saved(tmp_path, "lm"), dtype="bfloat16")
    ours.save_pretrained(tmp_path / "out")
    with safe_open(str(tmp_path / "out" / hf.SAFE_WEIGHTS), "np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    again = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "out", dtype="auto")
    assert {v.dtype for v in again.weights} == {"bfloat16"}
    _assert_same_weights(ours, again)
    default = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "out")  # like transformers: fp32
    assert {v.dtype for v in default.weights} == {"float32"}
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out", dtype="auto")
    assert theirs.dtype == torch.bfloat16
    np.testing.assert_array_equal(  # bf16 -> fp32 is exact
        np.asarray(default.transformer.wte.embeddings),
        theirs.transformer.wte.weight.detach().float().numpy(),
    )


# --------------------------------------------------------------------------- no torch, the Hub
def test_loading_and_saving_never_import_torch(tmp_path):
    _hf_model("double_heads", _config()).save_pretrained(tmp_path / "src", max_shard_size=5000)
    code = textwrap.dedent(
        f"""
        import sys
        import gpt2_dual.tf as gpt
        model = gpt.GPT2DoubleHeadsModel.from_pretrained({str(tmp_path / "src")!r})
        model.save_pretrained({str(tmp_path / "out")!r})
        gpt.GPT2DoubleHeadsModel.from_pretrained({str(tmp_path / "out")!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        assert not loaded, loaded
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / hf.SAFE_WEIGHTS).is_file()


def test_from_pretrained_through_the_hub(hub, tmp_path):
    theirs = _hf_model("lm", _config())
    theirs.save_pretrained(tmp_path / "repo", max_shard_size=5000)
    hub.add_repo("me/tiny-gpt2", {p.name: p.read_bytes() for p in (tmp_path / "repo").iterdir()})
    _assert_same_outputs(gpt.GPT2LMHeadModel.from_pretrained("me/tiny-gpt2"), theirs, "lm")
    assert any(p.endswith(hf.SAFE_INDEX) for p in hub.paths_requested("GET"))
    offline = gpt.GPT2LMHeadModel.from_pretrained("me/tiny-gpt2", local_files_only=True)
    _assert_same_outputs(offline, theirs, "lm")
