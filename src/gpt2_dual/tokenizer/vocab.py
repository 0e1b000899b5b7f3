"""Vocabulary look-ups and decoding, shared by GPT-2's two tokenizers.

Token strings are written in GPT-2's byte alphabet (``bytes_to_unicode``): every byte is one
visible character, so ``"Ġworld"`` is the bytes of ``" world"``. Decoding joins the bytes of
the ids and decodes them as UTF-8; added tokens beyond the vocabulary stand for their own text.
A vocabulary may lack byte tokens (a toy one): those bytes encode as ``unk_token``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gpt2_dual.errors import InputTypeError, InvalidInputError, OutOfRangeError
from gpt2_dual.tokenizer.files import AddedTokenSpec
from gpt2_dual.tokenizer.special import SpecialTokensMixin

logger = logging.getLogger(__name__)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table: printable bytes map to themselves, the other bytes
    to the characters from U+0100 up, so that every byte is a visible character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    table, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return dict(sorted(table.items()))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}
_CLEANUPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def token_bytes(token: str) -> bytes:
    """The bytes of a vocabulary token written in GPT-2's byte alphabet; a token with other
    characters (an added token such as ``"new tok"``) stands for its own UTF-8 bytes."""
    try:
        return bytes([BYTE_DECODER[c] for c in token])
    except KeyError:
        return token.encode("utf-8")


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop spaces before punctuation and contractions."""
    for old, new in _CLEANUPS:
        text = text.replace(old, new)
    return text


def _as_id_list(ids: Any) -> list[int]:
    """A list of ints from an int, a list, a numpy array or a torch/TF tensor.

    Raises:
        InputTypeError: ``ids`` is None, a string, a float (or float array/tensor), a bool, or
            holds anything but integers.
        InvalidInputError: a batch (a list of lists); the message names ``batch_decode``.
    """
    if ids is None or isinstance(ids, str | bytes):
        raise InputTypeError(
            f"decode expects token ids (an int, a list of ints, an integer array or tensor), "
            f"got {type(ids).__name__} {ids!r:.60}"
        )
    if hasattr(ids, "numpy") and not hasattr(ids, "tolist"):
        ids = ids.numpy()  # TF eager tensors
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int) and not isinstance(ids, bool):
        return [ids]
    try:
        ids = list(ids)
    except TypeError:
        raise InputTypeError(
            f"decode expects token ids (an int, a list of ints, an integer array or tensor), "
            f"got {type(ids).__name__} {ids!r:.60}"
        ) from None
    if ids and not all(type(i) is int for i in ids):
        if any(isinstance(i, list | tuple) for i in ids):
            raise InvalidInputError(
                "decode expects one sequence of ids; use batch_decode for a batch"
            )
        out = []
        for k, i in enumerate(ids):
            if hasattr(i, "item") and not isinstance(i, bool):
                i = i.item()  # numpy/torch scalars
            if not isinstance(i, int) or isinstance(i, bool):
                raise InputTypeError(
                    f"token ids must be integers; id {k} is {type(i).__name__} {i!r:.40} "
                    "(cast float ids with .astype(int) / .long() if that is meant)"
                )
            out.append(int(i))
        ids = out
    return ids


def surrogate_error(texts: Iterable[Any]) -> InvalidInputError | None:
    """The error for the first lone surrogate (U+D800..U+DFFF) in ``texts``, if any: it has no
    UTF-8 bytes, so neither tokenizer can encode it."""
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        for k, ch in enumerate(text):
            if "\ud800" <= ch <= "\udfff":
                where = f"text {n}, " if n else ""
                return InvalidInputError(
                    f"{where}position {k} holds a lone surrogate U+{ord(ch):04X}, which has no "
                    "UTF-8 encoding; fix the text (e.g. text.encode('utf-16', 'surrogatepass')"
                    ".decode('utf-16') joins surrogate pairs)"
                )
    return None


class VocabMixin(SpecialTokensMixin):
    """Vocabulary, conversions and decoding on top of the backend's base vocabulary.

    Subclasses provide ``vocab_size``, ``_base_vocab``, ``_base_token_to_id``,
    ``_backend_added`` and ``_set_unk``, and set ``errors``, ``clean_up_tokenization_spaces``,
    ``_tokens_by_id = _id_bytes = None`` before registering tokens.
    """

    errors: str
    clean_up_tokenization_spaces: bool
    _tokens_by_id: list[str | None] | None
    _id_bytes: list[bytes | None] | None

    def _base_vocab(self) -> dict[str, int]:
        """The BPE model's vocabulary (without tokens added later)."""
        raise NotImplementedError

    def __len__(self) -> int:
        """Vocabulary size including added tokens."""
        return self.vocab_size + sum(t.id >= self.vocab_size for t in self._added.values())

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, added tokens included."""
        vocab = self._base_vocab()
        vocab.update((t.content, t.id) for t in self._added.values())
        return vocab

    def _token_to_id(self, token: str) -> int | None:
        spec = self._added.get(token)
        return spec.id if spec is not None else self._base_token_to_id(token)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> Any:
        """Id of a token, or ids of tokens; unknown tokens give ``unk_token_id``."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            token_id = self._token_to_id(tokens)
            if token_id is None and self.unk_token is not None:
                token_id = self._token_to_id(self.unk_token)
            return token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        """Token of an id, or tokens of ids (list, array or tensor).

        Raises:
            ValueError: an id that is not in the vocabulary.
        """
        single = isinstance(ids, int) or (hasattr(ids, "ndim") and ids.ndim == 0)
        id_list = _as_id_list(ids)
        skip = self._skip_ids() if skip_special_tokens else set()
        tokens = [self._id_to_token(i) for i in id_list if i not in skip]
        return tokens[0] if single and tokens else tokens

    def _id_to_token(self, token_id: int) -> str:
        tokens = self._tables()[0]
        if not 0 <= token_id < len(tokens) or tokens[token_id] is None:
            raise OutOfRangeError(
                f"token id {token_id} is not in the vocabulary (size {len(self)})"
            )
        return tokens[token_id]

    def _is_verbatim(self, token: str) -> bool:
        """Added tokens beyond the vocabulary stand for their own text, not byte characters."""
        spec = self._added.get(token)
        return spec is not None and spec.id >= self.vocab_size

    def _tables(self) -> tuple[list[str | None], list[bytes | None]]:
        """id -> token and id -> bytes (built on first use, rebuilt when tokens are added)."""
        if self._tokens_by_id is None or self._id_bytes is None:
            vocab = self.get_vocab()
            tokens: list[str | None] = [None] * (max(vocab.values(), default=-1) + 1)
            for token, token_id in vocab.items():
                tokens[token_id] = token
            self._id_bytes = [
                None if t is None else t.encode("utf-8") if self._is_verbatim(t) else token_bytes(t)
                for t in tokens
            ]
            self._tokens_by_id = tokens
        return self._tokens_by_id, self._id_bytes

    def _set_unk(self, token: str | None) -> None:
        """Map bytes the vocabulary lacks to ``token`` (a vocabulary token), or drop them."""
        raise NotImplementedError

    def _unk_changed(self) -> None:
        """Tell the backend what stands for bytes the vocabulary lacks (at load, and whenever
        ``unk_token`` changes): ``unk_token`` when it is in the vocabulary."""
        missing = [c for c in BYTE_ENCODER.values() if self._base_token_to_id(c) is None]
        if not missing:
            return
        unk = self.unk_token
        if unk is not None and self._base_token_to_id(unk) is None:
            unk = None
        if unk is None:
            logger.warning(
                "The vocabulary lacks %d of the 256 byte tokens (%s) and unk_token %r is not in "
                "it: encodings drop the bytes it lacks",
                len(missing),
                "".join(missing[:10]),
                self.unk_token,
            )
        self._set_unk(unk)

    def _added_changed(self, new: list[AddedTokenSpec]) -> None:
        self._tokens_by_id = self._id_bytes = None
        self._backend_added(new)

    def _backend_added(self, new: list[AddedTokenSpec]) -> None:
        """Tell the backend about newly added tokens."""
        raise NotImplementedError

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        """Join tokens back into text (added tokens stand for themselves)."""
        data = b"".join(
            t.encode("utf-8") if self._is_verbatim(t) else token_bytes(t) for t in tokens
        )
        return data.decode("utf-8", errors=self.errors)

    def decode(
        self,
        token_ids: Any,
        *,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Text of a sequence of ids (list, numpy array, torch/TF tensor or one int).

        Invalid UTF-8 (ids that cut a character) is decoded with ``errors`` ("replace": U+FFFD).

        Raises:
            ValueError: an id outside the vocabulary, or a batch (use ``batch_decode``).

        Example:
            >>> tokenizer.decode([15496, 995])  # doctest: +SKIP
            'Hello world'
        """
        ids = _as_id_list(token_ids)
        if ids and (min(ids) < 0 or max(ids) >= len(self)):
            bad = min(ids) if min(ids) < 0 else max(ids)
            raise OutOfRangeError(f"token id {bad} is not in the vocabulary (size {len(self)})")
        if skip_special_tokens:
            skip = self._skip_ids()
            ids = [i for i in ids if i not in skip]
        text = self._decode(ids)
        clean = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces is not None:
            clean = clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean else text

    def batch_decode(
        self,
        sequences: Any,
        *,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        """``decode`` of each sequence (a list of lists, or a 2-D array/tensor)."""
        if hasattr(sequences, "numpy") and not hasattr(sequences, "tolist"):
            sequences = sequences.numpy()
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [
            self.decode(
                s,
                skip_special_tokens=skip_special_tokens,
                clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            )
            for s in sequences
        ]

    def _decode(self, ids: list[int]) -> str:
        """Bytes of each id, joined and decoded (ids already range-checked)."""
        table = self._tables()[1]
        try:
            data = b"".join([table[i] for i in ids])
        except TypeError:
            bad = next(i for i in ids if table[i] is None)
            raise OutOfRangeError(f"token id {bad} is not in the vocabulary") from None
        return data.decode("utf-8", errors=self.errors)
