"""The GPT-2 vocabulary and configs shipped inside gpt2_dual, verified against pinned sha256.

OpenAI's GPT-2 checkpoints on the Hub (``gpt2`` ... ``gpt2-xl``, ``distilgpt2`` and their
``openai-community/`` / ``distilbert/`` names) all use one byte-level BPE vocabulary. A copy of
its tokenizer files lives in ``gpt2_dual/data/gpt2/``, and each checkpoint's ``config.json`` and
``generation_config.json`` in ``gpt2_dual/data/configs/<name>/``, so that a tokenizer, a
``GPT2Config`` or a ``GenerationConfig`` for those repos loads offline even with an empty Hub
cache (``gpt2_dual.hub.resolve.resolve_file`` falls back to them). Weights are not bundled.

The vocabulary files are byte copies of OpenAI's release (``data/gpt2/NOTICE.md``). The config
files are **reconstructions**: their field values are those of the released files, but their
bytes could not be checked against the Hub's (``data/configs/NOTICE.md`` gives the evidence);
the hashes pinned here are those of the files gpt2_dual ships.

Example:
    >>> from gpt2_dual.hub.resolve import bundled_vocab_dir
    >>> sorted(p.name for p in bundled_vocab_dir().glob("*.json"))[:2]
    ['special_tokens_map.json', 'tokenizer.json']
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from gpt2_dual.errors import HubError

__all__ = [
    "BUNDLED_CONFIG_FILES",
    "BUNDLED_FILES",
    "BUNDLED_GPT2_REPOS",
    "BUNDLED_SHA256",
    "CONFIG_SHA256",
    "bundled_config_dir",
    "bundled_file",
    "bundled_vocab_dir",
]

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
"""Hub repo ids whose tokenizer and config files the bundled copies stand in for."""

BUNDLED_SHA256: Mapping[str, str] = {
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "special_tokens_map.json": "98412137ae43c77f8af52eb51b19c3536d3242cb55339167d841005fa94a23b7",
    "tokenizer.json": "1fe93b6152957cf9cfd6d89002467f789ce8b3f3e000b3a2edf27c808ddd0b9e",
    "tokenizer_config.json": "b6d6e2d83b34280f18571d8306ae4a9a43f672d50a78c5c1b1f249f696fe3a7a",
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
"""Pinned sha256 of every bundled tokenizer file (``NOTICE.md`` is documentation, not data)."""

BUNDLED_FILES: frozenset[str] = frozenset(BUNDLED_SHA256)

# Tokenizer-side files a GPT-2 repo may or may not have. When the Hub cannot be used, the bundle
# stands in for the repo's whole tokenizer file set: an optional one of these that is not bundled
# is reported absent (None) rather than as an offline miss.
TOKENIZER_FILES: frozenset[str] = BUNDLED_FILES | {
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
}

CONFIG_SHA256: Mapping[str, str] = {
    "distilgpt2/config.json": "4ec5947c1d59fee6212cdf3b0ec1a53eac02092554c5ff0a733488cbd2c64f3a",
    "distilgpt2/generation_config.json": (
        "2daeff221b1170acad8e8d77fea56f5e207a79eb00901bf5dd77b1c198def509"
    ),
    "gpt2/config.json": "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4",
    "gpt2/generation_config.json": (
        "2daeff221b1170acad8e8d77fea56f5e207a79eb00901bf5dd77b1c198def509"
    ),
    "gpt2-large/config.json": "7fccdcfd6622055342a734c663ee0b61ff4fd697f42467595df0bf4448c8c170",
    "gpt2-large/generation_config.json": (
        "2daeff221b1170acad8e8d77fea56f5e207a79eb00901bf5dd77b1c198def509"
    ),
    "gpt2-medium/config.json": "ef1a44d889ad1a0acc7731c78134f1b87d2d222f110e97dd10fd4117331caf22",
    "gpt2-medium/generation_config.json": (
        "2daeff221b1170acad8e8d77fea56f5e207a79eb00901bf5dd77b1c198def509"
    ),
    "gpt2-xl/config.json": "be48115d52314bc27327e160bf10197760db02ea689d10adb24db4102edf7a8a",
    "gpt2-xl/generation_config.json": (
        "2daeff221b1170acad8e8d77fea56f5e207a79eb00901bf5dd77b1c198def509"
    ),
}
"""Pinned sha256 of every bundled config file, by ``<checkpoint>/<file>`` (reconstructions: see
the module docstring)."""

#: Config-side files bundled for every repo of ``BUNDLED_GPT2_REPOS``.
BUNDLED_CONFIG_FILES: frozenset[str] = frozenset({"config.json", "generation_config.json"})

_DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "gpt2"
_CONFIGS_DIR = Path(__file__).resolve().parents[1] / "data" / "configs"


def bundled_vocab_dir() -> Path:
    """Return the folder of the bundled GPT-2 vocabulary, after checking every file's sha256.

    The check runs once per process; later calls return the cached result.

    Returns:
        The folder ``gpt2_dual/data/gpt2/`` (holds vocab.json, merges.txt, tokenizer.json,
        tokenizer_config.json and special_tokens_map.json).

    Raises:
        gpt2_dual.errors.HubError: a bundled file is missing or its sha256 does not match.

    Example:
        >>> (bundled_vocab_dir() / "vocab.json").is_file()
        True
    """
    return _verified_data_dir()


def bundled_config_dir(repo_id: str) -> Path:
    """Return the folder of the bundled ``config.json`` / ``generation_config.json`` of a repo.

    Every bundled config file's sha256 is checked once per process.

    Args:
        repo_id: one of ``BUNDLED_GPT2_REPOS`` (``"gpt2"``, ``"openai-community/gpt2-xl"``,
            ``"distilbert/distilgpt2"``, ...).

    Returns:
        ``gpt2_dual/data/configs/<name>/``, ``<name>`` being the repo name without its owner.

    Raises:
        KeyError: ``repo_id`` is not a bundled GPT-2 repo; the message lists them.
        gpt2_dual.errors.HubError: a bundled file is missing or its sha256 does not match.

    Example:
        >>> (bundled_config_dir("openai-community/gpt2") / "config.json").is_file()
        True
    """
    if repo_id not in BUNDLED_GPT2_REPOS:
        raise KeyError(
            f"gpt2_dual: no bundled config for {repo_id!r}; bundled: {sorted(BUNDLED_GPT2_REPOS)}"
        )
    return _verified_configs_dir() / repo_id.rpartition("/")[2]


def bundled_file(repo_id: str, filename: str) -> Path | None:
    """The bundled copy of ``filename`` for ``repo_id``, or ``None`` if none is shipped.

    Tokenizer files come from the shared vocabulary (``bundled_vocab_dir``), ``config.json``
    and ``generation_config.json`` from the repo's own folder (``bundled_config_dir``).

    Example:
        >>> bundled_file("gpt2", "merges.txt").name, bundled_file("gpt2", "model.safetensors")
        ('merges.txt', None)
    """
    if repo_id not in BUNDLED_GPT2_REPOS:
        return None
    if filename in BUNDLED_FILES:
        return bundled_vocab_dir() / filename
    if filename in BUNDLED_CONFIG_FILES:
        return bundled_config_dir(repo_id) / filename
    return None


@functools.lru_cache(maxsize=1)
def _verified_data_dir() -> Path:
    return _verify_dir(_DATA_DIR)


@functools.lru_cache(maxsize=1)
def _verified_configs_dir() -> Path:
    return _verify_dir(_CONFIGS_DIR, CONFIG_SHA256)


def _verify_dir(path: str | os.PathLike, hashes: Mapping[str, str] = BUNDLED_SHA256) -> Path:
    """Check that ``path`` holds every file of ``hashes`` with the pinned sha256.

    Args:
        path: folder to check.
        hashes: file name -> expected sha256 (hex).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        gpt2_dual.errors.HubError: naming the first missing or mismatching file.
    """
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
