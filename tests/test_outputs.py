"""Output types: transformers' access patterns, fields named once in HEAD_SPECS; and the other
rules ``gpt2_dual.heads`` states once for both frameworks (pooling, activation formulas, the
mistakes of a head call)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cases import tiny_config
from frameworks import PT, has
from gpt2_dual._config_checks import ACTIVATIONS
from gpt2_dual.errors import InputError, InvalidInputError
from gpt2_dual.heads import (
    ACTIVATION_FORMULAS,
    FORMULAS,
    HEAD_BY_CLASS,
    HEAD_SPECS,
    activation_formula,
    last_non_pad_index,
    multiple_choice_features,
    pool_sequence,
    summarize_tokens,
)
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


# --------------------------------------------------------------------------- heads' rules
class NumpyOps:
    """``gpt2_dual.heads.ArrayOps`` in numpy: the rules run on plain arrays."""

    positions = staticmethod(lambda ids: np.arange(ids.shape[-1], dtype=np.int32))
    not_equal = staticmethod(lambda ids, value: (ids != value).astype(np.int32))
    argmax = staticmethod(lambda values: values.argmax(-1))
    mean_tokens = staticmethod(lambda hidden: hidden.mean(-2))
    last_positions = staticmethod(lambda hidden: np.full(hidden.shape[:-2], hidden.shape[-2] - 1))

    @staticmethod
    def gather_tokens(hidden, index):
        return np.take_along_axis(hidden, index[..., None, None], axis=-2)[..., 0, :]


def test_last_non_pad_index_is_the_right_most_real_token():
    pad = 7
    ids = np.array([[1, 2, 7, 7], [7, 7, 3, 4], [5, 6, 8, 9], [7, 7, 7, 7], [7, 1, 7, 2]])
    expected = [max((i for i, t in enumerate(row) if t != pad), default=0) for row in ids]
    assert last_non_pad_index(NumpyOps, ids, pad).tolist() == expected == [1, 3, 3, 0, 3]
    hidden = np.random.default_rng(0).normal(size=(5, 4, 6))
    pooled = pool_sequence(NumpyOps, hidden, ids, pad)
    assert np.array_equal(pooled, hidden[np.arange(5), expected])
    for no_ids_or_pad in ((None, pad), (ids, None)):  # the last position
        assert np.array_equal(pool_sequence(NumpyOps, hidden, *no_ids_or_pad), hidden[:, -1])


@pytest.mark.parametrize("summary_type", ["last", "first", "mean", "cls_index"])
def test_summarize_tokens_pools_the_token_axis(summary_type):
    hidden = np.random.default_rng(1).normal(size=(2, 3, 5, 4))  # (B, N, T, C)
    cls_index = np.array([[0, 4, 2], [1, 1, 3]])
    expected = {
        "last": hidden[..., -1, :],
        "first": hidden[..., 0, :],
        "mean": hidden.mean(-2),
        "cls_index": np.stack(
            [np.stack([hidden[b, n, cls_index[b, n]] for n in range(3)]) for b in range(2)]
        ),
    }[summary_type]
    assert np.array_equal(summarize_tokens(NumpyOps, summary_type, hidden, cls_index), expected)
    default = summarize_tokens(NumpyOps, "cls_index", hidden)  # no cls_index: the last token
    assert np.array_equal(default, hidden[..., -1, :])


def test_every_config_activation_has_one_formula():
    assert set(ACTIVATION_FORMULAS) == ACTIVATIONS
    assert set(ACTIVATION_FORMULAS.values()) == set(FORMULAS)
    with pytest.raises(InvalidInputError, match=r"^unknown activation 'gelu_fancy'; choose one of \['gelu', "):
        activation_formula("gelu_fancy")


def _labels_with_logits_to_keep(fw):
    config = tiny_config()
    ids = np.ones((2, 5), np.int64)
    fw.run(fw.build("lm", config), input_ids=ids, labels=ids, logits_to_keep=1)


def _batch_without_pad_token(fw):
    config = tiny_config()
    fw.run(fw.build("sequence_classification", config), input_ids=np.ones((2, 5), np.int64))


def _unknown_activation(fw):
    import importlib

    importlib.import_module(f"gpt2_dual.{fw.name}.layers").activation("gelu_fancy")


MISTAKES = {
    "labels_with_logits_to_keep": (_labels_with_logits_to_keep, InputError),
    "batch_without_pad_token": (_batch_without_pad_token, InputError),
    "unknown_activation": (_unknown_activation, InvalidInputError),
}


@pytest.mark.skipif(not (has("torch") and has("tensorflow")), reason="needs torch and tensorflow")
@pytest.mark.parametrize("mistake", MISTAKES)
def test_the_same_mistake_raises_the_same_error_in_both_frameworks(mistake):
    from frameworks_tf import TF

    make, kind = MISTAKES[mistake]
    raised = []
    for fw in (PT, TF):
        with pytest.raises(kind) as info:
            make(fw)
        raised.append((type(info.value), str(info.value)))
    assert raised[0] == raised[1], raised
