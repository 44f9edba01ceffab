"""``worldflow setup gcp``: create the queue (and bucket) for development and tests.

Against the Cloud Tasks emulator (``WORLDFLOW_GCP_TASKS_ENDPOINT``) or a real
project; then print the settings to export. Production uses infra/gcp/
(Terraform), which also declares Firestore's composite indexes.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from typing import Any

from ._errors import translate
from ._queue import make_client
from ._settings import GcpSettings

__all__ = ["QUEUE_RETRY", "delete_queue", "ensure_bucket", "ensure_queue", "exports", "setup"]

#: The queue's retry config, as infra/gcp/main.tf sets it (docs/gcp.md, "Dead letters"):
#: a bounded backstop above WORLDFLOW_MAX_DELIVERIES, 1 s doubling 8 times, then 300 s.
QUEUE_RETRY: dict[str, Any] = {
    "max_attempts": 100,
    "max_retry_duration": {"seconds": 3600},
    "min_backoff": {"seconds": 1},
    "max_backoff": {"seconds": 300},
    "max_doublings": 8,
}


async def ensure_queue(settings: GcpSettings) -> bool:
    """Create the queue unless it exists; True if it was created."""
    client: Any = make_client(settings)
    parent = settings.queue_path.rsplit("/queues/", 1)[0]
    try:
        with translate(f"create Cloud Tasks queue {settings.queue_path}"):
            try:
                queue = {"name": settings.queue_path, "retry_config": QUEUE_RETRY}
                await client.create_queue(parent=parent, queue=queue)
            except Exception as exc:
                if type(exc).__name__ == "AlreadyExists":
                    return False
                raise
        return True
    finally:
        await client.transport.close()


async def delete_queue(settings: GcpSettings) -> None:
    client: Any = make_client(settings)
    try:
        with translate(f"delete Cloud Tasks queue {settings.queue_path}"):
            await client.delete_queue(name=settings.queue_path)
    finally:
        await client.transport.close()


def ensure_bucket(settings: GcpSettings) -> bool:
    """Create the bucket unless it exists (blocking); True if it was created."""
    if not settings.bucket:
        return False
    from google.cloud import storage

    options: dict[str, Any] = {"project": settings.project}
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        options["credentials"] = AnonymousCredentials()
    with translate(f"create Cloud Storage bucket {settings.bucket}"):
        client = storage.Client(**options)
        if client.lookup_bucket(settings.bucket) is not None:
            return False
        client.create_bucket(settings.bucket, location=settings.location)
        return True


def exports(settings: GcpSettings) -> dict[str, str]:
    """The environment a process needs to use this world."""
    env = {
        "WORLDFLOW_WORLD": "gcp",
        "WORLDFLOW_GCP_PROJECT": settings.project,
        "WORLDFLOW_GCP_LOCATION": settings.location,
        "WORLDFLOW_GCP_QUEUE": settings.queue,
    }
    optional = {
        "WORLDFLOW_GCP_SERVICE_URL": settings.service_url,
        "WORLDFLOW_GCP_BUCKET": settings.bucket,
        "WORLDFLOW_GCP_TASKS_ENDPOINT": settings.tasks_endpoint,
        "WORLDFLOW_GCP_OIDC_AUDIENCE": settings.oidc_audience,
        "WORLDFLOW_GCP_SHARED_SECRET": settings.shared_secret,
        "FIRESTORE_EMULATOR_HOST": os.environ.get("FIRESTORE_EMULATOR_HOST"),
        "STORAGE_EMULATOR_HOST": os.environ.get("STORAGE_EMULATOR_HOST"),
    }
    env.update({k: v for k, v in optional.items() if v})
    return env


def setup(settings: GcpSettings) -> tuple[list[str], dict[str, str]]:
    """Create what is missing; returns (what was done, the exports)."""
    done = []
    created = asyncio.run(ensure_queue(settings))
    done.append(f"queue {settings.queue_path}: {'created' if created else 'exists'}")
    if settings.bucket:
        made = ensure_bucket(settings)
        done.append(f"bucket gs://{settings.bucket}: {'created' if made else 'exists'}")
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        done.append(
            "Firestore: create the database and its indexes with infra/gcp "
            "(terraform apply) or: gcloud firestore indexes composite create ... "
            "(docs/gcp.md lists them)"
        )
    return done, exports(settings)


def format_exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
