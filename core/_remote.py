"""Steps that run across the fleet: an attempt as a message any worker may take.

A step is *remote* when its options say ``remote=True``, or when they say nothing
and ``WORLDFLOW_REMOTE_STEPS=1`` is set (the switch the conformance suite runs
under). The run's executor records ``step_started`` with ``worker: None`` and
``remote: true`` and, in the same append, a ``step`` message (``cid``,
``attempt``); it holds nothing for the attempt, so its invocation ends (its
message is acknowledged) while the attempt runs elsewhere.

The worker that takes the ``step`` message (:func:`run_step`):

1. reads the run's log; unless attempt ``attempt`` of step ``cid`` is running
   (not ended, not superseded: a duplicate or a late copy), it acknowledges;
2. loads the step by name from its registry, decodes the input from the log and
   runs it with the same :func:`~worldflow._attempts.run_attempt` as an inline
   attempt (timeout included);
3. records the outcome (``step_completed``, ``step_retrying`` or ``step_failed``,
   decided by :func:`failure_event`, the executor's own rule): through the run's
   executor when that is warm in this process and knows the attempt, else by an
   append at the expected seq of the log it read, with a ``resume`` message
   carrying the new ``seq`` (a warm executor elsewhere reads the log again). A lost
   race reads the log again and checks again, so two deliveries of one message
   never record two outcomes for one attempt.

Leases: the queue is the lease. The ``step`` message is acknowledged only once the
outcome is durable, so a dead worker's message is delivered again. A remote attempt
with a timeout has ``lease_until`` (its timeout plus ``LEASE_GRACE`` for the message's
trip); a message that comes back after it runs nothing but has the run's executor
count the attempt lost and start the next, exactly as for an inline attempt (any
look at the run after the lease does the same). Without a timeout the attempt runs
again under its own number.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._attempts import StepMetadata, run_attempt
from ._codec import decode
from ._definitions import StepOptions, get_step
from ._duration import parse_duration
from ._errors import FatalError, RetryableError, SerializationError, WorkflowNotFound
from ._events import STEP_COMPLETED, STEP_FAILED, STEP_RETRYING
from ._failures import describe_error
from ._state import RunState, StepState
from ._world import ACK, Append, Disposition, Event, Message, NewEvent, Outgoing

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["ENV", "chosen", "failure_event", "run_step", "started"]

log = logging.getLogger("worldflow")

#: The environment switch: ``1`` makes every step whose options do not say otherwise remote.
ENV = "WORLDFLOW_REMOTE_STEPS"
#: Seconds a remote attempt's lease adds to its step's timeout: the step message's trip.
LEASE_GRACE = 5.0


def chosen(options: StepOptions) -> bool:
    """Whether attempts of a step with these options run remotely. A step with a
    concurrency or rate limit runs inline (its slot is held by the run's executor)."""
    if options.concurrency is not None or options.rate_limit is not None:
        return False
    if options.remote is not None:
        return options.remote
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def started(rt: Runtime, append: Append, run_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Make ``step_started``'s data remote (its lease, if any, has ``LEASE_GRACE`` more for
    the message's trip) and add the attempt's ``step`` message to the append."""
    data = {**data, "worker": None, "remote": True}
    if data.get("lease_until") is not None:
        data["lease_until"] = float(data["lease_until"]) + LEASE_GRACE
    cid, attempt = data["cid"], data["attempt"]
    message = Message(rt.new_id(), run_id, "step", {"cid": cid, "attempt": attempt})
    append.messages.append(Outgoing(message, None, f"{run_id}:step:{cid}:{attempt}"))
    return data


def failure_event(
    options: StepOptions, cid: int, attempt: int, exc: BaseException, at: float
) -> tuple[str, dict[str, Any]]:
    """The event a failed attempt leads to: ``step_retrying`` (its data has ``retry_at``)
    or ``step_failed``. One rule for inline and remote attempts."""
    error = describe_error(exc)
    fatal = isinstance(exc, FatalError | SerializationError | WorkflowNotFound)
    if fatal or attempt > options.max_retries:
        return STEP_FAILED, {"cid": cid, "attempt": attempt, "error": error}
    delay = options.delay_before(attempt + 1)
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        try:
            delay = parse_duration(exc.retry_after, what="retry_after")
        except ValueError as bad:
            error["message"] += f" ({bad}; used the step's backoff instead)"
    return STEP_RETRYING, {"cid": cid, "attempt": attempt, "error": error, "retry_at": at + delay}


def fresh_from(events: list[Event]) -> int | None:
    """Where the remote outcomes at the end of a log begin (None: there are none).

    An outcome recorded by the worker that ran a remote attempt (its data names that
    ``worker``; the run's executor never writes one) has not been fed to the workflow's
    code yet while it is among the log's last events: the executor writes the code's
    next commands after it once it has. Replaying from there is new code, not replay
    (``wf.is_replaying()`` is False: the workflow logger writes its lines)."""
    i = len(events)
    while i > 0:
        e = events[i - 1]
        if e.kind not in _OUTCOMES or not isinstance(e.data, dict) or "worker" not in e.data:
            break
        i -= 1
    return None if i == len(events) else i


_OUTCOMES = frozenset({STEP_COMPLETED, STEP_FAILED, STEP_RETRYING})


def _running(state: RunState, cid: int, attempt: int) -> StepState | None:
    """The step, if ``attempt`` is its current remote attempt and has no outcome yet."""
    if state.done:
        return None
    step = state.open_steps.get(cid)
    if step is None or step.status != "running" or step.attempt != attempt or not step.remote:
        return None
    return step


def _holder(state: RunState) -> str | None:
    """The run's holder as the executor computes it (remote attempts have no worker)."""
    latest: StepState | None = None
    for s in state.open_steps.values():
        if s.status == "running" and s.worker and (latest is None or s.cid > latest.cid):
            latest = s
    return None if latest is None else latest.worker


class _Load:
    """A run's state as of its log, read on incrementally (a log only grows): kept per
    run for the step messages of that run this process takes (``_loads``)."""

    def __init__(self, rt: Runtime, run_id: str) -> None:
        self.rt = rt
        self.state = RunState(run_id, lean=True)
        self.last_at = 0.0  # the time of the last event read: a new one is not earlier
        self.lock = asyncio.Lock()

    async def read(self) -> RunState:
        async with self.lock:
            events = await self.rt.backend.read_events(self.state.run_id, self.state.seq)
            for event in events:
                if event.seq > self.state.seq:
                    self.state.apply(event)
                    self.last_at = event.at
        return self.state


#: How many runs' states a process keeps for the step messages it takes.
MAX_LOADS = 256


def _load(rt: Runtime, run_id: str) -> _Load:
    loads: OrderedDict[str, _Load] | None = getattr(rt, "_remote_loads", None)
    if loads is None:
        loads = OrderedDict()
        rt._remote_loads = loads  # type: ignore[attr-defined]
    found = loads.get(run_id)
    if found is None:
        found = loads[run_id] = _Load(rt, run_id)
        while len(loads) > MAX_LOADS:
            loads.popitem(last=False)
    else:
        loads.move_to_end(run_id)
    return found


#: (run id, cid, attempt) -> the outcome of an attempt this process runs now: a second
#: delivery of its message waits for it instead of running the step again.
_Key = tuple[str, int, int]


#: How many (run, cid, attempt) whose outcome this process recorded it remembers: a copy
#: of a step message that read the log before that is acknowledged, not run again.
MAX_RECORDED = 10_000


def _recorded(rt: Runtime) -> OrderedDict[_Key, None]:
    found: OrderedDict[_Key, None] | None = getattr(rt, "_remote_recorded", None)
    if found is None:
        found = OrderedDict()
        rt._remote_recorded = found  # type: ignore[attr-defined]
    return found


def _inflight(rt: Runtime) -> dict[_Key, asyncio.Future[tuple[bool, Any]]]:
    found: dict[_Key, asyncio.Future[tuple[bool, Any]]] | None = getattr(rt, "_remote", None)
    if found is None:
        found = {}
        rt._remote = found  # type: ignore[attr-defined]
    return found


async def run_step(rt: Runtime, message: Message, left: Callable[[], float]) -> Disposition:
    """Handle a ``step`` message: run the attempt if it is still due, record its outcome."""
    cid, attempt = message.data.get("cid"), message.data.get("attempt")
    if type(cid) is not int or type(attempt) is not int:
        log.warning("worldflow: dropped a malformed step message for run %r", message.run_id)
        return ACK
    run_id = message.run_id
    load = _load(rt, run_id)
    # The run's executor, when warm here and knowing the attempt, saves reading the log.
    executor = rt._executors.get(run_id)
    warm = executor.state if executor is not None else None
    step = _running(warm, cid, attempt) if warm is not None else None
    if step is None:
        step = _running(await load.read(), cid, attempt)
    if step is None:
        return ACK  # ended, superseded, or recorded already (a copy of the message)
    if step.lease_until is not None and step.lease_until < rt.clock.now():
        # Its lease ran out before it ran here (the worker that took it vanished and the
        # queue brought the message back): lost, as an inline attempt would be. The run's
        # executor counts it and starts the next attempt (or fails the step).
        await rt.executor(run_id).handle(Message(rt.new_id(), run_id, "resume"), look_again=True)
        return ACK
    key = (run_id, cid, attempt)
    inflight, recorded = _inflight(rt), _recorded(rt)
    if key in recorded:
        return ACK  # this process recorded it after the log above was read
    running = inflight.get(key)
    if running is None:  # this process runs it; a copy delivered meanwhile waits for it
        definition = get_step(step.name)
        if definition is None:
            raise WorkflowNotFound(f"step {step.name!r} is not registered in this process")
        running = inflight[key] = rt.loop.create_future()
        _start(rt, running, definition, step, run_id, cid, attempt)
    try:
        ok, value = await _bounded(asyncio.shield(running), left())
    except TimeoutError:
        return Disposition.later(1.0, "the host's deadline came first; the step still runs")
    if key not in recorded:
        await _record(rt, load, cid, attempt, ok, value)
        recorded[key] = None
        while len(recorded) > MAX_RECORDED:
            recorded.popitem(last=False)
    if inflight.get(key) is running:
        del inflight[key]
    return ACK


def _start(
    rt: Runtime,
    fut: asyncio.Future[tuple[bool, Any]],
    definition: Any,
    step: StepState,
    run_id: str,
    cid: int,
    attempt: int,
) -> None:
    def done(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result((ok, value))

    try:
        args, kwargs = decode(step.input)
    except Exception as exc:
        done(False, exc)
        return
    meta = StepMetadata(f"{run_id}:{cid}", attempt, run_id, definition.name)
    run_attempt(rt.loop, definition, args, kwargs, meta, done)


async def _bounded(fut: asyncio.Future[tuple[bool, Any]], seconds: float) -> tuple[bool, Any]:
    if seconds == math.inf:
        return await fut
    return await asyncio.wait_for(fut, max(0.0, seconds))


async def _record(rt: Runtime, load: _Load, cid: int, attempt: int, ok: bool, value: Any) -> None:
    """Record the attempt's outcome once: through the run's executor when this process
    has one, or by an append at the expected seq (read again and checked again after a
    lost race) and a ``resume`` for the run."""
    run_id = load.state.run_id
    here = run_id in rt._executors  # this process has run the run (warm, or replaying)
    executor = rt.executor(run_id)
    while True:
        # Through the executor when it is busy with the run (its state moves on or is
        # read afresh before our input is applied), has no state (it reads the log, then
        # writes the outcome with what the code does next: one append, no resume) or
        # knows the attempt as running. Not when its copy is behind the attempt.
        warm = executor.state
        busy = executor.inflight is not None or executor.loading
        if (
            busy
            or (here and warm is None)
            or (warm is not None and _running(warm, cid, attempt) is not None)
        ):
            await executor.remote_finished(cid, attempt, ok, value)
            return
        state = await load.read()
        step = _running(state, cid, attempt)
        if step is None:
            return  # another delivery recorded it, or the attempt was lost and retried
        definition = get_step(step.name)
        options = definition.options if definition is not None else StepOptions()
        at = max(rt.clock.now(), load.last_at)
        resume = Message(rt.new_id(), run_id, "resume", {"seq": state.seq + 1})
        out = [Outgoing(resume)]
        if ok:
            kind, data = STEP_COMPLETED, {"cid": cid, "attempt": attempt, "output": value}
        else:
            kind, data = failure_event(options, cid, attempt, value, at)
            if kind == STEP_RETRYING:  # the run starts the next attempt when it is due
                wake = Message(rt.new_id(), run_id, "resume")
                key = f"{run_id}:retry:{cid}:{attempt + 1}"
                out = [Outgoing(wake, data["retry_at"], key)]
        data["worker"] = rt.worker_id  # recorded outside the run's executor: see fresh_from
        append = Append(run_id, state.seq, [NewEvent(kind, data, at)], messages=out)
        append.holder = _holder(state)
        if (await rt.backend.append([append]))[0]:
            # Its messages are sent before the step message is acked. (Only those: this
            # process may be running the run meanwhile, and need not wait for that.)
            await executor.outbox_sent()
            return
        log.debug("worldflow: run %r: recording step %d lost a race; reading again", run_id, cid)
