"""The API shared by GPT-2's two tokenizers: calling, encoding, decoding, loading, saving.

``GPT2Tokenizer`` (pure Python, ``tokenizer_bpe``) and ``GPT2TokenizerFast`` (the ``tokenizers``
library, ``tokenizer_fast``) both derive from ``GPT2TokenizerBase`` and give identical ids on
every input. The API is transformers' ``GPT2Tokenizer`` / ``GPT2TokenizerFast`` API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from gpt2_dual.tokenizer import encoding as te
from gpt2_dual.tokenizer import files as tok_files
from gpt2_dual.tokenizer import pairs as tp
from gpt2_dual.tokenizer.calls import CallsMixin
from gpt2_dual.tokenizer.chat import ChatTemplateMixin, as_chat_template
from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.files import AddedTokenSpec
from gpt2_dual.tokenizer.pretrained import PretrainedFilesMixin
from gpt2_dual.tokenizer.special import TokenArg
from gpt2_dual.tokenizer.vocab import VocabMixin

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"
Offsets = list[tuple[int, int]]
STRIDE_UNSUPPORTED = (
    "stride is not supported by the GPT-2 tokenizers: it sets the overlap of the overflowing "
    "windows of return_overflowing_tokens, which they do not return"
)


class GPT2TokenizerBase(CallsMixin, ChatTemplateMixin, PretrainedFilesMixin, VocabMixin):
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
        chat_template: a Jinja chat template, or a dict name -> template (see
            ``get_chat_template``; GPT-2 has none, and rendering one is not supported).
        do_lower_case: accepted and saved, as transformers' GPT-2 tokenizers do, but GPT-2's
            tokenizers never lowercase (True logs a warning saying so).

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
        model_max_length: int = tok_files.VERY_LARGE_INTEGER,
        clean_up_tokenization_spaces: bool = False,
        padding_side: str = "right",
        truncation_side: str = "right",
        chat_template: Any = None,
        do_lower_case: bool | None = None,
    ) -> None:
        self.errors = errors
        self._add_prefix_space = bool(add_prefix_space)
        self.add_bos_token = bool(add_bos_token)
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.padding_side = te.check_side("padding_side", padding_side)
        self.truncation_side = te.check_side("truncation_side", truncation_side)
        self.name_or_path = ""
        self.chat_template = as_chat_template(chat_template)
        self._do_lower_case = None if do_lower_case is None else bool(do_lower_case)
        if do_lower_case:
            logger.warning(
                "do_lower_case=True has no effect: GPT-2's tokenizers are case-sensitive and "
                "never lowercase (transformers' GPT2Tokenizer and GPT2TokenizerFast ignore it too)"
            )
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

    def _encode_texts(self, texts: list[str], prefix: bool) -> list[list[int]]:
        """Ids of each text (added tokens matched, no BOS, no truncation); ``prefix``: put a
        space before each piece of text between added tokens that lacks one."""
        raise NotImplementedError

    def _encode_texts_with_offsets(
        self, texts: list[str], prefix: bool
    ) -> tuple[list[list[int]], list[Offsets]]:
        raise NotImplementedError(
            "return_offsets_mapping is not available with the pure-Python GPT2Tokenizer; "
            "use GPT2TokenizerFast, which gives the same ids"
        )

    def _tokens(self, text: str, prefix: bool) -> list[str]:
        """The tokens of ``text`` (as ``_encode_texts``)."""
        raise NotImplementedError

    def _merges(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _tokenizer_json(self) -> str:
        raise NotImplementedError

    def _set_prefix_space(self, value: bool) -> None:
        pass

    def tokenize(self, text: str, *, add_prefix_space: bool | None = None) -> list[str]:
        """Split ``text`` into tokens (strings in GPT-2's byte alphabet; no BOS).

        Args:
            text: one string.
            add_prefix_space: this call's ``add_prefix_space`` (default: the tokenizer's).

        Example:
            >>> tokenizer.tokenize("Hello world")  # doctest: +SKIP
            ['Hello', 'Ġworld']
            >>> tokenizer.tokenize("Hello world", add_prefix_space=True)  # doctest: +SKIP
            ['ĠHello', 'Ġworld']
        """
        return self._tokens(text, self._prefix(add_prefix_space))

    def _prefix(self, add_prefix_space: bool | None) -> bool:
        return self._add_prefix_space if add_prefix_space is None else bool(add_prefix_space)

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
        text: str | Sequence[str] | Sequence[tuple[str, str]],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        padding_side: str | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        add_prefix_space: bool | None = None,
    ) -> BatchEncoding:
        """Encode a text, a text pair, or a batch of them, with transformers' options.

        Args:
            text: a string, a list of strings (a batch), or a list of ``(text, text_pair)``
                pairs (a batch of pairs).
            text_pair: the second text of a pair: a string with one text, a list of strings as
                long as the batch.
            add_special_tokens: add ``bos_token`` before each text when ``add_bos_token`` is set.
            padding: True/"longest" (to the longest in the batch), "max_length", or False.
            truncation: True/"longest_first" (a pair loses ids from its longer text first),
                "only_first", "only_second" (that text of each pair only), to ``max_length``
                (or ``model_max_length``); None truncates only if ``max_length`` is given
                without padding, like transformers.
            max_length: length for truncation / ``padding="max_length"``, special ids included.
            stride: must be 0 (overflowing tokens are not supported).
            padding_side: "left" or "right" (default ``self.padding_side``).
            pad_to_multiple_of: round the padded length up to a multiple of this.
            return_tensors: None (lists), "np", "pt" or "tf"; tensors are (batch, seq) and a
                single text gets a batch dimension of 1.
            return_token_type_ids: also return ``token_type_ids`` (0 on the first text of a
                pair, 1 on the second; padding 0). Default False (GPT-2 takes none).
            return_attention_mask: default True.
            return_special_tokens_mask: also return ``special_tokens_mask`` (1 on the BOS ids
                added here and on padding).
            return_offsets_mapping: (start, end) character spans of each token in its own text
                (fast only).
            return_length: also return each sequence's length before padding.
            verbose: log transformers' warnings (implicit truncation, too long for the model).
            add_prefix_space: this call's ``add_prefix_space`` (default: the tokenizer's).

        Returns:
            A ``BatchEncoding`` with ``input_ids``, ``attention_mask`` and the keys asked for;
            lists for one text (or pair), lists of lists for a batch.

        Raises:
            ValueError: padding without a pad token, bad options, ragged tensors, a batch and
                a ``text_pair`` of different lengths, a truncation that cannot be done.
            TypeError: ``text``/``text_pair`` of a type not listed above.
            NotImplementedError: ``stride``; ``return_offsets_mapping`` on ``GPT2Tokenizer``.

        Example:
            >>> tokenizer(["Hello world", "Hi"], padding=True)["attention_mask"]  # doctest: +SKIP
            [[1, 1], [1, 0]]
            >>> tokenizer("Hello world", "Hi there")["input_ids"]  # doctest: +SKIP
            [15496, 995, 17250, 612]
        """
        if stride:
            raise NotImplementedError(STRIDE_UNSUPPORTED)
        firsts, seconds, batched = tp.split_inputs(text, text_pair)
        te.check_tensor_type(return_tensors)
        pad = te.padding_strategy(padding)
        pad_side = te.check_side("padding_side", padding_side or self.padding_side)
        strategy = te.truncation_strategy(truncation, max_length, pad, verbose=verbose)
        truncate = strategy != "do_not_truncate"
        needed = truncate or pad == "max_length"
        limit = te.resolve_max_length(
            max_length, needed, self.model_max_length, tok_files.VERY_LARGE_INTEGER
        )
        if pad != "do_not_pad":
            self._check_padding(truncate, limit, pad_to_multiple_of)
        texts, prefix = firsts + (seconds or []), self._prefix(add_prefix_space)
        if return_offsets_mapping:
            ids, offsets = self._encode_texts_with_offsets(texts, prefix)
        else:
            ids, offsets = self._encode_texts(texts, prefix), None
        asked = {
            "token_type_ids": return_token_type_ids,
            "special_tokens_mask": return_special_tokens_mask,
        }
        columns = self._rows(
            ids,
            offsets,
            paired=seconds is not None,
            add_special_tokens=add_special_tokens,
            limit=limit if truncate else None,
            strategy=strategy,
            columns=[k for k, v in asked.items() if v],
            verbose=verbose,
        )
        lengths = [len(row) for row in columns["input_ids"]]
        return te.build_encoding(
            columns,
            pad_to=te.pad_target(lengths, pad, limit, pad_to_multiple_of),
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

    def _rows(
        self,
        ids: list[list[int]],
        offsets: list[Offsets] | None,
        *,
        paired: bool,
        add_special_tokens: bool,
        limit: int | None,
        strategy: str = "longest_first",
        columns: Sequence[str] = (),
        verbose: bool = True,
    ) -> dict[str, list[list[Any]]]:
        """Each row's columns: truncated to ``limit`` (BOS included), with BOS (see
        ``pairs.build_rows``); warn once about overlong rows when not truncating."""
        bos = None
        if self.add_bos_token and add_special_tokens and self.bos_token is not None:
            bos = self.bos_token_id
        rows = tp.build_rows(
            ids,
            offsets,
            paired=paired,
            bos=bos,
            limit=limit,
            strategy=strategy,
            side=self.truncation_side,
            columns=columns,
        )
        if limit is None and verbose:
            self._warn_if_too_long(max(map(len, rows["input_ids"]), default=0))
        return rows

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

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size="
            f"{self.vocab_size}, len={len(self)}, model_max_length={self.model_max_length}, "
            f"add_prefix_space={self.add_prefix_space}, special_tokens={self.special_tokens_map})"
        )
