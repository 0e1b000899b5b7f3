"""``GPT2_DUAL_REQUIRE_ALL=1`` (exported by ``.ci/run``): a skip for a missing or broken
framework or test dependency fails instead.

``pytest.importorskip("torch")`` and ``skipif(not has("torch"))`` keep a partial install usable
(``import gpt2_dual`` needs neither framework), but on CI every extra is installed, so such a
skip means a broken install: without this, it would turn whole modules into a green run.
Other skips (no CUDA device, --run-slow, an optional CPU feature) are left alone.

A skip counts as a missing dependency when its reason (``missing_module``) is worded as the
suite words them: importorskip's ``could not import 'x'``, ``no x``, ``needs x``, ``needs x and
y``, ``needs x, y, z`` (every name one of ``REQUIRED``) or ``x is not installed``.
``tests/test_require_all.py`` reads every skip in the suite whose condition asks whether a
``REQUIRED`` module is installed and checks that its reason is one of these.

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
    "torchao",
    "uvicorn", "starlette", "openai", "httpx", "jinja2", "tensorboard",
}  # fmt: skip
_NAME = r"[\w.]+"
#: The wordings of a skip for a missing module (the whole stripped reason, any case).
_MISSING = re.compile(
    rf"could not import '(?P<imported>{_NAME})'"
    rf"|\bno (?P<no>{_NAME})$"
    rf"|\bneeds (?P<needs>{_NAME}(?:(?:, | and ){_NAME})*)$"
    rf"|\b(?P<installed>{_NAME}) is not installed$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r", | and ", re.IGNORECASE)


def missing_module(reason: str) -> str | None:
    """The ``REQUIRED`` module(s) a skip ``reason`` says are missing (``"tensorflow,
    tf_keras"``), or None: another reason, or a name that is not a required module (``"no
    CUDA device"``, ``"keras' jax backend needs jax"``)."""
    match = _MISSING.search(reason.strip())
    if match is None:
        return None
    names = _SEPARATOR.split(next(v for v in match.groupdict().values() if v))
    if not all(name.split(".")[0].lower() in REQUIRED for name in names):
        return None
    return ", ".join(names)


def _enabled() -> bool:
    return os.environ.get("GPT2_DUAL_REQUIRE_ALL") == "1"


def _fail_if_missing_dependency(report) -> None:
    if not report.skipped or not _enabled():
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if missing_module(reason) is None:
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
