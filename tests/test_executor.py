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


def test_runs_evicted_from_the_warm_cache_replay_and_finish(tmp_path: Path) -> None:
    from worldflow._runtime import Runtime

    async def main() -> list[Any]:
        clock = wf.VirtualClock()
        runtime = Runtime(LocalWorld(tmp_path, clock=clock, serve_webhooks=False), max_cached=5)
        await runtime.start()
        try:
            ids = [await runtime.start_run(w.sleeper.name, ("1h",), {}, None) for _ in range(20)]
            while True:  # every run asleep (each wrote its sleep_started)
                infos = [await runtime.world.read_events(i) for i in ids]
                if all(any(e.kind == "sleep_started" for e in log) for log in infos):
                    break
                await asyncio.sleep(0.01)
            assert len(runtime._executors) <= 5  # idle runs were evicted
            clock.advance("1h")
            return [await runtime.result(i, 10) for i in ids]
        finally:
            await runtime.close()

    assert asyncio.run(main()) == ["awake"] * 20


def test_a_run_whose_step_runs_on_another_worker_says_so(tmp_path: Path) -> None:
    """Runtime.waits_on_others: what a serverless World asks before acknowledging."""
    from worldflow._runtime import Runtime
    from worldflow._world import Message

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            other = Runtime(LocalWorld(tmp_path, serve_webhooks=False))
            await other.start()
            try:
                run_id = await other.start_run(w.gated_workflow.name, ("waits",), {}, None)
                run = wf.get_run(run_id)
                for _ in range(500):
                    if "step_started" in [e.kind for e in await run.events()]:
                        break
                    await asyncio.sleep(0.01)
                here = _api_runtime()
                await here.handle(Message(here.new_id(), run_id, "resume"))
                assert here.waits_on_others(run_id)  # the other worker is running it
                assert not other.waits_on_others(run_id)  # its own attempt
                assert not here.waits_on_others("no-such-run")
                w.GATES["waits"] = True
                assert await run.result(timeout=10) == 1
                await here.handle(Message(here.new_id(), run_id, "resume"))
                assert not here.waits_on_others(run_id)  # reloaded: the step completed
            finally:
                await other.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def _api_runtime() -> Any:
    from worldflow import _api

    return _api._runtimes[asyncio.get_running_loop()].result()


def test_drain_of_one_run_does_not_wait_for_another(tmp_path: Path) -> None:
    """Runtime.drain(run_id=...): a serverless World answers a message once its run is
    quiescent, not once the whole process is."""

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            here = _api_runtime()
            busy = await wf.start(w.gated_workflow, "drain-busy")
            quick = await wf.start(w.echo, 7)
            assert await quick.result(timeout=10) == 7
            for _ in range(500):  # until the gated step runs
                if "step_started" in [e.kind for e in await busy.events()]:
                    break
                await asyncio.sleep(0.01)
            assert await here.drain(0.2, run_id=quick.id)
            assert not await here.drain(0.2, run_id=busy.id)
            assert not await here.drain(0.2)  # the whole process is not idle
            w.GATES["drain-busy"] = True
            assert await here.drain(5, run_id=busy.id)
            assert await busy.result(timeout=5) == 1

    asyncio.run(asyncio.wait_for(main(), 20))
