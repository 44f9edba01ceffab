"""Fixtures shared by the worlds' test modules."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for a test module (dropped afterwards): skipped when
    no server answers, except in CI, where that is a failure."""
    from worldflow.worlds.postgres.testing import ServerMissing, fresh_database

    try:
        with fresh_database() as url:
            yield url
    except ServerMissing as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def schema() -> str:
    """A schema name of its own for one test (created on first use)."""
    return f"t_{secrets.token_hex(5)}"
