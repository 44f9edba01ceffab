"""SQS: sending the engine's messages, and the calls a consumer makes.

A standard queue (at-least-once, unordered; the engine is idempotent against
duplicates) with a dead-letter queue behind it (setup and infra/ set the
redrive policy). SQS delays stop at 15 minutes: a message due later is sent
with the longest delay and re-sent by the consumer until it is due
("chained delays", see :mod:`._poller` and docs/aws.md for the cost).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worldflow._world import Outgoing

from ._blobs import Blobs
from ._errors import AwsWorldError, aws_call
from ._messages import decode_outgoing, encode_outgoing

__all__ = ["MAX_DELAY", "Received", "SqsQueue"]

#: SQS's longest DelaySeconds.
MAX_DELAY = 900
#: A body larger than this goes to S3 (SQS's limit is 256 KB on many accounts).
BODY_LIMIT = 200_000


@dataclass(slots=True)
class Received:
    """A message as received: the engine's message, and SQS's handle to delete it."""

    outgoing: Outgoing
    receipt: str
    sqs_id: str
    receive_count: int


class SqsQueue:
    """One standard SQS queue."""

    def __init__(self, client: Any, url: str, blobs: Blobs) -> None:
        self.client = client
        self.url = url
        self.blobs = blobs
        self.where = f"SQS queue {url}"

    def body(self, out: Outgoing) -> str:
        text = json.dumps(encode_outgoing(out), separators=(",", ":"))
        if len(text) > BODY_LIMIT:  # a big hook payload: the message carries its S3 key
            text = json.dumps({"blob": self.blobs.put(f"messages/{out.message.run_id}", text)})
        return text

    def send(self, messages: Sequence[Outgoing], delays: Sequence[float]) -> None:
        """Send in batches of ten; ``delays`` in seconds (capped at 15 minutes)."""
        entries = [
            {
                "Id": str(i),
                "MessageBody": self.body(out),
                "DelaySeconds": max(0, min(MAX_DELAY, math.floor(delay))),
            }
            for i, (out, delay) in enumerate(zip(messages, delays, strict=True))
        ]
        for start in range(0, len(entries), 10):
            batch = entries[start : start + 10]
            with aws_call("SQS SendMessageBatch", self.where):
                response = self.client.send_message_batch(QueueUrl=self.url, Entries=batch)
            failed = response.get("Failed") or []
            if failed:
                first = failed[0]
                raise AwsWorldError(
                    f"AWS SQS SendMessageBatch on {self.where}: {len(failed)} message(s) "
                    f"refused ({first.get('Code')}: {first.get('Message')})",
                    str(first.get("Code", "")),
                )

    def parse(self, body: str) -> Outgoing:
        """The engine message in an SQS body (``ValueError`` if it is not one)."""
        try:
            decoded = json.loads(body)
            if isinstance(decoded, dict) and set(decoded) == {"blob"}:
                decoded = json.loads(self.blobs.get(decoded["blob"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a worldflow message (not JSON): {body[:200]!r}") from exc
        if not isinstance(decoded, dict):
            raise ValueError(f"not a worldflow message: {body[:200]!r}")
        return decode_outgoing(decoded)

    def receive(self, wait: int, visibility: int) -> list[Received]:
        with aws_call("SQS ReceiveMessage", self.where):
            response = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                VisibilityTimeout=visibility,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        received = []
        for m in response.get("Messages", []):
            count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            try:
                out = self.parse(m["Body"])
            except ValueError:
                # Not ours: leave it to the redrive policy (the dead-letter queue).
                continue
            received.append(Received(out, m["ReceiptHandle"], m["MessageId"], count))
        return received

    def delete(self, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": r}
                for i, r in enumerate(receipts[start : start + 10])
            ]
            with aws_call("SQS DeleteMessageBatch", self.where):
                self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def set_visibility(self, receipts: Sequence[str], seconds: int) -> None:
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                for i, r in enumerate(receipts[start : start + 10])
            ]
            with aws_call("SQS ChangeMessageVisibilityBatch", self.where):
                self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
