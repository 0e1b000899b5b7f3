"""Finding and reading GPT-2 tokenizer files in the Hugging Face layout.

The files are ``vocab.json`` + ``merges.txt`` (OpenAI's ``encoder.json`` / ``vocab.bpe``),
``tokenizer.json`` (the ``tokenizers`` library's file), and ``tokenizer_config.json``,
``special_tokens_map.json``, ``added_tokens.json`` as transformers writes them. Both tokenizer
classes load through this module and save through ``writing``, so they read and write exactly
the same things. (Chat templates: ``chat``.)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_dual._io import check_field, json_type, read_json_object, read_text
from gpt2_dual.errors import MalformedFileError

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
    "chat_template",
    "do_lower_case",
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
        gpt2_dual.hub.resolve.HubError: the folder or repo cannot be reached (see ``resolve_file``).
    """
    # Imported here, like GPT2Config.from_pretrained does: the Hub machinery loads on first use.
    from gpt2_dual.hub.resolve import resolve_file

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


#: Largest token id a vocabulary file may hold (a table of that many entries is built).
MAX_TOKEN_ID = 2**24


def _bad(path: Any, problem: str) -> MalformedFileError:
    return MalformedFileError(f"{path}: {problem}")


def _check_vocab(vocab: Any, source: Any) -> dict[str, int]:
    """``vocab`` checked to be an object of token -> id with ids in [0, MAX_TOKEN_ID)."""
    if not isinstance(vocab, dict):
        raise _bad(source, f"the vocabulary must be a JSON object of token -> id, found "
                   f"{json_type(vocab)}")  # fmt: skip
    for token, token_id in vocab.items():
        if type(token_id) is not int or not 0 <= token_id < MAX_TOKEN_ID:
            raise _bad(
                source,
                f"token {token!r:.40} has id {token_id!r:.40}; ids must be integers in "
                f"[0, {MAX_TOKEN_ID})",
            )
    return vocab


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read ``vocab.json`` (token -> id).

    Raises:
        MalformedFileError: (a ValueError) not UTF-8 JSON, or not an object of string -> int;
            names the file.
    """
    return _check_vocab(read_json_object(path), path)


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read ``merges.txt``: an optional ``#version`` line, then one ``a b`` merge per line.

    Raises:
        MalformedFileError: (a ValueError) not UTF-8, or a line that is not two
            space-separated tokens (names the file and line).
    """
    lines = read_text(path).split("\n")
    start = 1 if lines and lines[0].startswith("#version") else 0
    merges = []
    for lineno, line in enumerate(lines[start:], start + 1):
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            if not parts[0] and len(parts) == 1:
                continue  # blank line (the file ends with one)
            raise MalformedFileError(
                f"{path}, line {lineno}: expected two tokens 'a b', got {line!r:.80}"
            )
        merges.append((parts[0], parts[1]))
    return merges


def parse_merges(raw: Any, source: str) -> list[tuple[str, str]]:
    """Merges of a ``tokenizer.json``: legacy strings (``"Ġ t"``) or pairs (``["Ġ", "t"]``)."""
    if not isinstance(raw, list):
        raise _bad(source, f"model.merges must be an array, found {json_type(raw)}")
    merges = []
    for i, m in enumerate(raw):
        pair = m.split(" ") if isinstance(m, str) else m
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(p, str) and p for p in pair)
        ):
            raise _bad(source, f"merge {i} is not a pair of tokens: {m!r:.80}")
        merges.append((pair[0], pair[1]))
    return merges


def read_tokenizer_json(
    path: str | os.PathLike,
) -> tuple[dict[str, int], list[tuple[str, str]], list[AddedTokenSpec]]:
    """Read the BPE model and added tokens of a ``tokenizer.json``.

    Returns:
        ``(vocab, merges, added_tokens)``.

    Raises:
        MalformedFileError: (a ValueError) not a byte-level BPE tokenizer without normalizer,
            or a part of the wrong type; names the file.
    """
    data = read_json_object(path)
    model = data.get("model")
    if not isinstance(model, dict):
        raise _bad(path, f"'model' must be a JSON object, found {json_type(model)}")
    check_tokenizer_json(str(path), model.get("type", "BPE"), data.get("normalizer"))
    vocab = _check_vocab(model.get("vocab"), path)
    added_raw = data.get("added_tokens") or []
    if not isinstance(added_raw, list):
        raise _bad(path, f"'added_tokens' must be an array, found {json_type(added_raw)}")
    added = []
    for n, t in enumerate(added_raw):
        ok = isinstance(t, dict) and type(t.get("id")) is int and 0 <= t["id"] < MAX_TOKEN_ID
        if not ok or not isinstance(t.get("content"), str) or not t["content"]:
            raise _bad(path, f"added_tokens[{n}] must be an object with an integer 'id' in "
                       f"[0, {MAX_TOKEN_ID}) and a non-empty 'content' string, found "
                       f"{t!r:.80}")  # fmt: skip
        added.append(added_from_dict(t, t["id"]))
    return dict(vocab), parse_merges(model.get("merges", []), str(path)), added


def check_tokenizer_json(source: str, model_type: Any, normalizer: Any) -> None:
    """Raise MalformedFileError unless a ``tokenizer.json`` is GPT-2 style: BPE, no
    normalizer."""
    if model_type != "BPE":
        raise _bad(source, f"expected a BPE model, got {model_type!r:.80}")
    if normalizer is not None:
        raise _bad(source, "a normalizer is not supported by GPT-2 tokenizers")


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


#: Types of ``tokenizer_config.json`` / ``special_tokens_map.json`` keys (others are ignored).
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    **{attr: (str, dict) for attr in SPECIAL_ATTRS},
    "additional_special_tokens": (list,),
    "added_tokens_decoder": (dict,),
    "add_prefix_space": (bool,),
    "add_bos_token": (bool,),
    "errors": (str,),
    "model_max_length": (int, float),
    "clean_up_tokenization_spaces": (bool,),
    "padding_side": (str,),
    "truncation_side": (str,),
    "chat_template": (str, list),
    "do_lower_case": (bool,),
}


def _check_config(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of a tokenizer config file that this package reads, type-checked."""
    for key, types in _CONFIG_TYPES.items():
        check_field(path, data, key, types)
    for attr in (*SPECIAL_ATTRS, "additional_special_tokens"):
        tokens = data.get(attr)
        for token in tokens if isinstance(tokens, list) else [tokens]:
            if isinstance(token, dict) and not isinstance(token.get("content"), str):
                raise _bad(path, f"{attr} must be a token string or an object with a "
                           f"'content' string, found {token!r:.80}")  # fmt: skip
            if token is not None and not isinstance(token, str | dict):
                raise _bad(path, f"{attr} must hold token strings, found {token!r:.80}")
    for side in ("padding_side", "truncation_side"):
        if data.get(side) not in (None, "left", "right"):
            raise _bad(path, f"{side} must be 'left' or 'right', found {data[side]!r:.80}")
    length = data.get("model_max_length")
    if length is not None and not (length > 0 and math.isfinite(length)):
        raise _bad(path, f"model_max_length must be a positive number, found {length!r}")
    if isinstance(length, float):
        data["model_max_length"] = int(length)
    decoder = data.get("added_tokens_decoder") or {}
    for key, token in decoder.items():
        if not key.isdigit() or int(key) >= MAX_TOKEN_ID:
            raise _bad(path, f"added_tokens_decoder key {key!r:.40} is not a token id in "
                       f"[0, {MAX_TOKEN_ID})")  # fmt: skip
        if not (
            isinstance(token, str)
            or isinstance(token, dict)
            and isinstance(token.get("content"), str)
            and token["content"]
        ):
            raise _bad(path, f"added_tokens_decoder[{key!r}] must be an object with a "
                       f"non-empty 'content' string, found {token!r:.80}")  # fmt: skip
    return data


def read_config(files: dict[str, Path | None]) -> dict[str, Any]:
    """Constructor arguments from ``tokenizer_config.json``, ``special_tokens_map.json`` and
    ``added_tokens.json``, with transformers' precedence.

    A config with ``added_tokens_decoder`` (transformers >= 4.34) is used alone; an older one is
    completed by ``special_tokens_map.json`` (which wins) and ``added_tokens.json``.

    Returns:
        A dict with keys from ``CONFIG_KEYS`` plus ``vocab_file``, ``merges_file``,
        ``tokenizer_file``; ``added_tokens_decoder`` maps id -> token dict.

    Raises:
        MalformedFileError: (a ValueError) a file is not UTF-8 JSON, not an object, or a key
            has a value of the wrong type; names the file, key and value.
    """
    config: dict[str, Any] = {}
    if (p := files.get(CONFIG_NAME)) is not None:
        config.update(_check_config(p, read_json_object(p)))
    decoder = {int(k): v for k, v in (config.get("added_tokens_decoder") or {}).items()}
    if "added_tokens_decoder" not in config:
        if (p := files.get(SPECIAL_MAP_NAME)) is not None:
            config.update(_check_config(p, read_json_object(p)))
        if (p := files.get(ADDED_NAME)) is not None:
            for content, token_id in _check_vocab(read_json_object(p), p).items():
                decoder.setdefault(token_id, {"content": content})
    config = {k: v for k, v in config.items() if k in CONFIG_KEYS}
    config["added_tokens_decoder"] = decoder
    config["vocab_file"] = files.get(VOCAB_NAME)
    config["merges_file"] = files.get(MERGES_NAME)
    config["tokenizer_file"] = files.get(TOKENIZER_NAME)
    return config
