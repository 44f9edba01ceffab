"""The examples in examples/ work: their workflows give the results they promise.

Each test runs an example's workflow on a private local world (in memory, or
in tmp_path) with ``wf.worker(...)``, and checks the result and the event log;
one runs the demo (``python -m examples.hail_ride``) as a user would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

import worldflow as wf
from worldflow._state import RunState
from worldflow.testing import replay, wait_until_asleep
from worldflow.world import World
from worldflow.worlds.local import LocalWorld

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

hail_ride = importlib.import_module("examples.hail_ride")
loyalty_reward = importlib.import_module("examples.loyalty_reward")
payment_webhook = importlib.import_module("examples.payment_webhook")
research_agent = importlib.import_module("examples.research_agent")

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def memory_world(**options: Any) -> LocalWorld:
    # No webhook server: these runs do not need one, and closing it costs time.
    return LocalWorld(":memory:", serve_webhooks=False, **options)


async def fold(handle: wf.Run) -> RunState:
    return RunState.from_events(handle.id, await handle.events())


def kinds(state: RunState) -> list[str]:
    return [step.name.rpartition(".")[2] for step in state.steps.values()]


# -- hail_ride -------------------------------------------------------------------------


@pytest.mark.parametrize("always_replay", [False, True], ids=["warm", "always-replay"])
def test_hail_ride_returns_the_receipt_after_one_retry(always_replay: bool) -> None:
    async def main() -> tuple[str, Any, RunState]:
        async with wf.worker(memory_world(), always_replay=always_replay):
            handle = await wf.start(hail_ride.hail_ride, "req-42")
            receipt = await handle.result(timeout=20)
            return handle.id, receipt, await fold(handle)

    run_id, receipt, state = run(main())
    assert receipt == {
        "receipt_id": f"rcpt-{run_id}:4",  # the step id of create_receipt, command #4
        "rider": "Ana",
        "driver": "Sam",
        "route": "221B Baker Street → King's Cross",
        "fare": Decimal("10.06"),
        "currency": "GBP",
    }
    assert state.workflow == "hail-ride"
    assert kinds(state) == [
        "validate_ride_request",
        "assign_driver",
        "notify_rider",
        "create_receipt",
    ]
    attempts = {
        name: step.attempt for name, step in zip(kinds(state), state.steps.values(), strict=True)
    }
    assert attempts == {
        "validate_ride_request": 1,
        "assign_driver": 2,
        "notify_rider": 1,
        "create_receipt": 1,
    }
    assert all(step.status == "completed" for step in state.steps.values())
    retried = state.steps[2]
    assert retried.error is not None
    assert retried.error["type"].endswith("RetryableError")
    assert "no driver free" in retried.error["message"]


def test_hail_ride_notifies_and_bills_in_parallel() -> None:
    async def main() -> list[wf._world.Event]:
        async with wf.worker(memory_world()):
            handle = await wf.start(hail_ride.hail_ride, "req-43")
            await handle.result(timeout=20)
            return await handle.events()

    events = run(main())
    position = {(e.kind, e.data.get("cid")): i for i, e in enumerate(events)}
    # Both steps of the gather were scheduled and started before either one finished.
    first_done = min(position["step_completed", 3], position["step_completed", 4])
    assert position["step_started", 3] < first_done
    assert position["step_started", 4] < first_done


def test_hail_ride_unknown_request_fails_without_retrying() -> None:
    async def main() -> tuple[wf.RunFailed, RunState]:
        async with wf.worker(memory_world()):
            handle = await wf.start(hail_ride.hail_ride, "req-404")
            with pytest.raises(wf.RunFailed) as failed:
                await handle.result(timeout=20)
            return failed.value, await fold(handle)

    failure, state = run(main())
    assert failure.error_type.endswith("FatalError")
    assert "'req-404' does not exist" in failure.message
    assert kinds(state) == ["validate_ride_request"]
    assert state.steps[1].status == "failed"
    assert state.steps[1].attempt == 1


def test_demo_runs_and_shows_each_step(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env["WORLDFLOW_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "examples.hail_ride"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in ("validate_ride_request", "assign_driver", "notify_rider", "create_receipt"):
        assert step in out
    assert "retried after RetryableError: no driver free" in out
    assert "run completed" in out
    assert "Ana" in out and "10.06" in out
    assert done.stderr == ""
    # The run was stored where WORLDFLOW_DATA_DIR said, and it completed.
    with sqlite3.connect(tmp_path / "data" / "worldflow.sqlite3") as db:
        rows = db.execute("SELECT workflow, status FROM runs").fetchall()
    db.close()
    assert rows == [("hail-ride", "completed")]


# -- loyalty_reward ----------------------------------------------------------------------


def test_loyalty_reward_arrives_after_three_virtual_days(
    wf_world: World, wf_clock: wf.VirtualClock
) -> None:
    """With the pytest plugin's fixtures: a fresh in-memory world on a virtual clock."""
    started = dt.datetime.fromtimestamp(wf_clock.now(), dt.UTC)

    async def main() -> tuple[Any, RunState, dt.datetime]:
        async with wf.worker(wf_world):
            handle = await wf.start(loyalty_reward.offer_loyalty_reward, "rider-7")
            wakes = await wait_until_asleep(handle)
            wf_clock.advance("2d")
            with pytest.raises(TimeoutError):  # still asleep after two days
                await handle.result(timeout=0.2)
            assert await handle.status() == "running"
            wf_clock.advance("1d")
            return await handle.result(timeout=10), await fold(handle), wakes

    reward, state, wakes = run(main())
    assert wakes == pytest.approx(started + dt.timedelta(days=3), abs=dt.timedelta(seconds=1))
    assert reward["rider_id"] == "rider-7"
    assert reward["reward"] == "Ride Credit"
    assert reward["offered_at"] == wakes
    assert state.ended_at is not None and state.started_at is not None
    assert state.ended_at - state.started_at == pytest.approx(3 * 86400)


def test_loyalty_reward_main() -> None:
    assert run(loyalty_reward.main()) == 0


# -- payment_webhook ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ride_id", "status"), [("ride-1", "approved"), ("declined-2", "declined")]
)
def test_payment_webhook_resumes_with_the_providers_verdict(
    tmp_path: Path, ride_id: str, status: str
) -> None:
    async def main() -> tuple[Any, RunState]:
        async with wf.worker(LocalWorld(tmp_path)):
            handle = await wf.start(payment_webhook.validate_payment_method, ride_id)
            return await handle.result(timeout=20), await fold(handle)

    result, state = run(main())
    assert result == {"ride_id": ride_id, "status": status}
    (hook,) = state.hooks.values()
    assert hook.webhook and hook.received == 1
    assert hook.url is not None and hook.url.startswith("http://127.0.0.1:")
    assert kinds(state) == ["request_validation"]
    assert state.steps[2].input == [[ride_id, hook.url], {}]  # the step got the webhook's URL


def test_payment_webhook_main() -> None:
    assert run(payment_webhook.main()) == 0


# -- research_agent ----------------------------------------------------------------------------


def questions(topic: str) -> list[str]:
    # Outside a workflow a step is a plain function call.
    return run(research_agent.plan(topic))


@pytest.mark.parametrize("always_replay", [False, True], ids=["warm", "always-replay"])
def test_research_agent_reports_on_every_sub_question(always_replay: bool) -> None:
    topic = "vector databases"

    async def main() -> tuple[Any, RunState]:
        async with wf.worker(memory_world(), always_replay=always_replay):
            handle = await wf.start(research_agent.research, topic)
            await research_agent.review(handle)
            return await handle.result(timeout=20), await fold(handle)

    outcome, state = run(main())
    assert outcome["status"] == "published"
    assert outcome["by"] == "ana@example.com"
    report = outcome["report"]
    assert report.startswith(f"# {topic}")
    subs = questions(topic)
    assert len(subs) == 4
    headings = [line for line in report.splitlines() if line.startswith("#")]
    assert headings == [f"# {topic}"] + [f"## {question}" for question in subs]
    assert "Approved by ana@example.com" in report
    assert kinds(state) == ["plan", "search", "search", "search", "search", "write_report"]
    searches = [s for s in state.steps.values() if s.name.endswith("search")]
    assert {s.attempt for s in searches} == {1, 2}  # some tool calls were retried, none failed
    assert all(s.status == "completed" for s in state.steps.values())


async def skip_time_until(clock: wf.VirtualClock, handle: wf.Run, kind: str) -> None:
    """Move a virtual clock from one due timer to the next until the log has ``kind``.

    On a virtual clock, retry delays wait for the clock too: the searches'
    retries need it to move.
    """
    for _ in range(1000):
        if any(event.kind == kind for event in await handle.events()):
            return
        due = clock.next_due()
        if due is not None:
            clock.set(due)
        await asyncio.sleep(0.005)
    raise AssertionError(f"no {kind!r} event in the log of {handle.id}")


def test_research_agent_approves_itself_when_nobody_answers() -> None:
    clock = wf.VirtualClock()

    async def main() -> Any:
        async with wf.worker(memory_world(clock=clock)):
            handle = await wf.start(research_agent.research, "llm evals", approval_timeout=3600)
            await skip_time_until(clock, handle, "hook_created")
            clock.advance("59m")
            with pytest.raises(TimeoutError):  # the reviewer still has a minute
                await handle.result(timeout=0.2)
            clock.advance("1m")
            return await handle.result(timeout=20)

    outcome = run(main())
    assert outcome["status"] == "published"
    assert outcome["by"] == "auto-approve"
    assert "No reviewer answered in time" in outcome["report"]


def test_research_agent_stops_when_the_reviewer_rejects() -> None:
    async def main() -> tuple[Any, RunState]:
        async with wf.worker(memory_world()):
            handle = await wf.start(research_agent.research, "cold fusion")
            await research_agent.wait_for_event(handle, "hook_created")
            await wf.resume_hook(f"approve:{handle.id}", {"approved": False, "by": "bo"})
            return await handle.result(timeout=20), await fold(handle)

    outcome, state = run(main())
    assert outcome == {"topic": "cold fusion", "status": "rejected", "by": "bo", "report": None}
    assert "write_report" not in kinds(state)


def test_a_recorded_log_replays_against_the_example_code(tmp_path: Path) -> None:
    """``worldflow.testing.replay``: a log recorded from the hail-ride example checks
    against its code in a unit test (and a log of another workflow is refused)."""

    async def record() -> list[Any]:
        async with wf.worker(LocalWorld(tmp_path)):
            handle = await wf.start(hail_ride.hail_ride, "req-42")
            await handle.result(timeout=30)
            return await handle.events()

    events = run(record())
    state = replay(events, hail_ride.hail_ride)
    assert state.status == "completed"
    with pytest.raises(ValueError, match="not 'research'"):
        replay(events, "research")
