"""GPT2Config: transformers' fields and defaults, config.json round trips, validation."""

from __future__ import annotations

import inspect
import json

import pytest

from gpt2_dual import PRESETS, GPT2Config
from gpt2_dual.config import ALIASES, GPT2_DEFAULTS, INHERITED_DEFAULTS

transformers = pytest.importorskip("transformers")

KNOWN = (*GPT2_DEFAULTS, *INHERITED_DEFAULTS, "num_labels", "id2label", "label2id")

# Non-default values for every field, plus keys GPT2Config does not know.
CUSTOM = dict(
    vocab_size=99, n_positions=16, n_embd=32, n_layer=2, n_head=4, n_inner=40,
    activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.05, attn_pdrop=0.2,
    layer_norm_epsilon=1e-6, initializer_range=0.01, summary_type="mean",
    summary_use_proj=False, summary_activation="tanh", summary_proj_to_labels=False,
    summary_first_dropout=0.3, scale_attn_weights=False, use_cache=False, bos_token_id=1,
    eos_token_id=2, scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True,
    add_cross_attention=True, tie_word_embeddings=False, pad_token_id=0,
    problem_type="multi_label_classification",
    id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2},
    n_ctx=16, architectures=["GPT2LMHeadModel"],
    task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}},
)  # fmt: skip


def _fields(config) -> dict:
    """The known fields of either library's config, label keys as ints."""
    out = {name: getattr(config, name) for name in KNOWN}
    out["id2label"] = {int(k): v for k, v in out["id2label"].items()}
    for key in ("n_ctx", "architectures", "task_specific_params"):
        out[key] = getattr(config, key, None)
    return out


def test_every_transformers_field_is_known():
    params = inspect.signature(transformers.GPT2Config.__init__).parameters
    gpt2_fields = {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}
    assert gpt2_fields == set(GPT2_DEFAULTS)


def test_defaults_match_transformers():
    assert _fields(GPT2Config()) == _fields(transformers.GPT2Config())


def test_aliases_match_transformers():
    ours, theirs = GPT2Config(hidden_size=64, n_head=4), transformers.GPT2Config(hidden_size=64)
    assert ours.n_embd == theirs.n_embd == 64
    for alias, name in ALIASES.items():
        assert getattr(ours, alias) == getattr(ours, name)
        assert getattr(theirs, alias) == getattr(theirs, name)
    ours.num_hidden_layers = 3
    assert ours.n_layer == 3


def test_written_by_transformers_loads_here(tmp_path):
    transformers.GPT2Config(**CUSTOM).save_pretrained(tmp_path)
    ours = GPT2Config.from_pretrained(tmp_path)
    assert _fields(ours) == _fields(transformers.GPT2Config.from_pretrained(tmp_path))
    assert ours.transformers_version == transformers.__version__  # unknown keys are kept


def test_written_here_loads_in_transformers(tmp_path):
    GPT2Config(**CUSTOM).save_pretrained(tmp_path)
    theirs = transformers.GPT2Config.from_pretrained(tmp_path)
    assert _fields(theirs) == _fields(GPT2Config(**CUSTOM))


@pytest.mark.parametrize("kwargs", [{}, CUSTOM, {"num_labels": 5}], ids=["default", "custom", "5"])
def test_json_matches_transformers_keys_and_values(kwargs):
    ours = json.loads(GPT2Config(**kwargs).to_json_string())
    theirs = json.loads(transformers.GPT2Config(**kwargs).to_json_string())
    theirs.pop("transformers_version")
    assert ours == theirs


def test_round_trip_is_lossless(tmp_path):
    config = GPT2Config(**CUSTOM)
    config.save_pretrained(tmp_path)
    assert GPT2Config.from_pretrained(tmp_path) == config
    assert GPT2Config.from_dict(config.to_dict()) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left


def test_from_pretrained_overrides(tmp_path):
    GPT2Config(n_layer=2, n_embd=32, n_head=4).save_pretrained(tmp_path)
    assert GPT2Config.from_pretrained(tmp_path, n_layer=5).n_layer == 5


def test_num_labels_rebuilds_label_maps():
    config = GPT2Config()
    config.num_labels = 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    assert transformers.GPT2Config(num_labels=3).id2label == config.id2label


def test_derived_sizes():
    config = GPT2Config(n_embd=48, n_head=6)
    assert (config.head_dim, config.inner_dim) == (8, 192)
    config.n_inner = 50
    assert config.inner_dim == 50


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name):
    config = GPT2Config.from_preset(name, vocab_size=100)
    assert {k: getattr(config, k) for k in PRESETS[name]} == PRESETS[name]
    assert config.vocab_size == 100


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(KeyError, match=r"unknown GPT-2 preset 'gpt2-small'; choose one of \["):
        GPT2Config.from_preset("gpt2-small")


INVALID = [
    ({"n_embd": 30, "n_head": 4}, "GPT2Config.n_embd=30 is invalid: must be divisible by n_head=4"),
    ({"n_layer": 0}, "GPT2Config.n_layer=0 is invalid: must be a positive integer"),
    ({"vocab_size": -5}, "GPT2Config.vocab_size=-5 is invalid: must be a positive integer"),
    ({"n_positions": 2.5}, "GPT2Config.n_positions=2.5 is invalid: must be a positive integer"),
    ({"n_head": True}, "GPT2Config.n_head=True is invalid: must be a positive integer"),
    ({"n_inner": 0}, "GPT2Config.n_inner=0 is invalid: must be a positive integer"),
    ({"layer_norm_epsilon": -1e-5}, "layer_norm_epsilon=-1e-05 is invalid: must be a number > 0"),
    ({"attn_pdrop": 1.0}, "GPT2Config.attn_pdrop=1.0 is invalid: must be a number in \\[0, 1\\)"),
    ({"resid_pdrop": -0.1}, "GPT2Config.resid_pdrop=-0.1 is invalid: must be a number in"),
    ({"activation_function": "gelu_tanh"}, "activation_function='gelu_tanh' is invalid: must be one of 'gelu', "),
    ({"summary_type": "attn"}, "summary_type='attn' is invalid: must be one of 'cls_index', 'first', "),
    ({"summary_activation": "soft"}, "summary_activation='soft' is invalid: must be None or one of"),
    ({"problem_type": "ranking"}, "problem_type='ranking' is invalid: must be None or one of"),
    ({"pad_token_id": -1}, "pad_token_id=-1 is invalid: must be None, a non-negative integer"),
    ({"use_cache": 1}, "GPT2Config.use_cache=1 is invalid: must be True or False"),
    ({"num_labels": 0}, "GPT2Config.num_labels=0 is invalid: must be a positive integer"),
    ({"id2label": {1: "a"}}, "id2label=\\{1: 'a'\\} is invalid: keys must be 0..0"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, message", INVALID, ids=[next(iter(k)) for k, _ in INVALID])
def test_invalid_values_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPT2Config(**kwargs)


def test_assignment_is_validated():
    config = GPT2Config(n_embd=32, n_head=4)
    with pytest.raises(ValueError, match="n_embd=32 is invalid: must be divisible by n_head=3"):
        config.n_head = 3
    assert config.n_head == 4  # a refused assignment leaves the config as it was
    config.pad_token_id = config.eos_token_id
    assert config.pad_token_id == 50256


def test_locked_shapes_refuse_assignment_but_allow_other_fields():
    config = GPT2Config(n_embd=32, n_head=4)
    config.lock_shapes("GPT2LMHeadModel")
    with pytest.raises(AttributeError, match=r"GPT2Config.vocab_size cannot change after a model"):
        config.vocab_size = 10
    with pytest.raises(AttributeError, match=r"GPT2Config.n_embd cannot change .*GPT2LMHeadModel"):
        config.hidden_size = 64
    with pytest.raises(AttributeError, match="id2label cannot change the number of labels"):
        config.id2label = {0: "a", 1: "b", 2: "c"}
    config.id2label = {0: "neg", 1: "pos"}
    config.pad_token_id = 0
    assert config.copy(vocab_size=10).vocab_size == 10  # a copy is unlocked


def test_malformed_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        GPT2Config.from_pretrained(tmp_path)
