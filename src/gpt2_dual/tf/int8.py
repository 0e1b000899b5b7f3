"""Keras 3 int8 quantization of the gpt2_dual.tf models: ``model.quantize("int8")``.

Shapes: N rows (tokens), C ``n_embd``, V ``vocab_size``; a ``Dense`` kernel is ``(in, out)``.

What ``quantize("int8")`` does is Keras' own rule, on every ``Dense`` and ``Embedding`` of
the model (or those ``filters`` selects, Keras' regex/list/callable on layer names):

- ``Dense`` (``c_attn``, ``c_proj``, ``c_fc``, ``q_attn`` and the head layers): the kernel
  becomes int8 with one float scale per output column (``127 / max|column|``); at each call
  the input is quantized per row the same way and the int8 x int8 product (int32) is divided
  by both scales. Biases stay float.
- ``Embedding`` (``wte``, ``wpe``): int8 rows, one scale per row; a lookup divides by it.
- The tied ``lm_head`` (logits from ``wte``): the hidden states are quantized per row and
  multiplied by ``wte``'s int8 rows, divided by both scales, as Keras' ``ReversibleEmbedding``
  (keras-hub's tied GPT-2 head) does; an ``Int8QuantizationConfig`` without activation
  quantizer makes it weight-only, as it makes the ``Dense`` layers.
- LayerNorms and everything else stay float. Weights take 1 byte instead of 4 (scales aside).

int8 products are fast under XLA only: TensorFlow's own int8 matmul (eager and graph mode)
falls back to Eigen on CPU, 2.5-5x slower than float32, while XLA's int8 forward is 1.4-1.5x
faster than float32 XLA on a gpt2-shaped model (``benchmarks/bench_keras_int8.py``).
``generate`` compiles by default; call the model through ``tf.function(jit_compile=True)``
and ``compile(jit_compile=True)`` before ``predict``. Batch-1 decoding stays about 10% slower
than float32: XLA's int8 matrix-vector product is slow on Keras' ``(in, out)`` kernels.

Other Keras modes are refused with ``InvalidInputError`` (``UNSUPPORTED``). Layers hold their
int8 values after quantization, so what would read them as floats refuses a quantized model
(``QuantizedModelError``): ``save_pretrained`` and ``to_canonical`` (unless
``dequantize=True``: float weights rebuilt from the int8 ones, rounding included),
``load_canonical``, ``resize_token_embeddings``. A ``.keras`` file keeps the int8 weights
(``get_config`` lists the quantized layers; ``from_config`` quantizes them again before Keras
loads the stored values); ``load_weights`` needs a model quantized the same way first.

Example:
    >>> model = GPT2LMHeadModel.from_pretrained("gpt2")  # doctest: +SKIP
    >>> model.quantize("int8")  # doctest: +SKIP
    >>> model.generate(ids, max_new_tokens=20)  # XLA: int8 products  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gpt2_dual.checkpoint.names import BACKBONE_ATTR, is_backbone, params
from gpt2_dual.errors import InvalidInputError, QuantizedModelError

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_MODES",
    "UNSUPPORTED",
    "QuantizeMixin",
    "QuantizedModelError",
    "check_float",
    "config_entry",
    "dequantized",
    "quantized_layers",
    "restore",
    "tied_logits",
]

#: Modes ``quantize`` accepts.
SUPPORTED_MODES = ("int8",)
#: Keras modes refused, and why (the reason is part of the error message).
UNSUPPORTED = {
    "int4": "Keras' int4 layers unpack their weights at every call (slower than float32 on "
    "CPU) and gpt2_dual's tied lm_head reads int8 rows only",
    "float8": "Keras' float8 is a training mode: it keeps the float32 kernels (no memory "
    "saved), quantizes at every call and does not cover Embedding layers",
    "gptq": "GPTQ needs a calibration dataset and a layer structure gpt2_dual does not provide",
    "awq": "AWQ needs a calibration dataset and a layer structure gpt2_dual does not provide",
}
#: Layer types Keras quantizes to int8 on our models (exact types: subclasses are refused).
_QUANTIZABLE = (keras.layers.Dense, keras.layers.Embedding)
#: The attribute holding each quantizable layer's main weight.
_MAIN = {"kernel", "embeddings"}


# --------------------------------------------------------------------------- layers
def _walk(model: keras.Model, path: str) -> Any:
    target: Any = model
    for part in path.split("."):
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    return target


def _layer_paths(model: keras.Model) -> list[str]:
    """Attribute paths of the model's ``Dense``/``Embedding`` layers, from the weight table."""
    head = type(model).head
    paths = []
    for row in params(model.config, head):
        path, attr = row.tf.rsplit(".", 1)
        if attr in _MAIN:
            in_backbone = head != "base" and is_backbone(row.canonical)
            paths.append(f"{BACKBONE_ATTR}.{path}" if in_backbone else path)
    return paths


def quantized_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The model's quantized layers by attribute path (``"transformer.h.0.attn.c_attn"``);
    empty for a float model."""
    layers = {path: _walk(model, path) for path in _layer_paths(model)}
    return {path: layer for path, layer in layers.items() if layer.quantization_mode}


def dequantized(layer: keras.layers.Layer) -> np.ndarray:
    """Float weights rebuilt from an int8 ``Dense`` kernel ``(in, out)`` or ``Embedding``
    table ``(V, C)``: int8 values divided by their scales, in the layer's variable dtype."""
    if isinstance(layer, keras.layers.Embedding):
        q, scale = layer.embeddings.numpy(), layer.embeddings_scale.numpy()[:, None]
    else:
        q, scale = layer.kernel.numpy(), layer.kernel_scale.numpy()[None, :]
    value = q.astype(np.float32) / scale.astype(np.float32)
    return value.astype(keras.backend.standardize_dtype(layer.variable_dtype))


def check_float(model: keras.Model, action: str, *, hint: str = "") -> None:
    """Raise ``QuantizedModelError`` when ``model`` has quantized layers: ``action`` needs
    float weights (``hint``: what to do instead)."""
    layers = quantized_layers(model)
    if not layers:
        return
    mode = next(iter(layers.values())).quantization_mode
    raise QuantizedModelError(
        f"{action} needs float weights, but {type(model).__name__} has {len(layers)} {mode} "
        f"layers (quantize() was called); {hint or 'use a float model'}"
    )


# --------------------------------------------------------------------------- tied lm_head
def tied_logits(hidden: tf.Tensor, wte: keras.layers.Embedding) -> tf.Tensor:
    """``(..., C) -> (..., V)`` logits through an int8 ``wte`` (the tied ``lm_head``).

    Keras' ``ReversibleEmbedding`` rule: the rows of ``hidden`` are quantized with the
    activation quantizer of ``wte``'s config (per row absmax by default), multiplied by the int8
    table as int8 x int8 -> int32 and divided by both scales; without an activation quantizer
    the float rows meet the int8 table cast to float. Gradients reach ``hidden`` through the
    dequantized table (the int8 table is not trainable).
    """
    from keras.quantizers import AbsMaxQuantizer, QuantizationConfig

    quantizer = QuantizationConfig.activation_quantizer_or_default(
        wte.quantization_config, AbsMaxQuantizer()
    )
    dtype = wte.compute_dtype
    lead = ops.shape(hidden)[:-1]
    h = ops.reshape(hidden, (-1, ops.shape(hidden)[-1]))  # (N, C)

    @ops.custom_gradient
    def logits(h, table, scale):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # (N, V)
            float_table = ops.divide(ops.cast(table, dtype), scale[:, None])  # (V, C)
            return ops.matmul(upstream, float_table), None, None

        # transpose_b, not a transposed table: XLA's CPU int8 dot is 10x slower on a
        # transposed operand (500 ms against 50 ms at 128 x 768 x 50257)
        if quantizer is None:
            x = tf.matmul(h, ops.cast(table, dtype), transpose_b=True)
            return ops.divide(x, scale), grad
        hq, h_scale = quantizer(h, axis=-1)  # (N, C) int8, (N, 1)
        x = tf.matmul(hq, table, transpose_b=True, output_type=tf.int32)  # (N, V)
        return ops.divide(ops.cast(x, dtype), ops.multiply(h_scale, scale)), grad

    table, scale = (ops.convert_to_tensor(v) for v in (wte.embeddings, wte.embeddings_scale))
    out = logits(h, table, scale)  # (N, V)
    return ops.reshape(out, (*lead, -1))


# --------------------------------------------------------------------------- quantize
def _requested_mode(mode: Any, config: Any) -> Any:
    if isinstance(config, str):  # Keras accepts quantize(config="int8")
        return config
    if mode is None and config is not None:
        return getattr(config, "mode", None)
    return mode


def _check_request(model: keras.Model, mode: Any, config: Any) -> None:
    """Our checks, before Keras resolves the config (so every refused mode reads the same)."""
    requested = _requested_mode(mode, config)
    if requested not in SUPPORTED_MODES:
        why = UNSUPPORTED.get(requested, "not a Keras quantization mode")
        raise InvalidInputError(
            f"quantize mode {requested!r} is not supported by gpt2_dual.tf models ({why}); "
            f"supported: {', '.join(map(repr, SUPPORTED_MODES))}"
        )
    layers = quantized_layers(model)
    if layers:
        mode = next(iter(layers.values())).quantization_mode
        raise QuantizedModelError(
            f"{type(model).__name__} is already quantized ({len(layers)} {mode} layers); "
            "quantize a float model (build or load it again)"
        )


def _selects(filters: Any) -> Callable[[keras.layers.Layer], bool]:
    """Keras' ``filters`` rule (regex on the layer name, a list of them, or a callable), on
    the quantizable layer types only (Keras would warn about every other leaf layer)."""

    def chosen(layer: keras.layers.Layer) -> bool:
        if type(layer) not in _QUANTIZABLE:
            return False
        if filters is None:
            return True
        if isinstance(filters, str):
            return bool(re.search(filters, layer.name))
        if isinstance(filters, list | tuple):
            return any(re.search(pattern, layer.name) for pattern in filters)
        return bool(filters(layer))

    return chosen


@contextlib.contextmanager
def _one_collection() -> Iterator[None]:
    """Keras runs a full ``gc.collect()`` after each variable it replaces (about 0.25 s each
    with TensorFlow loaded: 12 s for GPT-2 small, 1.3 s this way). Objects older than the call
    are frozen meanwhile, so those collections are quick, and one collection at the end frees
    what Keras meant to free (the peak memory is the same). Left alone when the caller has
    frozen objects already (``gc.unfreeze`` would release theirs)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


class QuantizeMixin:
    """Mixed into ``GPT2PreTrainedModel``: Keras' ``quantize`` with gpt2_dual's checks, and the
    quantized state in ``get_config`` (see the module docstring)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__new__(cls, *args, **kwargs)
        # keras.Layer.__new__ wrapped ``quantize`` (config resolution, tracker unlock); our
        # checks run before that wrapper, so Keras' own errors for these modes never show.
        keras_quantize = obj.quantize

        @functools.wraps(cls.quantize)
        def quantize(mode: Any = None, config: Any = None, filters: Any = None, **kw: Any):
            _check_request(obj, mode, config)
            return keras_quantize(mode, config=config, filters=filters, **kw)

        obj.quantize = quantize
        return obj

    def quantize(
        self, mode: str | None = None, config: Any = None, filters: Any = None, **kwargs: Any
    ) -> None:
        """Quantize the model's ``Dense`` and ``Embedding`` layers with Keras' int8 rule.

        Args:
            mode: ``"int8"`` (the only mode supported; others raise).
            config: a ``keras.quantizers.Int8QuantizationConfig`` (e.g. without activation
                quantizer: weight-only int8); None: Keras' default.
            filters: Keras' layer filter: a regex on layer names (``"^c_"``), a list of them,
                or a callable on the layer; only ``Dense``/``Embedding`` layers are offered.
            **kwargs: passed to ``keras.Model.quantize``.

        Raises:
            InvalidInputError: a mode other than ``"int8"`` (the message says why), or
                ``filters`` that select no layer.
            QuantizedModelError: the model is already quantized.

        Example:
            >>> model.quantize("int8")  # doctest: +SKIP
            >>> model.quantize("int8", filters=lambda l: l.name != "score")  # doctest: +SKIP
        """
        chosen = _selects(filters)
        if not any(chosen(layer) for layer in self._flatten_layers()):
            raise InvalidInputError(
                f"quantize filters={filters!r} select no Dense or Embedding layer of "
                f"{type(self).__name__}"
            )
        with warnings.catch_warnings(), _one_collection():
            # Keras 3.15 reads TensorFlow variables with np.array, which numpy 2 flags.
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            keras.Model.quantize(self, mode, config=config, filters=chosen, **kwargs)
        self._forget_traces()  # compiled programs hold the float variables Keras removed
        logger.info(
            "quantized %d layers of %s to %s", len(quantized_layers(self)), type(self).__name__,
            mode,
        )  # fmt: skip


# --------------------------------------------------------------------------- Keras config
def config_entry(model: keras.Model) -> dict[str, Any]:
    """``{"quantization": {...}}`` for ``get_config`` of a quantized model (mode, config,
    layer paths); ``{}`` for a float one."""
    layers = quantized_layers(model)
    if not layers:
        return {}
    first = next(iter(layers.values()))
    entry = {
        "mode": first.quantization_mode,
        "config": keras.saving.serialize_keras_object(first.quantization_config),
        "layers": sorted(layers),
    }
    return {"quantization": entry}


def restore(model: keras.Model, entry: dict[str, Any] | None) -> None:
    """Quantize the layers ``entry`` names (from ``config_entry``), so that a ``.keras`` file's
    int8 values load into int8 variables."""
    if not entry:
        return
    targets = {id(_walk(model, path)) for path in entry["layers"]}
    config = keras.saving.deserialize_keras_object(entry.get("config"))
    model.quantize(entry["mode"], config=config, filters=lambda layer: id(layer) in targets)
