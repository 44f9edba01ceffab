"""SQS: the AWS world's Queue, and its long-polling consumer for workers outside Lambda.

A standard queue (at least once, in any order: the engine is idempotent and
puts hook payloads in order itself) with a dead-letter queue behind it
(``worldflow setup aws`` and the template set the redrive policy). A message
body is the engine's message plus its ``not_before`` and ``key``; SQS's
``DelaySeconds`` (15 minutes at most) is used only on the real clock, as an
optimisation: the engine holds a message that comes early, or sends it again
for later (a hop), so a sleep of any length works and a test's virtual clock
is honoured.

The consumer (``start``) long-polls, hands each message to the engine at
once, keeps the messages it is delivering invisible, and does what the
engine's :class:`~worldflow.world.Disposition` says: delete the message, or
make it visible again after ``after`` seconds, or, when the engine gives up
on it, hand it to the World's dead letters and delete it. On ``close`` it
waits for its long poll in flight, and every message it holds or that poll
brings becomes visible again at once, so a restarted worker takes over
without waiting for a visibility timeout. On Lambda the event source mapping
receives and deletes instead (``poll=False``; see :mod:`._host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Coroutine, Sequence
from typing import Any

from worldflow.world import (
    MESSAGE_KINDS,
    Clock,
    Deliver,
    Delivery,
    Disposition,
    Message,
    Outgoing,
    json_dumps,
)

from ._errors import AwsWorldError, aws_call, off_loop

__all__ = ["MAX_DELAY", "SqsQueue", "decode", "encode"]

log = logging.getLogger("worldflow.aws")

#: SQS's longest DelaySeconds.
MAX_DELAY = 900
#: SQS's longest visibility timeout.
MAX_VISIBILITY = 43_200


def encode(out: Outgoing) -> dict[str, Any]:
    """An outgoing message as a JSON object (an SQS body, an outbox entry)."""
    m = out.message
    body: dict[str, Any] = {"id": m.id, "run": m.run_id, "kind": m.kind}
    if m.data:
        body["data"] = m.data
    if out.not_before is not None:
        body["nb"] = out.not_before
    if out.key is not None:
        body["key"] = out.key
    return body


def decode(body: str | dict[str, Any]) -> Outgoing:
    """The inverse of :func:`encode` (from the object or its JSON); ``ValueError`` for
    anything else."""
    try:
        value = json.loads(body) if isinstance(body, str) else body
        kind = value["kind"]
        data = value.get("data") or {}
        nb = value.get("nb")
        if kind not in MESSAGE_KINDS or not isinstance(data, dict):
            raise ValueError(kind)
        message = Message(str(value["id"]), str(value["run"]), kind, data)
        return Outgoing(message, None if nb is None else float(nb), value.get("key"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a worldflow message: {str(body)[:200]!r}") from exc


def visibility(after: float) -> int:
    """Seconds an SQS visibility timeout can say for ``after``."""
    return min(MAX_VISIBILITY, max(0, math.ceil(after)))


class SqsQueue:
    """One standard SQS queue: ``send``, and (unless ``poll`` is False) a consumer.

    ``real_time``: the World runs on the wall clock, so SQS's delay may carry
    a message's ``not_before``. ``poll_wait``: the long poll's wait (seconds);
    ``visibility``: the visibility timeout messages are taken with (extended
    every third of it while the engine works on them).
    """

    def __init__(
        self,
        client: Any,
        url: str,
        clock: Clock,
        *,
        real_time: bool,
        poll: bool = True,
        poll_wait: int = 20,
        visibility: int = 60,
    ) -> None:
        self.client = client
        self.url = url
        self.clock = clock
        self.real_time = real_time
        self.poll = poll
        self.poll_wait = poll_wait
        self.visibility = visibility
        self.where = f"SQS queue {url}"
        self._deliver: Deliver | None = None
        self._inflight: dict[str, str] = {}  # SQS message id -> receipt, with the engine
        self._acks: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll: asyncio.Future[list[dict[str, Any]]] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._closing = False
        #: Where a message the engine gives up on goes (the World sets its DeadLetters).
        self.dead_letters: Any = None

    def __repr__(self) -> str:
        return f"<SqsQueue {self.url!r}>"

    # -- sending ---------------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        now = self.clock.now()
        entries = []
        for i, out in enumerate(messages):
            delay = 0
            if self.real_time and out.not_before is not None:
                delay = min(MAX_DELAY, max(0, math.floor(out.not_before - now)))
            body = json_dumps(encode(out))
            entries.append({"Id": str(i), "MessageBody": body, "DelaySeconds": delay})
        await off_loop(self._send, entries)

    def _send(self, entries: list[dict[str, Any]]) -> None:
        for start in range(0, len(entries), 10):
            with aws_call("SQS SendMessageBatch", self.where):
                response = self.client.send_message_batch(
                    QueueUrl=self.url, Entries=entries[start : start + 10]
                )
            failed = response.get("Failed") or []
            if failed:
                first = failed[0]
                raise AwsWorldError(
                    f"AWS SQS SendMessageBatch on {self.where}: {len(failed)} message(s) "
                    f"refused ({first.get('Code')}: {first.get('Message')})",
                    str(first.get("Code", "")),
                )

    def set_visibility(self, changes: Sequence[tuple[str, float]]) -> None:
        """Make messages (by receipt handle) visible again after so many seconds."""
        for start in range(0, len(changes), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": visibility(after)}
                for i, (receipt, after) in enumerate(changes[start : start + 10])
            ]
            with aws_call("SQS ChangeMessageVisibilityBatch", self.where):
                self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)

    def _delete(self, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": r}
                for i, r in enumerate(receipts[start : start + 10])
            ]
            with aws_call("SQS DeleteMessageBatch", self.where):
                self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)

    # -- the consumer ------------------------------------------------------------------
    async def start(self, deliver: Deliver) -> None:
        if not self.poll:
            return  # Lambda's event source mapping consumes the queue (see _host)
        self._deliver = deliver
        self._receiver = self._spawn(self._receive_loop())
        self._spawn(self._keep_invisible())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _receive_loop(self) -> None:
        delay = 0.1
        while not self._closing:
            # The poll runs on a thread that a cancelled task does not stop: ``close``
            # waits for it (shielded here), so that nothing it takes stays hidden.
            self._poll = asyncio.ensure_future(off_loop(self._receive))
            try:
                received = await asyncio.shield(self._poll)
                delay = 0.1
            except Exception as exc:
                log.warning("worldflow: receiving from SQS failed (%s); trying again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self._closing and received:  # taken as the queue closed: give them back
                await off_loop(self.set_visibility, [(m["ReceiptHandle"], 0) for m in received])
                return
            for m in received:
                self._spawn(self._deliver_one(m))

    def _receive(self) -> list[dict[str, Any]]:
        """One long poll (on a thread). What arrives once the queue is closing goes back."""
        with aws_call("SQS ReceiveMessage", self.where):
            response = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self.poll_wait,
                VisibilityTimeout=self.visibility,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        received: list[dict[str, Any]] = response.get("Messages", [])
        if self._closing and received:
            self.set_visibility([(m["ReceiptHandle"], 0) for m in received])
            return []
        return received

    async def _deliver_one(self, m: dict[str, Any]) -> None:
        assert self._deliver is not None
        try:
            out = decode(m["Body"])
        except ValueError as exc:  # not ours: the redrive policy dead-letters it
            log.warning("worldflow: SQS message %s: %s", m.get("MessageId"), exc)
            return
        sqs_id, receipt = m["MessageId"], m["ReceiptHandle"]
        attempt = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        self._inflight[sqs_id] = receipt
        try:
            disposition = await self._deliver(Delivery.of(out, attempt))
        except Exception as exc:  # the engine answers; this is a last resort
            disposition = Disposition.later(min(300, 2**attempt), f"{type(exc).__name__}: {exc}")
        finally:
            self._inflight.pop(sqs_id, None)
        if disposition.dead and self.dead_letters is not None:
            try:
                await self.dead_letters.bury(Delivery.of(out, attempt), disposition.reason)
            except Exception as exc:  # it comes back, and is given up on again
                log.warning("worldflow: could not dead-letter SQS message %s (%s)", sqs_id, exc)
                disposition = Disposition.later(min(300, 2**attempt), disposition.reason)
        if disposition.ack or disposition.dead:
            self._acks.append(receipt)
            if self._flusher is None or self._flusher.done():
                self._flusher = self._spawn(self._flush_acks())
            return
        try:
            await off_loop(self.set_visibility, [(receipt, disposition.after)])
        except Exception as exc:  # it comes back after the visibility timeout instead
            log.warning("worldflow: could not delay SQS message %s (%s)", sqs_id, exc)

    async def _flush_acks(self) -> None:
        await asyncio.sleep(0)  # the acks of this turn of the loop go in one batch
        while self._acks:
            receipts, self._acks = self._acks, []
            try:
                await off_loop(self._delete, receipts)
            except Exception as exc:  # they come back; the engine ignores what it applied
                log.warning("worldflow: deleting SQS messages failed (%s)", exc)

    async def _keep_invisible(self) -> None:
        while not self._closing:
            await asyncio.sleep(max(0.5, self.visibility / 3))
            receipts = list(self._inflight.values())
            if receipts:
                try:
                    await off_loop(self.set_visibility, [(r, self.visibility) for r in receipts])
                except Exception as exc:
                    log.warning("worldflow: extending SQS visibility failed (%s)", exc)

    async def close(self) -> None:
        """Stop receiving, and make every message still with the engine visible again at
        once. A long poll in flight is waited for (at most ``poll_wait`` seconds): what it
        takes now goes back at once (``ChangeMessageVisibility`` 0). Abandoned, it would
        outlive the process on SQS's side and hide the next message for the visibility
        timeout (a 3 s sleep after a restart took more than 40 s in a test, 3.0 s now)."""
        if self._closing:
            return
        self._closing = True
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            try:  # it ends once its poll in flight has returned, giving back what came
                await asyncio.wait_for(asyncio.shield(receiver), self.poll_wait + 10)
            except Exception as exc:
                log.warning("worldflow: the SQS long poll did not end on close (%s)", exc)
        held = list(self._inflight.values())
        tasks = list(self._tasks)
        for task in tasks:
            if task is not self._flusher:
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        deletes, self._acks = self._acks, []
        release = [(r, 0.0) for r in held if r not in deletes]
        try:
            if deletes:
                await off_loop(self._delete, deletes)
            if release:
                await off_loop(self.set_visibility, release)
        except Exception as exc:
            log.warning("worldflow: could not release SQS messages on close (%s)", exc)
