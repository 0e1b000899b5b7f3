"""Incremental text with the real GPT-2 vocabulary: pieces concatenate to the tokenizer's
decode of the whole sequence, cut at the first stop string; split UTF-8 characters are held
back until complete."""

from __future__ import annotations

import pytest

from gpt2_dual import GPT2TokenizerFast
from gpt2_dual.serve.text import TextStream

TEXTS = [
    "Hello, world! The quick brown fox.",
    "naïve café — 東京 🚀🎉 done",
    "line one\nline two\n\nEND",
]


@pytest.fixture(scope="module")
def tok():
    return GPT2TokenizerFast.from_pretrained("gpt2")


def _decode(tok):
    return lambda ids: tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _run(tok, text: str, stop: tuple[str, ...]) -> tuple[list[str], str | None]:
    stream = TextStream(_decode(tok), stop)
    pieces, stopped = [], None
    for token in tok.encode(text):
        piece, stopped = stream.add(token)
        pieces.append(piece)
        if stopped:
            break
    if not stopped:
        pieces.append(stream.flush())
    return pieces, stopped


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_decoded_text_and_are_valid_utf8(tok, text):
    pieces, stopped = _run(tok, text, ())
    assert "".join(pieces) == text and stopped is None
    assert all("\ufffd" not in piece for piece in pieces)  # no half characters sent
    assert sum(bool(p) for p in pieces) > 3  # it did stream


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        (TEXTS[0], ("brown",)),
        (TEXTS[0], ("ick br", "zzz")),  # across tokens
        (TEXTS[1], ("🎉",)),  # a character split across byte tokens
        (TEXTS[2], ("\n\n",)),
        (TEXTS[2], ("two", "one")),  # the earliest wins
    ],
)
def test_text_ends_before_the_first_stop_string(tok, text, stop):
    pieces, stopped = _run(tok, text, stop)
    first = min((text.index(s), s) for s in stop if s in text)
    assert "".join(pieces) == text[: first[0]] and stopped == first[1]


def test_a_stop_string_never_leaks_a_prefix(tok):
    stream = TextStream(_decode(tok), ("fox jumps",))
    sent = ""
    for token in tok.encode("the brown fox runs"):  # "fox " starts the stop string, then not
        sent += stream.add(token)[0]
        assert not sent.endswith("fox")
    assert sent + stream.flush() == "the brown fox runs"
