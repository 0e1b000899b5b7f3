"""Training data: text files -> a token cache on disk -> blocks in a fixed, seeded order.

The text is tokenized once into a flat array of token ids (nanoGPT's ``prepare.py``), kept in
``cache_dir`` under a key of the files' bytes and the tokenizer, and reused by later runs. The
ids are cut into blocks of ``block_size`` tokens; ``BlockOrder`` fixes which blocks each
optimizer step, micro-batch and process takes, from the seed and the step number alone, so a
resumed run, either framework and any number of processes see the same batches.

Example (``tokenizer`` a ``GPT2TokenizerFast``):
    >>> cache = build_token_cache(text_files("data/"), tokenizer, Path("~/.cache/tokens"))
    >>> order = BlockOrder(num_blocks(len(cache.tokens), 128), seed=42)
    >>> step0 = order.micro_batch(0, 0, batch_size=4, accumulation=1)
    >>> blocks(cache.tokens, step0, 128).shape
    (4, 128)
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from gpt2_dual._io import atomic_write, atomic_write_text, read_json, read_text
from gpt2_dual.errors import InvalidInputError, MalformedFileError, OutOfRangeError

logger = logging.getLogger(__name__)

#: Version of the cache's layout; part of the key, so a new layout never reads an old file.
CACHE_FORMAT = 1
#: Texts are encoded in pieces of at least this many characters, many pieces per call of the
#: tokenizer (``tokenizers`` encodes a batch on all cores); see ``encode_text``.
CHUNK_CHARS = 1 << 16
_PIECES_PER_CALL = 64
# A safe place to cut a text for encoding: after a newline that sits between two printable
# ASCII characters that are not spaces. GPT-2's pre-tokenizer regex
# ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) makes such a
# newline a pre-token of its own whether or not text follows it, and no pre-token crosses it:
# only whitespace runs contain a newline, and here the run is the newline alone.
_SAFE_CUT = re.compile(r"(?<=[!-~])\n(?=[!-~])")
_GLOB_CHARS = re.compile(r"[*?[]")


def text_files(spec: str | os.PathLike) -> list[Path]:
    """The text files that ``spec`` names, in a fixed order; empty files are left out.

    Args:
        spec: a file; a folder (every regular file in it, recursively, sorted by relative
            path; files and folders whose name starts with "." are skipped); or a glob
            (``**`` recursive; sorted).

    Returns:
        The non-empty files.

    Raises:
        FileNotFoundError: nothing found; the message names ``spec``.
        InvalidInputError: every file found is empty (0 bytes).
    """
    path = Path(spec)
    if path.is_file():
        found = [path]
    elif path.is_dir():
        found = sorted(
            (p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not found:
            raise FileNotFoundError(f"{spec}: the folder holds no text files")
    elif _GLOB_CHARS.search(str(spec)):
        found = [Path(p) for p in sorted(glob.glob(str(spec), recursive=True))]
        found = [p for p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{spec}: no file matches this glob")
    else:
        raise FileNotFoundError(f"{spec}: no such file or folder")
    kept = [p for p in found if p.stat().st_size > 0]
    if not kept:
        if len(found) == 1:
            raise InvalidInputError(f"{found[0]} is empty")
        raise InvalidInputError(f"{spec} is empty: its {len(found)} files hold 0 bytes")
    if len(kept) < len(found):
        logger.info("%s: skipping %d empty files", spec, len(found) - len(kept))
    return kept


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


@dataclass(frozen=True, eq=False)
class TokenCache:
    """The corpus as one flat array of token ids on disk.

    Attributes:
        tokens: (n_tokens,) ids, a read-only ``np.memmap`` of ``path``; ``np.uint16`` when the
            tokenizer has at most 65536 tokens, else ``np.uint32``.
        path: the ``.bin`` file (raw ids, native byte order); ``path.with_suffix(".json")``
            is its sidecar (key, files, n_tokens, dtype).
        reused: True when an earlier run's cache was reused (nothing was tokenized).
    """

    tokens: np.ndarray
    path: Path
    reused: bool


def build_token_cache(files: Sequence[Path], tokenizer: Any, cache_dir: Path) -> TokenCache:
    """Tokenize ``files`` into a cache in ``cache_dir``, or reuse the one made before.

    Each file is encoded whole (the ids of ``tokenizer.encode(text)``, ``text`` being the
    file's UTF-8 text as is, with no newline translation), and the files are joined by
    ``tokenizer.eos_token_id``: one EOS after each file but the last. The cache's key is a
    SHA-256 over the files' bytes in order and the tokenizer (vocab, merges, added and special
    tokens, ``add_prefix_space``); file names do not count. The ``.bin`` file and then its
    sidecar are written atomically, so an interrupted build leaves no partial cache.

    Args:
        files: the text files, in order (see ``text_files``).
        tokenizer: a gpt2_dual ``GPT2TokenizerFast`` (or ``GPT2Tokenizer``: same ids, slower).
        cache_dir: the folder of caches (created if needed).

    Returns:
        The ``TokenCache``.

    Raises:
        InvalidInputError: no files; several files and a tokenizer without an EOS token; no
            tokens at all.
        MalformedFileError: a file is not UTF-8 text.
    """
    files = [Path(f) for f in files]
    if not files:
        raise InvalidInputError("build_token_cache: no text files given")
    eos = tokenizer.eos_token_id
    if len(files) > 1 and eos is None:
        raise InvalidInputError(
            f"the tokenizer has no eos_token to join {len(files)} files; set tokenizer.eos_token"
        )
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32)
    key = _cache_key(files, tokenizer, dtype)
    path = Path(cache_dir).expanduser() / f"{key}.bin"
    cached = _reuse(path, key, dtype)
    if cached is not None:
        logger.info("reusing the token cache %s (%d tokens)", path, len(cached))
        return TokenCache(tokens=cached, path=path, reused=True)
    start = time.perf_counter()
    counted = [0]

    def write(f: IO[bytes]) -> None:
        for i, file in enumerate(files):
            ids = encode_text(read_text(file), tokenizer, dtype=dtype)
            if i < len(files) - 1:
                ids = np.append(ids, np.array([eos], dtype))
            f.write(ids.tobytes())
            counted[0] += len(ids)

    atomic_write(path, write)
    n_tokens = counted[0]
    if n_tokens == 0:
        path.unlink()
        raise InvalidInputError(f"{files[0]} holds no tokens")
    meta = dict(format=CACHE_FORMAT, key=key, files=[str(f) for f in files], n_tokens=n_tokens)
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta | {"dtype": dtype.name}) + "\n")
    seconds = time.perf_counter() - start
    logger.info("tokenized %d files: %d tokens in %.1f s: %s", len(files), n_tokens, seconds, path)
    return TokenCache(tokens=np.memmap(path, dtype=dtype, mode="r"), path=path, reused=False)


def encode_text(
    text: str, tokenizer: Any, *, dtype: Any = np.int64, chunk_chars: int = CHUNK_CHARS
) -> np.ndarray:
    """The ids of ``tokenizer.encode(text)``, computed in pieces for speed.

    The text is cut only after a newline between two printable non-space ASCII characters
    (a pre-token boundary for GPT-2's regex in either piece), and only when the tokenizer
    cannot act across such a cut (no ``add_prefix_space``, no normalizer, no added token
    that strips spaces or holds a newline); otherwise it is encoded whole.

    Args:
        text: the text.
        tokenizer: a gpt2_dual GPT-2 tokenizer.
        dtype: the dtype of the result.
        chunk_chars: the least length of a piece (pieces end at the first cut past it).

    Returns:
        (n_tokens,) ids of ``dtype``.
    """
    pieces = list(_pieces(text, chunk_chars)) if _can_cut(tokenizer) else [text]
    # What encode() puts before any text (a BOS token when add_bos_token is set).
    head = tokenizer.encode("", verbose=False)
    chunks: list[np.ndarray] = [np.array(head, dtype)]
    for first in range(0, len(pieces), _PIECES_PER_CALL):
        batch = pieces[first : first + _PIECES_PER_CALL]
        rows = tokenizer(
            batch, add_special_tokens=False, return_attention_mask=False, verbose=False
        )["input_ids"]
        count = sum(map(len, rows))
        chunks.append(np.fromiter(itertools.chain.from_iterable(rows), dtype, count=count))
    return np.concatenate(chunks)


def _can_cut(tokenizer: Any) -> bool:
    if tokenizer.add_prefix_space:
        return False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.normalizer is not None:
        return False
    return not any(
        t.lstrip or t.rstrip or "\n" in t.content for t in tokenizer.added_tokens_decoder.values()
    )


def _pieces(text: str, chunk_chars: int) -> Iterator[str]:
    """``text`` cut at the first safe cut (``_SAFE_CUT``) past every ``chunk_chars``."""
    start = 0
    while len(text) - start > chunk_chars:
        cut = _SAFE_CUT.search(text, start + chunk_chars)
        if cut is None:
            break
        yield text[start : cut.end()]
        start = cut.end()
    yield text[start:]


def _cache_key(files: Sequence[Path], tokenizer: Any, dtype: np.dtype) -> str:
    digest = hashlib.sha256()
    # The tokenizer's JSON holds its vocab, merges and added tokens (with their flags).
    setup = {
        "format": CACHE_FORMAT,
        "dtype": dtype.name,
        "eos": tokenizer.eos_token_id,
        "head": tokenizer.encode("", verbose=False),
        "add_prefix_space": tokenizer.add_prefix_space,
        "n_files": len(files),
    }
    digest.update(json.dumps(setup, sort_keys=True).encode())
    digest.update(hashlib.sha256(tokenizer._tokenizer_json().encode()).digest())
    for file in files:
        digest.update(b"\0file %d\0" % file.stat().st_size)
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _reuse(path: Path, key: str, dtype: np.dtype) -> np.ndarray | None:
    """The tokens of a complete cache at ``path`` made under ``key``, or None."""
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        return None
    try:
        meta = read_json(sidecar)
        n_tokens = int(meta["n_tokens"])
        same = meta["key"] == key and meta["dtype"] == dtype.name
    except (MalformedFileError, KeyError, TypeError, ValueError):
        return None
    if not same or n_tokens < 1 or path.stat().st_size != n_tokens * dtype.itemsize:
        logger.warning("the token cache %s is incomplete; tokenizing again", path)
        return None
    return np.memmap(path, dtype=dtype, mode="r")


def num_blocks(n_tokens: int, block_size: int) -> int:
    """How many whole blocks of ``block_size`` tokens ``n_tokens`` tokens hold (the rest is
    dropped, as transformers' ``run_clm`` does)."""
    if block_size < 1:
        raise OutOfRangeError(f"block_size={block_size} must be at least 1")
    return n_tokens // block_size


class BlockOrder:
    """The fixed order of training blocks: epoch e is the permutation
    ``np.random.default_rng([seed, e]).permutation(n_blocks)``; epochs concatenate into one
    endless sequence of block indices.

    Global micro-batch g (``g = step * accumulation + micro``) is positions
    ``[g * W * B, (g + 1) * W * B)`` of that sequence (W processes of B blocks each), and
    process r takes its r-th slice of B: so N processes with batch B see exactly the blocks of
    one process with N * B, and nothing depends on anything but the seed and the step.

    Args:
        n_blocks: how many blocks the data holds (>= 1).
        seed: the seed (>= 0).
    """

    def __init__(self, n_blocks: int, seed: int) -> None:
        if n_blocks < 1:
            raise InvalidInputError(
                f"n_blocks={n_blocks}: the text must hold at least one block of tokens"
            )
        if seed < 0:
            raise OutOfRangeError(f"seed={seed} must be >= 0")
        self.n_blocks = int(n_blocks)
        self.seed = int(seed)
        self._epochs: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """(n_blocks,) block indices of epoch ``epoch`` (0-based), in order."""
        if epoch not in self._epochs:
            if len(self._epochs) >= 2:  # a batch spans at most a few epochs; keep two
                self._epochs.pop(next(iter(self._epochs)))
            rng = np.random.default_rng([self.seed, epoch])
            self._epochs[epoch] = rng.permutation(self.n_blocks)
        return self._epochs[epoch]

    def micro_batch(
        self,
        step: int,
        micro: int,
        *,
        batch_size: int,
        accumulation: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> np.ndarray:
        """Block indices for optimizer step ``step``, micro-batch ``micro``, process ``rank``.

        Args:
            step: the optimizer step (0-based).
            micro: the micro-batch, ``0 <= micro < accumulation``.
            batch_size: blocks per micro-batch per process.
            accumulation: micro-batches per optimizer step.
            rank: this process, ``0 <= rank < world_size``.
            world_size: how many processes.

        Returns:
            (batch_size,) int64 block indices.
        """
        _check_shape(batch_size, accumulation, world_size)
        if step < 0:
            raise OutOfRangeError(f"step={step} must be >= 0")
        if not 0 <= micro < accumulation:
            raise OutOfRangeError(f"micro={micro} must be in [0, accumulation={accumulation})")
        if not 0 <= rank < world_size:
            raise OutOfRangeError(f"rank={rank} must be in [0, world_size={world_size})")
        start = ((step * accumulation + micro) * world_size + rank) * batch_size
        return self._positions(start, batch_size)

    def epoch(self, step: int, *, batch_size: int, accumulation: int, world_size: int) -> float:
        """Epochs done after ``step`` optimizer steps: blocks consumed / n_blocks."""
        _check_shape(batch_size, accumulation, world_size)
        return step * batch_size * accumulation * world_size / self.n_blocks

    def _positions(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, np.int64)
        done = 0
        while done < count:
            epoch, offset = divmod(start + done, self.n_blocks)
            take = min(count - done, self.n_blocks - offset)
            out[done : done + take] = self.permutation(epoch)[offset : offset + take]
            done += take
        return out


def _check_shape(batch_size: int, accumulation: int, world_size: int) -> None:
    for name, value in (
        ("batch_size", batch_size),
        ("accumulation", accumulation),
        ("world_size", world_size),
    ):
        if value < 1:
            raise OutOfRangeError(f"{name}={value} must be at least 1")


def blocks(tokens: np.ndarray, indices: np.ndarray, block_size: int) -> np.ndarray:
    """The blocks ``indices`` of ``tokens``: block i is ``tokens[i * block_size:(i + 1) *
    block_size]``.

    Args:
        tokens: (n_tokens,) ids (a ``TokenCache.tokens`` memmap).
        indices: (n,) block indices, each below ``num_blocks(len(tokens), block_size)``.
        block_size: tokens per block.

    Returns:
        (n, block_size) int64 ids.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = num_blocks(len(tokens), block_size)
    bad = indices[(indices < 0) | (indices >= n)]
    if bad.size:
        raise OutOfRangeError(
            f"block index {int(bad[0])} is out of range: {len(tokens)} tokens hold {n} blocks "
            f"of {block_size}"
        )
    out = np.empty((len(indices), block_size), np.int64)
    for row, i in enumerate(indices):
        out[row] = tokens[i * block_size : (i + 1) * block_size]
    return out
