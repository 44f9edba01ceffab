"""Edges of child runs and deadlines: a run still pending at its deadline fails without
starting; a child whose log is corrupt fails, and its parent hears of it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
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


def test_a_child_whose_log_is_corrupt_fails_and_its_parent_hears_of_it(tmp_path: Path) -> None:
    clock = wf.VirtualClock()

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            run = await wf.start(c.waits_on_sleepers, "corrupt")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not await _both_asleep(children := await run.children()):
                assert loop.time() < deadline, "the children never slept"
                await asyncio.sleep(0.02)
        attached = children[0]
        db = sqlite3.connect(tmp_path / "worldflow.sqlite3")
        with db:  # valid JSON, but a sleep without its time: a malformed event
            db.execute(
                "UPDATE events SET data = ? WHERE run_id = ? AND kind = 'sleep_started'",
                (json.dumps({"cid": 1}), attached.id),
            )
        db.close()
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):  # cold: replays from the log
            await attached.wake()
            with pytest.raises(wf.RunFailed) as child_failed:
                await attached.result(timeout=10)
            assert child_failed.value.error_type == "worldflow.CorruptLogError"
            with pytest.raises(wf.RunFailed) as parent_failed:
                await run.result(timeout=10)
            assert parent_failed.value.error_type == "worldflow.CorruptLogError"
            assert attached.id in parent_failed.value.message
        assert c.CALLS["corrupt:cleanup:parent"] == 1

    asyncio.run(main())


async def _both_asleep(children: list[wf.ChildRun[object]]) -> bool:
    if len(children) < 2:
        return False
    for child in children:
        try:
            kinds = [e.kind for e in await child.events()]
        except wf.RunNotFound:  # not created yet
            return False
        if "sleep_started" not in kinds:
            return False
    return True
