"""transformers 4.x TensorFlow ``tf_model.h5`` <-> canonical names and layouts.

``TFPreTrainedModel.save_pretrained`` (``safe_serialization=False``, its default) writes the
weights with tf_keras' legacy HDF5 ``save_weights`` layout. For ``TFGPT2LMHeadModel``::

    attrs: layer_names=["transformer"], backend="tensorflow", keras_version="2.x"
    transformer/                              # one group per top-level Keras layer
        attrs: weight_names=["tfgpt2lm_head_model/transformer/wte/embeddings:0", ...]
        tfgpt2lm_head_model/transformer/wte/embeddings:0           (vocab, C)
        tfgpt2lm_head_model/transformer/h_._0/attn/c_attn/weight:0 (C, 3C)
        tfgpt2lm_head_model/transformer/h_._0/attn/c_attn/bias:0   (1, 3C)
        ...
    top_level_model_weights/                  # attrs: weight_names=[]

A stored name is ``<model name>/<weight name>``. The model name is Keras' snake_case of the
class (``MODEL_NAMES``; a second model in one process gets ``_1``); transformers' loader drops
it, so only the weight name (``transformer/h_._0/attn/c_attn/weight:0``) carries meaning. The
head layers are ``score`` (``TFGPT2ForSequenceClassification``) and ``multiple_choice_head``
(``TFGPT2DoubleHeadsModel``). Sharded checkpoints (``tf_model-00001-of-00002.h5`` plus
``tf_model.h5.index.json``) store each weight as a root-level dataset under its weight name,
listed in the root's ``layer_names``.

Layouts (``H5Param.layout``):

- ``SAME``: embeddings, LayerNorm ``gamma``/``beta`` (canonical ``weight``/``bias``), and
  ``TFConv1D`` weights, ``(in, out)`` like transformers' PyTorch ``Conv1D``;
- ``ROW``: ``TFConv1D`` biases are stored ``(1, out)``, canonical ``(out,)``;
- ``TRANSPOSE``: Keras ``Dense`` kernels are ``(in, out)``, canonical ``nn.Linear`` weights
  ``(out, in)`` (``score``, ``multiple_choice_head.summary``).

There is no ``lm_head``: ``TFGPT2LMHeadModel`` and ``TFGPT2DoubleHeadsModel`` multiply by
``wte`` whatever ``tie_word_embeddings`` says. transformers has no TensorFlow GPT-2 for
question answering or token classification. Older transformers named the token embedding
``transformer/wte/weight:0`` (``TFSharedEmbeddings``); it is read as ``wte.weight``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gpt2_dual.checkpoint.names.core import params
from gpt2_dual.config import GPT2Config

SAME, ROW, TRANSPOSE = "same", "row", "transpose"

#: Head -> transformers' TensorFlow class that saves it.
TF_CLASSES = {
    "base": "TFGPT2Model",
    "lm": "TFGPT2LMHeadModel",
    "double_heads": "TFGPT2DoubleHeadsModel",
    "sequence_classification": "TFGPT2ForSequenceClassification",
}
#: Head -> model name (first part of every stored name) as tf_keras derives it from the class.
MODEL_NAMES = {
    "base": "tfgpt2_model",
    "lm": "tfgpt2lm_head_model",
    "double_heads": "tfgpt2_double_heads_model",
    "sequence_classification": "tfgpt2_for_sequence_classification",
}
#: Group of the weights that belong to no layer; tf_keras writes it, empty, for GPT-2.
TOP_LEVEL_GROUP = "top_level_model_weights"


@dataclass(frozen=True)
class H5Param:
    """One weight: canonical name, weight name in ``tf_model.h5``, and the layout between them.

    Attributes:
        canonical: canonical name (``{i}`` stands for the block index in table rows).
        name: weight name below the model name (``transformer/h_._{i}/ln_1/gamma:0``); its first
            part is the top-level Keras layer, the HDF5 group of a ``save_weights`` file.
        layout: ``SAME``, ``ROW`` or ``TRANSPOSE`` (module docstring).
    """

    canonical: str
    name: str
    layout: str

    @property
    def layer(self) -> str:
        """Top-level Keras layer holding the weight: ``transformer``, ``score``, ..."""
        return self.name.split("/", 1)[0]

    def stored_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Canonical shape -> the shape transformers' TF stores."""
        if self.layout == ROW:
            return (1, *shape)
        return tuple(reversed(shape)) if self.layout == TRANSPOSE else tuple(shape)

    def canonical_shape(self, stored: tuple[int, ...]) -> tuple[int, ...]:
        """Stored shape -> canonical shape. A ``ROW`` weight not stored ``(1, n)`` keeps its
        shape, so the loader's shape check names it."""
        if self.layout == ROW:
            return tuple(stored[1:]) if len(stored) == 2 and stored[0] == 1 else tuple(stored)
        return tuple(reversed(stored)) if self.layout == TRANSPOSE else tuple(stored)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Stored array -> canonical layout (a ``TRANSPOSE`` result is made contiguous)."""
        if self.layout == ROW:
            return array.reshape(self.canonical_shape(array.shape))
        return np.ascontiguousarray(array.T) if self.layout == TRANSPOSE else array

    def to_stored(self, array: np.ndarray) -> np.ndarray:
        """Canonical array -> the layout transformers' TF stores."""
        if self.layout == ROW:
            return array.reshape(self.stored_shape(array.shape))
        return np.ascontiguousarray(array.T) if self.layout == TRANSPOSE else array


def _ln(canonical: str, name: str) -> tuple[H5Param, ...]:
    return H5Param(f"{canonical}.weight", f"{name}/gamma:0", SAME), H5Param(
        f"{canonical}.bias", f"{name}/beta:0", SAME
    )


def _conv1d(canonical: str, name: str) -> tuple[H5Param, ...]:
    """transformers' ``TFConv1D``: weight (in, out) as canonical, bias (1, out)."""
    return H5Param(f"{canonical}.weight", f"{name}/weight:0", SAME), H5Param(
        f"{canonical}.bias", f"{name}/bias:0", ROW
    )


def _dense(canonical: str, name: str, *, bias: bool) -> tuple[H5Param, ...]:
    """A Keras ``Dense``: kernel (in, out), the transpose of canonical nn.Linear (out, in)."""
    kernel = H5Param(f"{canonical}.weight", f"{name}/kernel:0", TRANSPOSE)
    return (kernel, H5Param(f"{canonical}.bias", f"{name}/bias:0", SAME)) if bias else (kernel,)


EMBEDDINGS = (
    H5Param("wte.weight", "transformer/wte/embeddings:0", SAME),
    H5Param("wpe.weight", "transformer/wpe/embeddings:0", SAME),
)

#: Rows of one block; ``{i}`` is the block index.
BLOCK = (
    *_ln("h.{i}.ln_1", "transformer/h_._{i}/ln_1"),
    *_conv1d("h.{i}.attn.c_attn", "transformer/h_._{i}/attn/c_attn"),
    *_conv1d("h.{i}.attn.c_proj", "transformer/h_._{i}/attn/c_proj"),
    *_ln("h.{i}.ln_2", "transformer/h_._{i}/ln_2"),
    *_conv1d("h.{i}.mlp.c_fc", "transformer/h_._{i}/mlp/c_fc"),
    *_conv1d("h.{i}.mlp.c_proj", "transformer/h_._{i}/mlp/c_proj"),
)

#: Extra rows of a block when ``add_cross_attention``.
CROSS_ATTENTION = (
    *_conv1d("h.{i}.crossattention.c_attn", "transformer/h_._{i}/crossattention/c_attn"),
    *_conv1d("h.{i}.crossattention.q_attn", "transformer/h_._{i}/crossattention/q_attn"),
    *_conv1d("h.{i}.crossattention.c_proj", "transformer/h_._{i}/crossattention/c_proj"),
    *_ln("h.{i}.ln_cross_attn", "transformer/h_._{i}/ln_cross_attn"),
)

FINAL = _ln("ln_f", "transformer/ln_f")

#: Head rows per head of ``TF_CLASSES`` (the LM heads store nothing: they use ``wte``).
HEADS: dict[str, tuple[H5Param, ...]] = {
    "base": (),
    "lm": (),
    "double_heads": _dense(
        "multiple_choice_head.summary", "multiple_choice_head/summary", bias=True
    ),
    "sequence_classification": _dense("score", "score", bias=False),
}
assert set(HEADS) == set(TF_CLASSES) == set(MODEL_NAMES)

#: Older weight names read as today's (transformers' own loader accepts both).
ALIASES = {"transformer/wte/weight:0": "transformer/wte/embeddings:0"}

_ROWS = (*EMBEDDINGS, *BLOCK, *CROSS_ATTENTION, *FINAL, *(p for ps in HEADS.values() for p in ps))
_BY_CANONICAL = {p.canonical: p for p in _ROWS}
_BY_NAME = {p.name: p for p in _ROWS}
_CANONICAL_BLOCK = re.compile(r"h\.(\d+)\.")
_NAME_BLOCK = re.compile(r"transformer/h_\._(\d+)/")


def h5_params(config: GPT2Config, head: str) -> list[H5Param]:
    """Every weight transformers' TF class for ``head`` stores for ``config``, canonical order.

    Raises:
        ValueError: ``head`` has no transformers TF class (question answering, token
            classification), or the config unties the LM head, which the TF classes cannot
            hold (they always multiply by ``wte``).
    """
    if head not in TF_CLASSES:
        raise ValueError(
            f"transformers has no TensorFlow GPT-2 for head {head!r}; tf_model.h5 holds "
            f"{', '.join(TF_CLASSES)}"
        )
    out = []
    for row in params(config, head):
        if row.canonical == "lm_head.weight":
            raise ValueError(
                "transformers' TensorFlow GPT-2 ties the LM head to wte; tf_model.h5 cannot "
                "hold a separate lm_head.weight (config.tie_word_embeddings=False)"
            )
        match = _CANONICAL_BLOCK.match(row.canonical)
        pattern = _CANONICAL_BLOCK.sub("h.{i}.", row.canonical, count=1) if match else row.canonical
        p = _BY_CANONICAL[pattern]
        i = match.group(1) if match else ""
        out.append(H5Param(p.canonical.format(i=i), p.name.format(i=i), p.layout))
    return out


def from_name(name: str) -> H5Param | None:
    """The row of a weight name (model name dropped), block index filled; None if unknown.

    Example:
        >>> from_name("transformer/h_._3/attn/c_attn/bias:0").canonical
        'h.3.attn.c_attn.bias'
    """
    name = ALIASES.get(name, name)
    match = _NAME_BLOCK.match(name)
    pattern = _NAME_BLOCK.sub("transformer/h_._{i}/", name, count=1) if match else name
    p = _BY_NAME.get(pattern)
    if p is None:
        return None
    i = match.group(1) if match else ""
    return H5Param(p.canonical.format(i=i), name, p.layout)


def fallback_canonical(name: str) -> str:
    """A canonical-style name for a weight the table does not know, for reports:
    ``transformer/h_._0/attn/extra:0`` -> ``h.0.attn.extra``."""
    name = name.removeprefix("transformer/").removesuffix(":0")
    return re.sub(r"h_\._(\d+)", r"h.\1", name).replace("/", ".")


def head_of_model_name(model_name: str) -> str | None:
    """The head whose class tf_keras names ``model_name`` (``tfgpt2lm_head_model_1`` ->
    ``"lm"``), whatever underscores an older Keras put in; None when unknown."""
    squashed = re.sub(r"_\d+$", "", model_name).replace("_", "").lower()
    for head, class_name in TF_CLASSES.items():
        if class_name.lower() == squashed:
            return head
    return None
