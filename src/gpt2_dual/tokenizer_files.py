"""Reading and writing GPT-2 tokenizer files in the Hugging Face layout.

The files are ``vocab.json`` + ``merges.txt`` (OpenAI's ``encoder.json`` / ``vocab.bpe``),
``tokenizer.json`` (the ``tokenizers`` library's file), and ``tokenizer_config.json``,
``special_tokens_map.json``, ``added_tokens.json`` as transformers writes them. Both tokenizer
classes load and save through this module, so they read and write exactly the same things.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_dual._io import atomic_write_text

VOCAB_NAME = "vocab.json"
MERGES_NAME = "merges.txt"
TOKENIZER_NAME = "tokenizer.json"
CONFIG_NAME = "tokenizer_config.json"
SPECIAL_MAP_NAME = "special_tokens_map.json"
ADDED_NAME = "added_tokens.json"
ALL_NAMES = (TOKENIZER_NAME, VOCAB_NAME, MERGES_NAME, CONFIG_NAME, SPECIAL_MAP_NAME, ADDED_NAME)

#: transformers' "no limit" value for ``model_max_length``.
VERY_LARGE_INTEGER = int(1e30)

#: Special-token attributes, in transformers' order.
SPECIAL_ATTRS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

#: ``tokenizer_config.json`` keys that become constructor arguments.
CONFIG_KEYS = (
    *SPECIAL_ATTRS,
    "additional_special_tokens",
    "added_tokens_decoder",
    "add_prefix_space",
    "add_bos_token",
    "errors",
    "model_max_length",
    "clean_up_tokenization_spaces",
    "padding_side",
    "truncation_side",
)


@dataclass(frozen=True)
class AddedTokenSpec:
    """One added token, with the flags of ``tokenizers.AddedToken``."""

    content: str
    id: int
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True
    single_word: bool = False

    def to_dict(self, *, with_special: bool = True) -> dict[str, Any]:
        """The token as transformers writes it (keys sorted like transformers)."""
        d: dict[str, Any] = {
            "content": self.content,
            "lstrip": self.lstrip,
            "normalized": self.normalized,
            "rstrip": self.rstrip,
            "single_word": self.single_word,
        }
        if with_special:
            d["special"] = self.special
        return d


def find_files(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str = "",
) -> dict[str, Path | None]:
    """Locate the tokenizer files of a local folder or a Hub repo.

    Returns:
        File name -> local path, or None where the file does not exist.

    Raises:
        FileNotFoundError: neither ``tokenizer.json`` nor ``vocab.json`` with ``merges.txt``.
        gpt2_dual.hub.HubError: the folder or repo cannot be reached (see ``resolve_file``).
    """
    # Imported here, like GPT2Config.from_pretrained does: the Hub machinery loads on first use.
    from gpt2_dual.hub import resolve_file

    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    paths = {
        name: resolve_file(
            path_or_repo_id, name, token=token, subfolder=subfolder, required=False, **hub
        )
        for name in ALL_NAMES
    }
    where = str(Path(path_or_repo_id) / subfolder) if subfolder else str(path_or_repo_id)
    has_pair = paths[VOCAB_NAME] is not None and paths[MERGES_NAME] is not None
    if paths[TOKENIZER_NAME] is None and not has_pair:
        found = [n for n in ALL_NAMES if paths[n] is not None]
        raise FileNotFoundError(
            f"No GPT-2 tokenizer files in {where}: looked for {TOKENIZER_NAME}, or "
            f"{VOCAB_NAME} together with {MERGES_NAME} (found: {', '.join(found) or 'none'})"
        )
    return paths


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read ``vocab.json`` (token -> id).

    Raises:
        ValueError: not a JSON object of string -> int.
    """
    vocab = _read_json(Path(path))
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"{path} is not a vocabulary: expected a JSON object of token -> id")
    return vocab


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read ``merges.txt``: an optional ``#version`` line, then one ``a b`` merge per line.

    Raises:
        ValueError: a line that is not two space-separated tokens (names the line).
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = 1 if lines and lines[0].startswith("#version") else 0
    merges = []
    for lineno, line in enumerate(lines[start:], start + 1):
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2:
            if not parts[0] and len(parts) == 1:
                continue  # blank line (the file ends with one)
            raise ValueError(f"{path}, line {lineno}: expected two tokens 'a b', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def parse_merges(raw: list[Any], source: str) -> list[tuple[str, str]]:
    """Merges of a ``tokenizer.json``: legacy strings (``"Ġ t"``) or pairs (``["Ġ", "t"]``)."""
    merges = []
    for i, m in enumerate(raw):
        pair = m.split(" ") if isinstance(m, str) else m
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"{source}: merge {i} is not a pair of tokens: {m!r}")
        merges.append((pair[0], pair[1]))
    return merges


def read_tokenizer_json(
    path: str | os.PathLike,
) -> tuple[dict[str, int], list[tuple[str, str]], list[AddedTokenSpec]]:
    """Read the BPE model and added tokens of a ``tokenizer.json``.

    Returns:
        ``(vocab, merges, added_tokens)``.

    Raises:
        ValueError: not a byte-level BPE tokenizer without normalizer.
    """
    data = _read_json(Path(path))
    model = data.get("model") if isinstance(data, dict) else None
    model_type = model.get("type", "BPE") if isinstance(model, dict) else None
    check_tokenizer_json(str(path), model_type, data.get("normalizer"))
    added = [added_from_dict(t, int(t["id"])) for t in data.get("added_tokens") or []]
    return dict(model["vocab"]), parse_merges(model.get("merges", []), str(path)), added


def check_tokenizer_json(source: str, model_type: Any, normalizer: Any) -> None:
    """Raise ValueError unless a ``tokenizer.json`` is GPT-2 style: BPE, no normalizer."""
    if model_type != "BPE":
        raise ValueError(f"{source}: expected a BPE model, got {model_type!r}")
    if normalizer is not None:
        raise ValueError(f"{source}: a normalizer is not supported by GPT-2 tokenizers")


def added_from_dict(
    d: dict[str, Any] | str, token_id: int, special: bool = False
) -> AddedTokenSpec:
    """An ``AddedTokenSpec`` from transformers' or tokenizers' JSON form (or a bare string)."""
    if isinstance(d, str):
        return AddedTokenSpec(d, token_id, special=special, normalized=not special)
    return AddedTokenSpec(
        content=d["content"],
        id=token_id,
        special=bool(d.get("special", special)),
        lstrip=bool(d.get("lstrip", False)),
        rstrip=bool(d.get("rstrip", False)),
        normalized=bool(d.get("normalized", not d.get("special", special))),
        single_word=bool(d.get("single_word", False)),
    )


def read_config(files: dict[str, Path | None]) -> dict[str, Any]:
    """Constructor arguments from ``tokenizer_config.json``, ``special_tokens_map.json`` and
    ``added_tokens.json``, with transformers' precedence.

    A config with ``added_tokens_decoder`` (transformers >= 4.34) is used alone; an older one is
    completed by ``special_tokens_map.json`` (which wins) and ``added_tokens.json``.

    Returns:
        A dict with keys from ``CONFIG_KEYS`` plus ``vocab_file``, ``merges_file``,
        ``tokenizer_file``; ``added_tokens_decoder`` maps id -> token dict.
    """
    config: dict[str, Any] = {}
    if (p := files.get(CONFIG_NAME)) is not None:
        config.update(_read_json(p))
    decoder = {int(k): v for k, v in (config.get("added_tokens_decoder") or {}).items()}
    if "added_tokens_decoder" not in config:
        if (p := files.get(SPECIAL_MAP_NAME)) is not None:
            config.update(_read_json(p))
        if (p := files.get(ADDED_NAME)) is not None:
            for content, token_id in _read_json(p).items():
                decoder.setdefault(int(token_id), {"content": content})
    config = {k: v for k, v in config.items() if k in CONFIG_KEYS}
    config["added_tokens_decoder"] = decoder
    config["vocab_file"] = files.get(VOCAB_NAME)
    config["merges_file"] = files.get(MERGES_NAME)
    config["tokenizer_file"] = files.get(TOKENIZER_NAME)
    return config


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
