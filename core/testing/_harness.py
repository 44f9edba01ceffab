"""What the conformance suite drives a World with: a harness, a replayer, a duplicator."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import worldflow as wf
from worldflow._api import _serving
from worldflow._clock import VirtualClock
from worldflow._definitions import get_workflow
from worldflow._events import RESULT_KINDS, EventKind
from worldflow._instance import WorkflowInstance
from worldflow._runtime import Runtime
from worldflow._state import RunState
from worldflow._world import Deliver, Delivery, Disposition, Event, Outgoing, Queue, World

__all__ = [
    "ChaoticQueue",
    "DuplicatingWorld",
    "Harness",
    "chaotic",
    "dump_log",
    "http_call",
    "load_log",
    "normalized",
    "replay_log",
]


class Harness:
    """One World (re)opened over the same storage, served on the running loop.

    ``serve=False``: the test's process is a client (it starts, signals and looks at
    runs); the World's own host executes them (a Lambda harness, a service process).
    """

    def __init__(
        self,
        make_world: Callable[[], World],
        *,
        always_replay: bool = False,
        serve: bool = True,
    ) -> None:
        self.make_world = make_world
        self.always_replay = always_replay
        self.serve = serve
        self.world: World = make_world()
        self._stack: contextlib.AsyncExitStack | None = None
        self._runtime: Runtime | None = None

    async def __aenter__(self) -> Harness:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._runtime = await self._stack.enter_async_context(
            _serving(self.world, self.always_replay, serve=self.serve)
        )

    @property
    def runtime(self) -> Runtime:
        """The runtime serving this harness's World (to deliver messages by hand)."""
        assert self._runtime is not None, "the harness is not open"
        return self._runtime

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def restart(self) -> None:
        """Stop serving and start again with a new World over the same storage: a cold process."""
        await self.close()
        self.world = self.make_world()
        await self._open()

    @property
    def clock(self) -> VirtualClock:
        clock = self.world.clock
        if not isinstance(clock, VirtualClock):
            raise TypeError("this test needs a World built with a wf.VirtualClock")
        return clock

    def advance(self, duration: object) -> None:
        self.clock.advance(duration)

    async def events(self, run: wf.Run[Any]) -> list[Event]:
        return await run.events()

    async def wait_event(
        self, run: wf.Run[Any], kind: str, count: int = 1, timeout: float = 10.0
    ) -> list[Event]:
        """Wait until the run's log holds ``count`` events of ``kind``; returns them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [e for e in await run.events() if e.kind == kind]
            if len(found) >= count:
                return found
            if loop.time() > deadline:
                kinds = [e.kind for e in await run.events()]
                raise AssertionError(f"no {count} x {kind!r} in {timeout}s; the log has {kinds}")
            await asyncio.sleep(0.005)


def dump_log(events: Sequence[Event], path: str | os.PathLike[str]) -> None:
    """Save a run's log as JSON, to replay later with ``replay_log(load_log(path))``."""
    if not events:
        raise ValueError("an empty log")
    document = {
        "run_id": events[0].run_id,
        "events": [{"seq": e.seq, "kind": e.kind, "at": e.at, "data": e.data} for e in events],
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def load_log(path: str | os.PathLike[str]) -> list[Event]:
    """Read a log written by :func:`dump_log`."""
    document = json.loads(Path(path).read_text())
    return [
        Event(document["run_id"], item["seq"], item["kind"], item["data"], item["at"])
        for item in document["events"]
    ]


def replay_log(events: Sequence[Event]) -> Any:
    """Replay a recorded event log against the workflow code in this process.

    Raises :class:`~worldflow.NonDeterminismError` if the code no longer makes
    the commands the log records, or, for a finished run, no longer returns
    what it returned. Returns the state the log folds into.
    """
    if not events:
        raise ValueError("an empty log")
    run_id = events[0].run_id
    state = RunState.from_events(run_id, events)
    workflow = get_workflow(state.workflow)
    instance = WorkflowInstance(run_id, workflow, list(state.commands), lambda token: "")
    instance.replaying = True
    for event in events:
        if event.kind == EventKind.RUN_STARTED:
            instance.start(event.at, state.input)
        elif event.kind in RESULT_KINDS and not instance.done:
            instance.feed(event)
    instance.check_replayed()
    if instance.divergence is not None:
        raise instance.divergence
    if state.done and state.status != "cancelled":
        outcome = instance.outcome()
        recorded = state.output if state.status == "completed" else state.error
        replayed = outcome.output if outcome.status == "completed" else outcome.error
        same = outcome.status == state.status and (
            recorded == replayed
            if state.status == "completed"
            else (recorded or {}).get("type") == (replayed or {}).get("type")
        )
        if not same:
            raise wf.NonDeterminismError(
                f"run {run_id!r}: replaying its log ends {outcome.status} with {replayed!r}, "
                f"but the log records {state.status} with {recorded!r}"
            )
    return state


class _DuplicatingQueue:
    """Delivers every message twice, at once (both deliveries must agree it is done)."""

    def __init__(self, inner: Queue) -> None:
        self.inner = inner

    async def send(self, messages: Sequence[Outgoing]) -> None:
        await self.inner.send(messages)

    async def start(self, deliver: Deliver) -> None:
        async def twice(delivery: Delivery) -> Disposition:
            first, second = await asyncio.gather(deliver(delivery), deliver(delivery))
            return first if not first.ack else second

        await self.inner.start(twice)

    async def close(self) -> None:
        await self.inner.close()


def DuplicatingWorld(inner: World) -> World:
    """The World with a queue that delivers every message twice, at once."""
    world = copy.copy(inner)
    world.queue = _DuplicatingQueue(inner.queue)
    return world


class ChaoticQueue:
    """A queue that sends every message late by a random 0..``max_delay`` seconds
    (so messages sent one after the other arrive in any order) and, with
    ``duplicate``, twice, each copy with its own delay; and, for a queue that is
    pulled, hands every delivery to the engine late by another random delay and,
    with ``duplicate``, twice at once (so messages a World enqueues in its own
    transactions, which never pass through ``send``, are reordered and doubled
    too). What a standard SQS queue may do, all the time. Pending sends go out at
    once on close."""

    def __init__(
        self,
        inner: Queue,
        *,
        max_delay: float = 0.3,
        duplicate: bool = True,
        seed: int | None = None,
    ) -> None:
        self.inner = inner
        self.max_delay = max_delay
        self.duplicate = duplicate
        self.random = random.Random(seed)
        self._pending: set[asyncio.Task[None]] = set()
        self._held: dict[int, Outgoing] = {}
        self.sent = 0

    async def send(self, messages: Sequence[Outgoing]) -> None:
        loop = asyncio.get_running_loop()
        for out in messages:
            for _ in range(2 if self.duplicate else 1):
                task = loop.create_task(self._later(out, self.random.uniform(0, self.max_delay)))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _later(self, out: Outgoing, delay: float) -> None:
        key = id(out) ^ self.random.getrandbits(32)
        self._held[key] = out
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            return  # close() sends what is held
        if self._held.pop(key, None) is not None:
            await self.inner.send([out])
            self.sent += 1

    async def start(self, deliver: Deliver) -> None:
        async def late(delivery: Delivery) -> Disposition:
            await asyncio.sleep(self.random.uniform(0, self.max_delay))
            return await deliver(delivery)

        async def chaos(delivery: Delivery) -> Disposition:
            if not self.duplicate:
                return await late(delivery)
            first, second = await asyncio.gather(late(delivery), late(delivery))
            return first if not first.ack else second

        await self.inner.start(chaos)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        held, self._held = list(self._held.values()), {}
        if held:
            with contextlib.suppress(Exception):
                await self.inner.send(held)
        await self.inner.close()


def chaotic(inner: World, *, max_delay: float = 0.3, duplicate: bool = True) -> World:
    """The World with a :class:`ChaoticQueue`: every message late by a random delay (so
    reordered) and, with ``duplicate``, sent twice. For any World's tests."""
    world = copy.copy(inner)
    world.queue = ChaoticQueue(inner.queue, max_delay=max_delay, duplicate=duplicate)
    return world


_VOLATILE = {"at", "worker", "lease_until", "retry_at", "id", "traceback", "until"}


def normalized(events: Sequence[Event]) -> list[tuple[str, Any]]:
    """A log without what legitimately differs between two executions (times, ids)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [(e.kind, strip(e.data)) for e in events]


async def http_call(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One HTTP request off the loop (a webhook call, say): the status and the body,
    error statuses included."""

    def call() -> tuple[int, bytes]:
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    return await asyncio.to_thread(call)
