"""``GPT2_DUAL_REQUIRE_ALL=1`` (exported by ``.ci/run``): a skip for a missing or broken
framework or test dependency fails instead.

``pytest.importorskip("torch")`` and ``skipif(not has("torch"))`` keep a partial install usable
(``import gpt2_dual`` needs neither framework), but on CI every extra is installed, so such a
skip means a broken install: without this, it would turn whole modules into a green run.
Other skips (no CUDA device, --run-slow, an optional CPU feature) are left alone.

Loaded by ``tests/conftest.py``; a plugin module of its own so a test can load it alone.
"""

from __future__ import annotations

import os
import re

import pytest

#: Top-level modules the project's extras install (torch, tf, test).
REQUIRED = {
    "torch", "tensorflow", "keras", "tf_keras", "transformers", "keras_hub", "peft",
    "accelerate", "hypothesis", "h5py", "tiktoken", "tiktoken_ext", "gpt2_dual", "bitsandbytes",
}  # fmt: skip
#: importorskip's reason, and the skipif reasons of frameworks.FRAMEWORKS and the test modules.
_MISSING = re.compile(
    r"could not import '(?P<imported>[\w.]+)'|\bno (?P<no>torch|tensorflow)$|needs (?P<needs>torch|tensorflow)$"
)


def _enabled() -> bool:
    return os.environ.get("GPT2_DUAL_REQUIRE_ALL") == "1"


def _fail_if_missing_dependency(report) -> None:
    if not report.skipped or not _enabled():
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    match = _MISSING.search(reason.strip())
    if match is None:
        return
    module = next(v for v in match.groupdict().values() if v)
    if module.split(".")[0] not in REQUIRED:
        return
    report.outcome = "failed"
    report.longrepr = f"GPT2_DUAL_REQUIRE_ALL=1 forbids this skip (a broken install?): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_if_missing_dependency(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_if_missing_dependency(report)
    return report
