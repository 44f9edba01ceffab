"""Conformance tests for steps that run across the fleet (``@wf.step(remote=True)``,
:mod:`worldflow._remote`), mixed into :class:`~worldflow.testing.WorldConformance`.

``remote_steps = True`` on a World's test class runs the *whole* suite with every
step remote (``WORLDFLOW_REMOTE_STEPS=1`` while each test runs), except steps whose
options say ``remote=False``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import pytest

import worldflow as wf
from worldflow import _remote
from worldflow._remote import ENV
from worldflow._runtime import Runtime
from worldflow._world import Delivery, Disposition, Message, Outgoing

from . import _workflows_remote as r
from ._conformance import conformance
from ._harness import Harness, replay_log

__all__ = ["RemoteConformance"]

#: Tests about an attempt held by one named worker: with every step remote no worker
#: holds an attempt (their remote counterpart is below).
_INLINE_ONLY = {"test_attempt_of_a_stopped_worker_is_run_again"}


class RemoteConformance:
    """Remote steps: fan-out, retries and failures, duplicate step messages, leases."""

    serve: ClassVar[bool]
    #: True: run every test of the suite with every step remote.
    remote_steps: ClassVar[bool] = False

    def _needs_a_serving_test_process(self) -> None:  # pragma: no cover - the suite's
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _remote_switch(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if self.remote_steps:
            if request.node.originalname in _INLINE_ONLY:
                pytest.skip("about an attempt held by one worker; no worker holds a remote one")
            monkeypatch.setenv(ENV, "1")
        else:
            monkeypatch.delenv(ENV, raising=False)

    @conformance
    async def test_remote_steps_fan_out_as_messages(self, h: Harness) -> None:
        tag = uuid.uuid4().hex[:12]
        run = await wf.start(r.remote_fanout, tag, 24)
        assert await run.result(timeout=20) == sum(i * i for i in range(24))
        events = await run.events()
        started = [e for e in events if e.kind == "step_started"]
        assert len(started) == 24
        assert all(e.data["remote"] is True and e.data["worker"] is None for e in started)
        assert [e.kind for e in events].count("step_completed") == 24
        assert r.CALLS[f"{tag}:square"] == 24  # each attempt ran once
        replay_log(events)

    @conformance
    async def test_inline_and_remote_steps_in_one_run(self, h: Harness) -> None:
        tag = uuid.uuid4().hex[:12]
        run = await wf.start(r.mixed, tag)
        assert await run.result(timeout=10) == [2, 9, 8]
        started = {e.data["cid"]: e.data for e in await run.events() if e.kind == "step_started"}
        assert [bool(started[c].get("remote")) for c in sorted(started)] == [False, True, False]
        assert started[1]["worker"] and started[3]["worker"]  # an inline attempt has its worker
        assert r.CALLS[f"{tag}:inline"] == 2 and r.CALLS[f"{tag}:square"] == 1

    @conformance
    async def test_remote_retries_and_failures_behave_as_inline_ones(self, h: Harness) -> None:
        tag = uuid.uuid4().hex[:12]
        run = await wf.start(r.retried_and_failed, tag)
        result = await run.result(timeout=10)
        assert result == {"attempt": 3, "error": "Declined", "code": 51}
        events = await run.events()
        kinds = [(e.kind, e.data.get("cid"), e.data.get("attempt")) for e in events]
        assert [k for k in kinds if k[1] == 1 and k[0] != "step_scheduled"] == [
            ("step_started", 1, 1),
            ("step_retrying", 1, 1),
            ("step_started", 1, 2),
            ("step_retrying", 1, 2),
            ("step_started", 1, 3),
            ("step_completed", 1, 3),
        ]
        (failed,) = [e for e in events if e.kind == "step_failed"]
        assert failed.data["attempt"] == 2 and failed.data["error"]["type"].endswith("Declined")
        assert "declined with code 51" in failed.data["error"]["message"]
        assert r.CALLS[f"{tag}:flaky"] == 3 and r.CALLS[f"{tag}:declines"] == 2

    @conformance
    async def test_copies_of_a_step_message_record_one_outcome(self, h: Harness) -> None:
        tag = uuid.uuid4().hex[:12]
        run = await wf.start(r.gated_remote, tag)
        await h.wait_event(run, "step_started")
        copies = [
            Outgoing(Message(h.runtime.new_id(), run.id, "step", {"cid": 1, "attempt": 1}))
            for _ in range(3)
        ]
        await h.runtime.backend.send(copies)
        await asyncio.sleep(0.3)
        r.GATES[tag] = True
        assert await run.result(timeout=20) == 1
        await h.runtime.backend.send(copies[:1])  # a late copy: the attempt has ended
        await asyncio.sleep(0.3)
        kinds = [e.kind for e in await run.events()]
        assert kinds.count("step_started") == 1
        assert kinds.count("step_completed") == 1
        assert kinds[-1] == "run_completed"
        replay_log(await run.events())

    @conformance
    async def test_a_process_new_to_the_run_records_the_outcome_itself(self, h: Harness) -> None:
        """A worker that never ran the run takes its step message: it reads the log, runs
        the attempt and appends the outcome at the expected seq, then wakes the run; with
        the run's own worker running the same attempt, one outcome is recorded."""
        self._needs_a_serving_test_process()
        tag = uuid.uuid4().hex[:12]
        other = Runtime(h.make_world())
        await other.start()
        try:
            run = await wf.start(r.gated_remote, tag)
            await h.wait_event(run, "step_started")
            step = Message(other.new_id(), run.id, "step", {"cid": 1, "attempt": 1})
            taken = asyncio.create_task(other.deliver(Delivery(step)))
            await asyncio.sleep(0.2)
            r.GATES[tag] = True
            assert (await asyncio.wait_for(taken, 20)).ack
            assert await run.result(timeout=20) == 1
        finally:
            await other.close()
        events = await run.events()
        (completed,) = [e for e in events if e.kind == "step_completed"]
        assert completed.data["output"] == 1
        assert [e.kind for e in events].count("step_started") == 1
        replay_log(events)

    @conformance
    async def test_a_malformed_step_message_leaves_the_run_alone(self, h: Harness) -> None:
        tag = uuid.uuid4().hex[:12]
        run = await wf.start(r.gated_remote, tag)
        await h.wait_event(run, "step_started")
        bad = [
            Message(h.runtime.new_id(), run.id, "step", {"cid": "one", "attempt": 1}),
            Message(h.runtime.new_id(), run.id, "step", {"cid": 9, "attempt": 1}),
            Message(h.runtime.new_id(), run.id, "step", {"cid": 1, "attempt": 7}),
        ]
        await h.runtime.backend.send([Outgoing(m) for m in bad])
        await asyncio.sleep(0.3)
        r.GATES[tag] = True
        assert await run.result(timeout=20) == 1
        kinds = [e.kind for e in await run.events()]
        assert kinds.count("step_started") == 1 and kinds.count("step_completed") == 1

    @conformance
    async def test_a_lost_remote_attempt_runs_again_after_its_lease(self, h: Harness) -> None:
        """The worker that took the step's message vanished before running the attempt:
        the message that comes back after the attempt's lease has passed finds it lost,
        and the run counts it and runs another, as for an inline attempt."""
        tag = uuid.uuid4().hex[:12]
        dropped: list[Message] = []
        advanced: list[bool] = []
        real = _remote.run_step

        async def vanishing(rt: Any, message: Message, left: Any) -> Disposition:
            if message.data.get("attempt") == 1 and not advanced:
                info = await rt.backend.get_run(message.run_id)
                if info is not None and info.workflow == r.leased_remote.name:
                    dropped.append(message)
                    # Taken by a worker that vanished: the queue delivers it again later.
                    return Disposition.later(0.5, "its worker vanished")
            return await real(rt, message, left)

        _remote.run_step = vanishing
        try:
            run = await wf.start(r.leased_remote, tag)
            (started,) = await h.wait_event(run, "step_started")
            lease = started.data["lease_until"]
            assert lease is not None and started.data["remote"] is True
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not dropped:
                assert loop.time() < deadline, "the step message never came"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            assert await run.status() == "running"  # nothing ran it, nothing recorded
            h.advance("36s")  # past the lease (30 s timeout + 5 s for the message's trip)
            advanced.append(True)  # the message that comes back now finds the lease passed
            assert await run.result(timeout=20) == 2  # the lost attempt counted
        finally:
            _remote.run_step = real
        events = await run.events()
        assert [e.data["attempt"] for e in events if e.kind == "step_started"] == [1, 2]
        assert r.CALLS[f"{tag}:leased"] == 1
        replay_log(events)
