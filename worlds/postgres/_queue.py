"""The postgres world's queue: the ``messages`` table, claimed and handed to the engine.

Any worker may deliver any message. A serving process runs three tasks:

- the **consumer** claims due messages (``FOR UPDATE SKIP LOCKED``, so two
  workers never take the same one) under a lease, hands each to the engine
  concurrently, and does what the :class:`~worldflow.world.Disposition` says:
  acknowledge (delete the row) or give it back for later. Then it sleeps until
  the next message comes due on the World's clock, a notification arrives, or
  ``poll_interval`` passes (the fallback for a missed notification and for
  the leases of workers that died);
- the **listener** holds a connection that ``LISTEN``\\ s on the schema's
  channel: an insert of a message for any worker is followed by a
  ``pg_notify`` in the same transaction, which wakes the consumers at once;
- the **keeper** renews the lease of every message still being delivered
  here, so a long step keeps its message and a dead worker's messages come
  back once their lease runs out.

Messages that this process inserted for itself (see :mod:`._store`) skip the
table's round trip: they arrive claimed, through :meth:`PostgresQueue.dispatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from worldflow.world import (
    Clock,
    CorruptLogError,
    Deliver,
    Delivery,
    Disposition,
    Message,
    Outgoing,
    SystemClock,
    json_loads,
    sleep_until_or_woken,
)

from ._store import Store, StoredMessage, connect_options

__all__ = ["PostgresQueue"]

log = logging.getLogger("worldflow.postgres")

#: Messages claimed per round trip.
BATCH = 50


class PostgresQueue:
    """The Queue part of the postgres world, over its :class:`Store`.

    ``workflows`` says which workflows this process can run: it claims only the
    messages of their runs (another kind of worker takes the others).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        workflows: Callable[[], Sequence[str]],
        *,
        poll_interval: float = 1.0,
        concurrency: int = 200,
        lease: float = 10.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.workflows = workflows
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.lease = lease
        self._deliver: Deliver | None = None
        self._woken = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._acks: list[int] = []
        self._acking: asyncio.Task[None] | None = None
        self._closed = False
        self.notifications = 0  # how many the listener received (tests look)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        await self.store.send(messages)

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._woken = asyncio.Event()
        self.store.local = self.dispatch
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(), name="worldflow-postgres-consumer"),
            loop.create_task(self._listen(), name="worldflow-postgres-listener"),
            loop.create_task(self._keep(), name="worldflow-postgres-keeper"),
        ]

    async def close(self) -> None:
        """Stop: deliveries under way are cut short and their messages given back at once
        (not after their lease), and acknowledgements not yet written are written."""
        if self._closed:
            return
        self._closed = True
        self.store.local = None
        claimed = list(self._inflight)
        tasks = [*self._tasks, *self._inflight.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._tasks = []
        if self._acking is not None:
            await asyncio.wait([self._acking], timeout=2.0)
        try:  # best effort, briefly: their leases bring them back anyway
            async with asyncio.timeout(2.0):
                if self._acks:
                    rows, self._acks = self._acks, []
                    await self.store.ack(rows)
                if claimed:
                    await self.store.unclaim(claimed)
        except Exception as exc:
            log.debug("worldflow: giving back messages at close failed (%s)", exc)

    # -- delivering ---------------------------------------------------------------------
    def dispatch(self, messages: list[StoredMessage]) -> None:
        """Deliver messages this worker has claimed (from the consumer, or as it inserted
        them)."""
        if self._closed or self._deliver is None:
            return
        loop = asyncio.get_running_loop()
        for m in messages:
            if m.row in self._inflight:
                continue  # its lease ran out while it was delivered here: still ours
            self._inflight[m.row] = loop.create_task(self._deliver_one(m))

    async def _deliver_one(self, m: StoredMessage) -> None:
        assert self._deliver is not None
        try:
            try:
                data = json_loads(m.data, f"a {m.kind} message of run {m.run_id!r}")
                if not isinstance(data, dict):
                    raise CorruptLogError(
                        f"a {m.kind} message of run {m.run_id!r} is not an object"
                    )
            except CorruptLogError as exc:  # it can never be delivered: drop it, loudly
                log.error("worldflow: dropped message %s: %s", m.msg_id, exc)
                self._acknowledge(m.row)
                return
            message = Message(m.msg_id, m.run_id, m.kind, data)  # type: ignore[arg-type]
            try:
                said = await self._deliver(Delivery(message, m.due, m.key, m.attempts))
            except Exception as exc:  # the engine answers; this is a safety net
                log.warning("worldflow: delivering message %s failed (%s)", m.msg_id, exc)
                said = Disposition.later(1.0, str(exc))
            if said.ack:
                self._acknowledge(m.row)
            elif not self._closed:
                log.debug(
                    "worldflow: %s message of run %r again in %.1fs: %s",
                    m.kind,
                    m.run_id,
                    said.after,
                    said.reason,
                )
                await self._give_back(m, said.after)
        finally:
            self._inflight.pop(m.row, None)
            self._woken.set()  # room for another

    async def _give_back(self, m: StoredMessage, after: float) -> None:
        if isinstance(self.clock, SystemClock):
            due, hidden = self.clock.now() + after, None
        else:  # a virtual clock does not move by itself: look again after real time
            due, hidden = self.clock.now(), max(0.05, min(after, 1.0))
        try:
            await self.store.release(m.row, due, hidden)
        except Exception as exc:  # its lease runs out and it comes back then
            log.warning("worldflow: could not give message %s back (%s)", m.msg_id, exc)
            return
        if hidden is not None:
            asyncio.get_running_loop().call_later(hidden, self._woken.set)

    def _acknowledge(self, row: int) -> None:
        self._acks.append(row)
        if self._acking is None:
            self._acking = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        """Delete acknowledged messages, many per statement."""
        delay = 0.05
        try:
            await asyncio.sleep(0)  # let the acknowledgements of this turn of the loop pile up
            while self._acks:
                rows, self._acks = self._acks, []
                try:
                    await self.store.ack(rows)
                    delay = 0.05
                except Exception as exc:
                    if self._closed:
                        self._acks[:0] = rows
                        return
                    log.warning("worldflow: could not delete delivered messages (%s)", exc)
                    self._acks[:0] = rows
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._acking = None

    # -- the three tasks ---------------------------------------------------------------------
    async def _consume(self) -> None:
        delay = 0.05
        while True:
            self._woken.clear()
            upcoming: float | None = None
            room = self.concurrency - len(self._inflight)
            if room > 0:
                want = min(room, BATCH)
                try:
                    found, upcoming = await self.store.claim(list(self.workflows()), want)
                except Exception as exc:
                    # The server may be restarting: keep trying, slower and slower.
                    log.warning("worldflow: claiming messages failed (%s); trying again", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.05
                self.dispatch(found)
                if len(found) == want:
                    await asyncio.sleep(0)
                    continue  # there may be more due now
            await self._wait(upcoming)

    async def _wait(self, upcoming: float | None) -> None:
        """Until the next message comes due (the World's clock), a notification or a local
        insert wakes us, or ``poll_interval`` passes. (``asyncio.wait``, not ``wait_for``:
        on Python 3.11 ``wait_for`` can swallow the cancellation that stops the consumer.)"""
        waiter: asyncio.Future[Any]
        if upcoming is None:
            waiter = asyncio.ensure_future(self._woken.wait())
        else:
            waiter = asyncio.ensure_future(sleep_until_or_woken(self.clock, upcoming, self._woken))
        try:
            await asyncio.wait([waiter], timeout=self.poll_interval)
        finally:
            waiter.cancel()

    async def _listen(self) -> None:
        import psycopg

        settings = self.store.settings
        delay = 0.1
        while True:
            conn: Any = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    settings.url, **connect_options(settings)
                )
                await conn.execute(f'LISTEN "{settings.channel}"')
                self._woken.set()  # what was sent while nobody listened is in the table
                delay = 0.1
                async for _ in conn.notifies():
                    self.notifications += 1
                    self._woken.set()
            except Exception as exc:
                log.warning("worldflow: listening for notifications failed (%s); polling", exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _keep(self) -> None:
        """Renew the lease of the messages being delivered here, three times a lease."""
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._inflight:
                try:
                    await self.store.extend(list(self._inflight))
                except Exception as exc:
                    log.warning("worldflow: renewing message leases failed (%s)", exc)
