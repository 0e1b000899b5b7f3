"""Hostile tokenizer files and inputs: typed gpt2_dual errors naming the file, in both classes.

Each row damages one file of a small byte-level BPE (256 byte tokens, a few merges) saved by
``GPT2TokenizerFast.save_pretrained``, then loads it with each class. Decoding and encoding
rows feed hostile values to both classes. Property tests (hypothesis) check the round trip
and that both classes give the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_dual import GPT2Tokenizer, GPT2TokenizerFast
from gpt2_dual.errors import (
    GPT2DualError,
    InputTypeError,
    InvalidInputError,
    MalformedFileError,
    OutOfRangeError,
)
from gpt2_dual.tokenizer.vocab import BYTE_ENCODER

CLASSES = [pytest.param(GPT2Tokenizer, id="python"), pytest.param(GPT2TokenizerFast, id="fast")]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("ll", "o"), ("H", "e")]


def toy_files(folder: Path) -> Path:
    """A small GPT-2 style tokenizer (every byte, six merges, ``<|endoftext|>``) saved with
    all of transformers' files."""
    vocab = {BYTE_ENCODER[b]: n for n, b in enumerate(sorted(BYTE_ENCODER))}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in MERGES)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    GPT2TokenizerFast.from_pretrained(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return toy_files(tmp_path_factory.mktemp("toy"))


def _edit_json(name, change):
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text("utf-8")))), "utf-8")

    return edit


def _write(name, data: bytes | str):
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))

    return edit


def _remove(*names):
    def edit(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return edit


def _set_model(key, value):
    def change(data):
        data["model"][key] = value
        return data

    return change


# (id, damage, file named in the message, message fragment). Rows touching vocab.json or
# merges.txt remove tokenizer.json first, and rows touching tokenizer.json remove the pair,
# so both classes read the damaged file.
PAIR = _remove("tokenizer.json")
JSON = _remove("vocab.json", "merges.txt")
FILE_ROWS = [
    ("vocab-not-utf8", [PAIR, _write("vocab.json", b'{"a": 1, "\xff": 2}')], "vocab.json",
     "not UTF-8"),
    ("vocab-invalid-json", [PAIR, _write("vocab.json", '{"a": 1,')], "vocab.json",
     "not valid JSON"),
    ("vocab-deep", [PAIR, _write("vocab.json", "[" * 50_000)], "vocab.json", "nests JSON"),
    ("vocab-list", [PAIR, _write("vocab.json", "[1, 2]")], "vocab.json", "JSON object"),
    ("vocab-string-id", [PAIR, _edit_json("vocab.json", lambda v: {**v, "Ġt": "3"})],
     "vocab.json", "ids must be integers"),
    ("vocab-negative-id", [PAIR, _edit_json("vocab.json", lambda v: {**v, "Ġt": -1})],
     "vocab.json", "ids must be integers"),
    ("vocab-huge-id", [PAIR, _edit_json("vocab.json", lambda v: {**v, "Ġt": 2**40})],
     "vocab.json", "ids must be integers"),
    ("merges-not-utf8", [PAIR, _write("merges.txt", b"#version: 0.2\n\xc3 t\n")], "merges.txt",
     "not UTF-8"),
    ("merges-three-parts", [PAIR, _write("merges.txt", "#version: 0.2\nĠ t x\n")],
     "merges.txt", "expected two tokens"),
    ("merges-unknown-token", [PAIR, _write("merges.txt", "#version: 0.2\nĠ zz\n")],
     "merges.txt", ""),
    ("tokenizer-json-invalid", [JSON, _write("tokenizer.json", "{")], "tokenizer.json",
     "not valid JSON"),
    ("tokenizer-json-list", [JSON, _write("tokenizer.json", "[]")], "tokenizer.json", "JSON object"),
    ("tokenizer-json-deep", [JSON, _write("tokenizer.json", '{"a":' * 50_000)], "tokenizer.json",
     "nests JSON"),
    ("tokenizer-json-no-model", [JSON, _edit_json("tokenizer.json", lambda d: {**d, "model": 3})],
     "tokenizer.json", "'model' must be a JSON object"),
    ("tokenizer-json-vocab-list", [JSON, _edit_json("tokenizer.json", _set_model("vocab", [1]))],
     "tokenizer.json", "vocabulary must be a JSON object"),
    ("tokenizer-json-merges-object", [JSON, _edit_json("tokenizer.json", _set_model("merges", {}))],
     "tokenizer.json", "merges must be an array"),
    ("tokenizer-json-wordpiece", [JSON, _edit_json("tokenizer.json", _set_model("type", "WordPiece"))],
     "tokenizer.json", "expected a BPE model"),
    ("tokenizer-json-added-bad",
     [JSON, _edit_json("tokenizer.json", lambda d: {**d, "added_tokens": [{"id": "x"}]})],
     "tokenizer.json", "added_tokens[0]"),
    ("config-list", [_write("tokenizer_config.json", "[]")], "tokenizer_config.json",
     "JSON object"),
    ("config-not-utf8", [_write("tokenizer_config.json", b'{"errors": "\xfe"}')],
     "tokenizer_config.json", "not UTF-8"),
    ("config-max-length-string",
     [_edit_json("tokenizer_config.json", lambda d: {**d, "model_max_length": "lots"})],
     "tokenizer_config.json", "'model_max_length' must be int or float, found 'lots'"),
    ("config-max-length-negative",
     [_edit_json("tokenizer_config.json", lambda d: {**d, "model_max_length": -3})],
     "tokenizer_config.json", "must be a positive number"),
    ("config-prefix-space-string",
     [_edit_json("tokenizer_config.json", lambda d: {**d, "add_prefix_space": "yes"})],
     "tokenizer_config.json", "'add_prefix_space' must be bool"),
    ("config-eos-number",
     [_edit_json("tokenizer_config.json", lambda d: {**d, "eos_token": 7})],
     "tokenizer_config.json", "'eos_token' must be str or dict"),
    ("config-padding-side",
     [_edit_json("tokenizer_config.json", lambda d: {**d, "padding_side": "middle"})],
     "tokenizer_config.json", "padding_side must be 'left' or 'right'"),
    ("config-added-decoder-key",
     [_edit_json("tokenizer_config.json",
                 lambda d: {**d, "added_tokens_decoder": {"x": {"content": "a"}}})],
     "tokenizer_config.json", "is not a token id"),
    ("special-map-list",
     [_edit_json("tokenizer_config.json",
                 lambda d: {k: v for k, v in d.items() if k != "added_tokens_decoder"}),
      _write("special_tokens_map.json", "[]")],
     "special_tokens_map.json", "JSON object"),
]  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("damage", "file", "fragment"),
    [pytest.param(d, f, m, id=i) for i, d, f, m in FILE_ROWS],
)
def test_malformed_file_is_named(cls, toy, tmp_path, damage, file, fragment):
    folder = tmp_path / "tok"
    folder.mkdir()
    for path in toy.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    for step in damage:
        step(folder)
    with pytest.raises(MalformedFileError) as info:
        cls.from_pretrained(folder)
    assert str(folder / file) in str(info.value)
    assert fragment in str(info.value)


INPUT_ROWS = [
    ("decode-none", lambda t: t.decode(None), InputTypeError, "decode expects token ids"),
    ("decode-str", lambda t: t.decode("hi"), InputTypeError, "decode expects token ids"),
    ("decode-bytes", lambda t: t.decode(b"hi"), InputTypeError, "decode expects token ids"),
    ("decode-float", lambda t: t.decode([1.5]), InputTypeError, "id 0 is float"),
    ("decode-float-near-id", lambda t: t.decode([72, 262.9]), InputTypeError, "id 1 is float"),
    ("decode-integral-float", lambda t: t.decode([72.0]), InputTypeError, "id 0 is float"),
    ("decode-bool", lambda t: t.decode([True]), InputTypeError, "id 0 is bool"),
    ("decode-float-array", lambda t: t.decode(__import__("numpy").array([1.0])), InputTypeError,
     "must be integers"),
    ("decode-object", lambda t: t.decode(object()), InputTypeError, "decode expects token ids"),
    ("decode-past-vocab", lambda t: t.decode([10**6]), OutOfRangeError, "not in the vocabulary"),
    ("decode-negative", lambda t: t.decode([-1]), OutOfRangeError, "not in the vocabulary"),
    ("decode-batch", lambda t: t.decode([[1, 2]]), InvalidInputError, "batch_decode"),
    ("batch-decode-float", lambda t: t.batch_decode([[1.5]]), InputTypeError, "id 0 is float"),
    ("ids-to-tokens-float", lambda t: t.convert_ids_to_tokens([2.5]), InputTypeError,
     "must be integers"),
    ("encode-surrogate", lambda t: t.encode("a\ud800b"), InvalidInputError,
     "position 1 holds a lone surrogate U+D800"),
    ("call-surrogate", lambda t: t(["ok", "\udc00"]), InvalidInputError,
     "text 1, position 0 holds a lone surrogate U+DC00"),
    ("tokenize-surrogate", lambda t: t.tokenize("x\udfff"), InvalidInputError,
     "lone surrogate U+DFFF"),
]  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("call", "error", "fragment"), [pytest.param(c, e, m, id=i) for i, c, e, m in INPUT_ROWS]
)
def test_hostile_input_error(cls, toy, call, error, fragment):
    tokenizer = cls.from_pretrained(toy)
    with pytest.raises(error) as info:
        call(tokenizer)
    assert fragment in str(info.value)
    assert isinstance(info.value, GPT2DualError)


@pytest.mark.parametrize("cls", CLASSES)
def test_integer_ids_still_decode(cls, toy):
    import numpy as np

    tokenizer = cls.from_pretrained(toy)
    ids = tokenizer.encode(" the hello")
    text = tokenizer.decode(ids)
    assert tokenizer.decode(np.array(ids, dtype=np.int32)) == text
    assert tokenizer.decode([np.int64(i) for i in ids]) == text
    assert tokenizer.decode(ids[0]) == tokenizer.decode(ids[:1])


# ----------------------------------------------------------------------------- properties
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def pair(toy):
    return GPT2Tokenizer.from_pretrained(toy), GPT2TokenizerFast.from_pretrained(toy)


@_SETTINGS
@given(text=_TEXT)
def test_round_trip_and_same_ids(pair, text):
    slow, fast = pair
    ids = slow.encode(text)
    assert fast.encode(text) == ids
    assert slow.decode(ids) == text
    assert fast.decode(ids) == text


@pytest.fixture(scope="module")
def gpt2_pair():
    return GPT2Tokenizer.from_pretrained("gpt2"), GPT2TokenizerFast.from_pretrained("gpt2")


@settings(max_examples=25, deadline=None)
@given(text=_TEXT)
def test_gpt2_vocabulary_same_ids_both_classes(gpt2_pair, text):
    slow, fast = gpt2_pair
    ids = fast.encode(text)
    assert slow.encode(text) == ids
    assert slow.decode(ids) == fast.decode(ids) == text
