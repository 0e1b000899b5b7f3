"""The decode step of continuous batching: fixed KV slots, each row at its own position.

A server holds ``N`` sequences at once (``--max-num-seqs``); each owns one *slot* of a
preallocated cache ``(N, H, L, D)`` per layer (H heads, L ``max_length`` positions, D head
size), key ``p`` of a slot holding that sequence's token at position ``p``. Sequences join and
leave between steps, so the rows of one decode step sit at different positions: this module
runs the model's own blocks over such a batch.

- ``SlotDecoder.prefill(slot, ids)`` runs one prompt ``(T,)`` alone (plain causal attention)
  and writes its keys and values into positions ``0..T-1`` of ``slot``.
- ``SlotDecoder.decode(slots, tokens, positions)`` runs one new token per row for the rows
  ``0..R-1`` of the cache (R = the highest slot asked for + 1, bucketed; rows not asked for
  compute on a dummy token, write nothing and are never read); row ``i`` writes its key at
  ``positions[i]`` and attends to keys ``0..positions[i]``, through a boolean mask over the
  first ``S`` keys (``max(positions) + 1``, bucketed). Returns the logits of the rows asked
  for, float32 numpy.

A row's result depends only on that row (the products are row-wise and each row has its own
mask), so a greedy sequence gives ``generate``'s tokens whatever else is in the batch. The
same class, with the same methods, is in ``gpt2_dual.pt.slots``; the neutral scheduler in
``gpt2_dual.serve`` drives either.

The TensorFlow differences: the cache lives in one ``tf.Variable`` per layer and tensor kind,
written in place by a scatter inside the compiled step, so a step never copies the cache (on a
2-core Zen 5 EPYC, 16 slots, 128 keys read, a step takes 5.1 ms with a 16 MiB cache and 5.2 ms
with a 512 MiB one). Each step is a ``tf.function`` whose shapes are bucketed to powers of two,
so only a few programs are ever traced: R (at most ``num_slots``), S (at least 16, at most L)
and the prompt width W of ``prefill`` (the prompt right-padded to at least 16, at most L;
causal attention keeps the padding out of the real positions, and the keys it leaves in the
slot past ``T - 1`` are overwritten before any step reads them). A row below R that was not
asked for writes back the keys it would overwrite, so a live sequence may sit out a step.

XLA (``jit_compile=None``, the default): ``decode`` compiles with XLA, as ``generate`` does:
decode steps are small products, where XLA beats graph mode in bfloat16 too (same CPU,
gpt2-small geometry, 8 rows, best of 7: 43 against 53 ms float32, 58 against 75 ms bfloat16).
``prefill`` is a forward over the prompt and follows the model's rule for forwards
(``jit_compile_for("forward")``, ``gpt2_dual.cpu.tf_forward_path``): XLA except for bfloat16
where TensorFlow's oneDNN kernels run on a CPU-only machine (graph mode there;
``GPT2_DUAL_TF_JIT`` overrides it). ``jit_compile=True`` or ``False`` sets both steps.

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
import tensorflow as tf

from gpt2_dual import _slot_checks as checks
from gpt2_dual.tf.attention import AttentionMask

__all__ = ["SlotCache", "SlotDecoder"]

#: Smallest key length and prompt width compiled (shorter ones are padded up to it).
MIN_BUCKET = 16


class SlotCache:
    """Per-slot key/value variables, written at each row's own position.

    It answers ``update(layer_idx, k, v)`` as ``DynamicCache`` and ``StaticCache`` do, so the
    model's blocks run on it unchanged; ``SlotDecoder`` says, while it traces a step, where the
    new keys go (``for_prefill`` or ``for_decode``).

    Args:
        n_layer: layers.
        shape: ``(N, H, L, D)``: slots, heads, positions per slot, head size.
        dtype: the model's compute dtype.
        xla: ``decode`` runs under XLA (else in graph mode): how the variables are read and
            stored.

    Attributes:
        keys: per layer, a ``(N, H, L, D)`` ``tf.Variable``: ``dtype``, or its bits as uint16
            for a 16-bit float under XLA (XLA on CPU widens a 16-bit float scatter to float32
            over the whole variable, a copy per step; integers are scattered in place).
        values: per layer, the same for values.
    """

    def __init__(
        self, n_layer: int, shape: tuple[int, int, int, int], dtype: str, *, xla: bool = True
    ) -> None:
        self.dtype, self.xla = tf.as_dtype(dtype), xla
        half = self.dtype.is_floating and self.dtype.size == 2
        storage = tf.uint16 if xla and half else self.dtype

        def buffer(kind: str, i: int) -> tf.Variable:
            return tf.Variable(tf.zeros(shape, storage), trainable=False, name=f"slot_{kind}_{i}")

        self.keys = [buffer("keys", i) for i in range(n_layer)]
        self.values = [buffer("values", i) for i in range(n_layer)]
        self._index: tf.Tensor | None = None
        self._keep: tf.Tensor | None = None
        self._window: tf.Tensor | None = None
        self._rows, self._key_length = 0, 0

    @property
    def nbytes_per_slot(self) -> int:
        """Bytes of keys and values one slot holds, all layers."""
        return sum(b.shape[1:].num_elements() * b.dtype.size for b in (*self.keys, *self.values))

    def for_prefill(self, slot: tf.Tensor, width: int) -> None:
        """The next forward is one prompt ``(1, W)`` for ``slot`` (0-d int32), from position 0."""
        H = self.keys[0].shape[1]
        # (1, H, W, 3): [slot, h, t] for every head and position
        self._index = _grid(slot[None], tf.range(H), tf.range(width)[None, :])
        self._keep, self._window = None, None

    def for_decode(self, positions: tf.Tensor, active: tf.Tensor, key_length: int) -> None:
        """The next forward is one token per row of rows ``0..R-1`` (``positions``,
        ``active`` ``(R,)``: rows not ``active`` keep what their slot holds), attending to the
        first ``key_length`` keys."""
        R, H = positions.shape[0], self.keys[0].shape[1]
        # (R, H, 1, 3): [r, h, positions[r]]
        self._index = _grid(tf.range(R), tf.range(H), positions[:, None])
        self._keep = ~active[:, None, None, None]  # (R, 1, 1, 1)
        self._rows, self._key_length = R, key_length
        if not self.xla:  # (R, H, S, 3): [r, h, s] for the first S keys of each row
            first = tf.tile(tf.range(key_length)[None], [R, 1])
            self._window = _grid(tf.range(R), tf.range(H), first)

    def update(self, layer_idx: int, k: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Store ``k``, ``v`` ``(R, H, T, D)``; return the keys and values attention sees:
        the prompt's own ``(1, H, W, D)``, or the first ``(R, H, S, D)`` of the variables."""
        return self._write(self.keys[layer_idx], k), self._write(self.values[layer_idx], v)

    def _write(self, buffer: tf.Variable, new: tf.Tensor) -> tf.Tensor:
        bits = _as(new, buffer.dtype)
        if self._keep is not None:  # rows not asked for write back what they would overwrite
            bits = tf.where(self._keep, self._read(buffer, self._index), bits)
        buffer.scatter_nd_update(self._index, bits)  # in place: (R, H, T, 3) at (R, H, T, D)
        if self._keep is None:
            return new
        if self.xla:
            return _as(buffer[: self._rows, :, : self._key_length], self.dtype)
        return self._read(buffer, self._window)

    def _read(self, buffer: tf.Variable, index: tf.Tensor) -> tf.Tensor:
        """``buffer``'s ``(..., D)`` entries at ``index`` ``(..., 3)``. Without XLA a sparse read:
        once a scatter has written a variable, TensorFlow copies all of it on each dense read."""
        if self.xla:
            return tf.gather_nd(buffer.value(), index)
        return tf.raw_ops.ResourceGatherNd(
            resource=buffer.handle, indices=index, dtype=buffer.dtype
        )


def _as(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``x``'s bits as ``dtype`` (the same width)."""
    return x if x.dtype == dtype else tf.bitcast(x, dtype)


def _grid(rows: tf.Tensor, heads: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """``(R, H, T, 3)`` int32 indices ``[rows[r], heads[h], positions[r, t]]``."""
    R, H, T = rows.shape[0], heads.shape[0], positions.shape[1]
    shape = (R, H, T)
    return tf.stack(
        [
            tf.broadcast_to(rows[:, None, None], shape),
            tf.broadcast_to(heads[None, :, None], shape),
            tf.broadcast_to(positions[:, None, :], shape),
        ],
        axis=-1,
    )


def bucket(n: int, low: int, high: int) -> int:
    """The power of two at or above ``n``, at least ``low``, at most ``high``."""
    return min(max(low, 1 << (n - 1).bit_length()), high)


class SlotDecoder:
    """Prefill and decode over ``num_slots`` fixed cache slots of a GPT-2 LM.

    Args:
        model: a ``gpt2_dual.tf`` model with an LM head (``GPT2LMHeadModel``,
            ``GPT2DoubleHeadsModel``), any dtype policy; Keras int8-quantized models work too.
        num_slots: ``N``, sequences held at once.
        max_length: ``L``, positions per slot (prompt + generated), at most ``n_positions``.
        jit_compile: run both steps under XLA (True) or in graph mode (False); None: decode
            under XLA, prefill by the model's rule for forwards (module docstring).

    Attributes:
        num_slots, max_length: as given.
        vocab_size: width of the logits.
        kv_bytes_per_slot: bytes of cache one slot holds.
        jit_compile: per step (``"prefill"``, ``"decode"``), whether it runs under XLA.
        programs: the ``tf.function`` of each step (``"prefill"``, ``"decode"``); each traces
            once per bucket (``experimental_get_tracing_count()``).
    """

    framework = "tf"

    def __init__(
        self, model: Any, num_slots: int, max_length: int, *, jit_compile: bool | None = None
    ) -> None:
        config = model.config
        checks.check_sizes(config.n_positions, num_slots, max_length)
        self.model = model
        self.backbone = model._backbone()
        self.num_slots, self.max_length = num_slots, max_length
        shape = (num_slots, config.n_head, max_length, config.n_embd // config.n_head)
        self.jit_compile = {
            "prefill": _forward_jit(model) if jit_compile is None else bool(jit_compile),
            "decode": True if jit_compile is None else bool(jit_compile),
        }
        xla = self.jit_compile["decode"]  # the step that reads the variables
        self.cache = SlotCache(config.n_layer, shape, model.compute_dtype, xla=xla)
        self.vocab_size = int(config.vocab_size)
        self.kv_bytes_per_slot = self.cache.nbytes_per_slot
        self.programs = {
            name: tf.function(step, jit_compile=self.jit_compile[name], autograph=False)
            for name, step in (("prefill", self._prefill_step), ("decode", self._decode_step))
        }

    def prefill(self, slot: int, ids: Sequence[int], *, all_logits: bool = False) -> np.ndarray:
        """Run the prompt ``ids`` ``(T,)`` into ``slot``.

        Returns:
            float32 logits: ``(V,)`` of the last position, or ``(T, V)`` of every position
            when ``all_logits`` (prompt logprobs).
        """
        T = len(ids)
        checks.check_prompt(T, self.max_length)
        checks.check_slots([slot], self.num_slots)
        W = bucket(T, MIN_BUCKET, self.max_length)
        tokens = np.zeros((1, W), np.int32)  # right-padded with id 0
        tokens[0, :T] = ids
        logits = self.programs["prefill"](
            tf.constant(tokens), tf.constant(slot, tf.int32), tf.constant(T - 1, tf.int32),
            bool(all_logits),
        ).numpy()  # fmt: skip
        return logits[:T] if all_logits else logits

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
        R = bucket(int(slots_np.max()) + 1, 1, self.num_slots)
        tok = np.zeros(R, np.int32)
        pos = np.zeros(R, np.int32)
        active = np.zeros(R, bool)
        tok[slots_np], pos[slots_np], active[slots_np] = tokens, pos_np, True
        S = bucket(int(pos_np.max()) + 1, MIN_BUCKET, self.max_length)
        logits = self.programs["decode"](
            tf.constant(tok), tf.constant(pos), tf.constant(active), S
        ).numpy()  # (R, V)
        return logits[slots_np]

    def _prefill_step(
        self, tokens: tf.Tensor, slot: tf.Tensor, last: tf.Tensor, all_logits: bool
    ) -> tf.Tensor:
        """``tokens`` ``(1, W)`` into ``slot``: ``(W, V)`` logits, or ``(V,)`` at ``last``."""
        W = tokens.shape[1]
        self.cache.for_prefill(slot, W)
        x = self._blocks(tokens, tf.range(W)[None], AttentionMask())[0]  # (W, C)
        return self._logits(x if all_logits else tf.gather(x, last))

    def _decode_step(
        self, tokens: tf.Tensor, positions: tf.Tensor, active: tf.Tensor, key_length: int
    ) -> tf.Tensor:
        """``tokens``, ``positions``, ``active`` ``(R,)``: ``(R, V)`` logits."""
        ok = tf.range(key_length)[None, :] <= positions[:, None]  # (R, S)
        self.cache.for_decode(positions, active, key_length)
        x = self._blocks(tokens[:, None], positions[:, None], AttentionMask(ok[:, None, None]))
        return self._logits(x[:, 0])

    def _blocks(self, tokens: tf.Tensor, positions: tf.Tensor, mask: AttentionMask):
        bb = self.backbone
        x = bb.wte(tokens) + bb.wpe(positions)  # (R, T, C)
        for block in bb.h:
            x = block(x, mask, cache=self.cache)[0]
        return bb.ln_f(x)

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.model._lm_logits(x), tf.float32)


def _forward_jit(model: Any) -> bool:
    """The model's XLA rule for forwards (``KerasTrainingMixin.jit_compile_for``); XLA for a
    model without one."""
    rule = getattr(model, "jit_compile_for", None)
    return bool(rule("forward")) if callable(rule) else True
