"""Big payloads in S3: what would not fit in a DynamoDB item or an SQS message.

DynamoDB items stop at 400 KB and SQS messages at 256 KB (1 MiB since 2025);
a value past :data:`INLINE_LIMIT` is written to S3 under a key that is never
reused (two writers racing for the same log position each write their own
object, and the loser's object is simply never referenced), and the item or
message carries the key instead.
"""

from __future__ import annotations

import secrets
from typing import Any

from ._errors import aws_call

__all__ = ["INLINE_LIMIT", "Blobs"]

#: Bytes of JSON kept inline in an item; a larger value goes to S3 (DynamoDB's
#: limit is 400 KB per item including attribute names, so leave a margin).
INLINE_LIMIT = 350_000


class Blobs:
    """An S3 bucket holding payloads too big for DynamoDB or SQS."""

    def __init__(self, client_factory: Any, bucket: str | None) -> None:
        self._factory = client_factory
        self._client: Any = None
        self.bucket = bucket

    @property
    def client(self) -> Any:
        if self._client is None:  # S3 is needed only for big payloads: create it lazily
            self._client = self._factory("s3")
        return self._client

    def _need_bucket(self, size: int) -> str:
        if not self.bucket:
            raise ValueError(
                f"a payload of {size} bytes is too big for DynamoDB and no S3 bucket is "
                "configured: set WORLDFLOW_AWS_BUCKET"
            )
        return self.bucket

    def put(self, prefix: str, body: str) -> str:
        """Store ``body``; returns its new, unique key."""
        data = body.encode()
        bucket = self._need_bucket(len(data))
        key = f"worldflow/{prefix}-{secrets.token_hex(8)}.json"
        with aws_call("S3 PutObject", f"s3://{bucket}/{key}"):
            self.client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="application/json"
            )
        return key

    def get(self, key: str) -> str:
        bucket = self._need_bucket(0)
        with aws_call("S3 GetObject", f"s3://{bucket}/{key}"):
            response = self.client.get_object(Bucket=bucket, Key=key)
            return str(response["Body"].read().decode())
