"""The engine's view of a World: its parts, with the delivery machinery every World shares.

A World is only adapters (storage, queue, workers, blobs). What sits between
them and the engine is here, once, driven by :class:`~worldflow._world.Capabilities`:

- **blob offload**: an append whose events' JSON is past ``max_event_bytes``
  has its largest event data put in the World's blobs and replaced by a
  reference (``{"$t": "blob", "k": key}``: a tag no user value encodes to);
  a run's output or error past it likewise, and a message's data past
  ``max_message_bytes``. References are resolved when read back.
- **the outbox**: a World whose queue is not in its store's transaction keeps
  an append's messages with the append; they are sent once the append is
  durable and then marked sent. Whoever reads the log next sends what a dead
  writer left unsent (after ``outbox_grace``, so a live writer is not raced).
- **long delays**: a message due later than ``max_delay`` goes to the World's
  :class:`~worldflow._world.Scheduler` if it has one; otherwise the queue
  carries it as far as it can and the engine re-sends it when it comes early
  (a hop, see :mod:`worldflow._delivery`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._errors import CorruptLogError
from ._limits_spec import LIMITER_WORKFLOW
from ._world import (
    Append,
    Event,
    HookInfo,
    Log,
    Message,
    NewEvent,
    Outgoing,
    RunCreate,
    RunInfo,
    RunPage,
    Unsent,
    World,
)

__all__ = ["BLOB_TAG", "Backend"]

log = logging.getLogger("worldflow")

BLOB_TAG = "blob"
#: Bytes an event costs a store beside its data's JSON and its kind (a time, separators).
_EVENT_OVERHEAD = 32

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _size(text: str) -> int:
    """Bytes of ``text`` as UTF-8: what a store's limits count (a char may be 4 bytes)."""
    return len(text) if text.isascii() else len(text.encode())


def _blob_ref(value: Any) -> str | None:
    """The key of a blob reference, or None if ``value`` is not one."""
    if type(value) is dict and len(value) == 2 and value.get("$t") == BLOB_TAG:
        key = value.get("k")
        if isinstance(key, str):
            return key
    return None


def _split(append: Append, sizes: list[int], limit: int) -> list[Append]:
    """An append whose events are over ``limit`` bytes even with its large values in
    blobs, as a chain of appends of at most ``limit`` bytes of events each (one event
    at least), written in one call.

    Should the process die between two of them, the log holds a prefix of the turn:
    as if the workflow had issued those commands in a turn of their own; its replay
    matches them and issues the rest again. So what must not wait for the last part
    goes with the first: the messages (one whose command is not recorded yet is
    dropped when delivered, or starts what the re-issued command finds started:
    a child's id is deterministic) and the hooks created (a hook's event recorded
    without the hook would never be resumed). The rest goes with the last: the
    status, the output or error, the hooks removed.
    """
    groups: list[list[NewEvent]] = [[]]
    used = 0
    for event, size in zip(append.events, sizes, strict=True):
        if groups[-1] and used + size > limit:
            groups.append([])
            used = 0
        groups[-1].append(event)
        used += size
    parts = []
    seq = append.expected_seq
    for i, events in enumerate(groups):
        first, last = i == 0, i == len(groups) - 1
        parts.append(
            dataclasses.replace(
                append,
                expected_seq=seq,
                events=events,
                status=append.status if last else None,
                output=append.output if last else None,
                error=append.error if last else None,
                hooks_created=append.hooks_created if first else [],
                hooks_removed=append.hooks_removed if last else [],
                messages=append.messages if first else [],
                holder_changed=append.holder_changed and first,
            )
        )
        seq += len(events)
    return parts


class Backend:
    """A World's parts, wrapped with offload, outbox and long-delay routing.

    ``on_unsent(run_id, +1/-1)`` tells the runtime that an append's messages are
    still to be sent (its run is not quiet until they are).
    """

    def __init__(self, world: World, *, outbox_grace: float = 60.0) -> None:
        self.world = world
        self.storage = world.storage
        self.queue = world.queue
        self.caps = world.capabilities
        self.clock = world.clock
        self.outbox_grace = outbox_grace
        self.on_unsent: Callable[[str, int], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- blobs -----------------------------------------------------------------------
    def _need_blobs(self, what: str, size: int) -> Any:
        blobs = self.world.blobs
        if blobs is None:
            raise ValueError(
                f"{what} is {size} bytes, over what the {self.world.name} world stores inline, "
                "and the world has no blob storage configured (see its docs for the bucket setting)"
            )
        return blobs

    async def _put(self, prefix: str, what: str, value: Any, text: str | None = None) -> Any:
        data = (text if text is not None else _dumps(value)).encode()
        blobs = self._need_blobs(what, len(data))
        key = f"{prefix}-{secrets.token_hex(8)}.json"
        await blobs.put(key, data)
        return {"$t": BLOB_TAG, "k": key}

    async def _get(self, value: Any, where: str) -> Any:
        key = _blob_ref(value)
        if key is None:
            return value
        blobs = self.world.blobs
        if blobs is None:
            raise CorruptLogError(f"{where} is stored in blob {key!r}, but no blob store is set up")
        data = await blobs.get(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CorruptLogError(f"{where}: blob {key!r} is not valid JSON: {exc}") from exc

    async def _offload_append(self, append: Append) -> list[Append]:
        """The append made to fit ``max_event_bytes``: its large values in blobs, and, if
        its events are still too many for one append (a gather over thousands of
        children), split into a chain of appends (see :func:`_split`)."""
        limit = self.caps.max_event_bytes
        if limit is None:
            return [append]
        texts = [_dumps(e.data) for e in append.events]
        # What a store keeps of an event beside its data: the kind, the time, punctuation.
        sizes = [
            _size(t) + len(e.kind) + _EVENT_OVERHEAD
            for t, e in zip(texts, append.events, strict=True)
        ]
        total = sum(sizes)
        if total > limit:
            events = list(append.events)
            small = max(256, limit // 16)  # below it a reference saves little: split instead
            for i in sorted(range(len(events)), key=lambda i: -sizes[i]):
                if total <= limit or sizes[i] <= small:
                    break
                e = events[i]
                seq = append.expected_seq + 1 + i
                ref = await self._put(
                    f"runs/{append.run_id}/{seq}",
                    f"event {seq} of run {append.run_id!r}",
                    None,
                    texts[i],
                )
                events[i] = type(e)(e.kind, ref, e.at)
                size = _size(_dumps(ref)) + len(e.kind) + _EVENT_OVERHEAD
                total += size - sizes[i]
                sizes[i] = size
            append = dataclasses.replace(append, events=events)
        # The run's output or error is kept beside the run as well (a projection
        # read by every result() poll): a quarter of the limit keeps it small.
        for name in ("output", "error"):
            value = getattr(append, name)
            if value is not None:
                text = _dumps(value)
                if _size(text) > limit // 4:
                    ref = await self._put(
                        f"runs/{append.run_id}/{name}",
                        f"the {name} of run {append.run_id!r}",
                        None,
                        text,
                    )
                    append = dataclasses.replace(append, **{name: ref})
        return [append] if total <= limit else _split(append, sizes, limit)

    async def _offload_message(self, out: Outgoing) -> Outgoing:
        limit = self.caps.max_message_bytes
        if limit is None or not out.message.data:
            return out
        text = _dumps(out.message.data)
        if _size(text) <= limit:
            return out
        m = out.message
        ref = await self._put(f"messages/{m.run_id}", f"a {m.kind} message's data", None, text)
        return Outgoing(Message(m.id, m.run_id, m.kind, ref), out.not_before, out.key)

    async def restore(self, message: Message) -> Message:
        """A delivered message, its data read back from blobs if it was offloaded."""
        if _blob_ref(message.data) is None:
            return message
        data = await self._get(message.data, f"a {message.kind} message of run {message.run_id!r}")
        if not isinstance(data, dict):
            raise CorruptLogError(
                f"the data of a message of run {message.run_id!r} is not an object"
            )
        return Message(message.id, message.run_id, message.kind, data)

    async def _restore_info(self, info: RunInfo) -> RunInfo:
        if _blob_ref(info.output) is None and _blob_ref(info.error) is None:
            return info
        try:
            output = await self._get(info.output, f"the output of run {info.id!r}")
            error = await self._get(info.error, f"the error of run {info.id!r}")
        except Exception as exc:  # a missing or corrupt blob: this run is unreadable, not all
            return dataclasses.replace(info, unreadable=f"{type(exc).__name__}: {exc}")
        return dataclasses.replace(info, output=output, error=error)

    # -- storage -------------------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        if self.caps.max_event_bytes is not None:
            text = _dumps(create.event.data)
            if _size(text) > self.caps.max_event_bytes:
                ref = await self._put(
                    f"runs/{create.run_id}/1", f"the input of run {create.run_id!r}", None, text
                )
                event = type(create.event)(create.event.kind, ref, create.event.at)
                create = dataclasses.replace(create, event=event)
        return await self.storage.create_run(create)

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        if self.caps.max_event_bytes is not None:
            parts = [await self._offload_append(a) for a in appends]
            done = iter(await self._append([a for p in parts for a in p]))
            # An append split in parts is done when all of them are (a chain: once one
            # fails, the ones after it fail too).
            return [all([next(done) for _ in p]) for p in parts]
        return await self._append(appends)

    async def _append(self, appends: Sequence[Append]) -> list[bool]:
        results = await self.storage.append(appends)
        if not self.caps.transactional_messages:
            for append, ok in zip(appends, results, strict=True):
                if ok and append.messages:
                    self._outbox(append.run_id, append.expected_seq, append.messages)
        return results

    def _outbox(self, run_id: str, seq: int, messages: list[Outgoing]) -> None:
        """Send a durable append's messages, then mark them sent; retried until they go."""
        if self.on_unsent is not None:
            self.on_unsent(run_id, 1)
        self._spawn(self._send_outbox(run_id, seq, messages))

    async def _send_outbox(self, run_id: str, seq: int, messages: list[Outgoing]) -> None:
        delay = 0.05
        try:
            while True:
                try:
                    await self.send(messages)
                    break
                except Exception as exc:
                    if self.closed:
                        return  # the outbox entry stays: the next reader of the log sends it
                    log.warning(
                        "worldflow: sending %d message(s) of run %r failed (%s); trying again",
                        len(messages),
                        run_id,
                        exc,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            try:
                await self.storage.mark_sent(run_id, [seq])
            except Exception as exc:  # sent already: a later reader sends a harmless copy
                log.warning("worldflow: could not mark run %r's messages sent (%s)", run_id, exc)
        finally:
            if self.on_unsent is not None:
                self.on_unsent(run_id, -1)

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        """The run's events, blob references resolved; a dead writer's unsent messages
        found on the way are sent."""
        found: Log = await self.storage.read_log(run_id, after_seq)
        if found.unsent and not self.closed:
            await self._recover(run_id, found.unsent)
        events = found.events
        if self.world.blobs is not None or self.caps.max_event_bytes is not None:
            events = [await self._restore_event(e) for e in events]
        return events

    async def _restore_event(self, e: Event) -> Event:
        if _blob_ref(e.data) is None:
            return e
        data = await self._get(e.data, f"event {e.seq} of run {e.run_id!r}")
        if not isinstance(data, dict):
            raise CorruptLogError(f"run {e.run_id!r}: event {e.seq} ({e.kind}) is not an object")
        return Event(e.run_id, e.seq, e.kind, data, e.at)

    async def _recover(self, run_id: str, unsent: list[Unsent]) -> None:
        stale = [u for u in unsent if time.time() - u.written_at > self.outbox_grace]
        if not stale:
            return
        log.warning(
            "worldflow: run %r had %d unsent message batch(es) (a writer stopped before "
            "sending them); sending them now",
            run_id,
            len(stale),
        )
        try:
            await self.send([m for u in stale for m in u.messages])
            await self.storage.mark_sent(run_id, [u.seq for u in stale])
        except Exception as exc:  # the next reader tries again
            log.warning("worldflow: sending run %r's unsent messages failed (%s)", run_id, exc)

    async def get_run(self, run_id: str) -> RunInfo | None:
        info = await self.storage.get_run(run_id)
        return None if info is None else await self._restore_info(info)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunPage:
        if tags:
            page = await self.storage.list_runs(
                status=status, workflow=workflow, limit=limit, cursor=cursor, tags=tags
            )
        else:  # a World's list_runs without tags= is called as before
            page = await self.storage.list_runs(
                status=status, workflow=workflow, limit=limit, cursor=cursor
            )
        if workflow is None and any(i.workflow == LIMITER_WORKFLOW for i in page.runs):
            # Limiters' logs live beside the runs (worldflow._limits_flow): not runs to list.
            page = RunPage([i for i in page.runs if i.workflow != LIMITER_WORKFLOW], page.cursor)
        if self.world.blobs is None:
            return page
        return RunPage([await self._restore_info(i) for i in page.runs], page.cursor)

    async def get_hook(self, token: str) -> HookInfo | None:
        return await self.storage.get_hook(token)

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        return await self.storage.next_payload(token, webhook=webhook)

    # -- queue -------------------------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Send messages: offloaded if too big, and those due past the queue's longest
        delay to the World's scheduler when it has one."""
        if not messages:
            return
        if self.caps.max_message_bytes is not None:
            messages = [await self._offload_message(m) for m in messages]
        scheduler = self.world.scheduler
        max_delay = self.caps.max_delay
        if scheduler is not None and max_delay is not None and self.world.real_time:
            now = self.clock.now()
            far = [
                m for m in messages if m.not_before is not None and m.not_before - now > max_delay
            ]
            if far:
                await scheduler.schedule(far)
                messages = [m for m in messages if m not in far]
                if not messages:
                    return
        await self.queue.send(messages)
