"""The World seam: the small protocols a World implements, and the typed data crossing it.

A World decides where runs are stored, how work is queued and how the engine's
handler is invoked. It is a composition of small protocols:

- :class:`Storage`: runs and their append-only event logs, the hook index;
- :class:`Queue`: durable messages to the engine, optionally delayed;
- :class:`Workers`: which worker processes are alive (for step leases);
- :class:`World`: the three together, plus a clock, declared capabilities
  and a lifecycle (``start(handler)`` / ``close()``).

Nothing here imports a cloud SDK or SQLite; worlds translate their errors
into :mod:`worldflow._errors` at the seam.

Every event a writer appends carries only JSON-compatible data (values are
encoded by the codec before they get here). The engine computes the
projection a World keeps beside the log (run status, result, hook index) and
hands it over with the append, so a World never interprets event kinds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from ._clock import Clock

__all__ = [
    "MESSAGE_KINDS",
    "Append",
    "Capabilities",
    "Event",
    "HookInfo",
    "Message",
    "MessageHandler",
    "MessageKind",
    "NewEvent",
    "Outgoing",
    "Queue",
    "RunCreate",
    "RunInfo",
    "RunPage",
    "RunStatus",
    "Storage",
    "Workers",
    "World",
]

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
MessageKind = Literal["resume", "hook", "cancel", "wake"]
#: Every message kind; a World that checks kinds when it decodes a message uses this.
MESSAGE_KINDS: frozenset[str] = frozenset(get_args(MessageKind))
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


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


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A unit of work for the engine, delivered by a World's queue at least once.

    ``kind`` is ``"resume"`` (look at the run and do what is due), ``"hook"``
    (``data`` has ``token``, ``payload``), ``"cancel"`` or ``"wake"`` (fire
    the pending sleep ``data["cid"]`` now, or all of them without it). ``id`` is unique per
    send, so a redelivery can be recognised in the log.
    """

    id: str
    run_id: str
    kind: MessageKind
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send, not before ``not_before`` (epoch seconds), de-duplicated by ``key``."""

    message: Message
    not_before: float | None = None
    key: str | None = None


@dataclasses.dataclass(slots=True)
class Append:
    """Events to append to one run's log at ``expected_seq + 1``, atomically.

    With the events go the projection changes the engine derived from them
    (``status``, ``output``/``error`` when the run ends, hooks created and
    removed) and the messages to send once the append is durable (a World
    with a transactional store writes them in the same transaction).
    Several appends of one run in one call form a chain: once one fails, the
    ones after it fail too. A hook token already held by another run stays
    with that run (the engine then fails the newer hook with HookConflict).
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

    @property
    def last_seq(self) -> int:
        return self.expected_seq + len(self.events)


@dataclasses.dataclass(frozen=True, slots=True)
class RunCreate:
    """A new run: its first event (``run_created``) and the message that starts it."""

    run_id: str
    workflow: str
    event: NewEvent
    start: Outgoing


@dataclasses.dataclass(frozen=True, slots=True)
class RunInfo:
    """The projection of a run a World keeps beside its log."""

    id: str
    workflow: str
    status: RunStatus
    created_at: float
    updated_at: float
    last_seq: int
    output: Any = None  # the encoded return value, once completed
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}, once failed

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclasses.dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[RunInfo]
    cursor: str | None  # pass back to get the next page; None on the last page


@dataclasses.dataclass(frozen=True, slots=True)
class HookInfo:
    token: str
    run_id: str
    webhook: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a World can do, so the engine never asks ``if world == "aws"``.

    ``max_delay``: the longest delay one queue message can carry (seconds);
    the World bridges longer sleeps itself (SQS stops at 15 minutes, Cloud
    Tasks at 30 days). ``max_event_bytes``: the largest event the store takes
    before the World must put the payload in blob storage.
    ``process_private``: the World's storage is private to this process
    (an in-memory database), so nothing outside the process can see it.
    """

    max_delay: float | None = None
    max_event_bytes: int | None = None
    process_private: bool = False


MessageHandler = Callable[[Message], Awaitable[None]]


@runtime_checkable
class Storage(Protocol):
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        """Create the run, or return the existing one with that id (and False)."""

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        """Apply each append atomically; False where its sequence was taken.

        A World may commit several appends in one transaction (group commit);
        a lost race for one never affects another.
        """

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        """The run's events with ``seq > after_seq``, in order."""

    async def get_run(self, run_id: str) -> RunInfo | None: ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs, newest first."""

    async def get_hook(self, token: str) -> HookInfo | None: ...


@runtime_checkable
class Queue(Protocol):
    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Durably queue messages for the engine's handler (at least once)."""


@runtime_checkable
class Workers(Protocol):
    @property
    def worker_id(self) -> str:
        """This process's identity, recorded with each step attempt it starts."""

    async def worker_alive(self, worker_id: str) -> bool:
        """False once the World knows that worker is gone (its attempts are lost)."""


@runtime_checkable
class World(Storage, Queue, Workers, Protocol):
    clock: Clock
    capabilities: Capabilities

    async def start(self, handler: MessageHandler) -> None:
        """Begin delivering due messages to ``handler`` (on the running loop)."""

    async def close(self) -> None:
        """Stop delivering; release connections. Idempotent."""

    def webhook_url(self, token: str) -> str:
        """The public URL that resumes the webhook with this token."""
