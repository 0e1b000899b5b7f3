"""Quantization settings, framework-neutral (no torch import): what ``quantization_config`` holds.

``bnb.py`` has ``BitsAndBytesConfig`` (transformers' fields and JSON, for ``gpt2_dual.pt.bnb``)
and the rule for which layers stay in full precision; ``torchao.py`` has ``TorchAoConfig``
(int8 weight-only products, for ``gpt2_dual.pt.torchao_int8``) and ``as_quantization_config``,
which turns either kind into what ``GPT2Config`` stores.
"""

from gpt2_dual.quantization.bnb import (
    KEEP_IN_FULL_PRECISION,
    BitsAndBytesConfig,
    is_skipped,
    modules_to_not_convert,
)
from gpt2_dual.quantization.torchao import TorchAoConfig, as_quantization_config, as_torchao

__all__ = [
    "KEEP_IN_FULL_PRECISION",
    "BitsAndBytesConfig",
    "TorchAoConfig",
    "as_quantization_config",
    "as_torchao",
    "is_skipped",
    "modules_to_not_convert",
]
