"""Streamers: text from ``generate`` as the tokens arrive (transformers' names and calls).

``generate(..., streamer=s)`` calls ``s.put(ids)`` with the prompt ``(1, T)`` first, then with
each new token ``(1,)``, and ``s.end()`` when it stops; ids may be torch or TF tensors, numpy
arrays or lists. Only batch size 1 (one prompt, one returned sequence) can stream.

Text is released one whole character at a time: GPT-2's byte-level tokens can split a
character's UTF-8 bytes across tokens, and a token's bytes are only shown once the character
they belong to is complete (decoding a prefix of the ids never changes the text already shown,
except for a trailing incomplete character, which is held back).

Example:
    >>> streamer = TextStreamer(tokenizer, skip_prompt=True)  # doctest: +SKIP
    >>> model.generate(**inputs, streamer=streamer, max_new_tokens=20)  # doctest: +SKIP
"""

from __future__ import annotations

import queue
import sys
from typing import Any

import numpy as np

__all__ = ["BaseStreamer", "TextIteratorStreamer", "TextStreamer"]

_INCOMPLETE = "\ufffd"  # what decoding shows for bytes of a character not yet complete


class BaseStreamer:
    """What ``generate`` calls: ``put(ids)`` for the prompt and each new token, then ``end()``."""

    def put(self, value: Any) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


def _flat_ids(value: Any) -> list[int]:
    """``(1, T)``, ``(T,)`` or a scalar id as a list of ints; a batch of more rows refuses."""
    array = np.asarray(value.cpu() if hasattr(value, "cpu") else value)
    if array.ndim > 1:
        if array.shape[0] != 1:
            raise ValueError(
                f"streamers take one sequence (batch size 1); got ids of shape {array.shape}"
            )
        array = array[0]
    return [int(i) for i in array.reshape(-1)]


class TextStreamer(BaseStreamer):
    """Print the text to stdout as it is generated.

    Args:
        tokenizer: a gpt2_dual tokenizer (anything with ``decode``).
        skip_prompt: do not print the prompt.
        **decode_kwargs: passed to ``tokenizer.decode`` (``skip_special_tokens=True``, ...).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value: Any) -> None:
        """Add ids ``(1, T)`` or ``(1,)``; release the text they complete."""
        ids = _flat_ids(value)
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self.token_cache.extend(ids)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        stable = len(text.rstrip(_INCOMPLETE))
        if text.endswith("\n"):  # a finished line: start a new cache (keeps decoding short)
            printable = text[self.print_len :]
            self.token_cache, self.print_len = [], 0
        else:
            printable = text[self.print_len : stable]
            self.print_len += len(printable)
        if printable:
            self.on_finalized_text(printable)

    def end(self) -> None:
        """Release what is left (an incomplete character is shown as decoding shows it)."""
        text = ""
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            text = text[self.print_len :]
        self.token_cache, self.print_len = [], 0
        self.next_tokens_are_prompt = True
        self.on_finalized_text(text, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Where released text goes: stdout, flushed, with a newline at the end."""
        print(text, flush=True, end="" if not stream_end else None, file=sys.stdout)


class TextIteratorStreamer(TextStreamer):
    """Text pieces in a queue, read by iterating (run ``generate`` in another thread).

    Args:
        tokenizer: a gpt2_dual tokenizer.
        skip_prompt: do not yield the prompt.
        timeout: seconds to wait for the next piece (None: forever); ``queue.Empty`` when it
            passes.
        **decode_kwargs: passed to ``tokenizer.decode``.

    Example:
        >>> streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)  # doctest: +SKIP
        >>> Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer)).start()
        >>> text = "".join(streamer)  # doctest: +SKIP
    """

    _STOP = object()

    def __init__(
        self,
        tokenizer: Any,
        skip_prompt: bool = False,
        timeout: float | None = None,
        **decode_kwargs: Any,
    ) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: queue.Queue = queue.Queue()
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self._STOP, timeout=self.timeout)

    def __iter__(self) -> TextIteratorStreamer:
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self._STOP:
            raise StopIteration
        return value
