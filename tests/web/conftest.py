"""Fixtures of the web UI's tests (helpers in web_helpers.py, workflows in web_flows.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # web_helpers, web_flows: imported by name

from web_helpers import Store, make_store


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Shared by the read-only tests: nothing may change it."""
    return make_store(tmp_path_factory.mktemp("webstore"))
