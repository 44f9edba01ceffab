"""The World seam: the parts a World is made of, and the typed data crossing it.

A World is a composition of small parts (:class:`World` holds them):

- :class:`Storage`: runs and their append-only event logs, the hook index,
  and which worker a run waits on;
- :class:`Queue`: durable messages to the engine, optionally delayed, and
  (for queues that are pulled) a consumer that hands them to the engine;
- :class:`Workers`: heartbeats, so the engine knows which workers are alive;
- :class:`Blobs` (optional): big values that do not fit in the store or a message;
- :class:`Scheduler` (optional): delivers a message at a time however far off;
- :class:`Streams`: named append-only streams of chunks per run, written by steps
  (``World.streams``, or the storage when it implements it).

Everything else is the engine's, once, for every World: webhook intake, the
outbox of messages an append must send, blob offload, delays longer than the
queue allows, the rule for when a delivered message may be acknowledged, the
adoption of runs whose worker died. :class:`Capabilities` tell the engine
what it must bridge. A World never interprets event kinds.

The public face of this module is :mod:`worldflow.world`; nothing here
imports a cloud SDK or a database driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, get_args, runtime_checkable
from urllib.parse import quote

from ._clock import Clock, SystemClock

__all__ = [
    "ACK",
    "MESSAGE_KINDS",
    "TERMINAL",
    "WEBHOOK_PREFIX",
    "Append",
    "Blobs",
    "Capabilities",
    "ChunkWrite",
    "DeadLetter",
    "DeadLetters",
    "Deliver",
    "Delivery",
    "Disposition",
    "Event",
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
    "Unsent",
    "Workers",
    "World",
    "new_worker_id",
]

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
MessageKind = Literal["resume", "hook", "cancel", "wake", "start_child", "child_ended", "step"]
#: Every message kind; a World that checks kinds when it decodes a message uses this.
MESSAGE_KINDS: frozenset[str] = frozenset(get_args(MessageKind))
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: The path under a World's public URL where webhooks are served: ``/webhooks/<token>``.
WEBHOOK_PREFIX = "/webhooks/"


# -- events --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: its sequence number comes from the append."""

    kind: str
    data: dict[str, Any]
    at: float  # seconds since the epoch, from the world's clock


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """An event as stored: ``seq`` is dense per run, starting at 1."""

    run_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    at: float


# -- messages --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A unit of work for the engine, delivered by a World's queue at least once.

    ``kind`` is ``"resume"`` (look at the run and do what is due), ``"hook"``
    (``data`` has ``token``, ``payload`` and ``n``), ``"cancel"`` or ``"wake"``
    (fire the pending sleep ``data["cid"]`` now, or all of them without it),
    ``"start_child"`` (create the child run its run's command ``data["cid"]``
    started, if it does not exist yet) or ``"child_ended"`` (a child run ended:
    ``data`` has ``cid``, ``id``, ``status`` and ``output`` or ``error``).
    ``"step"``: run attempt ``data["attempt"]`` of the remote step ``data["cid"]``
    (any worker; see :mod:`worldflow._remote`). A ``resume`` may carry ``data["seq"]``:
    the run's log has that many events at least (a worker whose copy is behind reads it).
    ``id`` is unique per send, so a redelivery can be recognised in the log.
    A World carries ``kind`` and ``data`` as they are (``data`` is JSON).
    """

    id: str
    run_id: str
    kind: MessageKind
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send, not before ``not_before`` (epoch seconds on the World's
    clock), de-duplicated by ``key`` while an earlier one with that key is queued.

    A queue must carry ``not_before`` and ``key`` with the message (they come
    back in the :class:`Delivery`): the engine holds or re-sends a message that
    arrives early, so a queue's own delay is only an optimisation.
    """

    message: Message
    not_before: float | None = None
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A message as a queue hands it to the engine: what was sent, and how many times
    the queue has delivered it (1 the first time; it sets the backoff of a retry)."""

    message: Message
    not_before: float | None = None
    key: str | None = None
    attempt: int = 1

    @classmethod
    def of(cls, out: Outgoing, attempt: int = 1) -> Delivery:
        return cls(out.message, out.not_before, out.key, attempt)

    @property
    def outgoing(self) -> Outgoing:
        return Outgoing(self.message, self.not_before, self.key)


@dataclasses.dataclass(frozen=True, slots=True)
class Disposition:
    """What the engine tells the World to do with a message it was given.

    ``ack``: forget it, its effect is durable. Otherwise deliver it again, not
    before ``after`` seconds from now (its run still has a step running, here
    or on another live worker, or handling it failed); ``reason`` says why,
    for logs. ``dead``: do not deliver it again, move it to the World's dead
    letters (:meth:`dead_letter`).
    """

    ack: bool = True
    after: float = 0.0
    reason: str = ""
    dead: bool = False

    @classmethod
    def later(cls, after: float, reason: str) -> Disposition:
        return cls(False, max(0.0, after), reason)

    @classmethod
    def dead_letter(cls, reason: str) -> Disposition:
        """Give up on the message: the World moves it to its :class:`DeadLetters`
        (with ``reason``) and takes it off the queue. Only said to a World that has
        dead letters, after :attr:`World.max_deliveries` failed deliveries."""
        return cls(False, 0.0, reason, True)


#: The disposition of a message whose effect is durable and needs nothing more.
ACK = Disposition()

#: The engine's entry point a Queue delivers to.
Deliver = Callable[[Delivery], Awaitable[Disposition]]


# -- the write path --------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Append:
    """Events to append to one run's log at ``expected_seq + 1``, atomically.

    With the events go the projection changes the engine derived from them
    (``status``, ``output``/``error`` when the run ends, hooks created and
    removed, the ``holder``) and the messages to send once the append is
    durable. Several appends of one run in one call form a chain: once one
    fails, the ones after it fail too. A hook token already held by another
    run stays with that run (the engine then fails the newer hook with
    ``HookConflict``).

    ``messages``: a World whose capabilities say ``transactional_messages``
    enqueues them in the append's transaction. Any other World keeps them
    durably with the append (an outbox): the engine sends them once the
    append returns and then calls :meth:`Storage.mark_sent` with the append's
    ``expected_seq``; until then :meth:`Storage.read_log` returns them as
    :class:`Unsent`.

    ``holder``: the worker whose step attempts the run waits on after this
    append (``None``: none; the run waits on a timer or a hook, or has ended).
    A World keeps it beside the run, for :meth:`Storage.runs_held_by`;
    ``holder_changed`` says it differs from the previous append's, so a World
    may skip writing it otherwise.
    """

    run_id: str
    expected_seq: int
    events: list[NewEvent]
    status: RunStatus | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    hooks_created: list[HookInfo] = dataclasses.field(default_factory=list)
    hooks_removed: list[str] = dataclasses.field(default_factory=list)
    messages: list[Outgoing] = dataclasses.field(default_factory=list)
    holder: str | None = None
    holder_changed: bool = False

    @property
    def last_seq(self) -> int:
        return self.expected_seq + len(self.events)


@dataclasses.dataclass(frozen=True, slots=True)
class RunCreate:
    """A new run and its first event (``run_created``).

    ``messages`` (only for Worlds with ``transactional_messages``; empty
    otherwise): enqueue them in the same transaction as the run.
    """

    run_id: str
    workflow: str
    event: NewEvent
    messages: list[Outgoing] = dataclasses.field(default_factory=list)
    #: The run's tags (``wf.start(..., tags=...)``): stored with the run, in an index
    #: that :meth:`Storage.list_runs` answers ``tags=`` from.
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Unsent:
    """The messages of an append that are not known to have been sent (its outbox)."""

    seq: int  # the append's expected_seq: what mark_sent takes
    messages: list[Outgoing]
    written_at: float  # wall-clock seconds when the append was written


@dataclasses.dataclass(frozen=True, slots=True)
class Log:
    """A run's events after some sequence number, and the outbox entries found with them."""

    events: list[Event]
    unsent: list[Unsent] = dataclasses.field(default_factory=list)


# -- the projection ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RunInfo:
    """The projection of a run a World keeps beside its log.

    ``unreadable``: the World could not read part of this run's stored
    projection (a corrupt row); it says what, and the fields hold what could
    be read. One bad run never hides or breaks another in a listing.
    """

    id: str
    workflow: str
    status: RunStatus
    created_at: float
    updated_at: float
    last_seq: int
    output: Any = None  # the encoded return value, once completed
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}, once failed
    unreadable: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclasses.dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[RunInfo]
    cursor: str | None  # pass back to get the next page; None on the last page


@dataclasses.dataclass(frozen=True, slots=True)
class HookInfo:
    """A live hook: its token, its run, whether it is a webhook.

    ``n``: from :meth:`Storage.next_payload`, the number of the payload being
    sent (1 for the first): the engine applies payloads in that order.
    """

    token: str
    run_id: str
    webhook: bool = False
    n: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a World can do, so the engine never asks ``if world == "aws"``.

    ``max_delay``: the longest delay one queue message can carry (seconds);
    the engine re-sends a message that comes early ("hops"), or hands it to
    the World's :class:`Scheduler` if it has one. ``max_event_bytes``: the
    largest append the store takes (the JSON of its events' data); past it the
    engine puts the largest values in :class:`Blobs` and stores a reference.
    ``max_message_bytes``: the same for a message's data.
    ``transactional_messages``: the store enqueues an append's messages in the
    append's own transaction (a queue in the same database); otherwise the
    engine keeps an outbox through the store. ``embedded``: a plain process
    serves work by default (the local and postgres worlds); a cloud World says
    no, its functions execute. ``process_private``: the storage is private to
    this process (an in-memory database). ``max_attempt_seconds``: the longest a
    step attempt may run before the host cuts it off (Lambda's function timeout,
    Cloud Run's request timeout), named by ``host_limit``: a worker warns at start
    about steps whose timeout is longer.
    """

    max_delay: float | None = None
    max_event_bytes: int | None = None
    max_message_bytes: int | None = None
    transactional_messages: bool = False
    embedded: bool = False
    process_private: bool = False
    max_attempt_seconds: float | None = None
    host_limit: str = "the host's limit"


# -- the parts ------------------------------------------------------------------------------


@runtime_checkable
class Storage(Protocol):
    """Runs, their logs, the hook index. Every method is safe to call concurrently."""

    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        """Create the run (status ``pending``), or return the existing one with that id
        (and False)."""

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        """Apply each append atomically; False where its sequence was taken.

        A World may commit several appends in one transaction (group commit);
        a lost race for one never affects another (except later appends of the
        same run in the same call: a chain).
        """

    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        """The run's events with ``seq > after_seq``, in order, and its unsent outbox
        entries (always empty for a World with ``transactional_messages``)."""

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        """The messages of these appends (by their ``expected_seq``) have been sent: forget
        them."""

    async def get_run(self, run_id: str) -> RunInfo | None: ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunPage:
        """Runs, newest first, from indexes (never a scan).

        ``tags``: only runs that carry every one of these tags (key and value);
        answered from a tag index (the first tag's), the other filters applied to
        what it yields."""

    async def get_hook(self, token: str) -> HookInfo | None: ...

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        """Atomically count one more payload for the hook; its ``n`` is the new count.

        None if no live hook has the token (or, with ``webhook``, it is not a
        webhook: nothing is counted then).
        """

    async def runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        """Unfinished runs whose last append named ``worker_id`` as their holder."""

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Add these tags to the run (a key it has already gets the new value), in the
        run's projection and the tag index together. Idempotent."""


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkWrite:
    """Chunks one writer (a step, by its ``step_id``) adds to a named stream of a run.

    ``chunks`` are JSON texts (the codec's encoding of each value); ``start`` is the
    position of ``chunks[0]`` among everything this writer has written to the
    stream (a retried attempt starts again at 0). A World appends, atomically,
    only the chunks past what the writer already has in the stream
    (``chunks[max(0, written - start):]``) and then records the writer's count as
    ``max(written, start + len(chunks))``: so a retried step, or a write repeated
    after an error, never adds a chunk twice.
    """

    run_id: str
    stream: str
    writer: str
    start: int
    chunks: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream of a run: its name and how many chunks it holds."""

    name: str
    length: int


@runtime_checkable
class Streams(Protocol):
    """Named, append-only streams of chunks per run (``wf.get_writable(name)`` writes,
    ``run.stream(name)`` reads). A chunk's index is dense from 0 in each stream.
    Readers poll :meth:`read_chunks`; a World that can notify may do better."""

    async def write_chunks(self, write: ChunkWrite) -> int:
        """Append the writer's new chunks (see :class:`ChunkWrite`); returns the
        stream's length after the write."""

    async def read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        """The chunks of the stream from index ``start`` on, in order: at least one if
        there is one, and about ``limit`` at most (whole stored batches may give more)."""

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        """The run's streams, by name."""


@runtime_checkable
class Queue(Protocol):
    """Durable messages to the engine, delivered at least once, not before they are due."""

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Queue the messages (a delay up to ``Capabilities.max_delay``)."""

    async def start(self, deliver: Deliver) -> None:
        """Begin handing due messages to ``deliver`` on the running loop, doing what
        each :class:`Disposition` says. A queue that pushes to a host (Lambda, Cloud
        Run) does nothing here: the host calls the engine itself."""

    async def close(self) -> None:
        """Stop delivering; messages taken but not acknowledged become visible again."""


@runtime_checkable
class Workers(Protocol):
    """Heartbeats: a worker is alive until the time its last heartbeat said."""

    async def heartbeat(self, worker_id: str, until: float) -> None:
        """Record that the worker is alive until ``until`` (wall-clock seconds)."""

    async def expiry(self, worker_id: str) -> float | None:
        """Until when the worker is known to be alive; None if it is not known."""

    async def expired(self, before: float, limit: int) -> list[str]:
        """Workers whose last heartbeat ran out before ``before`` (and not yet forgotten)."""

    async def forget(self, worker_id: str) -> None:
        """Drop the worker's record: it is dead and holds no run."""


@runtime_checkable
class Blobs(Protocol):
    """Big values: the engine picks unique keys and stores references to them."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...


@runtime_checkable
class Pruning(Protocol):
    """Optional, on a World's storage: delete old finished runs (retention)."""

    async def prune(self, ended_before: float, limit: int) -> int:
        """Delete up to ``limit`` runs that ended (completed, failed or cancelled) before
        ``ended_before`` (the World clock's seconds): each with its log, outbox and hooks.
        Returns how many were deleted; a run that has not ended is never touched."""


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the engine gave up on (its handling failed ``attempts`` times).

    ``id``: the World's handle for it (what :meth:`DeadLetters.redrive` takes);
    ``message``: the message as it was sent, so a redrive sends it unchanged;
    ``reason``: why its last delivery failed; ``at``: when it was set aside
    (wall-clock seconds).
    """

    id: str
    message: Outgoing
    reason: str
    attempts: int
    at: float


@runtime_checkable
class DeadLetters(Protocol):
    """Optional: where a World keeps the messages the engine gave up on (an SQS
    dead-letter queue, a collection), to be looked at and sent again
    (``worldflow dlq list|redrive``). A World without it retries for ever, with
    a backoff."""

    async def bury(self, delivery: Delivery, reason: str) -> None:
        """Keep the delivered message as a dead letter (the queue then forgets it)."""

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first."""

    async def redrive(self, ids: Sequence[str] | None = None) -> int:
        """Send these dead letters (all of them with None) to the queue again, as
        first deliveries, and forget them; returns how many were sent."""


@runtime_checkable
class Scheduler(Protocol):
    """Delivers each message at its ``not_before``, however far off (e.g. EventBridge
    Scheduler): used for delays longer than the queue's ``max_delay``."""

    async def schedule(self, messages: Sequence[Outgoing]) -> None: ...


def new_worker_id() -> str:
    """A worker id: host, process and a random part (a restart is a new worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclasses.dataclass(eq=False)
class World:
    """A World: its parts, its clock and capabilities, and where webhooks are reachable.

    >>> world = World(storage=store, queue=store, workers=store, clock=clock,
    ...               capabilities=Capabilities(transactional_messages=True, embedded=True))

    ``public_url``: the base URL of ``/webhooks/<token>``. ``webhook_listen``
    (``(host, port)``): an embedded World's serving process answers webhooks
    there itself (the first one to bind it). ``heartbeat`` and ``lease``: how
    often a serving process proves it is alive, and for how long each proof
    holds. ``hold``: how long a consumer that pulls messages may hold one that
    came early before re-sending it. ``max_webhook_bytes``: the largest webhook
    body taken (413 past it). ``retention`` (seconds): serving processes delete
    runs that ended longer ago than this, if the storage implements
    :class:`Pruning` (None: keep them). ``max_deliveries``: how many failed
    deliveries of one message before the engine gives up on it, if the World
    has :class:`DeadLetters` (about 45 minutes of backoff with the default 16).
    ``close()`` closes each part once.
    """

    storage: Storage
    queue: Queue
    workers: Workers
    blobs: Blobs | None = None
    scheduler: Scheduler | None = None
    dead_letters: DeadLetters | None = None
    #: Where streams are kept; None: the storage, which then must implement :class:`Streams`.
    streams: Streams | None = None
    clock: Clock = dataclasses.field(default_factory=SystemClock)
    capabilities: Capabilities = dataclasses.field(default_factory=Capabilities)
    public_url: str | None = None
    webhook_listen: tuple[str, int] | None = None
    heartbeat: float = 10.0
    lease: float = 30.0
    hold: float = 60.0
    max_webhook_bytes: int = 1 << 20
    retention: float | None = None
    max_deliveries: int = 16
    name: str = "world"
    worker_id: str = dataclasses.field(default_factory=new_worker_id)
    on_close: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    _closed: bool = dataclasses.field(default=False, repr=False)

    def __repr__(self) -> str:
        return f"<World {self.name} {self.storage!r}>"

    @property
    def real_time(self) -> bool:
        """The World runs on the wall clock (not a test's virtual clock)."""
        return isinstance(self.clock, SystemClock)

    def webhook_url(self, token: str) -> str:
        """The absolute URL that resumes the webhook with this token."""
        if not self.public_url:
            raise ValueError(
                f"the {self.name} world has no public URL for webhooks: set "
                "WORLDFLOW_PUBLIC_URL to the base URL where /webhooks/ is reachable"
            )
        return f"{self.public_url.rstrip('/')}{WEBHOOK_PREFIX}{quote(token, safe='')}"

    def stream_store(self) -> Streams:
        """The part that keeps streams: ``streams``, else the storage if it implements
        :class:`Streams`."""
        if self.streams is not None:
            return self.streams
        if isinstance(self.storage, Streams):
            return self.storage
        raise NotImplementedError(
            f"the {self.name} world keeps no streams: its storage does not implement "
            "worldflow.world.Streams (write_chunks, read_chunks, list_streams)"
        )

    async def close(self) -> None:
        """Close every part once (a part that is several roles is closed once). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for hook in self.on_close:
            with contextlib.suppress(Exception):
                await hook()
        seen: set[int] = set()
        for part in (
            self.queue,
            self.scheduler,
            self.dead_letters,
            self.streams,
            self.workers,
            self.blobs,
            self.storage,
        ):
            if part is None or id(part) in seen:
                continue
            seen.add(id(part))
            close = getattr(part, "close", None)
            if close is not None:
                result = close()
                if hasattr(result, "__await__"):
                    await result
