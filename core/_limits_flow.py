"""Concurrency and rate limits, written once over the World seam: a limiter is a log.

A limiter (one per workflow or step limit and key) is an append-only log in
the World's own storage, beside the runs (id ``wf-limit-<hash>``, workflow
``worldflow.limiter``), written only through ``Storage.append`` at an expected
sequence number. So every World has limits with no storage code of its own,
and two workers that write at once are serialized by the store: one append
wins, the other reads the log again and tries again.

Its events: ``limiter_opened`` (scope and key), ``limit_requested`` (a
holder: a run id, or ``<run>#<cid>#<attempt>`` for a step attempt; with
``every`` for a rate limit) and ``limit_released`` (holders). Folded:

- concurrency: the holders requested and not released, in request order; the
  first ``n`` of them hold a slot. A holder only moves forward as others
  release, so a slot once granted stays granted until released, and replaying
  or re-delivering a request (its holder is in the log already) grants nothing
  twice.
- rate: the k-th request is granted at ``max(its time, the previous grant +
  every)``, with ``every = period / count``: attempts are spaced evenly, so no
  window of ``period`` ever holds more than ``count`` grants.

A limiter's log does not grow for ever: past ``LOG_EVENTS`` events, a writer
appends ``limiter_moved`` (to ``<id>-g2``, then ``-g3`` ...) and makes the
next generation, whose first event (``limiter_opened``) holds the fold so far:
the holders still active, recent rate grants, the last throttled start. Who
reads the moved log first makes the next one if its mover died: the same fold
from the same events. A process new to a limiter finds its newest generation
with a few reads (a galloping search over the ids), so a cold start reads one
short log whatever the limiter's history. Old generations stay (nothing
deletes them yet); a request re-delivered after its generation moved on is
granted again, and the dead-holder check below frees that slot.

A run (or attempt) that is not granted waits: the run stays ``pending`` (the
step ``scheduled``) and the message that brought it is acknowledged. The
release that frees its slot sends it a ``resume`` message in the release's
own append (outbox or transaction), and as a safety net every waiter asks for
a look again after the World's lease; a waiter looking again checks that the
holders ahead of it are alive (their run unfinished, their attempt the live
one) and releases those that are not (a process that died between ending a
run and releasing its slot). A rate-limited attempt granted for later gets a
``resume`` message due at its grant: durable, not a busy wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._codec import decode
from ._definitions import Step, Workflow, get_workflow
from ._errors import CorruptLogError
from ._events import STEP_COMPLETED, STEP_FAILED, STEP_RETRYING
from ._failures import describe_error
from ._limits_spec import LIMITER_WORKFLOW, Limit, Throttle, limit_key
from ._state import RunState, StepState
from ._world import Append, Event, Message, NewEvent, Outgoing, RunCreate

if TYPE_CHECKING:
    from ._executor import RunExecutor, _Batch
    from ._runtime import Runtime

__all__ = ["LIMITER_OPENED", "LIMITER_WORKFLOW", "Gate", "check_start", "request_run_slot"]

log = logging.getLogger("worldflow")

LIMITER_OPENED = "limiter_opened"
LIMIT_REQUESTED = "limit_requested"
LIMIT_RELEASED = "limit_released"
LIMITER_MOVED = "limiter_moved"

#: Events a limiter's log holds before it moves on to a fresh one (its next generation)
#: whose first event is the fold so far: a cold process reads one log of at most this
#: many events, not every request ever made (``WORLDFLOW_LIMITER_LOG_EVENTS``).
LOG_EVENTS = max(8, int(os.environ.get("WORLDFLOW_LIMITER_LOG_EVENTS", "1000")))
#: A rate limit's past grants kept in a new generation (a re-delivered request within
#: this many seconds of its grant is still known, and granted nothing twice).
KEEP_GRANTS = 600.0

#: Grants are compared with the clock to the millisecond (clocks are floats).
EPS = 1e-3
#: Tries of one append against a limiter that others keep writing to.
MAX_RACES = 200
#: How long a throttle's window waits for the run its starter recorded (it is made right
#: after): past it, the starter is taken for dead and the window for free.
THROTTLE_GRACE = 10.0


def limiter_id(scope: str, key: str) -> str:
    digest = hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()[:40]
    return f"wf-limit-{digest}"


def generation_id(lid: str, gen: int) -> str:
    """The id of generation ``gen`` of a limiter's log (the first is the limiter's id)."""
    return lid if gen == 1 else f"{lid}-g{gen}"


def run_scope(workflow: Workflow[Any, Any], limit: Limit) -> str:
    return f"queue:{limit.name}" if limit.name else f"workflow:{workflow.name}"


def run_key(workflow: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    limit = workflow.concurrency
    assert limit is not None
    return limit_key(
        limit.key, args, kwargs, f"the concurrency limit of workflow {workflow.name!r}"
    )


class LimiterLog:
    """One limiter's log, folded (see the module docstring)."""

    def __init__(self, lid: str, scope: str = "", key: str = "") -> None:
        self.id = lid  # the current generation's log (the limiter's id, then lid-g2 ...)
        self.scope, self.key = scope, key
        self.gen = 1
        self.moved_to: str | None = None
        self.seq = 0
        self.requested: set[str] = set()
        self.active: dict[str, str] = {}  # holder -> its run, in request order
        self.asked_at: dict[str, float] = {}  # holder -> when it asked (while active)
        self.grant_at: dict[str, float] = {}
        self.last_grant: float | None = None
        self.last_start: tuple[str, float, float] | None = None  # throttle: run, at, window

    def apply(self, e: Event) -> None:
        if e.seq != self.seq + 1:
            raise CorruptLogError(f"limiter {self.id!r}: event {e.seq} follows {self.seq}")
        self.seq = e.seq
        try:
            if e.kind == LIMITER_OPENED and "state" in e.data:
                self._restore(e.data)
            elif e.kind == LIMITER_MOVED:
                self.moved_to = str(e.data["to"])
            elif e.kind == LIMIT_REQUESTED:
                holder = str(e.data["holder"])
                if holder in self.requested:
                    return
                self.requested.add(holder)
                every = e.data.get("every")
                if "window" in e.data:  # a throttle: the last run it let start
                    self.last_start = (str(e.data["run"]), e.at, float(e.data["window"]))
                elif every is None:
                    self.active[holder] = str(e.data.get("run", holder))
                    self.asked_at[holder] = e.at
                else:
                    last = self.last_grant
                    grant = e.at if last is None else max(e.at, last + float(every))
                    self.grant_at[holder] = self.last_grant = grant
            elif e.kind == LIMIT_RELEASED:
                for holder in e.data["holders"]:
                    self.active.pop(str(holder), None)
                    self.asked_at.pop(str(holder), None)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptLogError(
                f"limiter {self.id!r}: event {e.seq} is malformed ({exc})"
            ) from exc

    def snapshot(self, now: float) -> dict[str, Any]:
        """The fold, as the first event of the next generation holds it."""
        return {
            "gen": self.gen + 1,
            "active": [[h, run, self.asked_at.get(h, now)] for h, run in self.active.items()],
            "grants": [[h, at] for h, at in self.grant_at.items() if at > now - KEEP_GRANTS],
            "last_grant": self.last_grant,
            "last_start": list(self.last_start) if self.last_start is not None else None,
        }

    def _restore(self, data: dict[str, Any]) -> None:
        state = data["state"]
        self.gen = int(state["gen"])
        for holder, run, at in state["active"]:
            self.active[str(holder)] = str(run)
            self.asked_at[str(holder)] = float(at)
        self.grant_at = {str(h): float(at) for h, at in state["grants"]}
        self.requested = set(self.active) | set(self.grant_at)
        last = state["last_grant"]
        self.last_grant = None if last is None else float(last)
        start = state["last_start"]
        self.last_start = (
            None if start is None else (str(start[0]), float(start[1]), float(start[2]))
        )

    def move(self) -> None:
        """Forget this generation: the fold is read again from the next one's first event."""
        assert self.moved_to is not None
        vars(self).update(vars(LimiterLog(self.moved_to, self.scope, self.key)))

    def holders(self, n: int) -> list[str]:
        out: list[str] = []
        for holder in self.active:
            if len(out) >= n:
                break
            out.append(holder)
        return out

    def granted(self, holder: str, n: int) -> bool:
        return holder in self.holders(n)


class Limiters:
    """This runtime's view of the limiters it has used: cached folds, one lock each."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.logs: dict[str, LimiterLog] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def _synced(self, lid: str, scope: str, key: str) -> LimiterLog:
        lg = self.logs.get(lid)
        if lg is None:  # new to this process: start from the latest generation
            gen = await self._latest_generation(lid)
            lg = self.logs[lid] = LimiterLog(generation_id(lid, gen))
            lg.gen = gen
        lg.scope, lg.key = scope, key
        await self._sync(lg)
        while lg.seq >= LOG_EVENTS:  # long enough: on to a fresh log (one writer wins)
            to = generation_id(lid, lg.gen + 1)
            await self._append(lg, LIMITER_MOVED, {"to": to}, [])
            await self._sync(lg)
        return lg

    async def _latest_generation(self, lid: str) -> int:
        """The newest generation of the limiter's log that exists: a galloping then binary
        search over their ids (a few reads, however many generations there are).
        Generations are made in order and none is ever deleted (none ends)."""

        async def exists(gen: int) -> bool:
            return await self.rt.backend.get_run(generation_id(lid, gen)) is not None

        low, high = 1, 2
        while await exists(high):
            low, high = high, high * 2
        while high - low > 1:  # low exists (or is 1), high does not
            mid = (low + high) // 2
            low, high = (mid, high) if await exists(mid) else (low, mid)
        return low

    async def _sync(self, lg: LimiterLog) -> None:
        """Read what is new in the limiter's log, following it to its next generations
        (making the next one from the fold if its mover has not yet)."""
        while True:
            for e in await self.rt.backend.read_events(lg.id, lg.seq):
                lg.apply(e)
            if lg.seq == 0:
                await self._open(lg.id, {"scope": lg.scope, "key": lg.key})
            elif lg.moved_to is not None:
                state = lg.snapshot(self.rt.clock.now())
                lg.move()
                # The same fold whoever makes it: the log up to the move.
                await self._open(lg.id, {"scope": lg.scope, "key": lg.key, "state": state})
            else:
                return

    async def _open(self, log_id: str, data: dict[str, Any]) -> None:
        event = NewEvent(LIMITER_OPENED, data, self.rt.clock.now())
        info, _ = await self.rt.backend.create_run(RunCreate(log_id, LIMITER_WORKFLOW, event))
        if info.workflow != LIMITER_WORKFLOW:
            raise RuntimeError(f"run id {log_id!r} belongs to workflow {info.workflow!r}")

    async def _append(
        self, lg: LimiterLog, kind: str, data: dict[str, Any], msgs: list[Outgoing]
    ) -> bool:
        at = self.rt.clock.now()
        append = Append(
            lg.id,
            lg.seq,
            [NewEvent(kind, data, at)],
            status="running" if lg.seq == 1 else None,  # never "pending": no sweep starts it
            messages=msgs,
        )
        if (await self.rt.backend.append([append]))[0]:
            lg.apply(Event(lg.id, lg.seq + 1, kind, data, at))
            return True
        await self._sync(lg)
        return False

    def _lock(self, lid: str) -> asyncio.Lock:
        lock = self.locks.get(lid)
        if lock is None:
            lock = self.locks[lid] = asyncio.Lock()
        return lock

    async def request(
        self, lid: str, scope: str, key: str, holder: str, run: str, every: float | None = None
    ) -> tuple[LimiterLog, bool]:
        """Put ``holder`` in the limiter's queue (once); returns the log and whether this
        call wrote the request."""
        async with self._lock(lid):
            lg = await self._synced(lid, scope, key)
            data: dict[str, Any] = {"holder": holder, "run": run}
            if every is not None:
                data["every"] = every
            for _ in range(MAX_RACES):
                if holder in lg.requested:
                    return lg, False
                if await self._append(lg, LIMIT_REQUESTED, data, []):
                    return lg, True
            raise RuntimeError(f"limiter {lid!r} ({scope}): too many writers at once")

    async def release(self, lid: str, scope: str, key: str, holders: list[str], n: int) -> None:
        """Give back the slots of ``holders`` (those not released yet); the holders that
        get a slot by it are sent a ``resume`` message with the release."""
        async with self._lock(lid):
            lg = await self._synced(lid, scope, key)
            for _ in range(MAX_RACES):
                todo = [h for h in holders if h in lg.active]
                if not todo:
                    return
                before = set(lg.holders(n))
                rest = [h for h in lg.active if h not in todo][:n]
                messages = [
                    Outgoing(
                        Message(self.rt.new_id(), lg.active[h], "resume"),
                        key=f"{lg.active[h]}:limit:{h}",
                    )
                    for h in rest
                    if h not in before
                ]
                if await self._append(lg, LIMIT_RELEASED, {"holders": todo}, messages):
                    return
            raise RuntimeError(f"limiter {lid!r} ({scope}): too many writers at once")

    async def dead_holders(self, lg: LimiterLog, n: int) -> list[str]:
        """Holders of a slot that hold it no more: their run ended (or is gone), or their
        step attempt is no longer the live one."""
        dead = []
        backend = self.rt.backend
        for holder in lg.holders(n):
            run = lg.active[holder]
            info = await backend.get_run(run)
            if info is None or info.done:
                dead.append(holder)
                continue
            if holder == run:
                continue  # a run holds its slot until it ends
            _, cid, attempt = holder.rsplit("#", 2)
            state = RunState.from_events(run, await backend.read_events(run), lean=True)
            if state.done or _attempt_over(state.steps.get(int(cid)), int(attempt)):
                dead.append(holder)
        return dead

    async def poll(self, run: str, holder: str) -> None:
        """Look at the waiting run again after the World's lease, in case its wake is lost."""
        when = self.rt.clock.now() + self.rt.world.lease
        message = Message(self.rt.new_id(), run, "resume")
        await self.rt.backend.send([Outgoing(message, when, key=f"{run}:limitpoll:{holder}")])


def _attempt_over(step: StepState | None, attempt: int) -> bool:
    if step is None:  # the lean state forgot it: it ended
        return True
    if step.attempt > attempt:
        return True
    return step.attempt == attempt and step.status != "running"


_LIMITERS: weakref.WeakKeyDictionary[Runtime, Limiters] = weakref.WeakKeyDictionary()


def limiters(rt: Runtime) -> Limiters:
    found = _LIMITERS.get(rt)
    if found is None:
        found = _LIMITERS[rt] = Limiters(rt)
    return found


# -- wf.start ------------------------------------------------------------------------------


def check_start(
    workflow: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """The run's limiter key, computed before the run is created: a key function that
    raises is the caller's error, and no run is made."""
    if workflow.concurrency is None:
        return None
    return run_key(workflow, args, kwargs)


async def request_run_slot(
    rt: Runtime, workflow: Workflow[Any, Any], run_id: str, key: str
) -> None:
    """Queue a new run for its slot at ``wf.start``, so runs are granted in start order
    (the executor asks again, harmlessly, if this never happened)."""
    limit = workflow.concurrency
    assert limit is not None
    info = await rt.backend.get_run(run_id)
    if info is None or info.status != "pending":
        return
    scope = run_scope(workflow, limit)
    await limiters(rt).request(limiter_id(scope, key), scope, key, run_id, run_id)


async def throttle_start(
    rt: Runtime,
    workflow: str,
    throttle: Throttle,
    run_id: str,
    create: Callable[[str], Awaitable[str]],
) -> str:
    """``wf.start(throttle=...)``: the run of the key's current window if there is one,
    else a new one (``create(run_id)``), recorded in the throttle's log first so that
    of several starters at once exactly one makes a run."""
    lims = limiters(rt)
    scope, key = f"throttle:{workflow}", throttle.key
    lid = limiter_id(scope, key)
    deadline = rt.loop.time() + THROTTLE_GRACE
    while True:
        async with lims._lock(lid):
            lg = await lims._synced(lid, scope, key)
            for _ in range(MAX_RACES):
                last = lg.last_start
                now = rt.clock.now()
                if last is None or now >= last[1] + throttle.window:
                    data = {"holder": run_id, "run": run_id, "window": throttle.window}
                    if await lims._append(lg, LIMIT_REQUESTED, data, []):
                        break
                    continue
                info = await rt.backend.get_run(last[0])
                if info is not None:
                    return last[0]
                if now - last[1] > THROTTLE_GRACE:  # its starter died before making it
                    data = {"holder": run_id, "run": run_id, "window": throttle.window}
                    if await lims._append(lg, LIMIT_REQUESTED, data, []):
                        break
                    continue
                break  # being made by its starter now: look again shortly
            else:
                raise RuntimeError(f"throttle {scope!r}: too many writers at once")
            if lg.last_start is not None and lg.last_start[0] == run_id:
                break
        if rt.loop.time() > deadline:
            raise RuntimeError(f"throttle {scope!r}: the window's run never appeared")
        await asyncio.sleep(0.05)
    return await create(run_id)


# -- the executor's gate -----------------------------------------------------------------


class Gate:
    """What one run's executor asks before it starts the run or a step attempt."""

    def __init__(self, ex: RunExecutor) -> None:
        self.ex = ex
        self.run_ok = False
        self.run_slot: tuple[str, str, str, int] | None = None  # lid, scope, key, n
        self.acquiring: set[str] = set()
        self.ready: dict[str, float] = {}  # attempt holder -> when it may start
        self.rates: dict[str, float] = {}  # attempt holder -> its rate limit's grant
        self.slots: dict[str, tuple[str, str, str, int]] = {}  # attempt holder -> its limiter

    # -- runs ---------------------------------------------------------------------------
    def may_start_run(self, batch: _Batch, state: RunState) -> bool:
        workflow = get_workflow(state.workflow)
        limit = workflow.concurrency
        if limit is None or self.run_ok:
            return True
        if "run" in self.acquiring:
            return False
        try:
            args, kwargs = decode(state.input)
            key = run_key(workflow, tuple(args), dict(kwargs))
        except Exception as exc:
            self.ex._end(batch, "failed", None, describe_error(exc, with_traceback=False))
            return False
        scope = run_scope(workflow, limit)
        self.run_slot = (limiter_id(scope, key), scope, key, limit.n)
        self.acquiring.add("run")
        self._spawn(self._acquire_run(self.run_slot))
        return False

    async def _acquire_run(self, slot: tuple[str, str, str, int]) -> None:
        lid, scope, key, n = slot
        try:
            granted = await self._slot(lid, scope, key, self.ex.run_id, n)
        finally:
            self.acquiring.discard("run")
        if granted:
            self.run_ok = True
            self.ex.nudge()

    async def _slot(self, lid: str, scope: str, key: str, holder: str, n: int) -> bool:
        """Request a slot; True if held. Not held: a look again is asked for later."""
        lims = limiters(self.ex.rt)
        run = self.ex.run_id
        lg, fresh = await lims.request(lid, scope, key, holder, run)
        if lg.granted(holder, n):
            return True
        rt = self.ex.rt
        waited = rt.clock.now() - lg.asked_at.get(holder, rt.clock.now())
        if not fresh and waited >= rt.world.lease:
            # Waiting a lease or more (this is its look again): are the holders ahead of
            # it still holding? (Not on every wake: that would read each holder's run.)
            dead = await lims.dead_holders(lg, n)
            if dead:
                log.info("worldflow: limiter %s: releasing %d ended holder(s)", scope, len(dead))
                await lims.release(lid, scope, key, dead, n)
                if lims.logs[lid].granted(holder, n):
                    return True
        await lims.poll(run, holder)
        return False

    # -- step attempts ----------------------------------------------------------------------
    def may_start_attempt(self, batch: _Batch, step: StepState, attempt: int) -> bool:
        ex = self.ex
        options = ex._options(step)
        if options.concurrency is None and options.rate_limit is None:
            return True
        holder = f"{ex.run_id}#{step.cid}#{attempt}"
        when = self.ready.get(holder)
        if when is not None:
            return when <= batch.at + EPS
        if holder in self.acquiring:
            return False
        try:
            args, kwargs = decode(step.input)
            what = f"step {step.name!r}"
            ckey = rkey = ""
            if options.concurrency is not None:
                ckey = limit_key(options.concurrency.key, tuple(args), dict(kwargs), what)
            if options.rate_limit is not None:
                rkey = limit_key(options.rate_key, tuple(args), dict(kwargs), what)
        except Exception as exc:
            data = {
                "cid": step.cid,
                "attempt": attempt,
                "error": describe_error(exc, with_traceback=False),
            }
            ex._feed(batch, ex._record(batch, STEP_FAILED, data))
            ex.rt.loop.call_soon(ex.nudge)  # after this pass: the workflow may have moved on
            return False
        self.acquiring.add(holder)
        self._spawn(self._acquire_attempt(step, holder, attempt, ckey, rkey))
        return False

    async def _acquire_attempt(
        self, step: StepState, holder: str, attempt: int, ckey: str, rkey: str
    ) -> None:
        ex = self.ex
        options = ex._options(step)
        lims = limiters(ex.rt)
        try:
            limit = options.concurrency
            if limit is not None:
                scope = f"step:{step.name}"
                slot = (limiter_id(scope, ckey), scope, ckey, limit.n)
                if attempt > 1:  # the attempt before (retried, or lost with its worker)
                    previous = f"{ex.run_id}#{step.cid}#{attempt - 1}"
                    self.slots.pop(previous, None)
                    await lims.release(*slot[:3], [previous], limit.n)
                if not await self._slot(*slot[:3], holder, limit.n):
                    return
                self.slots[holder] = slot
            when = ex.rt.clock.now()
            rate = options.rate_limit
            if rate is not None:
                scope = f"rate:{step.name}"
                lg, _ = await lims.request(
                    limiter_id(scope, rkey), scope, rkey, holder, ex.run_id, every=rate.every
                )
                when = self.rates[holder] = lg.grant_at[holder]
            self.ready[holder] = when
            if when > ex.rt.clock.now() + EPS:
                message = Message(ex.rt.new_id(), ex.run_id, "resume")
                await ex.rt.backend.send(
                    [Outgoing(message, when, key=f"{ex.run_id}:rate:{holder}")]
                )
            else:
                ex.nudge()
        finally:
            self.acquiring.discard(holder)

    def granted_at(self, cid: int, attempt: int) -> float | None:
        """When a rate-limited attempt's turn came (recorded with its start)."""
        return self.rates.get(f"{self.ex.run_id}#{cid}#{attempt}")

    # -- releases ------------------------------------------------------------------------------
    def committed(self, batch: _Batch, state: RunState | None, ended: bool) -> None:
        """After a durable append: give back the slots of attempts it ended, and the run's
        own (and any its attempts still held) if the run ended."""
        done: list[str] = []
        for event in batch.events:
            if event.kind in (STEP_COMPLETED, STEP_FAILED, STEP_RETRYING):
                holder = f"{self.ex.run_id}#{event.data['cid']}#{event.data['attempt']}"
                self.ready.pop(holder, None)
                self.rates.pop(holder, None)
                if holder in self.slots:
                    done.append(holder)
        if ended:
            done.extend(h for h in self.slots if h not in done)
        by_limiter: dict[tuple[str, str, str, int], list[str]] = {}
        for holder in done:
            by_limiter.setdefault(self.slots.pop(holder), []).append(holder)
        if ended:
            slot = self.run_slot or (self._run_slot(state) if state is not None else None)
            if slot is not None:
                by_limiter.setdefault(slot, []).append(self.ex.run_id)
        for (lid, scope, key, n), holders in by_limiter.items():
            self._spawn(limiters(self.ex.rt).release(lid, scope, key, holders, n))

    def _run_slot(self, state: RunState) -> tuple[str, str, str, int] | None:
        try:
            workflow = get_workflow(state.workflow)
            if workflow.concurrency is None:
                return None
            args, kwargs = decode(state.input)
            key = run_key(workflow, tuple(args), dict(kwargs))
        except Exception:
            return None  # a key that cannot be computed never got a slot
        scope = run_scope(workflow, workflow.concurrency)
        return limiter_id(scope, key), scope, key, workflow.concurrency.n

    def _spawn(self, coro: Any) -> None:
        """Run limiter I/O in the background; the run is not quiet (its message not
        acknowledged) until it is done. A failure looks again shortly."""
        ex = self.ex
        ex.checking += 1

        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:
                if not ex.rt.closed:
                    log.warning("worldflow: run %r: limiter: %s; looking again", ex.run_id, exc)
                    ex.rt.loop.call_later(1.0, ex.nudge)
            finally:
                ex.checking -= 1
                ex._settle()

        ex.rt.spawn(guarded())


def step_limited(step: Step[Any, Any] | None) -> bool:
    return step is not None and (
        step.options.concurrency is not None or step.options.rate_limit is not None
    )
