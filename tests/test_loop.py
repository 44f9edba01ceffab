"""The deterministic workflow loop: no I/O, logical time, durable timers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import worldflow as wf
from worldflow._instance import WorkflowInstance
from worldflow._world import Event


@wf.workflow
async def tries_io() -> Any:
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo("example.com", 80)


@wf.workflow
async def clock_and_timers() -> Any:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(5)
    return loop.time() - start


def _instance(workflow: Any) -> WorkflowInstance:
    return WorkflowInstance("run-1", workflow, [], lambda token: f"http://x/{token}")


def test_io_inside_a_workflow_is_refused_with_advice() -> None:
    instance = _instance(tries_io)
    instance.start(1000.0, [[], {}])
    assert instance.done
    outcome = instance.outcome()
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "getaddrinfo() is not available inside a workflow" in outcome.error["message"]
    assert "@step" in outcome.error["message"]


def test_asyncio_sleep_becomes_a_durable_timer_on_logical_time() -> None:
    instance = _instance(clock_and_timers)
    instance.start(1000.0, [[], {}])
    (command,) = instance.take_commands()
    assert command == ("sleep_started", {"cid": 1, "name": None, "until": 1005.0})
    assert not instance.done
    instance.feed(Event("run-1", 4, "sleep_fired", {"cid": 1}, 1005.0))
    assert instance.done and instance.outcome().output == 5.0


def test_a_result_for_a_command_never_made_is_non_determinism() -> None:
    instance = _instance(clock_and_timers)
    instance.start(1000.0, [[], {}])
    instance.feed(Event("run-1", 9, "step_completed", {"cid": 7, "output": 1}, 1001.0))
    assert isinstance(instance.divergence, wf.NonDeterminismError)
    assert "command #7" in str(instance.divergence)


def test_the_loop_is_only_current_inside_workflow_code() -> None:
    from worldflow._loop import current_instance

    assert current_instance() is None
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
