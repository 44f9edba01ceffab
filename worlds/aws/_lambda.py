"""The Lambda entry point: ``worldflow.worlds.aws.lambda_handler``.

Lambda runs one invocation at a time per process and freezes the process
between invocations. So the engine lives in a persistent event loop of this
module (created at the first invocation, kept warm across invocations: the
warm cache of runs survives), and each invocation runs that loop until its
work is done:

- an SQS batch (the event source mapping, with ``ReportBatchItemFailures``):
  each record goes to the engine (``runtime.handle``), which runs the steps
  it reaches inline; then the loop runs until no step attempt of this
  process is running (``runtime.drain``), bounded by
  ``context.get_remaining_time_in_millis()`` less a margin. A record is
  reported as failed (redelivered after its visibility timeout) if handling
  it failed, or if its run still has a step running here when time runs out
  (the attempt is lost with the frozen process; the redelivered message
  resumes the run elsewhere, and the lost attempt counts as one).
  powertools' ``BatchProcessor`` builds the partial batch response.
- an HTTP event (a function URL or API Gateway v2): a webhook call
  (:mod:`._webhook`).

A message that is not due yet (a sleep past SQS's 15-minute delay, chained)
is sent again with the longest delay and acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import time
from typing import Any

from worldflow._world import Message, Outgoing

from ._queue import MAX_DELAY
from ._webhook import DEFAULT_MAX_BODY, is_http_event, webhook_response
from ._world import AwsWorld, create_world, in_thread

__all__ = ["LambdaApp", "handle"]

log = logging.getLogger("worldflow.aws")

#: Seconds of an invocation kept back for acknowledging and returning.
MARGIN = 2.0
#: A message due within this many seconds is waited for in the invocation.
WAIT_INLINE = 5.0


class LambdaApp:
    """The engine of one Lambda process: a persistent loop, a World, a Runtime."""

    def __init__(self, world: AwsWorld | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.world = world or self._world_from_settings()
        self.world.poll = False  # Lambda feeds the messages; nothing polls
        self._stack = contextlib.AsyncExitStack()
        self.max_body = int(os.environ.get("WORLDFLOW_AWS_MAX_WEBHOOK_BYTES", DEFAULT_MAX_BODY))
        self._powertools: Any = None
        self.runtime: Any = None

    @staticmethod
    def _world_from_settings() -> AwsWorld:
        from worldflow._config import load_settings

        settings = load_settings("aws")
        if "endpoint_url" not in settings and os.environ.get("AWS_ENDPOINT_URL"):
            settings["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        for name in filter(None, (m.strip() for m in settings.get("modules", "").split(","))):
            importlib.import_module(name)  # the user's workflows and steps
        return create_world(settings)

    def _serve(self) -> Any:
        """The runtime, started on the first SQS invocation."""
        if self.runtime is None:
            import worldflow as wf
            from worldflow import _api

            async def start() -> Any:
                await self._stack.enter_async_context(wf.worker(self.world))
                return _api._runtimes[asyncio.get_running_loop()].result()

            self.runtime = self.loop.run_until_complete(start())
        return self.runtime

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self._stack.aclose())
            self.loop.run_until_complete(self.world.close())
            self.loop.close()

    @property
    def powertools(self) -> Any:
        if self._powertools is None:
            from ._observe import powertools

            self._powertools = powertools()
            self.world.on_events = self._powertools.on_append
        return self._powertools

    # -- the entry point -------------------------------------------------------------
    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        if is_http_event(event):
            return webhook_response(self.world, event, max_body=self.max_body)
        if isinstance(event.get("Records"), list):
            return self.powertools.wrap(self._sqs_batch, event, context)
        raise ValueError(
            "worldflow's Lambda handler takes SQS batches and function URL / API Gateway v2 "
            f"requests; this event has keys {sorted(event)[:8]}"
        )

    def _sqs_batch(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.batch import (
            BatchProcessor,
            EventType,
            process_partial_response,
        )

        runtime = self._serve()
        deadline = time.time() + _remaining(context) - MARGIN
        # This worker is alive for as long as the invocation may last.
        self.world.prove_alive(deadline + MARGIN)
        handled: dict[str, str] = {}  # SQS message id -> run id

        def record_handler(record: Any) -> None:
            self.powertools.append_keys(message_id=record.message_id)
            out = self.world.queue.parse(record.body)
            self.powertools.append_keys(run_id=out.message.run_id)
            self.loop.run_until_complete(self._one(runtime, out, deadline))
            handled[record.message_id] = out.message.run_id

        # A batch whose every record failed is answered like any other (all of them in
        # batchItemFailures), so the drain below still runs.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        response: dict[str, Any] = process_partial_response(  # type: ignore[assignment]
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        # Steps run inline: give them the invocation's time, then report the
        # records whose run still has an attempt running here as failed.
        self.loop.run_until_complete(runtime.drain(max(0.0, deadline - time.time())))
        if self.world.unsent:  # SQS refused some sends: once more, else redeliver their runs
            self.world.resend_unsent()
        failures = response.setdefault("batchItemFailures", [])
        for message_id, run_id in handled.items():
            if self.world.busy(run_id):
                failures.append({"itemIdentifier": message_id})
        self.powertools.count_batch(len(event["Records"]), len(failures))
        return response

    async def _one(self, runtime: Any, out: Outgoing, deadline: float) -> None:
        message: Message = out.message
        due = out.not_before
        if due is not None:
            wait = due - self.world.clock.now()
            if wait > 0:
                if wait <= min(WAIT_INLINE, deadline - time.time()):
                    await self.world.clock.sleep_until(due)
                else:
                    # Not due within this invocation: chain it (SQS delays stop at 15
                    # minutes); with a virtual clock (tests), look again in a second.
                    delay = min(MAX_DELAY, wait) if self.world.real_clock else 1.0
                    await in_thread(self.world.queue.send, [out], [delay])
                    return
        await runtime.handle(message)


def _remaining(context: Any) -> float:
    try:
        return float(context.get_remaining_time_in_millis()) / 1000.0
    except AttributeError:
        return 60.0


_app: LambdaApp | None = None
_app_lock = threading.Lock()


def handle(event: dict[str, Any], context: Any) -> Any:
    """Lambda's entry point: the process's :class:`LambdaApp`, made at the first call."""
    global _app
    if _app is None:
        with _app_lock:  # Lambda calls one at a time; a test's HTTP gateway may not
            if _app is None:
                _app = LambdaApp()
    return _app(event, context)


def install(app: LambdaApp) -> None:
    """Use ``app`` for the next calls (tests: a World with a virtual clock)."""
    global _app
    reset()
    with _app_lock:
        _app = app


def reset() -> None:
    """Forget the process's app (tests: a new configuration for the next call)."""
    global _app
    with _app_lock:
        app, _app = _app, None
    if app is not None:
        app.close()
