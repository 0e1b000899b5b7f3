"""peft (LoRA and its other tuners) on gpt2_dual.pt models: one call, ``register()``.

peft handles GPT-2's ``c_attn``, ``c_proj`` and ``c_fc`` by recognising transformers'
``Conv1D`` (``isinstance(module, transformers.pytorch_utils.Conv1D)``), weight ``(in, out)``,
which it adapts as a linear layer with ``fan_in_fan_out=True``. gpt2_dual's ``Conv1D`` has that
very layout but, importing no transformers, is not that class. ``register()`` makes it a
subclass of transformers' ``Conv1D``, for every model already built and to come, so that
``peft.get_peft_model``, ``PeftModel.from_pretrained``, ``merge_and_unload`` and peft's
``"all-linear"`` target see gpt2_dual models exactly as they see transformers' GPT-2 (same
module names, so an adapter saved from one loads into the other). gpt2_dual's own product
(``Conv1D.forward``) is kept.

This route was chosen over peft's per-config ``LoraConfig._register_custom_module``: that is
experimental API, covers LoRA only, and a config read back by ``PeftModel.from_pretrained``
does not carry it, so every reload would need it again.

Importing this module imports neither peft nor transformers; ``register()`` imports
transformers (which peft needs anyway).

Example:
    >>> from peft import LoraConfig, get_peft_model  # doctest: +SKIP
    >>> from gpt2_dual.pt import GPT2LMHeadModel, peft_support  # doctest: +SKIP
    >>> peft_support.register()  # doctest: +SKIP
    >>> config = LoraConfig(target_modules=["c_attn"], fan_in_fan_out=True)  # doctest: +SKIP
    >>> model = get_peft_model(GPT2LMHeadModel.from_pretrained("gpt2"), config)  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from gpt2_dual.pt.linear import Conv1D

logger = logging.getLogger(__name__)

__all__ = ["is_registered", "register"]


def register() -> None:
    """Make gpt2_dual's ``Conv1D`` a subclass of ``transformers.pytorch_utils.Conv1D`` (once;
    later calls do nothing), so that peft adapts it as it adapts transformers' GPT-2.

    Raises:
        ImportError: transformers is not installed (peft depends on it).
    """
    from transformers.pytorch_utils import Conv1D as TransformersConv1D

    if issubclass(Conv1D, TransformersConv1D):
        return
    Conv1D.__bases__ = (TransformersConv1D,)
    logger.info("gpt2_dual.pt Conv1D is now a subclass of transformers' Conv1D (peft support)")


def is_registered() -> bool:
    """Whether ``register()`` has run in this process (without importing transformers)."""
    return any(
        base.__module__ == "transformers.pytorch_utils" and base.__name__ == "Conv1D"
        for base in Conv1D.__mro__[1:]
    )
