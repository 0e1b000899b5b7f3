"""gpt2_dual.train.data: text files, the token cache, the block order and blocks.

References: the tokenizer's own ``encode`` of each whole file (real GPT-2 vocab), numpy
reshapes, and ``np.random.default_rng([seed, e]).permutation`` written out here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from gpt2_dual import GPT2TokenizerFast
from gpt2_dual.errors import InvalidInputError, MalformedFileError, OutOfRangeError
from gpt2_dual.train.data import (
    BlockOrder,
    _pieces,
    blocks,
    build_token_cache,
    encode_text,
    num_blocks,
    text_files,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "text"
CORPUS = FIXTURES / "corpus.txt"
EOS = 50256


@pytest.fixture(scope="module")
def tokenizer() -> GPT2TokenizerFast:
    return GPT2TokenizerFast.from_pretrained("gpt2")


@pytest.fixture(scope="module")
def corpus() -> str:
    return CORPUS.read_bytes().decode("utf-8")


@pytest.fixture
def three_files(tmp_path: Path, corpus: str) -> list[Path]:
    """Two halves of the corpus and a file of non-ASCII text, CRLF and an EOS string."""
    folder = tmp_path / "text"
    folder.mkdir()
    half = len(corpus) // 2
    texts = [corpus[:half], corpus[half:], "café  naïve\r\n\r\n<|endoftext|>\n 日本語\n\n"]
    paths = [folder / f"{i}.txt" for i in range(3)]
    for path, text in zip(paths, texts, strict=True):
        path.write_bytes(text.encode("utf-8"))
    return paths


def _expected(files: list[Path], tokenizer: GPT2TokenizerFast) -> list[int]:
    ids: list[int] = []
    for i, path in enumerate(files):
        ids += tokenizer.encode(path.read_bytes().decode("utf-8"), verbose=False)
        ids += [tokenizer.eos_token_id] if i < len(files) - 1 else []
    return ids


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


# --- the committed corpus --------------------------------------------------------------------


def test_corpus_is_the_file_its_notice_describes():
    data = CORPUS.read_bytes()
    notice = (FIXTURES / "NOTICE.md").read_text(encoding="utf-8")
    assert 60_000 <= len(data) <= 120_000
    assert hashlib.sha256(data).hexdigest() in notice
    assert f"{len(data):,} bytes" in notice
    assert data.decode("ascii").startswith("THE TEMPEST\n\nby William Shakespeare")


# --- the token cache -------------------------------------------------------------------------


def test_cache_holds_each_files_encode_joined_by_eos(three_files, tokenizer, tmp_path):
    cache = build_token_cache(three_files, tokenizer, tmp_path / "cache")
    expected = _expected(three_files, tokenizer)
    assert expected.count(EOS) == 3  # two joins and the one written in the third file
    assert cache.tokens.dtype == np.uint16 and isinstance(cache.tokens, np.memmap)
    np.testing.assert_array_equal(cache.tokens, np.array(expected))
    assert cache.reused is False and cache.path.parent == tmp_path / "cache"
    meta = json.loads(cache.path.with_suffix(".json").read_text())
    assert meta["key"] == cache.path.stem and len(meta["key"]) == 64
    assert meta["files"] == [str(p) for p in three_files]
    assert (meta["n_tokens"], meta["dtype"]) == (len(expected), "uint16")
    assert cache.path.stat().st_size == 2 * len(expected)


def test_single_file_gets_no_eos(tokenizer, corpus, tmp_path):
    cache = build_token_cache([CORPUS], tokenizer, tmp_path)
    np.testing.assert_array_equal(cache.tokens, tokenizer.encode(corpus, verbose=False))
    assert EOS not in cache.tokens


def test_second_call_reuses_the_cache_untouched(three_files, tokenizer, tmp_path):
    first = build_token_cache(three_files, tokenizer, tmp_path / "cache")
    sidecar = first.path.with_suffix(".json")
    before = (_stat(first.path), _stat(sidecar))
    again = build_token_cache(three_files, tokenizer, tmp_path / "cache")
    assert again.reused is True and again.path == first.path
    assert (_stat(again.path), _stat(sidecar)) == before  # not rewritten
    np.testing.assert_array_equal(again.tokens, first.tokens)
    # The key is the bytes, not the names: the same text elsewhere reuses it too.
    moved = [tmp_path / f"copy{i}.txt" for i in range(3)]
    for src, dst in zip(three_files, moved, strict=True):
        dst.write_bytes(src.read_bytes())
    assert build_token_cache(moved, tokenizer, tmp_path / "cache").reused is True
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [first.path.name, sidecar.name]
    )


@pytest.mark.parametrize("change", ["edit a file", "reorder files", "add a token"])
def test_changed_inputs_give_a_new_cache(change, three_files, tokenizer, tmp_path):
    old = build_token_cache(three_files, tokenizer, tmp_path)
    before = _expected(three_files, tokenizer)
    files, tok = list(three_files), tokenizer
    if change == "edit a file":
        files[1].write_bytes(files[1].read_bytes() + b"\nExit, pursued by a bear.\n")
    elif change == "reorder files":
        files.reverse()
    else:
        tok = GPT2TokenizerFast.from_pretrained("gpt2")
        assert tok.add_tokens(["PROSPERO"]) == 1
    new = build_token_cache(files, tok, tmp_path)
    assert new.reused is False and new.path != old.path and old.path.exists()
    np.testing.assert_array_equal(new.tokens, _expected(files, tok))
    assert not np.array_equal(new.tokens, before)
    np.testing.assert_array_equal(old.tokens, before)


@pytest.mark.parametrize("damage", ["truncated ids", "no sidecar", "sidecar not JSON"])
def test_incomplete_cache_is_built_again(damage, three_files, tokenizer, tmp_path):
    first = build_token_cache(three_files, tokenizer, tmp_path)
    sidecar = first.path.with_suffix(".json")
    del first
    if damage == "truncated ids":
        data = (tmp_path / sidecar.with_suffix(".bin").name).read_bytes()
        sidecar.with_suffix(".bin").write_bytes(data[:-2])
    elif damage == "no sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text("{")
    cache = build_token_cache(three_files, tokenizer, tmp_path)
    assert cache.reused is False
    np.testing.assert_array_equal(cache.tokens, _expected(three_files, tokenizer))
    assert build_token_cache(three_files, tokenizer, tmp_path).reused is True


def test_failed_build_leaves_no_file(three_files, tokenizer, tmp_path):
    # The first file is tokenized and written before the second one fails to decode.
    bad = three_files[1]
    bad.write_bytes(b"Full fathom five\n\xff thy father lies\n")
    cache_dir = tmp_path / "cache"
    message = f"{bad} is not UTF-8 text: byte 17 is b'\\xff' (invalid start byte)"
    with pytest.raises(MalformedFileError, match=f"^{re.escape(message)}$"):
        build_token_cache(three_files, tokenizer, cache_dir)
    assert list(cache_dir.iterdir()) == []
    bad.write_bytes(b"Full fathom five thy father lies\n")
    assert build_token_cache(three_files, tokenizer, cache_dir).reused is False


def test_build_refuses_no_files(tokenizer, tmp_path):
    with pytest.raises(InvalidInputError, match="^build_token_cache: no text files given$"):
        build_token_cache([], tokenizer, tmp_path)


# --- encoding in pieces ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_chars", [1, 7, 100, 5000])
def test_pieces_encode_like_the_whole_corpus(chunk_chars, tokenizer, corpus):
    pieces = list(_pieces(corpus, chunk_chars))
    assert "".join(pieces) == corpus and len(pieces) > 5
    whole = tokenizer.encode(corpus, verbose=False)
    np.testing.assert_array_equal(encode_text(corpus, tokenizer, chunk_chars=chunk_chars), whole)


ADVERSARIAL = (
    "\n", "\n\n", "\n\n\n", " ", "  ", "   \n", " \n ", "\t", "\r\n", "\r", "\x0b", "\x0c",
    "\x85", "\u00a0", "\u2028", "\u3000", "a", "Zq", "'s", "'ll", "'", "''", ".", "!?", "1",
    "42", "é", "日本", "<|endoftext|>", "-", "—", "\U0001f600",
    "x\ny", "!\n?", "'\ns", "1\n.",  # safe cuts, next to whatever comes before and after
)  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_pieces_encode_like_the_whole_adversarial_text(seed, tokenizer):
    """Runs of spaces, newlines and other whitespace on both sides of every possible cut."""
    rng = np.random.default_rng(seed)
    text = "".join(ADVERSARIAL[i] for i in rng.integers(0, len(ADVERSARIAL), 3000))
    text += "x\n \n\ny\n  z\n\n\nw \nv\n\tu\n'\ns\n.\n."  # whitespace around newlines
    whole = tokenizer.encode(text, verbose=False)
    for chunk_chars in (1, 2, 5, 40):
        assert len(list(_pieces(text, chunk_chars))) > 20
        np.testing.assert_array_equal(encode_text(text, tokenizer, chunk_chars=chunk_chars), whole)


def test_cuts_only_between_printable_characters(corpus):
    for piece in list(_pieces(corpus, 1))[:-1]:
        assert piece.endswith("\n") and piece[-2] not in " \t\r\n"
    starts = [p[0] for p in list(_pieces(corpus, 1))[1:]]
    assert all("!" <= c <= "~" for c in starts)


def test_prefix_space_tokenizer_encodes_whole(corpus):
    tok = GPT2TokenizerFast.from_pretrained("gpt2", add_prefix_space=True)
    text = corpus[:3000]
    whole = tok.encode(text, verbose=False)
    naive = [i for p in _pieces(text, 50) for i in tok.encode(p, verbose=False)]
    assert naive != whole  # each piece would get its own prefix space
    np.testing.assert_array_equal(encode_text(text, tok, chunk_chars=50), whole)


# --- text_files ------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_text_files_of_a_file_folder_and_glob(tmp_path):
    _tree(
        tmp_path,
        {"b.txt": "b", "a/z.txt": "z", "a/y.md": "y", "a/.hidden.txt": "h", ".git/x": "x",
         "c/empty.txt": "", "a0.txt": "a0"},
    )  # fmt: skip
    assert text_files(tmp_path / "b.txt") == [tmp_path / "b.txt"]
    assert text_files(str(tmp_path)) == [
        tmp_path / p for p in ("a/y.md", "a/z.txt", "a0.txt", "b.txt")
    ]
    assert text_files(tmp_path / "*.txt") == [tmp_path / "a0.txt", tmp_path / "b.txt"]
    assert text_files(f"{tmp_path}/**/*.txt") == [
        tmp_path / p for p in ("a/z.txt", "a0.txt", "b.txt")
    ]


def test_text_files_errors(tmp_path):
    _tree(tmp_path, {"empty/a.txt": "", "empty/b/c.txt": "", "one/e.txt": "", "none/.hidden": "x"})
    cases = [
        (tmp_path / "nope.txt", FileNotFoundError, f"{tmp_path}/nope.txt: no such file or folder"),
        (f"{tmp_path}/*.nope", FileNotFoundError, f"{tmp_path}/*.nope: no file matches this glob"),
        (tmp_path / "none", FileNotFoundError, f"{tmp_path}/none: the folder holds no text files"),
        (tmp_path / "one/e.txt", InvalidInputError, f"{tmp_path}/one/e.txt is empty"),
        (tmp_path / "one", InvalidInputError, f"{tmp_path}/one/e.txt is empty"),
        (tmp_path / "empty", InvalidInputError, f"{tmp_path}/empty is empty: its 2 files hold 0 bytes"),
    ]  # fmt: skip
    for spec, kind, message in cases:
        with pytest.raises(kind, match=f"^{re.escape(message)}$"):
            text_files(spec)


# --- block order -----------------------------------------------------------------------------


def _endless(n_blocks: int, seed: int, epochs: int) -> np.ndarray:
    perms = [np.random.default_rng([seed, e]).permutation(n_blocks) for e in range(epochs)]
    return np.concatenate(perms)


@pytest.mark.parametrize("accumulation", [1, 2, 4])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_n_processes_see_the_blocks_of_one(world_size, batch_size, accumulation):
    n_blocks, seed = 7, 11  # batches straddle epoch ends
    order = BlockOrder(n_blocks, seed)
    endless = _endless(n_blocks, seed, 60)
    position = 0
    for step in range(6):
        for micro in range(accumulation):
            ranks = [
                order.micro_batch(step, micro, batch_size=batch_size, accumulation=accumulation,
                                  rank=r, world_size=world_size)
                for r in range(world_size)
            ]  # fmt: skip
            one = order.micro_batch(
                step, micro, batch_size=world_size * batch_size, accumulation=accumulation
            )
            assert all(r.shape == (batch_size,) and r.dtype == np.int64 for r in ranks)
            np.testing.assert_array_equal(np.concatenate(ranks), one)
            np.testing.assert_array_equal(one, endless[position : position + len(one)])
            position += len(one)


def test_epochs_are_permutations_covering_every_block():
    n_blocks = 13
    order = BlockOrder(n_blocks, seed=5)
    seen = np.concatenate(
        [order.micro_batch(s, 0, batch_size=1, accumulation=1) for s in range(4 * n_blocks)]
    )
    epochs = seen.reshape(4, n_blocks)
    for e, blocks_of_epoch in enumerate(epochs):
        np.testing.assert_array_equal(np.sort(blocks_of_epoch), np.arange(n_blocks))
        np.testing.assert_array_equal(blocks_of_epoch, order.permutation(e))
    assert len({tuple(e) for e in epochs}) == 4  # each epoch its own order
    other = BlockOrder(n_blocks, seed=6).permutation(0)
    assert not np.array_equal(other, epochs[0])
    assert not np.array_equal(epochs[0], np.arange(n_blocks))


def test_epoch_counts_blocks_consumed():
    order = BlockOrder(10, seed=0)
    assert order.epoch(0, batch_size=4, accumulation=2, world_size=3) == 0.0
    assert order.epoch(5, batch_size=4, accumulation=2, world_size=3) == 12.0
    assert order.epoch(3, batch_size=1, accumulation=1, world_size=1) == 0.3


def test_block_order_errors():
    order = BlockOrder(5, seed=0)
    cases = [
        (lambda: BlockOrder(0, seed=0), InvalidInputError,
         "n_blocks=0: the text must hold at least one block of tokens"),
        (lambda: BlockOrder(3, seed=-1), OutOfRangeError, "seed=-1 must be >= 0"),
        (lambda: order.micro_batch(0, 2, batch_size=1, accumulation=2), OutOfRangeError,
         "micro=2 must be in [0, accumulation=2)"),
        (lambda: order.micro_batch(0, 0, batch_size=1, accumulation=1, rank=2, world_size=2),
         OutOfRangeError, "rank=2 must be in [0, world_size=2)"),
        (lambda: order.micro_batch(-1, 0, batch_size=1, accumulation=1), OutOfRangeError,
         "step=-1 must be >= 0"),
        (lambda: order.micro_batch(0, 0, batch_size=0, accumulation=1), OutOfRangeError,
         "batch_size=0 must be at least 1"),
        (lambda: order.epoch(1, batch_size=1, accumulation=0, world_size=1), OutOfRangeError,
         "accumulation=0 must be at least 1"),
    ]  # fmt: skip
    for call, kind, message in cases:
        with pytest.raises(kind, match=f"^{re.escape(message)}$"):
            call()


# --- blocks ----------------------------------------------------------------------------------


def test_blocks_cut_the_token_array(tokenizer, tmp_path):
    tokens = build_token_cache([CORPUS], tokenizer, tmp_path).tokens
    block_size = 37
    n = num_blocks(len(tokens), block_size)
    assert n == len(tokens) // block_size and n * block_size < len(tokens)
    reference = np.asarray(tokens[: n * block_size], dtype=np.int64).reshape(n, block_size)
    indices = np.array([n - 1, 0, 5, 5, 123])
    got = blocks(tokens, indices, block_size)
    assert got.dtype == np.int64 and got.shape == (5, block_size)
    np.testing.assert_array_equal(got, reference[indices])
    message = f"block index {n} is out of range: {len(tokens)} tokens hold {n} blocks of 37"
    with pytest.raises(OutOfRangeError, match=f"^{re.escape(message)}$"):
        blocks(tokens, np.array([0, n]), block_size)
    with pytest.raises(OutOfRangeError, match="^block_size=0 must be at least 1$"):
        num_blocks(100, 0)


def test_cache_dir_user_expansion(three_files, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = build_token_cache(three_files[:1], tokenizer, Path("~/tokens"))
    assert cache.path.parent == tmp_path / "tokens"
    assert os.path.isfile(cache.path)
