"""The executor when storage fails under it: nothing is lost, it tries again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import worldflow as wf
from worldflow._world import Event
from worldflow.testing import _workflows as w
from worldflow.worlds.local import LocalWorld


class FlakyReads(LocalWorld):
    """A local world whose log reads fail a few times once armed."""

    failures = 0

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        if self.failures:
            self.failures -= 1
            raise wf.WorldError("the store is unavailable (a test)")
        return await super().read_events(run_id, after_seq)


def test_a_failing_load_keeps_step_results_and_retries(tmp_path: Path) -> None:
    async def main() -> Any:
        world = FlakyReads(tmp_path, serve_webhooks=False)
        # Always replaying: every step result makes the executor load the log,
        # with no queue message that could bring the run back if one were lost.
        async with wf.worker(world, always_replay=True):
            run = await wf.start(w.gated_workflow, "flaky")
            await asyncio.sleep(0.05)  # the step is running, waiting for its gate
            world.failures = 3
            w.GATES["flaky"] = True  # its result comes in while the store is down
            result = await run.result(timeout=15)
            assert world.failures == 0  # the loads did fail
            return result

    assert asyncio.run(main()) == 1  # the first attempt's result was kept


def test_worker_grace_lets_a_running_step_finish(tmp_path: Path) -> None:
    async def main() -> Any:
        world = LocalWorld(tmp_path, serve_webhooks=False)
        async with wf.worker(world, grace=5):
            run = await wf.start(w.gated_workflow, "grace")
            await asyncio.sleep(0.05)  # the step is running, waiting for its gate
            asyncio.get_running_loop().call_later(0.2, w.GATES.__setitem__, "grace", True)
        # the block has ended: the step finished and its result was recorded first
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            return await run.result(timeout=5), [e.kind for e in await run.events()]

    result, kinds = asyncio.run(main())
    assert result == 1
    assert kinds.count("step_started") == 1 and "step_completed" in kinds
