"""Shared pytest options: opt-in markers for slow and GPU tests, and ``xla_every_run``."""

from __future__ import annotations

import pytest

from require_all import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401


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
