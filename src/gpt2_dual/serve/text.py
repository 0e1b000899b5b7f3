"""Incremental detokenization with stop strings: the text of a growing sequence, piece by piece.

A byte-level BPE token may hold part of a UTF-8 character, so the text of the tokens so far
can end in an incomplete character (decoded as U+FFFD). ``TextStream`` keeps such tokens
pending until the character completes (at most ``MAX_PENDING`` tokens), and with stop strings
holds back the last ``len(longest stop) - 1`` characters, which may be the start of one. When
a stop string appears, the text ends just before it (OpenAI's rule: the stop sequence is not
returned). Concatenating every piece ``add`` and ``flush`` return gives the text of the whole
sequence, cut at the first stop string.

Example:
    >>> stream = TextStream(lambda ids: "".join(chr(i) for i in ids), stop=("cd",))
    >>> [stream.add(i) for i in map(ord, "abcde")]
    [('', None), ('a', None), ('b', None), ('', 'cd'), ('', 'cd')]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["MAX_PENDING", "TextStream"]

#: Tokens kept waiting for the rest of a UTF-8 character before their text is taken as is.
MAX_PENDING = 4
REPLACEMENT = "\ufffd"


class TextStream:
    """The text of one sequence's tokens, returned in pieces safe to send.

    Args:
        decode: token ids -> text (the tokenizer's ``decode``).
        stop: stop strings.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = tuple(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""  # the decoded text so far
        self.sent = 0  # characters of ``text`` already returned
        self.pending: list[int] = []
        self.stopped: str | None = None

    def add(self, token_id: int) -> tuple[str, str | None]:
        """Add one token.

        Returns:
            The new text that is safe to send, and the stop string that ended the text (then
            no more text follows, whatever is added), or None.
        """
        if self.stopped is not None:
            return "", self.stopped
        self.pending.append(token_id)
        piece = self.decode(self.pending)
        if piece.endswith(REPLACEMENT) and len(self.pending) < MAX_PENDING:
            return "", None
        self.pending = []
        return self._extend(piece, final=False)

    def flush(self) -> str:
        """The rest of the text at the end of the sequence (held back or pending)."""
        if self.stopped is not None:
            return ""
        piece = self.decode(self.pending) if self.pending else ""
        self.pending = []
        return self._extend(piece, final=True)[0]

    def _extend(self, piece: str, *, final: bool) -> tuple[str, str | None]:
        start = max(0, len(self.text) - self.hold)
        self.text += piece
        cut = self._find_stop(start)
        if cut is not None:
            end, self.stopped = cut
        else:
            end = len(self.text) if final else max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent : end], max(self.sent, end)
        return out, self.stopped

    def _find_stop(self, start: int) -> tuple[int, str] | None:
        found = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(found) if found else None
