"""Reading and writing transformers-format safetensors checkpoints, framework-free."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpt2_dual._io import atomic_write
from gpt2_dual.checkpoint.hf import (
    SAFE_INDEX,
    SAFE_WEIGHTS,
    SafetensorsReader,
    find_checkpoint,
    parse_size,
    save_safetensors,
)


def _state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "transformer.wte.weight": rng.standard_normal((11, 8), dtype=np.float32),
        "transformer.h.0.attn.c_attn.weight": rng.standard_normal((8, 24), dtype=np.float32),
        "transformer.h.0.attn.bias": np.tril(np.ones((1, 1, 5, 5), dtype=bool)),
        "lm_head.weight": rng.standard_normal((11, 8), dtype=np.float32),
    }


def test_single_file_round_trip_with_canonical_keys(tmp_path):
    state = _state(np.random.default_rng(0))
    files = save_safetensors(state, tmp_path)
    assert [f.name for f in files] == [SAFE_WEIGHTS]
    checkpoint = find_checkpoint(tmp_path)
    assert checkpoint.format == "safetensors"
    reader = SafetensorsReader(checkpoint.files)
    assert sorted(reader.keys()) == ["h.0.attn.c_attn.weight", "lm_head.weight", "wte.weight"]
    assert reader.ignored == ["transformer.h.0.attn.bias"]
    assert reader.shape("h.0.attn.c_attn.weight") == (8, 24)
    assert reader.dtype("wte.weight") == "F32"
    for name, array in reader.items():
        key = name if name == "lm_head.weight" else "transformer." + name
        np.testing.assert_array_equal(array, state[key])


def test_sharded_round_trip_and_index(tmp_path):
    state = _state(np.random.default_rng(1))
    files = save_safetensors(state, tmp_path, max_shard_size=400)
    shards = [f for f in files if f.name != SAFE_INDEX]
    assert len(shards) > 1
    index = json.loads((tmp_path / SAFE_INDEX).read_text())
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in state.values())
    reader = SafetensorsReader(find_checkpoint(tmp_path).files)
    np.testing.assert_array_equal(reader["wte.weight"], state["transformer.wte.weight"])


def test_resaving_unsharded_removes_stale_shards(tmp_path):
    state = _state(np.random.default_rng(2))
    save_safetensors(state, tmp_path, max_shard_size=400)
    save_safetensors(state, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SAFE_WEIGHTS]


def test_duplicate_canonical_key_is_refused(tmp_path):
    w = np.zeros((2, 2), dtype=np.float32)
    save_safetensors({"wte.weight": w, "transformer.wte.weight": w}, tmp_path)
    with pytest.raises(ValueError, match="checkpoint holds 'wte.weight' twice"):
        SafetensorsReader(find_checkpoint(tmp_path).files)


def test_failed_write_leaves_no_partial_file(tmp_path):
    good = {"wte.weight": np.zeros((2, 2), dtype=np.float32)}
    save_safetensors(good, tmp_path)
    before = (tmp_path / SAFE_WEIGHTS).read_bytes()

    def write_then_fail(f):
        f.write(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / SAFE_WEIGHTS, write_then_fail)
    assert (tmp_path / SAFE_WEIGHTS).read_bytes() == before
    assert os.listdir(tmp_path) == [SAFE_WEIGHTS]


def test_folder_without_weights_lists_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"looked for model.safetensors, .* tf_model\.h5\.index\.json$"):
        find_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "size, expected",
    [(123, 123), ("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("10KiB", 10240), ("77", 77)],
)
def test_parse_size(size, expected):
    assert parse_size(size) == expected


def test_parse_size_rejects_nonsense():
    with pytest.raises(ValueError, match="max_shard_size='five' is not a size like 5GB"):
        parse_size("five")


def test_truncated_file_is_named_in_the_error(tmp_path):
    save_safetensors({"wte.weight": np.zeros((4, 4), dtype=np.float32)}, tmp_path)
    path = tmp_path / SAFE_WEIGHTS
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match=r"model.safetensors is not a valid safetensors file"):
        SafetensorsReader([path])
