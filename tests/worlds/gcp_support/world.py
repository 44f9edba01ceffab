"""A GCP world for one test: its own Firestore project and Cloud Tasks queue, the app on a port."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from worldflow._clock import Clock
from worldflow.worlds.gcp import GcpSettings, GcpWorld
from worldflow.worlds.gcp._setup import delete_queue, ensure_queue

from .emulators import BUCKET, Emulators, free_port

__all__ = ["SECRET", "settings_for_test", "world_factory"]

SECRET = "test-secret-" + uuid.uuid4().hex


def settings_for_test(em: Emulators, **overrides: object) -> GcpSettings:
    tag = uuid.uuid4().hex[:10]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options: dict[str, object] = {
        "project": f"wf-test-{tag}",
        "location": "europe-west1",
        "queue": f"q-{tag}",
        "service_url": url,
        "public_url": url,
        "bucket": BUCKET,
        "tasks_endpoint": em.tasks_endpoint,
        "shared_secret": SECRET,
        "listen": f"127.0.0.1:{port}",
        "heartbeat": 0.5,
        "lease": 2.0,
        "start_delay": 30.0,
        "drain_timeout": 5.0,
    }
    options.update(overrides)
    return GcpSettings(**options)  # type: ignore[arg-type]


@contextmanager
def world_factory(
    em: Emulators, clock: Clock, **overrides: object
) -> Iterator[Callable[[], GcpWorld]]:
    """Yields make_world for the conformance suite; the queue is deleted afterwards."""
    settings = settings_for_test(em, **overrides)
    asyncio.run(ensure_queue(settings))
    try:
        yield lambda: GcpWorld(settings, clock=clock)
    finally:
        asyncio.run(delete_queue(settings))
