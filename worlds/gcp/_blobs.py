"""Cloud Storage: the GCP world's Blobs, for values past Firestore's and Cloud Tasks' limits.

The engine decides what goes here and picks the keys (unique ones, written
before the log entry that names them: a writer that loses its append race
leaves an orphan blob, never a reference to nothing). google-cloud-storage is
a blocking client, so each call runs on a thread.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from worldflow.world import WorldError

from ._errors import translate

__all__ = ["CloudStorage"]


class CloudStorage:
    """Blobs in one bucket; without a bucket, any blob needed is a clear error."""

    def __init__(self, project: str, bucket: str | None) -> None:
        self.project = project
        self.bucket_name = bucket
        self._bucket: Any = None
        self.writes = 0  # counted for bench/bench_gcp.py
        self.reads = 0

    def __repr__(self) -> str:
        return f"<CloudStorage gs://{self.bucket_name}>"

    def _need_bucket(self, key: str, size: int) -> None:
        if self.bucket_name is None:
            raise WorldError(
                f"a value of {size} bytes ({key}) is too big for a Firestore document or a "
                "task; set WORLDFLOW_GCP_BUCKET to a Cloud Storage bucket to store it there"
            )

    def _get_bucket(self) -> Any:
        if self._bucket is None:
            from google.cloud import storage

            options: dict[str, Any] = {"project": self.project}
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                options["credentials"] = AnonymousCredentials()
            self._bucket = storage.Client(**options).bucket(self.bucket_name)
        return self._bucket

    async def put(self, key: str, data: bytes) -> None:
        self._need_bucket(key, len(data))
        self.writes += 1

        def upload() -> None:
            with translate(f"write gs://{self.bucket_name}/{key}"):
                self._get_bucket().blob(key).upload_from_string(
                    data, content_type="application/json"
                )

        await asyncio.to_thread(upload)

    async def get(self, key: str) -> bytes:
        self._need_bucket(key, 0)
        self.reads += 1

        def download() -> bytes:
            with translate(f"read gs://{self.bucket_name}/{key}"):
                data: bytes = self._get_bucket().blob(key).download_as_bytes()
                return data

        return await asyncio.to_thread(download)
