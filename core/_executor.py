"""The executor of one run: inputs in, events appended, steps started.

Everything that happens to a run arrives as an *input*: a message from the
World's queue (resume, a hook payload, a cancellation) or the outcome of a
step attempt this process ran. The executor folds inputs into events, feeds
the result events to the workflow's code (kept warm between inputs, replayed
from the log only when cold), collects the commands the code makes, decides
what is due (timers, step attempts) and hands the batch to the runtime, which
group-commits it. Side effects (starting a step, waking ``result()``) happen
only after the batch is durable; if the append loses a race, the executor
reloads from the log and applies the same inputs again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from . import _children as children
from . import _remote as remote
from ._attempts import StepMetadata, run_attempt
from ._codec import decode
from ._definitions import Step, StepOptions, get_step, get_workflow
from ._errors import (
    CorruptLogError,
    HookConflict,
    SerializationError,
    WorkflowNotFound,
)
from ._events import (
    CANCEL_REQUESTED,
    CHILD_COMPLETED,
    CHILD_STARTED,
    DEADLINE_PASSED,
    HOOK_CREATED,
    HOOK_FAILED,
    HOOK_RECEIVED,
    RESULT_KINDS,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    SLEEP_FIRED,
    SLEEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_STARTED,
)
from ._failures import describe_error
from ._instance import WorkflowInstance
from ._limits_flow import LIMITER_OPENED, Gate
from ._state import RunState, StepState
from ._world import TERMINAL, Append, Event, HookInfo, Message, NewEvent, Outgoing

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["RunExecutor"]

log = logging.getLogger("worldflow")


@dataclasses.dataclass(slots=True, eq=False)
class _Input:
    message: Message | None = None
    done: asyncio.Future[None] | None = None
    attempt: tuple[int, int, bool, Any] | None = None  # cid, attempt, ok, output or exception
    remote: bool = False  # the attempt ran remotely (worldflow._remote)
    hook_taken: tuple[int, str, str] | None = None  # cid, token, the run holding it
    parked_at: float = 0.0  # a hook payload waiting for the one before it (loop time)
    park_timeout: float | None = None  # give it back after this long parked (a host's deadline)


class _Batch:
    """The events one pass appends, with the projection and side effects they imply."""

    def __init__(self, executor: RunExecutor, at: float) -> None:
        self.at = at
        self.expected_seq = executor.state.seq if executor.state else 0
        self.events: list[NewEvent] = []
        self.append = Append(executor.run_id, self.expected_seq, self.events)
        self.launch: list[tuple[int, int]] = []
        self.hooks: list[tuple[int, str]] = []  # (cid, token) created in this batch


_UNKNOWN = object()


def _payload_number(inp: _Input) -> int:
    n = inp.message.data.get("n") if inp.message is not None else None
    return n if type(n) is int else 0


class Parked(Exception):
    """A hook payload waited for the one numbered before it longer than its host could."""


class RunExecutor:
    def __init__(self, runtime: Runtime, run_id: str) -> None:
        self.rt = runtime
        self.run_id = run_id
        self.state: RunState | None = None
        self.instance: WorkflowInstance | None = None
        self.inputs: list[_Input] = []
        self.inflight: tuple[_Batch, list[_Input]] | None = None
        self.loading = False
        self.dead_workers: set[str] = set()
        self.running: dict[int, tuple[int, Any]] = {}  # cid -> (attempt, canceller)
        self.last_at = 0.0
        self.stale = False
        self.retry_delay = 0.1  # before loading again after a failure
        self.parked: list[_Input] = []  # hook payloads that came before the one due first
        self.unsent = 0  # appends whose messages are not sent yet (outbox)
        self.checking = 0  # hook-token checks under way (they may record hook_failed)
        self.holder: str | object | None = _UNKNOWN  # the holder the last append recorded
        self._quiet: list[asyncio.Future[None]] = []
        self._sent: list[asyncio.Future[None]] = []  # waiting for unsent == 0
        self.gate = Gate(self)  # concurrency and rate limits (worldflow._limits_flow)

    # -- inputs ------------------------------------------------------------
    async def handle(
        self, message: Message, *, look_again: bool = False, park_timeout: float | None = None
    ) -> None:
        """Apply a queue message; returns once its effect is durable.

        ``look_again``: reload the run from its log first, so that whether the
        workers running its steps are alive is looked at afresh. ``park_timeout``:
        a hook payload that must wait for an earlier one raises :class:`Parked`
        after this long instead of waiting on (its message comes again).
        """
        seq = message.data.get("seq") if message.kind == "resume" else None
        behind = type(seq) is int and self.state is not None and self.state.seq < seq
        if look_again or behind or (self.state is not None and self.others(self.state)):
            # Whether those workers are still alive is known only as of the last
            # load: look again (the World may have adopted the run from a dead one).
            self.stale = True
        done = self.rt.loop.create_future()
        inp = _Input(message=message, done=done, park_timeout=park_timeout)
        self.inputs.append(inp)
        self.kick()
        try:
            await done
        except asyncio.CancelledError:
            self._withdraw(inp)  # the caller gave up (a host's deadline): it comes again
            raise

    def _withdraw(self, inp: _Input) -> None:
        for queue in (self.inputs, self.parked):
            if inp in queue:
                queue.remove(inp)

    async def quiet(self) -> None:
        """Return once nothing of this run is in flight here: no input, batch, load,
        step attempt of this process or unsent message."""
        if not self.idle:
            await self._wait(self._quiet)

    async def _wait(self, waiters: list[asyncio.Future[None]]) -> None:
        """Wait in ``waiters`` until :meth:`_wake` wakes them."""
        fut = self.rt.loop.create_future()
        waiters.append(fut)
        try:
            await fut
        finally:
            if fut in waiters:
                waiters.remove(fut)

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    def _settle(self) -> None:
        if self._quiet and self.idle:
            self._wake(self._quiet)

    def sent(self, delta: int) -> None:
        """The runtime's outbox: +1 when an append's messages are to be sent, -1 when sent."""
        self.unsent += delta
        if not self.unsent:
            self._wake(self._sent)
        self._settle()

    async def outbox_sent(self) -> None:
        """Return once every message of this run's appends made here has been sent
        (a World whose queue is not in its store's transaction sends them after)."""
        if self.unsent:
            await self._wait(self._sent)

    def nudge(self) -> None:
        """Look at the run again (a limiter granted it something)."""
        if not self.rt.closed:
            self.inputs.append(_Input())
            self.kick()

    def attempt_finished(self, cid: int, attempt: int, ok: bool, value: Any) -> None:
        self.running.pop(cid, None)
        self.inputs.append(_Input(attempt=(cid, attempt, ok, value)))
        self.kick()

    async def remote_finished(self, cid: int, attempt: int, ok: bool, value: Any) -> None:
        """The outcome of a remote attempt that ran in this process; returns once durable."""
        done = self.rt.loop.create_future()
        self.inputs.append(_Input(done=done, attempt=(cid, attempt, ok, value), remote=True))
        self.kick()
        await done

    @property
    def idle(self) -> bool:
        return not (
            self.inputs
            or self.inflight
            or self.loading
            or self.running
            or self.unsent
            or self.checking
        )

    def prime(self, first: Event) -> None:
        """A run this process has just created: its log is that one event, no need to read it."""
        if self.state is None and not self.loading and not self.inputs and self.instance is None:
            self.state = RunState.from_events(self.run_id, [first], lean=True)
            self.last_at = first.at

    def forget(self) -> None:
        """Drop the state and the warm code (torn down, so it cannot act): the next
        input reloads the run from its log."""
        if self.instance is not None:
            self.instance.close()
        self.state = self.instance = None

    async def _check_hooks(self, hooks: list[tuple[int, str]]) -> None:
        """A token another live run already held stayed with it: fail our hook."""
        try:
            for cid, token in hooks:
                try:
                    holder = await self.rt.backend.get_hook(token)
                except Exception:
                    log.exception("worldflow: cannot check hook %r of run %r", token, self.run_id)
                    continue
                if holder is not None and holder.run_id != self.run_id:
                    self.inputs.append(_Input(hook_taken=(cid, token, holder.run_id)))
                    self.kick()
        finally:
            self.checking -= 1
            self._settle()

    def others(self, state: RunState) -> set[str]:
        """Other workers that run attempts of this run's steps, as the state says."""
        me = self.rt.worker_id
        return {
            s.worker
            for s in state.open_steps.values()
            if s.status == "running" and s.worker and s.worker != me
        }

    def _holder(self, state: RunState) -> str | None:
        """The worker whose attempts the run waits on: this one if it runs any, else the
        one that started the latest running attempt; None when no attempt runs."""
        me = self.rt.worker_id
        latest: StepState | None = None
        for s in state.open_steps.values():
            if s.status == "running" and s.worker:  # a remote attempt has none
                if s.worker == me:
                    return me
                if latest is None or s.cid > latest.cid:
                    latest = s
        return None if latest is None else latest.worker

    def kick(self) -> None:
        if self.inflight is not None or self.loading or not self.inputs:
            self._settle()
            return
        if self.stale:
            self.stale = False
            self.forget()
        if self.state is None:
            self.loading = True
            self.rt.spawn(self._load())
            return
        self._pass()

    async def _load(self) -> None:
        events: list[Event] = []
        try:
            events = await self.rt.backend.read_events(self.run_id)
            if not events or events[0].kind == LIMITER_OPENED:  # a limiter's log: not a run
                self.loading = False
                self._reject(LookupError(f"no run with id {self.run_id!r}"), retry=False)
                self.rt.forget(self.run_id)
                return
            state = RunState.from_events(self.run_id, events, lean=True)
            if not state.done:
                get_workflow(state.workflow)  # WorkflowNotFound: another process may have it
            self.dead_workers = await self._dead_workers(state)
            self.retry_delay = 0.1
            self.last_at = events[-1].at
            self.forget()
            self.state = state
            self.holder = _UNKNOWN
            if state.status == "running" and not state.done:
                self.instance = self._replay(state, events)
        except CorruptLogError as exc:
            # Stored data that cannot be read back is not a reason to try forever in
            # silence, nor a code change: the run ends failed, saying which event.
            self.forget()
            self.rt.spawn(self._fail_corrupt(exc, events))
            return
        except Exception as exc:
            if isinstance(exc, SerializationError):  # another process may have the class
                log.warning("worldflow: cannot replay run %r yet: %s", self.run_id, exc)
            elif not self.rt.closed and not isinstance(exc, WorkflowNotFound):
                log.exception("worldflow: cannot load run %r", self.run_id)
            self.loading = False
            self._reject(exc, retry=True)  # tries again later, not at once
            return
        self.loading = False
        self.kick()

    async def _dead_workers(self, state: RunState) -> set[str]:
        dead: set[str] = set()
        now = time.time()
        for worker in self.others(state):
            expiry = await self.rt.world.workers.expiry(worker)
            if expiry is None or expiry < now:
                dead.add(worker)
        return dead

    async def _fail_corrupt(self, exc: CorruptLogError, events: list[Event]) -> None:
        """End a run whose log cannot be read back as failed with the CorruptLogError, so
        that ``runs show`` says why (and its messages are acknowledged): appended after
        the last event, which the run's projection knows even when the log cannot be read.
        Hooks it created (as far as the log reads) are removed with it."""
        log.error("worldflow: run %r cannot be read; it is failed", self.run_id, exc_info=exc)
        ok = False
        try:
            info = await self.rt.backend.get_run(self.run_id)
            if info is not None and not info.done and info.last_seq > 0:
                error = describe_error(exc, with_traceback=False)
                tokens = [
                    e.data["token"]
                    for e in events
                    if e.kind == HOOK_CREATED
                    and isinstance(e.data, dict)
                    and isinstance(e.data.get("token"), str)
                ]
                at = max(self.rt.clock.now(), events[-1].at if events else info.updated_at)
                append = Append(
                    self.run_id,
                    info.last_seq,
                    [NewEvent(RUN_FAILED, {"error": error}, at)],
                    status="failed",
                    error=error,
                    hooks_removed=tokens,
                    holder=None,
                    holder_changed=True,
                )
                link = children.parent_of(events)
                if link is not None:  # a child: its parent must hear of its end too
                    body = {"cid": link[1], "id": self.run_id, "status": "failed", "error": error}
                    message = Message(self.rt.new_id(), link[0], "child_ended", body)
                    key = f"{link[0]}:child:{link[1]}:ended"
                    append.messages.append(Outgoing(message, key=key))
                ok = (await self.rt.backend.append([append]))[0]
            else:
                ok = info is None or info.done  # gone, or ended: nothing more to do
        except Exception as write_error:
            log.warning("worldflow: cannot record run %r as failed (%s)", self.run_id, write_error)
        self.loading = False
        self._reject(exc, retry=not ok)  # not recorded (a race, the store): look again later
        if ok:
            self.rt.run_ended(self.run_id)

    def _reject(self, exc: BaseException, *, retry: bool) -> None:
        """Loading failed: messages go back to the World (redelivered later); results
        of this process's step attempts stay, and loading is tried again later."""
        inputs, self.inputs = self.inputs, []
        for inp in inputs:
            if inp.done is None:
                if retry:
                    self.inputs.append(inp)
            elif not inp.done.done():
                if retry:
                    inp.done.set_exception(exc)
                else:
                    inp.done.set_result(None)
        self.state = None
        if self.inputs and not self.rt.closed:
            self.rt.loop.call_later(self.retry_delay, self.kick)
            self.retry_delay = min(self.retry_delay * 2, 30.0)
        self._settle()

    def _replay(self, state: RunState, events: list[Event]) -> WorkflowInstance:
        instance = self._new_instance(state.workflow, list(state.commands))
        instance.replaying = True
        fresh = remote.fresh_from(events)  # remote results the code has not seen yet
        try:
            for i, event in enumerate(events):
                if i == fresh:
                    instance.replaying = False  # what the code does from here is new
                if event.kind == RUN_STARTED:
                    instance.start(event.at, state.input)
                elif event.kind in RESULT_KINDS:
                    if instance.done:
                        break
                    instance.feed(event)
        except BaseException:
            instance.close()  # torn down on the workflow loop, not by the garbage collector
            raise
        finally:
            instance.replaying = False
        instance.check_replayed()
        # Commands made during replay are in the log, except those that follow a result
        # appended by another writer (a remote step's): the next pass records them.
        return instance

    def _new_instance(self, workflow: str, recorded: list[Event]) -> WorkflowInstance:
        return WorkflowInstance(
            self.run_id, get_workflow(workflow), recorded, self.rt.world.webhook_url
        )

    # -- one pass: inputs -> events -> append --------------------------------
    def _pass(self) -> None:
        state = self.state
        assert state is not None
        inputs, self.inputs = self.inputs, []
        if self.parked:  # looked at again in every pass: the one they wait for may be here
            inputs[:0], self.parked = self.parked, []
        if state.done and self.inflight is None:
            self._finish_inputs(inputs)
            return
        at = max(self.rt.clock.now(), self.last_at)
        batch = _Batch(self, at)
        try:
            if self.instance is not None and self.instance.new_commands:
                self._collect(batch)  # made on replay past the log's end (worldflow._remote)
            for inp in inputs:
                self._apply(batch, inp)
            self._advance(batch)
        except CorruptLogError as exc:
            self.inputs[:0] = [i for i in inputs if i not in self.parked]
            self.forget()
            self.loading = True
            self.rt.spawn(self._fail_corrupt(exc, []))
            return
        except SerializationError as exc:  # another process may have the class
            log.warning("worldflow: run %r: %s; trying again later", self.run_id, exc)
            self.inputs[:0] = [i for i in inputs if i not in self.parked]
            self.forget()
            self._reject(exc, retry=True)
            return
        except Exception:
            log.exception("worldflow: internal error in run %r", self.run_id)
            self.inputs[:0] = [i for i in inputs if i not in self.parked]
            self.forget()
            self._reject(RuntimeError(f"internal error in run {self.run_id!r}"), retry=True)
            return
        if self.parked:  # inputs parked in this pass wait on: not finished below
            inputs = [i for i in inputs if i not in self.parked]
        holder = self._holder(state)
        if holder != self.holder and (batch.events or self.holder is not _UNKNOWN):
            batch.append.holder = holder
            batch.append.holder_changed = True
        else:
            batch.append.holder = holder
        if not batch.events:
            self._finish_inputs(inputs)
            self._settle()
            return
        self.last_at = at
        self.inflight = (batch, inputs)
        self.rt.submit(self, batch.append)

    def _finish_inputs(self, inputs: list[_Input]) -> None:
        for inp in inputs:
            if inp.done is not None and not inp.done.done():
                inp.done.set_result(None)

    def committed(self, ok: bool) -> None:
        """Called by the runtime once the in-flight batch was appended (or lost its race)."""
        assert self.inflight is not None
        batch, inputs = self.inflight
        self.inflight = None
        if ok:
            self.holder = batch.append.holder
        if not ok:
            log.debug("worldflow: run %r: append lost a race; reloading", self.run_id)
            self.forget()
            self.inputs[:0] = inputs
            self.kick()
            return
        if self.rt.tracing is not None and self.state is not None:
            self.rt.tracing.committed(self.state, batch.events)
        self.gate.committed(batch, self.state, batch.append.status in TERMINAL)
        for cid, attempt in batch.launch:
            self._launch(cid, attempt)
        if batch.hooks:
            self.checking += 1  # the run is not quiet until its new hooks are checked
            self.rt.spawn(self._check_hooks(batch.hooks))
        self._finish_inputs(inputs)
        if batch.append.status in TERMINAL:
            self.abandon()  # steps still running for an ended run have no one to report to
            self.rt.run_ended(self.run_id)
        elif self.rt.always_replay:
            self.forget()  # the next input replays the run from its log
        self.kick()

    # -- folding inputs into events ------------------------------------------
    def _record(self, batch: _Batch, kind: str, data: dict[str, Any]) -> Event:
        state = self.state
        assert state is not None
        event = Event(self.run_id, state.seq + 1, kind, data, batch.at)
        state.apply(event)
        batch.events.append(NewEvent(kind, data, batch.at))
        return event

    def _feed(self, batch: _Batch, event: Event) -> None:
        if self.instance is not None:
            self.instance.feed(event)
            self._collect(batch)

    def _collect(self, batch: _Batch) -> None:
        assert self.instance is not None
        for kind, data in self.instance.take_commands():
            self._record(batch, kind, data)
            if kind == HOOK_CREATED:
                batch.append.hooks_created.append(
                    HookInfo(data["token"], self.run_id, bool(data["webhook"]))
                )
                batch.hooks.append((data["cid"], data["token"]))
            elif kind == SLEEP_STARTED:
                self._wake_at(batch, float(data["until"]), f"timer:{data['cid']}")
            elif kind == CHILD_STARTED:
                batch.append.messages.append(children.start_message(self.rt, self.run_id, data))

    def _wake_at(self, batch: _Batch, when: float, what: str) -> None:
        message = Message(self.rt.new_id(), self.run_id, "resume")
        batch.append.messages.append(Outgoing(message, when, key=f"{self.run_id}:{what}"))

    def _apply(self, batch: _Batch, inp: _Input) -> None:
        state = self.state
        assert state is not None
        if inp.message is not None:
            message = inp.message
            if message.id in state.seen or state.done:
                return
            if message.kind == "hook":
                token = message.data["token"]
                hook = state.hooks.get(token)
                if hook is None:
                    log.warning("worldflow: run %r has no hook %r; dropped", self.run_id, token)
                    return
                n = message.data.get("n")
                if type(n) is int and n > hook.next and not self._gap_given_up(inp):
                    self.parked.append(inp)  # its predecessor has not come yet: wait for it
                    if inp.park_timeout is not None:
                        self.rt.loop.call_later(inp.park_timeout, self._give_back, inp)
                    return
                data = {"token": token, "payload": message.data["payload"], "id": message.id}
                if type(n) is int:
                    data["n"] = n
                if "trace" in message.data:
                    data["trace"] = message.data["trace"]
                self._feed(batch, self._record(batch, HOOK_RECEIVED, data))
                if self.parked:  # the one a parked payload waited for may be this one
                    waiting, self.parked = self.parked, []
                    for other in sorted(waiting, key=_payload_number):
                        self._apply(batch, other)
            elif message.kind == "cancel" and not state.cancel_requested:
                self._feed(batch, self._record(batch, CANCEL_REQUESTED, {"id": message.id}))
                batch.append.messages += children.cancel_children(self.rt, state)
            elif message.kind == "child_ended":
                self._child_ended(batch, message.data)
            elif message.kind == "wake":
                wanted = message.data.get("cid")
                for cid in sorted(state.timers):
                    if wanted is None or cid == wanted:
                        data = {"cid": cid, "early": True, "id": message.id}
                        if "trace" in message.data:
                            data["trace"] = message.data["trace"]
                        self._feed(batch, self._record(batch, SLEEP_FIRED, data))
            return
        if inp.hook_taken is not None:
            cid, token, holder = inp.hook_taken
            hook = state.hooks.get(token)
            if hook is not None and hook.cid == cid:
                error = describe_error(HookConflict(token, holder), with_traceback=False)
                data = {"cid": cid, "token": token, "error": error}
                self._feed(batch, self._record(batch, HOOK_FAILED, data))
            return
        if inp.attempt is None:
            return  # a nudge: only look at what is due
        cid, attempt, ok, value = inp.attempt
        step = state.steps.get(cid)
        if (
            step is None
            or step.status != "running"
            or step.attempt != attempt
            or step.worker != (None if inp.remote else self.rt.worker_id)
        ):
            return  # a late result of an attempt that was timed out, lost or superseded
        if ok:
            data = {"cid": cid, "attempt": attempt, "output": value}
            self._feed(batch, self._record(batch, STEP_COMPLETED, data))
            return
        kind, data = remote.failure_event(self._options(step), cid, attempt, value, batch.at)
        if kind == STEP_FAILED:
            self._feed(batch, self._record(batch, STEP_FAILED, data))
            return
        self._record(batch, STEP_RETRYING, data)
        self._wake_at(batch, data["retry_at"], f"retry:{cid}:{attempt + 1}")

    def _child_ended(self, batch: _Batch, body: dict[str, Any]) -> None:
        state = self.state
        assert state is not None
        cid = body.get("cid")
        child = state.children.get(cid) if type(cid) is int else None
        if child is None or child.id != body.get("id"):
            return  # ended already (a redelivery), or not a child of this run
        data: dict[str, Any] = {"cid": cid, "id": child.id, "status": body.get("status")}
        if body.get("status") == "completed":
            data["output"] = body.get("output")
        elif body.get("status") == "failed":
            data["error"] = body.get("error")
        elif body.get("status") != "cancelled":
            log.warning("worldflow: run %r: child %r ended %r?", self.run_id, child.id, body)
            return
        self._feed(batch, self._record(batch, CHILD_COMPLETED, data))

    def _gap_given_up(self, inp: _Input) -> bool:
        """A payload has waited for its predecessor long enough: apply it anyway.

        The predecessor's sender may have died between numbering it and sending
        it; one that comes later still is applied when it comes (out of order,
        never lost)."""
        now = self.rt.loop.time()
        if not inp.parked_at:
            inp.parked_at = now
            self.rt.loop.call_later(self.rt.hook_gap + 0.01, self._unpark)
            return False
        return now - inp.parked_at >= self.rt.hook_gap

    def _give_back(self, inp: _Input) -> None:
        if inp in self.parked:
            self.parked.remove(inp)
            # The payload before it may be in the log already, written by another
            # process: read the log again before the next one is looked at.
            self.stale = True
            if inp.done is not None and not inp.done.done():
                inp.done.set_exception(Parked())

    def _unpark(self) -> None:
        if self.parked and not self.rt.closed:
            waiting, self.parked = self.parked, []
            self.inputs[:0] = waiting
            self.kick()

    def _options(self, step: StepState) -> StepOptions:
        found = self._step_object(step)
        return found.options if found is not None else StepOptions()

    def _step_object(self, step: StepState) -> Step[Any, Any] | None:
        if self.instance is not None:
            found = self.instance.steps.get(step.cid)
            if found is not None:
                return found
        return get_step(step.name)

    # -- deciding what is due --------------------------------------------------
    def _advance(self, batch: _Batch) -> None:
        state = self.state
        assert state is not None
        if state.done:
            return
        passed = state.deadline is not None and state.deadline <= batch.at
        if state.status == "pending":
            if state.cancel_requested:
                self._end(batch, "cancelled", None, None)
                return
            if passed:  # never started before its deadline
                assert state.deadline is not None
                self._record(batch, DEADLINE_PASSED, {"deadline": state.deadline})
                error = children.deadline_error(self.run_id, state.workflow, state.deadline)
                self._end(batch, "failed", None, error)
                return
            if not self.gate.may_start_run(batch, state):
                return  # waits for a slot of its concurrency limit, pending
            event = self._record(batch, RUN_STARTED, {})
            batch.append.status = "running"
            if state.deadline is not None:  # a durable timer, like a sleep's
                self._wake_at(batch, state.deadline, "deadline")
            self.instance = self._new_instance(state.workflow, [])
            self.instance.start(event.at, state.input)
            self._collect(batch)
        instance = self.instance
        assert instance is not None
        if passed and not state.timed_out and not instance.done:
            self._feed(batch, self._record(batch, DEADLINE_PASSED, {"deadline": state.deadline}))
        progress = True
        while progress and not instance.done:
            progress = False
            for cid, until in sorted(state.timers.items(), key=lambda item: item[1]):
                if until <= batch.at:
                    self._feed(batch, self._record(batch, SLEEP_FIRED, {"cid": cid}))
                    progress = True
            for step in list(state.open_steps.values()):
                if step.status == "running" and self._lost(step, batch.at):
                    progress |= self._retry_lost(batch, step)
        if instance.done:
            outcome = instance.outcome()
            self._end(batch, outcome.status, outcome.output, outcome.error)
            return
        for step in list(state.open_steps.values()):
            due = step.status == "scheduled" or (
                step.status == "retrying"
                and step.retry_at is not None
                and step.retry_at <= batch.at
            )
            if due:
                self._start_attempt(batch, step)

    def _lost(self, step: StepState, now: float) -> bool:
        if step.worker == self.rt.worker_id:
            running = self.running.get(step.cid)
            return running is None or running[0] != step.attempt
        if step.worker in self.dead_workers:
            return True
        return step.lease_until is not None and step.lease_until < now

    def _retry_lost(self, batch: _Batch, step: StepState) -> bool:
        """An attempt whose worker is gone counts as an attempt; retry or fail the step."""
        if step.attempt > self._options(step).max_retries:
            error = {
                "type": "StepLost",
                "message": f"attempt {step.attempt} of step {step.name!r} was lost: its "
                f"worker {step.worker} stopped before it finished",
                "traceback": "",
            }
            data = {"cid": step.cid, "attempt": step.attempt, "error": error}
            self._feed(batch, self._record(batch, STEP_FAILED, data))
            return True
        self._start_attempt(batch, step)
        return False

    def _start_attempt(self, batch: _Batch, step: StepState) -> None:
        options = self._options(step)
        timeout = options.timeout
        attempt = step.attempt + 1
        if not self.gate.may_start_attempt(batch, step, attempt):
            return  # waits for a concurrency slot or its rate limit's turn
        data = {
            "cid": step.cid,
            "attempt": attempt,
            "worker": self.rt.worker_id,
            "lease_until": None if timeout is None else batch.at + timeout,
        }
        granted = self.gate.granted_at(step.cid, attempt)
        if granted is not None:
            data["granted"] = granted  # its rate limit's turn: the attempt starts at or after it
        if remote.chosen(options):  # a message any worker takes; nothing runs here
            self._record(
                batch, STEP_STARTED, remote.started(self.rt, batch.append, self.run_id, data)
            )
            return
        self._record(batch, STEP_STARTED, data)
        batch.launch.append((step.cid, attempt))

    def _end(self, batch: _Batch, status: str, output: Any, error: dict[str, Any] | None) -> None:
        state = self.state
        assert state is not None
        if status == "completed":
            self._record(batch, RUN_COMPLETED, {"output": output})
        elif status == "failed":
            self._record(batch, RUN_FAILED, {"error": error})
        else:
            self._record(batch, RUN_CANCELLED, {})
        batch.append.status = state.status  # type: ignore[assignment]
        batch.append.output = output
        batch.append.error = error
        batch.append.hooks_removed = list(state.hooks)
        if state.children:  # children still running end with it (detached ones aside)
            batch.append.messages += children.cancel_children(self.rt, state)
        if state.parent is not None:
            ended = children.ended_message(self.rt, state, status, output, error)
            if ended is not None:
                batch.append.messages.append(ended)
        if self.instance is not None:
            self.instance.close()

    # -- running steps -----------------------------------------------------------
    def _launch(self, cid: int, attempt: int) -> None:
        state = self.state
        if state is None:
            return
        step_state = state.steps[cid]
        step = self._step_object(step_state)

        def done(ok: bool, value: Any) -> None:
            self.attempt_finished(cid, attempt, ok, value)

        if step is None:
            exc = WorkflowNotFound(step_state.name)
            exc.args = (f"step {step_state.name!r} is not registered in this process",)
            self.running[cid] = (attempt, None)
            self.rt.loop.call_soon(done, False, exc)
            return
        try:
            args, kwargs = decode(step_state.input)
        except Exception as exc:
            self.running[cid] = (attempt, None)
            self.rt.loop.call_soon(done, False, exc)
            return
        meta = StepMetadata(f"{self.run_id}:{cid}", attempt, self.run_id, step.name)
        tracing = self.rt.tracing
        if tracing is None:
            cancel = run_attempt(self.rt.loop, step, args, kwargs, meta, done)
        else:
            with tracing.attempt(state, step.name, meta.step_id, attempt) as end:

                def traced(ok: bool, value: Any) -> None:
                    end(ok, value)
                    done(ok, value)

                cancel = run_attempt(self.rt.loop, step, args, kwargs, meta, traced)
        self.running[cid] = (attempt, cancel)

    def abandon(self) -> None:
        """Stop async attempts (sync ones cannot be stopped): the run ended, or the
        runtime is closing."""
        for _, cancel in list(self.running.values()):
            if cancel is not None:
                cancel()
        self.running.clear()
        self._settle()
