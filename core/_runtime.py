"""The runtime: one per event loop, between the public API and a World.

It owns the warm cache of run executors, group-commits their batches (all
the appends that pile up during one commit go into the next, one storage
call for many runs), receives the World's messages and answers the API's
questions (start a run, wait for its result, resume a hook, cancel).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from ._codec import decode, encode
from ._errors import HookNotFound, RunCancelled, RunFailed, RunNotFound
from ._executor import RunExecutor
from ._otel import current_traceparent, tracing
from ._world import Append, Event, Message, NewEvent, Outgoing, RunCreate, RunInfo, World

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
    """Runs workflows against one World on the running event loop."""

    def __init__(
        self,
        world: World,
        *,
        always_replay: bool = False,
        max_cached: int = 10_000,
        serve: bool = True,
    ):
        self.world = world
        self.clock = world.clock
        self.worker_id = world.worker_id
        self.always_replay = always_replay
        self.max_cached = max_cached
        self.serve = serve  # False: a client that never has the World deliver to it
        self.loop = asyncio.get_running_loop()
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
        self.tracing = tracing()  # None unless OpenTelemetry is installed and configured

    async def start(self) -> None:
        if not self._started:
            self._started = True
            if self.serve:
                await self.world.start(self.handle)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
        for executor in self._executors.values():
            executor.abandon()
            executor.forget()
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
    async def handle(self, message: Message) -> None:
        """Apply one message from the World's queue; returns once it is durable."""
        await self._executor(message.run_id).handle(message)

    def _executor(self, run_id: str) -> RunExecutor:
        executor = self._executors.get(run_id)
        if executor is None:
            executor = self._executors[run_id] = RunExecutor(self, run_id)
            if len(self._executors) > self.max_cached:
                self._evict()
        else:
            self._executors.move_to_end(run_id)
        return executor

    def _evict(self) -> None:
        """Drop the least recently used idle runs (they replay when next needed),
        down to 90% of the cache so that this does not run on every new run."""
        target = self.max_cached * 9 // 10
        for run_id in list(self._executors):
            if len(self._executors) <= target:
                return
            executor = self._executors[run_id]
            if executor.idle:
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
                    results = await self.world.append([append for _, append in items])
                except Exception:
                    if self._closed:
                        return
                    log.exception("worldflow: append failed; retrying in %.2fs", delay)
                    self._pending[:0] = items
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.01
                for (executor, _), ok in zip(items, results, strict=True):
                    executor.committed(ok)
        finally:
            self._flusher = self._wake = None

    @property
    def idle(self) -> bool:
        """No step attempt of this process is running and every batch is committed."""
        return not self._pending and all(e.idle for e in self._executors.values())

    def _quiescent(self, run_id: str | None) -> bool:
        if run_id is None:
            return self.idle
        executor = self._executors.get(run_id)
        return executor is None or executor.idle  # idle: no input, batch or attempt in flight

    async def drain(self, timeout: float, run_id: str | None = None) -> bool:
        """Wait until :attr:`idle` (with ``run_id``: until that run has nothing in flight
        here, whatever other runs do), at most ``timeout`` seconds; True if it got there."""
        deadline = self.loop.time() + timeout
        while not self._quiescent(run_id):
            if self.loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def waits_on_others(self, run_id: str) -> bool:
        """The run, as this process last loaded it, has a step attempt running on another
        worker, which the engine leaves alone while that worker is alive.

        A serverless World must then not acknowledge the message that brought the run
        here: acknowledged, nothing would bring the run back if that worker died
        (it may have died already, its heartbeat not yet stale). Kept, the message
        comes again, and the engine looks again whether the worker is still alive.
        """
        executor = self._executors.get(run_id)
        state = None if executor is None else executor.state
        return state is not None and executor is not None and executor._waits_on_others(state)

    def forget(self, run_id: str) -> None:
        """Drop an executor with nothing to do (a message for a run that does not exist)."""
        executor = self._executors.get(run_id)
        if executor is not None and executor.idle:
            del self._executors[run_id]

    def run_ended(self, run_id: str) -> None:
        for fut in self._ended.pop(run_id, ()):
            if not fut.done():
                fut.set_result(None)
        executor = self._executors.get(run_id)
        if executor is not None and not executor.running and not executor.inputs:
            del self._executors[run_id]

    # -- what the public API asks ------------------------------------------------
    async def start_run(
        self, workflow: str, args: tuple[Any, ...], kwargs: dict[str, Any], run_id: str | None
    ) -> str:
        tree = encode([list(args), kwargs], where=f"the arguments of workflow {workflow!r}")
        return await self.create_run(workflow, tree, run_id)

    async def create_run(self, workflow: str, tree: Any, run_id: str | None) -> str:
        """Create a run whose input is the already encoded ``[args, kwargs]`` tree."""
        run_id = run_id or new_run_id()
        at = self.clock.now()
        data = {"workflow": workflow, "input": tree}
        if self.tracing is not None and (parent := current_traceparent()) is not None:
            data["trace"] = parent  # the run's spans join the caller's trace
        create = RunCreate(
            run_id,
            workflow,
            NewEvent("run_created", data, at),
            Outgoing(Message(self.new_id(), run_id, "resume"), key=f"{run_id}:start"),
        )
        info, created = await self.world.create_run(create)
        if created and self.serve:
            # Its whole log is known here: the start message finds the run warm.
            first = Event(run_id, 1, "run_created", data, at)
            self._executor(run_id).prime(first)
        if info.workflow != workflow:
            raise ValueError(
                f"run id {run_id!r} already belongs to a run of workflow {info.workflow!r}, "
                f"not {workflow!r}"
            )
        return run_id

    async def get_run(self, run_id: str) -> RunInfo:
        info = await self.world.get_run(run_id)
        if info is None:
            raise RunNotFound(run_id)
        return info

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
        if info.status == "completed":
            return decode(info.output)
        if info.status == "cancelled":
            raise RunCancelled(info.id)
        error = info.error or {}
        raise RunFailed(info.id, str(error.get("type", "Error")), str(error.get("message", "")))

    def _traced(self, data: dict[str, Any]) -> dict[str, Any]:
        """A message's data, with the sender's trace context when tracing."""
        if self.tracing is not None and (parent := current_traceparent()) is not None:
            data["trace"] = parent
        return data

    async def cancel(self, run_id: str) -> None:
        info = await self.get_run(run_id)
        if not info.done:
            data = self._traced({})
            await self.world.send([Outgoing(Message(self.new_id(), run_id, "cancel", data))])

    async def wake(self, run_id: str, position: int | None) -> None:
        """Fire the run's pending sleep at ``position`` (all of them when None) now."""
        info = await self.get_run(run_id)
        if not info.done:
            data = self._traced({} if position is None else {"cid": position})
            await self.world.send([Outgoing(Message(self.new_id(), run_id, "wake", data))])

    async def resume_hook(self, token: str, payload: Any) -> str:
        tree = encode(payload, where=f"the payload for hook {token!r}")
        hook = await self.world.get_hook(token)
        if hook is None:
            raise HookNotFound(token)
        data = self._traced({"token": token, "payload": tree})
        message = Message(self.new_id(), hook.run_id, "hook", data)
        await self.world.send([Outgoing(message)])
        return hook.run_id
