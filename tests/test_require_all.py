"""``GPT2_DUAL_REQUIRE_ALL=1`` turns a skip for a missing framework into a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BODY = '''
import pytest

broken = pytest.importorskip("hypothesis.not_a_module")  # a module of a required package


def test_runs():
    pass
'''
MARKED = '''
import pytest


@pytest.mark.skipif(True, reason="no tensorflow")
def test_needs_tf():
    pass


@pytest.mark.skipif(True, reason="no CUDA device")
def test_needs_cuda():
    pass
'''


def _pytest(folder: Path, require: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("GPT2_DUAL_REQUIRE_ALL", None)
    if require:
        env["GPT2_DUAL_REQUIRE_ALL"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "require_all", "-p", "no:cacheprovider",
               "-rA", "--continue-on-collection-errors", "--rootdir", str(folder), "-c", os.devnull, str(folder)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder, timeout=120)


@pytest.mark.parametrize("require", [False, True])
def test_missing_framework_skips_fail_only_when_required(tmp_path, require):
    (tmp_path / "test_import.py").write_text(BODY)
    (tmp_path / "test_marked.py").write_text(MARKED)
    result = _pytest(tmp_path, require)
    summary = result.stdout.strip().splitlines()[-1]
    if not require:
        assert result.returncode == 0 and "3 skipped" in summary, result.stdout
        return
    assert result.returncode == 1, result.stdout
    assert "1 skipped" in summary and "2 errors" in summary, summary  # collection, setup
    assert "GPT2_DUAL_REQUIRE_ALL=1 forbids this skip" in result.stdout
    assert "SKIPPED" in result.stdout and "no CUDA device" in result.stdout  # left alone
