"""Ids of gpt2_dual's two tokenizers against transformers (slow and fast) and tiktoken."""

from __future__ import annotations

import logging
import random

import pytest

from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer
from tokenizer_refs import BUNDLED, EOT, TEXTS, hf_tokenizers, random_texts, tiktoken_gpt2


@pytest.fixture(scope="module")
def ours():
    return GPT2Tokenizer.from_pretrained(BUNDLED), GPT2TokenizerFast.from_pretrained(BUNDLED)


@pytest.fixture(scope="module")
def refs():
    slow, fast = hf_tokenizers()
    return slow, fast, tiktoken_gpt2()


@pytest.fixture(autouse=True)
def _quiet_length_warnings(caplog):
    # Long texts trip the "longer than model_max_length" log line; it is tested elsewhere.
    caplog.set_level(logging.ERROR)


def reference_ids(refs, text: str) -> list[list[int]]:
    slow, fast, tiktoken_enc = refs
    return [
        slow(text)["input_ids"],
        fast(text)["input_ids"],
        tiktoken_enc.encode(text, allowed_special="all"),
    ]


def test_known_ids(ours):
    for tok in ours:
        assert tok.encode("Hello") == [15496]
        assert tok.encode(" world") == [995]
        assert tok.encode(EOT) == [50256]
        assert tok("Hello, I'm a language model,")["input_ids"] == [
            15496,
            11,
            314,
            1101,
            257,
            3303,
            2746,
            11,
        ]


@pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))
def test_ids_match_references(ours, refs, text):
    pure, fast = ours
    expected = reference_ids(refs, text)
    assert expected[0] == expected[1] == expected[2]  # the references agree
    assert pure.encode(text) == expected[0]
    assert fast.encode(text) == expected[0]
    assert pure(text)["input_ids"] == fast(text)["input_ids"] == expected[0]


@pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))
def test_decode_round_trip(ours, text):
    for tok in ours:
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))
def test_tokens_match_transformers(ours, refs, text):
    expected = refs[0].tokenize(text)
    assert ours[0].tokenize(text) == expected
    assert ours[1].tokenize(text) == expected


def test_random_texts_match_all_references(ours, refs):
    pure, fast = ours
    texts = random_texts(300, seed=7)
    fast_batch = fast(texts)["input_ids"]
    pure_batch = pure(texts)["input_ids"]
    for i, text in enumerate(texts):
        expected = reference_ids(refs, text)
        assert expected[0] == expected[1] == expected[2], text
        assert pure_batch[i] == fast_batch[i] == expected[0], text
        assert pure.decode(pure_batch[i]) == text


def test_random_ids_decode_like_transformers(ours, refs):
    """Random ids (often cutting UTF-8 characters) decode the same everywhere."""
    pure, fast = ours
    slow_ref, fast_ref, tiktoken_enc = refs
    rng = random.Random(3)
    byte_tokens = pure.convert_tokens_to_ids([c for c in pure.get_vocab() if len(c) == 1])
    for _ in range(200):
        ids = rng.choices(byte_tokens, k=rng.randint(0, 12))
        ids += rng.choices(range(50257), k=rng.randint(0, 5))
        rng.shuffle(ids)
        expected = slow_ref.decode(ids)
        assert fast_ref.decode(ids) == expected
        assert tiktoken_enc.decode(ids) == expected
        assert pure.decode(ids) == fast.decode(ids) == expected


def test_bpe_cache_is_bounded(monkeypatch):
    from gpt2_dual.tokenizer import slow as tokenizer_bpe

    monkeypatch.setattr(tokenizer_bpe, "CACHE_SIZE", 10)
    tok = GPT2Tokenizer.from_pretrained(BUNDLED)
    text = " ".join(f"w{i}x" for i in range(50))
    assert tok.encode(text) == GPT2TokenizerFast.from_pretrained(BUNDLED).encode(text)
    assert len(tok._cache) <= 10
