"""The World conformance suite: the same workflows, events and results on every World.

A World's test module subclasses :class:`WorldConformance` and provides one
fixture, ``make_world``: a callable that returns a *new* World instance over
the *same* storage each time it is called (a restart), all sharing one
``wf.VirtualClock``::

    class TestLocalWorld(WorldConformance):
        @pytest.fixture
        def make_world(self, tmp_path):
            clock = wf.VirtualClock()
            return lambda: LocalWorld(tmp_path, clock=clock)

    class TestLocalWorldReplay(TestLocalWorld):
        always_replay = True   # drop the warm cache at every step: replay always
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest

import worldflow as wf
from worldflow._runtime import Runtime
from worldflow._state import RunState
from worldflow._world import Message, Outgoing, World

from . import _workflows as w
from ._conformance import _scale
from ._conformance import conformance as conformance  # re-exported: mixins used it from here
from ._harness import DuplicatingWorld, Harness, chaotic, http_call, normalized, replay_log
from ._suite_children import ChildrenConformance
from ._suite_flow import FlowConformance  # it imports conformance from here: bound above
from ._suite_limits import LimitsConformance
from ._suite_remote import RemoteConformance
from ._suite_streams import StreamsConformance

__all__ = ["WorldConformance"]

Body = Callable[[Any, Harness], Awaitable[None]]


def _tag() -> str:
    return uuid.uuid4().hex[:12]


class WorldConformance(
    FlowConformance, StreamsConformance, LimitsConformance, ChildrenConformance, RemoteConformance
):
    """Subclass and provide the ``make_world`` fixture (see the module docstring)."""

    always_replay: ClassVar[bool] = False
    timeout: ClassVar[float] = 30.0
    #: False: the test's process is a client and the World's own host executes runs
    #: (tests that need a serving runtime in this process are skipped).
    serve: ClassVar[bool] = True
    #: The harness each test opens (a World's tests may give a subclass, e.g. one whose
    #: restart also restarts the World's host).
    harness_class: ClassVar[type[Harness]] = Harness

    def _needs_a_serving_test_process(self) -> None:
        if not self.serve:
            pytest.skip("needs a serving runtime in the test's own process")

    @pytest.fixture
    def make_world(self) -> Callable[[], World]:
        raise NotImplementedError("a World's test class provides the make_world fixture")

    # -- the seed's three examples ----------------------------------------------
    @conformance
    async def test_hail_ride(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.hail_ride, tag, "req-1")
        result = await run.result(timeout=10)
        assert result == {
            "confirmation": "notified rider-of-req-1",
            "receipt": "rider-of-req-1 with driver-7",
        }
        for step in ("validate", "assign", "notify", "receipt"):
            assert w.CALLS[f"{tag}:{step}"] == 1, step
        assert await run.status() == "completed"
        kinds = [e.kind for e in await run.events()]
        assert kinds[:3] == ["run_created", "run_started", "step_scheduled"]
        assert kinds.count("step_completed") == 4 and kinds[-1] == "run_completed"
        replay_log(await run.events())

    @conformance
    async def test_loyalty_reward_sleeps_three_days(self, h: Harness) -> None:
        run = await wf.start(w.offer_loyalty_reward, "rider-9")
        (started,) = await h.wait_event(run, "sleep_started")
        created = (await run.events())[0].at
        assert started.data["until"] == pytest.approx(created + 3 * 86400, abs=1)
        assert await run.status() == "running"
        h.advance("2d")
        await asyncio.sleep(0.05)
        assert await run.status() == "running"
        h.advance("1d")
        assert await run.result(timeout=10) == {"rider_id": "rider-9", "reward": "Ride Credit"}

    @conformance
    async def test_payment_webhook(self, h: Harness) -> None:
        run = await wf.start(w.validate_payment_method, "ride-3")
        result = await run.result(timeout=10)
        assert result == {
            "ride_id": "ride-3",
            "status": "approved",
            "method": "POST",
            "content_type": "application/json",
        }

    # -- steps in sequence and in parallel ------------------------------------------
    @conformance
    async def test_sequential_steps_run_once_each(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.sequential, tag, 20)
        assert await run.result(timeout=10) == sum(range(20))
        assert w.CALLS[f"{tag}:add"] == 20
        events = await run.events()
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        replay_log(events)

    @conformance
    async def test_parallel_steps_with_gather(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.fan_out, tag, 10)
        assert await run.result(timeout=10) == [i * i for i in range(10)]
        assert w.CALLS[f"{tag}:multiply"] == 10
        state = RunState.from_events(run.id, await run.events())
        assert [s.name for s in state.steps.values()] == [w.multiply.name] * 10

    @conformance
    async def test_unawaited_step_still_runs(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.fire_and_forget, tag)
        assert await run.result(timeout=10) == "done"
        await asyncio.sleep(0.05)
        assert w.CALLS[f"{tag}:add"] == 2

    @conformance
    async def test_create_task_in_workflow(self, h: Harness) -> None:
        run = await wf.start(w.with_tasks, _tag())
        assert await run.result(timeout=10) == [100, 101, 102]

    # -- retries and errors ----------------------------------------------------------
    @conformance
    async def test_retry_until_success_with_stable_step_id(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.retrying, tag, 2)
        assert await run.result(timeout=10) == "ok after 3"
        attempts = w.ATTEMPTS[tag]
        assert [a for _, a in attempts] == [1, 2, 3]
        assert len({step_id for step_id, _ in attempts}) == 1
        kinds = [e.kind for e in await run.events()]
        assert kinds.count("step_retrying") == 2 and kinds.count("step_started") == 3

    @conformance
    async def test_detail_shows_every_attempt_and_list_runs_finds_the_run(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.retrying, tag, 2)
        await run.result(timeout=10)
        detail = await run.detail()
        assert detail.status == "completed" and detail.output == "ok after 3"
        assert detail.input == {"args": [tag, 2], "kwargs": {}}
        (step,) = await run.steps()
        assert step.status == "completed" and step.id == w.ATTEMPTS[tag][0][0]
        assert [a.outcome for a in step.attempts] == ["retried", "retried", "completed"]
        assert step.attempts[0].error is not None
        assert "out of stock (attempt 1)" in step.attempts[0].error["message"]
        page = await wf.list_runs(workflow=w.retrying, status="completed", limit=1000)
        assert run.id in {info.id for info in page.runs}
        assert all(i.workflow == w.retrying.name and i.status == "completed" for i in page.runs)

    @conformance
    async def test_wake_ends_a_sleep_early_once(self, h: Harness) -> None:
        run = await wf.start(w.offer_loyalty_reward, "rider-w")
        await h.wait_event(run, "sleep_started")
        await run.wake()
        assert await run.result(timeout=10) == {"rider_id": "rider-w", "reward": "Ride Credit"}
        fired = [e for e in await run.events() if e.kind == "sleep_fired"]
        assert len(fired) == 1 and fired[0].data["early"] is True
        (sleep,) = (await run.detail()).waits
        assert sleep.early and sleep.ended_at is not None and sleep.until is not None
        assert sleep.ended_at < sleep.until

    @conformance
    async def test_retries_exhausted_raise_original_class(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.retrying_caught, tag, 10)
        assert await run.result(timeout=10) == "caught InventoryError: out of stock (attempt 4)"
        assert w.CALLS[f"{tag}:flaky"] == 4  # max_retries=3: four attempts

        run = await wf.start(w.retrying, _tag(), 10)
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=10)
        assert info.value.error_type == "worldflow.testing._workflows.InventoryError"
        assert "out of stock (attempt 4)" in info.value.message
        assert "InventoryError" in str(info.value) and "out of stock" in str(info.value)

    @conformance
    async def test_a_step_error_comes_back_with_its_attributes(self, h: Harness) -> None:
        run = await wf.start(w.declined, 51)
        assert await run.result(timeout=10) == {
            "message": "declined with code 51: insufficient funds",
            "code": 51,
            "reason": "insufficient funds",
        }

    @conformance
    async def test_fatal_error_is_not_retried(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.fatal_workflow, tag)
        assert await run.result(timeout=10) == "fatal: card declined"
        assert w.CALLS[f"{tag}:fatal"] == 1

    @conformance
    async def test_retryable_error_sets_the_delay(self, h: Harness) -> None:
        run = await wf.start(w.rate_limited_workflow, _tag())
        (retrying,) = await h.wait_event(run, "step_retrying")
        assert retrying.data["retry_at"] - retrying.at == pytest.approx(30)
        h.advance("29s")
        await asyncio.sleep(0.05)
        assert await run.status() == "running"
        h.advance("1s")
        assert await run.result(timeout=10) == "through"

    @conformance
    async def test_exponential_backoff_delays(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.exhausted, tag)
        delays = []
        for attempt in range(1, 4):
            retrying = (await h.wait_event(run, "step_retrying", attempt))[-1]
            delays.append(retrying.data["retry_at"] - retrying.at)
            h.advance(delays[-1])
        assert delays == pytest.approx([1.0, 3.0, 9.0])
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=10)
        assert info.value.error_type == "ValueError"
        assert w.CALLS[f"{tag}:fails"] == 4

    @conformance
    async def test_step_timeout_counts_as_a_failed_attempt(self, h: Harness) -> None:
        run = await wf.start(w.timeout_workflow, _tag())
        assert await run.result(timeout=10) == "fast enough"
        (retrying,) = [e for e in await run.events() if e.kind == "step_retrying"]
        assert retrying.data["error"]["type"] == "TimeoutError"

    @conformance
    async def test_failed_workflow_reports_type_and_message(self, h: Harness) -> None:
        run = await wf.start(w.failing_workflow, "boom")
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=10)
        assert info.value.error_type.endswith("InventoryError")
        assert info.value.message == "boom"
        assert await run.status() == "failed"

    # -- metadata -------------------------------------------------------------------
    @conformance
    async def test_metadata_and_deterministic_helpers(self, h: Harness) -> None:
        run = await wf.start(w.metadata_workflow)
        result = await run.result(timeout=10)
        assert result["run_id"] == run.id
        assert result["workflow_name"] == w.metadata_workflow.name
        assert result["step"]["run_id"] == run.id and result["step"]["attempt"] == 1
        assert run.id in result["step"]["step_id"]
        assert result["started_at"].tzinfo is not None
        assert result["now"] >= result["started_at"]
        assert 0 <= result["random"] < 1 and result["uuid"].version == 4
        replay_log(await run.events())  # random and uuid4 replay to the same values

    # -- sleeping -----------------------------------------------------------------------
    @conformance
    async def test_sleep_forms(self, h: Harness) -> None:
        for duration, seconds in [("500ms", 0.5), (2, 2), (dt.timedelta(minutes=5), 300)]:
            run = await wf.start(w.sleeper, duration)
            (started,) = await h.wait_event(run, "sleep_started")
            assert started.data["until"] - started.at == pytest.approx(seconds)
            h.advance(seconds)
            assert await run.result(timeout=10) == "awake"
        when = dt.datetime.fromtimestamp(h.clock.now() + 3600, dt.UTC)
        until = await wf.start(w.sleep_until, when)
        await h.wait_event(until, "sleep_started")
        h.advance(3600.001)  # a datetime has microseconds; the clock's float has more digits
        assert await until.result(timeout=10) >= when

    @conformance
    async def test_bad_duration_fails_the_run_quoting_it(self, h: Harness) -> None:
        run = await wf.start(w.sleeper, "3x")
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=10)
        assert info.value.error_type == "ValueError" and "'3x'" in info.value.message

    @conformance
    async def test_asyncio_sleep_is_durable(self, h: Harness) -> None:
        run = await wf.start(w.asyncio_sleeper, 60)
        await h.wait_event(run, "sleep_started")
        h.advance("60s")
        assert await run.result(timeout=10) == pytest.approx(60)

    # -- hooks and webhooks ---------------------------------------------------------------
    @conformance
    async def test_hook_one_payload(self, h: Harness) -> None:
        token = f"approve:{_tag()}"
        run = await wf.start(w.one_hook, token)
        await h.wait_event(run, "hook_created")
        with pytest.raises(wf.HookNotFound):
            await wf.resume_hook("no-such-token", 1)
        resumed = await wf.resume_hook(token, {"ok": True})
        assert resumed.id == run.id
        assert await run.result(timeout=10) == {"ok": True}
        with pytest.raises(wf.HookNotFound):  # the run ended: its hooks are gone
            await wf.resume_hook(token, {"ok": False})

    @conformance
    async def test_a_hook_token_belongs_to_one_live_run(self, h: Harness) -> None:
        token = f"approve:{_tag()}"
        first = await wf.start(w.hook_conflict, token)
        await h.wait_event(first, "hook_created")
        second = await wf.start(w.hook_conflict, token)
        assert await second.result(timeout=10) == f"conflict: {first.id}"
        (failed,) = [e for e in await second.events() if e.kind == "hook_failed"]
        assert failed.data["error"]["type"] == "worldflow.HookConflict"
        await wf.resume_hook(token, "yes")  # still the first run's
        assert await first.result(timeout=10) == "yes"
        third = await wf.start(w.hook_conflict, token)  # the first has ended: free again
        await h.wait_event(third, "hook_created")
        await wf.resume_hook(token, "again")
        assert await third.result(timeout=10) == "again"

    @conformance
    async def test_hook_several_payloads_in_order(self, h: Harness) -> None:
        token = _tag()
        run = await wf.start(w.many_payloads, token, 4)
        await h.wait_event(run, "hook_created")
        for i in range(4):
            await wf.resume_hook(token, i)
        assert await run.result(timeout=10) == [0, 1, 2, 3]

    @conformance
    async def test_hook_payloads_keep_their_order_whatever_the_queue_does(self, h: Harness) -> None:
        await h.close()
        inner = h.make_world
        h.make_world = lambda: chaotic(inner(), max_delay=0.25, duplicate=True)
        await h.restart()
        token = _tag()
        run = await wf.start(w.many_payloads, token, 6)
        await h.wait_event(run, "hook_created")
        for i in range(6):
            await wf.resume_hook(token, i)
        assert await run.result(timeout=20) == list(range(6))
        received = [e.data.get("n") for e in await run.events() if e.kind == "hook_received"]
        assert received == [1, 2, 3, 4, 5, 6]

    @conformance
    async def test_payloads_wait_for_the_workflow(self, h: Harness) -> None:
        token = _tag()
        run = await wf.start(w.hook_before_await, _tag(), token)
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook(token, "first")
        await wf.resume_hook(token, "second")
        await h.wait_event(run, "hook_received", 2)
        h.advance("1h")
        assert await run.result(timeout=10) == ["first", "second"]

    @conformance
    async def test_wait_for_hook_times_out(self, h: Harness) -> None:
        run = await wf.start(w.hook_with_timeout, _tag(), 60)
        await h.wait_event(run, "sleep_started")
        h.advance("60s")
        assert await run.result(timeout=10) == "timed out"

    @conformance
    async def test_asyncio_timeout_is_durable(self, h: Harness) -> None:
        run = await wf.start(w.hook_with_asyncio_timeout, _tag(), 30)
        (started,) = await h.wait_event(run, "sleep_started")
        assert started.data["until"] - started.at == pytest.approx(30)
        h.advance("30s")
        assert await run.result(timeout=10) == "timed out"
        token = _tag()
        run = await wf.start(w.hook_with_asyncio_timeout, token, 30)
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook(token, "in time")
        assert await run.result(timeout=10) == "in time"

    @conformance
    async def test_wait_for_hook_arrives_in_time(self, h: Harness) -> None:
        token = _tag()
        run = await wf.start(w.hook_with_timeout, token, 60)
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook(token, "made it")
        assert await run.result(timeout=10) == "made it"

    @conformance
    async def test_race_hook_against_sleep(self, h: Harness) -> None:
        run = await wf.start(w.race_hook_and_sleep, _tag())
        await h.wait_event(run, "sleep_started")
        h.advance("1d")
        assert await run.result(timeout=10) == "timer"
        token = _tag()
        run = await wf.start(w.race_hook_and_sleep, token)
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook(token, None)
        assert await run.result(timeout=10) == "hook"

    @conformance
    async def test_hook_as_a_task_and_with_wait_for(self, h: Harness) -> None:
        token = _tag()
        run = await wf.start(w.hook_as_task, token)
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook(token, "one")
        await wf.resume_hook(token, "two")
        assert await run.result(timeout=10) == ["one", "two", False]

    @conformance
    async def test_webhook(self, h: Harness) -> None:
        run = await wf.start(w.webhook_echo)
        (created,) = await h.wait_event(run, "hook_created")
        url = created.data["url"]
        assert created.data["token"] in url
        missing = url.replace(created.data["token"], "not-a-token")
        status, _ = await http_call("POST", missing, b"{}")
        assert status == 404
        status, _ = await http_call(
            "POST", url, b'{"paid": 12}', {"Content-Type": "application/json"}
        )
        assert status == 202
        result = await run.result(timeout=10)
        assert result == {"method": "POST", "body": '{"paid": 12}', "json": {"paid": 12}}

    @conformance
    async def test_resume_hook_on_a_webhook_sends_a_request(self, h: Harness) -> None:
        """``wf.resume_hook`` (``worldflow hooks resume``) on a webhook: the workflow gets
        the request its URL would have received, the payload as its JSON body."""
        run = await wf.start(w.webhook_echo)
        (created,) = await h.wait_event(run, "hook_created")
        with pytest.raises(TypeError, match="is a webhook"):
            await wf.resume_hook(created.data["token"], {"at": dt.datetime.now(dt.UTC)})
        await wf.resume_hook(created.data["token"], {"paid": 12, "note": "é"})
        result = await run.result(timeout=10)
        assert result == {
            "method": "POST",
            "body": '{"paid": 12, "note": "é"}',
            "json": {"paid": 12, "note": "é"},
        }

    @conformance
    async def test_malformed_webhook_body_fails_clearly(self, h: Harness) -> None:
        run = await wf.start(w.webhook_echo)
        (created,) = await h.wait_event(run, "hook_created")
        status, _ = await http_call("POST", created.data["url"], b"not json")
        assert status == 202
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=10)
        assert info.value.error_type == "ValueError"
        assert "not valid JSON" in info.value.message

    # -- starting, cancelling, bad input --------------------------------------------------------
    @conformance
    async def test_idempotent_start(self, h: Harness) -> None:
        tag = _tag()
        run_id = f"ride-{tag}"
        first = await wf.start(w.hail_ride, tag, "r", id=run_id)
        second = await wf.start(w.hail_ride, tag, "r", id=run_id)
        assert first.id == second.id == run_id
        await first.result(timeout=10)
        third = await wf.start(w.hail_ride, tag, "r", id=run_id)
        assert await third.result(timeout=10) == await first.result()
        assert w.CALLS[f"{tag}:validate"] == 1
        with pytest.raises(ValueError, match="already belongs"):
            await wf.start(w.sequential, tag, 1, id=run_id)

    @conformance
    async def test_cancel_reaches_the_workflow(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.cancellable, tag)
        await h.wait_event(run, "sleep_started")
        await run.cancel()
        with pytest.raises(wf.RunCancelled):
            await run.result(timeout=10)
        assert await run.status() == "cancelled"
        assert w.CALLS[f"{tag}:cleanup"] == 1
        await run.cancel()  # cancelling an ended run changes nothing
        assert await run.status() == "cancelled"

    @conformance
    async def test_bad_input(self, h: Harness) -> None:
        with pytest.raises(TypeError, match=r"threading\.Event"):
            await wf.start(w.echo, threading.Event())
        with pytest.raises(wf.WorkflowNotFound):
            await wf.start("no.such.workflow")
        with pytest.raises(TypeError, match="cannot be called directly"):
            await w.echo(1)
        with pytest.raises(wf.RunNotFound):
            await wf.get_run("no-such-run").status()
        with pytest.raises(wf.RunNotFound):
            await wf.get_run("no-such-run").result(timeout=1)
        with pytest.raises(TypeError):
            await wf.resume_hook("any", object())

    @conformance
    async def test_unserializable_values_fail_clearly(self, h: Harness) -> None:
        run = await wf.start(w.unserializable_step_result)
        message = await run.result(timeout=10)
        assert message.startswith("SerializationError: ")
        assert "lock" in message and w.returns_a_lock.name in message
        (failed,) = [e for e in await run.events() if e.kind == "step_failed"]
        assert failed.data["attempt"] == 1  # not retried: it would fail the same way
        run = await wf.start(w.unserializable_return)
        with pytest.raises(wf.RunFailed) as info:
            await run.result(timeout=10)
        assert info.value.error_type == "worldflow.SerializationError"
        assert "threading.Event" in info.value.message

    # -- serialization ---------------------------------------------------------------------------
    @conformance
    async def test_serialization_round_trips(self, h: Harness) -> None:
        values = w.sample_values()
        run = await wf.start(w.echo, values)
        result = await run.result(timeout=10)
        assert result == values
        for key, value in values.items():
            assert type(result[key]) is type(value), key

    @conformance
    async def test_registered_types_round_trip(self, h: Harness) -> None:
        run = await wf.start(w.walk, w.Point(0, 5), 3)
        assert await run.result(timeout=10) == [w.Point(i, 5) for i in range(4)]
        replay_log(await run.events())

    # -- determinism -----------------------------------------------------------------------------
    @conformance
    async def test_changed_code_raises_non_determinism_error(self, h: Harness) -> None:
        token = _tag()
        run = await wf.start(w.changing, token)
        await h.wait_event(run, "hook_created")
        await h.restart()  # a cold process, with changed code
        w.VERSION["value"] = 2
        try:
            await wf.resume_hook(token, "go")
            with pytest.raises(wf.RunFailed) as info:
                await run.result(timeout=10)
        finally:
            w.VERSION["value"] = 1
        assert info.value.error_type == "worldflow.NonDeterminismError"
        message = info.value.message
        assert "command #1" in message
        assert w.step_a.name in message and w.step_b.name in message

    @conformance
    async def test_restart_replays_and_finishes(self, h: Harness) -> None:
        tag = _tag()
        token = _tag()
        run = await wf.start(w.hook_before_await, tag, token)
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook(token, 1)
        await h.wait_event(run, "hook_received")
        await h.restart()
        await wf.resume_hook(token, 2)
        await h.wait_event(run, "hook_received", 2)
        h.advance("1h")
        assert await run.result(timeout=10) == [1, 2]

    @conformance
    async def test_finally_blocks_act_only_when_reached(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(w.guarded, tag)
        for count in (1, 2):
            await h.wait_event(run, "sleep_started", count)
            gc.collect()  # a dropped copy of the code must not run its finally block
            h.advance("1s")
        assert await run.result(timeout=10) == "ok"
        gc.collect()
        assert w.CALLS[f"{tag}:cleanup"] == 1
        assert w.CALLS[f"{tag}:add"] == 1

    # -- at-least-once delivery -------------------------------------------------------------------
    @conformance
    async def test_duplicate_delivery_leaves_the_same_log(self, h: Harness) -> None:
        self._needs_a_serving_test_process()
        w.CALLS.clear()
        plain = await self._delivery_scenario(h)
        await h.close()
        w.CALLS.clear()
        inner = h.make_world
        h.make_world = lambda: DuplicatingWorld(inner())
        await h.restart()
        doubled = await self._delivery_scenario(h)
        assert doubled == plain

    @conformance
    async def test_a_chaotic_queue_leaves_the_same_log(self, h: Harness) -> None:
        """Every message sent late by a random delay and twice, and every delivery late
        and twice (``worldflow.testing.chaotic``): the same normalized logs.
        ``WORLDFLOW_CHAOS_DELAY`` sets the longest delay (default 0.1 s;
        ``bench/queue_faults.py`` runs it with 2 s)."""
        self._needs_a_serving_test_process()
        delay = float(os.environ.get("WORLDFLOW_CHAOS_DELAY", "0.1"))
        w.CALLS.clear()
        plain = await self._delivery_scenario(h)
        await h.close()
        w.CALLS.clear()
        inner = h.make_world
        h.make_world = lambda: chaotic(inner(), max_delay=delay, duplicate=True)
        await h.restart()
        assert await self._delivery_scenario(h) == plain

    async def _delivery_scenario(self, h: Harness) -> list[Any]:
        """Runs of every shape (steps, a retry, hooks and a sleep, a cancel, a wake), each
        with a fixed id; their normalized logs."""

        t = 10.0 * _scale()

        async def scenario() -> list[Any]:
            logs = []
            tag, token = "dup", "dup-token"
            run: wf.Run[Any] = await wf.start(w.hail_ride, tag, "r1")
            await run.result(timeout=t)
            logs.append(normalized(await run.events()))
            run = await wf.start(w.hook_before_await, tag, token)
            await h.wait_event(run, "sleep_started", timeout=t)
            await wf.resume_hook(token, "a")
            await wf.resume_hook(token, "b")
            await h.wait_event(run, "hook_received", 2, timeout=t)
            h.advance("1h")
            await run.result(timeout=t)
            logs.append(normalized(await run.events()))
            run = await wf.start(w.retrying, tag, 1)
            await run.result(timeout=t)
            logs.append(normalized(await run.events()))
            run = await wf.start(w.cancellable, tag)
            await h.wait_event(run, "sleep_started", timeout=t)
            await run.cancel()
            with pytest.raises(wf.RunCancelled):
                await run.result(timeout=t)
            logs.append(normalized(await run.events()))
            run = await wf.start(w.offer_loyalty_reward, tag)
            await h.wait_event(run, "sleep_started", timeout=t)
            await run.wake()
            await run.result(timeout=t)
            logs.append(normalized(await run.events()))
            return logs

        return await scenario()

    @conformance
    async def test_two_workers_racing_record_one_result(self, h: Harness) -> None:
        self._needs_a_serving_test_process()
        tag = _tag()
        other = Runtime(h.make_world())
        await other.start()
        try:
            run = await wf.start(w.sequential, tag, 8)

            async def nudge() -> None:
                for _ in range(30):
                    await other.handle(Message(other.new_id(), run.id, "resume"))
                    await asyncio.sleep(0)

            await asyncio.gather(nudge(), nudge())
            assert await run.result(timeout=10) == sum(range(8))
        finally:
            await other.close()
        events = await run.events()
        state = RunState.from_events(run.id, events)  # a valid, densely numbered log
        completed = [e.data["cid"] for e in events if e.kind == "step_completed"]
        assert sorted(completed) == list(range(1, 9))  # one result per step
        assert [e.kind for e in events].count("run_completed") == 1
        assert state.output == sum(range(8))

    @conformance
    async def test_attempt_of_a_stopped_worker_is_run_again(self, h: Harness) -> None:
        self._needs_a_serving_test_process()
        tag = _tag()
        other = Runtime(h.make_world())
        await other.start()
        try:
            run_id = await other.start_run(w.gated_workflow.name, (tag,), {}, None)
            run = wf.get_run(run_id)
            (started,) = await h.wait_event(run, "step_started")
            assert started.data["worker"] == other.worker_id
            # This worker looks while the other is alive: the attempt is not lost.
            await h.runtime.handle(Message(h.runtime.new_id(), run_id, "resume"))
            assert len([e for e in await run.events() if e.kind == "step_started"]) == 1
        finally:
            await other.close()  # the other worker stops, its attempt cut short
        w.GATES[tag] = True
        await h.runtime.handle(Message(h.runtime.new_id(), run_id, "resume"))
        assert await run.result(timeout=10) == 2  # the lost attempt counted
        started_events = [e for e in await run.events() if e.kind == "step_started"]
        assert [e.data["attempt"] for e in started_events] == [1, 2]

    @conformance
    async def test_a_message_that_always_fails_becomes_a_dead_letter(self, h: Harness) -> None:
        """A World with dead letters: a message whose handling fails ``max_deliveries``
        times is set aside with the reason, and a redrive brings it back."""
        self._needs_a_serving_test_process()
        letters = h.runtime.world.dead_letters
        if letters is None:
            pytest.skip("this World keeps no dead letters (it retries for ever)")
        h.runtime.world.max_deliveries = 2
        tag = _tag()
        with w.unregistered(w.echo):  # as if no deployed module defined the workflow
            run = await wf.start(w.echo, tag)
            message = Message(h.runtime.new_id(), run.id, "resume")
            await h.runtime.backend.send([Outgoing(message)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not (
                found := [
                    d for d in await letters.dead_letters(100) if d.message.message.id == message.id
                ]
            ):
                assert loop.time() < deadline, "the message never became a dead letter"
                await asyncio.sleep(0.1)
        (letter,) = found
        assert letter.message.message.run_id == run.id
        assert letter.attempts >= 2
        assert w.echo.name in letter.reason  # says which workflow is missing
        assert await run.status() == "pending"  # the run is untouched, not failed
        assert await letters.redrive([letter.id]) == 1
        assert await run.result(timeout=10) == tag  # the workflow is known again
        remaining = [d for d in await letters.dead_letters(100) if d.id == letter.id]
        assert remaining == []
        assert await letters.redrive([letter.id]) == 0  # once only
