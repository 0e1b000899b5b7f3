"""The weight-name table against transformers' own GPT-2 state dicts."""

from __future__ import annotations

import pytest

from cases import HEADS, tiny_config
from gpt2_dual.checkpoint import names
from gpt2_dual.heads import HEAD_SPECS

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")

CONFIGS = {
    "tiny": {},
    "cross_untied": {"add_cross_attention": True, "tie_word_embeddings": False},
    "no_summary_proj": {"summary_use_proj": False, "n_inner": None},
    "summary_hidden": {"summary_proj_to_labels": False},
}


def _hf_shapes(config, head: str) -> dict[str, tuple[int, ...]]:
    cls = getattr(transformers, HEAD_SPECS[head].class_name)
    model = cls(transformers.GPT2Config(**config.to_dict()))
    shapes = {}
    for key, tensor in model.state_dict().items():
        name = names.to_canonical_key(key)
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: the same tensor as wte, not saved by transformers
        shapes[name] = tuple(tensor.shape)
    return shapes


@pytest.mark.parametrize("changes", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("head", HEADS)
def test_table_matches_transformers_state_dict(head, changes):
    config = tiny_config(**changes)
    assert names.canonical_shapes(config, head) == _hf_shapes(config, head)


@pytest.mark.parametrize("head", HEADS)
def test_paths_are_unique_and_layouts_consistent(head):
    rows = names.params(tiny_config(add_cross_attention=True, tie_word_embeddings=False), head)
    for column in ("canonical", "pt", "tf"):
        values = [getattr(p, column) for p in rows]
        assert len(values) == len(set(values)), column
    for p in rows:
        # PyTorch keeps transformers' layouts; Keras' Dense kernels are (in, out), so only the
        # heads' nn.Linear weights (out, in) are transposed there (blocks use Conv1D (in, out)).
        matrix = p.canonical.endswith(".weight") and len(p.shape(tiny_config())) == 2
        assert p.tf_transpose == (matrix and not names.is_backbone(p.canonical)), p.canonical


@pytest.mark.parametrize(
    "key, expected",
    [
        ("transformer.h.0.attn.c_attn.weight", "h.0.attn.c_attn.weight"),
        ("h.0.attn.c_attn.weight", "h.0.attn.c_attn.weight"),
        ("lm_head.weight", "lm_head.weight"),
        ("transformer.h.3.attn.bias", None),
        ("h.11.attn.masked_bias", None),
        ("h.0.crossattention.bias", None),
        ("h.0.attn.c_attn.bias", "h.0.attn.c_attn.bias"),
        ("transformer.transformer.wte.weight", "transformer.wte.weight"),
    ],
)
def test_checkpoint_keys_map_to_canonical(key, expected):
    assert names.to_canonical_key(key) == expected


def test_backbone_and_head_rows_are_told_apart():
    assert names.is_backbone("h.0.ln_1.weight") and names.is_backbone("wte.weight")
    assert not names.is_backbone("lm_head.weight")
    assert not names.is_backbone("multiple_choice_head.summary.bias")
