"""The GCP world: Firestore storage, Cloud Tasks delivery, Cloud Run workers.

Messages reach the engine through HTTP: Cloud Tasks posts each task to the
service's task route (``worldflow.worlds.gcp.app``), which hands it to the
runtime of that process and answers 2xx only once the run is quiescent, so
Cloud Tasks retries whatever a crash cut short. ``start(handler)`` records
the handler that route uses; with ``listen`` set, the world also serves the
app itself on that address (tests and local development: the Cloud Run
stand-in).

A run started by a serving process is started right there (its start message
is handed to the local handler), with a backup task ``start_delay`` seconds
later in case this process dies first; a client process only queues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from worldflow._clock import Clock, SystemClock
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

from ._blobs import BlobStore
from ._firestore import BATCH_LIMIT, FirestoreStore
from ._settings import MAX_TASK_DELAY, GcpSettings
from ._tasks import TaskQueue

__all__ = ["WEBHOOK_PREFIX", "GcpWorld", "create_world"]

log = logging.getLogger("worldflow.gcp")

WEBHOOK_PREFIX = "/webhooks/"
MAX_INLINE_MESSAGE = 256_000  # bytes of message data a task carries; more goes to a blob
BLOB_KEY = "$worldflow_blob"


class GcpWorld:
    """Runs in Firestore, messages as Cloud Tasks HTTP tasks to a Cloud Run service.

    >>> world = GcpWorld(GcpSettings(project="my-project", service_url="https://..."))
    """

    def __init__(self, settings: GcpSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.real_time = isinstance(self.clock, SystemClock)
        self.capabilities = Capabilities(max_delay=MAX_TASK_DELAY, max_event_bytes=BATCH_LIMIT)
        self.blobs = BlobStore(settings.project, settings.bucket)
        self.store = FirestoreStore(settings.project, settings.database, blobs=self.blobs)
        self.tasks = TaskQueue(settings, real_time=self.real_time)
        self._worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.handler: MessageHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._beat: asyncio.Task[None] | None = None
        self._server: Any = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<GcpWorld project={self.settings.project!r} queue={self.settings.queue!r}>"

    # -- Storage -----------------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        start = create.start
        handler = self.handler
        if handler is not None and not self._closed:
            # A backup first, so a crash at any point below still starts the run.
            backup = Outgoing(
                start.message, self.clock.now() + self.settings.start_delay, start.key
            )
            await self.send([backup])
        info, created = await self.store.create_run(create, self.clock.now())
        if created or info.status == "pending":
            if handler is not None and not self._closed:
                self._spawn(self._deliver_local(handler, start.message))
            else:
                await self.send([Outgoing(start.message, None, None)])
        return info, created

    async def _deliver_local(self, handler: MessageHandler, message: Message) -> None:
        try:
            await handler(message)
        except Exception as exc:  # the backup task starts it later
            if not self._closed:
                log.warning("worldflow: starting run %r here failed (%s)", message.run_id, exc)

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        results = await self.store.append(appends)
        sends = [
            self._send_durable(a.run_id, a.expected_seq, a.messages)
            for a, ok in zip(appends, results, strict=True)
            if ok and a.messages
        ]
        if sends:
            await asyncio.gather(*sends)
        return results

    async def _send_durable(self, run_id: str, position: int, outgoing: list[Outgoing]) -> None:
        """The messages of a durable batch (its outbox), then the mark that they went.

        Retried here, never reported as a failed append (the engine would append
        again). Whatever is not marked sent, a later read of the run's log sends:
        a process that dies between the two writes loses no timer or retry."""
        delay = 0.1
        for attempt in range(5):
            try:
                await self.send(outgoing)
                await self.store.mark_sent(run_id, position)
                return
            except Exception as exc:
                if attempt == 4 or self._closed:
                    log.error(
                        "worldflow: %d message(s) of run %s not sent (%s); the next read "
                        "of its log sends them from its outbox",
                        len(outgoing),
                        run_id,
                        exc,
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 4

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        events, outbox, position = await self.store.read_log(run_id, after_seq)
        if position is not None and not self._closed:
            # An outbox not marked sent: its writer may have died before sending.
            # The last batch's is enough: a later append was made by a process that
            # read the log after this batch (and sent it then).
            await self._send_durable(run_id, position, outbox)
        return events

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

    # -- Queue ---------------------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        outgoing = [await self._offload(out) for out in messages]
        await self.tasks.send(outgoing, self.clock.now())

    async def _offload(self, out: Outgoing) -> Outgoing:
        """A message too big for a task (Cloud Tasks takes 1 MB) carries a blob's name."""
        text = json.dumps(out.message.data, separators=(",", ":"))
        if len(text.encode()) <= MAX_INLINE_MESSAGE:
            return out
        message = out.message
        name = f"messages/{message.run_id}/{secrets.token_hex(8)}.json"
        await self.blobs.put(name, text.encode())
        small = Message(message.id, message.run_id, message.kind, {BLOB_KEY: name})
        return Outgoing(small, out.not_before, out.key)

    async def restore(self, message: Message) -> Message:
        """The message as sent, its data read back from Cloud Storage if it was offloaded."""
        name = message.data.get(BLOB_KEY)
        if not isinstance(name, str) or len(message.data) != 1:
            return message
        data = json.loads(await self.blobs.get(name))
        return Message(message.id, message.run_id, message.kind, data)

    def undue(self, not_before: float | None) -> float:
        """Seconds (on the World's clock) until a message with this not_before is due."""
        return 0.0 if not_before is None else max(0.0, not_before - self.clock.now())

    # -- Workers ---------------------------------------------------------------------------
    @property
    def worker_id(self) -> str:
        return self._worker_id

    async def worker_alive(self, worker_id: str) -> bool:
        if worker_id == self._worker_id:
            return not self._closed
        beat = await self.store.last_beat(worker_id)
        return beat is not None and beat > time.time() - self.settings.lease

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.store.heartbeat(self._worker_id, time.time())
            except Exception:
                log.exception("worldflow: heartbeat of worker %r failed", self._worker_id)
            await asyncio.sleep(self.settings.heartbeat)

    # -- webhooks ----------------------------------------------------------------------------
    def webhook_url(self, token: str) -> str:
        base = self.settings.public_url or self.settings.service_url
        if not base:
            raise ValueError(
                "webhooks need a public URL: set WORLDFLOW_PUBLIC_URL (or "
                "WORLDFLOW_GCP_SERVICE_URL) to the Cloud Run service's URL"
            )
        return f"{base}{WEBHOOK_PREFIX}{quote(token, safe='')}"

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, handler: MessageHandler) -> None:
        self.handler = handler
        await self.store.heartbeat(self._worker_id, time.time())
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
        if self.settings.listen:
            from ._server import EmbeddedServer

            server = EmbeddedServer(self, self.settings.listen)
            if await server.start():
                self._server = server

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.handler = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.close()
        tasks = list(self._tasks)
        if self._beat is not None:
            tasks.append(self._beat)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._beat is not None:
            with contextlib.suppress(Exception):
                await self.store.leave(self._worker_id)  # its attempts are lost at once
        await self.tasks.close()
        self.store.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def create_world(settings: dict[str, str]) -> GcpWorld:
    """The factory behind ``WORLDFLOW_WORLD=gcp`` (settings: docs/gcp.md)."""
    for module in ("google.cloud.firestore", "google.cloud.tasks_v2"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ImportError(
                f"the 'gcp' world needs {module!r}; install it with: pip install 'worldflow[gcp]'",
                name=module,
            )
    return GcpWorld(GcpSettings.from_mapping(settings))
