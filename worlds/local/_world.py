"""The local world: SQLite on disk, queues and timers in this process.

Every process that opens the same data directory is a worker. A run belongs
to the worker that last wrote to it; that worker delivers the run's messages
(timers, hook payloads, cancellations) on its own loop. Workers heartbeat into
the database; when one stops (or is killed), the others adopt its unfinished
runs within ``lease`` seconds, and a run mid-step resumes by running the step
again (the lost attempt counts as an attempt). SQLite has no notifications
between processes, so each worker polls ``PRAGMA data_version`` (about 1.5 µs)
to notice what the others wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from worldflow._clock import Clock, SystemClock, sleep_until_or_woken
from worldflow._codec import encode
from worldflow._definitions import workflow_names
from worldflow._hooks import WebhookRequest
from worldflow._world import (
    Append,
    Capabilities,
    Event,
    HookInfo,
    Message,
    MessageHandler,
    Outgoing,
    RunCreate,
    RunInfo,
    RunPage,
)

from ._http import WEBHOOK_PREFIX, WebhookServer
from ._store import Checkpointer, Store, StoredMessage

__all__ = ["LocalWorld"]

log = logging.getLogger("worldflow.local")


class LocalWorld:
    """Runs stored in SQLite under ``data_dir`` (``":memory:"`` for a private, in-memory one).

    >>> world = LocalWorld(".worldflow")
    >>> world = LocalWorld(":memory:", clock=wf.VirtualClock())   # tests

    ``read_only=True`` (for tools that only look): an absent database is read
    as empty and not created.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = ".worldflow",
        *,
        clock: Clock | None = None,
        heartbeat: float = 1.0,
        lease: float = 5.0,
        poll_interval: float = 0.05,
        public_url: str | None = None,
        webhook_port: int | None = None,
        max_webhook_bytes: int = 1 << 20,
        serve_webhooks: bool = True,
        read_only: bool = False,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        memory = str(data_dir) == ":memory:"
        self.capabilities = Capabilities(process_private=memory)
        self.data_dir = None if memory else Path(data_dir)
        self._worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        path = ":memory:" if self.data_dir is None else str(self.data_dir / "worldflow.sqlite3")
        if read_only and not Path(path).exists():
            path = ":memory:"  # nothing has run here: read as empty, create nothing
        self.store = Store(path, self._worker_id)
        self.heartbeat_interval = heartbeat
        self.lease = lease
        self.poll_interval = poll_interval
        self.max_webhook_bytes = max_webhook_bytes
        self.serve_webhooks = serve_webhooks
        self.adopt_batch = 16  # runs taken over per heartbeat, so live workers share them
        self._public_url = public_url.rstrip("/") if public_url else None
        self._port = webhook_port
        if self._port is None:
            stored = self.store.get_meta("webhook_port")
            self._port = int(stored) if stored else None
        self._server: WebhookServer | None = None
        self._checkpointer: Checkpointer | None = None
        self._handler: MessageHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._heap: list[tuple[float, int, StoredMessage]] = []
        self._known: set[int] = set()
        self._acks: list[int] = []
        self._retry_counts: dict[int, int] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._live: list[str] = [self._worker_id]
        self._closed = False

    def __repr__(self) -> str:
        return f"<LocalWorld {self.store.path!r}>"

    # -- Storage and Queue: the SQLite store, with the world's clock ---------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        return await self.store.create_run(create, self.clock.now())

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        return await self.store.append(appends, self.clock.now())

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        return await self.store.read_events(run_id, after_seq)

    async def get_run(self, run_id: str) -> RunInfo | None:
        return await self.store.get_run(run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        return await self.store.list_runs(
            status=status, workflow=workflow, limit=limit, cursor=cursor
        )

    async def get_hook(self, token: str) -> HookInfo | None:
        return await self.store.get_hook(token)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        await self.store.send(messages, self.clock.now())

    # -- Workers ---------------------------------------------------------------------
    @property
    def worker_id(self) -> str:
        return self._worker_id

    async def worker_alive(self, worker_id: str) -> bool:
        if worker_id == self._worker_id:
            return True
        return worker_id in self.store.live_workers(time.time() - self.lease)

    # -- webhooks ----------------------------------------------------------------------
    def webhook_url(self, token: str) -> str:
        return f"{self.base_url}{WEBHOOK_PREFIX}{quote(token, safe='')}"

    @property
    def base_url(self) -> str:
        if self._public_url:
            return self._public_url
        if self._port is None:
            self._port = self._choose_port()
        return f"http://127.0.0.1:{self._port}"

    def _choose_port(self) -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.store.set_meta("webhook_port", str(port))
        return port

    async def _on_webhook(
        self, token: str, request: WebhookRequest
    ) -> tuple[int, dict[str, object]]:
        hook = await self.store.get_hook(token)
        if hook is None or not hook.webhook:
            return 404, {"error": "no live webhook has this token"}
        message = Message(
            f"{self._worker_id}:{secrets.token_hex(8)}",
            hook.run_id,
            "hook",
            {"token": token, "payload": encode(request, where="a webhook request")},
        )
        await self.send([Outgoing(message)])
        return 202, {"ok": True, "run_id": hook.run_id}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self, handler: MessageHandler) -> None:
        self._handler = handler
        self._wake = asyncio.Event()
        self.store.on_messages = self._schedule
        await self.store.heartbeat(time.time())
        if self.serve_webhooks:
            port = self._port or 0
            try:
                self._server = WebhookServer(
                    asyncio.get_running_loop(),
                    self._on_webhook,
                    port=port,
                    max_body=self.max_webhook_bytes,
                )
            except OSError:
                self._server = None  # another process on this data directory serves it
            else:
                if self._port != self._server.port:  # keep it: a tunnel forwards to it
                    self._port = self._server.port
                    self.store.set_meta("webhook_port", str(self._port))
                self._server.start()
        if self.data_dir is not None:
            self._checkpointer = Checkpointer(self.store.path)
            self._checkpointer.start()
            # The writer's own checkpoint now only backs the thread up (a WAL of ~40 MB).
            self.store.db.execute("PRAGMA wal_autocheckpoint = 10000")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._timers()), loop.create_task(self._watch())]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        tasks += self._inflight  # deliveries under way: the store closes under them
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
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.store.on_messages = None
        if self._acks:
            with contextlib.suppress(Exception):
                self.store._write(
                    lambda: self.store.db.executemany(
                        "DELETE FROM messages WHERE id = ?", [(r,) for r in self._acks]
                    )
                )
        self.store.leave()
        self.store.close()

    # -- delivering messages -------------------------------------------------------------
    def _schedule(self, messages: list[StoredMessage]) -> None:
        if self._closed or self._handler is None:
            return
        now = self.clock.now()
        for m in messages:
            if m.row in self._known:
                continue
            self._known.add(m.row)
            if m.due <= now:
                self._spawn(self._deliver(m))
            else:
                heapq.heappush(self._heap, (m.due, m.row, m))
                if self._wake is not None and self._heap[0][2] is m:
                    self._wake.set()

    async def _deliver(self, m: StoredMessage) -> None:
        assert self._handler is not None
        try:
            if m.run_id not in self.store.owned:  # runs this worker writes need no look
                owner = self.store.db.execute(
                    "SELECT owner, workflow FROM runs WHERE id = ?", (m.run_id,)
                ).fetchone()
                if owner is None:
                    self._acknowledge(m.row)  # the run is gone: nothing will ever need this
                    return
                if owner[0] != self._worker_id and (
                    owner[1] not in workflow_names()
                    or not await self.store.claim(m.run_id, self._live)
                ):
                    self._known.discard(m.row)  # its owner delivers it; look again later
                    return
            message = Message(m.msg_id, m.run_id, m.kind, json.loads(m.data))  # type: ignore[arg-type]
            await self._handler(message)
        except Exception as exc:
            if self._closed:
                return
            log.warning(
                "worldflow: message %s for run %r failed (%s); retrying", m.kind, m.run_id, exc
            )
            m.due = self.clock.now() + min(60.0, 0.5 * 2 ** min(self._retries(m), 7))
            heapq.heappush(self._heap, (m.due, m.row, m))
            if self._wake is not None:
                self._wake.set()
            return
        self._acknowledge(m.row)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _retries(self, m: StoredMessage) -> int:
        self._retry_counts[m.row] = count = self._retry_counts.get(m.row, 0) + 1
        return count

    def _acknowledge(self, row: int) -> None:
        self._known.discard(row)
        self._retry_counts.pop(row, None)
        self._acks.append(row)
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(self._flush_acks_soon)

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
                    self._spawn(self._deliver(m))
                self._wake.clear()
                if not self._heap:
                    await self._wake.wait()
                    continue
                await sleep_until_or_woken(self.clock, self._heap[0][0], self._wake)
        finally:
            self._shutdown()

    async def _watch(self) -> None:
        """Heartbeat, notice other processes' writes, adopt runs of dead workers."""
        last_version = -1
        next_beat = 0.0
        seen_upto = 0  # messages up to this id were looked at already
        live_before: set[str] = set()
        try:
            while True:
                try:
                    now = time.monotonic()
                    if now >= next_beat:
                        next_beat = now + self.heartbeat_interval
                        await self.store.heartbeat(time.time())
                        self._live = self.store.live_workers(time.time() - self.lease)
                        if set(self._live) != live_before:  # a worker came or went:
                            live_before = set(self._live)  # its messages may be ours now
                            seen_upto = 0
                        if await self._adopt():
                            seen_upto = 0  # the adopted runs' older messages are ours now
                        if not seen_upto:
                            last_version = -1  # our own writes do not change data_version
                    version = self.store.data_version()
                    if version != last_version:
                        last_version = version
                        found = await self.store.claimable(
                            self._live, workflow_names(), self._known, seen_upto
                        )
                        if found:  # ids grow in commit order (one writer at a time)
                            seen_upto = max(seen_upto, max(m.row for m in found))
                        self._schedule(found)
                except Exception:
                    # A locked or failing database must not stop the heartbeat for good:
                    # other workers would adopt this one's runs while it still runs them.
                    log.exception("worldflow: the local world's watcher failed; going on")
                    last_version = -1
                    await asyncio.sleep(min(1.0, self.heartbeat_interval))
                await asyncio.sleep(self.poll_interval)
        finally:
            self._shutdown()

    async def _adopt(self) -> bool:
        """Take unfinished runs whose worker is gone; a resume message picks them up."""
        names = workflow_names()
        if not names:
            return False
        adopted = False
        for run_id in await self.store.orphans(self._live, names, self.adopt_batch):
            if await self.store.claim(run_id, self._live):
                log.info("worldflow: adopting run %r from a stopped worker", run_id)
                adopted = True
                message = Message(
                    f"{self._worker_id}:adopt:{secrets.token_hex(6)}", run_id, "resume"
                )
                await self.send([Outgoing(message, key=f"{run_id}:adopt")])
        return adopted


def create_world(settings: dict[str, Any]) -> LocalWorld:
    """The factory behind ``WORLDFLOW_WORLD=local``."""
    return LocalWorld(
        settings.get("data_dir") or ".worldflow",
        public_url=settings.get("public_url"),
        lease=float(settings.get("lease", 5.0)),
        heartbeat=float(settings.get("heartbeat", 1.0)),
        webhook_port=int(settings["webhook_port"]) if settings.get("webhook_port") else None,
        read_only=settings.get("read_only") == "1",
    )
