"""Output types: transformers' access patterns, fields named once in HEAD_SPECS."""

from __future__ import annotations

import dataclasses

import pytest

from cases import tiny_config
from gpt2_dual.heads import HEAD_BY_CLASS, HEAD_SPECS, multiple_choice_features
from gpt2_dual.outputs import OUTPUT_TYPES, CausalLMOutput, as_output


def test_access_like_transformers():
    out = CausalLMOutput(logits="L", hidden_states=("h0", "h1"))
    assert out.logits == out["logits"] == out[0] == "L"
    assert out[1] == ("h0", "h1")  # None fields are skipped, as in transformers
    assert out.keys() == ["logits", "hidden_states"] and len(out) == 2
    assert out.to_tuple() == ("L", ("h0", "h1"))
    assert "loss" not in out
    with pytest.raises(KeyError, match="CausalLMOutput has no field 'loss' set"):
        out["loss"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.logits = "other"


@pytest.mark.parametrize("head", HEAD_SPECS)
def test_spec_outputs_are_fields_of_the_output_type(head):
    fields = [f.name for f in dataclasses.fields(OUTPUT_TYPES[head])]
    assert set(HEAD_SPECS[head].outputs) <= set(fields)
    assert HEAD_BY_CLASS[HEAD_SPECS[head].class_name] == head


def test_as_output_wraps_and_rejects_unknown_keys():
    assert as_output("question_answering", {"start_logits": 1, "end_logits": 2})[1] == 2
    with pytest.raises(KeyError, match=r"QuestionAnsweringModelOutput has no fields \['logits'\]"):
        as_output("question_answering", {"logits": 1})


@pytest.mark.parametrize(
    "changes",
    [{}, {"summary_proj_to_labels": False}, {"summary_use_proj": False}, {"num_labels": 5}],
)
def test_multiple_choice_features_match_transformers(changes):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    config = tiny_config(**changes)
    model = transformers.GPT2DoubleHeadsModel(transformers.GPT2Config(**config.to_dict()))
    summary = model.multiple_choice_head.summary
    expected = summary.out_features if hasattr(summary, "out_features") else config.n_embd
    assert multiple_choice_features(config) == expected
    assert config.num_labels == (5 if changes.get("num_labels") else 3)  # ours never mutated
