"""The neutral part of every pipeline: ``Pipeline`` (batching, defaults, framework calls) and
the helpers the task modules share (padding, softmax, character offsets of tokens).

The framework work (loading, one forward pass, ``generate``) is in ``gpt2_dual.pt.pipelines``
and ``gpt2_dual.tf.pipelines``, two small modules with the same functions.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gpt2_dual.tokenizer.base import GPT2TokenizerBase
from gpt2_dual.tokenizer.vocab import token_bytes

logger = logging.getLogger(__name__)

__all__ = ["Pipeline", "batches", "encode_with_offsets", "pad", "softmax", "word_ids"]

class Pipeline:
    """What the four task pipelines share: the model, tokenizer, backend and default options.

    Attributes:
        task: the task name.
        model: the gpt2_dual model.
        tokenizer: the gpt2_dual tokenizer.
        framework: "pt" or "tf".
    """

    task = ""
    #: options a call accepts besides ``batch_size`` (task-specific; checked by ``_options``).
    options: tuple[str, ...] = ()

    def __init__(
        self,
        model: Any,
        tokenizer: GPT2TokenizerBase,
        *,
        framework: str,
        backend: Any,
        device: Any = None,
        batch_size: int | None = None,
        **defaults: Any,
    ) -> None:
        self.model, self.tokenizer, self.framework = model, tokenizer, framework
        self._backend = backend
        self._scope = backend.device_scope(device)
        self._defaults = {"batch_size": batch_size or 1, **defaults}
        self._options(self._defaults)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Call options over the pipeline's defaults; TypeError for unknown ones."""
        params = {**self._defaults, **kwargs}
        unknown = sorted(set(params) - {"batch_size", *self.options})
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {unknown}; it takes "
                f"{sorted({'batch_size', *self.options})}"
            )
        size = params["batch_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"batch_size must be a positive int, got {size!r}")
        return params

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """One forward pass: ``(B, T)`` int64 ids and mask in; float32 numpy outputs
        (``logits``, ``start_logits``, ``end_logits``) out."""
        with self._scope():
            return self._backend.forward(self.model, input_ids, attention_mask)

    @property
    def max_positions(self) -> int:
        """Longest input: the model's ``n_positions`` and the tokenizer's ``model_max_length``."""
        return min(self.model.config.n_positions, self.tokenizer.model_max_length)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, framework={self.framework!r}, "
            f"model={type(self.model).__name__})"
        )


# ----- neutral helpers the tasks share ----------------------------------------------------------


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive chunks of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids padded to one length on ``side``: ``(B, T)`` int64 ids and mask."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols], mask[i, cols] = row, 1
    return ids, mask


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float64-safe shift by the max)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def encode_with_offsets(
    tokenizer: GPT2TokenizerBase,
    text: str,
    limit: int | None = None,
    add_special_tokens: bool = True,
) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Ids, character offsets and special-tokens mask of ``text``, as transformers' fast
    tokenizers give them (the BOS the tokenizer adds is special and has offsets (0, 0); tokens
    written in the text, ``<|endoftext|>`` included, are not).

    The fast tokenizer reports offsets itself; for the pure-Python one they come from the
    tokens' bytes (``offsets_from_bytes``), with the same results.

    Args:
        tokenizer: a gpt2_dual tokenizer.
        text: the text.
        limit: keep at most this many tokens (BOS included), cut on the right.
        add_special_tokens: add the tokenizer's BOS when it has ``add_bos_token``.

    Returns:
        ``(ids, offsets, special)``: lists of one entry per token.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    except NotImplementedError:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        offsets = offsets_from_bytes(tokenizer, text, ids)
    special = [0] * len(ids)
    if add_special_tokens and tokenizer.add_bos_token and tokenizer.bos_token_id is not None:
        ids, offsets, special = [tokenizer.bos_token_id, *ids], [(0, 0), *offsets], [1, *special]
    if limit is not None:
        ids, offsets, special = ids[:limit], offsets[:limit], special[:limit]
    return ids, offsets, special


def offsets_from_bytes(
    tokenizer: GPT2TokenizerBase, text: str, ids: Sequence[int]
) -> list[tuple[int, int]]:
    """Character span of each token of ``text`` (encoded without special tokens), from the
    tokens' bytes: a token covers the characters its bytes touch, so the tokens of one
    multi-byte character share its span. A space the tokenizer added (``add_prefix_space``)
    and whitespace an added token strips are not part of any span.

    Raises:
        ValueError: the tokens do not spell ``text`` (ids from another text or tokenizer).
    """
    data = text.encode("utf-8")
    char_of = np.repeat(np.arange(len(text) + 1), [*(len(c.encode()) for c in text), 1])
    added = {i: t.content.encode("utf-8") for i, t in tokenizer.added_tokens_decoder.items()}
    pos, out = 0, []
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        piece = added.get(token_id) or token_bytes(token)
        start = pos
        while (
            start < len(data)
            and data[start : start + 1].isspace()
            and not data.startswith(piece, start)
        ):
            start += 1  # whitespace stripped by an added token
        if data.startswith(piece, start):
            pos = start + len(piece)
        elif piece.startswith(b" ") and data.startswith(piece[1:], pos):
            start, pos = pos, pos + len(piece) - 1  # the space add_prefix_space put in front
        else:
            raise ValueError(f"token {token!r} at byte {pos} does not match the text {text!r}")
        end = int(char_of[pos - 1]) + 1 if pos > start else int(char_of[start])
        out.append((int(char_of[start]), end))
    return out


def word_ids(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Index of the pre-tokenizer word (GPT-2's regex split of ``text``) holding each token,
    found from the token's start offset: the words of transformers' fast GPT-2 tokenizer."""
    import regex

    from gpt2_dual.tokenizer.slow import PATTERN

    starts = [m.start() for m in regex.finditer(PATTERN, text)] or [0]
    return [max(bisect_right(starts, start) - 1, 0) for start, _ in offsets]
