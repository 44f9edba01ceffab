"""The AWS world's DeadLetters: the SQS dead-letter queue behind the main queue.

``bury`` sends the message's body, unchanged, to the dead-letter queue with
the reason, the attempt count and the time as message attributes; the caller
then deletes the original (the poller) or reports its record as done (the
Lambda host). ``redrive`` sends a dead letter's body to the main queue as a
new message (a first delivery: its receive count starts again) and deletes it
from the dead-letter queue.

Listing an SQS queue is receiving from it: :meth:`SqsDeadLetters.dead_letters`
receives in rounds of 10 (each message hidden for ``LIST_VISIBILITY`` seconds
so that no round returns it twice), then makes every message it saw visible
again at once. So a listing sees at most what SQS hands out in those rounds:
messages another reader holds at that moment are missed, and each listing
counts as a receive of every message it sees. For the few letters a healthy
system has, that is all of them.

The queue's redrive policy (``maxReceiveCount``, 20 by default) stays as a
backstop above ``WORLDFLOW_MAX_DELIVERIES`` (16): a message that is not a
worldflow message, or that no worker can even answer, still ends up in the
dead-letter queue, with no reason attribute.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from worldflow.world import DeadLetter, Delivery, json_dumps

from ._errors import AwsWorldError, aws_call, off_loop
from ._queue import SqsQueue, decode, encode

__all__ = ["SqsDeadLetters"]

log = logging.getLogger("worldflow.aws")

#: How long a listing hides each message it has seen, until it gives them all back.
LIST_VISIBILITY = 30
#: The longest reason kept (a message attribute; the whole message stays under 256 KB).
MAX_REASON = 4_000


class SqsDeadLetters:
    """The dead-letter queue at ``url`` (None: the one the main queue's redrive policy
    names, looked up at first use) of ``queue``."""

    def __init__(self, client: Any, queue: SqsQueue, url: str | None = None) -> None:
        self.client = client
        self.queue = queue
        self._url = url

    def __repr__(self) -> str:
        return f"<SqsDeadLetters {self._url or 'of ' + self.queue.url!r}>"

    @property
    def where(self) -> str:
        return f"SQS dead-letter queue {self._url or '(of ' + self.queue.url + ')'}"

    def url(self) -> str:
        if self._url is None:
            with aws_call("SQS GetQueueAttributes", self.queue.where):
                attributes = self.queue.client.get_queue_attributes(
                    QueueUrl=self.queue.url, AttributeNames=["RedrivePolicy"]
                )["Attributes"]
            policy = attributes.get("RedrivePolicy")
            if not policy:
                raise AwsWorldError(
                    f"{self.queue.where} has no dead-letter queue (no redrive policy): "
                    "set WORLDFLOW_AWS_DLQ_URL, or run `worldflow setup aws`"
                )
            arn = str(json.loads(policy)["deadLetterTargetArn"])
            account, name = arn.split(":")[4], arn.split(":")[5]
            with aws_call("SQS GetQueueUrl", f"queue {name!r}"):
                self._url = str(
                    self.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)[
                        "QueueUrl"
                    ]
                )
        return self._url

    # -- DeadLetters -----------------------------------------------------------------
    async def bury(self, delivery: Delivery, reason: str) -> None:
        await off_loop(self._bury, delivery, reason)

    def _bury(self, delivery: Delivery, reason: str) -> None:
        url = self.url()
        with aws_call("SQS SendMessage", self.where):
            self.client.send_message(
                QueueUrl=url,
                MessageBody=json_dumps(encode(delivery.outgoing)),
                MessageAttributes={
                    "worldflow-reason": {
                        "DataType": "String",
                        "StringValue": reason[:MAX_REASON] or "-",
                    },
                    "worldflow-attempts": {
                        "DataType": "Number",
                        "StringValue": str(delivery.attempt),
                    },
                    "worldflow-at": {"DataType": "Number", "StringValue": f"{time.time():.3f}"},
                },
            )

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return await off_loop(self._list, limit)

    def _list(self, limit: int) -> list[DeadLetter]:
        seen = self._receive_all(limit)
        try:
            letters = [letter for m in seen if (letter := _letter(m)) is not None]
        finally:
            self._release(seen)
        return sorted(letters, key=lambda d: d.at)[:limit]

    async def redrive(self, ids: Sequence[str] | None = None) -> int:
        return await off_loop(self._redrive, None if ids is None else set(ids))

    def _redrive(self, ids: set[str] | None) -> int:
        seen = self._receive_all(None)
        chosen = [m for m in seen if ids is None or m["MessageId"] in ids]
        chosen = [m for m in chosen if _letter(m) is not None]
        sent = 0
        try:
            for m in chosen:
                # A new message: its receive count, and so its attempts, start again.
                with aws_call("SQS SendMessage", self.queue.where):
                    self.queue.client.send_message(QueueUrl=self.queue.url, MessageBody=m["Body"])
                with aws_call("SQS DeleteMessage", self.where):
                    self.client.delete_message(
                        QueueUrl=self.url(), ReceiptHandle=m["ReceiptHandle"]
                    )
                sent += 1
        finally:
            done = {m["MessageId"] for m in chosen[:sent]}
            self._release([m for m in seen if m["MessageId"] not in done])
        return sent

    def _receive_all(self, limit: int | None) -> list[dict[str, Any]]:
        """Receive rounds of up to 10 until a round brings nothing new (or ``limit``)."""
        url = self.url()
        seen: dict[str, dict[str, Any]] = {}
        while limit is None or len(seen) < limit:
            with aws_call("SQS ReceiveMessage", self.where):
                got = self.client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,  # a long poll asks every SQS server, not a sample
                    VisibilityTimeout=LIST_VISIBILITY,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
                ).get("Messages", [])
            new = [m for m in got if m["MessageId"] not in seen]
            for m in got:
                seen[m["MessageId"]] = m  # the latest receipt handle
            if not new:
                break
        return list(seen.values())

    def _release(self, messages: Sequence[dict[str, Any]]) -> None:
        if messages:
            url = self.url()
            for start in range(0, len(messages), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(messages[start : start + 10])
                ]
                with aws_call("SQS ChangeMessageVisibilityBatch", self.where):
                    self.client.change_message_visibility_batch(QueueUrl=url, Entries=entries)

    async def close(self) -> None:
        return None


def _letter(m: dict[str, Any]) -> DeadLetter | None:
    """A received dead-letter queue message as a DeadLetter; None if it is not a worldflow
    message (it stays in the queue, for the operator)."""
    try:
        out = decode(m["Body"])
    except ValueError:
        log.warning("worldflow: dead-letter queue message %s is not ours", m.get("MessageId"))
        return None
    attributes = m.get("MessageAttributes") or {}

    def attribute(name: str) -> str | None:
        value = attributes.get(name)
        return None if value is None else str(value.get("StringValue"))

    sent = float(m.get("Attributes", {}).get("SentTimestamp", "0")) / 1000.0
    reason = attribute("worldflow-reason")
    if reason is None:  # moved by the queue's redrive policy, not by the engine
        reason = "moved by the queue's redrive policy (maxReceiveCount deliveries)"
    return DeadLetter(
        id=str(m["MessageId"]),
        message=out,
        reason=reason,
        attempts=int(float(attribute("worldflow-attempts") or 0)),
        at=float(attribute("worldflow-at") or sent),
    )
