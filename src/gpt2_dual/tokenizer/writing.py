"""Writing GPT-2 tokenizer files in the Hugging Face layout: ``vocab.json`` + ``merges.txt``,
``tokenizer.json`` (as the ``tokenizers`` library writes it) and the JSON config files, each
atomically. (Reading them: ``files``.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpt2_dual._io import atomic_write_text
from gpt2_dual.tokenizer.files import MERGES_NAME, VOCAB_NAME, AddedTokenSpec


def tokenizer_json_dict(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    added: list[AddedTokenSpec],
    add_prefix_space: bool,
    *,
    unk_token: str | None = None,
) -> dict[str, Any]:
    """The ``tokenizer.json`` content for a GPT-2 byte-level BPE, as ``tokenizers`` writes it
    (``unk_token``: the model's, for a vocabulary that lacks byte tokens)."""

    def byte_level(prefix: bool, trim: bool) -> dict[str, Any]:
        return {
            "type": "ByteLevel",
            "add_prefix_space": prefix,
            "trim_offsets": trim,
            "use_regex": True,
        }

    flags = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
    added_json = [
        {"id": t.id, **{k: getattr(t, k) for k in flags}} for t in sorted(added, key=lambda t: t.id)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_json,
        "normalizer": None,
        "pre_tokenizer": byte_level(add_prefix_space, True),
        "post_processor": byte_level(True, False),
        "decoder": byte_level(True, True),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk_token,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])),
            "merges": [list(m) for m in merges],
        },
    }


def write_vocabulary(
    directory: str | os.PathLike,
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    filename_prefix: str | None = None,
) -> tuple[str, str]:
    """Write ``vocab.json`` and ``merges.txt`` (optionally ``{prefix}-vocab.json`` ...).

    Returns:
        The two paths written.

    Raises:
        NotADirectoryError: ``directory`` is not an existing folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"save_vocabulary needs an existing folder, got {directory}")
    prefix = f"{filename_prefix}-" if filename_prefix else ""
    vocab_path, merges_path = (
        directory / f"{prefix}{VOCAB_NAME}",
        directory / f"{prefix}{MERGES_NAME}",
    )
    by_id = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    atomic_write_text(vocab_path, json.dumps(by_id, ensure_ascii=False) + "\n")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    atomic_write_text(merges_path, "\n".join(lines) + "\n")
    return str(vocab_path), str(merges_path)


def write_json(path: Path, data: Any, indent: int | None = 2) -> str:
    """Write ``data`` as sorted JSON atomically (transformers' formatting); return the path."""
    text = json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False)
    atomic_write_text(path, text + "\n")
    return str(path)
