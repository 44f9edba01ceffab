"""Conformance tests for child workflows and deadlines (mixed into ``WorldConformance``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import worldflow as wf
from worldflow._state import RunState
from worldflow._world import Event

from . import _workflows_children as c
from ._conformance import conformance
from ._harness import DuplicatingWorld, Harness, chaotic, normalized, replay_log

__all__ = ["ChildrenConformance"]


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


class ChildrenConformance:
    """Child workflows (``wf.start`` inside a workflow, a workflow called) and deadlines."""

    def _needs_a_serving_test_process(self) -> None:
        raise NotImplementedError  # WorldConformance's

    @conformance
    async def test_children_return_fail_and_nest(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.family, tag)
        first, second, caught, nested, child_id = await run.result(timeout=20)
        assert [first, second, nested] == [2, 11, 302]
        assert caught == "KidError: kid failed: on purpose"
        assert child_id == f"{run.id}-c1"  # derived from the parent's id and command
        assert c.CALLS[f"{tag}:add"] == 5  # kid x2, failing_kid, middle's two kids
        events = await run.events()
        kinds = _kinds(events)
        assert kinds.count("child_started") == 4 and kinds.count("child_completed") == 4
        assert "step_scheduled" not in kinds  # the children ran the steps
        replay_log(events)
        children = await run.children()
        assert [k.workflow for k in children] == [
            c.kid.name,
            c.kid.name,
            c.failing_kid.name,
            c.grandparent_child.name,
        ]
        assert [await k.status() for k in children] == [
            "completed",
            "completed",
            "failed",
            "completed",
        ]
        assert all(k.parent_id == run.id for k in children)
        assert await children[0].result(timeout=5) == 2  # a plain handle outside the workflow
        assert await children[0].parent() == run
        assert await run.parent() is None
        grandchildren = await children[3].children()
        assert len(grandchildren) == 2
        assert await grandchildren[1].result(timeout=5) == 201
        kid_events = await children[0].events()
        assert kid_events[0].data["parent"] == {"id": run.id, "cid": 1}
        failed = await children[2].info()
        assert failed.error is not None and failed.error["type"].endswith("KidError")

    @conformance
    async def test_gather_over_children_costs_appends_linear_in_children(self, h: Harness) -> None:
        tag = _tag()
        n = 40
        run = await wf.start(c.fan_out, tag, n)
        assert await run.result(timeout=30) == sum(range(1, n + 1))
        events = await run.events()
        kinds = _kinds(events)
        assert kinds.count("child_started") == n and kinds.count("child_completed") == n
        assert len(events) == 2 * n + 3  # created, started, n + n, completed
        children = await run.children()
        assert len({k.id for k in children}) == n
        for k in children[:5]:
            assert _kinds(await k.events())[0] == "run_created"
            assert len(await k.events()) == 6  # created, started, one step (3), completed
        assert c.CALLS[f"{tag}:add"] == n

    @conformance
    async def test_a_child_with_an_id_is_started_once(self, h: Harness) -> None:
        tag = _tag()
        child_id = f"child-{tag}"
        run = await wf.start(c.named, tag, child_id)
        assert await run.result(timeout=20) == [child_id, 6]
        assert await wf.get_run(child_id).result(timeout=5) == 6
        again = await wf.start(c.named, tag, child_id, id=f"again-{tag}")
        # The id is taken by another parent's child: a clear error in the second parent.
        with pytest.raises(wf.RunFailed) as info:
            await again.result(timeout=20)
        assert info.value.error_type == "worldflow.RunConflict"
        assert child_id in info.value.message
        assert c.CALLS[f"{tag}:add"] == 1  # the child ran once, for its own parent

    @conformance
    async def test_cancelling_the_parent_cancels_its_children(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.waits_on_sleepers, tag)
        children = await self._wait_children(run, 2)
        attached, detached = children
        assert detached.detached and not attached.detached
        for k in children:
            await h.wait_event(k, "sleep_started")
        await run.cancel()
        with pytest.raises(wf.RunCancelled):
            await run.result(timeout=10)
        with pytest.raises(wf.RunCancelled):
            await attached.result(timeout=10)
        assert c.CALLS[f"{tag}:cleanup:parent"] == 1
        assert c.CALLS[f"{tag}:cleanup:attached"] == 1
        assert await detached.status() == "running"  # detached: runs on
        assert c.CALLS[f"{tag}:cleanup:detached"] == 0
        h.advance("1d")
        assert await detached.result(timeout=10) == "detached"

    @conformance
    async def test_a_run_that_ends_cancels_the_children_it_left(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.leaves_early, tag)
        assert await run.result(timeout=10) == "left"
        (orphan,) = await self._wait_children(run, 1)  # created, even after its parent ended
        with pytest.raises(wf.RunCancelled):
            await orphan.result(timeout=10)
        assert c.CALLS[f"{tag}:cleanup:orphan"] <= 1  # if it started, its finally ran once

    @conformance
    async def test_bad_child_calls_are_clear_errors_and_lose_nothing(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.bad_children, tag)
        errors = await run.result(timeout=20)
        assert len(errors) == 10, errors
        assert "wf.start() takes a @wf.workflow function" in errors[0]
        assert "no.such.workflow" in errors[1]
        assert "'soon'" in errors[2] and "timeout" in errors[2]
        assert "-1" in errors[3] and "negative" in errors[3]
        assert "more than 0 seconds" in errors[4]
        assert "bool" in errors[5]
        assert errors[6].startswith("TypeError: workflow") and c.kid.name in errors[6]
        assert "run id must be" in errors[7]
        assert "make it in a step" in errors[8]
        assert errors[9] == "kid: 42"
        assert (await run.children())[0].workflow == c.kid.name
        assert len(await run.children()) == 1  # the bad calls recorded nothing
        replay_log(await run.events())
        # Outside a workflow, bad timeouts are errors before anything is created.
        for bad in ("soon", -5, 0, "1x"):
            with pytest.raises(ValueError, match="timeout"):
                await wf.start(c.kid, tag, 1, timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            wf.workflow(timeout="forever")
        with pytest.raises(TypeError, match="cannot be called directly"):
            await c.kid(tag, 1)

    @conformance
    async def test_deadline_fails_the_run_runs_finally_and_cancels_children(
        self, h: Harness
    ) -> None:
        tag = _tag()
        run = await wf.start(c.with_deadline, tag)
        (created,) = [e for e in await run.events() if e.kind == "run_created"]
        assert created.data["deadline"] == pytest.approx(created.at + 3600)
        await h.wait_event(run, "sleep_started")
        (child,) = await self._wait_children(run, 1)
        await h.wait_event(child, "sleep_started")
        h.advance("59m")
        await asyncio.sleep(0.1)
        assert await run.status() == "running"
        h.advance("2m")
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=20)
        assert info.value.error_type == "TimeoutError"
        assert "passed its deadline" in info.value.message and run.id in info.value.message
        assert c.CALLS[f"{tag}:cleanup:deadline"] == 1  # the finally block ran, with a step
        with pytest.raises(wf.RunCancelled):
            await child.result(timeout=20)
        kinds = _kinds(await run.events())
        assert kinds.count("deadline_passed") == 1 and kinds[-1] == "run_failed"
        replay_log(await run.events())

    @conformance
    async def test_start_timeout_and_a_child_that_times_out(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.swallows_cancellation, tag, timeout="30m")
        await h.wait_event(run, "sleep_started")
        parent = await wf.start(c.child_times_out, tag)
        (child,) = await self._wait_children(parent, 1)
        await h.wait_event(child, "sleep_started")
        await h.restart()  # the deadlines are durable timers, not this process's
        h.advance("31m")
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=20)
        assert info.value.error_type == "TimeoutError"  # swallowing it changes nothing
        outcome = await parent.result(timeout=20)
        assert outcome.startswith("TimeoutError: ") and child.id in outcome
        assert c.CALLS[f"{tag}:cleanup:slow-child"] == 1

    @conformance
    async def test_waiting_on_a_child_with_a_timeout_is_durable(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.waits_with_timeout, tag)
        (child,) = await self._wait_children(run, 1)
        await h.wait_event(run, "sleep_started")  # the wait's timer, a durable one
        h.advance("6m")
        assert await run.result(timeout=20) == "gave up waiting"
        assert await child.status() == "running"  # detached: not cancelled
        h.advance("1d")
        assert await child.result(timeout=20) == "waited-for"

    @conformance
    async def test_children_survive_a_restart(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(c.waits_on_sleepers, tag)
        attached, detached = await self._wait_children(run, 2)
        for k in (attached, detached):
            await h.wait_event(k, "sleep_started")
        await h.restart()  # a cold process: the parent replays, the children too
        h.advance("1d")
        assert await run.result(timeout=10) == "attached"
        assert await detached.result(timeout=10) == "detached"
        assert c.CALLS[f"{tag}:cleanup:parent"] == 1

    @conformance
    async def test_children_under_duplicate_and_chaotic_delivery(self, h: Harness) -> None:
        self._needs_a_serving_test_process()
        plain = await self._children_scenario(h)
        await h.close()
        inner = h.make_world
        h.make_world = lambda: DuplicatingWorld(inner())
        await h.restart()
        assert await self._children_scenario(h) == plain
        await h.close()
        h.make_world = lambda: chaotic(inner(), max_delay=0.1, duplicate=True)
        await h.restart()
        assert await self._children_scenario(h) == plain

    async def _children_scenario(self, h: Harness) -> list[Any]:
        tag = "dup-children"  # the same inputs in every execution
        c.CALLS.clear()
        logs: list[Any] = []
        run = await wf.start(c.sequence, tag)
        assert await run.result(timeout=20) == [2, 3, "kid failed: dup"]
        logs.append(normalized(await run.events()))
        for child in await run.children():
            logs.append(normalized(await child.events()))
        fan = await wf.start(c.fan_out, tag, 5)
        assert await fan.result(timeout=20) == 15
        events = await fan.events()
        RunState.from_events(fan.id, events)
        logs.append(sorted(_kinds(events)))
        assert c.CALLS[f"{tag}:add"] == 3 + 5  # each child's step ran once
        started = [e.data["id"] for e in events if e.kind == "child_started"]
        for child_id in started:
            kinds = _kinds(await wf.get_run(child_id).events())
            assert kinds.count("run_created") == 1 and kinds.count("run_started") == 1
        return logs

    async def _wait_children(
        self, run: wf.Run[Any], n: int, timeout: float = 10.0
    ) -> list[wf.ChildRun[Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await run.children()
            ready = []
            for k in found:
                try:
                    await k.status()
                    ready.append(k)
                except wf.RunNotFound:
                    pass
            if len(ready) >= n:
                return ready
            assert loop.time() < deadline, f"run {run.id} has {len(ready)} children, not {n}"
            await asyncio.sleep(0.01)
