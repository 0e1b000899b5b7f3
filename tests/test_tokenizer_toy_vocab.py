"""Vocabularies that lack some of the 256 byte tokens (transformers' toy test vocabulary):
both our classes load them and give the same ids, checked against transformers' classes."""

from __future__ import annotations

import json
import logging
import random

import pytest
from transformers import GPT2Tokenizer as HFSlow
from transformers import GPT2TokenizerFast as HFFast

from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from tokenizer_refs import EOT

CLASSES = [GPT2Tokenizer, GPT2TokenizerFast]


@pytest.fixture(params=CLASSES, ids=["pure", "fast"])
def cls(request):
    return request.param


#: transformers' toy vocabulary and merges (tests/models/gpt2/test_tokenization_gpt2.py).
TOY_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "\u0120", "\u0120l", "\u0120n", "\u0120lo", "\u0120low", "er", "\u0120lowest", "\u0120newer", "\u0120wider", "<unk>", EOT]  # fmt: skip
TOY_MERGES = ["#version: 0.2", "\u0120 l", "\u0120l o", "\u0120lo w", "e r", ""]
#: Texts made of bytes the toy vocabulary has ("Ġlowest" is a token no merge makes).
TOY_KNOWN = [" lower newer", "lower newer", " lowest", "  low  ", " newer wider", f"{EOT} low", ""]
#: Texts with bytes it lacks.
TOY_UNKNOWN = ["xyz lower", " lower 日本 x!", "a<unk>b", "😀", "lower\nnewer", "LOW"]


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    vocab = {token: i for i, token in enumerate(TOY_VOCAB)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(TOY_MERGES), encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def toy_texts(n):
    rng = random.Random(11)
    atoms = [
        "l",
        "o",
        "w",
        "e",
        "r",
        "s",
        "t",
        "i",
        "d",
        "n",
        " ",
        "low",
        "er",
        "x",
        "é",
        "\n",
        "<unk>",
        EOT,
    ]
    return ["".join(rng.choices(atoms, k=rng.randint(0, 12))) for _ in range(n)]


def test_toy_vocabulary_matches_transformers(cls, toy_files):
    ours = cls(*toy_files, unk_token="<unk>")
    slow, fast = HFSlow(*toy_files, unk_token="<unk>"), HFFast(*toy_files, unk_token="<unk>")
    tokens = ours.tokenize(" lower newer")  # transformers' test_full_tokenizer
    assert tokens == slow.tokenize(" lower newer") == fast.tokenize(" lower newer")
    assert tokens == ["\u0120low", "er", "\u0120", "n", "e", "w", "er"]
    assert ours.convert_tokens_to_ids([*tokens, "<unk>"]) == [14, 15, 10, 9, 3, 2, 15, 19]
    for text in TOY_KNOWN:
        assert ours.encode(text) == slow.encode(text) == fast.encode(text), text
        assert ours.decode(ours.encode(text)) == text
    # Bytes the vocabulary lacks become unk_token, as in transformers' slow class.
    # (transformers' fast class drops them: its BPE model has no unk token.)
    for text in [*TOY_UNKNOWN, *toy_texts(200)]:
        assert ours.encode(text) == slow.encode(text), text
    assert ours.encode("xyz lower") == [19, 19, 19, 14, 15]
    assert fast.encode("xyz lower") == [14, 15]
    # tokenize shows those bytes as unk_token, so that tokens and ids agree in both our classes
    # (transformers' slow class shows the byte characters, then maps them to unk_token).
    assert ours.tokenize("xy") == ["<unk>", "<unk>"] and slow.tokenize("xy") == ["x", "y"]
    assert ours.decode([14, 15, 19, 20]) == slow.decode([14, 15, 19, 20])
    assert len(ours) == len(slow) == 21


def test_toy_pure_and_fast_agree(toy_files):
    for unk in ("<unk>", EOT):
        pure, fast = (c(*toy_files, unk_token=unk) for c in CLASSES)
        for text in [*TOY_KNOWN, *TOY_UNKNOWN, *toy_texts(300)]:
            assert pure.encode(text) == fast.encode(text), (unk, text)
            assert pure.tokenize(text) == fast.tokenize(text), (unk, text)
        assert pure.bpe(" lowest") == ["\u0120low", "e", "s", "t"]
        assert pure.bpe("xy") == ["x", "y"]  # bytes shown as such before they become unk


def test_toy_unk_token_follows_changes(cls, toy_files, caplog):
    ours = cls(*toy_files, unk_token="<unk>")
    assert ours.encode("xy low") == [19, 19, 14]
    ours.unk_token = EOT
    assert ours.encode("xy low") == [20, 20, 14]
    ours.unk_token_id = 19
    assert ours.encode("xy low") == [19, 19, 14]
    # No unk token in the vocabulary: the bytes are dropped, like transformers' fast class.
    with caplog.at_level(logging.WARNING, logger="gpt2_dual"):
        ours.unk_token = None
    assert "lacks 245 of the 256 byte tokens" in caplog.text
    assert ours.encode("xy low") == [14]
    fast_ref = HFFast(*toy_files, unk_token="<unk>")
    for text in [*TOY_KNOWN, *TOY_UNKNOWN]:
        assert ours.encode(text) == fast_ref.encode(text), text
    ours.add_special_tokens({"unk_token": "<unk>"})
    assert ours.encode("xy low") == [19, 19, 14]


def test_toy_save_pretrained_loads_everywhere(cls, toy_files, tmp_path):
    ours = cls(*toy_files, unk_token="<unk>")
    ours.save_pretrained(tmp_path)
    loaded = [HFSlow.from_pretrained(tmp_path), HFFast.from_pretrained(tmp_path)]
    loaded += [c.from_pretrained(tmp_path) for c in CLASSES]
    for text in [*TOY_KNOWN, *TOY_UNKNOWN]:
        expected = ours.encode(text)
        assert [t.encode(text) for t in loaded] == [expected] * 4, text


def test_toy_tokenizer_json_is_the_same_from_both(toy_files):
    pure, fast = (c(*toy_files, unk_token="<unk>") for c in CLASSES)
    models = [json.loads(t._tokenizer_json())["model"] for t in (pure, fast)]
    for key in ("unk_token", "vocab", "merges", "fuse_unk", "byte_fallback", "ignore_merges"):
        assert models[0][key] == models[1][key], key
    assert models[0]["unk_token"] == "<unk>"
