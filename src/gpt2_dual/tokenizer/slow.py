"""``GPT2Tokenizer``: GPT-2's byte-level BPE in pure Python.

The text is split with GPT-2's regex (``regex`` module), each piece is turned into bytes, and
the bytes are merged pairwise by rank. Pieces are cached, and a piece that is one vocabulary
token skips the merge loop. The ids are those of ``GPT2TokenizerFast``, transformers and
tiktoken on every input.
"""

from __future__ import annotations

import json
import os
from itertools import pairwise, repeat
from typing import Any

import regex

from gpt2_dual.errors import MalformedFileError
from gpt2_dual.tokenizer.base import GPT2TokenizerBase
from gpt2_dual.tokenizer.files import AddedTokenSpec, read_merges, read_tokenizer_json, read_vocab
from gpt2_dual.tokenizer.vocab import BYTE_ENCODER, surrogate_error
from gpt2_dual.tokenizer.writing import tokenizer_json_dict

#: GPT-2's pre-tokenizer regex (transformers' and ``tokenizers``' ByteLevel form).
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: Pieces kept in the cache before it is emptied (bounds memory on endless input).
CACHE_SIZE = 100_000
# str.translate table: a latin-1 decoded byte string -> GPT-2's byte alphabet.
_TO_BYTE_ALPHABET = {b: c for b, c in BYTE_ENCODER.items()}
_NO_MERGE = 1 << 62


class GPT2Tokenizer(GPT2TokenizerBase):
    """GPT-2 tokenizer in pure Python (byte-level BPE); same API and ids as
    ``GPT2TokenizerFast``. See ``GPT2TokenizerBase`` for the arguments.

    Loads ``vocab.json`` + ``merges.txt``, or ``tokenizer.json`` when only that is given.

    Example:
        >>> from gpt2_dual import GPT2Tokenizer
        >>> tokenizer = GPT2Tokenizer.from_pretrained("gpt2")
        >>> tokenizer("Hello world")["input_ids"]
        [15496, 995]
        >>> tokenizer.decode([15496, 995])
        'Hello world'
    """

    def _load_model(
        self,
        vocab_file: str | os.PathLike | None,
        merges_file: str | os.PathLike | None,
        tokenizer_file: str | os.PathLike | None,
    ) -> list[AddedTokenSpec]:
        if vocab_file is not None and merges_file is not None:
            vocab, merges, added = read_vocab(vocab_file), read_merges(merges_file), []
            source = f"{vocab_file} and {merges_file}"
        elif tokenizer_file is not None:
            vocab, merges, added = read_tokenizer_json(tokenizer_file)
            source = str(tokenizer_file)
        else:
            raise ValueError("GPT2Tokenizer needs vocab_file and merges_file, or tokenizer_file")
        self._encoder = vocab
        self._merge_list = merges
        try:
            self._ranks, self._merged = _merge_table(vocab, merges)
        except ValueError as err:
            raise MalformedFileError(f"{source}: {err}") from None
        # A byte the vocabulary lacks gets the id -1 - byte, which no merge takes; it becomes
        # unk_token (or nothing) once BPE is done (``_set_unk``).
        self._byte_ids = [vocab.get(BYTE_ENCODER[b], -1 - b) for b in range(256)]
        self._complete = min(self._byte_ids) >= 0
        # Pieces that are one of these tokens skip the merge loop: every token a merge makes is
        # reachable from its own bytes with GPT-2's merges (tiktoken relies on the same fact).
        # Tokens no merge makes (a toy vocabulary's "Ġlowest") go through BPE, as everywhere.
        whole = {m[2] for m in self._merged.values()} | set(self._byte_ids)
        self._whole = whole if self._complete else set()
        self._unk_id: int | None = None
        self._pattern = regex.compile(PATTERN)
        self._splitter: Any = None
        self._added_ids: dict[str, int] = {}
        self._cache: dict[str, list[int]] = {}
        return added

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (50257 for GPT-2), without added tokens."""
        return len(self._encoder)

    def _base_token_to_id(self, token: str) -> int | None:
        return self._encoder.get(token)

    def _base_vocab(self) -> dict[str, int]:
        return dict(self._encoder)

    def _merges(self) -> list[tuple[str, str]]:
        return list(self._merge_list)

    def _tokenizer_json(self) -> str:
        added = list(self._added.values())
        unk = None if self._complete or self._unk_id is None else self.unk_token
        data = tokenizer_json_dict(
            self._encoder, self._merge_list, added, self.add_prefix_space, unk_token=unk
        )
        return json.dumps(data, indent=2, ensure_ascii=False)

    def _set_unk(self, token: str | None) -> None:
        self._unk_id = None if token is None else self._encoder[token]
        self._cache.clear()

    def _backend_added(self, new: list[AddedTokenSpec]) -> None:
        # One regex matching every added token, longest first (leftmost-longest match).
        specs = sorted(self._added.values(), key=lambda t: -len(t.content))
        alternatives = [
            (r"\s*" if t.lstrip else "") + regex.escape(t.content) + (r"\s*" if t.rstrip else "")
            for t in specs
        ]
        self._splitter = regex.compile("(" + "|".join(alternatives) + ")")
        self._added_ids = {t.content: t.id for t in specs}

    def _added_id(self, match: str) -> int:
        """Id of a matched added token (the match may include stripped whitespace)."""
        ids = self._added_ids
        for candidate in (match, match.lstrip(), match.rstrip(), match.strip()):
            if candidate in ids:
                return ids[candidate]
        raise AssertionError(f"unmatched added token {match!r}")  # pragma: no cover

    def _encode_texts(self, texts: list[str], prefix: bool) -> list[list[int]]:
        try:
            return [self._encode_one(text, prefix) for text in texts]
        except UnicodeEncodeError:
            raise surrogate_error(texts) or ValueError("text cannot be encoded") from None

    def _encode_one(self, text: str, prefix: bool) -> list[int]:
        """Ids of ``text``: added tokens first, then BPE on the pieces between them (each with
        a space put before it when ``prefix`` is set and it has none)."""
        parts = self._splitter.split(text) if self._splitter is not None else [text]
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2:
                ids.append(self._added_id(part))
            elif part:
                if prefix and not part.startswith(" "):
                    part = " " + part
                self._encode_ordinary(part, ids)
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Append the ids of ``text`` (no added tokens in it) to ``out``."""
        cache = self._cache
        for piece in self._pattern.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._encode_piece(piece)
            out += ids

    def _encode_piece(self, piece: str) -> list[int]:
        data = piece.encode("utf-8")
        token_id = self._encoder.get(data.decode("latin-1").translate(_TO_BYTE_ALPHABET))
        if token_id is not None and token_id in self._whole:
            ids = [token_id]
        else:
            byte_ids = self._byte_ids
            ids = self._bpe([byte_ids[b] for b in data])
            if not self._complete:
                unk = self._unk_id
                ids = [i if i >= 0 else unk for i in ids if i >= 0 or unk is not None]
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _bpe(self, word: list[int]) -> list[int]:
        """Merge the lowest-ranked adjacent pair, everywhere in the word, until none is left."""
        get = self._ranks.get
        merged = self._merged
        while len(word) > 1:
            rank = min(map(get, pairwise(word), repeat(_NO_MERGE)))
            if rank == _NO_MERGE:
                break
            first, second, new = merged[rank]
            out: list[int] = []
            i, n = 0, len(word)
            while i < n:
                try:
                    j = word.index(first, i)
                except ValueError:
                    out += word[i:]
                    break
                out += word[i:j]
                if j + 1 < n and word[j + 1] == second:
                    out.append(new)
                    i = j + 2
                else:
                    out.append(first)
                    i = j + 1
            word = out
        return word

    def bpe(self, piece: str) -> list[str]:
        """BPE of one pre-tokenized piece of text, as tokens (for inspection)."""
        tokens = self._tables()[0]
        ids = self._bpe([self._byte_ids[b] for b in piece.encode("utf-8")])
        return [tokens[i] if i >= 0 else BYTE_ENCODER[-1 - i] for i in ids]

    def _tokens(self, text: str, prefix: bool) -> list[str]:
        tokens = self._tables()[0]
        return [tokens[i] for i in self._encode_texts([text], prefix)[0]]


def _merge_table(
    vocab: dict[str, int], merges: list[tuple[str, str]]
) -> tuple[dict[tuple[int, int], int], dict[int, tuple[int, int, int]]]:
    """(left id, right id) -> rank, and rank -> (left id, right id, merged id).

    Raises:
        ValueError: a merge whose parts or result are not in the vocabulary (like
            ``tokenizers``).
    """
    ranks: dict[tuple[int, int], int] = {}
    merged: dict[int, tuple[int, int, int]] = {}
    for rank, (a, b) in enumerate(merges):
        try:
            pair, new = (vocab[a], vocab[b]), vocab[a + b]
        except KeyError as e:
            raise ValueError(
                f"merge {rank} ({a} {b}): {e.args[0]!r} is not in the vocabulary"
            ) from None
        ranks[pair] = rank  # a repeated merge keeps its last rank, like transformers
        merged[rank] = (*pair, new)
    return ranks, merged
