"""PyTorch GPT-2 models with transformers' class names, keywords and numbers.

Importing this package imports torch. The six models share ``GPT2PreTrainedModel``
(``from_pretrained``, ``save_pretrained``, ``init_weights``, ``tie_weights``, gradient
checkpointing, ``set_attn_implementation``) and always return the typed outputs of
``gpt2_dual.outputs``. peft's tuners take them as they take transformers' GPT-2, with nothing
to call (``peft_support``: arranged here, importing neither peft nor transformers).

Example:
    >>> import torch
    >>> from gpt2_dual import GPT2Config
    >>> from gpt2_dual.pt import GPT2LMHeadModel
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4)).eval()
    >>> model(torch.tensor([[15496, 995]])).logits.shape
    torch.Size([1, 2, 50257])
"""

from __future__ import annotations

from gpt2_dual.config import GPT2Config
from gpt2_dual.heads import HEAD_SPECS
from gpt2_dual.pt.attention import ATTN_IMPLEMENTATIONS
from gpt2_dual.pt.cache import DynamicCache, StaticCache
from gpt2_dual.pt.heads import (
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)
from gpt2_dual.pt.model import GPT2Model, GPT2PreTrainedModel
from gpt2_dual.pt.peft_support import register_on_import

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "MODEL_CLASSES",
    "DynamicCache",
    "GPT2DoubleHeadsModel",
    "GPT2ForQuestionAnswering",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2LMHeadModel",
    "GPT2Model",
    "GPT2PreTrainedModel",
    "StaticCache",
    "build",
]

register_on_import()  # peft sees our Conv1D as transformers' (see peft_support.py)

#: Model class by head name (keys of ``gpt2_dual.heads.HEAD_SPECS``).
MODEL_CLASSES: dict[str, type[GPT2PreTrainedModel]] = {
    name: globals()[spec.class_name] for name, spec in HEAD_SPECS.items()
}


def build(
    head: str, config: GPT2Config, *, attn_implementation: str = "sdpa"
) -> GPT2PreTrainedModel:
    """A new, randomly initialized model of ``head`` (a key of ``HEAD_SPECS``).

    Raises:
        KeyError: unknown head; the message lists the known ones.
    """
    if head not in MODEL_CLASSES:
        raise KeyError(f"unknown head {head!r}; choose one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[head](config, attn_implementation=attn_implementation)
