"""The executor when storage fails under it: nothing is lost, it tries again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import worldflow as wf
from worldflow.testing import _workflows as w
from worldflow.world import ACK, Delivery, Log, Message, Storage
from worldflow.worlds.local import LocalWorld


class FlakyReads:
    """A World's storage whose log reads fail a few times once armed."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        if self.failures:
            self.failures -= 1
            raise wf.WorldError("the store is unavailable (a test)")
        return await self.inner.read_log(run_id, after_seq)


def test_a_failing_load_keeps_step_results_and_retries(tmp_path: Path) -> None:
    async def main() -> Any:
        world = LocalWorld(tmp_path, serve_webhooks=False)
        flaky = FlakyReads(world.storage)
        world.storage = flaky
        # Always replaying: every step result makes the executor load the log,
        # with no queue message that could bring the run back if one were lost.
        async with wf.worker(world, always_replay=True):
            run = await wf.start(w.gated_workflow, "flaky")
            await asyncio.sleep(0.05)  # the step is running, waiting for its gate
            flaky.failures = 3
            w.GATES["flaky"] = True  # its result comes in while the store is down
            result = await run.result(timeout=15)
            assert flaky.failures == 0  # the loads did fail
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
                infos = [await runtime.read_events(i) for i in ids]
                if all(any(e.kind == "sleep_started" for e in log) for log in infos):
                    break
                await asyncio.sleep(0.01)
            assert len(runtime._executors) <= 5  # idle runs were evicted
            clock.advance("1h")
            return [await runtime.result(i, 10) for i in ids]
        finally:
            await runtime.close()

    assert asyncio.run(main()) == ["awake"] * 20


def test_a_message_is_given_back_while_its_step_runs_on_another_live_worker(
    tmp_path: Path,
) -> None:
    """The disposition rule: a message whose run waits on a step of another worker is
    not acknowledged while that worker lives (it comes back when its lease runs out);
    once that worker is gone, the run is looked at again and the step runs here."""
    from worldflow._runtime import Runtime

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False, lease=3.0)):
            here = _api_runtime()
            other = Runtime(LocalWorld(tmp_path, serve_webhooks=False, lease=3.0))
            await other.start()
            try:
                run_id = await other.start_run(w.gated_workflow.name, ("waits",), {}, None)
                run = wf.get_run(run_id)
                await _until_started(run)
                resume = Delivery(Message(here.new_id(), run_id, "resume"))
                said = await here.deliver(resume)
                assert not said.ack and 1.0 < said.after <= 3.0 + 1.5, said
                assert "running on" in said.reason and other.worker_id in said.reason
            finally:
                await other.close()  # its attempt is cut short; its lease ends at once
            w.GATES["waits"] = True
            said = await here.deliver(resume)
            assert said == ACK  # looked again: the other worker is gone, the step ran here
            assert await run.result(timeout=10) == 2  # the lost attempt counted
            started = [e.data["attempt"] for e in await run.events() if e.kind == "step_started"]
            assert started == [1, 2]

    asyncio.run(asyncio.wait_for(main(), 30))


async def _until_started(run: wf.Run[Any]) -> None:
    for _ in range(500):
        if "step_started" in [e.kind for e in await run.events()]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the step never started")


def _api_runtime() -> Any:
    from worldflow import _api

    return _api._runtimes[asyncio.get_running_loop()].result()


def test_a_message_is_acknowledged_once_its_own_run_is_quiet(tmp_path: Path) -> None:
    """A host answers a message once its run is quiet, whatever other runs do; with a
    deadline, a run whose step still runs here has its message given back."""

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            here = _api_runtime()
            busy = await wf.start(w.gated_workflow, "drain-busy")
            quick = await wf.start(w.echo, 7)
            assert await quick.result(timeout=10) == 7
            await _until_started(busy)
            loop = asyncio.get_running_loop()
            quick_again = Delivery(Message(here.new_id(), quick.id, "resume"))
            assert await here.deliver(quick_again, deadline=loop.time() + 0.5) == ACK
            busy_again = Delivery(Message(here.new_id(), busy.id, "resume"))
            said = await here.deliver(busy_again, deadline=loop.time() + 0.2)
            assert not said.ack and "still running here" in said.reason
            assert said.after >= 1.0  # after this worker's lease: the attempt is lost by then
            w.GATES["drain-busy"] = True
            assert await here.deliver(busy_again, deadline=loop.time() + 5) == ACK
            assert await busy.result(timeout=5) == 1

    asyncio.run(asyncio.wait_for(main(), 20))


class RefusesOneRun:
    """A World's storage that refuses every append of one run (bad data for this store)."""

    def __init__(self, inner: Storage, bad: str) -> None:
        self.inner = inner
        self.bad = bad
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, appends: Any) -> list[bool]:
        if any(a.run_id == self.bad for a in appends):
            self.refused += 1
            raise ValueError("this store cannot hold that run's data (a test)")
        return list(await self.inner.append(appends))


def test_one_run_whose_appends_fail_does_not_hold_up_the_others(tmp_path: Path) -> None:
    async def main() -> list[int]:
        world = LocalWorld(tmp_path, serve_webhooks=False)
        refusing = RefusesOneRun(world.storage, "poison")
        world.storage = refusing
        async with wf.worker(world):
            await wf.start(w.sequential, "poison", 5, id="poison")
            runs = [await wf.start(w.sequential, f"ok{i}", 5) for i in range(10)]
            results = [await run.result(timeout=10) for run in runs]
            assert refusing.refused >= 1
            assert await wf.get_run("poison").status() in ("pending", "running")
            return results

    assert asyncio.run(main()) == [10] * 10
