"""KerasHub GPT-2 presets: their weight names, layouts and configs, mapped to canonical ones.

A KerasHub preset stores ``GPT2Backbone`` variables in ``model.weights.h5``, Keras 3's weights
layout: the functional model's layers under ``layers/<class name in snake case>`` (``_1``,
``_2``, ... for later layers of the same class), sublayers under their attribute names, and a
layer's own variables as datasets ``vars/0``, ``vars/1`` in creation order (kernel then bias;
gamma then beta). The ``vars`` group carries the layer's ``name`` as an attribute (Keras >= 3.9;
older files lack it and load the same).

Layouts (C ``n_embd``, H ``n_head``, D ``head_dim``, I ``inner_dim``):

- embeddings and LayerNorms are stored as canonical;
- ``self_attention`` ``query``/``key``/``value`` are ``EinsumDense`` kernels ``(C, H, D)`` and
  biases ``(H, D)``; canonical ``c_attn`` is their concatenation ``(C, 3C)`` / ``(3C,)``
  (q, k, v, each head-major: column ``h * D + d``, transformers' ``split_heads`` order);
- ``attention_output`` is an ``EinsumDense`` kernel ``(H, D, C)``: canonical ``c_proj`` is its
  reshape to ``(C, C)``;
- the feed-forward ``Dense`` kernels are ``(in, out)``, as transformers' ``Conv1D``.

KerasHub's ``GPT2CausalLM`` has no weights of its own: its logits use the token embedding
transposed (``ReversibleEmbedding``), i.e. transformers' tied ``lm_head``.

The JSON files of a preset are Keras-serialized objects (``module``, ``class_name``,
``config``, ``registered_name``); the builders at the end write them as
``save_to_preset`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpt2_dual.config import GPT2Config

WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_INDEX = "model.weights.json"
CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor.json"
METADATA_FILE = "metadata.json"
TOKENIZER_ASSETS = "assets/tokenizer"
VOCABULARY_FILE = "vocabulary.json"  # transformers' vocab.json
MERGES_FILE = "merges.txt"
#: KerasHub's GPT-2 tokenizer needs this token in the vocabulary (its start and end token).
END_OF_TEXT = "<|endoftext|>"

#: Serialized class names: ``(module, class_name, registered_name)``.
BACKBONE = ("keras_hub.src.models.gpt2.gpt2_backbone", "GPT2Backbone", "keras_hub>GPT2Backbone")
CAUSAL_LM = ("keras_hub.src.models.gpt2.gpt2_causal_lm", "GPT2CausalLM", "keras_hub>GPT2CausalLM")
TOKENIZER = ("keras_hub.src.models.gpt2.gpt2_tokenizer", "GPT2Tokenizer", "keras_hub>GPT2Tokenizer")
PREPROCESSOR = (
    "keras_hub.src.models.gpt2.gpt2_causal_lm_preprocessor",
    "GPT2CausalLMPreprocessor",
    "keras_hub>GPT2CausalLMPreprocessor",
)
#: Head name (``heads.HEAD_SPECS``) of each KerasHub GPT-2 model; the rest have no KerasHub form.
HEAD_BY_TASK = {BACKBONE[1]: "base", CAUSAL_LM[1]: "lm"}

#: ``GPT2Backbone`` config key -> ``GPT2Config`` field, for the sizes stored as they are.
#: ``intermediate_dim`` is ``inner_dim`` (``n_inner`` or 4C); ``dropout`` is every GPT-2 dropout.
CONFIG_FIELDS = {
    "vocabulary_size": "vocab_size",
    "num_layers": "n_layer",
    "num_heads": "n_head",
    "hidden_dim": "n_embd",
    "max_sequence_length": "n_positions",
}

#: What ``GPT2Backbone`` hard-codes, as ``GPT2Config`` values it can represent.
LAYER_NORM_EPSILON = 1e-5
#: Names of the tanh-approximated GELU (KerasHub runs ``gelu(approximate=True)``).
GELU_TANH = frozenset(
    {"gelu_new", "gelu_fast", "gelu_accurate", "gelu_python_tanh", "gelu_pytorch_tanh"}
)

#: Layer group -> the Keras layer ``name`` KerasHub gives it (``{i}`` the block index).
_BLOCK_GROUPS = {
    "": "transformer_layer_{i}",
    "/_self_attention_layer": "self_attention",
    "/_self_attention_layer/query_dense": "query",
    "/_self_attention_layer/key_dense": "key",
    "/_self_attention_layer/value_dense": "value",
    "/_self_attention_layer/output_dense": "attention_output",
    "/_self_attention_layer_norm": "self_attention_layer_norm",
    "/_feedforward_intermediate_dense": "feedforward_intermediate_dense",
    "/_feedforward_output_dense": "feedforward_output_dense",
    "/_feedforward_layer_norm": "feedforward_layer_norm",
}
_TOP_GROUPS = {
    "layers/reversible_embedding": "token_embedding",
    "layers/position_embedding": "position_embedding",
    "layers/layer_normalization": "layer_norm",
}

#: How the stored arrays become the canonical one (see the module docstring).
LAYOUTS = ("same", "qkv_kernel", "qkv_bias", "heads_kernel")


@dataclass(frozen=True)
class HubParam:
    """One canonical parameter and the ``model.weights.h5`` datasets that hold it.

    Attributes:
        canonical: canonical name (``{i}`` the block index).
        datasets: dataset paths, ``{block}`` the block's layer group.
        layout: one of ``LAYOUTS``.
    """

    canonical: str
    datasets: tuple[str, ...]
    layout: str = "same"


def block_group(i: int) -> str:
    """Layer group of block ``i``: Keras numbers the second ``TransformerDecoder`` ``_1``."""
    return "layers/transformer_decoder" + (f"_{i}" if i else "")


def _pair(canonical: str, group: str) -> tuple[HubParam, HubParam]:
    """weight/bias (gamma/beta, kernel/bias) stored as ``vars/0`` and ``vars/1``."""
    return (
        HubParam(f"{canonical}.weight", (f"{group}/vars/0",)),
        HubParam(f"{canonical}.bias", (f"{group}/vars/1",)),
    )


_QKV = tuple(f"{{block}}/_self_attention_layer/{n}_dense" for n in ("query", "key", "value"))

EMBEDDINGS = (
    HubParam("wte.weight", ("layers/reversible_embedding/vars/0",)),
    HubParam("wpe.weight", ("layers/position_embedding/vars/0",)),
)
BLOCK = (
    *_pair("h.{i}.ln_1", "{block}/_self_attention_layer_norm"),
    HubParam("h.{i}.attn.c_attn.weight", tuple(f"{g}/vars/0" for g in _QKV), "qkv_kernel"),
    HubParam("h.{i}.attn.c_attn.bias", tuple(f"{g}/vars/1" for g in _QKV), "qkv_bias"),
    HubParam(
        "h.{i}.attn.c_proj.weight",
        ("{block}/_self_attention_layer/output_dense/vars/0",),
        "heads_kernel",
    ),
    HubParam("h.{i}.attn.c_proj.bias", ("{block}/_self_attention_layer/output_dense/vars/1",)),
    *_pair("h.{i}.ln_2", "{block}/_feedforward_layer_norm"),
    *_pair("h.{i}.mlp.c_fc", "{block}/_feedforward_intermediate_dense"),
    *_pair("h.{i}.mlp.c_proj", "{block}/_feedforward_output_dense"),
)
FINAL = _pair("ln_f", "layers/layer_normalization")


def hub_params(config: GPT2Config) -> list[HubParam]:
    """Every backbone parameter of ``config`` with ``{i}``/``{block}`` filled in, in the order
    of ``core.backbone_params`` (for configs KerasHub can represent: no cross-attention)."""
    rows = list(EMBEDDINGS)
    for i in range(config.n_layer):
        group = block_group(i)
        rows.extend(
            HubParam(
                p.canonical.format(i=i), tuple(d.format(block=group) for d in p.datasets), p.layout
            )
            for p in BLOCK
        )
    rows.extend(FINAL)
    return rows


def dataset_key(path: str) -> str:
    """A dataset path with the leading underscores of its parts dropped, for matching: Keras
    names a sublayer by its public property where there is one (``query_dense``) and by its
    attribute otherwise (``_self_attention_layer``), so versions may differ in the underscore."""
    return "/".join(part.lstrip("_") for part in path.split("/"))


def layer_names(config: GPT2Config) -> dict[str, str]:
    """Layer group -> Keras layer name, for every group ``hub_params`` writes under."""
    names = dict(_TOP_GROUPS)
    for i in range(config.n_layer):
        for suffix, name in _BLOCK_GROUPS.items():
            names[block_group(i) + suffix] = name.format(i=i)
    return names


def hub_shapes(row: HubParam, config: GPT2Config, canonical: tuple[int, ...]) -> list[tuple]:
    """Shapes of the row's datasets, given the canonical shape."""
    C, H, D = config.n_embd, config.n_head, config.head_dim
    if row.layout == "qkv_kernel":
        return [(C, H, D)] * 3
    if row.layout == "qkv_bias":
        return [(H, D)] * 3
    if row.layout == "heads_kernel":
        return [(H, D, C)]
    return [tuple(canonical)]


def to_canonical(row: HubParam, arrays: Sequence[np.ndarray], config: GPT2Config) -> np.ndarray:
    """The row's stored arrays -> the canonical array (a new array, same dtype)."""
    C = config.n_embd
    if row.layout == "qkv_kernel":  # 3 x (C, H, D) -> (C, 3C)
        return np.concatenate([a.reshape(C, C) for a in arrays], axis=1)
    if row.layout == "qkv_bias":  # 3 x (H, D) -> (3C,)
        return np.concatenate([a.reshape(C) for a in arrays])
    if row.layout == "heads_kernel":  # (H, D, C) -> (C, C)
        return np.ascontiguousarray(arrays[0].reshape(C, C))
    return np.ascontiguousarray(arrays[0])


def from_canonical(row: HubParam, array: np.ndarray, config: GPT2Config) -> list[np.ndarray]:
    """The canonical array -> the row's arrays to store, in ``row.datasets`` order."""
    C, H, D = config.n_embd, config.n_head, config.head_dim
    if row.layout == "qkv_kernel":  # (C, 3C) -> 3 x (C, H, D)
        return [np.ascontiguousarray(a.reshape(C, H, D)) for a in np.split(array, 3, axis=1)]
    if row.layout == "qkv_bias":  # (3C,) -> 3 x (H, D)
        return [np.ascontiguousarray(a.reshape(H, D)) for a in np.split(array, 3)]
    if row.layout == "heads_kernel":  # (C, C) -> (H, D, C)
        return [np.ascontiguousarray(array.reshape(H, D, C))]
    return [np.ascontiguousarray(array)]


# --------------------------------------------------------------------------- serialized configs
def _policy(name: str) -> dict[str, Any]:
    """A serialized Keras ``DTypePolicy``."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name},
            "registered_name": None}  # fmt: skip


def _serialized(kind: tuple[str, str, str], config: dict[str, Any]) -> dict[str, Any]:
    module, class_name, registered = kind
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": registered}  # fmt: skip


def backbone_config(config: GPT2Config, dtype: str) -> dict[str, Any]:
    """``config.json``: a serialized ``GPT2Backbone`` of ``config`` with ``dtype`` variables."""
    sizes = {theirs: getattr(config, ours) for theirs, ours in CONFIG_FIELDS.items()}
    return _serialized(BACKBONE, {
        "name": "gpt2_backbone", "trainable": True, "dtype": _policy(dtype), **sizes,
        "intermediate_dim": config.inner_dim, "dropout": config.resid_pdrop,
    })  # fmt: skip


def tokenizer_config(add_prefix_space: bool) -> dict[str, Any]:
    """``tokenizer.json``: a serialized ``GPT2Tokenizer`` (its vocabulary lives in the assets)."""
    return _serialized(TOKENIZER, {
        "name": "gpt2_tokenizer", "trainable": True, "dtype": _policy("int32"),
        "config_file": TOKENIZER_FILE, "sequence_length": None,
        "add_prefix_space": add_prefix_space, "unsplittable_tokens": [END_OF_TEXT],
    })  # fmt: skip


def preprocessor_config(tokenizer: dict[str, Any], sequence_length: int) -> dict[str, Any]:
    """``preprocessor.json``: a serialized ``GPT2CausalLMPreprocessor``."""
    return _serialized(PREPROCESSOR, {
        "name": "gpt2_causal_lm_preprocessor", "trainable": True, "dtype": _policy("float32"),
        "tokenizer": tokenizer, "config_file": PREPROCESSOR_FILE,
        "sequence_length": sequence_length, "add_start_token": True, "add_end_token": True,
    })  # fmt: skip


def causal_lm_config(backbone: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict:
    """``task.json``: a serialized ``GPT2CausalLM`` (no weights of its own)."""
    return _serialized(CAUSAL_LM, {
        "backbone": backbone, "preprocessor": preprocessor, "name": "gpt2_causal_lm"
    })  # fmt: skip
