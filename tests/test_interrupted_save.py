"""A save killed mid-write (``kill -9``) leaves the previous checkpoint loadable, and the next
save into the folder removes the temporary file the dead process left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cases import tiny_config
from gpt2_dual._io import TMP_MARK, atomic_write, remove_leftovers

torch = pytest.importorskip("torch")

SAVER = """
import sys, torch
from gpt2_dual import GPT2Config
from gpt2_dual.pt import GPT2LMHeadModel
config = GPT2Config(n_embd=512, n_layer=8, n_head=8, vocab_size=50257)
model = GPT2LMHeadModel(config)
print("ready", flush=True)
while True:
    model.save_pretrained(sys.argv[1])
"""


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{TMP_MARK}*"))


def test_kill_during_save_keeps_previous_checkpoint_and_next_save_cleans(tmp_path):
    from gpt2_dual.pt import GPT2LMHeadModel

    folder = tmp_path / "ckpt"
    torch.manual_seed(0)
    previous = GPT2LMHeadModel(tiny_config())
    previous.save_pretrained(folder)
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not _leftovers(folder) and time.monotonic() < deadline:
            time.sleep(0.005)  # the ~200 MB weight file is being written
        assert _leftovers(folder), "the saver never started writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    left = _leftovers(folder)
    assert left and all(f"{TMP_MARK}{proc.pid}-" in p.name for p in left)
    # The folder still holds a complete checkpoint: the tiny one, or a finished big one.
    loaded = GPT2LMHeadModel.from_pretrained(folder)
    assert loaded.config.n_embd in (tiny_config().n_embd, 512)
    previous.save_pretrained(folder)
    assert _leftovers(folder) == []
    again = GPT2LMHeadModel.from_pretrained(folder)
    assert torch.equal(again.transformer.wte.weight, previous.transformer.wte.weight)


def test_leftovers_of_live_processes_are_kept(tmp_path):
    mine = tmp_path / f".model.safetensors{TMP_MARK}{os.getpid()}-abc"
    mine.write_bytes(b"x")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    theirs = tmp_path / f".config.json{TMP_MARK}{dead.stdout.strip()}-xyz"
    theirs.write_bytes(b"x")
    foreign = tmp_path / ".model.safetensors.abc.tmp"  # not ours: never touched
    foreign.write_bytes(b"x")
    atomic_write(tmp_path / "config.json", lambda f: f.write(b"{}"))
    assert mine.exists() and foreign.exists() and not theirs.exists()
    assert remove_leftovers(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path):
    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "config.json", fail)
    assert (tmp_path / "config.json").read_text() == "{}"
    assert _leftovers(tmp_path) == []
