"""Stop strings: end a row when its text reaches one of the given strings (both frameworks).

A row stops when a stop string occurs in its decoded bytes and the occurrence ends inside the
newest token, so a string split across tokens (``["st", "op"]``) or running into the token's
tail (``["st", "opera"]``) stops it, and an occurrence already in the prompt does not stop it
again later (transformers' ``StopStringCriteria`` rule). Matching is on UTF-8 bytes, so it works
for characters split across byte-level tokens.

Example:
    >>> stop = StopStrings(tokenizer, ["\\n\\n"])  # doctest: +SKIP
    >>> stop.hit([15496, 198, 198])  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpt2_dual.tokenizer.vocab import token_bytes

__all__ = ["StopStrings"]


class StopStrings:
    """Checks rows of ids against stop strings.

    Args:
        tokenizer: the tokenizer whose ids are generated (``generate(..., tokenizer=...)``).
        stop_strings: a string or a list of strings.

    Raises:
        ValueError: no tokenizer was given.
    """

    def __init__(self, tokenizer: Any, stop_strings: str | Sequence[str]) -> None:
        if tokenizer is None:
            raise ValueError(
                "stop_strings needs the tokenizer to read the text: pass "
                "generate(..., stop_strings=..., tokenizer=tokenizer)"
            )
        strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        self.targets = [s.encode("utf-8") for s in strings]
        self.window = max(len(t) for t in self.targets)
        self.tokenizer = tokenizer
        self._bytes: dict[int, bytes] = {}

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for (cached)."""
        data = self._bytes.get(token_id)
        if data is None:
            data = token_bytes(self.tokenizer.convert_ids_to_tokens(int(token_id)))
            self._bytes[token_id] = data
        return data

    def hit(self, ids: Sequence[int]) -> bool:
        """Whether a stop string ends inside the last id's bytes (``ids``: one row, prompt
        included)."""
        if not len(ids):
            return False
        last = self.token_bytes(int(ids[-1]))
        tail, i = last, len(ids) - 2
        while len(tail) - len(last) < self.window - 1 and i >= 0:
            tail = self.token_bytes(int(ids[i])) + tail
            i -= 1
        boundary = len(tail) - len(last)  # bytes before the newest token
        return any(tail.find(t, max(0, boundary - len(t) + 1)) != -1 for t in self.targets)
