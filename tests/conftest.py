"""Shared pytest options: opt-in markers for slow and GPU tests, and ``xla_every_run``."""

from __future__ import annotations

import os

import pytest

from require_all import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401


def _threads_per_worker() -> None:
    """Under pytest-xdist, each worker's torch, oneDNN/MKL and TensorFlow get the cores divided
    among the workers: each would otherwise start a thread per core, N workers times N
    threads on an N-core machine. (On 2 cores it makes no measurable difference: 90.0 s vs
    91.4 s for two TF modules; on many cores it keeps the thread count sane.) Set before any
    framework is imported (this file is loaded first); an explicit setting in the environment
    wins, and the tests' subprocesses inherit the same share."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    share = str(max(1, (os.cpu_count() or 1) // int(workers)))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):  # fmt: skip
        os.environ.setdefault(name, share)


_threads_per_worker()



def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "xla_every_run: runs the TF XLA path (GPT2_DUAL_TF_XLA=1) in every run, not only when "
        "the variable is exported; for a representative subset of the XLA cases",
    )


@pytest.fixture(autouse=True)
def _xla_every_run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests marked ``xla_every_run`` see ``GPT2_DUAL_TF_XLA=1`` (the TF adapter compiles
    their ``sdpa`` models with XLA instead of skipping them); the rest of the XLA cases stay
    behind the variable (each compile takes seconds)."""
    if request.node.get_closest_marker("xla_every_run"):
        monkeypatch.setenv("GPT2_DUAL_TF_XLA", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker in ("slow", "gpu"):
        if config.getoption(f"--run-{marker}"):
            continue
        skip = pytest.mark.skip(reason=f"needs --run-{marker}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
