"""Checkpoint errors both frameworks share (``convert/loading.py``), written once.

A transformers checkpoint (random weights) is damaged on disk, then loaded by each
framework's ``from_pretrained``: the error names the tensor, the shapes or the files looked
for, in the same words for gpt2_dual.pt and gpt2_dual.tf.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np
import pytest

from cases import tiny_config
from frameworks import has
from gpt2_dual.checkpoint import hf
from gpt2_dual.checkpoint.loading import CheckpointError
from gpt2_dual.heads import HEAD_SPECS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LOOKED_FOR = "model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json, tf_model.h5, tf_model.h5.index.json"


@pytest.fixture(
    params=[
        pytest.param("gpt2_dual.pt", id="pt"),
        pytest.param(
            "gpt2_dual.tf",
            id="tf",
            marks=pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow"),
        ),
    ]
)
def gpt(request):
    """The framework's model package (``gpt.GPT2Model`` and the other five)."""
    return importlib.import_module(request.param)


def _saved(tmp_path: Path, head: str) -> Path:
    """transformers' ``head`` model, every parameter random, saved as safetensors."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**tiny_config().to_dict())
    model = getattr(transformers, HEAD_SPECS[head].class_name)(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    model.save_pretrained(tmp_path / "src")
    return tmp_path / "src"


def _rewrite_safetensors(folder: Path, change) -> None:
    """Apply ``change`` to the dict of tensors of ``folder/model.safetensors`` and rewrite it."""
    from safetensors.numpy import load_file, save_file

    path = folder / hf.SAFE_WEIGHTS
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(gpt, tmp_path):
    folder = _saved(tmp_path, "lm")
    _rewrite_safetensors(folder, lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(CheckpointError, match=r"missing 1: h\.1\.mlp\.c_fc\.bias \(check"):
        gpt.GPT2LMHeadModel.from_pretrained(folder)


def test_misshapen_tensor_names_expected_and_found_shapes(gpt, tmp_path):
    folder = _saved(tmp_path, "base")

    def shrink(state):
        state["h.0.attn.c_proj.weight"] = state["h.0.attn.c_proj.weight"][:, :31].copy()

    _rewrite_safetensors(folder, shrink)
    with pytest.raises(
        CheckpointError, match=r"h\.0\.attn\.c_proj\.weight: expected \(32, 32\), found \(32, 31\)"
    ):
        gpt.GPT2Model.from_pretrained(folder)


def test_unexpected_tensor_is_named_unless_not_strict(gpt, tmp_path, caplog):
    folder = _saved(tmp_path, "lm")

    def add(state):
        state["transformer.h.0.attn.extra"] = np.zeros(3, dtype=np.float32)

    _rewrite_safetensors(folder, add)
    with pytest.raises(CheckpointError, match=r"unexpected 1: h\.0\.attn\.extra \(check"):
        gpt.GPT2LMHeadModel.from_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        gpt.GPT2LMHeadModel.from_pretrained(folder, strict=False)
    assert "were not used when initializing GPT2LMHeadModel: h.0.attn.extra" in caplog.text


def test_truncated_safetensors_is_refused(gpt, tmp_path):
    folder = _saved(tmp_path, "base")
    path = folder / hf.SAFE_WEIGHTS
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a valid safetensors file: "):
        gpt.GPT2Model.from_pretrained(folder)


def test_folder_without_weights_lists_files_looked_for(gpt, tmp_path):
    folder = _saved(tmp_path, "base")
    (folder / hf.SAFE_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=f"looked for {LOOKED_FOR}"):
        gpt.GPT2Model.from_pretrained(folder)
