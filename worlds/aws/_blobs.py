"""S3: the AWS world's Blobs, where the engine puts values too big for an item or a message.

The engine picks the keys (never reused, so a writer that loses a race never
overwrites the winner's object) and decides what goes here; this is only put
and get, under ``worldflow/`` in the bucket (what the template's IAM policy
allows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._errors import aws_call, off_loop

__all__ = ["S3Blobs"]

PREFIX = "worldflow/"


class S3Blobs:
    """One S3 bucket; its client is made at the first use (most runs never need it)."""

    def __init__(self, client_factory: Callable[[], Any], bucket: str) -> None:
        self._factory = client_factory
        self._client: Any = None
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"<S3Blobs {self.bucket!r}>"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def put(self, key: str, data: bytes) -> None:
        await off_loop(self._put, PREFIX + key, data)

    def _put(self, key: str, data: bytes) -> None:
        with aws_call("S3 PutObject", f"s3://{self.bucket}/{key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/json"
            )

    async def get(self, key: str) -> bytes:
        return await off_loop(self._get, PREFIX + key)

    def _get(self, key: str) -> bytes:
        with aws_call("S3 GetObject", f"s3://{self.bucket}/{key}"):
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
