"""bitsandbytes settings, framework-neutral: ``BitsAndBytesConfig`` and the layers it skips.

Field for field transformers' ``BitsAndBytesConfig`` (same names, defaults, and the same JSON
in ``config.json`` under ``quantization_config``), without importing torch: dtypes are kept as
their names (``"float16"``); a ``torch.dtype`` is accepted and stored by name. Values are
checked when the config is made and on every assignment. The PyTorch side
(``gpt2_dual.pt.bnb``) reads it to swap layers for bitsandbytes ones while loading.

Which layers stay in full precision (``modules_to_not_convert``) follows transformers 4.57's
bitsandbytes quantizer exactly, written out per head as data (``KEEP_IN_FULL_PRECISION``)
rather than found by its deepcopy-and-tie heuristic. ``is_skipped`` is transformers' matching
rule for those names, shared with torchao (``gpt2_dual.quantization.torchao``).

Example:
    >>> from gpt2_dual import BitsAndBytesConfig
    >>> q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
    ...                        bnb_4bit_compute_dtype="float16", bnb_4bit_use_double_quant=True)
    >>> q.quantization_method(), q.to_dict()["quant_method"]
    ('nf4', 'bitsandbytes')
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from typing import Any

from gpt2_dual.errors import InputTypeError, InvalidInputError

logger = logging.getLogger(__name__)

__all__ = [
    "COMPUTE_DTYPES",
    "KEEP_IN_FULL_PRECISION",
    "QUANT_METHOD",
    "QUANT_TYPES",
    "STORAGE_DTYPES",
    "BitsAndBytesConfig",
    "is_bitsandbytes_dict",
    "is_skipped",
    "modules_to_not_convert",
]

QUANT_METHOD = "bitsandbytes"
#: bitsandbytes' 4-bit data types.
QUANT_TYPES = ("fp4", "nf4")
#: Dtypes a 4-bit layer may compute in.
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
#: Storage dtypes of packed 4-bit weights (transformers' list).
STORAGE_DTYPES = ("float16", "float32", "int8", "uint8", "float64", "bfloat16")

#: Fields with transformers' defaults, in the order transformers writes them.
DEFAULTS: dict[str, Any] = {
    "load_in_8bit": False,
    "load_in_4bit": False,
    "llm_int8_threshold": 6.0,
    "llm_int8_skip_modules": None,
    "llm_int8_enable_fp32_cpu_offload": False,
    "llm_int8_has_fp16_weight": False,
    "bnb_4bit_quant_type": "fp4",
    "bnb_4bit_use_double_quant": False,
    "bnb_4bit_compute_dtype": None,  # -> "float32"
    "bnb_4bit_quant_storage": None,  # -> "uint8"
}
_BOOLS = (
    "load_in_8bit", "load_in_4bit", "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight", "bnb_4bit_use_double_quant",
)  # fmt: skip
#: Keys of transformers' JSON that are not arguments (its private copies and the method).
_WRITTEN_ONLY = ("_load_in_8bit", "_load_in_4bit", "quant_method")

#: Modules transformers 4.57's bitsandbytes quantizer keeps in full precision when
#: ``llm_int8_skip_modules`` is None, by head (its ``get_keys_to_not_convert``: the output
#: embedding, or the model's last module together with tied weights). A tied ``lm_head`` is
#: ``wte`` itself and is never quantized. With an untied ``lm_head`` the double-heads model
#: keeps only ``lm_head`` (its ``multiple_choice_head.summary`` is quantized, as there).
KEEP_IN_FULL_PRECISION: dict[str, tuple[str, ...]] = {
    "base": (),
    "lm": ("lm_head",),
    "double_heads": ("lm_head", "multiple_choice_head.summary"),
    "sequence_classification": ("score",),
    "token_classification": ("classifier",),
    "question_answering": ("qa_outputs",),
}


def _dtype_name(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """A dtype given as a name or a ``torch.dtype`` -> its name, checked against ``allowed``."""
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        value = str(value).removeprefix("torch.")
    if not isinstance(value, str):
        raise InputTypeError(
            f"BitsAndBytesConfig.{name} must be a dtype name or a torch.dtype, got "
            f"{type(value).__name__} {value!r:.40}"
        )
    value = value.removeprefix("torch.")
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise InvalidInputError(
            f"BitsAndBytesConfig.{name}={value!r:.40} is not allowed; use one of {choices}"
        )
    return value


def _check(name: str, value: Any) -> Any:
    """The value to store for field ``name``, or a typed error naming field, value and rule."""
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise InputTypeError(
                f"BitsAndBytesConfig.{name} must be a bool, got {type(value).__name__} "
                f"{value!r:.40}"
            )
        return value
    if name == "llm_int8_threshold":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputTypeError(
                f"BitsAndBytesConfig.llm_int8_threshold must be a number, got "
                f"{type(value).__name__} {value!r:.40}"
            )
        if not value >= 0:
            raise InvalidInputError(
                f"BitsAndBytesConfig.llm_int8_threshold={value!r} must be >= 0 (0 turns the "
                "outlier decomposition off)"
            )
        return float(value)
    if name == "llm_int8_skip_modules":
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise InputTypeError(
                "BitsAndBytesConfig.llm_int8_skip_modules must be None or a list of module "
                f"names, got {type(value).__name__} {value!r:.40}"
            )
        odd = [v for v in value if not isinstance(v, str)]
        if odd:
            raise InputTypeError(
                f"BitsAndBytesConfig.llm_int8_skip_modules must hold module names (str), got "
                f"{odd[0]!r:.40}"
            )
        return list(value)
    if name == "bnb_4bit_compute_dtype":
        return "float32" if value is None else _dtype_name(name, value, COMPUTE_DTYPES)
    if name == "bnb_4bit_quant_storage":
        return "uint8" if value is None else _dtype_name(name, value, STORAGE_DTYPES)
    if name == "bnb_4bit_quant_type":
        if value not in QUANT_TYPES:
            raise InvalidInputError(
                f"BitsAndBytesConfig.bnb_4bit_quant_type={value!r:.40} is not a bitsandbytes "
                "4-bit type; use 'nf4' or 'fp4'"
            )
        return value
    raise AttributeError(f"BitsAndBytesConfig has no field {name!r}")


class BitsAndBytesConfig:
    """bitsandbytes 4-bit (NF4/FP4) or 8-bit (LLM.int8()) loading, as transformers spells it.

    Args:
        load_in_8bit: replace the linear layers by 8-bit ``bnb.nn.Linear8bitLt``.
        load_in_4bit: replace them by 4-bit ``bnb.nn.Linear4bit`` (not both).
        llm_int8_threshold: 8-bit outlier threshold (activations above it stay 16-bit).
        llm_int8_skip_modules: module names kept in full precision, replacing the defaults
            (``KEEP_IN_FULL_PRECISION``): a name matches a module of that attribute name
            (``"c_fc"``), a dotted path (``"transformer.h.0.mlp.c_fc"``) or any module under
            it (``"transformer.h.0"``, ``"mlp"``), as in transformers.
        llm_int8_enable_fp32_cpu_offload: accepted and stored (gpt2_dual places a model on
            one device).
        llm_int8_has_fp16_weight: 8-bit layers keep 16-bit weights (for training).
        bnb_4bit_compute_dtype: dtype of the 4-bit products: ``"float32"`` (default),
            ``"float16"``, ``"bfloat16"`` or the ``torch.dtype``.
        bnb_4bit_quant_type: ``"fp4"`` (default) or ``"nf4"``.
        bnb_4bit_use_double_quant: quantize the block scales again (about 0.4 bits per weight
            less).
        bnb_4bit_quant_storage: dtype the packed 4-bit weights are stored in (``"uint8"``).
        **kwargs: other keys are logged and dropped, as transformers does.

    Raises:
        InvalidInputError: both ``load_in_4bit`` and ``load_in_8bit``, an unknown quant type,
            compute or storage dtype, or a negative threshold.
        InputTypeError: a field of the wrong type.
    """

    def __init__(self, **kwargs: Any) -> None:
        object.__setattr__(self, "_values", {})
        for name in _WRITTEN_ONLY:  # transformers' own keys in its JSON
            value = kwargs.pop(name, None)
            if name == "quant_method" and value not in (None, QUANT_METHOD):
                raise InvalidInputError(
                    f"quantization_config has quant_method={value!r:.40}; gpt2_dual supports "
                    f"{QUANT_METHOD!r} only"
                )
        values = {name: kwargs.pop(name, default) for name, default in DEFAULTS.items()}
        if kwargs:
            logger.info("BitsAndBytesConfig: unused keys %s are dropped", sorted(kwargs))
        for name, value in values.items():
            self._values[name] = _check(name, value)
        self._check_bits()

    def _check_bits(self) -> None:
        if self._values["load_in_4bit"] and self._values["load_in_8bit"]:
            raise InvalidInputError(
                "BitsAndBytesConfig: load_in_4bit and load_in_8bit are both True, but only one "
                "can be used at the same time"
            )

    # ----------------------------------------------------------------- fields
    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"'BitsAndBytesConfig' has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in DEFAULTS:
            raise AttributeError(f"BitsAndBytesConfig has no field {name!r}")
        previous = self._values[name]
        self._values[name] = _check(name, value)
        try:
            self._check_bits()
        except InvalidInputError:
            self._values[name] = previous
            raise

    @property
    def bits(self) -> int | None:
        """4, 8, or None when neither ``load_in_4bit`` nor ``load_in_8bit`` is set."""
        return 4 if self.load_in_4bit else 8 if self.load_in_8bit else None

    def is_quantizable(self) -> bool:
        """Whether loading quantizes (``load_in_4bit`` or ``load_in_8bit``)."""
        return self.bits is not None

    def quantization_method(self) -> str | None:
        """``"llm_int8"``, ``"fp4"``, ``"nf4"`` or None, as transformers names them."""
        if self.load_in_8bit:
            return "llm_int8"
        return self.bnb_4bit_quant_type if self.load_in_4bit else None

    # ----------------------------------------------------------------- dicts and JSON
    def to_dict(self) -> dict[str, Any]:
        """Every field as transformers' ``to_dict`` writes it (its private ``_load_in_*`` copies
        and ``quant_method`` included, dtypes by name)."""
        v = copy.deepcopy(self._values)
        out = {"quant_method": QUANT_METHOD, "_load_in_8bit": v["load_in_8bit"]}
        out["_load_in_4bit"] = v["load_in_4bit"]
        out.update((k, v[k]) for k in DEFAULTS if not k.startswith("load_in"))
        out.update(load_in_4bit=v["load_in_4bit"], load_in_8bit=v["load_in_8bit"])
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """``to_dict`` without the values equal to a default ``BitsAndBytesConfig()``'s."""
        default = BitsAndBytesConfig().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != default[k]}

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON as transformers writes it: sorted keys, two-space indent, trailing newline."""
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(
        cls, config_dict: Mapping[str, Any], return_unused_kwargs: bool = False, **kwargs: Any
    ) -> Any:
        """Build from a ``quantization_config`` dict (transformers' JSON included); ``kwargs``
        that are fields override it, the others are returned with ``return_unused_kwargs``."""
        config = cls(**dict(config_dict))
        unused = {}
        for name, value in kwargs.items():
            if name in DEFAULTS:
                setattr(config, name, value)
            else:
                unused[name] = value
        return (config, unused) if return_unused_kwargs else config

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BitsAndBytesConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"BitsAndBytesConfig {json.dumps(self.to_dict(), indent=2, sort_keys=True)}\n"


def is_bitsandbytes_dict(value: Any) -> bool:
    """Whether a ``quantization_config`` dict describes bitsandbytes (as transformers tells)."""
    return isinstance(value, Mapping) and (
        value.get("quant_method") == QUANT_METHOD
        or bool(value.get("load_in_4bit"))
        or bool(value.get("load_in_8bit"))
    )


def modules_to_not_convert(head: str, config: Any, quantization: BitsAndBytesConfig) -> list[str]:
    """Module names kept in full precision for a ``head`` model (a key of ``HEAD_SPECS``).

    ``llm_int8_skip_modules`` when given (it replaces the defaults, as in transformers), else
    ``KEEP_IN_FULL_PRECISION[head]`` (double heads with an untied ``lm_head``: ``lm_head``
    only). A tied ``lm_head`` is always kept: its weight is ``wte``'s.
    """
    if quantization.llm_int8_skip_modules is not None:
        names = list(quantization.llm_int8_skip_modules)
    elif head == "double_heads" and not config.tie_word_embeddings:
        names = ["lm_head"]
    else:
        names = list(KEEP_IN_FULL_PRECISION[head])
    if config.tie_word_embeddings and "lm_head" not in names and head in ("lm", "double_heads"):
        names.append("lm_head")
    return names


def is_skipped(path: str, skip: list[str]) -> bool:
    """transformers' rule: the module at dotted ``path`` stays in full precision when its
    attribute name is in ``skip``, or a name in ``skip`` is the path or a prefix of a part of
    it (``"mlp"`` matches ``"transformer.h.0.mlp.c_fc"``; a substring test, as there)."""
    name = path.rpartition(".")[2]
    return name in skip or any(key + "." in path or key == path for key in skip)
