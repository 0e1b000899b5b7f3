"""Texts and text pairs, from the caller's arguments to finished rows of ids.

GPT-2 has no pair format of its own. As in transformers, a pair's row is the first text's ids
then the second's, each preceded by ``bos_token`` when ``add_bos_token`` is set (transformers'
slow ``GPT2Tokenizer``; its fast class never adds BOS); ``token_type_ids`` are 0 over the first
part and 1 over the second, and ``special_tokens_mask`` is 1 on the BOS ids added here.

Truncation keeps ``max_length`` ids per row, special ones included. A pair truncated
"longest_first" keeps the shorter text whole when the longer one can absorb the cut, else
splits the budget evenly, the longer text keeping the odd id: the rule of ``tokenizers``, hence
of transformers' ``GPT2TokenizerFast`` (its slow class gives the odd id to the first text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpt2_dual.errors import InputTypeError, InvalidInputError
from gpt2_dual.tokenizer.encoding import truncate

#: transformers' errors (type and text) for a batch of texts with a mismatched ``text_pair``.
PAIR_NOT_A_BATCH = (
    "when tokenizing batches of text, `text_pair` must be a list or tuple with the same length "
    "as `text`."
)
Texts = list[str]


def _all_str(items: Sequence[Any]) -> bool:
    return all(isinstance(t, str) for t in items)


def _is_pair(item: Any) -> bool:
    return isinstance(item, list | tuple) and len(item) == 2 and _all_str(item)


def _describe(value: Any) -> str:
    """``value``'s type, and for a list the first item that is not a str (``list holding int``)."""
    if isinstance(value, list | tuple):
        odd = next((t for t in value if not isinstance(t, str)), None)
        if odd is not None:
            return f"{type(value).__name__} holding {type(odd).__name__} {odd!r:.40}"
    return type(value).__name__


def split_inputs(text: Any, text_pair: Any) -> tuple[Texts, Texts | None, bool]:
    """The first texts, the second texts (None without pairs) and whether it is a batch.

    ``text`` is a str, a list/tuple of str (a batch), or a list of ``(text, text_pair)``
    pairs; ``text_pair`` is None, a str (with one text) or a list of str (with a batch).

    Raises:
        InputTypeError: (a TypeError) a type not listed above (transformers' message for a
            str ``text_pair`` with a batch).
        InvalidInputError: (a ValueError) a batch and a ``text_pair`` list of different
            lengths (transformers' message).
    """
    if isinstance(text, str):
        if text_pair is None or isinstance(text_pair, str):
            return [text], None if text_pair is None else [text_pair], False
        raise InputTypeError(
            f"text_pair must be a str when text is one str, got {type(text_pair).__name__}"
        )
    if not isinstance(text, list | tuple) or not (
        _all_str(text) or (text_pair is None and all(map(_is_pair, text)))
    ):
        raise InputTypeError(
            "text must be a str, a list of str or a list of (text, text_pair) pairs of str, got "
            f"{_describe(text)}"
        )
    if text_pair is None:
        if _all_str(text):
            return list(text), None, True
        return [p[0] for p in text], [p[1] for p in text], True
    if isinstance(text_pair, str):
        raise InputTypeError(PAIR_NOT_A_BATCH)
    if not isinstance(text_pair, list | tuple) or not _all_str(text_pair):
        raise InputTypeError(
            f"text_pair must be a list of str with a batch of texts, got {_describe(text_pair)}"
        )
    if len(text) != len(text_pair):
        raise InvalidInputError(
            f"batch length of `text`: {len(text)} does not match batch length of `text_pair`: "
            f"{len(text_pair)}."
        )
    return list(text), list(text_pair), True


def kept_lengths(n1: int, n2: int | None, budget: int, strategy: str) -> tuple[int, int | None]:
    """How many ids of the first and second text a row keeps, its specials set aside.

    Args:
        n1, n2: the texts' lengths in ids (``n2`` None for a single text).
        budget: ``max_length`` less the special ids the row gets.
        strategy: "longest_first", "only_first" or "only_second".

    Raises:
        InvalidInputError: "only_first"/"only_second" cannot cut enough from that text while
            keeping one id of it (transformers' slow message), or "only_second" without a pair.
    """
    budget = max(budget, 0)
    total = n1 + (n2 or 0)
    if total <= budget:
        return n1, n2
    if n2 is None:
        if strategy == "only_second":
            raise InvalidInputError(
                f"truncation='only_second' cuts the second text of a pair, but this text has "
                f"none and needs {total - budget} ids cut; use truncation=True"
            )
        return budget, None
    if strategy == "longest_first":
        return _longest_first(n1, n2, budget)
    remove = total - budget
    first = strategy == "only_first"
    length = n1 if first else n2
    if length <= remove:
        which, other = ("first", "only_second") if first else ("second", "only_first")
        raise InvalidInputError(
            f"We need to remove {remove} to truncate the input but the {which} sequence has a "
            f"length {length}. Please select another truncation strategy than "
            f"TruncationStrategy.{strategy.upper()}, for instance 'longest_first' or '{other}'."
        )
    return (n1 - remove, n2) if first else (n1, n2 - remove)


def _longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """``tokenizers``' pair rule: the shorter text stays whole when it fits in half; otherwise
    each gets half, the longer one the odd id."""
    short, long_ = min(n1, n2), max(n1, n2)
    if short > budget:
        long_ = short
    else:
        long_ = max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if n1 > n2 else (short, long_)


def build_rows(
    ids: list[list[int]],
    offsets: list[Any] | None,
    *,
    paired: bool,
    bos: int | None,
    limit: int | None,
    strategy: str,
    side: str,
    columns: Sequence[str] = (),
) -> dict[str, list[list[Any]]]:
    """The rows of a call: truncated, with BOS, and the extra columns asked for.

    Args:
        ids: the ids of each text; with ``paired``, the first texts then the second texts.
        offsets: their (start, end) spans, or None.
        paired: the second half of ``ids`` holds each row's second text.
        bos: the id put before each text, or None.
        limit: ``max_length`` to truncate to (specials included), or None.
        strategy: the truncation strategy (see ``kept_lengths``).
        side: "right" cuts the ends of texts, "left" their starts.
        columns: extra columns: "token_type_ids", "special_tokens_mask".

    Returns:
        ``input_ids`` (B rows), then ``offset_mapping`` with offsets, then ``columns``.

    Raises:
        InvalidInputError: a row cannot be truncated as asked (see ``kept_lengths``).
    """
    rows = len(ids) // 2 if paired else len(ids)
    parts = [(ids[r], ids[rows + r] if paired else None) for r in range(rows)]
    spans = None
    if offsets is not None:
        spans = [(offsets[r], offsets[rows + r] if paired else None) for r in range(rows)]
    head = [] if bos is None else [bos]
    if limit is not None:
        budget = limit - len(head) * (2 if paired else 1)
        for r, (a, b) in enumerate(parts):
            k1, k2 = kept_lengths(len(a), None if b is None else len(b), budget, strategy)
            parts[r] = (truncate(a, k1, side), None if b is None else truncate(b, k2, side))
            if spans is not None:
                s1, s2 = spans[r]
                spans[r] = (truncate(s1, k1, side), None if s2 is None else truncate(s2, k2, side))
    out: dict[str, list[list[Any]]] = {"input_ids": [_join(head, a, b) for a, b in parts]}
    if spans is not None:
        no_span = [(0, 0)] * len(head)
        out["offset_mapping"] = [_join(no_span, a, b) for a, b in spans]
    if "token_type_ids" in columns:
        out["token_type_ids"] = [_marks(len(head), a, b, (0, 0, 1, 1)) for a, b in parts]
    if "special_tokens_mask" in columns:
        out["special_tokens_mask"] = [_marks(len(head), a, b, (1, 0, 1, 0)) for a, b in parts]
    return out


def _join(head: list[Any], a: list[Any], b: list[Any] | None) -> list[Any]:
    return [*head, *a] if b is None else [*head, *a, *head, *b]


def _marks(
    n_head: int, a: list[int], b: list[int] | None, values: tuple[int, int, int, int]
) -> list[int]:
    """One value per id of a row: ``values`` are those of the first BOS, the first text's ids,
    the second BOS and the second text's ids."""
    first_bos, first, second_bos, second = values
    row = [first_bos] * n_head + [first] * len(a)
    if b is not None:
        row += [second_bos] * n_head + [second] * len(b)
    return row
