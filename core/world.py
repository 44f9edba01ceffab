"""The World seam: everything a World author imports.

A World is where runs are stored and how work reaches the engine. It is
made of small parts (:class:`Storage`, :class:`Queue`, :class:`Workers`,
optionally :class:`Blobs` and :class:`Scheduler`) put together in a
:class:`World`, with a :class:`Clock` and :class:`Capabilities` that tell the
engine what it must bridge (long delays, big values, an outbox). The engine
does the rest once for every World: webhook intake, the outbox, blob
offload, hops past the queue's longest delay, when a message may be
acknowledged, adopting the runs of dead workers.

A World's *host* is its process entry point; a queue that is pulled needs
none (``wf.worker()`` serves it), a queue that pushes (Lambda, Cloud Run)
drives an :class:`Engine` from :func:`serve`:

>>> async with serve(world) as engine:
...     disposition = await engine.deliver(Delivery(message, not_before, key, attempt))

``docs/design.md`` ("Writing a World") walks through a complete World;
:mod:`worldflow.testing` has the conformance suite every World must pass.
Nothing in this module imports a cloud SDK or a database driver.
"""

from __future__ import annotations

from ._clock import Clock, SystemClock, VirtualClock, sleep_until_or_woken
from ._config import apply_shared_settings, load_settings
from ._definitions import workflow_names as registered_workflows
from ._engine import Engine, current_engine, serve
from ._errors import CorruptLogError, WorldError, WorldflowError
from ._events import COMMAND_KINDS, END_KINDS, RESULT_KINDS, EventKind
from ._hooks import WebhookRequest
from ._intake import DEFAULT_MAX_BODY as DEFAULT_MAX_WEBHOOK_BODY
from ._intake import asgi_app as webhook_app
from ._json import dumps as json_dumps
from ._json import loads as json_loads
from ._limits import step_limit_problems
from ._world import (
    ACK,
    MESSAGE_KINDS,
    TERMINAL,
    WEBHOOK_PREFIX,
    Append,
    Blobs,
    Capabilities,
    ChunkWrite,
    DeadLetter,
    DeadLetters,
    Deliver,
    Delivery,
    Disposition,
    Event,
    HookInfo,
    Log,
    Message,
    MessageKind,
    NewEvent,
    Outgoing,
    Pruning,
    Queue,
    RunCreate,
    RunInfo,
    RunPage,
    RunStatus,
    Scheduler,
    Storage,
    StreamInfo,
    Streams,
    Unsent,
    Workers,
    World,
    new_worker_id,
)

__all__ = [
    "ACK",
    "COMMAND_KINDS",
    "DEFAULT_MAX_WEBHOOK_BODY",
    "END_KINDS",
    "MESSAGE_KINDS",
    "RESULT_KINDS",
    "TERMINAL",
    "WEBHOOK_PREFIX",
    "Append",
    "Blobs",
    "Capabilities",
    "ChunkWrite",
    "Clock",
    "CorruptLogError",
    "DeadLetter",
    "DeadLetters",
    "Deliver",
    "Delivery",
    "Disposition",
    "Engine",
    "Event",
    "EventKind",
    "HookInfo",
    "Log",
    "Message",
    "MessageKind",
    "NewEvent",
    "Outgoing",
    "Pruning",
    "Queue",
    "RunCreate",
    "RunInfo",
    "RunPage",
    "RunStatus",
    "Scheduler",
    "Storage",
    "StreamInfo",
    "Streams",
    "SystemClock",
    "Unsent",
    "VirtualClock",
    "WebhookRequest",
    "Workers",
    "World",
    "WorldError",
    "WorldflowError",
    "apply_shared_settings",
    "current_engine",
    "json_dumps",
    "json_loads",
    "load_settings",
    "new_worker_id",
    "registered_workflows",
    "serve",
    "sleep_until_or_woken",
    "step_limit_problems",
    "webhook_app",
]
