"""Every ```python block of README.md runs as written: offline, in order, each in a fresh
process, all in one fresh folder (a later block may use what an earlier one saved, as a reader
following the README would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 5, "tour, PyTorch, Keras, and the two generation blocks"


@pytest.mark.parametrize("number", range(len(BLOCKS)), ids=lambda n: f"block{n + 1}")
def test_block_runs_offline(folder, number):
    script = folder / f"block{number + 1}.py"
    script.write_text(BLOCKS[number], encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"README block {number + 1}:\n{BLOCKS[number]}\n{done.stderr[-3000:]}"
    if "tiny-gpt2" in BLOCKS[number] and "print(" in BLOCKS[number]:
        assert "Hello, I'm a language model" in done.stdout
