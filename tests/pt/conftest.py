"""Fixtures of the PyTorch tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fresh_dynamo():
    """A clean torch.compile state before and after the test (compiled graphs, recompile
    errors)."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    yield
    torch._dynamo.config.error_on_recompile = False
    torch._dynamo.reset()
