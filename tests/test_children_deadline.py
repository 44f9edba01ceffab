"""A run still pending at its deadline fails without starting (no worker served it in time)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import worldflow as wf
from worldflow._api import client
from worldflow.testing import _workflows_children as c
from worldflow.worlds.local import LocalWorld


def test_a_run_pending_past_its_deadline_fails_without_starting(tmp_path: Path) -> None:
    clock = wf.VirtualClock()

    async def main() -> list[str]:
        async with client(LocalWorld(tmp_path, clock=clock)):
            run = await wf.start(c.kid, "pending", 1, timeout="1m")
        clock.advance("2m")  # no worker ran it in time
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            with pytest.raises(wf.RunFailed) as info:
                await run.result(timeout=10)
            assert info.value.error_type == "TimeoutError"
            assert "passed its deadline" in info.value.message
            return [e.kind for e in await run.events()]

    kinds = asyncio.run(main())
    assert kinds == ["run_created", "deadline_passed", "run_failed"]
    assert c.CALLS["pending:add"] == 0
