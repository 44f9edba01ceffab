"""The AWS world: runs in DynamoDB, messages on SQS, big payloads in S3.

:class:`AwsWorld` implements the World protocols over boto3 (calls run on
short-lived daemon threads, so a slow AWS call never blocks the event loop nor
holds the interpreter open at exit). Two ways to consume the queue:

- on Lambda, :mod:`._lambda` hands SQS batches to the engine itself;
- anywhere else (a container, a laptop, the tests), ``start(handler)`` runs
  :class:`._poller.Poller`, a long-polling SQS consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from worldflow._clock import Clock, SystemClock
from worldflow._world import (
    TERMINAL,
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

from ._blobs import INLINE_LIMIT, Blobs
from ._queue import MAX_DELAY, SqsQueue
from ._store import DynamoStore, Outbox

__all__ = ["WEBHOOK_PREFIX", "AwsWorld"]

log = logging.getLogger("worldflow.aws")

T = TypeVar("T")

WEBHOOK_PREFIX = "/webhooks/"
#: The key suffix of a locally started run's delayed copy of its start message.
SAFETY = ":safety"


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call on a daemon thread of its own and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, daemon=True, name="worldflow-aws").start()
    return await future


class AwsWorld:
    """Runs in a DynamoDB table, messages on an SQS queue, big payloads in an S3 bucket.

    >>> world = AwsWorld("worldflow", "https://sqs.eu-west-1.amazonaws.com/123/worldflow",
    ...                  bucket="my-worldflow-payloads")

    ``poll=False`` (``WORLDFLOW_AWS_POLL=0``): this process only starts runs
    and looks at them; Lambda (or another worker) executes them.
    ``endpoint_url``/``region`` are boto3's (``AWS_ENDPOINT_URL`` works too);
    ``poll_wait`` is the SQS long-poll wait and ``visibility`` the visibility
    timeout the consumer takes messages with (it extends it while it works on
    them); ``heartbeat``/``worker_lease`` say how often this worker proves it
    is alive and for how long a proof holds (a step running on a worker whose
    proof has expired is run again).
    """

    def __init__(
        self,
        table: str,
        queue_url: str,
        bucket: str | None = None,
        *,
        clock: Clock | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        public_url: str | None = None,
        session: Any = None,
        poll_wait: int = 20,
        visibility: int = 60,
        heartbeat: float = 10.0,
        worker_lease: float = 30.0,
        hold_max: float = 60.0,
        outbox_grace: float = 60.0,
        start_safety: float = 60.0,
        poll: bool = True,
    ) -> None:
        if not table or not queue_url:
            raise ValueError(
                "the aws world needs a DynamoDB table and an SQS queue: set "
                "WORLDFLOW_AWS_TABLE and WORLDFLOW_AWS_QUEUE_URL (or run `worldflow setup aws`)"
            )
        self.clock: Clock = clock or SystemClock()
        self.real_clock = isinstance(self.clock, SystemClock)
        self.capabilities = Capabilities(max_delay=float(MAX_DELAY), max_event_bytes=INLINE_LIMIT)
        self._session = session
        self._region = region
        self._endpoint_url = endpoint_url
        self.poll_wait = poll_wait  # before the clients: their read timeout outlasts a long poll
        self.blobs = Blobs(self._client, bucket)
        self.store = DynamoStore(self._client("dynamodb"), table, self.blobs)
        self.queue = SqsQueue(self._client("sqs"), queue_url, self.blobs)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.visibility = visibility
        self.heartbeat_interval = heartbeat
        self.worker_lease = worker_lease
        self.hold_max = hold_max
        self.outbox_grace = outbox_grace
        self.start_safety = start_safety
        self._worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._handler: MessageHandler | None = None
        self._poller: Any = None
        self._heartbeat_until = 0.0
        self._closed = False
        #: run id -> cids of step attempts this worker runs (from the appends it wrote)
        self.attempts: dict[str, set[int]] = {}
        self.on_quiet: Callable[[str], None] | None = None
        self._local_tasks: set[asyncio.Task[None]] = set()
        #: (run id, last seq) -> messages of a durable append that SQS did not take yet
        self.unsent: dict[tuple[str, int], list[Outgoing]] = {}
        self._unsent_lock = threading.Lock()
        #: False: this process consumes no messages (a client; Lambda feeds its own)
        self.poll = poll
        self.on_events: Callable[[Append], None] | None = None

    def __repr__(self) -> str:
        return f"<AwsWorld table={self.store.table!r} queue={self.queue.url!r}>"

    def _client(self, service: str) -> Any:
        import boto3  # the heaviest import of the world: only when a World is built
        from botocore.config import Config

        session = self._session or boto3.session.Session()
        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=50,
            connect_timeout=5,
            read_timeout=max(30, self.poll_wait + 10),
        )
        return session.client(
            service, region_name=self._region, endpoint_url=self._endpoint_url, config=config
        )

    # -- Storage ---------------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        info, created = await in_thread(self.store.create_run, create)
        if created or info.status == "pending":
            # A run found still pending was created by a caller that may have died
            # before sending its start message: sending it again is harmless.
            await self._start_message(create.start)
        return info, created

    async def _start_message(self, start: Outgoing) -> None:
        handler = self._handler
        if handler is None or self._closed:
            await self.send([start])
            return
        # This process serves the queue: start the run here, at once (no queue
        # round trip), with a delayed copy on SQS in case this process dies first.
        safety = Outgoing(
            start.message,
            self.clock.now() + self.start_safety,
            f"{start.key or start.message.run_id}{SAFETY}",
        )
        await self.send([safety])
        self.spawn_local(handler, start.message)

    def spawn_local(self, handler: MessageHandler, message: Message) -> None:
        async def deliver() -> None:
            try:
                await handler(message)
            except Exception as exc:
                if not self._closed:
                    log.warning("worldflow: starting run %r here failed (%s)", message.run_id, exc)

        task = asyncio.get_running_loop().create_task(deliver())
        self._local_tasks.add(task)
        task.add_done_callback(self._local_tasks.discard)

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        # Appends of one run form a chain (in order; one lost race fails the rest);
        # different runs are written concurrently.
        chains: dict[str, list[int]] = {}
        for i, append in enumerate(appends):
            chains.setdefault(append.run_id, []).append(i)
        results = [False] * len(appends)

        def write_chain(indexes: list[int]) -> None:
            for i in indexes:
                ok = self.store.append(appends[i], self.clock.now())
                results[i] = ok
                if not ok:
                    return
                if appends[i].messages:
                    self._send_and_clear(appends[i])

        await asyncio.gather(*(in_thread(write_chain, ix) for ix in chains.values()))
        for append, ok in zip(appends, results, strict=True):
            if ok:
                self._track(append)
                if self.on_events is not None:
                    self.on_events(append)
        return results

    def _send_and_clear(self, append: Append) -> None:
        """Send an append's messages now that it is durable, then drop its outbox item.

        If the send fails, the messages wait in :attr:`unsent` (sent again by
        :meth:`resend_unsent`; until then their run counts as busy, so the message
        that led to them is not acknowledged); if the process dies, the outbox item
        stays and a later cold read of the run sends them."""
        try:
            self._send_sync(append.messages)
        except Exception as exc:
            log.warning(
                "worldflow: sending the messages of run %r (seq %d) failed (%s); trying again",
                append.run_id,
                append.last_seq,
                exc,
            )
            with self._unsent_lock:
                self.unsent[append.run_id, append.last_seq] = list(append.messages)
            return
        self._clear_outbox(append.run_id, append.last_seq)

    def _clear_outbox(self, run_id: str, last_seq: int) -> None:
        try:
            self.store.clear_outbox(run_id, [last_seq])
        except Exception as exc:  # sent already: a later cold read sends a harmless copy
            log.warning("worldflow: could not clear the outbox of run %r (%s)", run_id, exc)

    def resend_unsent(self) -> list[str]:
        """Send what failed to send before (blocking); returns the runs now all sent."""
        with self._unsent_lock:
            pending = list(self.unsent.items())
        done: set[str] = set()
        for (run_id, last_seq), messages in pending:
            try:
                self._send_sync(messages)
            except Exception as exc:
                log.warning("worldflow: sending run %r's messages failed again (%s)", run_id, exc)
                continue
            with self._unsent_lock:
                self.unsent.pop((run_id, last_seq), None)
            self._clear_outbox(run_id, last_seq)
            done.add(run_id)
        with self._unsent_lock:
            waiting = {run_id for run_id, _ in self.unsent}
        return sorted(done - waiting)

    def _track(self, append: Append) -> None:
        """Follow which step attempts this worker runs, from the events it wrote:
        a consumer acknowledges a message only once its run has none left."""
        running = self.attempts.get(append.run_id)
        for event in append.events:
            cid = int(event.data.get("cid") or 0)
            if event.kind == "step_started" and event.data.get("worker") == self._worker_id:
                self.attempts.setdefault(append.run_id, set()).add(cid)
                running = self.attempts[append.run_id]
            elif running is not None and event.kind in (
                "step_completed",
                "step_failed",
                "step_retrying",
            ):
                running.discard(cid)
        if append.status in TERMINAL or (running is not None and not running):
            self.attempts.pop(append.run_id, None)
            if self.on_quiet is not None and not self.busy(append.run_id):
                self.on_quiet(append.run_id)

    def busy(self, run_id: str) -> bool:
        """Whether a step attempt of this worker runs for the run, or messages of one
        of its appends are still to be sent: not the time to acknowledge its message."""
        if self.attempts.get(run_id):
            return True
        with self._unsent_lock:
            return any(r == run_id for r, _ in self.unsent)

    async def waits_on_another(self, run_id: str) -> bool:
        """Whether a step of the run is running on another worker that is alive."""
        from worldflow._state import RunState

        events = await self.read_events(run_id)
        if not events:
            return False
        state = RunState.from_events(run_id, events, lean=True)
        others = {
            step.worker
            for step in state.open_steps.values()
            if step.status == "running" and step.worker and step.worker != self._worker_id
        }
        for worker in others:
            if await self.worker_alive(worker):
                return True
        return False

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        events, outbox = await in_thread(self.store.read_events, run_id, after_seq)
        stale = [o for o in outbox if time.time() - o.written > self.outbox_grace]
        if stale:
            await in_thread(self._recover_outbox, run_id, stale)
        return events

    def _recover_outbox(self, run_id: str, stale: list[Outbox]) -> None:
        from ._messages import decode_outgoing

        log.warning(
            "worldflow: run %r had %d unsent message batch(es); sending", run_id, len(stale)
        )
        messages = [decode_outgoing(m) for o in stale for m in o.messages]
        self._send_sync(messages)
        self.store.clear_outbox(run_id, [o.last_seq for o in stale])

    async def get_run(self, run_id: str) -> RunInfo | None:
        return await in_thread(self.store.get_run, run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        return await in_thread(self.store.list_runs, status, workflow, limit, cursor)

    async def get_hook(self, token: str) -> HookInfo | None:
        return await in_thread(self.store.get_hook, token)

    # -- Queue -------------------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        if messages:
            await in_thread(self._send_sync, messages)

    def _send_sync(self, messages: Sequence[Outgoing]) -> None:
        now = self.clock.now()
        # SQS's delay only helps when the world runs on the real clock; the
        # consumer checks not_before anyway (a virtual clock jumps ahead).
        delays = [
            (out.not_before - now) if self.real_clock and out.not_before is not None else 0.0
            for out in messages
        ]
        self.queue.send(messages, delays)

    # -- Workers -------------------------------------------------------------------------
    @property
    def worker_id(self) -> str:
        return self._worker_id

    async def worker_alive(self, worker_id: str) -> bool:
        if worker_id == self._worker_id:
            return not self._closed
        expires = await in_thread(self.store.worker_expires, worker_id)
        return expires is not None and expires > time.time()

    def prove_alive(self, until: float) -> None:
        """Record that this worker is alive until ``until`` (real epoch seconds), unless
        the last proof covers it. A proof is written with a minute to spare, so
        back-to-back Lambda invocations write one heartbeat a minute, not one each."""
        if until > self._heartbeat_until:
            until = max(until, time.time() + self.worker_lease) + 60.0
            self.store.heartbeat(self._worker_id, until)
            self._heartbeat_until = until

    # -- webhooks --------------------------------------------------------------------------
    def webhook_url(self, token: str) -> str:
        return f"{self._base_url()}{WEBHOOK_PREFIX}{quote(token, safe='')}"

    def _base_url(self) -> str:
        if self.public_url is None:
            self.public_url = self._function_url() or ""
            if not self.public_url:
                log.warning(
                    "worldflow: WORLDFLOW_PUBLIC_URL is not set; webhook URLs are relative paths"
                )
        return self.public_url

    def _function_url(self) -> str | None:
        """On Lambda without WORLDFLOW_PUBLIC_URL: the function's own URL (looked up
        once per process; the template cannot pass a function its own URL)."""
        name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        if not name:
            return None
        try:
            config = self._client("lambda").get_function_url_config(FunctionName=name)
        except Exception as exc:
            log.warning("worldflow: cannot look up the function URL of %r (%s)", name, exc)
            return None
        return str(config["FunctionUrl"]).rstrip("/")

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, handler: MessageHandler) -> None:
        """Consume the queue in this process (outside Lambda): long-poll SQS, hold
        messages until they are due, acknowledge them once their run is quiet."""
        from ._poller import Poller

        if not self.poll:
            return  # a client, or Lambda (which feeds the engine itself): consume nothing
        self._handler = handler
        self._poller = Poller(self, handler)
        await self._poller.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            await self._poller.close()
        for task in list(self._local_tasks):
            task.cancel()
        if self._heartbeat_until:
            try:
                await in_thread(self.store.leave, self._worker_id)
            except Exception:
                log.warning("worldflow: could not remove this worker's heartbeat", exc_info=True)


def create_world(settings: dict[str, Any]) -> AwsWorld:
    """The factory behind ``WORLDFLOW_WORLD=aws``: settings from ``WORLDFLOW_AWS_*``."""
    missing = [name for name in ("table", "queue_url") if not settings.get(name)]
    if missing:
        names = ", ".join(f"WORLDFLOW_AWS_{m.upper()}" for m in missing)
        raise ValueError(
            f"the aws world needs {names} (environment variables, or keys under "
            "[tool.worldflow.aws] in pyproject.toml); `worldflow setup aws` creates "
            "the resources and prints them"
        )

    def number(name: str, default: float) -> float:
        value = settings.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"WORLDFLOW_AWS_{name.upper()}={value!r}: expected a number") from None

    return AwsWorld(
        settings["table"],
        settings["queue_url"],
        settings.get("bucket") or None,
        region=settings.get("region") or None,
        endpoint_url=settings.get("endpoint_url") or None,
        public_url=settings.get("public_url") or None,
        poll_wait=int(number("poll_wait", 20)),
        visibility=int(number("visibility", 60)),
        heartbeat=number("heartbeat", 10.0),
        worker_lease=number("worker_lease", 30.0),
        start_safety=number("start_safety", 60.0),
        poll=settings.get("poll", "1").lower() not in ("0", "false", "no"),
    )
