"""``release_memory``: a full collection only when enough was freed to be worth its cost."""

from __future__ import annotations

import gc

import pytest

from gpt2_dual._io import RELEASE_MIN_BYTES, release_memory


@pytest.fixture
def collections():
    seen: list[int] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(callback)
    yield seen
    gc.callbacks.remove(callback)


@pytest.mark.parametrize(
    ("nbytes", "collected"),
    [(None, [2]), (RELEASE_MIN_BYTES, [2]), (RELEASE_MIN_BYTES - 1, []), (0, [])],
)
def test_collects_only_past_the_threshold(collections, nbytes, collected):
    release_memory(nbytes)
    assert [g for g in collections if g == 2] == collected
