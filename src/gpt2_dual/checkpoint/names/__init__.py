"""THE weight-name table, one package: the only place that knows checkpoint names and layouts.

- ``core``: canonical names (transformers' PyTorch keys without ``transformer.``), their
  layouts and shapes, and the attribute paths of gpt2_dual.pt and gpt2_dual.tf.
- one module per foreign format, each mapping its names and layouts to canonical ones:
  ``tf_h5`` (transformers 4.x TensorFlow ``tf_model.h5``), ``openai`` (OpenAI's TF1 release),
  ``keras_hub`` (KerasHub GPT-2 presets).

Readers and writers in ``gpt2_dual.convert`` never spell a checkpoint key themselves.
"""

from gpt2_dual.checkpoint.names.core import (
    BACKBONE_ATTR,
    BLOCK,
    CROSS_ATTENTION,
    EMBEDDINGS,
    FINAL,
    HEADS,
    HF_PREFIX,
    IGNORED,
    LM_HEAD,
    Param,
    backbone_params,
    canonical_shapes,
    head_params,
    is_backbone,
    params,
    to_canonical_key,
)

__all__ = [
    "BACKBONE_ATTR", "BLOCK", "CROSS_ATTENTION", "EMBEDDINGS", "FINAL", "HEADS", "HF_PREFIX",
    "IGNORED", "LM_HEAD", "Param", "backbone_params", "canonical_shapes", "head_params",
    "is_backbone", "params", "to_canonical_key",
]  # fmt: skip
