"""torchao settings, framework-neutral: ``TorchAoConfig``, and ``as_quantization_config``.

``TorchAoConfig`` (transformers' spelling; its object is accepted) asks for int8 weight-only
products through torchao instead of bitsandbytes (``gpt2_dual.pt.torchao_int8``). torchao is
not imported here: its quant types are read by name.

``as_quantization_config`` turns any ``quantization_config`` value into what ``GPT2Config``
stores, of either kind; it sits here because this module may import ``bnb.py`` (not the
reverse).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from gpt2_dual.errors import InputTypeError, InvalidInputError
from gpt2_dual.quantization.bnb import BitsAndBytesConfig, is_bitsandbytes_dict

__all__ = ["TORCHAO_METHOD", "TorchAoConfig", "as_quantization_config", "as_torchao"]

TORCHAO_METHOD = "torchao"


def _torchao_type(value: Any) -> str:
    """``quant_type`` as a name: ``"int8_weight_only"``, or torchao's per-channel
    ``Int8WeightOnlyConfig()`` (``granularity=PerRow()`` from torchao 0.15, ``group_size=None``
    before; read by name, torchao is not imported here)."""
    if value == "int8_weight_only":
        return value
    if isinstance(value, str):
        raise InvalidInputError(
            f"TorchAoConfig.quant_type={value!r:.40} is not supported; gpt2_dual quantizes "
            "'int8_weight_only' (or torchao's Int8WeightOnlyConfig()) only"
        )
    kind = type(value).__name__
    granularity = type(getattr(value, "granularity", None)).__name__
    per_row = granularity in ("PerRow", "NoneType") and getattr(value, "group_size", None) is None
    if kind == "Int8WeightOnlyConfig" and per_row:
        return "int8_weight_only"
    what = f"{kind}(granularity={granularity})" if kind == "Int8WeightOnlyConfig" else kind
    raise InvalidInputError(
        f"TorchAoConfig.quant_type={what} is not supported; gpt2_dual quantizes "
        "'int8_weight_only' (torchao's Int8WeightOnlyConfig() with PerRow granularity) only"
    )


class TorchAoConfig:
    """int8 weight-only quantization of every product (``gpt2_dual.pt.torchao_int8``), in
    transformers' ``TorchAoConfig`` spelling; its object is accepted too (``as_torchao``).

    Args:
        quant_type: ``"int8_weight_only"`` or torchao's ``Int8WeightOnlyConfig()``.
        include_input_output_embeddings: quantize the tied LM head too (default True here,
            for decoding speed: it is a third of gpt2's weight bytes; transformers' default is
            False). The input embedding lookups stay float.
        modules_to_not_convert: module names kept in float (transformers' rule, ``is_skipped``).

    Raises:
        InvalidInputError: another quant type.
        InputTypeError: a flag that is not a bool.
    """

    def __init__(
        self,
        quant_type: Any = "int8_weight_only",
        *,
        include_input_output_embeddings: bool = True,
        modules_to_not_convert: list[str] | None = None,
    ) -> None:
        self.quant_type = _torchao_type(quant_type)
        if not isinstance(include_input_output_embeddings, bool):
            raise InputTypeError(
                "TorchAoConfig.include_input_output_embeddings must be a bool, got "
                f"{type(include_input_output_embeddings).__name__}"
            )
        self.include_input_output_embeddings = include_input_output_embeddings
        self.modules_to_not_convert = list(modules_to_not_convert or [])

    def to_dict(self) -> dict[str, Any]:
        """``quant_method``, ``quant_type`` (by name) and the two options."""
        return {
            "quant_method": TORCHAO_METHOD,
            "quant_type": self.quant_type,
            "include_input_output_embeddings": self.include_input_output_embeddings,
            "modules_to_not_convert": list(self.modules_to_not_convert),
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TorchAoConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"TorchAoConfig {json.dumps(self.to_dict(), sort_keys=True)}"


def as_torchao(value: Any) -> TorchAoConfig | None:
    """``value`` as a ``TorchAoConfig`` when it describes torchao (ours; transformers' object,
    its ``quant_method`` ``"torchao"``, read field by field), else None."""
    if isinstance(value, TorchAoConfig):
        return value
    if value is None or isinstance(value, Mapping):
        return None
    if str(getattr(value, "quant_method", "")).rpartition(".")[2].lower() != TORCHAO_METHOD:
        return None
    if getattr(value, "quant_type_kwargs", None):
        raise InvalidInputError(
            f"TorchAoConfig.quant_type_kwargs={value.quant_type_kwargs!r:.60} is not supported; "
            "pass Int8WeightOnlyConfig() as quant_type"
        )
    return TorchAoConfig(
        value.quant_type,
        include_input_output_embeddings=bool(value.include_input_output_embeddings),
        modules_to_not_convert=value.modules_to_not_convert,
    )


def as_quantization_config(value: Any) -> Any:
    """A ``quantization_config`` value as stored in ``GPT2Config``: a ``BitsAndBytesConfig``
    for bitsandbytes (from ours, a dict, or transformers' object through its ``to_dict()``),
    None, or a dict of another method kept as it is (loading refuses it).

    Raises:
        InputTypeError: neither None, a mapping, nor an object with ``to_dict()``.
    """
    if value is None or isinstance(value, BitsAndBytesConfig | TorchAoConfig):
        return value
    if not isinstance(value, Mapping):
        to_dict = getattr(value, "to_dict", None)
        if not callable(to_dict):
            raise InputTypeError(
                "quantization_config must be a BitsAndBytesConfig, transformers' "
                f"BitsAndBytesConfig or a dict, got {type(value).__name__}"
            )
        value = to_dict()
    if is_bitsandbytes_dict(value):
        return BitsAndBytesConfig.from_dict(value)
    return copy.deepcopy(dict(value))
