"""Cloud Tasks: the GCP world's Queue. One HTTP task per message, to the service's task route.

A task's body carries the message with its ``not_before`` (on the World's
clock) and its ``key``; they come back to the engine in the
:class:`~worldflow.world.Delivery`, which holds or re-sends a message that
comes early. On the real clock ``schedule_time`` asks Cloud Tasks to hold the
task until it is due, up to ``MAX_TASK_DELAY``; on a test's virtual clock
tasks go at once and the engine decides. A keyed message names its task
after ``key`` and ``not_before``, so real Cloud Tasks refuses a second copy
(``ALREADY_EXISTS`` counts as sent); nothing depends on it, since the engine
ignores a message it has already applied.

Cloud Tasks pushes to the Cloud Run service, so :meth:`TaskQueue.start` does
nothing in production. With ``listen`` set (tests, local development) it
serves the app in this process (:mod:`._server`), the Cloud Run stand-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from worldflow.world import (
    MESSAGE_KINDS,
    Clock,
    CorruptLogError,
    Deliver,
    Delivery,
    Message,
    Outgoing,
    SystemClock,
    json_dumps,
    json_loads,
)

from ._errors import translate
from ._settings import MAX_TASK_DELAY, GcpSettings

__all__ = ["TASK_ROUTE", "TaskQueue", "decode_task", "delivery_of", "encode_task", "make_client"]

TASK_ROUTE = "/_worldflow/tasks"

log = logging.getLogger("worldflow.gcp")


def encode_task(out: Outgoing, delivered: int = 0) -> bytes:
    """A task's body. ``delivered``: how many times the message was delivered before, in
    tasks this one continues (its attempts go on from there)."""
    m = out.message
    body: dict[str, Any] = {"id": m.id, "run_id": m.run_id, "kind": m.kind, "data": m.data}
    body.update(not_before=out.not_before, key=out.key)
    if delivered:
        body["delivered"] = delivered
    return json_dumps(body).encode()


def decode_task(body: bytes, retries: int = 0) -> Delivery:
    """The delivery a task carries, the ``retries`` Cloud Tasks made of this task
    counted in its attempt; ValueError when the body is not one."""
    try:
        return delivery_of(json_loads(body, "a task body"), retries)
    except CorruptLogError as exc:
        raise ValueError(str(exc)) from None


def delivery_of(doc: Any, retries: int = 0) -> Delivery:
    """A task body, parsed, as a delivery; ValueError when it is not one."""
    try:
        kind = doc["kind"]
        if kind not in MESSAGE_KINDS:
            raise ValueError(f"unknown message kind {kind!r}")
        data = doc.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError("its data is not an object")
        message = Message(str(doc["id"]), str(doc["run_id"]), kind, data)
        not_before, key = doc.get("not_before"), doc.get("key")
        return Delivery(
            message,
            None if not_before is None else float(not_before),
            None if key is None else str(key),
            int(doc.get("delivered", 0)) + retries + 1,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a worldflow task body: {exc}") from None


def task_name_key(out: Outgoing) -> str | None:
    """What a task is named after: the same key and due time are the same task."""
    return None if out.key is None else f"{out.key}@{out.not_before}"


class TaskQueue:
    """Creates HTTP tasks on one queue; the client lives on the loop that first sends."""

    def __init__(self, settings: GcpSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._client: Any = None
        self._server: Any = None
        self.closing = False  # set as close() begins: the embedded app then refuses work
        self.created = 0  # counted for bench/bench_gcp.py
        self._warned = False

    def __repr__(self) -> str:
        return f"<TaskQueue {self.settings.queue_path}>"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    @property
    def target(self) -> str:
        base = self.settings.service_url
        if not base:
            raise ValueError(
                "the gcp world needs the service URL its tasks target: set "
                "WORLDFLOW_GCP_SERVICE_URL to the Cloud Run service's URL"
            )
        return base + TASK_ROUTE

    # -- Queue ---------------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        now = self.clock.now()
        for out in messages:
            delay = 0.0 if out.not_before is None else out.not_before - now
            await self.create(out, delay, task_name_key(out))

    async def start(self, deliver: Deliver) -> None:
        """Cloud Tasks pushes to the service: nothing to do, unless ``listen`` asks this
        process to serve the app itself (tests, local development)."""
        if self.settings.listen and self._server is None:
            from ._server import EmbeddedServer

            self.closing = False
            server = EmbeddedServer(self.settings.listen, self)
            if await server.start():
                self._server = server

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            server, self._server = self._server, None
            await server.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.transport.close()

    # -- tasks -----------------------------------------------------------------------
    async def create(
        self, out: Outgoing, delay: float, name_key: str | None, delivered: int = 0
    ) -> None:
        """Create one task for ``out``, held ``delay`` seconds (on the real clock only), named
        after ``name_key`` (a second task of that name is taken as sent)."""
        task = self._task(out, delay, name_key, delivered)
        try:
            with translate(f"create a task on Cloud Tasks queue {self.settings.queue_path}"):
                await self.client.create_task(parent=self.settings.queue_path, task=task)
        except Exception as exc:
            if type(exc.__cause__).__name__ == "AlreadyExists":
                return  # the same task is queued already: de-duplicated
            raise
        self.created += 1

    def _task(
        self, out: Outgoing, delay: float, name_key: str | None, delivered: int
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "url": self.target,
            "http_method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": encode_task(out, delivered),
        }
        settings = self.settings
        if settings.oidc_audience and settings.tasks_service_account:
            request["oidc_token"] = {
                "service_account_email": settings.tasks_service_account,
                "audience": settings.oidc_audience,
            }
        elif settings.shared_secret:
            request["headers"]["Authorization"] = f"Bearer {settings.shared_secret}"
        elif not self._warned:
            self._warned = True
            log.warning(
                "worldflow: tasks to %s carry no credentials, and the service refuses such "
                "calls: set WORLDFLOW_GCP_OIDC_AUDIENCE and WORLDFLOW_GCP_TASKS_SERVICE_ACCOUNT "
                "(or WORLDFLOW_GCP_SHARED_SECRET with emulators)",
                self.target,
            )
        # Cloud Tasks waits this long for the answer (its default is 10 minutes), as long
        # as Cloud Run lets the request run; the route answers before (DRAIN_TIMEOUT).
        deadline = settings.dispatch_deadline
        task: dict[str, Any] = {
            "http_request": request,
            "dispatch_deadline": {"seconds": int(deadline)},
        }
        # A virtual clock (tests) does not move with real time: the engine holds what is
        # early, and the emulator would hold a task against the wrong clock.
        if delay > 0 and isinstance(self.clock, SystemClock):
            from google.protobuf import timestamp_pb2

            stamp = timestamp_pb2.Timestamp()
            when = time.time() + min(delay, MAX_TASK_DELAY)
            stamp.FromDatetime(dt.datetime.fromtimestamp(when, dt.UTC))
            task["schedule_time"] = stamp
        if name_key is not None:
            digest = hashlib.sha256(name_key.encode()).hexdigest()
            task["name"] = f"{settings.queue_path}/tasks/wf-{digest[:40]}"
        return task


def make_client(settings: GcpSettings) -> Any:
    """An async Cloud Tasks client; against an emulator, over a plain gRPC channel."""
    from google.cloud import tasks_v2

    with translate("create a Cloud Tasks client"):
        if settings.tasks_endpoint:
            import grpc
            from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                CloudTasksGrpcAsyncIOTransport,
            )

            channel = grpc.aio.insecure_channel(settings.tasks_endpoint)
            transport = CloudTasksGrpcAsyncIOTransport(channel=channel)
            return tasks_v2.CloudTasksAsyncClient(transport=transport)
        return tasks_v2.CloudTasksAsyncClient()
