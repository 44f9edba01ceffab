"""Conformance tests of concurrency and rate limits (a mixin of :class:`WorldConformance`).

Checked from the event logs' timestamps, on the suite's virtual clock: the
test advances it, so a rate of 10/s over 100 attempts takes milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any, ClassVar

import pytest

import worldflow as wf
from worldflow._runtime import Runtime
from worldflow._world import Message

from . import _workflows_limits as w
from ._conformance import _scale
from ._harness import Harness, chaotic
from ._suite import conformance

__all__ = ["LimitsConformance"]


def _tag() -> str:
    return uuid.uuid4().hex[:12]


async def _run_clock(
    h: Harness, runs: list[wf.Run[Any]], step: float, *, limit: int = 2000
) -> list[str]:
    """Advance the virtual clock by ``step`` until every run has ended."""
    for _ in range(limit):
        statuses = [await r.status() for r in runs]
        if all(s in ("completed", "failed", "cancelled") for s in statuses):
            return statuses
        h.advance(step)
        await asyncio.sleep(0.02)
    raise AssertionError(f"runs still going: {[await r.status() for r in runs]}")


async def _wait_statuses(runs: list[wf.Run[Any]], want: str, count: int) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30 * _scale()  # through a Lambda host on a busy machine: slow
    while True:
        statuses = [await r.status() for r in runs]
        if statuses.count(want) >= count or loop.time() > deadline:
            return statuses
        await asyncio.sleep(0.02)


def _slow(fn: Any) -> Any:
    """``@conformance`` with at least 120 s (these tests take many round trips of the
    World's queue: seconds on a cloud emulator)."""
    test = conformance(fn)

    def slow(self: Any, make_world: Any) -> None:
        cls = type(self)
        before = cls.timeout
        cls.timeout = max(before, 120.0)
        try:
            test(self, make_world)
        finally:
            cls.timeout = before

    slow.__name__ = test.__name__
    slow.__qualname__ = test.__qualname__
    slow.__doc__ = test.__doc__
    return pytest.mark.timeout(150)(slow)  # pytest-timeout's 60 s is per test


class LimitsConformance:
    """Concurrency limits (runs and step attempts) and rate limits, on every World."""

    always_replay: ClassVar[bool]
    serve: ClassVar[bool]

    @_slow
    async def test_limit_of_one_per_key_across_two_workers(self, h: Harness) -> None:
        """20 runs of 4 keys, at most one run per key at once: never two runs of one key
        between their run_started and run_completed, and each key's runs start in start
        order, with two workers serving."""
        tag = _tag()
        other: Runtime | None = None
        if self.serve:
            other = Runtime(h.make_world())
            await other.start()
        try:
            runs = [await wf.start(w.one_per_customer, tag, f"c{i % 4}", i) for i in range(20)]
            statuses = await _wait_statuses(runs, "running", 4)
            await asyncio.sleep(0.2)  # time for a fifth to start, were the limit broken
            statuses = [await r.status() for r in runs]
            assert statuses.count("running") == 4, statuses
            assert statuses.count("pending") == 16, statuses
            assert {i % 4 for i, s in enumerate(statuses) if s == "running"} == {0, 1, 2, 3}
            assert await _run_clock(h, runs, 1.0) == ["completed"] * 20
        finally:
            if other is not None:
                await other.close()
        spans: dict[str, list[tuple[float, float, int]]] = {}
        workers: set[str] = set()
        for i, run in enumerate(runs):
            events = await run.events()
            kinds = [e.kind for e in events]
            assert kinds[:2] == ["run_created", "run_started"] and kinds[-1] == "run_completed"
            assert await run.result(timeout=5) == i
            start = next(e.at for e in events if e.kind == "run_started")
            spans.setdefault(f"c{i % 4}", []).append((start, events[-1].at, i))
            workers |= {e.data["worker"] for e in events if e.kind == "step_started"}
        for key, intervals in spans.items():
            intervals.sort()
            assert [i for _, _, i in intervals] == sorted(i for _, _, i in intervals), key
            for (_, end, a), (begin, _, b) in itertools.pairwise(intervals):
                assert begin >= end, f"key {key}: run {b} started before run {a} ended"
        # each run held its slot >= 1 s, one at a time: >= 5 s per key
        first = min(s for v in spans.values() for s, _, _ in v)
        last = max(e for v in spans.values() for _, e, _ in v)
        assert last - first >= 5.0 - 1e-3

    @_slow
    async def test_rate_limit_of_ten_per_second(self, h: Harness) -> None:
        """100 attempts of a step limited to 10/s (4 runs of 25, one limiter): their turns
        span >= 9.9 s of the clock, no window of 1 s holds more than 10 of them, and no
        attempt starts before its turn (nor fails or retries: it waited)."""
        tag = _tag()
        runs = [await wf.start(w.ticks, tag, 25 * k, 25) for k in range(4)]
        assert await _run_clock(h, runs, 0.5) == ["completed"] * 4
        turns: list[float] = []
        for k, run in enumerate(runs):
            assert await run.result(timeout=5) == sum(range(25 * k, 25 * k + 25))
            events = await run.events()
            for e in events:
                if e.kind == "step_started":
                    turns.append(e.data["granted"])
                    assert e.at >= e.data["granted"] - 1e-3, "started before its turn"
            assert not [e for e in events if e.kind in ("step_retrying", "step_failed")]
        turns.sort()
        assert len(turns) == 100
        assert turns[-1] - turns[0] >= 9.9 - 1e-3
        for a, b in zip(turns, turns[10:], strict=False):
            assert b - a >= 1.0 - 1e-3, "more than 10 turns within 1 s"

    @_slow
    async def test_step_concurrency_limit(self, h: Harness) -> None:
        """A step limited to 2 attempts at once: 6 calls in a gather run 2 at a time."""
        tag = _tag()
        run = await wf.start(w.fan_out, tag, 6)
        assert await run.result(timeout=100) == list(range(6))
        assert w.MOST[tag] <= 2  # as many at once as this process saw (its steps ran here)
        running = most = 0
        for e in await run.events():  # one run: its log's order is the real order
            if e.kind == "step_started":
                running += 1
                most = max(most, running)
            elif e.kind in ("step_completed", "step_failed", "step_retrying"):
                running -= 1
        assert 1 <= most <= 2

    @_slow
    async def test_a_shared_queue_limits_two_workflows(self, h: Harness) -> None:
        tag = _tag()
        runs = [await wf.start(w.welcome, tag), await wf.start(w.goodbye, tag)]
        runs.append(await wf.start(w.welcome, tag))
        statuses = await _wait_statuses(runs, "running", 1)
        await asyncio.sleep(0.1)
        statuses = [await r.status() for r in runs]
        assert statuses == ["running", "pending", "pending"], statuses
        assert await _run_clock(h, runs, 0.5) == ["completed"] * 3
        spans = sorted(
            (next(e.at for e in ev if e.kind == "run_started"), ev[-1].at)
            for ev in [await r.events() for r in runs]
        )
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert begin >= end

    @_slow
    async def test_limits_hold_when_the_queue_is_chaotic(self, h: Harness) -> None:
        """Every message late and twice (``worldflow.testing.chaotic``): still one run per
        key at once, in start order, none lost or run twice."""
        if not self.serve:
            pytest.skip("needs a serving runtime in the test's own process")
        await h.close()
        inner = h.make_world
        h.make_world = lambda: chaotic(inner(), max_delay=0.1, duplicate=True)
        await h.restart()
        tag = _tag()
        runs = [await wf.start(w.one_per_customer, tag, f"c{i % 2}", i) for i in range(8)]
        assert await _run_clock(h, runs, 1.0) == ["completed"] * 8
        spans: dict[int, list[tuple[float, float, int]]] = {0: [], 1: []}
        for i, run in enumerate(runs):
            events = await run.events()
            assert [e.kind for e in events].count("run_started") == 1
            start = next(e.at for e in events if e.kind == "run_started")
            spans[i % 2].append((start, events[-1].at, i))
        for intervals in spans.values():
            intervals.sort()
            assert [i for _, _, i in intervals] == sorted(i for _, _, i in intervals)
            for (_, end, _), (begin, _, _) in itertools.pairwise(intervals):
                assert begin >= end

    @_slow
    async def test_the_step_slot_of_a_stopped_worker_comes_back(self, h: Harness) -> None:
        """A step limited to 1 at once whose attempt's worker stops: the attempt is lost,
        its slot given back, and the next attempt (and later runs) get it."""
        if not self.serve:
            pytest.skip("needs a serving runtime in the test's own process")
        tag = _tag()
        other = Runtime(h.make_world())
        await other.start()
        try:
            run_id = await other.start_run(w.gated_one_flow.name, (tag,), {}, None)
            run = wf.get_run(run_id)
            (started,) = await h.wait_event(run, "step_started")
            assert started.data["worker"] == other.worker_id
        finally:
            await other.close()  # the other worker stops, its attempt cut short
        w.GATES[tag] = True
        await h.runtime.handle(Message(h.runtime.new_id(), run_id, "resume"))
        assert await run.result(timeout=30) == 2  # the lost attempt counted
        attempts = [e.data["attempt"] for e in await run.events() if e.kind == "step_started"]
        assert attempts == [1, 2]
        again = await wf.start(w.gated_one_flow, tag)  # the slot is free: not leaked
        assert await again.result(timeout=30) == 1

    @conformance
    async def test_throttle_makes_one_run_per_window(self, h: Harness) -> None:
        """Starts within a throttle's window return the window's run (also when they race);
        the first start after the window makes a new one; other keys are apart."""
        tag = _tag()
        throttle = wf.Throttle("10s", key=tag)
        first = await wf.start(w.synced, tag, 1, throttle=throttle)
        again = await wf.start(w.synced, tag, 2, throttle=throttle)
        racing = await asyncio.gather(
            *(wf.start(w.synced, tag, 3 + i, throttle=throttle) for i in range(5))
        )
        assert {again.id, *(r.id for r in racing)} == {first.id}
        other_key = await wf.start(w.synced, tag, 9, throttle=wf.Throttle("10s", key=tag + "x"))
        assert other_key.id != first.id
        assert await first.result(timeout=10) == 1  # the arguments of the start that made it
        assert await other_key.result(timeout=10) == 9
        h.advance("11s")
        later = await wf.start(w.synced, tag, 7, throttle=throttle)
        assert later.id != first.id
        assert await later.result(timeout=10) == 7
        with pytest.raises(ValueError, match="window"):
            await wf.start(w.synced, tag, 1, throttle="0s")
        with pytest.raises(ValueError, match="10x"):
            await wf.start(w.synced, tag, 1, throttle="10x")
        with pytest.raises(TypeError, match="key"):
            wf.Throttle("1s", key=1.5)  # type: ignore[arg-type]

    @conformance
    async def test_bad_limits_are_clear_errors(self, h: Harness) -> None:
        """Bad limits fail at definition; a key function that raises fails wf.start (no
        run is made) or, for a step, fails that step with the reason; nothing is lost."""
        for bad, error in [
            (-1, ValueError),
            (0, ValueError),
            (1.5, TypeError),
            (True, TypeError),
            ("3", TypeError),
        ]:
            with pytest.raises(error, match="concurrency"):
                wf.workflow(concurrency=bad)  # type: ignore[call-overload]
            with pytest.raises(error, match="concurrency"):
                wf.step(concurrency=bad)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="-5"):
            wf.Limit(-5)
        with pytest.raises(TypeError, match="key"):
            wf.Limit(2, key="customer_id")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name"):
            wf.Queue("", concurrency=1)
        for rate in ["10/x", "0/s", "ten/s", "10", "", "-3/s", "5/0s", "10/s/s"]:
            with pytest.raises(ValueError, match="rate_limit") as info:
                wf.step(rate_limit=rate)
            assert repr(rate) in str(info.value)
        with pytest.raises(TypeError, match="rate_limit"):
            wf.step(rate_limit=10)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="key"):
            wf.step(key=lambda x: x)
        tag = _tag()
        with pytest.raises(ValueError, match=r"limits\.picky.*KeyError.*no-such-field"):
            await wf.start(w.picky, tag, "raise")
        with pytest.raises(TypeError, match=r"limits\.picky.*str or an int.*list"):
            await wf.start(w.picky, tag, "list")
        page = await wf.list_runs(workflow=w.picky.name)
        assert [r for r in page.runs if r.status == "pending"] == []  # no run was made
        run = await wf.start(w.picky, tag, "good")
        assert await run.result(timeout=10) == f"{tag}:good"
        bad_step = await wf.start(w.calls_keyed_badly, tag, "raise")
        message = await bad_step.result(timeout=10)
        assert "limits.keyed_badly" in message and "no-such-field" in message
        good_step = await wf.start(w.calls_keyed_badly, tag, "fine")
        assert await good_step.result(timeout=10) == "fine"
