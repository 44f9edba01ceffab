"""A long-polling SQS consumer, for the AWS world outside Lambda.

Messages are received ten at a time. One that is due goes to the engine's
handler; one that is not is held in memory until the World's clock says it is
due (a virtual clock in tests jumps days ahead), or, with the real clock and
more than ``hold_max`` to wait, sent again with SQS's longest delay and
deleted ("chained delays": how a sleep outlives SQS's 15 minutes). While a
message is held or worked on, its visibility timeout is extended; a message
is deleted only once the handler has made its effect durable *and* no step
attempt this process started for its run is still running, so a crash
mid-step leaves the message to come back and resume the run elsewhere. On
close, held messages are made visible again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from worldflow._clock import sleep_until_or_woken
from worldflow._world import MessageHandler, Outgoing

from ._queue import MAX_DELAY, Received
from ._world import SAFETY

if TYPE_CHECKING:
    from ._world import AwsWorld

__all__ = ["Poller"]

log = logging.getLogger("worldflow.aws")


class Poller:
    def __init__(self, world: AwsWorld, handler: MessageHandler) -> None:
        self.world = world
        self.handler = handler
        self._heap: list[tuple[float, int, Received]] = []
        self._order = itertools.count()
        self._held: dict[str, Received] = {}  # not due yet
        self._busy: dict[str, Received] = {}  # with the handler, or waiting for its run
        self._waiting: dict[str, list[Received]] = {}  # run id -> handled, run still busy
        self._deletes: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        from ._world import in_thread

        world = self.world
        world.on_quiet = self._run_quiet
        await in_thread(world.store.heartbeat, world.worker_id, time.time() + world.worker_lease)
        world._heartbeat_until = time.time() + world.worker_lease
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._receive_loop()),
            loop.create_task(self._timer_loop()),
            loop.create_task(self._keeper_loop()),
        ]

    async def close(self) -> None:
        from ._world import in_thread

        self._closed = True
        self.world.on_quiet = None
        for task in self._tasks + list(self._spawned):
            task.cancel()
        for task in self._tasks + list(self._spawned):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        deletes, self._deletes = self._deletes, []
        release = [r.receipt for r in (*self._held.values(), *self._busy.values())]
        self._held.clear()
        self._busy.clear()
        try:
            if deletes:
                await in_thread(self.world.queue.delete, deletes)
            if release:  # visible again at once: the next consumer needs no wait
                await in_thread(self.world.queue.set_visibility, release, 0)
        except Exception:
            log.warning("worldflow: could not release SQS messages on close", exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- receiving ---------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        from ._world import in_thread

        world = self.world
        delay = 0.1
        while not self._closed:
            try:
                received = await in_thread(self._receive)
                delay = 0.1
            except Exception as exc:
                log.warning("worldflow: receiving from SQS failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            now = world.clock.now()
            for r in received:
                due = r.outgoing.not_before
                if due is None or due <= now:
                    self._deliver_soon(r)
                elif world.real_clock and due - now > world.hold_max:
                    self._spawn(self._chain(r, due - now))
                else:
                    self._held[r.sqs_id] = r
                    heapq.heappush(self._heap, (due, next(self._order), r))
                    self._wake.set()

    def _receive(self) -> list[Received]:
        """On a thread: one long poll. Messages that arrive after close go back."""
        world = self.world
        received = world.queue.receive(world.poll_wait, world.visibility)
        if self._closed and received:
            world.queue.set_visibility([r.receipt for r in received], 0)
            return []
        return received

    async def _chain(self, r: Received, wait: float) -> None:
        """Not due for a while: send it again with the longest delay, delete this copy."""
        from ._world import in_thread

        try:
            await in_thread(self.world.queue.send, [r.outgoing], [min(MAX_DELAY, wait)])
            await in_thread(self.world.queue.delete, [r.receipt])
        except Exception as exc:
            log.warning("worldflow: re-sending a delayed message failed (%s)", exc)

    # -- holding until due ------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        clock = self.world.clock
        while not self._closed:
            now = clock.now()
            while self._heap and self._heap[0][0] <= now:
                _, _, r = heapq.heappop(self._heap)
                if self._held.pop(r.sqs_id, None) is not None:
                    self._deliver_soon(r)
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            await sleep_until_or_woken(clock, self._heap[0][0], self._wake)

    # -- delivering ----------------------------------------------------------------------------
    def _deliver_soon(self, r: Received) -> None:
        self._busy[r.sqs_id] = r
        self._spawn(self._deliver(r))

    async def _deliver(self, r: Received) -> None:
        from ._world import in_thread

        message = r.outgoing.message
        try:
            await self.handler(message)
        except Exception as exc:
            if self._closed:
                return
            self._busy.pop(r.sqs_id, None)
            backoff = min(300, 2 ** min(r.receive_count, 8))
            log.warning(
                "worldflow: message %s for run %r failed (%s); SQS delivers it again in %ds",
                message.kind,
                message.run_id,
                exc,
                backoff,
            )
            with contextlib.suppress(Exception):
                await in_thread(self.world.queue.set_visibility, [r.receipt], backoff)
            return
        if self.world.busy(message.run_id):
            self._waiting.setdefault(message.run_id, []).append(r)
        elif (r.outgoing.key or "").endswith(SAFETY) and await self._unbacked(r):
            return  # passed on: sent again for later, this copy deleted
        else:
            self._ack(r)

    async def _unbacked(self, r: Received) -> bool:
        """A run started in the process that created it has no SQS message of its own
        behind its first steps, only this delayed copy. If such a step still runs on
        another live worker, send the copy again for later rather than use it up: it
        is what resumes the run should that worker die."""
        from ._world import in_thread

        world = self.world
        run_id = r.outgoing.message.run_id
        try:
            if not await world.waits_on_another(run_id):
                return False
            again = Outgoing(
                r.outgoing.message, world.clock.now() + world.start_safety, r.outgoing.key
            )
            await world.send([again])
        except Exception as exc:
            log.warning("worldflow: passing on run %r's start copy failed (%s)", run_id, exc)
            return False
        if self._busy.pop(r.sqs_id, None) is not None:
            with contextlib.suppress(Exception):
                await in_thread(world.queue.delete, [r.receipt])
        return True

    def _run_quiet(self, run_id: str) -> None:
        for r in self._waiting.pop(run_id, []):
            self._ack(r)

    def _ack(self, r: Received) -> None:
        if self._busy.pop(r.sqs_id, None) is None:
            return
        self._deletes.append(r.receipt)
        if len(self._deletes) == 1:
            asyncio.get_running_loop().call_soon(lambda: self._spawn(self._flush_deletes()))

    async def _flush_deletes(self) -> None:
        from ._world import in_thread

        deletes, self._deletes = self._deletes, []
        if deletes and not self._closed:
            try:
                await in_thread(self.world.queue.delete, deletes)
            except Exception as exc:  # they come back; the engine ignores what it has seen
                log.warning("worldflow: deleting SQS messages failed (%s)", exc)
        elif deletes:
            self._deletes[:0] = deletes

    # -- keeping messages invisible while held or worked on, and the heartbeat ---------------------
    async def _keeper_loop(self) -> None:
        from ._world import in_thread

        world = self.world
        period = max(0.5, min(world.visibility / 3, world.heartbeat_interval))
        next_extend = time.monotonic() + world.visibility / 3
        while not self._closed:
            await asyncio.sleep(period)
            try:
                if world.unsent:
                    for run_id in await in_thread(world.resend_unsent):
                        if not world.busy(run_id):
                            self._run_quiet(run_id)
                until = time.time() + world.worker_lease
                await in_thread(world.store.heartbeat, world.worker_id, until)
                world._heartbeat_until = until
                if time.monotonic() >= next_extend:
                    next_extend = time.monotonic() + world.visibility / 3
                    receipts = [r.receipt for r in (*self._held.values(), *self._busy.values())]
                    if receipts:
                        await in_thread(world.queue.set_visibility, receipts, world.visibility)
            except Exception as exc:
                log.warning("worldflow: heartbeat or visibility extension failed (%s)", exc)
