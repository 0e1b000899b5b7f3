"""Shared cases of the slot decoders (``gpt2_dual.pt.slots``, ``gpt2_dual.tf.slots``): a tiny
config, prompts, a schedule of sequences joining and leaving a batch, and a greedy driver that
runs the schedule through any ``SlotDecoder`` (its API is numpy in, numpy out).

The schedule puts sequences in slots with empty ones between, in the highest slot (rows are
bucketed and capped at ``NUM_SLOTS``, not a power of two), in a slot freed by a sequence that
ended, with prompts of two prefill buckets; each joins at its own step, so rows of one step sit
at different positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cases import tiny_config

#: Every size distinct; init std 0.3 so greedy tokens vary instead of repeating one token.
CONFIG = dict(
    vocab_size=97, n_positions=64, n_embd=48, n_head=4, n_layer=3, n_inner=56,
    initializer_range=0.3, bos_token_id=96, eos_token_id=96,
)  # fmt: skip
NUM_SLOTS, MAX_LENGTH = 6, 40

PROMPTS = (
    [5, 17, 42, 8, 61],
    [70, 3, 3, 19, 88, 41, 7, 29, 54, 12, 90],
    [33, 2, 71],
    [9, 14, 60, 27, 81, 45, 38, 6, 93, 22, 50, 11, 77, 64, 1, 35, 58],  # 17: the 32-wide bucket
    [44],
)


def config(**changes):
    """The tiny config (dropout off), with ``changes``."""
    return tiny_config(**{**CONFIG, **changes})


@dataclass(frozen=True)
class Join:
    """A sequence: prefilled into ``slot`` at the start of decode step ``step``, then greedy
    for ``new`` tokens in all (the first from the prefill logits); left out of the decode
    steps in ``pause`` while it holds its slot."""

    step: int
    slot: int
    prompt: int
    new: int
    pause: tuple[int, ...] = ()


SCHEDULE = (
    Join(0, 0, 0, 9),  # alone at first
    Join(0, 2, 1, 5),  # slot 1 empty between; ends after step 3
    Join(2, 5, 2, 7),  # the highest slot: 6 rows, every one computed
    Join(3, 1, 3, 4),  # fills the gap with the 17-token prompt
    Join(5, 2, 4, 6),  # reuses slot 2
)

#: A live sequence left out of decode steps that compute its row (slot 0 < the rows of slot
#: 3): it must find its keys untouched when it comes back.
PAUSED = (
    Join(0, 0, 1, 6, pause=(1, 2, 3)),
    Join(0, 3, 0, 6),
)


@dataclass
class Run:
    """What the driver saw of one sequence: its prompt, greedy tokens and the logits that chose
    each (``(new, V)`` float32)."""

    prompt: list[int]
    tokens: list[int]
    logits: list[np.ndarray]


def run_schedule(decoder, schedule: tuple[Join, ...] = SCHEDULE) -> list[Run]:
    """Drive ``decoder`` greedily through ``schedule``; one ``Run`` per ``Join``."""
    runs: list[Run | None] = [None] * len(schedule)
    step = 0
    while step == 0 or any(
        r is None or len(r.tokens) < j.new for r, j in zip(runs, schedule, strict=True)
    ):
        for i, join in enumerate(schedule):
            if join.step == step:
                prompt = PROMPTS[join.prompt]
                logits = decoder.prefill(join.slot, prompt)
                assert logits.shape == (decoder.vocab_size,) and logits.dtype == np.float32
                runs[i] = Run(list(prompt), [int(logits.argmax())], [logits])
        rows = [
            i
            for i, (run, join) in enumerate(zip(runs, schedule, strict=True))
            if run is not None and len(run.tokens) < join.new and step not in join.pause
        ]
        if rows:
            slots = [schedule[i].slot for i in rows]
            tokens = [runs[i].tokens[-1] for i in rows]
            positions = [len(runs[i].prompt) + len(runs[i].tokens) - 1 for i in rows]
            logits = decoder.decode(slots, tokens, positions)
            assert logits.shape == (len(rows), decoder.vocab_size)
            assert logits.dtype == np.float32
            for i, row in zip(rows, logits, strict=True):
                runs[i].tokens.append(int(row.argmax()))
                runs[i].logits.append(row)
        step += 1
        assert step < 50, "the schedule does not end"
    return runs


def check_tokens_vary(runs: list[Run]) -> None:
    """The weights make greedy decoding move (a test of equal tokens would prove nothing)."""
    assert len({t for run in runs for t in run.tokens}) > len(runs), [r.tokens for r in runs]


def error_cases(n_positions: int) -> list[tuple[dict, str]]:
    """``(SlotDecoder keywords, the exact InvalidInputError message)``."""
    return [
        (dict(num_slots=0, max_length=8), "num_slots must be at least 1; got 0"),
        (dict(num_slots=2, max_length=0), f"max_length must be in [1, n_positions={n_positions}]; got 0"),
        (
            dict(num_slots=2, max_length=n_positions + 1),
            f"max_length must be in [1, n_positions={n_positions}]; got {n_positions + 1}",
        ),
    ]  # fmt: skip


def prompt_error_cases() -> list[tuple[list[int], str]]:
    """``(prompt, the exact message)`` for a decoder of ``MAX_LENGTH`` positions."""
    return [
        (list(range(MAX_LENGTH + 1)), f"a prompt of {MAX_LENGTH + 1} tokens does not fit a slot of {MAX_LENGTH}"),
        ([], f"a prompt of 0 tokens does not fit a slot of {MAX_LENGTH}"),
    ]  # fmt: skip


def kv_bytes(itemsize: int) -> int:
    """Keys and values of one slot, all layers: 2 x n_layer x H x L x D x itemsize."""
    c = CONFIG
    return 2 * c["n_layer"] * c["n_head"] * MAX_LENGTH * (c["n_embd"] // c["n_head"]) * itemsize
