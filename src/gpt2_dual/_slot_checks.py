"""The argument checks of the slot decoders (``gpt2_dual.pt.slots``, ``gpt2_dual.tf.slots``),
written once: both frameworks refuse the same calls with the same messages.

Under XLA an out-of-range slot or position would be dropped silently, so every call is checked
here, in numpy, before any framework work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpt2_dual.errors import InvalidInputError

__all__ = ["check_decode", "check_prompt", "check_sizes", "check_slots"]


def check_sizes(n_positions: int, num_slots: int, max_length: int) -> None:
    """A decoder of ``num_slots`` slots of ``max_length`` positions, at most ``n_positions``."""
    if num_slots < 1:
        raise InvalidInputError(f"num_slots must be at least 1; got {num_slots}")
    if not 1 <= max_length <= n_positions:
        raise InvalidInputError(
            f"max_length must be in [1, n_positions={n_positions}]; got {max_length}"
        )


def check_prompt(length: int, max_length: int) -> None:
    """A prompt of ``length`` tokens fits a slot of ``max_length`` positions (and is not empty)."""
    if not 1 <= length <= max_length:
        raise InvalidInputError(f"a prompt of {length} tokens does not fit a slot of {max_length}")


def check_slots(slots: Sequence[int], num_slots: int) -> np.ndarray:
    """``slots`` as int64 ``(K,)``: at least one, distinct, each in ``[0, num_slots)``."""
    slots_np = np.asarray(slots, np.int64).reshape(-1)
    bad = (slots_np < 0) | (slots_np >= num_slots)
    if not len(slots_np) or bad.any() or len(np.unique(slots_np)) != len(slots_np):
        raise InvalidInputError(
            f"slots must be distinct, in [0, {num_slots}); got {slots_np.tolist()}"
        )
    return slots_np


def check_decode(
    slots: Sequence[int],
    tokens: Sequence[int],
    positions: Sequence[int],
    num_slots: int,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One token and one position per slot, each position in ``[0, max_length)``.

    Returns:
        ``slots`` and ``positions`` as int64 ``(K,)`` arrays.
    """
    slots_np = check_slots(slots, num_slots)
    pos_np = np.asarray(positions, np.int64).reshape(-1)
    if not len(slots_np) == len(tokens) == len(pos_np):
        raise InvalidInputError(
            f"decode needs one token and one position per slot; got {len(slots_np)} "
            f"slots, {len(tokens)} tokens, {len(pos_np)} positions"
        )
    if ((pos_np < 0) | (pos_np >= max_length)).any():
        raise InvalidInputError(f"positions must be in [0, {max_length}); got {pos_np.tolist()}")
    return slots_np, pos_np
