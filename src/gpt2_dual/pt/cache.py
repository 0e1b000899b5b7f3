"""Key/value caches: one layout, two containers.

Layout (the same in ``gpt2_dual.tf``): per layer ``i``, keys and values of shape
``(B, H, S, D)`` (B batch, H heads, S cached positions, D head size), position ``s`` of the
cache holding the token at sequence position ``s``. Both containers answer the same calls:

- ``get_seq_length(layer_idx=0) -> int``: tokens cached so far.
- ``update(layer_idx, k, v) -> (k_all, v_all)``: store the new ``(B, H, T, D)`` keys and values
  after the cached ones and return everything attention must see.
- ``cache[i] -> (k, v)``, ``len(cache)``, ``to_legacy_cache()``: transformers' access patterns.

``DynamicCache`` grows by concatenation; it is what a forward with ``use_cache=True`` returns
when no cache was passed. ``StaticCache`` preallocates ``(B, H, S_max, D)`` buffers and writes
the new tokens in place at its current length, so shapes never change between decode steps
(``torch.compile`` compiles one graph); attention sees the first ``length`` slots through the
mask. Its lengths are tensors, so a compiled decode step never syncs with the device.

Caches are updated in place, as transformers' are: pass the returned cache back as
``past_key_values`` to continue.

Example:
    >>> cache = StaticCache(config, batch_size=1, max_length=64)  # doctest: +SKIP
    >>> out = model(prompt_ids, past_key_values=cache, use_cache=True)  # doctest: +SKIP
    >>> out = model(next_id, past_key_values=cache, use_cache=True)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import InputTypeError, InvalidInputError

__all__ = ["DynamicCache", "StaticCache", "as_cache"]


class DynamicCache:
    """A cache that grows by concatenating each step's keys and values.

    Attributes:
        keys: per layer, the cached keys ``(B, H, S, D)``.
        values: per layer, the cached values ``(B, H, S, D)``.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of cached positions of layer ``layer_idx`` (0 when empty)."""
        return self.keys[layer_idx].shape[-2] if layer_idx < len(self.keys) else 0

    def past_length(self) -> int:
        """Cached positions before the coming forward (a Python int for this cache)."""
        return self.get_seq_length()

    def key_length(self, new_tokens: int) -> int:
        """Key positions attention sees after adding ``new_tokens``: past + new."""
        return self.get_seq_length() + new_tokens

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``, ``v`` ``(B, H, T, D)`` to layer ``layer_idx``; return ``(B, H, S, D)``."""
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Keep rows ``beam_idx`` ``(B,)`` of every layer, in that order (beam search)."""
        self.keys = [k.index_select(0, beam_idx) for k in self.keys]
        self.values = [v.index_select(0, beam_idx) for v in self.values]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[layer_idx], self.values[layer_idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(zip(self.keys, self.values, strict=True))

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """transformers' legacy format: a tuple of ``(k, v)`` per layer."""
        return tuple(zip(self.keys, self.values, strict=True))

    @classmethod
    def from_legacy_cache(cls, past: Sequence[Sequence[torch.Tensor]]) -> DynamicCache:
        """Wrap a tuple of per-layer ``(k, v, ...)`` (extra entries, e.g. cross-attention
        keys of transformers' encoder-decoder format, are dropped: they are recomputed)."""
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


class StaticCache:
    """A preallocated cache of ``max_length`` positions, written in place.

    Args:
        config: the model's config (layers, heads, head size).
        batch_size: rows the cache holds (``B``; ``B * N`` for multiple-choice inputs).
        max_length: positions per row (``S_max``), at most ``config.n_positions``.
        dtype: dtype of the buffers; must equal the model's.
        device: device of the buffers.

    Attributes:
        keys: per layer, the key buffer ``(B, H, S_max, D)``.
        values: per layer, the value buffer ``(B, H, S_max, D)``.
        lengths: ``(n_layer,)`` int64 tensor, positions written per layer.

    Raises:
        ValueError: a size is not positive or ``max_length`` exceeds ``n_positions``.
    """

    def __init__(
        self,
        config: GPT2Config,
        batch_size: int,
        max_length: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
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
        new = lambda: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        self.keys = [new() for _ in range(config.n_layer)]
        self.values = [new() for _ in range(config.n_layer)]
        self.lengths = torch.zeros(config.n_layer, dtype=torch.long, device=device)
        self.batch_size, self.max_length, self.dtype = batch_size, max_length, dtype
        if self.lengths.is_cuda:  # (torch._dynamo costs ~1 s to import; only CUDA needs it)
            for buffer in (*self.keys, *self.values, self.lengths):
                # Fixed addresses: CUDA graphs (torch.compile mode="reduce-overhead") replay
                # over these buffers instead of copying them in at every step.
                torch._dynamo.mark_static_address(buffer)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of positions written in layer ``layer_idx`` (syncs with the device)."""
        return int(self.lengths[layer_idx])

    def past_length(self) -> torch.Tensor:
        """Cached positions before the coming forward, as a 0-d tensor (no device sync)."""
        return self.lengths[0].clone()  # a copy: update() advances the buffer in place

    def key_length(self, new_tokens: int) -> int:
        """Key positions attention sees: always the whole buffer, ``max_length``."""
        return self.max_length

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``, ``v`` ``(B, H, T, D)`` at the layer's length; return the full buffers
        ``(B, H, S_max, D)`` (slots past the length are masked by the caller)."""
        slots = self.lengths[layer_idx] + torch.arange(k.shape[-2], device=k.device)
        self.keys[layer_idx].index_copy_(2, slots, k)
        self.values[layer_idx].index_copy_(2, slots, v)
        self.lengths[layer_idx] += k.shape[-2]
        return self.keys[layer_idx], self.values[layer_idx]

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Keep rows ``beam_idx`` ``(B,)`` of every buffer, in that order, in place."""
        for buffer in (*self.keys, *self.values):
            buffer.copy_(buffer.index_select(0, beam_idx))

    def reset(self) -> None:
        """Forget every cached position (buffers are reused, not freed)."""
        self.lengths.zero_()

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The written part of layer ``layer_idx``: ``(B, H, length, D)`` (syncs)."""
        length = self.get_seq_length(layer_idx)
        return self.keys[layer_idx][:, :, :length], self.values[layer_idx][:, :, :length]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (self[i] for i in range(len(self)))

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """transformers' legacy format: a tuple of ``(k, v)`` per layer, written part only."""
        return tuple(self)


def as_cache(past_key_values: Any) -> DynamicCache | StaticCache | None:
    """Accept what ``past_key_values`` may be: None, one of our caches, transformers' legacy
    tuple of ``(k, v)`` per layer, or a transformers cache object (through its
    ``to_legacy_cache``). Legacy inputs become a new ``DynamicCache``.

    Raises:
        TypeError: anything else.
    """
    if past_key_values is None or isinstance(past_key_values, DynamicCache | StaticCache):
        return past_key_values
    if isinstance(past_key_values, tuple | list):
        return DynamicCache.from_legacy_cache(past_key_values)
    if callable(getattr(past_key_values, "to_legacy_cache", None)):
        return DynamicCache.from_legacy_cache(past_key_values.to_legacy_cache())
    raise InputTypeError(
        "past_key_values must be a DynamicCache, a StaticCache or a tuple of (key, value) "
        f"per layer; got {type(past_key_values).__name__}"
    )
