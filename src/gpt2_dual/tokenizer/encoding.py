"""``BatchEncoding`` and the padding, truncation and tensor steps of tokenizer calls.

These follow transformers' ``PreTrainedTokenizerBase`` for single sequences: the same
strategies, the same defaults and the same results, in plain Python on lists of ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

PADDING_VALUES = ("longest", "max_length", "do_not_pad")
TRUNCATION_VALUES = ("longest_first", "only_first", "only_second", "do_not_truncate")
TENSOR_TYPES = (None, "np", "pt", "tf")
SIDES = ("left", "right")

IMPLICIT_TRUNCATION = (
    "Truncation was not explicitly activated but `max_length` is provided a specific value, please "
    "use `truncation=True` to explicitly truncate examples to max length. Defaulting to "
    "'longest_first' truncation strategy. If you encode pairs of sequences (GLUE-style) with the "
    "tokenizer you can select this strategy more precisely by providing a specific strategy to "
    "`truncation`."
)
PAD_TOKEN_MISSING = (
    "Asking to pad but the tokenizer does not have a padding token. Please select a token to use "
    "as `pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)` or add a new pad token via "
    "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`."
)


class BatchEncoding(dict):
    """The output of a tokenizer call: a dict with attribute access.

    Keys are ``input_ids``, ``attention_mask`` and, when asked for, ``offset_mapping`` and
    ``length``. Values are lists (one sequence) or lists of lists (a batch), or tensors of
    the type named by ``return_tensors``.

    Example:
        >>> enc = BatchEncoding({"input_ids": [15496, 995]})
        >>> enc.input_ids
        [15496, 995]
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key {name!r}") from None

    def to(self, device: Any, *, non_blocking: bool = False) -> BatchEncoding:
        """Move every torch tensor to ``device`` (``"cuda"``, ``0``, a ``torch.device``), in
        place; return self, so ``tokenizer(..., return_tensors="pt").to("cuda")`` works.
        ``non_blocking`` is passed to ``Tensor.to``.

        Raises:
            TypeError: a value is not a torch tensor (call with ``return_tensors="pt"``).
        """
        for key, value in self.items():
            if type(value).__module__.split(".")[0] != "torch":
                raise TypeError(
                    f"BatchEncoding.to moves torch tensors; {key!r} is a "
                    f"{type(value).__name__}: call the tokenizer with return_tensors='pt'"
                )
            self[key] = value.to(device, non_blocking=non_blocking)
        return self

    def convert_to_tensors(self, tensor_type: str | None) -> BatchEncoding:
        """Convert every value in place to ``tensor_type`` ("np", "pt", "tf"); return self.

        Raises:
            ValueError: unknown tensor type, or sequences of different lengths.
            ImportError: torch / TensorFlow asked for but not installed.
        """
        check_tensor_type(tensor_type)
        if tensor_type is not None:
            for key, value in self.items():
                self[key] = to_tensor(key, value, tensor_type)
        return self


def check_side(name: str, side: str) -> str:
    """``side`` if it is "left" or "right"; ValueError naming option ``name`` otherwise."""
    if side not in SIDES:
        raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
    return side


def check_tensor_type(tensor_type: str | None) -> None:
    """Raise ValueError unless ``tensor_type`` is None, "np", "pt" or "tf"."""
    if tensor_type not in TENSOR_TYPES:
        raise ValueError(
            f"return_tensors must be one of None, 'np', 'pt', 'tf'; got {tensor_type!r}"
        )


def to_tensor(key: str, value: list[Any], tensor_type: str) -> Any:
    """One value as a tensor: ints become int64 for numpy and torch and ``tf.constant``'s
    int32 for TF (empty values too); other values (float labels) keep their inferred dtype.

    Raises:
        ValueError: rows of different lengths (padding or truncation was needed).
        ImportError: torch / TensorFlow missing.
    """
    lengths = {len(row) for row in value if isinstance(row, list)}
    if len(lengths) > 1:
        raise ValueError(
            f"Cannot make {tensor_type!r} tensors of {key!r}: the sequences have different "
            f"lengths (from {min(lengths)} to {max(lengths)}). Pass padding=True (or "
            "padding='max_length' with max_length) to get tensors of equal length."
        )
    empty = all(isinstance(row, list) and not row for row in value)
    if tensor_type == "np":
        import numpy as np

        array = np.asarray(value)
        return array.astype(np.int64) if empty or array.dtype.kind in "iu" else array
    if tensor_type == "pt":
        try:
            import torch
        except ImportError as e:
            raise ImportError("return_tensors='pt' needs PyTorch: pip install torch") from e
        return torch.tensor(value, dtype=torch.int64 if empty else None)
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("return_tensors='tf' needs TensorFlow: pip install tensorflow") from e
    return tf.constant(value, dtype=tf.int32 if empty else None)


def padding_strategy(padding: bool | str) -> str:
    """Normalise ``padding`` to "do_not_pad", "longest" or "max_length".

    Raises:
        ValueError: an unknown value.
    """
    if isinstance(padding, bool):
        return "longest" if padding else "do_not_pad"
    if isinstance(padding, str) and padding in PADDING_VALUES:
        return padding
    raise ValueError(
        f"padding must be one of True, False, 'longest', 'max_length', 'do_not_pad'; "
        f"got {padding!r}"
    )


def truncation_strategy(
    truncation: bool | str | None, max_length: int | None, padding: str, *, verbose: bool = True
) -> str:
    """The truncation strategy, as transformers decides it: "do_not_truncate", "longest_first",
    "only_first" or "only_second" (``max_length`` alone truncates, with a warning unless
    ``verbose`` is False, when no padding is asked for).

    Raises:
        ValueError: an unknown value.
    """
    if truncation is None:
        if max_length is not None and padding == "do_not_pad":
            if verbose:
                logger.warning(IMPLICIT_TRUNCATION)
            return "longest_first"
        return "do_not_truncate"
    if isinstance(truncation, bool):
        return "longest_first" if truncation else "do_not_truncate"
    if isinstance(truncation, str) and truncation in TRUNCATION_VALUES:
        return truncation
    raise ValueError(
        "truncation must be one of True, False, 'longest_first', 'only_first', 'only_second', "
        f"'do_not_truncate'; got {truncation!r}"
    )


def resolve_max_length(
    max_length: int | None, needed: bool, model_max_length: int, very_large: int
) -> int | None:
    """``max_length``, or ``model_max_length`` when truncation/padding to a length needs one.

    Raises:
        ValueError: a length is needed but neither is set, or ``max_length`` is not positive.
    """
    if max_length is not None:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        return max_length
    if not needed:
        return None
    if model_max_length >= very_large:
        raise ValueError(
            "truncation=True or padding='max_length' needs a length: pass max_length (this "
            "tokenizer has no model_max_length)"
        )
    return model_max_length


def truncate(seq: list[Any], limit: int, side: str) -> list[Any]:
    """The first ``limit`` items of ``seq``, or the last ones for ``side="left"``."""
    if len(seq) <= limit:
        return seq
    return seq[len(seq) - limit :] if side == "left" else seq[:limit]


def pad_target(
    lengths: Sequence[int], strategy: str, max_length: int | None, multiple: int | None
) -> int | None:
    """The padded length of every row, or ``None`` for no padding."""
    if strategy == "do_not_pad":
        return None
    target = max(lengths, default=0) if strategy == "longest" else max_length
    if target is not None and multiple and target % multiple:
        target = (target // multiple + 1) * multiple
    return target


def pad_rows(rows: list[list[Any]], target: int, value: Any, side: str) -> list[list[Any]]:
    """Pad each row to ``target`` with ``value`` on ``side``; longer rows are left as they are."""
    out = []
    for row in rows:
        n = target - len(row)
        if n <= 0:
            out.append(row)
        elif side == "left":
            out.append([value] * n + row)
        else:
            out.append(row + [value] * n)
    return out


def build_encoding(
    columns: dict[str, list[list[Any]]],
    *,
    pad_to: int | None,
    pad_id: int | None,
    side: str,
    attention_mask: bool,
    lengths: bool,
    batched: bool,
    tensor_type: str | None,
) -> BatchEncoding:
    """The ``BatchEncoding`` of a tokenizer call: padded rows, masks, lengths.

    Args:
        columns: ``input_ids`` (each row truncated, with special tokens) and the other
            per-id columns (``offset_mapping``, ``token_type_ids``, ``special_tokens_mask``).
        pad_to: the padded length (``pad_target``), or None for no padding.
        pad_id: the pad token id.
        side: "left" or "right" padding.
        attention_mask: include ``attention_mask``.
        lengths: include ``length`` (lengths before padding).
        batched: False to return one sequence without the batch level (lists only).
        tensor_type: None, "np", "pt" or "tf".
    """
    sizes = [len(s) for s in columns["input_ids"]]
    data: dict[str, Any] = {"input_ids": columns["input_ids"]}
    if attention_mask:
        data["attention_mask"] = [[1] * n for n in sizes]
    data.update((k, v) for k, v in columns.items() if k != "input_ids")
    if pad_to is not None:
        values = {**CALL_PAD_VALUES, "input_ids": pad_id}
        data = {k: pad_rows(v, pad_to, values[k], side) for k, v in data.items()}
    if lengths:
        data["length"] = sizes
    if not batched and tensor_type is None:
        data = {k: v[0] for k, v in data.items()}
    return BatchEncoding(data).convert_to_tensors(tensor_type)


# ----- pad: the padding step on its own, for inputs encoded earlier (data collators) -------

#: What ``pad`` fills each padded key with, besides ``input_ids`` (the pad token id);
#: other keys (``labels``, ``length``, ...) are returned as given, like transformers.
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
#: What a tokenizer call pads each column with (``input_ids``: the pad token id).
CALL_PAD_VALUES = {**PAD_VALUES, "offset_mapping": (0, 0)}
_TENSOR_MODULES = {"numpy": "np", "torch": "pt", "tensorflow": "tf"}


def collect_features(encoded_inputs: Any) -> tuple[dict[str, Any], bool]:
    """``pad``'s input as one dict of columns, and whether it was a list of examples.

    A ``BatchEncoding`` or a dict (one example, or a batch of lists) is copied; a list of
    dicts (what data collators pass) becomes a dict of lists.

    Raises:
        TypeError: neither a dict nor a list of dicts.
        ValueError: no examples, an example that lacks a key of the first one, or no
            ``input_ids``.
    """
    if isinstance(encoded_inputs, Mapping):
        columns, examples = dict(encoded_inputs), False
    elif isinstance(encoded_inputs, list | tuple) and all(
        isinstance(e, Mapping) for e in encoded_inputs
    ):
        if not encoded_inputs:
            raise ValueError("pad got an empty list: there are no examples to pad")
        keys = list(encoded_inputs[0])
        for i, example in enumerate(encoded_inputs):
            if missing := [k for k in keys if k not in example]:
                raise ValueError(f"example {i} lacks {missing}, which example 0 has")
        columns, examples = {k: [e[k] for e in encoded_inputs] for k in keys}, True
    else:
        raise TypeError(
            "pad takes a BatchEncoding, a dict of lists or a list of dicts (what data "
            f"collators pass), got {type(encoded_inputs).__name__}"
        )
    if "input_ids" not in columns:
        raise ValueError(
            "You should supply an encoding or a list of encodings to this method that includes "
            f"input_ids, but you provided {list(columns)}"
        )
    return columns, examples


def tensor_type_of(ids: Any) -> str | None:
    """The tensor type ``pad``'s ``input_ids`` come in: None (Python ints), "np", "pt", "tf".

    Raises:
        ValueError: ids of another type.
    """
    first = ids[0]
    if isinstance(first, list | tuple):
        first = next((row[0] for row in ids if len(row)), 0)
    if isinstance(first, int):
        return None
    kind = _TENSOR_MODULES.get(type(first).__module__.split(".")[0])
    if kind is None:
        raise ValueError(
            f"type of {first!r} unknown: {type(first)}. Should be one of a python, numpy, "
            "pytorch or tensorflow object."
        )
    return kind


def to_python(value: Any) -> Any:
    """Nested lists of Python numbers from an array or tensor, or a list of them."""
    if hasattr(value, "numpy") and not hasattr(value, "tolist"):
        value = value.numpy()  # TF eager tensors
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    return value


def pad_batch(
    columns: dict[str, list[Any]],
    *,
    target: int | None,
    pad_id: int | None,
    side: str,
    attention_mask: bool,
) -> dict[str, list[Any]]:
    """A padded copy of a batch of columns (each a list of rows of length ``T_i``).

    ``input_ids`` rows are padded to ``target`` with ``pad_id``, the keys of ``PAD_VALUES``
    with their values; ``attention_mask`` is made of ones first when missing, or dropped when
    ``attention_mask`` is False. Rows longer than ``target`` stay as they are (``pad`` does not
    truncate); ``target=None`` pads nothing.
    """
    out = {k: v for k, v in columns.items() if attention_mask or k != "attention_mask"}
    if attention_mask and "attention_mask" not in out:
        out["attention_mask"] = [[1] * len(row) for row in columns["input_ids"]]
    if target is not None:
        for key, value in {"input_ids": pad_id, **PAD_VALUES}.items():
            if key in out:
                out[key] = pad_rows(out[key], target, value, side)
    return out
