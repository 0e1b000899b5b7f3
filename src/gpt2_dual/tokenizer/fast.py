"""``GPT2TokenizerFast``: GPT-2's tokenizer on the ``tokenizers`` library (Rust).

Same API and ids as the pure-Python ``GPT2Tokenizer``; adds ``return_offsets_mapping``.
Whatever ``tokenizer.json`` says about the pre-tokenizer, post-processor and decoder, they are
set to GPT-2's byte-level ones here, so both tokenizers always agree.
"""

from __future__ import annotations

import copy
import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from gpt2_dual.errors import InputTypeError, MalformedFileError
from gpt2_dual.tokenizer.base import GPT2TokenizerBase, Offsets
from gpt2_dual.tokenizer.files import (
    AddedTokenSpec,
    check_tokenizer_json,
    read_merges,
    read_tokenizer_json,
    read_vocab,
)
from gpt2_dual.tokenizer.vocab import BYTE_DECODER, surrogate_error


class GPT2TokenizerFast(GPT2TokenizerBase):
    """GPT-2 tokenizer backed by ``tokenizers``; same API and ids as ``GPT2Tokenizer``, plus
    ``return_offsets_mapping``. See ``GPT2TokenizerBase`` for the arguments.

    Loads ``tokenizer.json``, or builds the tokenizer from ``vocab.json`` + ``merges.txt``
    when there is no ``tokenizer.json``.

    Example:
        >>> from gpt2_dual import GPT2TokenizerFast
        >>> tokenizer = GPT2TokenizerFast.from_pretrained("gpt2")
        >>> tokenizer("Hello world", return_offsets_mapping=True)["offset_mapping"]
        [(0, 5), (5, 11)]
        >>> tokenizer.pad_token = tokenizer.eos_token
        >>> tokenizer(["Hello world", "Hi"], padding=True, return_tensors="np")["input_ids"].shape
        (2, 2)
    """

    is_fast = True

    def _load_model(
        self,
        vocab_file: str | os.PathLike | None,
        merges_file: str | os.PathLike | None,
        tokenizer_file: str | os.PathLike | None,
    ) -> list[AddedTokenSpec]:
        # The files go through the readers GPT2Tokenizer uses first, so both classes refuse
        # the same files with the same named errors (tokenizers raises a bare Exception).
        if tokenizer_file is not None:
            read_tokenizer_json(tokenizer_file)
            try:
                tok = Tokenizer.from_file(str(tokenizer_file))
            except Exception as err:
                raise _refused(err, tokenizer_file) from None
            check_tokenizer_json(str(tokenizer_file), type(tok.model).__name__, tok.normalizer)
        elif vocab_file is not None and merges_file is not None:
            vocab, merges = read_vocab(vocab_file), read_merges(merges_file)
            try:
                tok = Tokenizer(BPE(vocab, merges))
            except Exception as err:
                raise _refused(err, vocab_file, merges_file) from None
        else:
            raise ValueError(
                "GPT2TokenizerFast needs tokenizer_file, or vocab_file and merges_file"
            )
        tok.no_padding()
        tok.no_truncation()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        self._flipped: Tokenizer | None = None
        self._set_prefix_space(self._add_prefix_space)
        self._plain_decode = True
        self._base_size = tok.get_vocab_size(with_added_tokens=False)
        return [
            AddedTokenSpec(
                t.content,
                i,
                special=t.special,
                lstrip=t.lstrip,
                rstrip=t.rstrip,
                normalized=t.normalized,
                single_word=t.single_word,
            )
            for i, t in sorted(tok.get_added_tokens_decoder().items())
        ]

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` doing the work."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (50257 for GPT-2), without added tokens."""
        return self._base_size

    def _set_prefix_space(self, value: bool) -> None:
        self._tok.pre_tokenizer = _byte_level(value)
        self._flipped = None

    def _backend(self, prefix: bool) -> Tokenizer:
        """The backend for a call with ``add_prefix_space=prefix``: a copy with the other
        pre-tokenizer when it differs from the tokenizer's setting (made on first use, and
        again after the tokenizer changes; calls never change the shared backend)."""
        if prefix == self._add_prefix_space:
            return self._tok
        if self._flipped is None:
            flipped = copy.deepcopy(self._tok)
            flipped.pre_tokenizer = _byte_level(prefix)
            self._flipped = flipped
        return self._flipped

    def _set_unk(self, token: str | None) -> None:
        self._flipped = None
        model = self._tok.model
        model.unk_token = token
        # BPE caches words with the old unk token: empty the cache (older tokenizers lack
        # _clear_cache; a JSON round trip gives a fresh one).
        if hasattr(model, "_clear_cache"):
            model._clear_cache()
        else:  # pragma: no cover
            self._tok = Tokenizer.from_str(self._tok.to_str())

    def _base_token_to_id(self, token: str) -> int | None:
        return self._tok.model.token_to_id(token)

    def _base_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=False)

    def _merges(self) -> list[tuple[str, str]]:
        merges = json.loads(self._tok.to_str())["model"]["merges"]
        return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]

    def _tokenizer_json(self) -> str:
        return self._tok.to_str(pretty=True)

    def _backend_added(self, new: list[AddedTokenSpec]) -> None:
        self._flipped = None
        known = self._tok.get_added_tokens_decoder()
        for spec in new:
            if known.get(spec.id) is not None and known[spec.id].content == spec.content:
                continue
            token = AddedToken(
                spec.content,
                single_word=spec.single_word,
                lstrip=spec.lstrip,
                rstrip=spec.rstrip,
                normalized=spec.normalized,
                special=spec.special,
            )
            add = self._tok.add_special_tokens if spec.special else self._tok.add_tokens
            add([token])
            if self._tok.token_to_id(spec.content) != spec.id:  # pragma: no cover
                raise ValueError(f"added token {spec.content!r} did not get id {spec.id}")
        # tokenizers' ByteLevel decoder reads added tokens as byte characters too, which
        # garbles those written with characters of that alphabet (like "é"); decode those here.
        self._plain_decode = all(
            t.id < self._base_size
            or not all(c in BYTE_DECODER for c in t.content)
            or t.content.isascii()
            for t in self._added.values()
        )

    def _encode_texts(self, texts: list[str], prefix: bool) -> list[list[int]]:
        backend = self._backend(prefix)
        # encode_batch_fast skips offset tracking; it is faster even for one text.
        encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
        try:
            return [e.ids for e in encode_batch(texts, add_special_tokens=False)]
        except TypeError:
            raise surrogate_error(texts) or _unencodable(texts) from None

    def _encode_texts_with_offsets(
        self, texts: list[str], prefix: bool
    ) -> tuple[list[list[int]], list[Offsets]]:
        try:
            encodings = self._backend(prefix).encode_batch(texts, add_special_tokens=False)
        except TypeError:
            raise surrogate_error(texts) or _unencodable(texts) from None
        return [e.ids for e in encodings], [e.offsets for e in encodings]

    def _tokens(self, text: str, prefix: bool) -> list[str]:
        try:
            return self._backend(prefix).encode(text, add_special_tokens=False).tokens
        except TypeError:
            raise surrogate_error([text]) or _unencodable([text]) from None

    def _decode(self, ids: list[int]) -> str:
        if self._plain_decode and self.errors == "replace":
            return self._tok.decode(ids, skip_special_tokens=False)
        return super()._decode(ids)


def _byte_level(prefix: bool) -> pre_tokenizers.ByteLevel:
    """GPT-2's pre-tokenizer, with or without ``add_prefix_space``."""
    return pre_tokenizers.ByteLevel(add_prefix_space=prefix, trim_offsets=True, use_regex=True)


def _unencodable(texts: list) -> InputTypeError:
    kinds = sorted({type(t).__name__ for t in texts if not isinstance(t, str)}) or ["str"]
    return InputTypeError(f"text must be a str (or a list of str), got {', '.join(kinds)}")


def _refused(err: Exception, *paths: str | os.PathLike) -> MalformedFileError:
    """A file ``tokenizers`` refused (though our reader accepted it), named."""
    names = " and ".join(str(p) for p in paths)
    return MalformedFileError(f"{names}: the tokenizers library cannot load it: {err}")
