"""A complete World in one file: everything in memory, in this process.

The minimal World that docs/design.md ("Writing a World") walks through. It
imports only the public seam, ``worldflow.world``, and passes the whole
conformance suite (tests/worlds/test_memory_world.py), warm and always
replaying. Use it as the skeleton of your own: replace the dicts by your
database, the heap by your queue.

    WORLDFLOW_WORLD=examples.memory_world:create_world python -m examples.hail_ride
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import socket
import time
from collections.abc import Mapping, Sequence

from worldflow.world import (
    Append,
    Capabilities,
    ChunkWrite,
    Clock,
    Deliver,
    Delivery,
    Event,
    HookInfo,
    Log,
    Outgoing,
    RunCreate,
    RunInfo,
    RunPage,
    StreamInfo,
    SystemClock,
    World,
    sleep_until_or_woken,
)

__all__ = ["MemoryQueue", "MemoryStore", "create_world", "memory_world"]


class MemoryStore:
    """Storage and Workers: runs, logs, hooks and heartbeats in dicts.

    Every method runs without awaiting in the middle, so on one event loop
    each is atomic: the in-memory version of a database transaction.
    """

    def __init__(self, queue: MemoryQueue) -> None:
        self.queue = queue
        self.runs: dict[str, RunInfo] = {}
        self.logs: dict[str, list[Event]] = {}
        self.holders: dict[str, str | None] = {}
        self.hooks: dict[str, HookInfo] = {}
        self.workers: dict[str, float] = {}
        self.tags: dict[tuple[str, str], set[str]] = {}  # the tag index: (key, value) -> runs
        self.streams: dict[tuple[str, str], list[str]] = {}  # (run, stream) -> chunks
        self.writers: dict[tuple[str, str, str], int] = {}  # (run, stream, writer) -> written

    # -- Storage -------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        if create.run_id in self.runs:
            return self.runs[create.run_id], False
        e = create.event
        info = RunInfo(create.run_id, create.workflow, "pending", e.at, e.at, 1, tags=create.tags)
        self.runs[create.run_id] = info
        for tag in create.tags.items():
            self.tags.setdefault(tag, set()).add(create.run_id)
        self.logs[create.run_id] = [Event(create.run_id, 1, e.kind, e.data, e.at)]
        self.queue.enqueue(create.messages)  # in the same "transaction" as the run
        return info, True

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        results: list[bool] = []
        lost: set[str] = set()
        for a in appends:
            log = self.logs.get(a.run_id)
            # The fence: the append expects the log to end at expected_seq.
            if a.run_id in lost or log is None or len(log) != a.expected_seq:
                lost.add(a.run_id)
                results.append(False)
                continue
            for i, e in enumerate(a.events, a.expected_seq + 1):
                log.append(Event(a.run_id, i, e.kind, e.data, e.at))
            old = self.runs[a.run_id]
            self.runs[a.run_id] = RunInfo(
                old.id,
                old.workflow,
                a.status or old.status,
                old.created_at,
                a.events[-1].at if a.events else old.updated_at,
                len(log),
                a.output if a.status else old.output,
                a.error if a.status else old.error,
                tags=old.tags,
            )
            if a.holder_changed:
                self.holders[a.run_id] = a.holder
            for hook in a.hooks_created:  # a token another run holds stays with it
                self.hooks.setdefault(hook.token, hook)
            for token in a.hooks_removed:
                if token in self.hooks and self.hooks[token].run_id == a.run_id:
                    del self.hooks[token]
            self.queue.enqueue(a.messages)  # transactional_messages: queued with the append
            results.append(True)
        return results

    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        return Log(list(self.logs.get(run_id, [])[after_seq:]))

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        pass  # messages are queued in the append itself: there is never an outbox

    async def get_run(self, run_id: str) -> RunInfo | None:
        return self.runs.get(run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunPage:
        found = list(self.runs.values())
        for tag in (tags or {}).items():  # the index: only the runs with every tag
            found = [r for r in found if r.id in self.tags.get(tag, ())]
        runs = sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)
        runs = [r for r in runs if status in (None, r.status) and workflow in (None, r.workflow)]
        start = int(cursor or 0)
        page = runs[start : start + limit]
        more = start + limit < len(runs)
        return RunPage(page, str(start + limit) if more else None)

    async def get_hook(self, token: str) -> HookInfo | None:
        return self.hooks.get(token)

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        hook = self.hooks.get(token)
        if hook is None or (webhook and not hook.webhook):
            return None
        self.hooks[token] = hook = HookInfo(token, hook.run_id, hook.webhook, hook.n + 1)
        return hook

    async def runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        held = [
            run_id
            for run_id, holder in self.holders.items()
            if holder == worker_id and not self.runs[run_id].done
        ]
        return held[:limit]

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        old = self.runs[run_id]
        for key, value in tags.items():
            if key in old.tags:
                self.tags.get((key, old.tags[key]), set()).discard(run_id)
            self.tags.setdefault((key, value), set()).add(run_id)
        self.runs[run_id] = dataclasses.replace(old, tags={**old.tags, **tags})

    # -- Streams: chunks appended per (run, stream); each writer's count drops repeats --
    async def write_chunks(self, write: ChunkWrite) -> int:
        chunks = self.streams.setdefault((write.run_id, write.stream), [])
        key = (write.run_id, write.stream, write.writer)
        written = self.writers.get(key, 0)
        chunks += write.chunks[max(0, written - write.start) :]
        self.writers[key] = max(written, write.start + len(write.chunks))
        return len(chunks)

    async def read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        return self.streams.get((run_id, stream), [])[start : start + limit]

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        found = [StreamInfo(s, len(c)) for (r, s), c in self.streams.items() if r == run_id]
        return sorted(found, key=lambda info: info.name)

    # -- Workers ----------------------------------------------------------------
    async def heartbeat(self, worker_id: str, until: float) -> None:
        self.workers[worker_id] = until

    async def expiry(self, worker_id: str) -> float | None:
        return self.workers.get(worker_id)

    async def expired(self, before: float, limit: int) -> list[str]:
        return [w for w, until in self.workers.items() if until < before][:limit]

    async def forget(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)


class MemoryQueue:
    """Queue: a heap of messages by due time, delivered on this loop, de-duplicated by key."""

    def __init__(self, clock: Clock, shared: MemoryQueue | None = None) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Outgoing, int]] = []
        self._keys: set[str] = set()
        self._order = itertools.count()
        self._consumers: list[asyncio.Event] = []  # each consumer's wake-up
        if shared is not None:  # the same messages, another consumer
            self._heap, self._keys, self._order = shared._heap, shared._keys, shared._order
            self._consumers = shared._consumers
        self._woken = asyncio.Event()
        self._consumers.append(self._woken)
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def enqueue(self, messages: Sequence[Outgoing], attempt: int = 1) -> None:
        for out in messages:
            if out.key is not None:
                if out.key in self._keys:
                    continue  # one with this key is queued already
                self._keys.add(out.key)
            heapq.heappush(self._heap, (self.due(out), next(self._order), out, attempt))
        for woken in self._consumers:
            woken.set()

    def another(self) -> MemoryQueue:
        """Another consumer of the same messages (a second worker, in tests)."""
        return MemoryQueue(self.clock, self)

    def due(self, out: Outgoing) -> float:
        """When the queue hands the message over (a queue with a longest delay, such
        as SQS's 15 minutes, hands it over earlier; the engine then re-sends it)."""
        return out.not_before if out.not_before is not None else self.clock.now()

    async def send(self, messages: Sequence[Outgoing]) -> None:
        self.enqueue(messages)

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        if self._woken not in self._consumers:  # started again after a close
            self._consumers.append(self._woken)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._woken in self._consumers:
            self._consumers.remove(self._woken)
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                _, _, out, attempt = heapq.heappop(self._heap)
                if out.key is not None:
                    self._keys.discard(out.key)
                task = asyncio.get_running_loop().create_task(self._one(out, attempt))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            self._woken.clear()
            if not self._heap:
                await self._woken.wait()
            else:
                await sleep_until_or_woken(self.clock, self._heap[0][0], self._woken)

    async def _one(self, out: Outgoing, attempt: int) -> None:
        """Hand one message to the engine and do what it says."""
        assert self._deliver is not None
        try:
            said = await self._deliver(Delivery.of(out, attempt))
        except asyncio.CancelledError:
            self.enqueue([out], attempt)  # the consumer stopped: the message stays queued
            raise
        if not said.ack:  # deliver it again later (on a virtual clock: after real time)
            await asyncio.sleep(min(said.after, 0.2) if self._real() else 0.05)
            again = Outgoing(out.message, max(self.clock.now(), out.not_before or 0.0), None)
            self.enqueue([again], attempt + 1)

    def _real(self) -> bool:
        return isinstance(self.clock, SystemClock)


def memory_world(clock: Clock | None = None, *, webhook_port: int | None = None) -> World:
    """A World whose runs live in this process's memory (gone when it exits).

    Webhooks are answered on ``127.0.0.1:webhook_port`` (a free port if None) by the
    engine's own small HTTP server, as the local world does.
    """
    clock = clock or SystemClock()
    queue = MemoryQueue(clock)
    store = MemoryStore(queue)
    if webhook_port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            webhook_port = int(sock.getsockname()[1])
    return World(
        storage=store,
        queue=queue,
        workers=store,
        clock=clock,
        capabilities=Capabilities(transactional_messages=True, embedded=True, process_private=True),
        public_url=f"http://127.0.0.1:{webhook_port}",  # where /webhooks/<token> is reachable
        webhook_listen=("127.0.0.1", webhook_port),  # the engine serves webhooks there
        heartbeat=0.5,
        lease=2.0,
        name="memory",
    )


def create_world(settings: dict[str, str]) -> World:
    """The factory ``WORLDFLOW_WORLD=examples.memory_world:create_world`` calls."""
    del settings  # nothing to configure
    return memory_world()


if __name__ == "__main__":  # a quick look: one run start to finish

    async def main() -> None:
        import worldflow as wf

        @wf.step
        async def double(x: int) -> int:
            return 2 * x

        @wf.workflow
        async def twice(x: int) -> int:
            return await double(await double(x))

        async with wf.worker(memory_world()):
            run = await wf.start(twice, 5)
            print(run.id, await run.result(timeout=5), time.strftime("%X"))

    asyncio.run(main())
