"""Conformance tests for flow control and triggers: schedules, typed hooks, signed and
answered webhooks, patches and the workflow logger, on every World (mixed into
:class:`~worldflow.testing.WorldConformance`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest

import worldflow as wf
from worldflow import schedules as _schedules
from worldflow._runtime import Runtime

from . import _workflows_flow as f
from ._harness import Harness, http_call
from ._suite import conformance  # defined before the suite imports this module

__all__ = ["FlowConformance"]


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        await asyncio.sleep(0.02)


def _kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


def _github_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(f.SECRET.encode(), body, hashlib.sha256).hexdigest()


class FlowConformance:
    """Schedules, typed hooks, signed webhooks, patches, the workflow logger."""

    serve: ClassVar[bool]

    def _needs_a_serving_test_process(self) -> None:  # pragma: no cover - the suite's
        raise NotImplementedError

    @staticmethod
    def _needs_webhook_urls(h: Harness) -> None:
        """Skip on a World with no HTTP face (no public URL): its webhooks have no URL."""
        if h.world.public_url is None:
            pytest.skip("this World has no public URL for webhooks")

    # -- schedules -------------------------------------------------------------------
    @conformance
    async def test_a_schedule_fires_each_of_seven_days_once_with_three_workers(
        self, h: Harness
    ) -> None:
        """09:30 in London, every day: seven days on the virtual clock, three runtimes
        serving the same World; one run per day, with the day's time as its argument."""
        self._needs_a_serving_test_process()
        london = ZoneInfo("Europe/London")
        now = dt.datetime.fromtimestamp(h.clock.now(), london)
        first = now.replace(hour=9, minute=30, second=0, microsecond=0)
        if first <= now:
            first += dt.timedelta(days=1)
        times = [(first + dt.timedelta(days=i)).astimezone(dt.UTC) for i in range(7)]
        with f.scheduled():
            others = [Runtime(h.make_world()) for _ in range(2)]
            for other in others:
                await other.start()  # each sets up the chain's next tick, as a host does
            try:
                await _schedules.ensure(h.runtime)
                for when in times:
                    # A little past the time: the tick fires on time (within late_after).
                    h.clock.set(when.timestamp() + 5)
                    run = wf.get_run(_schedules.run_id_for(f.daily.name, when.timestamp()))

                    async def ran(run: wf.Run[Any] = run) -> bool:
                        try:
                            return await run.status() == "completed"
                        except wf.RunNotFound:
                            return False

                    await _until(ran, f"the run of {when.isoformat()}")
                    assert await run.result(timeout=5) == when.isoformat()
            finally:
                for other in others:
                    await other.close()
        page = await wf.list_runs(workflow=f.daily.name, limit=100)
        assert sorted(r.id for r in page.runs) == sorted(
            _schedules.run_id_for(f.daily.name, t.timestamp()) for t in times
        )
        for info in page.runs:
            events = await wf.get_run(info.id).events()
            assert _kinds(events).count("run_started") == 1, info.id

    # -- typed hooks -----------------------------------------------------------------
    @conformance
    async def test_a_typed_hook_refuses_a_bad_payload_at_resume(self, h: Harness) -> None:
        token = f"approve:{uuid.uuid4().hex[:8]}"
        run = await wf.start(f.typed_approval, token)
        await h.wait_event(run, "hook_created")
        with pytest.raises(wf.InvalidHookPayload, match="approved"):
            await f.approval.resume(token, {"approved": "not a bool", "by": "ann"})
        with pytest.raises(wf.InvalidHookPayload):
            await f.approval.resume(token, {"by": "ann"})  # a field missing
        assert await run.status() == "running"
        await f.approval.resume(token, {"approved": True, "by": "ann"})
        assert await run.result(timeout=10) == {"approved": True, "by": "ann"}
        assert _kinds(await run.events()).count("hook_received") == 1

    @conformance
    async def test_a_typed_webhook_answers_422_to_a_body_that_does_not_fit(
        self, h: Harness
    ) -> None:
        self._needs_webhook_urls(h)
        run = await wf.start(f.typed_webhook)
        (created,) = await h.wait_event(run, "hook_created")
        url = created.data["url"]
        headers = {"Content-Type": "application/json"}
        status, body = await http_call("POST", url, b'{"approved": 3, "by": "bo"}', headers)
        assert status == 422, body
        assert "approved" in json.loads(body)["error"]
        status, _ = await http_call("POST", url, b'{"approved": false, "by": "bo"}', headers)
        assert status == 202
        assert await run.result(timeout=10) == {"approved": False, "by": "bo"}
        assert _kinds(await run.events()).count("hook_received") == 1

    # -- signed and answered webhooks --------------------------------------------------
    @conformance
    async def test_only_signed_requests_are_recorded_and_answered_as_asked(
        self, h: Harness
    ) -> None:
        self._needs_webhook_urls(h)
        run = await wf.start(f.signed_webhook)
        (created,) = await h.wait_event(run, "hook_created")
        url = created.data["url"]
        assert created.data["token"].startswith("spec.")
        one, two = b'{"n": 1}', b'{"n": 2}'
        refused = [
            {},  # no signature
            {"X-Hub-Signature-256": "sha256=" + "0" * 64},  # a wrong one
            {"X-Hub-Signature-256": "garbage \u2603".encode().decode("latin-1")},
            {"X-Hub-Signature-256": _github_signature(two)},  # another body's
        ]
        for headers in refused:
            status, body = await http_call("POST", url, one, headers)
            assert status == 401, (headers, body)
        assert _kinds(await run.events()).count("hook_received") == 0
        for payload in (one, two):
            status, body = await http_call(
                "POST", url, payload, {"X-Hub-Signature-256": _github_signature(payload)}
            )
            assert (status, json.loads(body)) == (200, {"thanks": True})
        assert await run.result(timeout=10) == [{"n": 1}, {"n": 2}]
        assert _kinds(await run.events()).count("hook_received") == 2

    @conformance
    async def test_a_webhook_answered_by_its_workflow(self, h: Harness) -> None:
        self._needs_webhook_urls(h)
        run = await wf.start(f.answered_webhook)
        (created,) = await h.wait_event(run, "hook_created")
        url = created.data["url"]
        for n in (3, 4):
            status, body = await http_call("POST", url, json.dumps({"n": n}).encode())
            assert (status, json.loads(body)) == (201, {"n": n, "doubled": 2 * n})
        assert await run.result(timeout=10) == [3, 4]
        events = await run.events()
        answers = [e for e in events if e.kind == "step_scheduled"]
        assert [e.data["name"] for e in answers].count("worldflow.webhook_respond") == 2

    @conformance
    async def test_a_webhook_not_answered_in_time_gets_the_default(self, h: Harness) -> None:
        self._needs_webhook_urls(h)
        run = await wf.start(f.unanswered_webhook)
        (created,) = await h.wait_event(run, "hook_created")
        status, body = await http_call("POST", created.data["url"], b"{}")
        assert status == 202
        assert json.loads(body) == {"ok": True, "run_id": run.id, "responded": False}
        await h.wait_event(run, "sleep_started", count=2)
        h.advance("1h")
        assert await run.result(timeout=10) == "answered late"

    # -- debounced starts ----------------------------------------------------------------
    @conformance
    async def test_a_debounced_burst_runs_only_its_last_start(self, h: Harness) -> None:
        """Three starts half a second apart within a 2 s window: only the last runs (the
        others end cancelled); another key is apart; a start after a quiet window runs.
        (Short windows: through a real queue a durable timer also waits in real time.)"""
        if not self.serve:  # the aws world runs it through its SQS poller instead
            pytest.skip("through a Lambda host each timer is a real SQS delay: over a minute")
        tag = uuid.uuid4().hex[:8]
        quiet = wf.Debounce("2s", key=tag)
        burst = []
        for n in range(3):
            burst.append(await wf.start(f.debounce_target, tag, n, debounce=quiet))
            await h.wait_event(burst[-1], "sleep_started", timeout=30)
            h.advance("0.5s")
        other = await wf.start(f.debounce_target, tag, 9, debounce=wf.Debounce("2s", key="x" + tag))
        await h.wait_event(other, "sleep_started", timeout=30)
        h.advance("3s")
        assert await burst[-1].result(timeout=20) == f"{tag}:2"
        assert await other.result(timeout=20) == f"{tag}:9"
        for run in burst[:-1]:
            with pytest.raises(wf.RunCancelled):
                await run.result(timeout=20)
            assert await run.children() == []  # the workflow never ran for them
        (child,) = await burst[-1].children()
        assert await child.status() == "completed"
        later = await wf.start(f.debounce_target, tag, 5, debounce=quiet)
        await h.wait_event(later, "sleep_started", timeout=30)
        h.advance("3s")
        assert await later.result(timeout=20) == f"{tag}:5"  # the window had passed quietly
        with pytest.raises(ValueError, match="window"):
            await wf.start(f.debounce_target, tag, 1, debounce="0s")
        with pytest.raises(ValueError, match="together"):
            await wf.start(f.debounce_target, tag, 1, debounce="1s", throttle="1s")
        with pytest.raises(TypeError, match="key"):
            wf.Debounce("1s", key=1.5)  # type: ignore[arg-type]

    # -- patches -----------------------------------------------------------------------
    @conformance
    async def test_a_new_run_takes_the_patched_branch_once(self, h: Harness) -> None:
        run = await wf.start(f.patched_pricing, 21)
        assert await run.result(timeout=10) == 43
        kinds = _kinds(await run.events())
        assert kinds.count("patch_marked") == 1
        assert kinds.count("step_completed") == 2
        marked = next(e for e in await run.events() if e.kind == "patch_marked")
        assert marked.data["name"] == "conformance-new-pricing"

    # -- the workflow logger -------------------------------------------------------------
    @conformance
    async def test_the_workflow_logger_writes_each_line_once(self, h: Harness) -> None:
        self._needs_a_serving_test_process()  # the lines are written where runs execute
        tag = uuid.uuid4().hex[:8]
        lines: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if tag in record.getMessage() or record.getMessage().startswith("conformance"):
                    lines.append(record)

        logger = logging.getLogger("worldflow.workflow")
        handler, level = Keep(logging.INFO), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            run = await wf.start(f.logged, tag, 4)
            assert await run.result(timeout=10) == 6
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        mine = [r.getMessage() for r in lines if tag in r.getMessage()]
        assert mine == [f"{tag} before {i}" for i in range(4)] + [f"{tag} done 6"]
        done = next(r for r in lines if r.getMessage() == f"{tag} done 6")
        assert done.run_id == run.id  # type: ignore[attr-defined]
