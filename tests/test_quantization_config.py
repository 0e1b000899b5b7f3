"""``gpt2_dual.BitsAndBytesConfig`` against transformers' own: fields, defaults, JSON, checks.

The neutral config imports no framework; transformers (with torch) is the reference for the
dicts and JSON it writes into ``config.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpt2_dual import BitsAndBytesConfig, GPT2Config
from gpt2_dual.errors import InputTypeError, InvalidInputError
from gpt2_dual.quantization import as_quantization_config, is_skipped

SETTINGS = [
    {},
    {"load_in_8bit": True},
    {"load_in_8bit": True, "llm_int8_threshold": 4.5, "llm_int8_skip_modules": ["score"]},
    {"load_in_4bit": True},
    {
        "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float16",
        "bnb_4bit_use_double_quant": True,
    },
    {"load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "bfloat16"},
]  # fmt: skip


def _theirs(**kwargs):
    transformers = pytest.importorskip("transformers")
    return transformers.BitsAndBytesConfig(**kwargs)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(s) or "default")
def test_dicts_and_json_equal_transformers(settings):
    ours, theirs = BitsAndBytesConfig(**settings), _theirs(**settings)
    assert ours.to_dict() == theirs.to_dict()
    assert list(ours.to_dict()) == list(theirs.to_dict())
    assert ours.to_json_string(use_diff=False) == theirs.to_json_string(use_diff=False)
    assert ours.to_json_string() == theirs.to_json_string()
    assert ours.quantization_method() == theirs.quantization_method()
    assert ours.is_quantizable() == bool(theirs.is_quantizable())


@pytest.mark.parametrize("settings", SETTINGS[1:], ids=lambda s: ",".join(s))
def test_transformers_json_and_object_read_back(settings):
    theirs = _theirs(**settings)
    from_json = BitsAndBytesConfig.from_dict(json.loads(theirs.to_json_string(use_diff=False)))
    assert from_json == BitsAndBytesConfig(**settings)
    assert as_quantization_config(theirs) == from_json  # transformers' object, via to_dict()
    assert as_quantization_config(theirs.to_dict()) == from_json


def test_torch_dtypes_are_kept_by_name():
    torch = pytest.importorskip("torch")
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    assert config.bnb_4bit_compute_dtype == "bfloat16"
    assert config == BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="bfloat16")


def test_from_dict_overrides_and_unused_kwargs():
    config, unused = BitsAndBytesConfig.from_dict(
        {"load_in_4bit": True}, return_unused_kwargs=True, bnb_4bit_quant_type="nf4", foo=1
    )
    assert config.bnb_4bit_quant_type == "nf4" and unused == {"foo": 1}


ERRORS = [
    (dict(load_in_4bit=True, load_in_8bit=True), InvalidInputError,
     "BitsAndBytesConfig: load_in_4bit and load_in_8bit are both True, but only one can be used "
     "at the same time"),
    (dict(bnb_4bit_quant_type="int4"), InvalidInputError,
     "BitsAndBytesConfig.bnb_4bit_quant_type='int4' is not a bitsandbytes 4-bit type; use 'nf4' "
     "or 'fp4'"),
    (dict(bnb_4bit_compute_dtype="float64"), InvalidInputError,
     "BitsAndBytesConfig.bnb_4bit_compute_dtype='float64' is not allowed; use one of 'float32', "
     "'float16', 'bfloat16'"),
    (dict(bnb_4bit_compute_dtype=16), InputTypeError,
     "BitsAndBytesConfig.bnb_4bit_compute_dtype must be a dtype name or a torch.dtype, got int 16"),
    (dict(bnb_4bit_quant_storage="int4"), InvalidInputError,
     "BitsAndBytesConfig.bnb_4bit_quant_storage='int4' is not allowed; use one of 'float16', "
     "'float32', 'int8', 'uint8', 'float64', 'bfloat16'"),
    (dict(load_in_4bit=1), InputTypeError,
     "BitsAndBytesConfig.load_in_4bit must be a bool, got int 1"),
    (dict(llm_int8_threshold="6"), InputTypeError,
     "BitsAndBytesConfig.llm_int8_threshold must be a number, got str '6'"),
    (dict(llm_int8_threshold=-1.0), InvalidInputError,
     "BitsAndBytesConfig.llm_int8_threshold=-1.0 must be >= 0 (0 turns the outlier decomposition "
     "off)"),
    (dict(llm_int8_skip_modules="lm_head"), InputTypeError,
     "BitsAndBytesConfig.llm_int8_skip_modules must be None or a list of module names, got str "
     "'lm_head'"),
    (dict(llm_int8_skip_modules=["lm_head", 3]), InputTypeError,
     "BitsAndBytesConfig.llm_int8_skip_modules must hold module names (str), got 3"),
    (dict(quant_method="gptq"), InvalidInputError,
     "quantization_config has quant_method='gptq'; gpt2_dual supports 'bitsandbytes' only"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, error, message", ERRORS, ids=lambda v: str(v)[:30])
def test_invalid_values_raise_exact_errors(kwargs, error, message):
    with pytest.raises(error) as info:
        BitsAndBytesConfig(**kwargs)
    assert str(info.value) == message


def test_assignment_is_checked_and_undone_on_error():
    config = BitsAndBytesConfig(load_in_8bit=True)
    with pytest.raises(InvalidInputError, match="both True"):
        config.load_in_4bit = True
    assert (config.load_in_4bit, config.load_in_8bit) == (False, True)
    config.load_in_8bit = False
    config.load_in_4bit = True
    assert config.quantization_method() == "fp4"
    with pytest.raises(AttributeError, match="has no field 'load_in_2bit'"):
        config.load_in_2bit = True


def test_gpt2_config_round_trips_quantization_config(tmp_path):
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True
    )
    config = GPT2Config(n_layer=2, quantization_config=quantization)
    assert config.quantization_config == quantization
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["quantization_config"] == quantization.to_dict()
    back = GPT2Config.from_pretrained(tmp_path)
    assert isinstance(back.quantization_config, BitsAndBytesConfig)
    assert back.quantization_config == quantization and back == config
    config.quantization_config = {"load_in_8bit": True}  # a dict is read as a config
    assert config.quantization_config == BitsAndBytesConfig(load_in_8bit=True)


def test_gpt2_config_json_equals_transformers():
    transformers = pytest.importorskip("transformers")
    settings = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16")
    ours = GPT2Config(n_layer=2, quantization_config=BitsAndBytesConfig(**settings))
    theirs = transformers.GPT2Config(
        n_layer=2, quantization_config=transformers.BitsAndBytesConfig(**settings)
    )
    assert (
        json.loads(ours.to_json_string())["quantization_config"]
        == json.loads(theirs.to_json_string())["quantization_config"]
    )


@pytest.mark.parametrize(
    "path, skip, expected",
    [
        ("transformer.h.0.mlp.c_fc", ["c_fc"], True),  # attribute name
        ("transformer.h.0.mlp.c_fc", ["mlp"], True),  # a module above it
        ("transformer.h.1.attn.c_attn", ["transformer.h.1"], True),
        ("transformer.h.11.attn.c_attn", ["transformer.h.1"], False),  # not a prefix of a part
        ("transformer.h.0.attn.c_attn", ["transformer.h.0.attn.c_attn"], True),  # the path
        ("transformer.h.0.attn.c_proj", ["c_fc", "lm_head"], False),
    ],
)
def test_skip_rule_is_transformers(path, skip, expected):
    assert is_skipped(path, skip) is expected


def test_neutral_module_imports_no_framework():
    check = (
        "import gpt2_dual.quantization, sys; "
        "print([m for m in ('torch', 'tensorflow', 'bitsandbytes') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
