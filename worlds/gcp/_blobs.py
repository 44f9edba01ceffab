"""Cloud Storage for payloads past Firestore's 1 MiB document limit.

google-cloud-storage is a blocking client, so each call runs on a thread.
A blob is written before the Firestore write that references it, under a
name no other writer uses: a writer that loses its append race leaves an
orphan blob (harmless; a bucket lifecycle rule can sweep them), never a log
entry pointing at nothing.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from worldflow._errors import WorldError

from ._errors import translate

__all__ = ["BlobStore"]


class BlobStore:
    """Blobs in one bucket; ``None`` bucket: any blob needed is a clear error."""

    def __init__(self, project: str, bucket: str | None) -> None:
        self.project = project
        self.bucket_name = bucket
        self._bucket: Any = None
        self.writes = 0  # counted for bench/bench_gcp.py
        self.reads = 0

    def _get_bucket(self) -> Any:
        if self._bucket is None:
            from google.cloud import storage

            options: dict[str, Any] = {"project": self.project}
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                options["credentials"] = AnonymousCredentials()
            self._bucket = storage.Client(**options).bucket(self.bucket_name)
        return self._bucket

    def _need_bucket(self, name: str, size: int) -> None:
        if self.bucket_name is None:
            raise WorldError(
                f"a payload of {size} bytes ({name}) is too big for a Firestore document; "
                "set WORLDFLOW_GCP_BUCKET to a Cloud Storage bucket to store it there"
            )

    async def put(self, name: str, data: bytes) -> None:
        self._need_bucket(name, len(data))
        self.writes += 1

        def upload() -> None:
            with translate(f"write gs://{self.bucket_name}/{name}"):
                blob = self._get_bucket().blob(name)
                blob.upload_from_string(data, content_type="application/json")

        await asyncio.to_thread(upload)

    async def get(self, name: str) -> bytes:
        self._need_bucket(name, 0)
        self.reads += 1

        def download() -> bytes:
            with translate(f"read gs://{self.bucket_name}/{name}"):
                data: bytes = self._get_bucket().blob(name).download_as_bytes()
                return data

        return await asyncio.to_thread(download)
