"""A recorded value that cannot be read back is the engine's problem, never the code's.

Replaying a log whose recorded value is damaged (or names a class this process
does not have) raises ``CorruptLogError`` (or ``SerializationError``) to the
engine, naming the event, without resuming the workflow's code: its
``except Exception`` never sees it, so the run is not failed as if the code
had changed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow._instance import WorkflowInstance
from worldflow._world import Event
from worldflow.testing import replay_log
from worldflow.worlds.local import LocalWorld

RUN = "run-corrupt"
SEEN: list[BaseException] = []
BAD_INT = {"$t": "int", "v": "zz"}
MISSING_CLASS = {"$t": "dataclass", "c": "no_such_module_here:Parcel", "v": {"id": 1}}


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    SEEN.clear()


@wf.step
async def fetch(n: int) -> int:
    return n


@wf.workflow(name="test_instance.guarded")
async def guarded() -> str:
    try:
        value = await fetch(1)
    except Exception as exc:  # what the code must never be handed
        SEEN.append(exc)
        return "caught"
    return f"got {value!r}"


@wf.workflow(name="test_instance.waits_for_a_hook")
async def waits_for_a_hook() -> str:
    try:
        return str(await wf.create_hook(token="parcel"))
    except Exception as exc:
        SEEN.append(exc)
        return "caught"


@wf.workflow(name="test_instance.takes_input")
async def takes_input(n: int) -> int:
    return n


def _log(workflow: Any, *events: tuple[str, dict[str, Any]], args: Any = None) -> list[Event]:
    head = [
        ("run_created", {"workflow": workflow.name, "input": [args or [], {}]}),
        ("run_started", {}),
    ]
    return [
        Event(RUN, seq, kind, data, 1_800_000_000.0 + seq)
        for seq, (kind, data) in enumerate([*head, *events], start=1)
    ]


def _step_log(ending: tuple[str, dict[str, Any]]) -> list[Event]:
    return _log(
        guarded,
        ("step_scheduled", {"cid": 1, "name": fetch.name, "input": [[1], {}]}),
        ("step_started", {"cid": 1, "attempt": 1, "worker": "w1", "lease_until": None}),
        ending,
    )


def test_the_log_replays_when_intact() -> None:
    log = _step_log(("step_completed", {"cid": 1, "attempt": 1, "output": 7}))
    log.append(Event(RUN, 6, "run_completed", {"output": "got 7"}, 1_800_000_006.0))
    assert replay_log(log).status == "completed"


def test_a_corrupt_step_output_is_a_corrupt_log_not_a_code_change() -> None:
    log = _step_log(("step_completed", {"cid": 1, "attempt": 1, "output": BAD_INT}))
    with pytest.raises(wf.CorruptLogError) as info:
        replay_log(log)
    message = str(info.value)
    assert f"run {RUN!r}" in message and "event 5 (step_completed)" in message
    assert "'zz'" in message  # what was wrong
    assert not isinstance(info.value, wf.NonDeterminismError)
    assert SEEN == []  # the workflow's except Exception never saw it


def test_the_code_is_not_resumed() -> None:
    log = _step_log(("step_completed", {"cid": 1, "attempt": 1, "output": BAD_INT}))
    instance = WorkflowInstance(RUN, guarded, [log[2]], lambda token: "")
    instance.start(log[1].at, [[], {}])
    with pytest.raises(wf.CorruptLogError):
        instance.feed(log[-1])
    assert not instance.done and instance.divergence is None
    # The same instance takes the intact value afterwards (as from a repaired log).
    instance.feed(Event(RUN, 5, "step_completed", {"cid": 1, "output": 3}, log[-1].at))
    assert instance.outcome().output == "got 3" and SEEN == []


def test_a_class_missing_here_is_a_serialization_error() -> None:
    log = _step_log(("step_completed", {"cid": 1, "attempt": 1, "output": MISSING_CLASS}))
    with pytest.raises(wf.SerializationError) as info:
        replay_log(log)
    message = str(info.value)
    assert "event 5 (step_completed)" in message and "no_such_module_here" in message
    assert SEEN == []


def test_a_corrupt_recorded_error_is_a_corrupt_log() -> None:
    log = _step_log(("step_failed", {"cid": 1, "attempt": 1, "error": "boom"}))
    with pytest.raises(wf.CorruptLogError, match=r"event 5 \(step_failed\)"):
        replay_log(log)
    assert SEEN == []


def test_a_corrupt_hook_payload_is_a_corrupt_log() -> None:
    created = {"cid": 1, "name": "hook", "token": "parcel", "webhook": False, "url": None}
    log = _log(
        waits_for_a_hook,
        ("hook_created", created),
        ("hook_received", {"token": "parcel", "payload": [BAD_INT], "id": "m1"}),
    )
    with pytest.raises(wf.CorruptLogError) as info:
        replay_log(log)
    assert "event 4 (hook_received)" in str(info.value)
    assert SEEN == []


@pytest.mark.parametrize("args", [[BAD_INT], {"not": "a list"}])
def test_a_corrupt_input_is_a_corrupt_log(args: Any) -> None:
    log = _log(takes_input, args=args)
    with pytest.raises(wf.CorruptLogError, match=r"event 1 \(run_created\)"):
        replay_log(log)


def test_an_input_of_a_missing_class_is_a_serialization_error() -> None:
    instance = WorkflowInstance(RUN, takes_input, [], lambda token: "")
    with pytest.raises(wf.SerializationError, match="no_such_module_here"):
        instance.start(0.0, [[MISSING_CLASS], {}])
    assert instance.task is None  # the code was never started


def test_a_run_whose_stored_output_was_damaged_fails_with_corrupt_log(tmp_path: Path) -> None:
    async def main() -> tuple[wf.RunFailed, list[str]]:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = await wf.start(guarded_then_waits)
            while "hook_created" not in [e.kind for e in await run.events()]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polled from the store, as a client would
        db = sqlite3.connect(tmp_path / "worldflow.sqlite3")  # damaged by hand
        with db:
            query = "SELECT data FROM events WHERE run_id = ? AND kind = 'step_completed'"
            data = json.loads(db.execute(query, (run.id,)).fetchone()[0])
            data["output"] = BAD_INT
            db.execute(
                "UPDATE events SET data = ? WHERE run_id = ? AND kind = 'step_completed'",
                (json.dumps(data), run.id),
            )
        db.close()
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):  # a cold worker
            await wf.resume_hook("damaged", "go")
            with pytest.raises(wf.RunFailed) as info:
                await run.result(timeout=2)
            return info.value, [e.kind for e in await run.events()]

    failed, kinds = asyncio.run(main())
    assert failed.error_type == "worldflow.CorruptLogError"
    assert "event 5 (step_completed)" in failed.message
    assert kinds[-1] == "run_failed" and SEEN == []


@wf.workflow(name="test_instance.guarded_then_waits")
async def guarded_then_waits() -> str:
    try:
        value = await fetch(1)
    except Exception as exc:
        SEEN.append(exc)
        return "caught"
    return f"{value} {await wf.create_hook(token='damaged')}"
