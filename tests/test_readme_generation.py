"""The README's generation blocks run as written, offline, in order, in a fresh folder.

(Issue 10 extends this to every block of the README; the generation section's blocks are
self-contained already.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def test_generation_blocks_run_offline(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    generation = [b for b in blocks if "tiny-gpt2" in b]
    assert len(generation) == 2, "the PyTorch and the Keras generation blocks"
    script = tmp_path / "blocks.py"
    script.write_text("\n".join(generation), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Hello, I'm a language model" in done.stdout
    assert (tmp_path / "tiny-gpt2" / "generation_config.json").exists()
