"""Key/value caches: one layout, two containers (the same as ``gpt2_dual.pt.cache``).

Layout: per layer ``i``, keys and values of shape ``(B, H, S, D)`` (B batch, H heads, S cached
positions, D head size), position ``s`` of the cache holding the token at sequence position
``s``. Both containers answer the same calls as on the PyTorch side:

- ``get_seq_length(layer_idx=0)``: tokens cached so far.
- ``update(layer_idx, k, v) -> (k_all, v_all)``: store the new ``(B, H, T, D)`` keys and values
  after the cached ones and return everything attention must see.
- ``cache[i] -> (k, v)``, ``len(cache)``, ``to_legacy_cache()``: transformers' access patterns.

``DynamicCache`` grows by concatenation. ``StaticCache`` preallocates ``(B, H, S_max, D)``
buffers and writes the new tokens at its current length with ``dynamic_update_slice``, so
shapes never change between decode steps and one XLA program serves every step; attention sees
the first ``length`` slots through the mask.

The one framework difference: TensorFlow tensors are immutable and a forward may run inside
``tf.function``, so a cache is a value. A forward never changes the cache it was given; it
returns the extended cache in ``past_key_values``. Pass that one back to continue (the same
code as on the PyTorch side, where the returned cache is the one passed in). Both containers
are nested structures for ``tf.nest`` (``tf.function``, ``tf.while_loop``, ``tf.data``) and
``keras.tree``.

Example:
    >>> cache = StaticCache(config, batch_size=1, max_length=64)  # doctest: +SKIP
    >>> out = model(prompt_ids, past_key_values=cache, use_cache=True)  # doctest: +SKIP
    >>> out = model(next_id, past_key_values=out.past_key_values, use_cache=True)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import InputTypeError, InvalidInputError

__all__ = ["DynamicCache", "StaticCache", "as_cache", "keras_tree_node"]


def keras_tree_node(cls: type) -> type:
    """Class decorator: ``keras.tree`` (``predict``, data adapters) sees inside ``cls`` as
    ``tf.nest`` does (through ``tree_flatten``/``tree_unflatten``).

    Keras exports no public registration; its own ``keras.src.tree`` function is used when
    present. Without it the class is a leaf for ``keras.tree`` and only ``predict`` cannot
    batch it.
    """
    try:
        from keras.src.tree import register_tree_node_class
    except ImportError:
        return cls
    try:
        register_tree_node_class(cls)
    except ValueError:  # already registered: the module was imported again
        pass
    return cls


@keras_tree_node
class DynamicCache:
    """A cache that grows by concatenating each step's keys and values.

    Args:
        keys: per layer, cached keys ``(B, H, S, D)``.
        values: per layer, cached values ``(B, H, S, D)``.

    Attributes:
        keys: per layer, the cached keys ``(B, H, S, D)``.
        values: per layer, the cached values ``(B, H, S, D)``.
    """

    def __init__(self, keys: Sequence[tf.Tensor] = (), values: Sequence[tf.Tensor] = ()) -> None:
        self.keys: list[tf.Tensor] = list(keys)
        self.values: list[tf.Tensor] = list(values)

    def get_seq_length(self, layer_idx: int = 0) -> int | tf.Tensor:
        """Number of cached positions of layer ``layer_idx`` (0 when empty); a tensor only when
        the length is unknown while tracing."""
        if layer_idx >= len(self.keys):
            return 0
        return ops.shape(self.keys[layer_idx])[-2]

    def past_length(self) -> int | tf.Tensor:
        """Cached positions before the coming forward."""
        return self.get_seq_length()

    def key_length(self, new_tokens: int | tf.Tensor) -> int | tf.Tensor:
        """Key positions attention sees after adding ``new_tokens``: past + new."""
        return self.get_seq_length() + new_tokens

    def update(self, layer_idx: int, k: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Append ``k``, ``v`` ``(B, H, T, D)`` to layer ``layer_idx``; return ``(B, H, S, D)``."""
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = ops.concatenate([self.keys[layer_idx], k], axis=-2)
            self.values[layer_idx] = ops.concatenate([self.values[layer_idx], v], axis=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def copy(self) -> DynamicCache:
        """A new container holding the same tensors (what a forward extends)."""
        return DynamicCache(self.keys, self.values)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[tf.Tensor, tf.Tensor]:
        return self.keys[layer_idx], self.values[layer_idx]

    def __iter__(self) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        return iter(zip(self.keys, self.values, strict=True))

    def to_legacy_cache(self) -> tuple[tuple[tf.Tensor, tf.Tensor], ...]:
        """transformers' legacy format: a tuple of ``(k, v)`` per layer."""
        return tuple(zip(self.keys, self.values, strict=True))

    @classmethod
    def from_legacy_cache(cls, past: Sequence[Sequence[tf.Tensor]]) -> DynamicCache:
        """Wrap a tuple of per-layer ``(k, v, ...)`` (extra entries, e.g. cross-attention keys of
        transformers' encoder-decoder format, are dropped: they are recomputed). transformers'
        TF format, one ``(2, B, H, S, D)`` tensor per layer, is accepted too."""
        cache = cls()
        for layer in past:
            if not hasattr(layer, "__len__") or not hasattr(layer, "__getitem__"):
                raise InputTypeError(
                    f"a legacy cache holds (key, value) per layer; found {type(layer).__name__}"
                )
            if len(layer) < 2:
                raise InvalidInputError(
                    f"a legacy cache holds (key, value) per layer; found {len(layer)} tensor(s)"
                )
            cache.keys.append(layer[0])
            cache.values.append(layer[1])
        return cache

    def reorder_cache(self, beam_idx: tf.Tensor) -> None:
        """Keep rows ``beam_idx`` ``(B,)`` of every layer, in that order (beam search)."""
        self.keys = [tf.gather(k, beam_idx) for k in self.keys]
        self.values = [tf.gather(v, beam_idx) for v in self.values]

    # tf.nest (tf.function, while_loop, tf.data) and keras.tree see the tensors inside.
    def __tf_flatten__(self) -> tuple[Any, tuple]:
        return len(self.keys), (*self.keys, *self.values)

    @classmethod
    def __tf_unflatten__(cls, metadata: int, components: Sequence[tf.Tensor]) -> DynamicCache:
        return cls(components[:metadata], components[metadata:])

    def tree_flatten(self) -> tuple[tuple, int]:
        return (*self.keys, *self.values), len(self.keys)

    @classmethod
    def tree_unflatten(cls, metadata: int, children: Sequence[Any]) -> DynamicCache:
        children = tuple(children)
        return cls(children[:metadata], children[metadata:])


@keras_tree_node
class StaticCache:
    """A preallocated cache of ``max_length`` positions, written at its current length.

    Args:
        config: the model's config (layers, heads, head size).
        batch_size: rows the cache holds (``B``; ``B * N`` for multiple-choice inputs).
        max_length: positions per row (``S_max``), at most ``config.n_positions``.
        dtype: dtype of the buffers; must equal the model's compute dtype.

    Attributes:
        keys: per layer, the key buffer ``(B, H, S_max, D)``.
        values: per layer, the value buffer ``(B, H, S_max, D)``.
        lengths: ``(n_layer,)`` int32 tensor, positions written per layer.

    Raises:
        ValueError: a size is not positive or ``max_length`` exceeds ``n_positions``.
    """

    def __init__(
        self, config: GPT2Config, batch_size: int, max_length: int, *, dtype: str = "float32"
    ) -> None:
        if batch_size <= 0 or max_length <= 0:
            raise ValueError(
                f"StaticCache needs batch_size > 0 and max_length > 0; got {batch_size}, "
                f"{max_length}"
            )
        if max_length > config.n_positions:
            raise ValueError(
                f"StaticCache max_length={max_length} exceeds n_positions={config.n_positions}"
            )
        shape = (batch_size, config.n_head, max_length, config.head_dim)
        self.keys = [ops.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [ops.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.lengths = ops.zeros((config.n_layer,), dtype="int32")
        self.batch_size, self.max_length = batch_size, max_length
        self.dtype = keras.backend.standardize_dtype(dtype)

    def get_seq_length(self, layer_idx: int = 0) -> int | tf.Tensor:
        """Number of positions written in layer ``layer_idx`` (a Python int when eager)."""
        length = self.lengths[layer_idx]
        return int(length) if tf.executing_eagerly() else length

    def past_length(self) -> tf.Tensor:
        """Cached positions before the coming forward, as a 0-d int32 tensor."""
        return self.lengths[0]

    def key_length(self, new_tokens: int | tf.Tensor) -> int:
        """Key positions attention sees: always the whole buffer, ``max_length``."""
        return self.max_length

    def update(self, layer_idx: int, k: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Write ``k``, ``v`` ``(B, H, T, D)`` at the layer's length; return the full buffers
        ``(B, H, S_max, D)`` (slots past the length are masked by the caller)."""
        start = (0, 0, self.lengths[layer_idx], 0)  # dynamic_update_slice: XLA-friendly
        self.keys[layer_idx] = ops.slice_update(self.keys[layer_idx], start, k)
        self.values[layer_idx] = ops.slice_update(self.values[layer_idx], start, v)
        written = ops.cast(ops.arange(len(self.keys)) == layer_idx, "int32") * ops.shape(k)[-2]
        self.lengths = self.lengths + written
        return self.keys[layer_idx], self.values[layer_idx]

    def reorder_cache(self, beam_idx: tf.Tensor) -> None:
        """Keep rows ``beam_idx`` ``(B,)`` of every buffer, in that order (beam search)."""
        self.keys = [tf.gather(k, beam_idx) for k in self.keys]
        self.values = [tf.gather(v, beam_idx) for v in self.values]

    def reset(self) -> None:
        """Forget every cached position (the buffers are reused)."""
        self.lengths = ops.zeros_like(self.lengths)

    def copy(self) -> StaticCache:
        """A new container holding the same tensors (what a forward writes into)."""
        return self.tree_unflatten(*reversed(self.tree_flatten()))

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The written part of layer ``layer_idx``: ``(B, H, length, D)``."""
        length = self.get_seq_length(layer_idx)
        return self.keys[layer_idx][:, :, :length], self.values[layer_idx][:, :, :length]

    def __iter__(self) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        return (self[i] for i in range(len(self)))

    def to_legacy_cache(self) -> tuple[tuple[tf.Tensor, tf.Tensor], ...]:
        """transformers' legacy format: a tuple of ``(k, v)`` per layer, written part only."""
        return tuple(self)

    # tf.nest (tf.function, while_loop, tf.data) and keras.tree see the tensors inside.
    def __tf_flatten__(self) -> tuple[Any, tuple]:
        children, metadata = self.tree_flatten()
        return metadata, children

    @classmethod
    def __tf_unflatten__(cls, metadata: tuple, components: Sequence[Any]) -> StaticCache:
        return cls.tree_unflatten(metadata, components)

    def tree_flatten(self) -> tuple[tuple, tuple]:
        metadata = (len(self.keys), self.batch_size, self.max_length, self.dtype)
        return (*self.keys, *self.values, self.lengths), metadata

    @classmethod
    def tree_unflatten(cls, metadata: tuple, children: Sequence[Any]) -> StaticCache:
        layers, batch_size, max_length, dtype = metadata
        children = tuple(children)
        cache = cls.__new__(cls)
        cache.keys, cache.values = list(children[:layers]), list(children[layers : 2 * layers])
        cache.lengths = children[2 * layers]
        cache.batch_size, cache.max_length, cache.dtype = batch_size, max_length, dtype
        return cache


def as_cache(past_key_values: Any) -> DynamicCache | StaticCache | None:
    """Accept what ``past_key_values`` may be: None, one of our caches (copied, never changed),
    transformers' legacy tuple of ``(k, v)`` per layer, or an object with ``to_legacy_cache``.
    Legacy inputs become a new ``DynamicCache``.

    Raises:
        TypeError: anything else.
    """
    if past_key_values is None:
        return None
    if isinstance(past_key_values, DynamicCache | StaticCache):
        return past_key_values.copy()
    if isinstance(past_key_values, tuple | list):
        return DynamicCache.from_legacy_cache(past_key_values)
    if callable(getattr(past_key_values, "to_legacy_cache", None)):
        return DynamicCache.from_legacy_cache(past_key_values.to_legacy_cache())
    raise InputTypeError(
        "past_key_values must be a DynamicCache, a StaticCache or a tuple of (key, value) "
        f"per layer; got {type(past_key_values).__name__}"
    )
