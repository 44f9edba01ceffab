"""What the engine bridges for a World, tested once with an in-memory World that needs it all.

A World whose queue is not in its store's transaction (an outbox), whose store
and queue take only small values (blob offload) and whose queue carries short
delays only (hops): the conformance suite passes on it, and each bridge is
seen to work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import worldflow as wf
from examples.memory_world import MemoryQueue, MemoryStore
from worldflow.testing import WorldConformance
from worldflow.world import (
    Append,
    Capabilities,
    Clock,
    DeadLetter,
    Delivery,
    Log,
    Message,
    Outgoing,
    RunCreate,
    RunInfo,
    SystemClock,
    Unsent,
    World,
    WorldError,
    json_dumps,
    new_worker_id,
)

LIMIT = 2_000  # bytes of events per append, and of a message's data


class OutboxStore(MemoryStore):
    """A store that keeps an append's messages as an outbox (not transactional) and
    refuses values larger than its limit (the engine must offload them)."""

    def __init__(self, queue: MemoryQueue) -> None:
        super().__init__(queue)
        self.unsent: dict[str, dict[int, Unsent]] = {}
        self.biggest = 0
        self.appends: list[Append] = []  # every append this store took
        self.cut_chains = 0  # chains to cut after their first append (a crash between)

    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        assert not create.messages, "not transactional: create_run gets no messages"
        self._check_size(create.event.data)
        return await super().create_run(create)

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        if self.cut_chains and len(appends) > 1 and appends[0].run_id == appends[1].run_id:
            self.cut_chains -= 1
            await self.append(appends[:1])
            raise WorldError("the connection dropped after the first append of the chain")
        for a in appends:
            self._check_size([e.data for e in a.events])
        held = [(a, a.messages) for a in appends]
        for a in appends:
            a.messages = []  # this store does not queue them: it keeps them
        results = await super().append(appends)
        for (a, messages), ok in zip(held, results, strict=True):
            a.messages = messages
            if ok:
                self.appends.append(a)
            if ok and messages:
                self.unsent.setdefault(a.run_id, {})[a.expected_seq] = Unsent(
                    a.expected_seq, list(messages), time.time()
                )
        return results

    def _check_size(self, data: Any) -> None:
        size = len(json_dumps(data))
        self.biggest = max(self.biggest, size)
        if size > LIMIT * 1.5:
            raise WorldError(f"{size} bytes: too big for this store")

    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        found = await super().read_log(run_id, after_seq)
        return Log(found.events, list(self.unsent.get(run_id, {}).values()))

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self.unsent.get(run_id, {}).pop(seq, None)


class SmallQueue(MemoryQueue):
    """Takes small messages only, carries a delay of at most ``max_delay``, and sets
    aside the messages the engine gives up on (its dead letters)."""

    def __init__(self, clock: Clock, max_delay: float | None = None) -> None:
        super().__init__(clock)
        self.biggest = 0
        self.max_delay = max_delay
        self.letters = MemoryDeadLetters(self)

    async def _one(self, out: Outgoing, attempt: int) -> None:
        assert self._deliver is not None
        delivery = Delivery.of(out, attempt)
        said = await self._deliver(delivery)
        if said.dead:
            await self.letters.bury(delivery, said.reason)
        elif not said.ack:
            await asyncio.sleep(min(said.after, 0.05))
            self.enqueue([Outgoing(out.message, out.not_before, None)], attempt + 1)

    def due(self, out: Outgoing) -> float:
        due = super().due(out)
        if self.max_delay is None:
            return due
        return min(due, self.clock.now() + self.max_delay)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        for out in messages:
            size = len(json_dumps(out.message.data))
            self.biggest = max(self.biggest, size)
            if size > LIMIT:
                raise WorldError(f"a message of {size} bytes: too big for this queue")
        await super().send(messages)


class MemoryDeadLetters:
    """DeadLetters: a dict in memory; a redrive queues the message again."""

    def __init__(self, queue: MemoryQueue) -> None:
        self.queue = queue
        self.letters: dict[str, DeadLetter] = {}

    async def bury(self, delivery: Delivery, reason: str) -> None:
        letter_id = f"dl-{len(self.letters) + 1}-{delivery.message.id}"
        self.letters[letter_id] = DeadLetter(
            letter_id, delivery.outgoing, reason, delivery.attempt, time.time()
        )

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return sorted(self.letters.values(), key=lambda d: d.at)[:limit]

    async def redrive(self, ids: Sequence[str] | None = None) -> int:
        chosen = list(self.letters) if ids is None else [i for i in ids if i in self.letters]
        for letter_id in chosen:
            self.queue.enqueue([self.letters.pop(letter_id).message])
        return len(chosen)


class MemoryBlobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes) -> None:
        assert key not in self.data
        self.data[key] = data

    async def get(self, key: str) -> bytes:
        return self.data[key]


def bridged_world(clock: Clock, *, max_delay: float | None = None) -> World:
    queue = SmallQueue(clock, max_delay)
    store = OutboxStore(queue)
    return World(
        storage=store,
        queue=queue,
        workers=store,
        blobs=MemoryBlobs(),
        dead_letters=queue.letters,
        clock=clock,
        capabilities=Capabilities(
            max_delay=max_delay,
            max_event_bytes=LIMIT,
            max_message_bytes=LIMIT,
            transactional_messages=False,
            embedded=True,
        ),
        heartbeat=0.5,
        lease=2.0,
        hold=0.05,
        name="bridged",
    )


class TestBridgedWorld(WorldConformance):
    @pytest.fixture
    def make_world(self) -> Callable[[], World]:
        world = bridged_world(wf.VirtualClock())
        world.public_url = None

        def again() -> World:
            import copy

            fresh = copy.copy(world)  # the same parts: a restarted process over them
            fresh._closed = False
            fresh.worker_id = new_worker_id()
            return fresh

        return again

    # This World has no HTTP face for webhooks.
    test_webhook = None  # type: ignore[assignment]
    test_malformed_webhook_body_fails_clearly = None  # type: ignore[assignment]
    test_payment_webhook = None  # type: ignore[assignment]
    test_resume_hook_on_a_webhook_sends_a_request = None  # type: ignore[assignment]

    def test_a_webhook_without_a_public_url_fails_the_run_clearly(
        self, make_world: Callable[[], World]
    ) -> None:
        """No URL can be known for it: ``create_webhook`` fails, saying what to set."""
        from worldflow.testing import _workflows as w

        async def main() -> None:
            async with wf.worker(make_world()):
                run = await wf.start(w.webhook_echo)
                with pytest.raises(wf.RunFailed) as info:
                    await run.result(timeout=10)
                assert "has no public URL for webhooks" in info.value.message
                assert "WORLDFLOW_PUBLIC_URL" in info.value.message

        asyncio.run(main())


class TestBridgedWorldAlwaysReplay(TestBridgedWorld):
    always_replay = True


@wf.step
async def big(n: int) -> str:
    return "x" * n


@wf.workflow
async def big_values(n: int, payload: str) -> int:
    value = await big(n)
    return len(value) + len(payload)


def test_big_values_go_to_blobs_and_come_back() -> None:
    async def main() -> None:
        world = bridged_world(wf.VirtualClock())
        async with wf.worker(world):
            run = await wf.start(big_values, 50_000, "p" * 30_000)
            assert await run.result(timeout=10) == 80_000
            events = await run.events()  # references resolved on the way back
            assert events[0].data["input"] == [[50_000, "p" * 30_000], {}]
        store = world.storage
        assert isinstance(store, OutboxStore) and isinstance(world.blobs, MemoryBlobs)
        assert store.biggest <= LIMIT * 1.5 and len(world.blobs.data) >= 2

    asyncio.run(main())


@wf.workflow
async def naps(count: int) -> str:
    for _ in range(count):
        await wf.sleep(0.6)
    return "rested"


def test_sleeps_past_the_queue_longest_delay_hop_on_the_wall_clock() -> None:
    async def main() -> None:
        world = bridged_world(SystemClock(), max_delay=0.2)
        queue = world.queue
        assert isinstance(queue, SmallQueue)
        sent: list[Outgoing] = []
        original = queue.send

        async def counting(messages: Sequence[Outgoing]) -> None:
            sent.extend(messages)
            await original(messages)

        queue.send = counting  # type: ignore[method-assign]
        async with wf.worker(world):
            run = await wf.start(naps, 2)
            assert await run.result(timeout=10) == "rested"
        hops = [m for m in sent if m.key and "#hop" in m.key]
        assert len(hops) >= 2  # each 0.6 s sleep outlived a 0.2 s queue at least once

    asyncio.run(main())


def test_an_outbox_left_by_a_dead_writer_is_sent_by_the_next_reader() -> None:
    async def main() -> None:
        clock = wf.VirtualClock()
        world = bridged_world(clock)
        store = world.storage
        assert isinstance(store, OutboxStore)
        async with wf.worker(world):
            run = await wf.start(naps, 1)
            for _ in range(200):
                if any(e.kind == "sleep_started" for e in await run.events()):
                    break
                await asyncio.sleep(0.01)
        # As if the writer had died before sending: its timer is only in the outbox.
        queue = world.queue
        assert isinstance(queue, MemoryQueue)
        queue._heap.clear()
        queue._keys.clear()
        assert not store.unsent.get(run.id)  # its timer was sent and marked sent
        timer = Outgoing(Message("m-timer", run.id, "resume"), clock.now() + 0.6)
        store.unsent[run.id] = {2: Unsent(2, [timer], time.time() - 120)}
        world._closed = False
        async with wf.worker(world):
            await run.events()  # a reader: it sends what was left
            clock.advance("1s")
            assert await run.result(timeout=10) == "rested"

    asyncio.run(main())


@wf.step
async def accents(n: int) -> str:
    return "é" * n  # two bytes each in UTF-8


@wf.workflow
async def wide(n: int) -> int:
    return len(await accents(n))


def test_size_limits_count_bytes_not_characters() -> None:
    async def main() -> None:
        world = bridged_world(wf.VirtualClock())
        async with wf.worker(world):
            # 1,400 characters, 2,800 bytes: over the 2,000-byte limit only in bytes.
            assert await (await wf.start(wide, 1_400)).result(timeout=10) == 1_400
        assert isinstance(world.blobs, MemoryBlobs) and world.blobs.data

    asyncio.run(main())


@wf.step
async def one(i: int) -> int:
    return i


@wf.workflow
async def wide_gather(n: int) -> int:
    return sum(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.parametrize("cut", [False, True])
def test_a_turn_too_big_for_one_append_is_split_in_a_chain(cut: bool) -> None:
    """A gather over 150 steps: 150 step_scheduled events in one turn, about 9 KB, over
    the store's 2 KB (no value is big: blobs would not help). The engine writes the
    turn as a chain of appends under the limit; when the store fails after the first
    of them (as a dropped connection would), the run still finishes, each step once."""

    async def main() -> None:
        world = bridged_world(wf.VirtualClock())
        store = world.storage
        assert isinstance(store, OutboxStore)
        store.cut_chains = 1 if cut else 0
        async with wf.worker(world):
            run = await wf.start(wide_gather, 150)
            assert await run.result(timeout=20) == sum(range(150))
            events = await run.events()
        assert store.biggest <= LIMIT
        assert not store.cut_chains  # the failure happened
        kinds = [e.kind for e in events]
        assert kinds.count("step_scheduled") == 150 and kinds.count("step_completed") == 150
        assert len({e.data["cid"] for e in events if e.kind == "step_completed"}) == 150
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        scheduled = [
            a
            for a in store.appends
            if a.run_id == run.id and a.events and a.events[0].kind == "step_scheduled"
        ]
        assert len(scheduled) >= 4  # the turn went in several appends
        assert not [a for a in scheduled[1:] if a.messages]  # its messages with the first

    asyncio.run(main())
