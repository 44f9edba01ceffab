"""The GCP world, put together: Firestore, Cloud Tasks, Cloud Storage, the Cloud Run service.

:class:`~._store.FirestoreStore` is the Storage and the Workers (heartbeats),
:class:`~._queue.TaskQueue` the Queue, :class:`~._blobs.CloudStorage` the
Blobs, :class:`~._dead_letters.FirestoreDeadLetters` the DeadLetters. Tasks reach the engine through the Cloud Run service's task route
(:mod:`._host`), which answers as the engine's disposition says. The engine
does the rest: the outbox (Firestore and Cloud Tasks share no transaction),
big values in Cloud Storage, sleeps past Cloud Tasks' 30 days, heartbeats
and the adoption of a dead instance's runs.

A plain process is a client here (``Capabilities.embedded=False``): ``wf.start``
records the run and queues its start, the service executes it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from worldflow.world import Capabilities, Clock, SystemClock, World

from ._blobs import CloudStorage
from ._dead_letters import FirestoreDeadLetters
from ._queue import TaskQueue
from ._settings import MAX_TASK_DELAY, GcpSettings
from ._store import FirestoreStore

__all__ = ["MAX_EVENT_BYTES", "MAX_MESSAGE_BYTES", "GcpWorld", "create_world"]

#: Firestore takes 1 MiB per document: an append's events up to this, the rest in blobs.
MAX_EVENT_BYTES = 900_000
#: Cloud Tasks takes 1 MB per task: a message's data up to this, the rest in a blob.
MAX_MESSAGE_BYTES = 256_000


class GcpWorld(World):
    """Runs in Firestore, messages as Cloud Tasks HTTP tasks to a Cloud Run service.

    >>> world = GcpWorld(GcpSettings(project="my-project", service_url="https://..."))
    >>> world = GcpWorld(settings, clock=wf.VirtualClock())   # tests: time moves on demand
    """

    def __init__(self, settings: GcpSettings, *, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        store = FirestoreStore(settings.project, settings.database, run_ttl=settings.run_ttl)
        queue = TaskQueue(settings, clock)
        blobs = CloudStorage(settings.project, settings.bucket)
        real_time = isinstance(clock, SystemClock)
        super().__init__(
            storage=store,
            queue=queue,
            workers=store,
            blobs=blobs,
            dead_letters=FirestoreDeadLetters(store, queue),
            clock=clock,
            capabilities=Capabilities(
                max_delay=MAX_TASK_DELAY,
                max_event_bytes=MAX_EVENT_BYTES,
                max_message_bytes=MAX_MESSAGE_BYTES,
                transactional_messages=False,
                embedded=False,
                # Steps run inside the task request that reached them: past the request
                # timeout Cloud Run cuts the request, and may stop an instance it thinks idle.
                max_attempt_seconds=settings.dispatch_deadline,
                host_limit="Cloud Run's request timeout (WORLDFLOW_GCP_REQUEST_TIMEOUT)",
            ),
            # Cloud Run does not tell a service its own URL (it sets K_SERVICE, K_REVISION,
            # PORT): Terraform passes it. Webhook URLs are WORLDFLOW_PUBLIC_URL's, else the
            # service URL's (tasks need it anyway); with neither, create_webhook fails
            # with an error that says which setting to give.
            public_url=settings.public_url or settings.service_url,
            heartbeat=settings.heartbeat,
            lease=settings.lease,
            # How long a task request may hold a message that came early (clock skew):
            # a request held open is an instance kept busy. On a test's virtual clock
            # none, so the emulator (one request at a time per queue) is never blocked.
            hold=10.0 if real_time else 0.0,
            max_webhook_bytes=settings.max_webhook_bytes,
            name="gcp",
        )
        self.settings = settings
        self.store = store
        self.tasks = queue
        self.cloud_storage = blobs

    def __repr__(self) -> str:
        return f"<GcpWorld project={self.settings.project!r} queue={self.settings.queue!r}>"


def create_world(settings: dict[str, Any]) -> GcpWorld:
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
