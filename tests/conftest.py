"""Settings for the whole test suite."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # pyproject.toml sets a per-test `timeout` (pytest-timeout) and runs with
    # --strict-config. Without the plugin (a plain `pip install pytest`), say so
    # instead of failing with "Unknown config option: timeout".
    if importlib.util.find_spec("pytest_timeout") is None:
        parser.addini("timeout", "per-test timeout; needs pytest-timeout (not installed here)")


def pytest_report_header(config: pytest.Config) -> str | None:
    if importlib.util.find_spec("pytest_timeout") is None:
        return (
            "pytest-timeout is not installed: tests run without a per-test timeout "
            "(scripts/test installs it: pip install 'worldflow[dev]')"
        )
    return None
