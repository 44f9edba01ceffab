"""The runtime: one per event loop, between the public API and a World.

It owns the warm cache of run executors, group-commits their batches (all
the appends that pile up during one commit go into the next, one storage
call for many runs), and answers the API's questions (start a run, wait for
its result, resume a hook, cancel). A *serving* runtime also takes the
World's messages (:mod:`worldflow._delivery`), heartbeats and adopts the runs
of workers that died (:mod:`worldflow._sweeper`), and answers webhooks on an
embedded World's local port (:mod:`worldflow._intake`). A client runtime
(``serve=False``) only starts, looks at and signals runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from ._backend import Backend
from ._codec import decode, encode
from ._errors import HookNotFound, RunCancelled, RunFailed, RunNotFound
from ._events import EventKind
from ._executor import RunExecutor
from ._hooks import WebhookRequest
from ._otel import current_traceparent, tracing
from ._world import (
    WEBHOOK_PREFIX,
    Append,
    Delivery,
    Disposition,
    Event,
    Message,
    NewEvent,
    Outgoing,
    RunCreate,
    RunInfo,
    World,
)

__all__ = ["Runtime", "new_run_id"]

log = logging.getLogger("worldflow")

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _base32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def new_run_id() -> str:
    """A run id that sorts by creation time: ``wrun_`` + 10 time + 16 random chars."""
    return "wrun_" + _base32(int(time.time() * 1000), 10) + _base32(secrets.randbits(80), 16)


class Runtime:
    """Runs workflows against one World on the running event loop.

    ``serve``: take the World's messages and execute runs (a worker); False
    for a client that only starts, looks at and signals runs. ``hook_gap``:
    how long a hook payload waits for the one numbered before it before it is
    applied anyway. ``start_safety``: on a World whose queue is not in its
    store, a run started by a serving process starts right there, with a copy
    of its start message due this many seconds later in case the process dies.
    """

    def __init__(
        self,
        world: World,
        *,
        always_replay: bool = False,
        max_cached: int = 10_000,
        serve: bool = True,
        hook_gap: float = 60.0,
        start_safety: float = 60.0,
    ):
        self.world = world
        self.backend = Backend(world)
        self.backend.on_unsent = self._unsent
        self.clock = world.clock
        self.worker_id = world.worker_id
        self.always_replay = always_replay
        self.max_cached = max_cached
        self.serve = serve
        self.hook_gap = hook_gap
        self.start_safety = start_safety
        self.loop = asyncio.get_running_loop()
        self.lease_until = 0.0  # wall-clock time until which this worker's heartbeat holds
        self._executors: OrderedDict[str, RunExecutor] = OrderedDict()
        self._pending: list[tuple[RunExecutor, Append]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._ended: dict[str, list[asyncio.Future[None]]] = {}
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}-{secrets.token_hex(4)}-"
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._webhooks: Any = None
        self.tracing = tracing()  # None unless OpenTelemetry is installed and configured

    def __repr__(self) -> str:
        return f"<Runtime {self.world!r} serve={self.serve}>"

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if not self.serve:
            return
        from ._sweeper import heartbeat_and_sweep

        caps = self.world.capabilities
        if caps.max_attempt_seconds is not None:
            from ._limits import step_limit_problems

            for problem in step_limit_problems(caps.max_attempt_seconds, caps.host_limit):
                log.warning("worldflow: %s", problem)
        await self.heartbeat()
        self._sweeper = self.loop.create_task(heartbeat_and_sweep(self))
        schedules = sys.modules.get("worldflow.schedules")  # loaded by @wf.schedule's users
        if schedules is not None and schedules._SCHEDULES:
            self.spawn(schedules.ensure(self))
        if self.world.webhook_listen is not None:
            from ._intake import WebhookServer

            host, port = self.world.webhook_listen
            self._webhooks = await WebhookServer.open(
                self, host, port, max_body=self.world.max_webhook_bytes
            )
        await self.world.queue.start(self.deliver)

    async def heartbeat(self) -> None:
        """Prove this worker alive for the World's lease from now."""
        until = time.time() + self.world.lease
        await self.world.workers.heartbeat(self.worker_id, until)
        self.lease_until = until

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
        for task in (self._sweeper, *self._tasks):
            if task is not None:
                task.cancel()
        if self._webhooks is not None:
            await self._webhooks.close()
        try:
            await self.world.queue.close()
        finally:
            for executor in self._executors.values():
                executor.abandon()
                executor.forget()
            await self.backend.close()
            if self.serve and self._started:
                # Gone now: other workers adopt what this one held at once, not after its lease.
                try:
                    await self.world.workers.heartbeat(self.worker_id, time.time() - 1)
                except Exception as exc:
                    log.debug("worldflow: could not record this worker's end (%s)", exc)
            await self.world.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task of the engine's, keeping a reference until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def closed(self) -> bool:
        return self._closed

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    # -- the World's entry point ---------------------------------------------
    async def deliver(
        self, delivery: Delivery, *, hold: float | None = None, deadline: float | None = None
    ) -> Disposition:
        """Handle one delivered message and say what the World should do with it.

        ``hold``: how long this host may hold a message that came early (default
        the World's ``hold``); ``deadline``: the loop time by which the host must
        answer (a Lambda invocation's end), None for no limit.
        """
        from ._delivery import deliver

        return await deliver(self, delivery, hold=hold, deadline=deadline)

    async def handle(self, message: Message) -> None:
        """Apply one message; returns once it is durable (tests drive runs with it)."""
        if message.kind == "start_child":
            from ._children import start_child

            await start_child(self, message)
            return
        await self.executor(message.run_id).handle(message)

    def executor(self, run_id: str) -> RunExecutor:
        executor = self._executors.get(run_id)
        if executor is None:
            executor = self._executors[run_id] = RunExecutor(self, run_id)
            if len(self._executors) > self.max_cached:
                self._evict()
        else:
            self._executors.move_to_end(run_id)
        return executor

    def _unsent(self, run_id: str, delta: int) -> None:
        executor = self._executors.get(run_id)
        if executor is not None:
            executor.sent(delta)

    def _evict(self) -> None:
        """Drop the least recently used idle runs (they replay when next needed),
        down to 90% of the cache so that this does not run on every new run."""
        target = self.max_cached * 9 // 10
        for run_id in list(self._executors):
            if len(self._executors) <= target:
                return
            executor = self._executors[run_id]
            if executor.idle and not executor.parked:
                executor.forget()
                del self._executors[run_id]

    # -- group commit ------------------------------------------------------------
    def submit(self, executor: RunExecutor, append: Append) -> None:
        """Queue a batch for the next group commit (at the next turn of the loop)."""
        self._pending.append((executor, append))
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._flush())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _flush(self) -> None:
        """One long-lived task commits whatever piled up while the last commit ran."""
        delay = 0.01
        try:
            while not self._closed:
                if not self._pending:
                    self._wake = self.loop.create_future()
                    await self._wake
                    continue
                items, self._pending = self._pending, []
                try:
                    results = await self.backend.append([append for _, append in items])
                except Exception:
                    if self._closed:
                        return
                    failed = await self._one_by_one(items) if len(items) > 1 else items
                    if not failed:
                        continue
                    log.exception(
                        "worldflow: append of run(s) %s failed; retrying in %.2fs",
                        ", ".join(sorted({repr(e.run_id) for e, _ in failed})[:5]),
                        delay,
                    )
                    self._pending[:0] = failed
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.01
                for (executor, _), ok in zip(items, results, strict=True):
                    executor.committed(ok)
        finally:
            self._flusher = self._wake = None

    async def _one_by_one(
        self, items: list[tuple[RunExecutor, Append]]
    ) -> list[tuple[RunExecutor, Append]]:
        """A group commit failed: commit its runs one at a time, so that one run's bad
        append (a store that refuses its data) does not hold up every other run.
        Returns what failed alone (retried later); the rest is committed."""
        failed: list[tuple[RunExecutor, Append]] = []
        runs: dict[str, list[tuple[RunExecutor, Append]]] = {}
        for item in items:  # a run's appends stay together: they form a chain
            runs.setdefault(item[1].run_id, []).append(item)
        for chain in runs.values():
            try:
                results = await self.backend.append([append for _, append in chain])
            except Exception:
                if self._closed:
                    return []
                failed += chain
                continue
            for (executor, _), ok in zip(chain, results, strict=True):
                executor.committed(ok)
        return failed

    @property
    def idle(self) -> bool:
        """No step attempt of this process is running and every batch is committed."""
        return not self._pending and all(e.idle for e in self._executors.values())

    async def drain(self, timeout: float) -> bool:
        """Wait until :attr:`idle`, at most ``timeout`` seconds; True if it got there."""
        deadline = self.loop.time() + timeout
        while not self.idle:
            if self.loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def forget(self, run_id: str) -> None:
        """Drop an executor with nothing to do (a message for a run that does not exist)."""
        executor = self._executors.get(run_id)
        if executor is not None and executor.idle and not executor.parked:
            del self._executors[run_id]

    def run_ended(self, run_id: str) -> None:
        for fut in self._ended.pop(run_id, ()):
            if not fut.done():
                fut.set_result(None)
        executor = self._executors.get(run_id)
        if executor is not None and executor.idle and not executor.parked:
            del self._executors[run_id]

    # -- what the public API asks ------------------------------------------------
    async def start_run(
        self,
        workflow: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_id: str | None,
        *,
        conflict: bool = False,
        deadline: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        tree = encode([list(args), kwargs], where=f"the arguments of workflow {workflow!r}")
        return await self.create_run(
            workflow, tree, run_id, conflict=conflict, deadline=deadline, tags=tags
        )

    async def create_run(
        self,
        workflow: str,
        tree: Any,
        run_id: str | None,
        *,
        conflict: bool = False,
        deadline: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create a run whose input is the already encoded ``[args, kwargs]`` tree, and see
        that it starts: by a message in the store's own transaction, or sent afterwards,
        or (a serving process on a World whose queue is not its store) started right here
        with a delayed copy of its start message as a safety net.

        ``conflict``: if a run with this id exists with other input, raise
        ``wf.RunConflict`` instead of returning it. ``deadline``: seconds from now
        after which the run fails with ``TimeoutError``.
        """
        at = self.clock.now()
        when = None if deadline is None else at + deadline
        run_id, _ = await self.create_run_here(
            workflow, tree, run_id, conflict=conflict, deadline=when, at=at, tags=tags
        )
        return run_id

    async def create_run_here(
        self,
        workflow: str,
        tree: Any,
        run_id: str | None,
        *,
        conflict: bool = False,
        parent: dict[str, Any] | None = None,
        deadline: float | None = None,
        at: float | None = None,
        tags: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        """:meth:`create_run`, saying whether the run was created by this call;
        ``parent`` (a child run's ``{"id", "cid"}``) and ``deadline`` (epoch
        seconds) go into its ``run_created``."""
        from ._errors import RunConflict

        run_id = run_id or new_run_id()
        at = self.clock.now() if at is None else at
        data: dict[str, Any] = {"workflow": workflow, "input": tree}
        if parent is not None:
            data["parent"] = parent
        if deadline is not None:
            data["deadline"] = deadline
        if self.tracing is not None and (trace := current_traceparent()) is not None:
            data["trace"] = trace  # the run's spans join the caller's trace
        if tags:
            data["tags"] = dict(tags)  # in the log too: the index is a projection of it
        start = Outgoing(Message(self.new_id(), run_id, "resume"), key=f"{run_id}:start")
        event = NewEvent(EventKind.RUN_CREATED, data, at)
        transactional = self.world.capabilities.transactional_messages
        here = self.serve and not transactional
        if here:
            safety = Outgoing(start.message, at + self.start_safety, f"{run_id}:start:safety")
            await self.backend.send([safety])
        create = RunCreate(
            run_id, workflow, event, [start] if transactional else [], tags=dict(tags or {})
        )
        info, created = await self.backend.create_run(create)
        if info.workflow != workflow:
            raise RunConflict(
                f"run id {run_id!r} already belongs to a run of workflow {info.workflow!r}, "
                f"not {workflow!r}"
            )
        if not created and conflict:
            events = await self.backend.read_events(run_id)
            recorded = events[0].data.get("input") if events else None
            if recorded != tree:
                raise RunConflict(
                    f"run id {run_id!r} already exists with other arguments; start it with "
                    "another id, or without conflict=True to get the existing run"
                )
        if created and self.serve:
            # Its whole log is known here: the start message finds the run warm.
            self.executor(run_id).prime(Event(run_id, 1, EventKind.RUN_CREATED, data, at))
        if created or info.status == "pending":
            # A run found still pending may have been created by a caller that died
            # before its start message went: sending it again is harmless.
            if here:
                self.spawn(self._start_here(start.message))
            elif not transactional:
                await self.backend.send([start])
        return run_id, created

    async def _start_here(self, message: Message) -> None:
        try:
            await self.executor(message.run_id).handle(message)
        except Exception as exc:  # the safety copy starts it later
            if not self._closed:
                log.warning("worldflow: starting run %r here failed (%s)", message.run_id, exc)

    async def get_run(self, run_id: str) -> RunInfo:
        info = await self.backend.get_run(run_id)
        if info is None:
            raise RunNotFound(run_id)
        return info

    async def read_events(self, run_id: str) -> list[Event]:
        await self.get_run(run_id)
        return await self.backend.read_events(run_id)

    async def result(self, run_id: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else self.loop.time() + timeout
        poll = 0.05
        ended: asyncio.Future[None] | None = None
        try:
            while True:
                info = await self.get_run(run_id)
                if info.done:
                    return self._outcome(info)
                if ended is None or ended.done():
                    ended = self.loop.create_future()
                    self._ended.setdefault(run_id, []).append(ended)
                wait = poll if deadline is None else min(poll, deadline - self.loop.time())
                if wait <= 0:
                    raise TimeoutError(f"run {run_id!r} has not finished after {timeout}s")
                # Runs finished by this process wake us at once; others are polled for.
                await asyncio.wait([ended], timeout=wait)
                poll = min(poll * 1.5, 1.0)
        finally:
            waiters = self._ended.get(run_id)
            if ended is not None and waiters and ended in waiters:
                waiters.remove(ended)
                if not waiters:
                    del self._ended[run_id]

    def _outcome(self, info: RunInfo) -> Any:
        if info.unreadable:
            from ._errors import CorruptLogError

            raise CorruptLogError(f"run {info.id!r}: {info.unreadable}")
        if info.status == "completed":
            return decode(info.output)
        if info.status == "cancelled":
            raise RunCancelled(info.id)
        error = info.error or {}
        raise RunFailed(info.id, str(error.get("type", "Error")), str(error.get("message", "")))

    def _traced(self, data: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
        """A message's data, with the sender's trace context when there is one."""
        if parent is None and self.tracing is not None:
            parent = current_traceparent()
        if parent is not None:
            data["trace"] = parent
        return data

    async def cancel(self, run_id: str) -> None:
        info = await self.get_run(run_id)
        if not info.done:
            data = self._traced({})
            await self.backend.send([Outgoing(Message(self.new_id(), run_id, "cancel", data))])

    async def wake(self, run_id: str, position: int | None) -> None:
        """Fire the run's pending sleep at ``position`` (all of them when None) now."""
        info = await self.get_run(run_id)
        if not info.done:
            data = self._traced({} if position is None else {"cid": position})
            await self.backend.send([Outgoing(Message(self.new_id(), run_id, "wake", data))])

    async def resume_hook(self, token: str, payload: Any) -> str:
        """Send ``payload`` to the hook; numbered first, so that payloads reach the
        workflow in the order these calls returned, whatever the queue does.

        A webhook's workflow awaits a :class:`WebhookRequest`: a payload that is not
        one reaches it as a ``POST`` with the payload as its JSON body, as if the
        webhook's URL had been called (``worldflow hooks resume`` on a webhook)."""
        if not isinstance(payload, WebhookRequest):
            hook = await self.backend.get_hook(token)
            if hook is not None and hook.webhook:
                payload = _as_request(token, payload)
        tree = encode(payload, where=f"the payload for hook {token!r}")
        return await self._resume(token, tree, webhook=False)

    async def _resume(
        self, token: str, tree: Any, *, webhook: bool, parent: str | None = None
    ) -> str:
        hook = await self.backend.next_payload(token, webhook=webhook)
        if hook is None:
            raise HookNotFound(token)
        data = self._traced({"token": token, "payload": tree, "n": hook.n}, parent)
        message = Message(self.new_id(), hook.run_id, "hook", data)
        await self.backend.send([Outgoing(message)])
        return hook.run_id

    async def webhook(self, token: str, request: WebhookRequest) -> str:
        """Deliver an HTTP request to the webhook with this token (``HookNotFound`` if
        no live webhook has it); the caller's ``traceparent`` header joins its trace."""
        tree = encode(request, where="a webhook request")
        parent = request.headers.get("traceparent") if self.tracing is not None else None
        return await self._resume(token, tree, webhook=True, parent=parent)


def _as_request(token: str, payload: Any) -> WebhookRequest:
    """The request a webhook's URL would have received with ``payload`` as its JSON body."""
    try:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{token!r} is a webhook: its workflow receives an HTTP request, and the payload "
            f"becomes its JSON body, but {type(payload).__name__} is not JSON ({exc})"
        ) from None
    return WebhookRequest(
        method="POST",
        headers={"content-type": "application/json"},
        body=body,
        path=f"{WEBHOOK_PREFIX}{token}",
    )
