"""The neutral core must import without pulling in any framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "transformers")


@pytest.mark.parametrize(
    "statement",
    [
        "import gpt2_dual",
        "from gpt2_dual import GPT2Config, GPT2Tokenizer, GPT2TokenizerFast",
        "import gpt2_dual.hub.resolve, gpt2_dual.convert, gpt2_dual.cli, gpt2_dual.pipelines",
    ],
)
def test_core_imports_no_framework(statement):
    check = f"{statement}; import sys; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
