"""Loading and saving tokenizer files, checked against transformers' own files and loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from tokenizer_refs import BUNDLED, EOT, TEXTS, hf_tokenizers, write_cut_vocabulary

CLASSES = [GPT2Tokenizer, GPT2TokenizerFast]
SAMPLES = [TEXTS["prose"], TEXTS["emoji"], TEXTS["endoftext"], "a <pad> b", "xnew toky"]


@pytest.fixture(params=CLASSES, ids=["pure", "fast"])
def cls(request):
    return request.param


def customised(tokenizer):
    """Give a tokenizer (ours or transformers') a pad token and an added token."""
    assert tokenizer.add_special_tokens({"pad_token": "<pad>"}) == 1
    assert tokenizer.add_tokens(["new tok"]) == 1
    return tokenizer


@pytest.fixture(scope="module")
def hf_slow():
    """transformers' GPT2Tokenizer of the bundled files (tests only encode with it)."""
    from transformers import GPT2Tokenizer as HFSlow

    return HFSlow.from_pretrained(BUNDLED)


def copy_files(tmp_path, *names):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(BUNDLED / name, tmp_path / name)
    return tmp_path


def test_save_pretrained_loads_in_transformers(cls, tmp_path):
    from transformers import GPT2Tokenizer as HFSlow
    from transformers import GPT2TokenizerFast as HFFast

    ours = customised(cls.from_pretrained(BUNDLED))
    written = ours.save_pretrained(tmp_path / "saved")
    names = [p.rsplit("/", 1)[-1] for p in written]
    assert names == [
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "tokenizer.json",
    ]
    assert not list((tmp_path / "saved").glob("*.tmp"))
    for hf_cls in (HFSlow, HFFast):
        theirs = hf_cls.from_pretrained(tmp_path / "saved")
        assert len(theirs) == len(ours) == 50259
        assert theirs.pad_token == "<pad>" and theirs.model_max_length == 1024
        for text in SAMPLES:
            assert theirs.encode(text) == ours.encode(text), (hf_cls, text)
    for other in CLASSES:
        again = other.from_pretrained(tmp_path / "saved")
        assert [again.encode(t) for t in SAMPLES] == [ours.encode(t) for t in SAMPLES]
        assert again.special_tokens_map == ours.special_tokens_map


def test_tokenizer_json_is_what_tokenizers_writes(tmp_path):
    pure = customised(GPT2Tokenizer.from_pretrained(BUNDLED, add_prefix_space=True))
    fast = customised(GPT2TokenizerFast.from_pretrained(BUNDLED, add_prefix_space=True))
    assert json.loads(pure._tokenizer_json()) == json.loads(fast._tokenizer_json())
    pure.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    bundled = json.loads((BUNDLED / "tokenizer_config.json").read_text())
    assert config["add_prefix_space"] is True
    assert {
        k: v
        for k, v in config.items()
        if k not in ("added_tokens_decoder", "pad_token", "add_prefix_space")
    } == {
        k: v
        for k, v in bundled.items()
        if k not in ("added_tokens_decoder", "pad_token", "add_prefix_space")
    }


@pytest.mark.parametrize("hf_kind", ["slow", "fast"])
def test_loads_what_transformers_saves(cls, tmp_path, hf_kind):
    theirs = customised(hf_tokenizers()[hf_kind == "fast"])
    theirs.save_pretrained(tmp_path)
    ours = cls.from_pretrained(tmp_path)
    assert len(ours) == len(theirs)
    assert ours.pad_token == "<pad>" and ours.pad_token_id == theirs.pad_token_id
    assert ours.all_special_ids == theirs.all_special_ids
    for text in SAMPLES:
        assert ours.encode(text) == theirs.encode(text)


def test_save_vocabulary(cls, tmp_path):
    from transformers import GPT2Tokenizer as HFSlow

    tok = cls.from_pretrained(BUNDLED)
    vocab_path, merges_path = tok.save_vocabulary(tmp_path, filename_prefix="mine")
    assert vocab_path == str(tmp_path / "mine-vocab.json")
    assert merges_path == str(tmp_path / "mine-merges.txt")
    saved_vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    assert saved_vocab == json.loads((BUNDLED / "vocab.json").read_text(encoding="utf-8"))
    assert Path(merges_path).read_bytes() == (BUNDLED / "merges.txt").read_bytes()
    theirs = HFSlow(vocab_path, merges_path)
    for text in SAMPLES:
        assert theirs.encode(text) == tok.encode(text)
    with pytest.raises(NotADirectoryError, match="save_vocabulary needs an existing folder"):
        tok.save_vocabulary(tmp_path / "missing")


@pytest.fixture(scope="module")
def legacy_merges(tmp_path_factory):
    """The bundled tokenizer.json with its merges as "a b" strings (tokenizers < 0.20)."""
    folder = copy_files(tmp_path_factory.mktemp("legacy"), "tokenizer_config.json")
    data = json.loads((BUNDLED / "tokenizer.json").read_text())
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    return folder


def test_legacy_string_merges_in_tokenizer_json(cls, legacy_merges):
    tok = cls.from_pretrained(legacy_merges)
    reference = cls.from_pretrained(BUNDLED)
    for text in SAMPLES:
        assert tok.encode(text) == reference.encode(text)
    assert tok._merges() == reference._merges()


@pytest.mark.parametrize(
    "names",
    [("tokenizer.json",), ("vocab.json", "merges.txt")],
    ids=["tokenizer_json_only", "vocab_merges_only"],
)
def test_either_file_set_loads(cls, tmp_path, names, hf_slow):
    tok = cls.from_pretrained(copy_files(tmp_path, *names))
    assert tok.model_max_length == int(1e30)  # no tokenizer_config.json: transformers' default
    assert tok.eos_token == EOT and tok.eos_token_id == 50256
    for text in SAMPLES:
        assert tok.encode(text) == hf_slow.encode(text)


def test_missing_files_error_names_folder_and_files(cls, tmp_path):
    copy_files(tmp_path, "vocab.json", "tokenizer_config.json")
    with pytest.raises(
        FileNotFoundError,
        match=(
            rf"No GPT-2 tokenizer files in {tmp_path}: looked for tokenizer.json, or vocab.json "
            r"together with merges.txt \(found: vocab.json, tokenizer_config.json\)"
        ),
    ):
        cls.from_pretrained(tmp_path)


def test_bad_merges_raise(tmp_path):
    copy_files(tmp_path, "vocab.json")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nthree parts here\n")
    with pytest.raises(ValueError, match=r"merges.txt, line 3: expected two tokens 'a b'"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nq zzz\n")
    with pytest.raises(ValueError, match=r"merge 1 \(q zzz\): 'zzz' is not in the vocabulary"):
        GPT2Tokenizer.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def with_normalizer(tmp_path_factory):
    """The bundled tokenizer.json with an NFC normalizer."""
    path = tmp_path_factory.mktemp("normalizer") / "tokenizer.json"
    data = json.loads((BUNDLED / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "NFC"}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_tokenizer_json_with_normalizer_is_refused(cls, with_normalizer):
    with pytest.raises(ValueError, match="a normalizer is not supported by GPT-2 tokenizers"):
        cls(tokenizer_file=with_normalizer)


def test_added_token_ids_must_follow_vocabulary(cls):
    with pytest.raises(
        ValueError,
        match=r"added token '<x>' has id 60000, but this tokenizer "
        r"would give it id 50257",
    ):
        cls.from_pretrained(BUNDLED, added_tokens_decoder={60000: {"content": "<x>"}})


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    """GPT-2's 256 byte tokens and <|endoftext|>, no merges (``write_cut_vocabulary``), for
    settings whose round trip does not depend on the vocabulary."""
    return write_cut_vocabulary(tmp_path_factory.mktemp("byte_level"), 0)


def test_overrides_and_padding_side_are_saved(cls, tmp_path, byte_level):
    tok = cls.from_pretrained(byte_level, padding_side="left", model_max_length=64)
    tok.save_pretrained(tmp_path)
    again = cls.from_pretrained(tmp_path)
    assert (again.padding_side, again.model_max_length) == ("left", 64)


def test_from_pretrained_gpt2_offline(cls, monkeypatch, tmp_path):
    """ "gpt2" loads with no network and an empty Hub cache: the bundled vocabulary."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    tok = cls.from_pretrained("openai-community/gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.model_max_length == 1024 and tok.name_or_path == "openai-community/gpt2"


def test_subfolder(cls, tmp_path):
    copy_files(tmp_path / "tok", "vocab.json", "merges.txt", "tokenizer_config.json")
    tok = cls.from_pretrained(tmp_path, subfolder="tok")
    assert tok.encode("Hello world") == [15496, 995] and tok.model_max_length == 1024
