"""Hostile inputs: every bad model input gets a gpt2_dual error naming the argument, the value
and the limit, the same class and message in every framework, and nothing is silently wrong.

One row per case: (name, heads, inputs builder, error class, message fragment). A builder gets
``(fw, model)`` and returns the keyword inputs (numpy, lists, or the framework's own cache).
The rules live in ``gpt2_dual._input_checks``.
"""

from __future__ import annotations

import numpy as np
import pytest

from cases import tiny_config
from frameworks import FRAMEWORKS, random_state
from gpt2_dual.errors import GPT2DualError, InputTypeError, InvalidInputError, OutOfRangeError

PAD = 98
_MODELS: dict = {}


def model_for(fw, head: str, n_layer: int = 2):
    key = (fw.name, head, n_layer)
    if key not in _MODELS:
        config = tiny_config(pad_token_id=PAD, n_layer=n_layer)
        _MODELS[key] = fw.build(head, config, random_state(config, head))
    return _MODELS[key]


def ids(*shape, value: int = 1) -> np.ndarray:
    return np.full(shape, value, dtype=np.int64)


def with_ids(**extra):
    return lambda fw, model: {"input_ids": ids(1, 5), **extra}


def cached(edit, **extra):
    """A real cache of 5 tokens (legacy tuple form), changed by ``edit``, then one new token."""

    def build(fw, model):
        past = fw.run(model, input_ids=ids(1, 5), use_cache=True)["past_key_values"]
        layers = [list(layer) for layer in past.to_legacy_cache()]
        return {"input_ids": ids(1, 1), "past_key_values": tuple(edit(layers)), **extra}

    return build


def _taller(layers):
    return [*layers, layers[0]]


def _ragged(layers):
    layers[1] = [t[:, :, :3] for t in layers[1]]
    return layers


BACKBONE = ("base", "lm")
ALL = ("base", "lm", "double_heads", "sequence_classification", "token_classification",
       "question_answering")  # fmt: skip
mask = np.array
CASES = [
    # silently wrong before: masks other than 0/1, negative positions, float ids, tall caches
    ("mask 2", BACKBONE, with_ids(attention_mask=mask([[0, 2, 1, 1, 1]])), InvalidInputError, "attention_mask[0, 1] = 2 is not 0 or 1"),
    ("mask -1", ALL, with_ids(attention_mask=mask([[0, -1, 1, 1, 1]])), InvalidInputError, "attention_mask[0, 1] = -1 is not 0 or 1"),
    ("mask 0.5", ("lm",), with_ids(attention_mask=mask([[1.0, 0.5, 1, 1, 1]], np.float32)), InvalidInputError, "attention_mask[0, 1] = 0.5 is not 0 or 1"),
    ("position -1", ALL, with_ids(position_ids=mask([[0, 1, -1, 3, 4]])), OutOfRangeError, "position_ids[0, 2] = -1 is out of range: positions must be in [0, n_positions=24)"),
    ("position 24", BACKBONE, with_ids(position_ids=mask([[0, 1, 2, 3, 24]])), OutOfRangeError, "position_ids[0, 4] = 24 is out of range"),
    ("float ids", ALL, lambda fw, m: {"input_ids": mask([[5.5, 1.0]])}, InputTypeError, "input_ids must hold integers; got dtype float"),
    ("float id list", ("lm",), lambda fw, m: {"input_ids": [[5.5, 1.0]]}, InputTypeError, "input_ids must hold integers; got dtype float"),
    ("too many layers", ("lm",), cached(_taller), InvalidInputError, "past_key_values has 3 layers; the model has n_layer=2"),
    # ids
    ("string ids", BACKBONE, lambda fw, m: {"input_ids": "hello world"}, InputTypeError, "input_ids must be a tensor, a numpy array or a nested list of numbers; got str"),
    ("ragged list", ("lm",), lambda fw, m: {"input_ids": [[1, 2], [3]]}, InvalidInputError, "input_ids is not a rectangular array"),
    ("bool ids", ("lm",), lambda fw, m: {"input_ids": mask([[True, False]])}, InputTypeError, "input_ids must hold integers; got dtype bool"),
    ("0-d ids", BACKBONE, lambda fw, m: {"input_ids": 5}, InvalidInputError, "input_ids has shape (); expected (batch, tokens)"),
    ("1-d ids", ALL, lambda fw, m: {"input_ids": ids(5)}, InvalidInputError, "input_ids has shape (5,); expected (batch, tokens)"),
    ("4-d ids", ("lm",), lambda fw, m: {"input_ids": ids(1, 1, 1, 3)}, InvalidInputError, "input_ids has shape (1, 1, 1, 3); expected (batch, tokens) or (batch, choices, tokens)"),
    ("3-d ids, sequence classification", ("sequence_classification",), lambda fw, m: {"input_ids": ids(1, 2, 3)}, InvalidInputError, "input_ids has shape (1, 2, 3); expected (batch, tokens)"),
    ("no tokens", BACKBONE, lambda fw, m: {"input_ids": ids(1, 0)}, InvalidInputError, "input_ids has shape (1, 0): it needs at least one row and one token"),
    ("id = vocab_size", ALL, lambda fw, m: {"input_ids": mask([[1, 99, 2]])}, OutOfRangeError, "input_ids[0, 1] = 99 is out of range: ids must be in [0, vocab_size=99)"),
    ("negative id", BACKBONE, lambda fw, m: {"input_ids": mask([[1, -4, 2]])}, OutOfRangeError, "input_ids[0, 1] = -4 is out of range"),
    ("too long", ALL, lambda fw, m: {"input_ids": ids(1, 25)}, OutOfRangeError, "sequence length 25 (0 cached + 25 new tokens) exceeds n_positions=24"),
    ("too long with cache", ("lm",), cached(lambda layers: layers, input_ids=ids(1, 20)), OutOfRangeError, "sequence length 25 (5 cached + 20 new tokens) exceeds n_positions=24"),
    ("token type 99", ALL, with_ids(token_type_ids=mask([[0, 0, 99, 0, 0]])), OutOfRangeError, "token_type_ids[0, 2] = 99 is out of range: ids must be in [0, vocab_size=99)"),
    ("token type -1", BACKBONE, with_ids(token_type_ids=mask([[0, 0, -1, 0, 0]])), OutOfRangeError, "token_type_ids[0, 2] = -1"),
    ("token type shape", BACKBONE, with_ids(token_type_ids=ids(1, 4, value=0)), InvalidInputError, "token_type_ids has shape (1, 4); expected (1, 5)"),
    ("token type float", ("lm",), with_ids(token_type_ids=np.zeros((1, 5), np.float32)), InputTypeError, "token_type_ids must hold integers; got dtype float32"),
    ("position shape", BACKBONE, with_ids(position_ids=ids(2, 5, value=0)), InvalidInputError, "position_ids has shape (2, 5); expected (1, 5) or (5,)"),
    ("mask rank", BACKBONE, with_ids(attention_mask=ids(5)), InvalidInputError, "attention_mask has shape (5,); expected 2 axes"),
    ("mask length", ("lm",), with_ids(attention_mask=ids(1, 4)), InvalidInputError, "attention_mask has shape (1, 4); expected (1, 5)"),
    ("mask strings", ("lm",), with_ids(attention_mask=[["a"] * 5]), InputTypeError, "attention_mask must hold numbers; got dtype <U1"),
    ("embeds last axis", ALL, lambda fw, m: {"inputs_embeds": np.zeros((1, 3, 31), np.float32)}, InvalidInputError, "inputs_embeds has shape (1, 3, 31); its last axis must be n_embd=32"),
    ("int embeds", BACKBONE, lambda fw, m: {"inputs_embeds": np.zeros((1, 3, 32), np.int64)}, InputTypeError, "inputs_embeds must hold floats; got dtype int"),
    ("ids and embeds", ALL, lambda fw, m: {"input_ids": ids(1, 3), "inputs_embeds": np.zeros((1, 3, 32), np.float32)}, InvalidInputError, "You cannot specify both input_ids and inputs_embeds at the same time"),
    ("neither", ALL, lambda fw, m: {}, InvalidInputError, "You have to specify either input_ids or inputs_embeds"),
    # labels
    ("lm labels shape", ("lm", "token_classification"), with_ids(labels=ids(1, 4)), InvalidInputError, "labels has shape (1, 4); expected (1, 5)"),
    ("lm labels 99", ("lm",), with_ids(labels=mask([[1, 99, -100, 1, 1]])), OutOfRangeError, "labels[0, 1] = 99 is out of range: labels must be in [0, vocab_size=99) or -100"),
    ("lm labels -5", ("lm",), with_ids(labels=mask([[1, -5, 1, 1, 1]])), OutOfRangeError, "labels[0, 1] = -5 is out of range"),
    ("lm labels float", ("lm",), with_ids(labels=np.ones((1, 5), np.float32)), InputTypeError, "labels must hold integers; got dtype float32"),
    ("token labels 3", ("token_classification",), with_ids(labels=mask([[0, 1, 2, 3, -100]])), OutOfRangeError, "labels[0, 3] = 3 is out of range: labels must be in [0, num_labels=3) or -100"),
    ("class label 3", ("sequence_classification",), with_ids(labels=mask([3])), OutOfRangeError, "labels[0] = 3 is out of range: labels must be in [0, num_labels=3) or -100"),
    ("class label shape", ("sequence_classification",), with_ids(labels=mask([0, 1])), InvalidInputError, "labels has shape (2,); expected (1,) or (1, 1)"),
    ("multi-label shape", ("sequence_classification",), with_ids(labels=np.ones((1,), np.float32)), InvalidInputError, "labels has shape (1,); expected (1, 3) (problem_type=multi_label_classification)"),
    ("span positions shape", ("question_answering",), with_ids(start_positions=mask([1, 2]), end_positions=mask([1, 2])), InvalidInputError, "start_positions has shape (2,); expected (1,) or (1, 1)"),
    # multiple choice
    ("mc_token_ids past T", ("double_heads",), lambda fw, m: {"input_ids": ids(1, 2, 5), "mc_token_ids": mask([[1, 5]])}, OutOfRangeError, "mc_token_ids[0, 1] = 5 is out of range: indices must be in [0, tokens=5)"),
    ("mc_token_ids -1", ("double_heads",), lambda fw, m: {"input_ids": ids(1, 2, 5), "mc_token_ids": mask([[-1, 4]])}, OutOfRangeError, "mc_token_ids[0, 0] = -1"),
    ("mc_token_ids shape", ("double_heads",), lambda fw, m: {"input_ids": ids(1, 2, 5), "mc_token_ids": mask([[1, 2, 3]])}, InvalidInputError, "mc_token_ids has shape (1, 3); expected (1, 2)"),
    ("mc_labels 2", ("double_heads",), lambda fw, m: {"input_ids": ids(1, 2, 5), "mc_labels": mask([2])}, OutOfRangeError, "mc_labels[0] = 2 is out of range: choices must be in [0, choices=2) or -100"),
    # caches
    ("too few layers", ("lm",), cached(lambda layers: layers[:1]), InvalidInputError, "past_key_values has 1 layers; the model has n_layer=2"),
    ("ragged cache", ("lm", "base"), cached(_ragged), InvalidInputError, "past_key_values is ragged: layer 1 key caches 3 positions, layer 0 key caches 5"),
    ("cache batch", ("lm",), cached(lambda layers: layers, input_ids=ids(2, 1)), InvalidInputError, "past_key_values layer 0 key has shape (1, 4, 5, 8); expected (batch=2, n_head=4, cached, head_dim=8)"),
    ("cache heads", ("lm",), cached(lambda layers: [[t[:, :2] for t in layer] for layer in layers]), InvalidInputError, "past_key_values layer 0 key has shape (1, 2, 5, 8)"),
    ("cache head size", ("lm",), cached(lambda layers: [[t[..., :4] for t in layer] for layer in layers]), InvalidInputError, "past_key_values layer 0 key has shape (1, 4, 5, 4)"),
    ("cache layer not a pair", ("lm",), cached(lambda layers: [layer[:1] for layer in layers]), InvalidInputError, "a legacy cache holds (key, value) per layer; found 1 tensor(s)"),
    ("cache of the wrong type", ("lm",), with_ids(past_key_values="cache"), InputTypeError, "past_key_values must be a DynamicCache, a StaticCache or a tuple"),
]  # fmt: skip

ROWS = [
    pytest.param(head, build, error, fragment, id=f"{name}-{head}")
    for name, heads, build, error, fragment in CASES
    for head in heads
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("head", "build", "error", "fragment"), ROWS)
def test_hostile_input_is_a_gpt2_dual_error(fw, head, build, error, fragment):
    model = model_for(fw, head)
    inputs = build(fw, model)
    with pytest.raises(error) as info:
        fw.run(model, **inputs)
    assert isinstance(info.value, GPT2DualError)
    assert fragment in str(info.value), str(info.value)


ACCEPTED = [
    ("bool mask", "lm", with_ids(attention_mask=np.array([[False, True, True, True, True]]))),
    ("float 0/1 mask", "lm", with_ids(attention_mask=np.array([[0.0, 1, 1, 1, 1]], np.float32))),
    ("ignored labels", "lm", with_ids(labels=np.array([[-100, 1, 2, -100, 4]]))),
    ("list ids", "lm", lambda fw, m: {"input_ids": [[1, 2, 3]]}),
    ("broadcast positions", "base", with_ids(position_ids=np.arange(5))),
    ("regression labels", "sequence_classification", with_ids(labels=np.array([[0.5, 1.0, 2.0]], np.float32))),
    ("negative span position (clamped to 0)", "question_answering", with_ids(start_positions=np.array([-3]), end_positions=np.array([2]))),
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("name", "head", "build"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_valid_edge_inputs_still_run(fw, name, head, build):
    model = model_for(fw, head)
    out = fw.run(model, **build(fw, model))
    assert all(np.all(np.isfinite(v)) for k, v in out.items() if k not in ("past_key_values",) and not isinstance(v, tuple))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bool_mask_equals_int_mask(fw):
    model = model_for(fw, "lm")
    x = ids(1, 5)
    m = np.array([[0, 1, 1, 1, 1]])
    a = fw.run(model, input_ids=x, attention_mask=m)["logits"]
    b = fw.run(model, input_ids=x, attention_mask=m.astype(bool))["logits"]
    np.testing.assert_array_equal(a, b)
