"""Cloud Tasks: one HTTP task per message, to the service's task route.

A task's body carries the message and its ``not_before`` on the World's
clock. ``schedule_time`` asks Cloud Tasks to hold it until then, up to its
30-day limit; the route re-schedules a task that arrives early (a sleep
longer than 30 days takes a hop per 29 days), so a message is never run
before it is due whatever the queue does. A message's de-duplication key
names the task (Cloud Tasks refuses a second task of that name for a while:
``ALREADY_EXISTS`` is success here); the emulator used in tests ignores
names, and nothing depends on them: the engine ignores a message it has
already applied.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from worldflow._world import MESSAGE_KINDS, Message, Outgoing

from ._errors import translate
from ._settings import MAX_TASK_DELAY, GcpSettings

__all__ = ["TASK_ROUTE", "TaskQueue", "decode_task", "encode_task"]

TASK_ROUTE = "/_worldflow/tasks"

log = logging.getLogger("worldflow.gcp")


def encode_task(message: Message, not_before: float | None, key: str | None) -> bytes:
    body = {
        "id": message.id,
        "run_id": message.run_id,
        "kind": message.kind,
        "data": message.data,
        "not_before": not_before,
        "key": key,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_task(body: bytes) -> tuple[Message, float | None, str | None]:
    """The message a task carries; ValueError when the body is not one."""
    try:
        doc = json.loads(body)
        kind = doc["kind"]
        if kind not in MESSAGE_KINDS:
            raise ValueError(f"unknown message kind {kind!r}")
        message = Message(str(doc["id"]), str(doc["run_id"]), kind, dict(doc.get("data") or {}))
        not_before = doc.get("not_before")
        return message, None if not_before is None else float(not_before), doc.get("key")
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a worldflow task body: {exc}") from exc


class TaskQueue:
    """Creates HTTP tasks on one queue; the client lives on the loop that first sends."""

    def __init__(self, settings: GcpSettings, *, real_time: bool) -> None:
        self.settings = settings
        self.real_time = real_time  # False: a virtual clock; the route holds undue tasks
        self._client: Any = None
        self.created = 0  # counted for bench/bench_gcp.py
        self._warned = False

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.transport.close()

    @property
    def target(self) -> str:
        base = self.settings.service_url
        if not base:
            raise ValueError(
                "the gcp world needs the service URL its tasks target: set "
                "WORLDFLOW_GCP_SERVICE_URL to the Cloud Run service's URL"
            )
        return base + TASK_ROUTE

    def _task(self, out: Outgoing, delay: float) -> dict[str, Any]:
        from google.protobuf import timestamp_pb2

        request: dict[str, Any] = {
            "url": self.target,
            "http_method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": encode_task(out.message, out.not_before, out.key),
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
        task: dict[str, Any] = {"http_request": request}
        if delay > 0 and self.real_time:
            stamp = timestamp_pb2.Timestamp()
            when = time.time() + min(delay, MAX_TASK_DELAY)
            stamp.FromDatetime(dt.datetime.fromtimestamp(when, dt.UTC))
            task["schedule_time"] = stamp
        if out.key:
            # The same key and due time: the same task (a hop's key names the task it
            # continues, so it never collides with that one, still being delivered).
            digest = hashlib.sha256(f"{out.key}@{out.not_before}".encode()).hexdigest()
            task["name"] = f"{settings.queue_path}/tasks/wf-{digest[:40]}"
        return task

    async def send(self, messages: Sequence[Outgoing], now: float) -> None:
        for out in messages:
            delay = 0.0 if out.not_before is None else out.not_before - now
            task = self._task(out, delay)
            try:
                with translate(f"create a task on Cloud Tasks queue {self.settings.queue_path}"):
                    await self.client.create_task(parent=self.settings.queue_path, task=task)
            except Exception as exc:
                if type(exc.__cause__).__name__ == "AlreadyExists":
                    continue  # the same key is queued already: de-duplicated
                raise
            self.created += 1


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
