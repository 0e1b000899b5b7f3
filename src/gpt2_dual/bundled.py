"""The GPT-2 vocabulary shipped inside gpt2_dual, verified against pinned sha256 hashes.

OpenAI's GPT-2 checkpoints on the Hub (``gpt2`` ... ``gpt2-xl``, ``distilgpt2`` and their
``openai-community/`` / ``distilbert/`` names) all use one byte-level BPE vocabulary. A copy of
its tokenizer files lives in ``gpt2_dual/data/gpt2/`` so that a tokenizer for those repos loads
offline even with an empty Hub cache (``gpt2_dual.hub.resolve_file`` falls back to it).

Example:
    >>> from gpt2_dual.hub import bundled_vocab_dir
    >>> sorted(p.name for p in bundled_vocab_dir().glob("*.json"))[:2]
    ['special_tokens_map.json', 'tokenizer.json']
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["BUNDLED_FILES", "BUNDLED_GPT2_REPOS", "BUNDLED_SHA256", "bundled_vocab_dir"]

BUNDLED_GPT2_REPOS: frozenset[str] = frozenset(
    {
        "gpt2",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "distilgpt2",
        "openai-community/gpt2",
        "openai-community/gpt2-medium",
        "openai-community/gpt2-large",
        "openai-community/gpt2-xl",
        "distilbert/distilgpt2",
    }
)
"""Hub repo ids whose tokenizer files the bundled vocabulary stands in for."""

BUNDLED_SHA256: Mapping[str, str] = {
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "special_tokens_map.json": "98412137ae43c77f8af52eb51b19c3536d3242cb55339167d841005fa94a23b7",
    "tokenizer.json": "1fe93b6152957cf9cfd6d89002467f789ce8b3f3e000b3a2edf27c808ddd0b9e",
    "tokenizer_config.json": "b6d6e2d83b34280f18571d8306ae4a9a43f672d50a78c5c1b1f249f696fe3a7a",
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
"""Pinned sha256 of every bundled file (``NOTICE.md`` is documentation, not data)."""

BUNDLED_FILES: frozenset[str] = frozenset(BUNDLED_SHA256)

# Tokenizer-side files a GPT-2 repo may or may not have. When the Hub cannot be used, the bundle
# stands in for the repo's whole tokenizer file set: an optional one of these that is not bundled
# is reported absent (None) rather than as an offline miss.
TOKENIZER_FILES: frozenset[str] = BUNDLED_FILES | {
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
}

_DATA_DIR = Path(__file__).resolve().parent / "data" / "gpt2"


def bundled_vocab_dir() -> Path:
    """Return the folder of the bundled GPT-2 vocabulary, after checking every file's sha256.

    The check runs once per process; later calls return the cached result.

    Returns:
        The folder ``gpt2_dual/data/gpt2/`` (holds vocab.json, merges.txt, tokenizer.json,
        tokenizer_config.json and special_tokens_map.json).

    Raises:
        gpt2_dual.hub.HubError: a bundled file is missing or its sha256 does not match.

    Example:
        >>> (bundled_vocab_dir() / "vocab.json").is_file()
        True
    """
    return _verified_data_dir()


@functools.lru_cache(maxsize=1)
def _verified_data_dir() -> Path:
    return _verify_dir(_DATA_DIR)


def _verify_dir(path: str | os.PathLike, hashes: Mapping[str, str] = BUNDLED_SHA256) -> Path:
    """Check that ``path`` holds every file of ``hashes`` with the pinned sha256.

    Args:
        path: folder to check.
        hashes: file name -> expected sha256 (hex).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        gpt2_dual.hub.HubError: naming the first missing or mismatching file.
    """
    from gpt2_dual.hub import HubError  # hub imports this module; import lazily

    folder = Path(path)
    for name, expected in sorted(hashes.items()):
        file = folder / name
        if not file.is_file():
            raise HubError(
                f"gpt2_dual: bundled file '{name}' is missing from {folder}; "
                "the installation is incomplete, reinstall gpt2_dual"
            )
        actual = _sha256(file)
        if actual != expected:
            raise HubError(
                f"gpt2_dual: bundled file '{name}' in {folder} does not match its pinned sha256 "
                f"(expected {expected}, got {actual}); the installation is corrupted, "
                "reinstall gpt2_dual"
            )
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
