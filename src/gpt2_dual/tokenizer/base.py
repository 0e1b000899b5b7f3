"""The API shared by GPT-2's two tokenizers: calling, encoding, decoding, loading, saving.

``GPT2Tokenizer`` (pure Python, ``tokenizer_bpe``) and ``GPT2TokenizerFast`` (the ``tokenizers``
library, ``tokenizer_fast``) both derive from ``GPT2TokenizerBase`` and give identical ids on
every input. The API is transformers' ``GPT2Tokenizer`` / ``GPT2TokenizerFast`` API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gpt2_dual.hub.push import PushToHubMixin
from gpt2_dual.tokenizer import encoding as te
from gpt2_dual.tokenizer import files as tf
from gpt2_dual.tokenizer.calls import CallsMixin
from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.files import AddedTokenSpec
from gpt2_dual.tokenizer.special import TokenArg
from gpt2_dual.tokenizer.vocab import VocabMixin

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"
Offsets = list[tuple[int, int]]
T = TypeVar("T", bound="GPT2TokenizerBase")


class GPT2TokenizerBase(CallsMixin, VocabMixin, PushToHubMixin):
    """GPT-2 byte-level BPE tokenizer API (transformers' names and behaviour).

    Args:
        vocab_file: ``vocab.json`` (token -> id).
        merges_file: ``merges.txt``.
        tokenizer_file: ``tokenizer.json``, used when ``vocab_file``/``merges_file`` are not
            given (pure tokenizer) or preferred (fast tokenizer).
        errors: how invalid UTF-8 is decoded (``bytes.decode`` errors; "replace").
        bos_token, eos_token, unk_token, pad_token, sep_token, cls_token, mask_token: special
            tokens (``<|endoftext|>`` for bos/eos/unk, the rest unset).
        additional_special_tokens: more special tokens.
        added_tokens_decoder: id -> added token (transformers' ``tokenizer_config.json`` form).
        add_prefix_space: put a space before the text (before each piece of text between added
            tokens), so that the first word is encoded like the others.
        add_bos_token: start every encoding with ``bos_token``.
        model_max_length: longest sequence the model takes (1024 for GPT-2).
        clean_up_tokenization_spaces: default of ``decode``'s option of the same name.
        padding_side, truncation_side: "right" or "left".

    A vocabulary that lacks some of the 256 byte tokens (a toy one) works too: each byte it
    lacks becomes ``unk_token`` when the vocabulary has that token (as in transformers' slow
    class), and is dropped otherwise (as in ``tokenizers``), with a warning.
    """

    model_input_names = ("input_ids", "attention_mask")
    is_fast = False

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        *,
        errors: str = "replace",
        bos_token: TokenArg = EOT,
        eos_token: TokenArg = EOT,
        unk_token: TokenArg = EOT,
        pad_token: TokenArg = None,
        sep_token: TokenArg = None,
        cls_token: TokenArg = None,
        mask_token: TokenArg = None,
        additional_special_tokens: Sequence[TokenArg] | None = None,
        added_tokens_decoder: Mapping[int, Any] | None = None,
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        model_max_length: int = tf.VERY_LARGE_INTEGER,
        clean_up_tokenization_spaces: bool = False,
        padding_side: str = "right",
        truncation_side: str = "right",
    ) -> None:
        self.errors = errors
        self._add_prefix_space = bool(add_prefix_space)
        self.add_bos_token = bool(add_bos_token)
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.padding_side = te.check_side("padding_side", padding_side)
        self.truncation_side = te.check_side("truncation_side", truncation_side)
        self.name_or_path = ""
        self._warned_too_long = False
        self._tokens_by_id: list[str | None] | None = None
        self._id_bytes: list[bytes | None] | None = None
        model_added = self._load_model(vocab_file, merges_file, tokenizer_file)
        specials = dict(
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            sep_token=sep_token,
            cls_token=cls_token,
            mask_token=mask_token,
        )
        self._init_special(specials, additional_special_tokens, model_added, added_tokens_decoder)
        self._unk_changed()

    # ----- backend hooks -------------------------------------------------------------------

    def _load_model(
        self, vocab_file: Any, merges_file: Any, tokenizer_file: Any
    ) -> list[AddedTokenSpec]:
        """Load the BPE model; return the added tokens stored with it."""
        raise NotImplementedError

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text (added tokens matched, no BOS, no truncation)."""
        raise NotImplementedError

    def _encode_texts_with_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[Offsets]]:
        raise NotImplementedError(
            "return_offsets_mapping is not available with the pure-Python GPT2Tokenizer; "
            "use GPT2TokenizerFast, which gives the same ids"
        )

    def _merges(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _tokenizer_json(self) -> str:
        raise NotImplementedError

    def _set_prefix_space(self, value: bool) -> None:
        pass

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into tokens (strings in GPT-2's byte alphabet; no BOS).

        Example:
            >>> tokenizer.tokenize("Hello world")  # doctest: +SKIP
            ['Hello', 'Ġworld']
        """
        raise NotImplementedError

    # ----- options -------------------------------------------------------------------------

    @property
    def add_prefix_space(self) -> bool:
        """Whether a space is put before the text (see the class docstring)."""
        return self._add_prefix_space

    @add_prefix_space.setter
    def add_prefix_space(self, value: bool) -> None:
        self._add_prefix_space = bool(value)
        self._set_prefix_space(bool(value))

    # ----- encoding ------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: Any = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        padding_side: str | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
    ) -> BatchEncoding:
        """Encode a text or a batch of texts, with transformers' options.

        Args:
            text: a string, or a list of strings (a batch).
            text_pair: not supported (raises NotImplementedError).
            add_special_tokens: add ``bos_token`` when ``add_bos_token`` is set.
            padding: True/"longest" (to the longest in the batch), "max_length", or False.
            truncation: True/"longest_first"/"only_first" to cut to ``max_length`` (or
                ``model_max_length``); None truncates only if ``max_length`` is given without
                padding, like transformers.
            max_length: length for truncation / ``padding="max_length"``.
            stride: must be 0 (overflowing tokens are not supported).
            padding_side: "left" or "right" (default ``self.padding_side``).
            pad_to_multiple_of: round the padded length up to a multiple of this.
            return_tensors: None (lists), "np", "pt" or "tf"; tensors are (batch, seq) and a
                single text gets a batch dimension of 1.
            return_attention_mask: default True.
            return_offsets_mapping: (start, end) character spans of each token (fast only).
            return_length: also return each sequence's length before padding.

        Returns:
            A ``BatchEncoding`` with ``input_ids``, ``attention_mask`` (and ``offset_mapping``,
            ``length`` when asked); lists for one text, lists of lists for a batch.

        Raises:
            ValueError: padding without a pad token, bad options, ragged tensors.

        Example:
            >>> tokenizer(["Hello world", "Hi"], padding=True)["attention_mask"]  # doctest: +SKIP
            [[1, 1], [1, 0]]
        """
        if text_pair is not None or stride:
            raise NotImplementedError(
                "text_pair and stride are not supported by the GPT-2 tokenizers; encode the "
                "texts separately (GPT-2 has no pair format)"
            )
        batched = te.check_text(text)
        texts = list(text) if batched else [text]
        te.check_tensor_type(return_tensors)
        pad = te.padding_strategy(padding)
        pad_side = te.check_side("padding_side", padding_side or self.padding_side)
        do_truncate = te.truncation_enabled(truncation, max_length, pad)
        limit = te.resolve_max_length(
            max_length,
            do_truncate or pad == "max_length",
            self.model_max_length,
            tf.VERY_LARGE_INTEGER,
        )
        if pad != "do_not_pad":
            self._check_padding(do_truncate, limit, pad_to_multiple_of)
        if return_offsets_mapping:
            ids, offsets = self._encode_texts_with_offsets(texts)
        else:
            ids, offsets = self._encode_texts(texts), None
        ids, offsets = self._finish(
            ids, offsets, add_special_tokens, limit if do_truncate else None
        )
        target = te.pad_target([len(s) for s in ids], pad, limit, pad_to_multiple_of)
        return te.build_encoding(
            ids,
            offsets,
            pad_to=target,
            pad_id=self.pad_token_id,
            side=pad_side,
            attention_mask=return_attention_mask is not False,
            lengths=return_length,
            batched=batched,
            tensor_type=return_tensors,
        )

    def _check_padding(self, truncate: bool, limit: int | None, multiple: int | None) -> None:
        if self.pad_token is None or self.pad_token_id is None:
            raise ValueError(te.PAD_TOKEN_MISSING)
        if multiple is not None and (not isinstance(multiple, int) or multiple < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {multiple!r}")
        if truncate and multiple and limit is not None and limit % multiple:
            raise ValueError(
                f"Truncation and padding are both activated but truncation length ({limit}) is "
                f"not a multiple of pad_to_multiple_of ({multiple})."
            )

    def _finish(
        self,
        ids: list[list[int]],
        offsets: list[Offsets] | None,
        add_special_tokens: bool,
        limit: int | None,
    ) -> tuple[list[list[int]], list[Offsets] | None]:
        """Truncate to ``limit`` (BOS included) and add BOS; warn once about overlong ones."""
        bos = self.add_bos_token and add_special_tokens and self.bos_token is not None
        if limit is not None:
            keep, side = max(limit - bos, 0), self.truncation_side
            ids = [te.truncate(s, keep, side) for s in ids]
            offsets = None if offsets is None else [te.truncate(o, keep, side) for o in offsets]
        if bos:
            ids = [[self.bos_token_id, *s] for s in ids]
            offsets = None if offsets is None else [[(0, 0), *o] for o in offsets]
        if limit is None:
            self._warn_if_too_long(max(map(len, ids), default=0))
        return ids, offsets

    def _warn_if_too_long(self, length: int) -> None:
        if length > self.model_max_length and not self._warned_too_long:
            self._warned_too_long = True
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence "
                "length for this model (%d > %d). Running this sequence through the model will "
                "result in indexing errors",
                length,
                self.model_max_length,
            )

    # ----- files ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls: type[T],
        path_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str = "",
        **overrides: Any,
    ) -> T:
        """Load from a folder or a Hub repo (``"gpt2"`` works offline: bundled vocabulary).

        Args:
            path_or_repo_id: a folder with the tokenizer files, or a Hub repo id.
            revision, cache_dir, local_files_only, token, subfolder: Hub options.
            **overrides: constructor arguments that replace the files' values
                (``pad_token="<|endoftext|>"``, ``add_prefix_space=True``, ...).

        Raises:
            FileNotFoundError: no ``tokenizer.json`` and no ``vocab.json`` + ``merges.txt``.

        Example:
            >>> tok = GPT2TokenizerFast.from_pretrained("gpt2")  # doctest: +SKIP
        """
        files = tf.find_files(
            path_or_repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )
        kwargs = tf.read_config(files)
        kwargs.update(overrides)
        tokenizer = cls(**kwargs)
        tokenizer.name_or_path = str(path_or_repo_id)
        return tokenizer

    def save_vocabulary(
        self, save_directory: str | os.PathLike, filename_prefix: str | None = None
    ) -> tuple[str, ...]:
        """Write ``vocab.json`` and ``merges.txt`` into an existing folder; return their paths."""
        return tf.write_vocabulary(
            save_directory, self._base_vocab(), self._merges(), filename_prefix
        )

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the files transformers writes for GPT-2 (each atomically); transformers'
        ``GPT2Tokenizer`` and ``GPT2TokenizerFast`` load them and give the same ids.

        Returns:
            The paths written: ``tokenizer_config.json``, ``special_tokens_map.json``,
            ``vocab.json``, ``merges.txt``, ``added_tokens.json`` (only with tokens beyond
            the vocabulary), ``tokenizer.json``.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [
            tf.write_json(folder / tf.CONFIG_NAME, self._config_dict()),
            tf.write_json(folder / tf.SPECIAL_MAP_NAME, self.special_tokens_map_extended),
            *self.save_vocabulary(folder),
        ]
        extra = {t.content: t.id for t in self._added.values() if t.id >= self.vocab_size}
        if extra:
            paths.append(tf.write_json(folder / tf.ADDED_NAME, extra))
        text = self._tokenizer_json()
        paths.append(str(tf.atomic_write_text(folder / tf.TOKENIZER_NAME, text)))
        return tuple(paths)

    def _config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "add_bos_token": self.add_bos_token,
            "add_prefix_space": self.add_prefix_space,
            "added_tokens_decoder": {
                str(i): t.to_dict() for i, t in self.added_tokens_decoder.items()
            },
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "errors": self.errors,
            "extra_special_tokens": {},
            "model_max_length": self.model_max_length,
            "pad_token": None,
            "tokenizer_class": "GPT2Tokenizer",
        }
        config.update(self.special_tokens_map)
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) != "right":
                config[name] = getattr(self, name)
        return config

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size="
            f"{self.vocab_size}, len={len(self)}, model_max_length={self.model_max_length}, "
            f"add_prefix_space={self.add_prefix_space}, special_tokens={self.special_tokens_map})"
        )
