"""A host's limit on one step attempt: steps with a longer timeout are named, at start."""

from __future__ import annotations

import asyncio
import logging

import pytest

import worldflow as wf
from worldflow.world import Capabilities, step_limit_problems


@wf.step(timeout="20m")
async def slow_export(n: int) -> int:
    return n


@wf.step(timeout="5m")
async def quick_export(n: int) -> int:
    return n


def test_steps_longer_than_the_host_allows_are_named() -> None:
    problems = step_limit_problems(900.0, "Lambda's function timeout")
    mine = [p for p in problems if "slow_export" in p]
    assert len(mine) == 1
    assert "timeout=20m" in mine[0] and "Lambda's function timeout (15m" in mine[0]
    assert not [p for p in problems if "quick_export" in p]
    assert not [p for p in step_limit_problems(3600.0, "x") if "_export" in p]


def test_a_worker_warns_at_start(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    from worldflow.worlds.local import LocalWorld

    async def main() -> None:
        world = LocalWorld(tmp_path)  # type: ignore[arg-type]
        world.capabilities = Capabilities(
            transactional_messages=True,
            embedded=True,
            max_attempt_seconds=600.0,
            host_limit="Cloud Run's request timeout",
        )
        async with wf.worker(world):
            pass

    with caplog.at_level(logging.WARNING, logger="worldflow"):
        asyncio.run(main())
    warned = [r.getMessage() for r in caplog.records if "slow_export" in r.getMessage()]
    assert len(warned) == 1 and "Cloud Run's request timeout (10m" in warned[0]
