"""Handling one delivered message, and telling the World what to do with it.

Every World's consumer (the local world's timers, an SQS poller, the Lambda
handler, the Cloud Run task route) hands a :class:`~worldflow._world.Delivery`
to :func:`deliver` and does what the :class:`~worldflow._world.Disposition`
says. The rules, once for every World:

- A message that comes before it is due is held until it is (up to the
  host's ``hold``), or, on the wall clock, re-sent for later (a *hop*: how a
  sleep outlives a queue's longest delay) unless its run has ended. On a
  test's virtual clock a host with no deadline holds it until the clock
  moves; one with a deadline has it delivered again in a second.
- Otherwise the message is applied (durably), and then acknowledged only
  once its run is quiet here: no step attempt of this process still running
  for it and nothing of it left unsent. A host that must answer by a deadline
  gets "deliver it again once this worker's lease has run out" instead: the
  attempt is lost with the process, and the message brings the run back.
- A run whose step runs on another worker is not acknowledged either: if that
  worker is dead, the run is looked at again at once (the attempt counts as
  lost and runs again); if it is alive, the message comes back when its lease
  runs out. So a run never waits on a dead worker with nothing to wake it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from ._errors import WorkflowNotFound
from ._executor import Parked
from ._world import ACK, MESSAGE_KINDS, Delivery, Disposition, Message, Outgoing, World

__all__ = ["deliver"]

log = logging.getLogger("worldflow")

#: Seconds added to a lease before looking again, for clock differences between workers.
SLACK = 1.0
#: How long a host with a deadline holds a hook payload that waits for an earlier one.
PARK_WAIT = 2.0


def _backoff(attempt: int) -> float:
    return float(min(300, 2 ** min(max(attempt, 1), 9)))


async def deliver(
    rt: object, d: Delivery, *, hold: float | None = None, deadline: float | None = None
) -> Disposition:
    """Apply one delivered message; say whether to acknowledge it or deliver it again."""
    from ._runtime import Runtime

    assert isinstance(rt, Runtime)
    world = rt.world
    message = d.message
    if message.kind not in MESSAGE_KINDS:
        log.warning("worldflow: dropped a message of unknown kind %r", message.kind)
        return ACK
    loop = rt.loop

    def left() -> float:
        return math.inf if deadline is None else deadline - loop.time()

    due = d.not_before
    if due is not None:
        wait = due - world.clock.now()
        if wait > 0:
            limit = min(world.hold if hold is None else hold, left())
            if wait <= limit or (not world.real_time and deadline is None):
                try:
                    await _bounded(world.clock.sleep_until(due), left())
                except TimeoutError:  # a virtual clock that did not move in time
                    return Disposition.later(1.0, "not due before the host's deadline")
            elif world.real_time:
                return await _hop(rt, d, due)
            else:
                info = await rt.backend.get_run(message.run_id)
                if info is None or info.done:
                    return ACK  # the timers of an ended run need no one
                return Disposition.later(1.0, "not due yet on the virtual clock")
    try:
        message = await rt.backend.restore(message)
        if message.kind == "start_child":  # creates a run; nothing to do in this one
            from ._children import start_child

            await _bounded(start_child(rt, message), left())
            return ACK
        if message.kind == "step":  # an attempt of a remote step: any worker runs it
            from ._remote import run_step

            return await run_step(rt, message, left)
        executor = rt.executor(message.run_id)
        park = None if deadline is None else min(PARK_WAIT, max(0.0, left() - PARK_WAIT))
        await _bounded(executor.handle(message, park_timeout=park), left())
    except TimeoutError:
        return Disposition.later(1.0, "the host's deadline came first")
    except Parked:
        return Disposition.later(1.0, "its hook's earlier payload has not come yet")
    except WorkflowNotFound as exc:
        # Another kind of worker may have the workflow: back off, it comes again.
        log.warning("worldflow: message for run %r: %s", message.run_id, exc)
        return _failed(world, d, str(exc))
    except Exception as exc:
        if rt.closed:
            return Disposition.later(0.0, "the runtime closed")
        log.warning(
            "worldflow: %s message for run %r failed (%s); it comes again",
            message.kind,
            message.run_id,
            exc,
        )
        return _failed(world, d, f"{type(exc).__name__}: {exc}")
    return await _settled(rt, message, left)


def _failed(world: World, d: Delivery, reason: str) -> Disposition:
    """Handling the message failed: deliver it again after a backoff, or, once it has
    failed ``max_deliveries`` times on a World that keeps dead letters, give up on it."""
    if world.dead_letters is not None and d.attempt >= world.max_deliveries:
        log.error(
            "worldflow: gave up on a %s message for run %r after %d deliveries: %s",
            d.message.kind,
            d.message.run_id,
            d.attempt,
            reason,
        )
        return Disposition.dead_letter(reason)
    return Disposition.later(_backoff(d.attempt), reason)


async def _bounded(awaitable: object, seconds: float) -> None:
    if seconds == math.inf:
        await awaitable  # type: ignore[misc]
    else:
        await asyncio.wait_for(awaitable, max(0.0, seconds))  # type: ignore[arg-type]


async def _settled(rt: object, message: Message, left: object) -> Disposition:
    """Once the message is applied: acknowledge it when its run is quiet here and waits
    on no other live worker; otherwise say when to deliver it again."""
    from ._runtime import Runtime

    assert isinstance(rt, Runtime)
    remaining = left  # a callable: seconds left before the host's deadline
    assert callable(remaining)
    executor = rt.executor(message.run_id)
    for _ in range(3):
        try:
            await _bounded(executor.quiet(), remaining())
        except TimeoutError:
            # This process may be frozen or stopped once the host answers: its attempt is
            # lost then, and counts as lost once its lease runs out; come back after that.
            return Disposition.later(
                max(SLACK, rt.lease_until - time.time() + SLACK),
                "a step of the run is still running here",
            )
        state = executor.state
        others = executor.others(state) if state is not None else set()
        if not others:
            return ACK
        now = time.time()
        expiries = {w: await rt.world.workers.expiry(w) for w in others}
        if any(e is None or e < now for e in expiries.values()):
            # A worker the run waits on is gone: look at the run again now (its attempt
            # is lost and runs again here).
            try:
                await _bounded(executor.handle(message, look_again=True), remaining())
            except TimeoutError:
                return Disposition.later(1.0, "the host's deadline came first")
            continue
        latest = max(e for e in expiries.values() if e is not None)
        return Disposition.later(
            latest - now + SLACK, f"a step of the run is running on {', '.join(sorted(others))}"
        )
    return Disposition.later(SLACK, "the run still waits on other workers")


async def _hop(rt: object, d: Delivery, due: float) -> Disposition:
    """Not due for longer than the host may hold it: send it again for later (the queue
    carries it as far as it can), unless its run has ended; this copy is done."""
    from ._runtime import Runtime

    assert isinstance(rt, Runtime)
    run_id = d.message.run_id
    info = await rt.backend.get_run(run_id)
    if info is None or info.done:
        return ACK  # nothing left to wake: the timers of an ended run stop here
    max_delay = rt.world.capabilities.max_delay or rt.world.hold
    hops_left = math.ceil((due - rt.world.clock.now()) / max(max_delay, 1.0))
    # Two copies of one message hop under one key, so a de-duplicating queue keeps one.
    key = f"{d.key or d.message.id}#hop{hops_left}"
    await rt.backend.send([Outgoing(d.message, due, key)])
    return ACK
