"""Hostile checkpoint, config and loading-option inputs: typed gpt2_dual errors naming the
file, the value and the limit, raised before a model is built; plus a seeded byte-mutation
fuzz of every file a checkpoint folder holds (safetensors, config.json, tokenizer files).
"""

from __future__ import annotations

import importlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from cases import tiny_config
from frameworks import has
from gpt2_dual import GenerationConfig, GPT2Config, GPT2Tokenizer, GPT2TokenizerFast
from gpt2_dual.checkpoint import hf
from gpt2_dual.checkpoint.loading import CheckpointError
from gpt2_dual.errors import GPT2DualError, InvalidInputError, MalformedFileError, OutOfRangeError

torch = pytest.importorskip("torch")

FRAMEWORKS = [
    pytest.param("gpt2_dual.pt", id="pt"),
    pytest.param(
        "gpt2_dual.tf",
        id="tf",
        marks=pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow"),
    ),
]


@pytest.fixture(params=FRAMEWORKS)
def gpt(request):
    return importlib.import_module(request.param)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny gpt2_dual.pt GPT2LMHeadModel saved as safetensors, with its config."""
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    GPT2LMHeadModel(tiny_config()).save_pretrained(folder)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


# ----------------------------------------------------------------------------- JSON files
JSON_ROWS = [
    ("not-utf8", b'{"n_layer": "\xff"}', "not UTF-8"),
    ("invalid", b'{"n_layer": 2', "not valid JSON"),
    ("deep", b"[" * 100_000, "nests JSON"),
    ("list", b"[1, 2]", "must hold a JSON object, found array"),
    ("string", b'"config"', "must hold a JSON object, found string"),
]


@pytest.mark.parametrize(("data", "fragment"), [pytest.param(d, f, id=i) for i, d, f in JSON_ROWS])
@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(GPT2Config.from_json_file, id="config"),
        pytest.param(GenerationConfig.from_json_file, id="generation_config"),
        pytest.param(hf.read_index, id="index"),
    ],
)
def test_malformed_json_names_file(tmp_path, reader, data, fragment):
    path = tmp_path / "file.json"
    path.write_bytes(data)
    with pytest.raises(MalformedFileError, match=fragment) as info:
        reader(path)
    assert str(path) in str(info.value)


VALUE_ROWS = [
    (GPT2Config.from_json_file, {"n_layer": "lots"}, "n_layer='lots' is invalid"),
    (GPT2Config.from_json_file, {"n_embd": 64, "n_head": 3}, "divisible"),
    (GPT2Config.from_json_file, {"n_positions": 2**40}, "must be at most 2147483647"),
    (GPT2Config.from_json_file, {"n_positions": 2**30}, r"the limit is 1e\+11"),
]


@pytest.mark.parametrize(("reader", "data", "fragment"), VALUE_ROWS)
def test_wrong_value_in_file_names_file(tmp_path, reader, data, fragment):
    path = tmp_path / "file.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MalformedFileError, match=fragment) as info:
        reader(path)
    assert str(path) in str(info.value)


def test_size_limits_are_out_of_range_errors():
    with pytest.raises(OutOfRangeError, match=r"n_positions=1099511627776 .* at most"):
        GPT2Config(n_positions=2**40)
    with pytest.raises(OutOfRangeError, match=r"implies 8\.25e\+11 parameters"):
        GPT2Config(n_positions=2**30)
    config = GPT2Config()
    with pytest.raises(OutOfRangeError):
        config.vocab_size = 2**31
    assert config.vocab_size == 50257  # left as it was


# ----------------------------------------------------------------------------- checkpoints
INDEX_ROWS = [
    ("no-weight-map", {"metadata": {}}, "'weight_map' must be a non-empty JSON object"),
    ("weight-map-list", {"weight_map": ["model.safetensors"]}, "found array"),
    ("top-level-list", [1, 2], "must hold a JSON object"),
    ("shard-number", {"weight_map": {"wte.weight": 3}}, "same folder, found number 3"),
    ("shard-dot", {"weight_map": {"wte.weight": "./"}}, "same folder, found string './'"),
]


@pytest.mark.parametrize(
    ("index", "fragment"), [pytest.param(d, f, id=i) for i, d, f in INDEX_ROWS]
)
def test_bad_shard_index(gpt, saved, tmp_path, index, fragment):
    folder = _copy(saved, tmp_path / "ckpt")
    (folder / hf.SAFE_WEIGHTS).unlink()
    (folder / hf.SAFE_INDEX).write_text(json.dumps(index))
    with pytest.raises(MalformedFileError, match=fragment) as info:
        gpt.GPT2LMHeadModel.from_pretrained(folder)
    assert str(folder / hf.SAFE_INDEX) in str(info.value)


#: Shard names that reach outside the index's folder, on POSIX or Windows.
OUTSIDE_ROWS = [
    ("parent", "../model.safetensors"),
    ("parent-inside", "sub/../../model.safetensors"),
    ("absolute", "{saved}/model.safetensors"),  # a real checkpoint, which must not be read
    ("drive", "C:model.safetensors"),
    ("backslash", "..\\model.safetensors"),
]


@pytest.mark.parametrize("name", [pytest.param(n, id=i) for i, n in OUTSIDE_ROWS])
def test_shard_outside_the_folder_is_named(gpt, saved, tmp_path, name):
    name = name.format(saved=saved)
    folder = _copy(saved, tmp_path / "ckpt")
    (folder / hf.SAFE_WEIGHTS).unlink()
    index = folder / hf.SAFE_INDEX
    weight_map = {"wte.weight": "model.safetensors", "h.0.ln_1.weight": name}
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(MalformedFileError) as info:
        gpt.GPT2LMHeadModel.from_pretrained(folder)
    assert str(info.value) == (
        f"{index}: weight_map['h.0.ln_1.weight'] names {name!r}, outside the index's folder; "
        "a shard must be a file in the same folder (no leading '/', drive, '..' or '\\')"
    )


def test_missing_shard_names_the_index(gpt, saved, tmp_path):
    folder = _copy(saved, tmp_path / "ckpt")
    (folder / hf.SAFE_WEIGHTS).rename(folder / "model-00001-of-00002.safetensors")
    index = folder / hf.SAFE_INDEX
    weight_map = {"wte.weight": "model-00001-of-00002.safetensors",
                  "h.0.ln_1.weight": "model-00002-of-00002.safetensors"}  # fmt: skip
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(FileNotFoundError) as info:
        gpt.GPT2LMHeadModel.from_pretrained(folder)
    assert isinstance(info.value, GPT2DualError)
    message = str(info.value)
    assert message.startswith("gpt2_dual: file 'model-00002-of-00002.safetensors' not found")
    assert message.endswith(f" (named by {index})")


def test_empty_bin_is_named(saved, tmp_path):
    from gpt2_dual.pt import GPT2LMHeadModel

    folder = _copy(saved, tmp_path / "ckpt")
    (folder / hf.SAFE_WEIGHTS).unlink()
    (folder / hf.BIN_WEIGHTS).write_bytes(b"")
    with pytest.raises(MalformedFileError, match="not a readable PyTorch checkpoint") as info:
        GPT2LMHeadModel.from_pretrained(folder)
    assert str(folder / hf.BIN_WEIGHTS) in str(info.value)


def _rewrite(folder: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    state = load_file(folder / hf.SAFE_WEIGHTS)
    change(state)
    save_file(state, folder / hf.SAFE_WEIGHTS, metadata={"format": "pt"})


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "uint8"])
def test_integer_weights_refused(gpt, saved, tmp_path, dtype):
    folder = _copy(saved, tmp_path / "ckpt")

    def change(state):
        state["transformer.wte.weight"] = (state["transformer.wte.weight"] * 10).astype(dtype)

    _rewrite(folder, change)
    with pytest.raises(CheckpointError, match=r"floating-point .* wte\.weight is "):
        gpt.GPT2LMHeadModel.from_pretrained(folder)


def test_float16_weights_are_a_legitimate_cast(gpt, saved, tmp_path):
    folder = _copy(saved, tmp_path / "ckpt")
    _rewrite(folder, lambda s: s.update({k: v.astype(np.float16) for k, v in s.items()}))
    model = gpt.GPT2LMHeadModel.from_pretrained(folder, dtype="float32")
    assert model is not None


def test_integer_state_refused_by_load_canonical():
    from gpt2_dual.pt import GPT2Model
    from gpt2_dual.pt.weights import load_canonical, to_canonical

    model = GPT2Model(tiny_config())
    state = to_canonical(model)
    state["h.0.ln_1.weight"] = state["h.0.ln_1.weight"].astype(np.int64)
    before = model.h[0].ln_1.weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"h\.0\.ln_1\.weight is int64"):
        load_canonical(model, state)
    assert torch.equal(model.h[0].ln_1.weight, before)  # nothing written


def test_config_that_disagrees_is_refused_before_building(gpt, saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path / "ckpt")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "n_layer": 1000}))
    built = []
    cls = gpt.GPT2LMHeadModel
    monkeypatch.setattr(cls, "__init__", lambda *a, **k: built.append(1) or 1 / 0)
    with pytest.raises(CheckpointError, match="missing"):
        cls.from_pretrained(folder)
    assert not built


def test_shapes_that_disagree_are_refused_before_building(gpt, saved, monkeypatch):
    built = []
    cls = gpt.GPT2LMHeadModel
    monkeypatch.setattr(cls, "__init__", lambda *a, **k: built.append(1) or 1 / 0)
    with pytest.raises(CheckpointError, match=r"wpe\.weight: expected \(64, "):
        cls.from_pretrained(saved, n_positions=64)
    assert not built


@pytest.mark.parametrize(
    ("device", "fragment"),
    [("banana", "is not a torch device"), ("cuda:7", "is not on this machine")],
)
def test_device_errors(saved, device, fragment):
    from gpt2_dual.pt import GPT2LMHeadModel

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has cuda:7")
    with pytest.raises(InvalidInputError, match=fragment):
        GPT2LMHeadModel.from_pretrained(saved, device=device)
    with pytest.raises(InvalidInputError, match=fragment):
        GPT2LMHeadModel.from_pretrained(saved, device_map=device)


@pytest.mark.parametrize("size", [-5, 0, "0GB", "-1MB", "lots", "nanGB"])
def test_max_shard_size_refused(gpt, tmp_path, size):
    model = gpt.GPT2LMHeadModel(tiny_config())
    with pytest.raises(InvalidInputError, match="max_shard_size"):
        model.save_pretrained(tmp_path / "out", max_shard_size=size)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- fuzz
def _mutations(data: bytes, seed: int, count: int = 50):
    """``count`` seeded mutations: flipped bytes, truncations, and both."""
    rng = random.Random(seed)
    for n in range(count):
        out = bytearray(data)
        kind = n % 3
        if kind != 1:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
        if kind != 0:
            del out[rng.randrange(len(out)) :]
        yield bytes(out)


def _assert_named(err: BaseException, path: Path) -> None:
    assert isinstance(err, GPT2DualError), f"{type(err).__name__}: {err}"
    assert str(path) in str(err) or path.name in str(err), str(err)


@pytest.mark.parametrize("name", [hf.SAFE_WEIGHTS, "config.json"])
def test_fuzz_checkpoint_files(saved, tmp_path, name):
    from gpt2_dual.pt import GPT2LMHeadModel

    original = (saved / name).read_bytes()
    folder = _copy(saved, tmp_path / "ckpt")
    path = folder / name
    outcomes = {"loaded": 0, "refused": 0}
    for seed, data in enumerate(_mutations(original, seed=len(name))):
        path.write_bytes(data)
        try:
            GPT2LMHeadModel.from_pretrained(folder)
            outcomes["loaded"] += 1
        except Exception as err:  # noqa: BLE001 - the assertion is on the type
            if isinstance(err, CheckpointError):
                continue  # a damaged header can make a tensor misshapen: named by tensor
            _assert_named(err, path)
            outcomes["refused"] += 1
        del seed
    assert outcomes["refused"] > 0


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory) -> Path:
    from test_hostile_tokenizers import toy_files

    return toy_files(tmp_path_factory.mktemp("toy"))


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "tokenizer.json"])
@pytest.mark.parametrize("cls", [GPT2Tokenizer, GPT2TokenizerFast], ids=["python", "fast"])
def test_fuzz_tokenizer_files(toy_tokenizer, tmp_path, name, cls):
    folder = _copy(toy_tokenizer, tmp_path / "tok")
    # Each class reads the damaged file: the pair without tokenizer.json, or tokenizer.json
    # without the pair.
    drop = ["tokenizer.json"] if name != "tokenizer.json" else ["vocab.json", "merges.txt"]
    for other in drop:
        (folder / other).unlink()
    path = folder / name
    original = path.read_bytes()
    refused = 0
    for data in _mutations(original, seed=len(name)):
        path.write_bytes(data)
        try:
            cls.from_pretrained(folder)
        except Exception as err:  # noqa: BLE001 - the assertion is on the type
            _assert_named(err, path)
            refused += 1
    assert refused > 0
