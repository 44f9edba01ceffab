"""Helpers for testing workflows: wait until a run is asleep or waiting on a hook, and
check a recorded log against the code."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import worldflow as wf
from worldflow._world import Event

from ._harness import load_log, replay_log

__all__ = ["replay", "wait_for_hook", "wait_until_asleep"]


async def _wait(run: wf.Run[Any], kind: str, match: dict[str, Any], timeout: float) -> Event:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await run.events()
        for event in reversed(events):
            if event.kind == kind and all(event.data.get(k) == v for k, v in match.items()):
                return event
        ended = [
            e.kind for e in events if e.kind in ("run_completed", "run_failed", "run_cancelled")
        ]
        if ended:
            raise AssertionError(f"run {run.id!r} ended ({ended[0]}) before any {kind}")
        if loop.time() > deadline:
            kinds = [e.kind for e in events]
            raise TimeoutError(f"run {run.id!r}: no {kind} in {timeout}s; its log has {kinds}")
        await asyncio.sleep(0.005)


async def wait_until_asleep(run: wf.Run[Any], *, timeout: float = 10.0) -> dt.datetime:
    """Wait until the run has started a sleep (its latest one); returns when it wakes."""
    event = await _wait(run, "sleep_started", {}, timeout)
    return dt.datetime.fromtimestamp(float(event.data["until"]), dt.UTC)


async def wait_for_hook(
    run: wf.Run[Any], token: str | None = None, *, timeout: float = 10.0
) -> str:
    """Wait until the run has created a hook (the one with ``token``, if given); returns
    its token (a webhook's URL is ``wf.get_run(...)``'s ``hook_created`` event's ``url``)."""
    event = await _wait(run, "hook_created", {} if token is None else {"token": token}, timeout)
    return str(event.data["token"])


def replay(log: Sequence[Event] | str | os.PathLike[str], workflow: Any = None) -> Any:
    """Replay a recorded log (events, or a file from ``dump_log``) against the workflow
    code in this process; raises ``wf.NonDeterminismError`` if the code no longer fits
    it. ``workflow`` (optional): the workflow the log must be of. Returns its state."""
    events = load_log(log) if isinstance(log, str | os.PathLike) else list(log)
    if workflow is not None and events:
        name = getattr(workflow, "name", workflow)
        recorded = events[0].data.get("workflow")
        if recorded != name:
            raise ValueError(f"the log is of workflow {recorded!r}, not {name!r}")
    return replay_log(events)
