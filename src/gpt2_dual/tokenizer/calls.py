"""The other ways transformers users encode: ``encode``, ``encode_plus``, ``batch_encode_plus``,
``pad`` (what data collators call) and ``get_special_tokens_mask``.

``CallsMixin`` is part of ``GPT2TokenizerBase``: every method here ends in ``__call__`` or in
the same padding steps (``tokenizer_encoding``), so the results are those of ``__call__``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gpt2_dual.tokenizer import encoding as te
from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.files import VERY_LARGE_INTEGER

logger = logging.getLogger(__name__)


class CallsMixin:
    """``encode``, ``encode_plus``, ``batch_encode_plus``, ``pad``, ``get_special_tokens_mask``.

    Needs ``__call__``, ``_encode_texts``, ``_prefix``, ``_rows``, ``_check_padding`` and the
    special-token attributes of ``GPT2TokenizerBase``.
    """

    model_input_names: tuple[str, ...]
    model_max_length: int
    padding_side: str
    add_bos_token: bool
    all_special_ids: list[int]
    pad_token_id: int | None

    def encode(
        self,
        text: str | tuple[str, str],
        text_pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Ids of one text or one pair: ``__call__(text, text_pair, ...)["input_ids"]``, like
        transformers.

        Args:
            text: one string, or a ``(text, text_pair)`` tuple.
            text_pair: the pair's second string.
            add_special_tokens, padding, truncation, max_length, padding_side: as ``__call__``.
            stride: must be 0 (NotImplementedError), as in ``__call__``.
            return_tensors: None for a list of ids; "np", "pt" or "tf" for a (1, T) tensor.
            **kwargs: other ``__call__`` options (``add_prefix_space``, ``pad_to_multiple_of``,
                ...).

        Returns:
            A list of ids, or a (1, T) array/tensor with ``return_tensors``.

        Raises:
            TypeError: ``text`` is not a str nor a pair (use ``__call__`` for a batch), or an
                unknown keyword.
            ValueError: padding without a pad token, bad options.

        Example:
            >>> tokenizer.encode("Hello world")  # doctest: +SKIP
            [15496, 995]
            >>> tokenizer.encode("Hello world", "Hi there")  # doctest: +SKIP
            [15496, 995, 17250, 612]
        """
        text, text_pair = _one_text("encode", text, text_pair)
        plain = padding is False and truncation is None and max_length is None
        if plain and text_pair is None and not stride and return_tensors is None and not kwargs:
            ids = self._encode_texts([text], self._prefix(None))  # without __call__'s checks
            return self._rows(ids, None, paired=False, add_special_tokens=add_special_tokens,
                              limit=None)["input_ids"][0]  # fmt: skip
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            padding_side=padding_side,
            return_tensors=return_tensors,
            **kwargs,
        )["input_ids"]

    def encode_plus(
        self, text: str | tuple[str, str], text_pair: str | None = None, **kwargs: Any
    ) -> BatchEncoding:
        """transformers' older spelling of ``__call__`` for one text or pair (same keywords).

        Raises:
            TypeError: ``text`` is not a str nor a ``(text, text_pair)`` tuple (transformers
                reads a list of str as tokens here, not as a batch; use ``batch_encode_plus``
                or ``__call__`` for a batch).
        """
        text, text_pair = _one_text("encode_plus", text, text_pair)
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(
        self, batch_text_or_text_pairs: Sequence[str] | Sequence[tuple[str, str]], **kwargs: Any
    ) -> BatchEncoding:
        """transformers' older spelling of ``__call__`` for a batch of texts or of
        ``(text, text_pair)`` pairs (same keywords).

        Raises:
            TypeError: not a list of str or of pairs of str.
        """
        if not isinstance(batch_text_or_text_pairs, list | tuple):
            raise TypeError(
                "batch_encode_plus takes a list of str, got "
                f"{type(batch_text_or_text_pairs).__name__} (or a list of (text, text_pair) "
                "pairs); for one text use encode_plus"
            )
        return self(list(batch_text_or_text_pairs), **kwargs)

    def pad(
        self,
        encoded_inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad encodings made earlier, like transformers' ``pad`` (data collators call it).

        Args:
            encoded_inputs: one encoding (a ``BatchEncoding`` or dict of lists of ids), a batch
                (a dict of lists of lists), or a list of encodings (what a ``DataLoader`` gives
                a ``collate_fn``). Values may be numpy arrays or torch/TF tensors.
            padding: True/"longest" (to the longest row), "max_length", or False.
            max_length: the length for ``padding="max_length"`` (default ``model_max_length``).
            pad_to_multiple_of: round the padded length up to a multiple of this.
            padding_side: "left" or "right" (default ``self.padding_side``).
            return_attention_mask: default True; a missing mask is made of ones, then padded.
            return_tensors: None, "np", "pt" or "tf"; default: the type the ids came in.
            verbose: log the "max_length is ignored" warning.

        Returns:
            A new ``BatchEncoding`` (the input is not changed). ``input_ids`` are padded with
            ``pad_token_id``, ``attention_mask`` with 0, ``token_type_ids`` with 0 and
            ``special_tokens_mask`` with 1; other keys (``label``, ...) are kept as given. A
            batch of B rows gives (B, T) tensors; one encoding gives (T,) tensors.

        Raises:
            ValueError: padding without a pad token, no ``input_ids``, columns of different
                batch sizes, ragged rows asked as tensors, bad options.
            TypeError: not a dict nor a list of dicts.

        Example:
            >>> tokenizer.pad_token = tokenizer.eos_token  # doctest: +SKIP
            >>> batch = [tokenizer("Hello world"), tokenizer("Hi")]  # doctest: +SKIP
            >>> tokenizer.pad(batch)["input_ids"]  # doctest: +SKIP
            [[15496, 995], [17250, 50256]]
        """
        columns, examples = te.collect_features(encoded_inputs)
        ids = columns["input_ids"]
        if ids is None or len(ids) == 0:
            empty = {"attention_mask": []} if return_attention_mask else {}
            return BatchEncoding({**columns, **empty})
        found = te.tensor_type_of(ids)
        columns = {  # lists of lists of Python numbers (tensors and tuples converted)
            k: v if isinstance(v, list) and not found and not _has_tuples(v) else te.to_python(v)
            for k, v in columns.items()
        }
        tensor_type = return_tensors if return_tensors is not None else found
        te.check_tensor_type(tensor_type)
        strategy = te.padding_strategy(padding)
        if strategy == "longest" and max_length is not None and verbose:
            logger.warning(
                "`max_length` is ignored when `padding`=`True` and there is no truncation "
                "strategy. To pad to max length, use `padding='max_length'`."
            )
        limit = te.resolve_max_length(
            max_length, strategy == "max_length", self.model_max_length, VERY_LARGE_INTEGER
        )
        side = te.check_side("padding_side", padding_side or self.padding_side)
        if strategy != "do_not_pad":
            self._check_padding(False, limit, pad_to_multiple_of)
        batched = examples or isinstance(columns["input_ids"][0], list)
        if not batched:
            columns = {k: [v] for k, v in columns.items()}
        _check_batch(columns)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        target = te.pad_target(
            [len(row) for row in columns["input_ids"]], strategy, limit, pad_to_multiple_of
        )
        data = te.pad_batch(
            columns,
            target=target,
            pad_id=self.pad_token_id,
            side=side,
            attention_mask=return_attention_mask,
        )
        if not batched:
            data = {k: v[0] for k, v in data.items()}
        return BatchEncoding(data).convert_to_tensors(tensor_type)

    def get_special_tokens_mask(
        self,
        token_ids_0: Sequence[int],
        token_ids_1: Sequence[int] | None = None,
        *,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 for a special token, 0 for another, as transformers' slow ``GPT2Tokenizer``.

        Args:
            token_ids_0: ids of a sequence.
            token_ids_1: ids of a second sequence (only without special tokens yet).
            already_has_special_tokens: the ids are a finished encoding: mark each id that is
                one of ``all_special_ids``. Otherwise the mask is that of the encoding still
                to be made: a 1 for the BOS that ``add_bos_token`` would put before each
                sequence, a 0 for each id.

        Raises:
            ValueError: ``token_ids_1`` with ``already_has_special_tokens=True``.
        """
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError(
                    "You should not supply a second sequence if the provided sequence of ids is "
                    "already formatted with special tokens for the model."
                )
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        bos = [1] if self.add_bos_token else []
        mask = [*bos, *[0] * len(token_ids_0)]
        if token_ids_1 is not None:
            mask += [*bos, *[0] * len(token_ids_1)]
        return mask


def _one_text(method: str, text: Any, text_pair: Any) -> tuple[str, str | None]:
    """``(text, text_pair)`` of ``encode``/``encode_plus``: a str and an optional second one,
    or a ``(text, text_pair)`` tuple as ``text`` (transformers' pair form).

    Raises:
        TypeError: anything else (the message names ``method`` and what it takes).
    """
    if isinstance(text, tuple) and len(text) == 2 and text_pair is None:
        text, text_pair = text
    if not isinstance(text, str):
        raise TypeError(
            f"{method} takes one str, got {type(text).__name__}; for a batch use "
            f"batch_encode_plus or call the tokenizer, and pass a pair as {method}(text, "
            "text_pair) or as a (text, text_pair) tuple"
        )
    return text, text_pair


def _has_tuples(value: list[Any]) -> bool:
    return bool(value) and isinstance(value[0], tuple)


def _check_batch(columns: dict[str, Any]) -> None:
    """Raise ValueError unless every column holds one entry per row of ``input_ids``."""
    rows = columns["input_ids"]
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ValueError(
                "pad expects a list of ids as each example's input_ids; example "
                f"{i} has {type(row).__name__}"
            )
    for key, value in columns.items():
        if len(value) != len(rows):
            raise ValueError(
                f"Some items in the output dictionary have a different batch size than others: "
                f"{key!r} has {len(value)}, input_ids has {len(rows)}"
            )
