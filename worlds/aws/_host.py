"""The Lambda host: ``worldflow.worlds.aws.lambda_handler``.

Lambda runs one invocation at a time per process and freezes the process
between invocations. So the engine lives on a persistent event loop of this
process (:class:`LambdaHost`), opened with :func:`worldflow.world.serve` at
the first invocation and kept across invocations (the warm cache of runs
survives), and each invocation runs that loop until its work is answered:

- an SQS batch (the event source mapping, ``ReportBatchItemFailures``): the
  worker proves itself alive, then every record goes to the engine at once
  (``Engine.deliver``, concurrently), which runs the steps it reaches inline,
  with the invocation's deadline less a margin. A record the engine does not
  acknowledge (its run still has a step running, it is not due within the
  invocation, handling it failed) is named in ``batchItemFailures`` and its
  visibility set to when the engine wants it back; a body that is not a
  worldflow message is named too, back after a backoff, and the redrive
  policy dead-letters it. A record the engine gives up on goes to the
  World's dead letters and is reported done. Records taken by an invocation
  come back, if it is killed, after its time left plus the worker lease (the
  host shortens their visibility when the queue's is much longer).
- an HTTP event (a function URL, or API Gateway's payload 2.0): a webhook
  call, answered by the engine's webhook intake (``Engine.answer_webhook``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from worldflow.world import (
    Delivery,
    Disposition,
    Engine,
    World,
    apply_shared_settings,
    load_settings,
    serve,
)

from ._errors import off_loop
from ._observe import RECORD, powertools
from ._queue import SqsQueue, decode
from ._world import create_world

__all__ = ["LambdaHost", "handle", "install", "reset"]

log = logging.getLogger("worldflow.aws")

#: Seconds of an invocation kept back for answering.
MARGIN = 2.0
#: The longest a message that comes early is held within an invocation.
HOLD = 5.0
#: How much later than an invocation's time left plus the lease a killed invocation's
#: records may come back before the host shortens their visibility (a call per batch).
LATE = 60.0


def world_from_settings() -> World:
    """The function's World, from its environment (``poll=0``: Lambda feeds it)."""
    settings = load_settings("aws")
    for name in filter(None, (m.strip() for m in settings.get("modules", "").split(","))):
        importlib.import_module(name)  # the user's workflows and steps
    return apply_shared_settings(create_world({**settings, "poll": "0"}), settings)


class LambdaHost:
    """The engine of one Lambda process: a persistent loop, a World, its Engine.

    ``make_world``: how to build the World at the first invocation (default:
    from the environment); it must not consume the queue itself (``poll=False``).
    """

    def __init__(
        self, make_world: Callable[[], World] | None = None, *, always_replay: bool | None = None
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.make_world = make_world or world_from_settings
        self.always_replay = always_replay
        self.world: World | None = None
        self.engine: Engine | None = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = threading.Lock()  # one invocation at a time, as Lambda does

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            if _is_http(event):
                return self.loop.run_until_complete(self._http(event))
            if isinstance(event.get("Records"), list):
                return powertools().wrap(self._sqs, event, context)
        raise ValueError(
            "worldflow's Lambda handler takes SQS batches and function URL / API Gateway v2 "
            f"requests; this event has keys {sorted(event)[:8]}"
        )

    def close(self) -> None:
        with self._lock:
            if not self.loop.is_closed():
                self.loop.run_until_complete(self._stack.aclose())
                self.loop.close()

    async def _engine(self) -> tuple[Engine, bool]:
        """The serving engine, opened at the first invocation (True if opened now)."""
        if self.engine is not None:
            return self.engine, False
        world = self.make_world()
        self.engine = await self._stack.enter_async_context(
            serve(world, always_replay=self.always_replay)
        )
        self.world = world
        return self.engine, True

    # -- SQS batches -------------------------------------------------------------------
    def _sqs(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            remaining = float(context.get_remaining_time_in_millis()) / 1000.0
        except AttributeError:
            remaining = 60.0
        records: list[dict[str, Any]] = event["Records"]
        failures = self.loop.run_until_complete(self._batch(records, remaining))
        powertools().count_batch(len(records), len(failures))
        return {"batchItemFailures": [{"itemIdentifier": f} for f in failures]}

    async def _batch(self, records: list[dict[str, Any]], remaining: float) -> list[str]:
        engine, opened = await self._engine()
        world = engine.world
        queue = world.queue
        assert isinstance(queue, SqsQueue)
        if not opened and engine.lease_until < time.time() + world.heartbeat:
            # Frozen since the last invocation, its proof of life has run out (or nearly):
            # renew it before any step starts; during the invocation the engine's own
            # heartbeat keeps it. Back-to-back invocations write none.
            await engine.heartbeat()
        back_by = remaining + world.lease
        if queue.visibility > back_by + LATE:
            # Killed at its timeout, this invocation answers nothing: its records come back
            # once this worker's lease has run out (and its steps may run again), not after
            # the queue's visibility timeout.
            await _set_visibility(queue, [(r["receiptHandle"], back_by) for r in records])
        deadline = self.loop.time() + remaining - MARGIN
        hold = max(0.0, min(HOLD, remaining - MARGIN))
        answers = await asyncio.gather(*(self._record(engine, r, deadline, hold) for r in records))
        answered = list(zip(records, answers, strict=True))
        buried = await asyncio.gather(*(self._bury(world, r, d) for r, d in answered))
        later = []
        failed = set()
        for (record, disposition), done in zip(answered, buried, strict=True):
            if done or (disposition is not None and disposition.ack):
                continue
            failed.add(record["messageId"])
            if disposition is None or disposition.dead:  # not ours, or not buried: back off
                later.append((record["receiptHandle"], _backoff(record)))
            else:  # when the engine wants it back, not after the queue's visibility timeout
                later.append((record["receiptHandle"], disposition.after))
        await _set_visibility(queue, later)
        return sorted(failed)

    async def _bury(
        self, world: World, record: dict[str, Any], disposition: Disposition | None
    ) -> bool:
        """Move a record the engine gave up on to the dead letters (True once done)."""
        if disposition is None or not disposition.dead or world.dead_letters is None:
            return False
        try:
            delivery = Delivery.of(decode(record["body"]), _attempt(record))
            await world.dead_letters.bury(delivery, disposition.reason)
        except Exception as exc:  # it comes back after a backoff, and is given up on again
            log.warning(
                "worldflow: could not dead-letter SQS record %s (%s)", record["messageId"], exc
            )
            return False
        return True

    async def _record(
        self, engine: Engine, record: dict[str, Any], deadline: float, hold: float
    ) -> Disposition | None:
        """The engine's answer for one record; None for a body that is not ours."""
        RECORD.set({"message_id": str(record.get("messageId"))})
        try:
            out = decode(record["body"])
        except (ValueError, KeyError) as exc:
            log.warning("worldflow: SQS record %s: %s", record.get("messageId"), exc)
            return None
        RECORD.set({"message_id": str(record.get("messageId")), "run_id": out.message.run_id})
        return await engine.deliver(
            Delivery.of(out, _attempt(record)), hold=hold, deadline=deadline
        )

    # -- webhooks ------------------------------------------------------------------------
    async def _http(self, event: dict[str, Any]) -> dict[str, Any]:
        engine, _ = await self._engine()
        context = event["requestContext"]
        http = context["http"]
        path = str(event.get("rawPath") or http.get("path") or "")
        stage = context.get("stage")
        if stage and stage != "$default" and path.startswith(f"/{stage}/"):
            path = path[len(stage) + 1 :]  # API Gateway puts a named stage in the path
        raw = event.get("body") or ""
        try:
            body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode()
        except (binascii.Error, ValueError):
            return _reply(400, {"error": "the body is not valid base64"})
        status, answer = await engine.answer_webhook(
            str(http.get("method", "POST")),
            unquote(path),
            {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
            body,
            str(event.get("rawQueryString") or ""),
            max_body=engine.world.max_webhook_bytes,
        )
        return _reply(status, answer)


def _attempt(record: dict[str, Any]) -> int:
    return int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))


def _backoff(record: dict[str, Any]) -> float:
    """When a record nobody could handle comes back: sooner at first, 5 minutes at most."""
    return float(min(300, 2 ** min(_attempt(record), 9)))


async def _set_visibility(queue: SqsQueue, changes: list[tuple[str, float]]) -> None:
    if not changes:
        return
    try:
        await off_loop(queue.set_visibility, changes)
    except Exception as exc:  # they come back after the queue's visibility timeout instead
        log.warning("worldflow: could not set when SQS delivers messages again (%s)", exc)


def _is_http(event: dict[str, Any]) -> bool:
    return isinstance(event.get("requestContext"), dict) and "http" in event["requestContext"]


def _reply(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


_host: LambdaHost | None = None
_host_lock = threading.Lock()


def handle(event: dict[str, Any], context: Any) -> Any:
    """Lambda's entry point: the process's :class:`LambdaHost`, made at the first call."""
    global _host
    with _host_lock:
        if _host is None:
            _host = LambdaHost()
        host = _host
    return host(event, context)


def install(host: LambdaHost) -> None:
    """Use ``host`` for the next calls (tests: a World with a virtual clock).

    One swap under the lock: were there a moment with no host, a call in another
    thread would make the default one (a World from the environment, on the wall
    clock) and handle its records there."""
    global _host
    with _host_lock:
        old, _host = _host, host
    if old is not None:
        old.close()


def reset() -> None:
    """Forget the process's host, closing it (tests: a new configuration for the next call)."""
    global _host
    with _host_lock:
        host, _host = _host, None
    if host is not None:
        host.close()
