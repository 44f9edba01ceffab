"""EventBridge Scheduler: the AWS world's Scheduler, for delays longer than SQS's 15 minutes.

Without it, a sleep past SQS's longest delay hops: the message comes back
every 15 minutes and is sent again, 96 times a day (8,640 SQS requests and
as many Lambda invocations' worth of work for a 30-day sleep). With it, the
engine hands every message due later than that to :meth:`schedule`, which
makes one one-time schedule per message (``at(...)``, UTC) whose target
sends the message's body to the queue when it is due; EventBridge deletes
the schedule once it has run (``ActionAfterCompletion=DELETE``).

The schedule's name is derived from the message's key (or id), so a message
sent twice (at least once delivery, a replay) makes one schedule: the second
``CreateSchedule`` is a ``ConflictException``, taken as done. A message that
comes a little early (EventBridge's "at" fires within about a minute) is
held or carried the rest of the way by SQS's delay. A body too big for a
schedule's input goes on the queue instead, and hops.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from worldflow.world import Clock, Outgoing, json_dumps

from ._errors import aws_call, error_code, off_loop
from ._queue import SqsQueue, encode

__all__ = ["MAX_INPUT", "EventBridgeScheduler", "schedule_name"]

log = logging.getLogger("worldflow.aws")

#: The longest schedule target input taken (EventBridge Scheduler's limit is 8 KB).
MAX_INPUT = 8_000


def schedule_name(out: Outgoing) -> str:
    """The schedule of a message: one name per message key (or id), at most 64 characters
    of ``[0-9a-zA-Z-_.]`` as EventBridge asks."""
    key = out.key or f"{out.message.run_id}/{out.message.id}"
    return "wf-" + hashlib.sha256(key.encode()).hexdigest()[:48]


def at_expression(when: float) -> str:
    """EventBridge's one-time expression for a moment (whole seconds, rounded up, UTC)."""
    return "at(" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(math.ceil(when))) + ")"


class EventBridgeScheduler:
    """One-time schedules in ``group`` that send messages to ``queue`` as ``role_arn``
    (a role EventBridge Scheduler may assume, allowed ``sqs:SendMessage`` on the queue).
    ``queue_arn``: the queue's ARN (looked up once if not given)."""

    def __init__(
        self,
        client: Any,
        queue: SqsQueue,
        clock: Clock,
        *,
        group: str,
        role_arn: str,
        queue_arn: str | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.clock = clock
        self.group = group
        self.role_arn = role_arn
        self._queue_arn = queue_arn
        self.where = f"schedule group {group!r}"

    def __repr__(self) -> str:
        return f"<EventBridgeScheduler group={self.group!r}>"

    async def schedule(self, messages: Sequence[Outgoing]) -> None:
        bodies = [(out, json_dumps(encode(out))) for out in messages]
        big = [out for out, body in bodies if len(body) > MAX_INPUT]
        if big:  # too big for a schedule's input: the queue carries them, hopping
            await self.queue.send(big)
        small = [(out, body) for out, body in bodies if len(body) <= MAX_INPUT]
        if small:
            await off_loop(self._create, small)

    def queue_arn(self) -> str:
        if self._queue_arn is None:
            with aws_call("SQS GetQueueAttributes", self.queue.where):
                attributes = self.queue.client.get_queue_attributes(
                    QueueUrl=self.queue.url, AttributeNames=["QueueArn"]
                )["Attributes"]
            self._queue_arn = str(attributes["QueueArn"])
        return self._queue_arn

    def _create(self, messages: Sequence[tuple[Outgoing, str]]) -> None:
        target_arn = self.queue_arn()
        for out, body in messages:
            assert out.not_before is not None
            name = schedule_name(out)
            with aws_call("EventBridge Scheduler CreateSchedule", self.where):
                try:
                    self.client.create_schedule(
                        Name=name,
                        GroupName=self.group,
                        ScheduleExpression=at_expression(out.not_before),
                        ScheduleExpressionTimezone="UTC",
                        FlexibleTimeWindow={"Mode": "OFF"},
                        ActionAfterCompletion="DELETE",
                        State="ENABLED",
                        Description=f"worldflow: {out.message.kind} of run {out.message.run_id}",
                        Target={
                            "Arn": target_arn,
                            "RoleArn": self.role_arn,
                            "Input": body,
                            # Retried for a day if SQS refuses (throttling, an outage).
                            "RetryPolicy": {
                                "MaximumEventAgeInSeconds": 86_400,
                                "MaximumRetryAttempts": 185,
                            },
                        },
                    )
                except Exception as exc:
                    if error_code(exc) != "ConflictException":
                        raise
                    log.debug("worldflow: schedule %s exists already (a duplicate send)", name)

    async def close(self) -> None:
        return None
