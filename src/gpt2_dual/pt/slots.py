"""The decode step of continuous batching: fixed KV slots, each row at its own position.

A server holds ``N`` sequences at once (``--max-num-seqs``); each owns one *slot* of a
preallocated cache ``(N, H, L, D)`` per layer (H heads, L ``max_length`` positions, D head
size), key ``p`` of a slot holding that sequence's token at position ``p``. Sequences join and
leave between steps, so the rows of one decode step sit at different positions: this module
runs the model's own blocks over such a batch.

- ``SlotDecoder.prefill(slot, ids)`` runs one prompt ``(T,)`` alone (plain causal attention)
  and writes its keys and values into positions ``0..T-1`` of ``slot``.
- ``SlotDecoder.decode(slots, tokens, positions)`` runs one new token per row for the rows
  ``0..R-1`` of the cache (R = the highest slot asked for + 1; rows not asked for compute on a
  dummy token, write nothing and are never read); row ``i`` writes its key at
  ``positions[i]`` and attends to keys ``0..positions[i]``, through a boolean mask over the
  first ``S = max(positions) + 1`` keys. Returns the logits of the rows asked for, float32
  numpy.

A row's result depends only on that row (the products are row-wise and each row has its own
mask), so a greedy sequence gives ``generate``'s tokens whatever else is in the batch. The
same class, with the same methods, is in ``gpt2_dual.tf.slots`` (an XLA step); the neutral
scheduler in ``gpt2_dual.serve`` drives either.

Example:
    >>> dec = SlotDecoder(model, num_slots=4, max_length=128)  # doctest: +SKIP
    >>> first = dec.prefill(0, [15496, 11]).argmax()  # doctest: +SKIP
    >>> dec.decode([0], [first], [2]).shape  # doctest: +SKIP
    (1, 50257)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gpt2_dual import _slot_checks as checks
from gpt2_dual.pt.attention import AttentionMask
from gpt2_dual.pt.packing import PACK_HINT, pack_weights, using_packed

__all__ = ["SlotCache", "SlotDecoder"]


class SlotCache:
    """Per-slot key/value buffers, written at each row's own position.

    It answers ``update(layer_idx, k, v)`` as ``DynamicCache`` and ``StaticCache`` do, so the
    model's blocks run on it unchanged; ``SlotDecoder`` says before each forward where the new
    keys go (``for_prefill`` or ``for_decode``).

    The buffers start at ``GROW`` positions (or L if smaller) and double, up to L, when a
    sequence needs more: memory follows the longest sequence so far, not ``max_length``.

    Args:
        n_layer: layers.
        shape: ``(N, H, L, D)``: slots, heads, positions per slot, head size.
        dtype: the model's dtype.
        device: the model's device.

    Attributes:
        keys: per layer, ``(N, H, capacity, D)``.
        values: per layer, ``(N, H, capacity, D)``.
    """

    GROW = 128

    def __init__(
        self, n_layer: int, shape: tuple[int, int, int, int], dtype: torch.dtype, device: Any
    ) -> None:
        self.max_length = shape[2]
        start = (*shape[:2], min(self.GROW, self.max_length), shape[3])
        self.keys = [torch.zeros(start, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(start, dtype=dtype, device=device) for _ in range(n_layer)]
        self._slot: int | None = None
        self._rows = 0
        self._index: tuple[torch.Tensor, torch.Tensor] | None = None
        self._key_length = 0

    @property
    def nbytes_per_slot(self) -> int:
        """Bytes of keys and values one slot holds at ``max_length``, all layers."""
        per_position = sum(
            b[0, :, 0].numel() * b.element_size() for b in (*self.keys, *self.values)
        )
        return per_position * self.max_length

    @property
    def capacity(self) -> int:
        """Positions per slot allocated now."""
        return self.keys[0].shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes allocated now, every slot and layer."""
        return sum(b.numel() * b.element_size() for b in (*self.keys, *self.values))

    def reserve(self, length: int) -> None:
        """Make room for ``length`` positions per slot (doubling, at most ``max_length``)."""
        if length <= self.capacity:
            return
        new = min(self.max_length, max(length, 2 * self.capacity))
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                grown = old.new_zeros((*old.shape[:2], new, old.shape[3]))
                grown[:, :, : old.shape[2]] = old
                buffers[i] = grown

    def for_prefill(self, slot: int) -> None:
        """The next forward is one prompt ``(1, T)`` for ``slot``, from position 0."""
        self._slot = slot

    def for_decode(
        self, rows: int, slots: torch.Tensor, positions: torch.Tensor, key_length: int
    ) -> None:
        """The next forward is one token per row of rows ``0..rows-1``; only ``slots``
        ``(K,)`` store theirs, each at its ``positions`` ``(K,)`` (the other rows compute on a
        dummy token and leave their slot as it is)."""
        self._slot = None
        self._rows = rows
        self._index = (slots, positions)
        self._key_length = key_length

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``(R, H, T, D)``; return the keys and values attention sees:
        the prompt's own ``(1, H, T, D)``, or ``(R, H, S, D)`` views of the buffers."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._slot is not None:
            T = k.shape[-2]
            keys[self._slot, :, :T] = k[0]
            values[self._slot, :, :T] = v[0]
            return k, v
        rows, S = self._rows, self._key_length
        slots, positions = self._index
        keys[slots, :, positions] = k[slots, :, 0]  # (K, H, D), each at its own position
        values[slots, :, positions] = v[slots, :, 0]
        return keys[:rows, :, :S], values[:rows, :, :S]


class SlotDecoder:
    """Prefill and decode over ``num_slots`` fixed cache slots of a GPT-2 LM.

    Args:
        model: a ``gpt2_dual.pt`` model with an LM head (``GPT2LMHeadModel``,
            ``GPT2DoubleHeadsModel``), in eval mode; bitsandbytes- and torchao int8-quantized
            models work too.
        num_slots: ``N``, sequences held at once.
        max_length: ``L``, positions per slot (prompt + generated), at most ``n_positions``.

    Attributes:
        num_slots, max_length: as given.
        vocab_size: width of the logits (the LM head's rows).
        kv_bytes_per_slot: bytes of cache one slot holds at ``max_length`` (the buffers grow
            to that as sequences get longer; ``cache.nbytes`` is what is allocated now).
    """

    framework = "pt"

    def __init__(self, model: Any, num_slots: int, max_length: int) -> None:
        config = model.config
        checks.check_sizes(config.n_positions, num_slots, max_length)
        self.model = model.eval()
        self.backbone = model._backbone()
        self.num_slots, self.max_length = num_slots, max_length
        self.device = self.backbone.wte.weight.device
        dtype = self.backbone.wte.weight.dtype
        shape = (num_slots, config.n_head, max_length, config.n_embd // config.n_head)
        self.cache = SlotCache(config.n_layer, shape, dtype, self.device)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.kv_bytes_per_slot = self.cache.nbytes_per_slot
        # Every step reads weights packed for PACK_HINT rows where the CPU rule runs float32 on
        # oneDNN (pt/packing.py): batched steps 22-33% faster, one-row steps 14% (kept copies).
        self.packs = pack_weights(model.modules(), rows=PACK_HINT, float32=True)

    @torch.inference_mode()
    def prefill(self, slot: int, ids: Sequence[int], *, all_logits: bool = False) -> np.ndarray:
        """Run the prompt ``ids`` ``(T,)`` into ``slot``.

        Returns:
            float32 logits: ``(V,)`` of the last position, or ``(T, V)`` of every position
            when ``all_logits`` (prompt logprobs).
        """
        T = len(ids)
        checks.check_prompt(T, self.max_length)
        checks.check_slots([slot], self.num_slots)
        self.cache.reserve(T)
        self.cache.for_prefill(slot)
        tokens = torch.as_tensor(ids, dtype=torch.long, device=self.device)[None]  # (1, T)
        positions = torch.arange(T, device=self.device)[None]
        with using_packed(self.packs):
            x = self._blocks(tokens, positions, AttentionMask())  # (1, T, C)
            return self._logits(x[0] if all_logits else x[0, -1])

    @torch.inference_mode()
    def decode(
        self, slots: Sequence[int], tokens: Sequence[int], positions: Sequence[int]
    ) -> np.ndarray:
        """One token per sequence: ``tokens[i]`` at ``positions[i]`` of ``slots[i]``.

        Returns:
            ``(len(slots), V)`` float32 logits, in the order of ``slots``.
        """
        slots_np, pos_np = checks.check_decode(
            slots, tokens, positions, self.num_slots, self.max_length
        )
        rows = int(slots_np.max()) + 1
        tok = torch.zeros(rows, dtype=torch.long)
        pos = torch.zeros(rows, dtype=torch.long)
        slots_t = torch.as_tensor(slots_np)
        tok[slots_t] = torch.as_tensor(np.asarray(tokens, np.int64))
        pos[slots_t] = torch.as_tensor(pos_np)
        tok, pos, slots_t = tok.to(self.device), pos.to(self.device), slots_t.to(self.device)
        S = int(pos_np.max()) + 1
        self.cache.reserve(S)
        ok = torch.arange(S, device=self.device)[None, :] <= pos[:, None]  # (R, S)
        self.cache.for_decode(rows, slots_t, pos[slots_t], S)
        with using_packed(self.packs):
            x = self._blocks(tok[:, None], pos[:, None], AttentionMask(ok[:, None, None, :], ok))
            return self._logits(x[slots_t, 0])

    def _blocks(self, tokens: torch.Tensor, positions: torch.Tensor, mask: AttentionMask):
        bb = self.backbone
        x = bb.wte(tokens) + bb.wpe(positions)  # (R, T, C)
        for block in bb.h:
            x = block(x, mask, cache=self.cache)[0]
        return bb.ln_f(x)

    def _logits(self, x: torch.Tensor) -> np.ndarray:
        return self.model.get_output_embeddings()(x).float().cpu().numpy()
