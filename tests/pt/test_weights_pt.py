"""gpt2_dual.pt checkpoints against transformers: load, save, cross-head, errors, dtypes, Hub.

Every numeric check compares with transformers' own model on the same inputs (weights drawn
at random, non-symmetric, so a missing transpose on a square matrix shows).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import resource
import signal
from pathlib import Path

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, assert_normal_init, tiny_config
from gpt2_dual.checkpoint import hf
from gpt2_dual.generation.config import GENERATION_CONFIG_NAME as GEN
from gpt2_dual.heads import HEAD_SPECS
from hub_server import hf_env_fixture, hub_fixture  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gpt2_dual.pt as gpt  # noqa: E402
from gpt2_dual.pt.weights import (  # noqa: E402
    CheckpointError,
    LoadReport,
    load_canonical,
    to_canonical,
)

PAD = 98  # pad_token_id of the tests' config; input ids stay below it
FORMATS = {
    "safetensors": dict(),
    "sharded": dict(max_shard_size=3000),
    "bin": dict(safe_serialization=False),
}


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


def _inputs(head: str, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if head == "double_heads":  # (B, choices, T) and the token each choice is scored on
        ids = torch.randint(0, PAD, (BATCH, 2, SEQ), generator=gen)
        return {"input_ids": ids, "mc_token_ids": torch.randint(0, SEQ, (BATCH, 2), generator=gen)}
    ids = torch.randint(0, PAD, (BATCH, SEQ), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _outputs(model, head: str, inputs: dict) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(**inputs)
    return {f: getattr(out, f).float().numpy() for f in HEAD_SPECS[head].outputs}


def _assert_same_outputs(ours, theirs, head: str, dtype: str = "float32") -> None:
    inputs = _inputs(head)
    mine, ref = _outputs(ours, head, inputs), _outputs(theirs, head, inputs)
    for field in HEAD_SPECS[head].outputs:
        assert_close(mine[field], ref[field], dtype, what=f"{head}.{field}")


@contextlib.contextmanager
def _hf_log():
    """Collect transformers' log records (its loggers do not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _rewrite_safetensors(folder: Path, change) -> None:
    """Apply ``change`` to the dict of tensors of ``folder/model.safetensors`` and rewrite it."""
    from safetensors.numpy import load_file, save_file

    path = folder / hf.SAFE_WEIGHTS
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


# --------------------------------------------------------------------------- transformers -> ours
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("head", HEADS)
def test_transformers_checkpoint_loads_with_same_outputs(tmp_path, head, fmt):
    theirs = _hf_model(head, _config())
    theirs.save_pretrained(tmp_path, **FORMATS[fmt])
    if fmt == "sharded":
        assert (tmp_path / hf.SAFE_INDEX).is_file()
    ours = _ours(head).from_pretrained(tmp_path)
    assert not ours.training
    _assert_same_outputs(ours, theirs, head)


def test_cross_attention_and_untied_lm_head_load(tmp_path):
    config = _config(add_cross_attention=True, tie_word_embeddings=False)
    theirs = _hf_model("lm", config)
    theirs.save_pretrained(tmp_path)
    ours = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert ours.lm_head.weight is not ours.transformer.wte.weight
    inputs = _inputs("lm")
    inputs["encoder_hidden_states"] = torch.randn(
        BATCH, 5, 32, generator=torch.Generator().manual_seed(3)
    )
    assert_close(
        _outputs(ours, "lm", inputs)["logits"],
        _outputs(theirs, "lm", inputs)["logits"],
        what="cross-attention logits",
    )


@pytest.mark.parametrize("head", HEADS)
def test_to_canonical_is_transformers_state_dict(tmp_path, head):
    theirs = _hf_model(head, _config(tie_word_embeddings=False))
    theirs.save_pretrained(tmp_path)
    state = to_canonical(_ours(head).from_pretrained(tmp_path))
    expected = {}
    for key, tensor in theirs.state_dict().items():
        expected[key.removeprefix("transformer.")] = tensor.numpy()
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
    assert ours.config.num_labels == 4 and tuple(ours.score.weight.shape) == (4, 32)
    # score gets transformers' init: normal(0, initializer_range)
    assert_normal_init(ours.score.weight.detach(), ours.config.initializer_range, "score")
    inputs = _inputs("base")
    with torch.no_grad():
        hidden = ours.transformer(**inputs).last_hidden_state.numpy()
        ref = theirs.transformer(**inputs).last_hidden_state.numpy()
    assert_close(hidden, ref, what="backbone of the LM checkpoint")


def test_base_checkpoint_into_lm_head_ties_lm_head(tmp_path, caplog):
    base = _hf_model("base", _config())
    base.save_pretrained(tmp_path)  # keys without "transformer."
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        ours = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert caplog.records == []  # tied lm_head: nothing is missing
    assert ours.lm_head.weight is ours.transformer.wte.weight
    _assert_same_outputs(ours, theirs, "lm")


def test_new_head_weights_follow_torch_manual_seed(tmp_path):
    _hf_model("lm", _config()).save_pretrained(tmp_path)
    weights = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        weights.append(gpt.GPT2ForSequenceClassification.from_pretrained(tmp_path).score.weight)
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_head_weights_of_another_head_are_reported_unused(tmp_path, caplog):
    _hf_model("token_classification", _config()).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        gpt.GPT2Model.from_pretrained(tmp_path)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "were not used" in messages
    assert "classifier.bias, classifier.weight" in messages


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
    assert ours.lm_head.weight is ours.transformer.wte.weight


# --------------------------------------------------------------------------- ours -> transformers
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("head", HEADS)
def test_saved_checkpoint_loads_in_transformers_without_warnings(tmp_path, head, safe):
    _hf_model(head, _config()).save_pretrained(tmp_path / "src")
    ours = _ours(head).from_pretrained(tmp_path / "src")
    ours.save_pretrained(tmp_path / "out", safe_serialization=safe)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == [HEAD_SPECS[head].class_name]
    assert config["dtype"] == "float32"
    cls = getattr(transformers, HEAD_SPECS[head].class_name)
    with _hf_log() as records:
        theirs, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    messages = [r.getMessage() for r in records]
    assert not any("were not used" in m or "newly initialized" in m for m in messages), messages
    _assert_same_outputs(ours, theirs.eval(), head)


def test_saved_keys_match_transformers_for_the_same_class(tmp_path):
    for head in ("base", "lm", "double_heads"):
        theirs = _hf_model(head, _config())
        theirs.save_pretrained(tmp_path / f"hf_{head}")
        _ours(head).from_pretrained(tmp_path / f"hf_{head}").save_pretrained(tmp_path / head)
        from safetensors import safe_open

        keys = [
            set(safe_open(str(tmp_path / f / hf.SAFE_WEIGHTS), "np").keys())
            for f in (f"hf_{head}", head)
        ]
        assert keys[0] == keys[1], head


@pytest.mark.parametrize("head", HEADS)
def test_round_trip_is_bit_exact(tmp_path, head):
    ours = _ours(head).from_pretrained(_saved(tmp_path, head))
    ours.save_pretrained(tmp_path / "out")
    again = _ours(head).from_pretrained(tmp_path / "out")
    mine, theirs = dict(ours.named_parameters()), dict(again.named_parameters())
    assert mine.keys() == theirs.keys()
    for name, param in mine.items():
        assert torch.equal(param, theirs[name]), name


def _saved(tmp_path: Path, head: str, **changes) -> Path:
    _hf_model(head, _config(**changes)).save_pretrained(tmp_path / "src")
    return tmp_path / "src"


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
    for (name, a), b in zip(ours.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b), name
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    _assert_same_outputs(again, theirs.eval(), "lm")


def test_canonical_round_trip_into_a_fresh_model():
    source = gpt.GPT2ForQuestionAnswering(_config())
    state = to_canonical(source)
    copy = dict(state)
    target = gpt.GPT2ForQuestionAnswering(_config())
    report = load_canonical(target, state)
    assert report == LoadReport()
    assert state.keys() == copy.keys() and all(state[k] is copy[k] for k in state)  # not mutated
    for (name, a), b in zip(source.named_parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- errors
def test_errors_are_the_frameworks_shared_ones():
    from gpt2_dual.checkpoint import loading
    from gpt2_dual.pt import weights

    assert weights.CheckpointError is loading.CheckpointError
    assert weights.LoadReport is loading.LoadReport


def test_load_canonical_strict_names_missing_and_unexpected_at_once():
    model = gpt.GPT2ForTokenClassification(_config())
    state = to_canonical(model)
    del state["ln_f.bias"], state["classifier.weight"]
    state["score.weight"] = np.zeros((3, 32), dtype=np.float32)
    with pytest.raises(
        CheckpointError,
        match=r"missing 2: ln_f\.bias, classifier\.weight; unexpected 1: score\.weight",
    ):
        load_canonical(model, state)
    before = model.transformer.ln_f.bias.detach().clone()
    report = load_canonical(model, state, strict=False)
    assert report.missing == ("ln_f.bias", "classifier.weight")
    assert report.unexpected == ("score.weight",)
    assert torch.equal(model.transformer.ln_f.bias, before)  # kept, not re-initialized
    with torch.device("meta"):
        empty = gpt.GPT2ForTokenClassification(_config())
    load_canonical(empty, state, strict=False)
    assert torch.equal(empty.transformer.ln_f.bias, torch.zeros(32))  # transformers' init
    assert empty.classifier.weight.device.type == "cpu"
    assert_normal_init(empty.classifier.weight.detach(), 0.02, "classifier")
    assert torch.equal(
        empty.transformer.h[1].attn.c_attn.weight, model.transformer.h[1].attn.c_attn.weight
    )


def test_bin_with_pickled_object_is_refused(tmp_path):
    folder = _saved(tmp_path, "base")
    (folder / hf.SAFE_WEIGHTS).unlink()
    state = {"wte.weight": torch.zeros(99, 32), "payload": Path("not a tensor")}
    torch.save(state, folder / hf.BIN_WEIGHTS)
    with pytest.raises(
        pickle.UnpicklingError, match="gpt2_dual refused to unpickle .*pytorch_model.bin"
    ):
        gpt.GPT2Model.from_pretrained(folder)


def test_use_safetensors_chooses_the_format(tmp_path):
    _hf_model("base", _config()).save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(FileNotFoundError, match="no safetensors weights .* use_safetensors=None"):
        gpt.GPT2Model.from_pretrained(tmp_path, use_safetensors=True)
    gpt.GPT2Model.from_pretrained(tmp_path, use_safetensors=False)


def test_bad_options_are_refused(tmp_path):
    folder = _saved(tmp_path, "base")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['n_layers'\]"):
        gpt.GPT2Model.from_pretrained(folder, n_layers=3)
    with pytest.raises(
        TypeError, match=r"config must be a gpt2_dual GPT2Config, got transformers\..*GPT2Config"
    ):
        gpt.GPT2Model.from_pretrained(folder, config=transformers.GPT2Config())
    with pytest.raises(ValueError, match="weights_only=False is not supported"):
        gpt.GPT2Model.from_pretrained(folder, weights_only=False)
    with pytest.raises(ValueError, match="dtype must be a floating torch.dtype.*got torch.int8"):
        gpt.GPT2Model.from_pretrained(folder, dtype=torch.int8)


def test_to_canonical_refuses_bfloat16():
    model = gpt.GPT2Model(_config()).to(torch.bfloat16)
    with pytest.raises(TypeError, match="wte.weight is bfloat16, which numpy cannot hold"):
        to_canonical(model)


def test_interrupted_save_leaves_old_files_intact(tmp_path):
    ours = gpt.GPT2LMHeadModel.from_pretrained(_saved(tmp_path, "lm"))
    out = tmp_path / "out"
    ours.save_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        ours.transformer.wte.weight.add_(1.0)
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


LOAD_PEAK = """
import sys
from gpt2_dual.pt import GPT2LMHeadModel
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
GPT2LMHeadModel.from_pretrained(sys.argv[1])  # warm-up: the loader's lazy imports
before = hwm()
model = GPT2LMHeadModel.from_pretrained(sys.argv[2])
loaded = hwm()
total = sum(float(p.sum()) for p in model.parameters())  # every weight read once
print((loaded - before) * 1024, (hwm() - before) * 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_from_pretrained_maps_the_weights_once(tmp_path):
    import subprocess
    import sys

    config = _config(
        vocab_size=16000, n_positions=64, n_embd=512, n_layer=8, n_head=8, n_inner=None
    )
    model = _hf_model("lm", config)
    size = sum(p.numel() * p.element_size() for p in model.parameters())  # 134 MB
    model.save_pretrained(tmp_path / "big")
    command = [sys.executable, "-c", LOAD_PEAK, str(_saved(tmp_path, "lm")), str(tmp_path / "big")]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    at_load, after_use = (int(n) for n in done.stdout.split()[-2:])
    # The weights stay in the file's memory map: loading reads none of them, and reading them
    # all makes them resident once (the map's pages), never twice.
    assert at_load < 0.1 * size, f"loading alone grew peak RSS {at_load / size:.2f}x the weights"
    assert after_use < 1.3 * size, f"peak RSS grew {after_use / size:.2f}x the weights"


# --------------------------------------------------------------------------- dtypes and devices
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_loading(tmp_path, dtype):
    folder = _saved(tmp_path, "lm")
    ours = gpt.GPT2LMHeadModel.from_pretrained(folder, dtype=getattr(torch, dtype), device="cpu")
    assert {p.dtype for p in ours.parameters()} == {getattr(torch, dtype)}
    assert {p.device.type for p in ours.parameters()} == {"cpu"}
    reference = gpt.GPT2LMHeadModel.from_pretrained(folder)
    _assert_same_outputs(ours, reference, "lm", dtype=dtype)


def test_bfloat16_save_keeps_dtype_and_auto_restores_it(tmp_path):
    ours = gpt.GPT2LMHeadModel.from_pretrained(_saved(tmp_path, "lm"), dtype="bfloat16")
    ours.save_pretrained(tmp_path / "out")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / hf.SAFE_WEIGHTS), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    again = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "out", dtype="auto")
    for a, b in zip(ours.parameters(), again.parameters(), strict=True):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    default = gpt.GPT2LMHeadModel.from_pretrained(tmp_path / "out")  # "auto", as transformers 5
    assert {p.dtype for p in default.parameters()} == {torch.bfloat16}
    old_default = gpt.GPT2LMHeadModel.from_pretrained(
        tmp_path / "out", dtype=None
    )  # transformers 4
    assert {p.dtype for p in old_default.parameters()} == {torch.float32}


# --------------------------------------------------------------------------- state_dict habits
@pytest.mark.parametrize("head", HEADS)
def test_load_state_dict_both_ways_with_transformers(head):
    """``ours.load_state_dict(theirs.state_dict())`` and the reverse: the same keys and
    layouts, strict, and then the same outputs (transformers users do this by hand)."""
    theirs = _hf_model(head, _config())
    ours = _ours(head)(_config()).eval()
    assert ours.load_state_dict(theirs.state_dict()) is not None  # strict=True: raises on a miss
    _assert_same_outputs(ours, theirs, head)
    torch.manual_seed(5)
    mine = _ours(head)(_config()).eval()
    with torch.no_grad():
        for param in mine.parameters():
            param.normal_(0.0, 0.2)
    back = getattr(transformers, HEAD_SPECS[head].class_name)(
        transformers.GPT2Config(**_config().to_dict())
    ).eval()
    back.load_state_dict(mine.state_dict())
    _assert_same_outputs(mine, back, head)
    if hasattr(ours, "lm_head"):  # the tie survives loading
        assert ours.lm_head.weight is ours.transformer.wte.weight


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_writing_loaded_parameters_leaves_the_checkpoint_untouched(tmp_path, fmt):
    """from_pretrained maps the file copy-on-write: an in-place write to every parameter (an
    optimizer step) changes the model, never the file's bytes, and a fresh load still reads
    the saved weights."""
    theirs = _hf_model("lm", _config())
    theirs.save_pretrained(tmp_path, **FORMATS[fmt])
    name = hf.SAFE_WEIGHTS if fmt == "safetensors" else hf.BIN_WEIGHTS
    before = (tmp_path / name).read_bytes()
    model = gpt.GPT2LMHeadModel.from_pretrained(tmp_path)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    assert torch.equal(model.transformer.wte.weight, theirs.transformer.wte.weight + 1.0)
    assert (tmp_path / name).read_bytes() == before
    _assert_same_outputs(gpt.GPT2LMHeadModel.from_pretrained(tmp_path), theirs, "lm")


# --------------------------------------------------------------------------- the Hub
def test_from_pretrained_through_the_hub(hub, tmp_path):
    theirs = _hf_model("lm", _config())
    theirs.save_pretrained(tmp_path / "repo", max_shard_size=5000)
    files = {p.name: p.read_bytes() for p in (tmp_path / "repo").iterdir()}
    hub.add_repo("me/tiny-gpt2", files)
    ours = gpt.GPT2LMHeadModel.from_pretrained("me/tiny-gpt2")
    _assert_same_outputs(ours, theirs, "lm")
    assert any(p.endswith(hf.SAFE_INDEX) for p in hub.paths_requested("GET"))
    offline = gpt.GPT2LMHeadModel.from_pretrained("me/tiny-gpt2", local_files_only=True)
    _assert_same_outputs(offline, theirs, "lm")


def _mixed_state():
    """Tensors of every dtype save_pretrained may stream, in a deliberately unsorted order."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return {
        "h.1.w": torch.nn.Parameter(torch.randn(4, 3, generator=g)),  # requires grad
        "bf16": torch.randn(3, 7, generator=g).to(torch.bfloat16),
        "f16": torch.randn(5, generator=g).to(torch.float16),
        "i8": torch.randint(-128, 128, (9,), dtype=torch.int8, generator=g),
        "empty": torch.zeros(0, 4),
        "transposed": base[:, 1:].t(),  # a non-contiguous view at an offset, as a tied head's
        "a.scalar": torch.tensor(2.5, dtype=torch.float64),
        "i64": torch.arange(3),
        "u8": torch.arange(5, dtype=torch.uint8),
        "i16": torch.arange(4, dtype=torch.int16),
        "i32": torch.arange(2, dtype=torch.int32),
        "u16": torch.arange(3).to(torch.uint16),
        "mask": torch.tensor([True, False, True]),
        "wte": base,  # the same storage as "transposed"
    }


@pytest.mark.parametrize("shard_size", ["5GB", 150])
def test_streamed_safetensors_equal_safetensors_save(tmp_path, shard_size):
    """Every file save_pretrained streams holds the bytes safetensors.torch.save returns for
    the same tensors (made contiguous) and metadata."""
    from safetensors.torch import save

    from gpt2_dual.pt.pretrained_io import write_weights

    state = _mixed_state()
    written = write_weights(state, tmp_path, shard_size, True)
    shards = [p for p in written if p.suffix == ".safetensors"]
    assert (len(shards) > 1) == (shard_size == 150)
    weight_map = {k: "model.safetensors" for k in state}
    if len(shards) > 1:
        weight_map = json.loads((tmp_path / hf.SAFE_INDEX).read_text())["weight_map"]
    for path in shards:
        tensors = {
            k: v.detach().contiguous() for k, v in state.items() if weight_map[k] == path.name
        }
        assert path.read_bytes() == save(tensors, metadata={"format": "pt"}), path.name
