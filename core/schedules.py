"""Schedules: a workflow started at the times of a cron expression, in a time zone.

>>> @wf.schedule(cron="0 9 * * MON-FRI", timezone="Europe/London")
... @wf.workflow
... async def morning_report(scheduled_at: datetime) -> None: ...

The workflow receives the scheduled time (an aware UTC ``datetime``) as its
first argument. Each scheduled time starts one run, with the id
``"<workflow>@<time in ISO 8601>"``, however many workers there are: every
start is idempotent by that id.

How it runs, on every World, with no process of its own: each scheduled
time is a small *tick* run (``worldflow.schedule_tick``, id
``"worldflow.schedule:<workflow>@<time>"``) that sleeps durably until the
time, then starts the workflow's run and the tick of the next time. A
serving process (a worker, the Lambda host, the Cloud Run service) makes
sure, when it starts, that the tick of the next time exists; since ids come
from the times, chains started by several processes, or one left from
before a restart, are the same chain.

- ``overlap``: what a fire does while the previous run of the schedule has
  not ended: ``"skip"`` (the default: no run for that time), ``"queue"``
  (wait for it to end, then start), ``"allow"`` (start anyway).
- ``catch_up``: what happens to times missed while nothing was serving
  (their ticks fire late, when a process serves again): ``"last"`` (the
  default: one run, for the latest missed time), ``"all"`` (a run for each
  missed time, in order), ``"none"`` (no run for missed times; the next one
  on time). A tick is *missed* when it fires more than ``late_after``
  seconds (default 60) after its time.
- :func:`pause` stops the fires (the pending tick ends without starting
  anything); :func:`resume` starts them again from the next time;
  :func:`trigger` starts a run now; :func:`list_schedules` tells the next
  times. ``worldflow schedules list|pause|resume|trigger`` do the same.

Daylight saving: a time skipped in spring fires once at the end of the gap;
a time repeated in autumn fires once, the first time (see ``_cron``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from ._cron import Cron, parse_cron, zone
from ._definitions import Workflow, step, workflow

__all__ = [
    "ScheduleInfo",
    "list_schedules",
    "pause",
    "resume",
    "schedule",
    "trigger",
]

log = logging.getLogger("worldflow")

W = TypeVar("W", bound=Workflow[Any, Any])

Overlap = Literal["skip", "queue", "allow"]
CatchUp = Literal["last", "all", "none"]


@dataclasses.dataclass(frozen=True)
class _Schedule:
    workflow: Workflow[Any, Any]
    cron: Cron
    timezone: str
    overlap: Overlap
    catch_up: CatchUp
    late_after: float

    @property
    def name(self) -> str:
        return self.workflow.name

    def next_after(self, when: float) -> float:
        after = dt.datetime.fromtimestamp(when, dt.UTC)
        return self.cron.next_after(after, zone(self.timezone)).timestamp()


_SCHEDULES: dict[str, _Schedule] = {}


def schedule(
    *,
    cron: str,
    timezone: str = "UTC",
    overlap: Overlap = "skip",
    catch_up: CatchUp = "last",
    late_after: float = 60.0,
) -> Callable[[W], W]:
    """Start the decorated ``@wf.workflow`` at the times of ``cron`` in ``timezone``
    (see the module docstring). Put it above ``@wf.workflow``."""
    parsed = parse_cron(cron)
    zone(timezone)  # a ValueError now for an unknown zone
    if overlap not in ("skip", "queue", "allow"):
        raise ValueError(f"overlap must be 'skip', 'queue' or 'allow', got {overlap!r}")
    if catch_up not in ("last", "all", "none"):
        raise ValueError(f"catch_up must be 'last', 'all' or 'none', got {catch_up!r}")
    if not isinstance(late_after, int | float) or late_after <= 0:
        raise ValueError(f"late_after must be a positive number of seconds, got {late_after!r}")

    def decorate(target: W) -> W:
        if not isinstance(target, Workflow):
            raise TypeError(
                f"@wf.schedule goes above @wf.workflow: it schedules a workflow, got {target!r}"
            )
        try:
            target.check_arguments((dt.datetime.now(dt.UTC),), {})
        except TypeError as exc:
            raise TypeError(
                f"a scheduled workflow takes the scheduled time as its one argument: {exc}"
            ) from None
        _SCHEDULES[target.name] = _Schedule(
            target, parsed, timezone, overlap, catch_up, float(late_after)
        )
        return target

    return decorate


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_id_for(name: str, when: float) -> str:
    """The id of the schedule's run for a time: the same in every process."""
    return f"{name}@{_iso(when)}"


def _tick_id(name: str, when: float) -> str:
    return f"worldflow.schedule:{name}@{_iso(when)}"


def _paused_prefix(name: str) -> str:
    return f"worldflow.schedule-paused:{name}:"


def _resume_token(name: str) -> str:
    return f"worldflow.schedule-resume:{name}"


def _get(name: str) -> _Schedule:
    found = _SCHEDULES.get(name)
    if found is None:
        known = ", ".join(sorted(_SCHEDULES)) or "none (import the modules that define them)"
        raise LookupError(f"no schedule for workflow {name!r} in this process; known: {known}")
    return found


# -- the tick ------------------------------------------------------------------------------


@workflow(name="worldflow.schedule_tick")
async def _tick(name: str, at: float, previous: str | None) -> str:
    from ._api import sleep

    await sleep(until=dt.datetime.fromtimestamp(at, dt.UTC))
    return await _fire(name, at, previous)


@step(name="worldflow.schedule_fire", max_retries=20, retry_delay=1.0)
async def _fire(name: str, at: float, previous: str | None) -> str:
    """Start the schedule's run for ``at`` (as its policies say) and the next tick."""
    from ._api import _runtime, get_run

    sched = _get(name)  # a LookupError retries: another worker may have the module
    runtime = await _runtime()
    now = runtime.clock.now()
    if await _paused(name):
        return "paused"
    late = now - at > sched.late_after
    upcoming = sched.next_after(at)
    fire = True
    if late and sched.catch_up == "none":
        fire = False
        upcoming = sched.next_after(now)
    elif late and sched.catch_up == "last" and upcoming <= now:
        fire = False  # a later missed time is due: the latest of them fires
        while (after := sched.next_after(upcoming)) <= now:
            upcoming = after
    started = previous
    if fire and previous is not None and sched.overlap != "allow":
        status = (await runtime.get_run(previous)).status
        if status not in ("completed", "failed", "cancelled"):
            if sched.overlap == "skip":
                fire = False
            else:  # queue: wait for it to end (whatever its outcome: its own)
                with contextlib.suppress(Exception):
                    await get_run(previous).result()
    if fire:
        scheduled = dt.datetime.fromtimestamp(at, dt.UTC)
        started = await runtime.start_run(name, (scheduled,), {}, run_id_for(name, at))
    await runtime.start_run(_tick.name, (name, upcoming, started), {}, _tick_id(name, upcoming))
    return "started" if fire else "skipped"


async def _paused(name: str) -> bool:
    from ._api import _runtime

    runtime = await _runtime()
    for status in ("running", "pending"):  # a pause just asked for may not have started
        page = await runtime.backend.list_runs(status=status, workflow=_pause_wait.name, limit=100)
        if any(r.id.startswith(_paused_prefix(name)) for r in page.runs):
            return True
    return False


@workflow(name="worldflow.schedule_pause")
async def _pause_wait(name: str) -> str:
    from ._hooks import create_hook

    await create_hook(token=_resume_token(name))
    return "resumed"


async def ensure(runtime: Any) -> None:
    """Make sure each schedule of this process has the tick of its next time (a serving
    runtime calls this when it starts)."""
    for name, sched in list(_SCHEDULES.items()):
        try:
            if await _paused(name):
                continue
            upcoming = sched.next_after(runtime.clock.now())
            await runtime.start_run(
                _tick.name, (name, upcoming, None), {}, _tick_id(name, upcoming)
            )
        except Exception:
            log.exception("worldflow: cannot set up the schedule of %r", name)


# -- the controls --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as :func:`list_schedules` tells it."""

    workflow: str
    cron: str
    timezone: str
    overlap: str
    catch_up: str
    paused: bool
    next_at: dt.datetime | None  # None while paused


async def list_schedules() -> list[ScheduleInfo]:
    """The schedules defined in this process, with their next time."""
    from ._api import _runtime

    runtime = await _runtime()
    now = runtime.clock.now()
    infos = []
    for name, sched in sorted(_SCHEDULES.items()):
        paused = await _paused(name)
        infos.append(
            ScheduleInfo(
                name,
                sched.cron.text,
                sched.timezone,
                sched.overlap,
                sched.catch_up,
                paused,
                None if paused else dt.datetime.fromtimestamp(sched.next_after(now), dt.UTC),
            )
        )
    return infos


async def pause(name: str) -> bool:
    """Stop the schedule's fires until :func:`resume`; False if it was paused already."""
    from ._api import _runtime

    _get(name)
    if await _paused(name):
        return False
    runtime = await _runtime()
    await runtime.start_run(
        _pause_wait.name, (name,), {}, f"{_paused_prefix(name)}{time.time_ns()}"
    )
    return True


async def resume(name: str) -> bool:
    """Start the schedule's fires again, from its next time; False if it was not paused."""
    from ._api import _runtime
    from ._errors import HookNotFound

    sched = _get(name)
    runtime = await _runtime()
    try:
        await runtime.resume_hook(_resume_token(name), None)
    except HookNotFound:
        return False
    for _ in range(200):  # the pause ends once its run has taken the payload
        if not await _paused(name):
            break
        await asyncio.sleep(0.05)
    upcoming = sched.next_after(runtime.clock.now())
    await runtime.start_run(_tick.name, (name, upcoming, None), {}, _tick_id(name, upcoming))
    return True


async def trigger(name: str) -> str:
    """Start a run of the schedule's workflow now (outside its times); returns its id."""
    from ._api import _runtime

    _get(name)
    runtime = await _runtime()
    now = runtime.clock.now()
    scheduled = dt.datetime.fromtimestamp(now, dt.UTC)
    return str(await runtime.start_run(name, (scheduled,), {}, f"{name}@manual-{time.time_ns()}"))
