"""The local world's queue: the ``messages`` table, delivered from this process.

Every process that opens the same data directory is a worker. A run belongs
to the worker that last wrote to it (its ``owner``); that worker delivers the
run's messages (timers, hook payloads, cancellations) on its own loop, from
a heap ordered by due time. Other workers take a run only when it has no
owner or its owner's heartbeat has run out, and they read that in the same
transaction as they take it (:meth:`Store.claim`). SQLite has no
notifications between processes, so each worker polls ``PRAGMA
data_version`` (about 1.5 µs) to notice what the others wrote.

What to do with a delivered message is the engine's answer (a
:class:`~worldflow.world.Disposition`): delete the row, or deliver it again
after a while (its run still has a step running, here or on another live
worker). A message is deleted only once the engine says so, so one taken by a
process that dies comes back to whoever takes its run next.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from worldflow.world import (
    Clock,
    Deliver,
    Delivery,
    Message,
    Outgoing,
    SystemClock,
    sleep_until_or_woken,
)

from ._store import Checkpointer, Store, StoredMessage

__all__ = ["LocalQueue"]

#: Seconds acknowledged messages wait to be deleted together.
ACK_DELAY = 0.02
#: Remote step attempts (``step`` messages) one process runs at once; the rest are left
#: to other workers, or taken here as these end (``WORLDFLOW_LOCAL_STEP_SLOTS``).
STEP_SLOTS = max(1, int(os.environ.get("WORLDFLOW_LOCAL_STEP_SLOTS", "4")))

log = logging.getLogger("worldflow.local")


class LocalQueue:
    """The Queue part of the local world, over its :class:`Store`.

    ``workflows`` says which workflows this process can run (the local world
    only takes runs whose workflow it has imported).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        workflows: Callable[[], list[str]],
        *,
        poll_interval: float = 0.05,
        rescan_interval: float = 1.0,
        checkpoint: bool = True,
    ) -> None:
        self.store = store
        self.clock = clock
        self.workflows = workflows
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.checkpoint = checkpoint
        self._deliver: Deliver | None = None
        self._checkpointer: Checkpointer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._heap: list[tuple[float, int, StoredMessage]] = []
        self._known: set[int] = set()
        self._acks: list[int] = []
        self._attempts: dict[int, int] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._steps = 0  # step messages being delivered here
        self._waiting_steps: list[StoredMessage] = []  # for a free slot (STEP_SLOTS)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        await self.store.send(messages)

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._wake = asyncio.Event()
        self.store.on_messages = self._schedule
        if self.checkpoint and self.store.path != ":memory:":
            self._checkpointer = Checkpointer(self.store.path)
            self._checkpointer.start()
            # The writer's own checkpoint now only backs the thread up (a WAL of ~40 MB).
            self.store.db.execute("PRAGMA wal_autocheckpoint = 10000")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._timers()), loop.create_task(self._watch())]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        tasks += self._inflight  # deliveries under way: their messages stay for the next worker
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._shutdown()

    def _shutdown(self) -> None:
        """Release everything; also runs when the user's asyncio.run() cancels our tasks."""
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.store.on_messages = None
        if self._acks:
            rows, self._acks = self._acks, []
            with contextlib.suppress(Exception):
                self.store._write(
                    lambda: self.store.db.executemany(
                        "DELETE FROM messages WHERE id = ?", [(r,) for r in rows]
                    )
                )

    # -- delivering messages -------------------------------------------------------------
    def _schedule(self, messages: list[StoredMessage]) -> None:
        if self._closed or self._deliver is None:
            return
        now = self.clock.now()
        for m in messages:
            if m.row in self._known:
                continue
            self._known.add(m.row)
            if m.due <= now:
                self._spawn(self._deliver_one(m))
            else:
                self._push(m)

    def _push(self, m: StoredMessage) -> None:
        heapq.heappush(self._heap, (m.due, m.row, m))
        if self._wake is not None and self._heap[0][2] is m:
            self._wake.set()

    async def _deliver_one(self, m: StoredMessage) -> None:
        if m.kind != "step":
            await self._deliver_message(m)
            return
        # A remote step's attempt: whichever worker takes it first runs it (any run's).
        if self._steps >= STEP_SLOTS:
            self._waiting_steps.append(m)
            return
        self._steps += 1
        try:
            if await self.store.take(m.row):
                await self._deliver_message(m)
            else:
                self._known.discard(m.row)  # another worker's; looked at again if it dies
        except Exception as exc:
            log.warning("worldflow: taking a step message failed (%s); again later", exc)
            self._known.discard(m.row)
        finally:
            self._steps -= 1
            if self._waiting_steps and not self._closed:
                self._spawn(self._deliver_one(self._waiting_steps.pop(0)))

    async def _deliver_message(self, m: StoredMessage) -> None:
        assert self._deliver is not None
        try:
            if m.kind != "step" and m.run_id not in self.store.owned and not await self._take(m):
                return
            message = Message(m.msg_id, m.run_id, m.kind, json.loads(m.data))  # type: ignore[arg-type]
            attempt = self._attempts[m.row] = self._attempts.get(m.row, 0) + 1
            disposition = await self._deliver(Delivery(message, m.due, None, attempt))
        except Exception as exc:  # the store failed: try again a little later
            if self._closed:
                return
            log.warning(
                "worldflow: delivering a %s message of run %r failed (%s)", m.kind, m.run_id, exc
            )
            m.due = self.clock.now() + 1.0
            self._push(m)
            return
        if disposition.ack:
            self._acknowledge(m.row)
        elif not self._closed:
            log.debug(
                "worldflow: %s message of run %r again in %.1fs: %s",
                m.kind,
                m.run_id,
                disposition.after,
                disposition.reason,
            )
            if isinstance(self.clock, SystemClock):
                m.due = self.clock.now() + disposition.after
                self._push(m)
            else:  # a virtual clock does not move by itself: look again after real time
                m.due = self.clock.now()
                delay = max(0.05, min(disposition.after, 1.0))
                asyncio.get_running_loop().call_later(delay, self._push, m)

    async def _take(self, m: StoredMessage) -> bool:
        """Whether this process may deliver a message of a run it does not own: the run
        is unowned, or its owner is dead, and this process claims it now."""
        owner = self.store.db.execute(
            "SELECT owner, workflow FROM runs WHERE id = ?", (m.run_id,)
        ).fetchone()
        if owner is None:
            self._acknowledge(m.row)  # the run is gone: nothing will ever need this
            return False
        if owner[0] != self.store.worker_id and (
            owner[1] not in self.workflows() or not await self.store.claim(m.run_id)
        ):
            self._known.discard(m.row)  # its owner delivers it; look again later
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _acknowledge(self, row: int) -> None:
        self._known.discard(row)
        self._attempts.pop(row, None)
        self._acks.append(row)
        if len(self._acks) == 1:
            # Deleted a little later, many in one transaction: a message acknowledged
            # but not yet deleted when the process dies only comes back as a no-op.
            asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_acks_soon)

    def _flush_acks_soon(self) -> None:
        if not self._closed:
            self._spawn(self._flush_acks())

    async def _flush_acks(self) -> None:
        rows, self._acks = self._acks, []
        if rows:
            try:
                await self.store.ack(rows)
            except Exception:
                log.exception("worldflow: could not delete delivered messages")

    async def _timers(self) -> None:
        """Deliver scheduled messages as they come due on the world's clock."""
        assert self._wake is not None
        try:
            while True:
                now = self.clock.now()
                while self._heap and self._heap[0][0] <= now:
                    _, _, m = heapq.heappop(self._heap)
                    self._spawn(self._deliver_one(m))
                self._wake.clear()
                if not self._heap:
                    await self._wake.wait()
                    continue
                await sleep_until_or_woken(self.clock, self._heap[0][0], self._wake)
        finally:
            self._shutdown()

    async def _watch(self) -> None:
        """Notice other processes' writes: messages for runs this process may take."""
        last_version = -1
        seen_upto = 0  # messages up to this id were looked at already
        live: list[str] = []
        next_look = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    if loop.time() >= next_look:
                        next_look = loop.time() + self.rescan_interval
                        now_live = self.store.live_workers()
                        if now_live != live:
                            # A worker came or went: its runs' older messages may be ours.
                            live = now_live
                            seen_upto = 0
                            last_version = -1  # our own writes do not change data_version
                    version = self.store.data_version()
                    if version != last_version:
                        last_version = version
                        found = await self.store.claimable(self.workflows(), self._known, seen_upto)
                        if found:  # ids grow in commit order (one writer at a time)
                            seen_upto = max(seen_upto, max(m.row for m in found))
                        self._schedule(found)
                except Exception:
                    # A locked or failing database must not stop the watcher for good.
                    log.exception("worldflow: the local world's watcher failed; going on")
                    last_version = -1
                    await asyncio.sleep(1.0)
                await asyncio.sleep(self.poll_interval)
        finally:
            self._shutdown()
