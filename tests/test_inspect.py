"""The Python API for looking at runs: wf.list_runs, run.detail(), run.steps(),
and the two operator actions the tools offer, run.wake() and run.rerun()."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow._inspect import inspect_run
from worldflow._world import Event, RunInfo
from worldflow.worlds.local import LocalWorld

FAILS: Counter[str] = Counter()


@wf.step(retry_delay="10ms", name="inspect.flaky")
async def flaky(tag: str, times: int) -> str:
    FAILS[tag] += 1
    if FAILS[tag] <= times:
        raise ValueError(f"flake {FAILS[tag]}")
    return f"ok after {FAILS[tag]}"


@wf.step(max_retries=0, name="inspect.doomed")
def doomed() -> None:
    raise wf.FatalError("no way")


@wf.workflow(name="inspect.retry_sleep_hook")
async def retry_sleep_hook(tag: str) -> dict[str, Any]:
    first = await flaky(tag, 2)
    await wf.sleep("2h")
    hook = wf.create_hook(token=f"approve:{tag}")
    answer = await hook
    return {"first": first, "answer": answer}


@wf.workflow(name="inspect.failing")
async def failing() -> None:
    await doomed()


def world(tmp_path: Path, clock: wf.VirtualClock) -> LocalWorld:
    return LocalWorld(tmp_path, clock=clock, serve_webhooks=False)


async def wait_for(predicate: Any, clock: wf.VirtualClock, timeout: float = 10.0) -> None:
    """Wait until ``predicate()``; the virtual clock ticks meanwhile (for retry delays)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        clock.advance(0.01)
        await asyncio.sleep(0.01)


def test_detail_shows_attempts_sleeps_and_hooks(tmp_path: Path) -> None:
    clock = wf.VirtualClock()

    async def main() -> None:
        async with wf.worker(world(tmp_path, clock)):
            run = await wf.start(retry_sleep_hook, "t1")

            async def sleeping() -> bool:
                return bool((await run.detail()).sleeping)

            await wait_for(sleeping, clock)
            detail = await run.detail()
            assert detail.status == "running" and detail.workflow == "inspect.retry_sleep_hook"
            assert detail.input == {"args": ["t1"], "kwargs": {}}
            (step,) = await run.steps()
            assert step.name == "inspect.flaky" and step.status == "completed"
            assert step.id == f"{run.id}:1" and step.position == 1
            assert step.input == {"args": ["t1", 2], "kwargs": {}}
            assert step.output == "ok after 3"
            assert [a.outcome for a in step.attempts] == ["retried", "retried", "completed"]
            assert [a.number for a in step.attempts] == [1, 2, 3]
            assert step.attempts[0].error is not None
            assert step.attempts[0].error["type"] == "ValueError"
            assert step.attempts[0].error["message"] == "flake 1"
            assert all(a.ended_at is not None and a.ended_at >= a.started_at for a in step.attempts)
            (sleep,) = detail.sleeping
            assert sleep.kind == "sleep" and sleep.until == pytest.approx(sleep.started_at + 7200)

            clock.advance("2h")

            async def hooked() -> bool:
                return bool((await run.detail()).hooks_waiting)

            await wait_for(hooked, clock)
            detail = await run.detail()
            (hook,) = detail.hooks_waiting
            assert hook.token == "approve:t1" and hook.kind == "hook" and hook.waiting
            assert not detail.sleeping and detail.waits[0].ended_at is not None
            assert detail.waits[0].early is False

            await wf.resume_hook("approve:t1", {"ok": True})
            assert await run.result(timeout=10) == {"first": "ok after 3", "answer": {"ok": True}}
            detail = await run.detail()
            assert detail.status == "completed"
            assert detail.output == {"first": "ok after 3", "answer": {"ok": True}}
            assert detail.duration is not None and detail.duration >= 7200
            assert detail.hooks_waiting == () and detail.waits[1].received == 1
            assert len(detail.events) == len(await run.events())
            assert detail.log_error is None

    asyncio.run(main())


def test_failed_step_and_run_show_the_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with wf.worker(world(tmp_path, wf.VirtualClock())):
            run = await wf.start(failing)
            with pytest.raises(wf.RunFailed):
                await run.result(timeout=10)
            detail = await run.detail()
            (step,) = detail.steps
            assert step.status == "failed" and step.error is not None
            assert (
                step.error["type"] == "worldflow.FatalError" and step.error["message"] == "no way"
            )
            assert [a.outcome for a in step.attempts] == ["failed"]
            assert detail.error is not None and detail.error["type"] == "worldflow.FatalError"
            assert detail.output is None

    asyncio.run(main())


def test_wake_fires_a_sleep_early_and_only_once(tmp_path: Path) -> None:
    clock = wf.VirtualClock()

    async def main() -> None:
        async with wf.worker(world(tmp_path, clock)):
            run = await wf.start(retry_sleep_hook, "t2")

            async def sleeping() -> bool:
                return bool((await run.detail()).sleeping)

            await wait_for(sleeping, clock)
            await run.wake()

            async def hooked() -> bool:
                return bool((await run.detail()).hooks_waiting)

            await wait_for(hooked, clock)  # the workflow went on past its sleep, no time passed
            detail = await run.detail()
            assert detail.waits[0].early is True
            assert detail.waits[0].ended_at is not None
            assert detail.waits[0].until is not None
            assert detail.waits[0].ended_at < detail.waits[0].until
            fired = [e for e in detail.events if e.kind == "sleep_fired"]
            assert len(fired) == 1 and fired[0].data["early"] is True
            await run.wake()  # nothing is sleeping: nothing happens
            await wf.resume_hook("approve:t2", "yes")
            assert (await run.result(timeout=10))["answer"] == "yes"
            kinds = [e.kind for e in await run.events()]
            assert kinds.count("sleep_fired") == 1

    asyncio.run(main())


def test_rerun_starts_a_new_run_with_the_same_input(tmp_path: Path) -> None:
    async def main() -> None:
        async with wf.worker(world(tmp_path, wf.VirtualClock())):
            run = await wf.start(failing)
            with pytest.raises(wf.RunFailed):
                await run.result(timeout=10)
            again = await run.rerun(id="again-1")
            assert again.id == "again-1" and again != run
            with pytest.raises(wf.RunFailed):
                await again.result(timeout=10)
            assert (await again.detail()).input == (await run.detail()).input
            assert (await again.rerun(id="again-1")) == again  # idempotent on its id
            with pytest.raises(wf.RunNotFound):
                await wf.get_run("nope").rerun()

    asyncio.run(main())


def test_list_runs_filters_and_pages(tmp_path: Path) -> None:
    async def main() -> None:
        async with wf.worker(world(tmp_path, wf.VirtualClock())):
            failed = [await wf.start(failing) for _ in range(3)]
            for run in failed:
                with pytest.raises(wf.RunFailed):
                    await run.result(timeout=10)
            running = await wf.start(retry_sleep_hook, "t3")
            page = await wf.list_runs(limit=2)
            assert len(page.runs) == 2 and page.cursor is not None
            rest = await wf.list_runs(limit=10, cursor=page.cursor)
            assert rest.cursor is None
            ids = [r.id for r in page.runs + rest.runs]
            assert ids[0] == running.id and sorted(ids) == sorted(
                [running.id, *(r.id for r in failed)]
            )
            by_status = await wf.list_runs(status="failed")
            assert {r.id for r in by_status.runs} == {r.id for r in failed}
            by_workflow = await wf.list_runs(workflow=retry_sleep_hook)
            assert [r.id for r in by_workflow.runs] == [running.id]
            with pytest.raises(ValueError, match="unknown run status 'done'"):
                await wf.list_runs(status="done")
            with pytest.raises(ValueError, match="limit"):
                await wf.list_runs(limit=0)

    asyncio.run(main())


def test_a_corrupt_log_is_shown_up_to_the_bad_event() -> None:
    info = RunInfo("r", "w", "running", 1.0, 2.0, 3)
    events = [
        Event("r", 1, "run_created", {"workflow": "w", "input": [["a"], {}]}, 1.0),
        Event("r", 2, "run_started", {}, 1.5),
        Event("r", 3, "step_completed", {"cid": 9, "attempt": 1, "output": 1}, 2.0),
    ]
    detail = inspect_run(info, events)
    assert detail.input == {"args": ["a"], "kwargs": {}}
    assert detail.started_at == 1.5 and detail.steps == ()
    assert detail.log_error is not None and "never scheduled" in detail.log_error
