"""Billable operations per step on the GCP world, counted at the client (run by hand).

    python bench/bench_gcp.py [--steps 50 100]

Starts the emulators of worldflow.worlds.gcp.testing (Firestore, Cloud Tasks,
Cloud Storage), runs one run of N sequential no-op steps, a run sleeping
between steps, and a run of parallel steps, and prints per step the
Firestore document reads and writes, the Cloud Tasks created and the Cloud
Storage operations the world made (the engine's and its outbox's included:
the counts are taken at the World's parts). These are the operations Google bills
(Firestore bills per document read/write/delete; Cloud Tasks per operation;
a heartbeat is per process and time, not per step, and is shown apart).
Latency on the emulators says little about the real services and is
printed only as a sanity check.

Then long sleeps (``--sleeps``): a run that sleeps 1 hour, 1 day, 30 days and
90 days, on the real clock shifted forward as each task comes due (each timer
or hop task is run as Cloud Tasks would run it at its ``schedule_time``), with
the tasks created, the task deliveries and the Firestore reads and writes the
sleep adds to a run that does not sleep, against the price of one Cloud
Scheduler job for the sleep's length (docs/gcp.md, "Long sleeps").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import time
from typing import Any

import worldflow as wf
from worldflow.world import SystemClock
from worldflow.worlds.gcp import GcpWorld
from worldflow.worlds.gcp._queue import make_client
from worldflow.worlds.gcp._setup import delete_queue, ensure_queue
from worldflow.worlds.gcp.testing import Emulators, settings_for_test


@wf.step(name="bench.gcp.noop")
async def noop(i: int) -> int:
    return i


@wf.workflow(name="bench.gcp.sequential")
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@wf.workflow(name="bench.gcp.parallel")
async def parallel(n: int) -> int:
    return sum(await asyncio.gather(*(noop(i) for i in range(n))))


@wf.workflow(name="bench.gcp.sleepy")
async def sleepy(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
        await wf.sleep(1)
    return total


@wf.workflow(name="bench.gcp.wake")
async def wake(seconds: float) -> int:
    if seconds:
        await wf.sleep(seconds)
    return 1


class ShiftedClock(SystemClock):
    """The wall clock moved forward by ``offset`` seconds: a real-time World (tasks carry a
    ``schedule_time``, the engine hops past Cloud Tasks' 30 days) whose days pass at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    async def sleep_until(self, when: float) -> None:
        await super().sleep_until(when - self.offset)


@dataclasses.dataclass
class Count:
    reads: int  # the engine's: result()'s polls of the run document are apart
    writes: int
    tasks: int
    blobs: int
    polls: int

    @classmethod
    def of(cls, world: GcpWorld) -> Count:
        store = world.store
        return cls(
            store.reads - store.run_reads,
            store.writes,
            world.tasks.created,
            world.cloud_storage.writes,
            store.run_reads,
        )

    def minus(self, other: Count) -> Count:
        return Count(
            *(
                a - b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )


async def measure(world: GcpWorld, workflow: wf.Workflow[..., int], n: int) -> tuple[Count, float]:
    before = Count.of(world)
    began = time.perf_counter()
    handle = await wf.start(workflow, n)
    await handle.result(timeout=600)
    took = time.perf_counter() - began
    # The run's end wakes result() as it is recorded; the expiry of its earlier events
    # documents (WORLDFLOW_GCP_RUN_TTL) is written just after: let it land in the count.
    await asyncio.sleep(0.5)
    return Count.of(world).minus(before), took


async def bench(em: Emulators, steps: list[int], run_ttl: bool = False) -> None:
    # No heartbeat (nor sweep) during the measure: they are per process, not per step.
    settings = dataclasses.replace(
        settings_for_test(em), heartbeat=3600.0, lease=7200.0, drain_timeout=60.0
    )
    if run_ttl:  # WORLDFLOW_GCP_RUN_TTL=30d: an expiry written on each document at the end
        settings = dataclasses.replace(settings, run_ttl=30 * 86400.0)
    await ensure_queue(settings)
    try:
        world = GcpWorld(settings)
        async with wf.worker(world):
            print(
                f"{'workflow':<22}{'steps':>6}{'reads':>9}{'writes':>9}{'tasks':>9}"
                f"{'blobs':>7}{'ops/step':>10}{'ms/step':>9}{'polls':>7}"
            )
            for name, workflow in (
                ("sequential", sequential),
                ("parallel (gather)", parallel),
                ("sleep(1s) each", sleepy),
            ):
                for n in (
                    steps
                    if workflow is sequential
                    else steps[-1:]
                    if workflow is parallel
                    else steps[:1]
                ):
                    count, took = await measure(world, workflow, n)
                    ops = count.reads + count.writes + count.tasks + count.blobs
                    print(
                        f"{name:<22}{n:>6}{count.reads / n:>9.2f}{count.writes / n:>9.2f}"
                        f"{count.tasks / n:>9.2f}{count.blobs / n:>7.2f}{ops / n:>10.2f}"
                        f"{took / n * 1000:>9.1f}{count.polls:>7}"
                    )
    finally:
        await delete_queue(settings)
    print(
        "\npolls: reads of the run document by run.result() in this process (the caller's"
        "\ncost of waiting, not the engine's; a run finished by this process wakes it at once)."
        "\nper run (not per step): create_run writes 2 documents; the start's safety copy is 1"
        "\ntask (a serving process starts the run itself); per process: one heartbeat write"
        "\nevery WORLDFLOW_GCP_HEARTBEAT seconds (10 s) and a sweep query or two every lease."
    )


SLEEPS = {"1 hour": 3600.0, "1 day": 86400.0, "30 days": 30 * 86400.0, "90 days": 90 * 86400.0}
#: Published prices (us-central1, at the time of writing): Cloud Tasks per billable
#: operation (a task created, a push delivery attempt), beyond the free first million a
#: month; Firestore per document read and write; Cloud Scheduler per job per 31 days,
#: billed per day, beyond 3 free jobs per billing account.
TASK_OP = 0.40 / 1e6
READ, WRITE = 0.03 / 1e5, 0.09 / 1e5
SCHEDULER_JOB_DAY = 0.10 / 31


async def sleep_costs(em: Emulators) -> None:
    from worldflow.worlds.gcp import _host

    deliveries = 0
    decode = _host.decode_task

    def counting(body: bytes, retries: int = 0) -> Any:
        nonlocal deliveries
        deliveries += 1
        return decode(body, retries)

    _host.decode_task = counting  # type: ignore[assignment]
    settings = dataclasses.replace(
        settings_for_test(em), heartbeat=3600.0, lease=7200.0, drain_timeout=60.0
    )
    await ensure_queue(settings)
    clock = ShiftedClock()
    client = make_client(settings)
    try:
        world = GcpWorld(settings, clock=clock)
        async with wf.worker(world):
            print(
                f"\n{'sleep':<10}{'tasks':>7}{'deliv.':>8}{'reads':>7}{'writes':>8}"
                f"{'ops':>6}{'Cloud Tasks $':>15}{'Scheduler $':>13}{'ratio':>10}"
            )
            store = world.store

            async def one(duration: float) -> tuple[Count, int, int]:
                before, delivered = Count.of(world), deliveries
                handle = await wf.start(wake, duration)
                own = 0  # the bench's own reads of the run document, waiting for it
                if duration:
                    own += await _drive(client, settings.queue_path, clock, handle)
                polled = store.run_reads
                assert await handle.result(timeout=60) == 1
                own += store.run_reads - polled
                return Count.of(world).minus(before), deliveries - delivered, own

            await one(0.0)  # warm up: the first run of a process reads what later ones do not
            await one(3600.0)
            for label, seconds in SLEEPS.items():
                base, base_d, base_own = await one(0.0)  # the run without the sleep
                slept, slept_d, slept_own = await one(seconds)
                extra = slept.minus(base)
                tasks, delivered = extra.tasks, slept_d - base_d
                reads = extra.reads + extra.polls - (slept_own - base_own)
                writes = extra.writes
                cost = (tasks + delivered) * TASK_OP + reads * READ + writes * WRITE
                scheduler = SCHEDULER_JOB_DAY * max(1, math.ceil(seconds / 86400))
                print(
                    f"{label:<10}{tasks:>7}{delivered:>8}{reads:>7}{writes:>8}"
                    f"{tasks + delivered + reads + writes:>6}{cost:>15.7f}{scheduler:>13.4f}"
                    f"{scheduler / cost:>10.0f}"
                )
    finally:
        _host.decode_task = decode  # type: ignore[assignment]
        await client.transport.close()
        await delete_queue(settings)
    print(
        "\ntasks: Cloud Tasks created for the sleep (the timer, and a hop per 29 days past"
        "\nthe first); deliv.: their push deliveries; reads/writes: Firestore documents the"
        "\nsleep adds (the bench's own polls left out). $: at the published prices in this file;"
        "\nScheduler: one job for the sleep's length (billed per day), ratio = Scheduler / Tasks."
    )


async def _drive(client: Any, queue: str, clock: ShiftedClock, handle: wf.Run[Any]) -> int:
    """Run each of the run's timer tasks when it comes due, as Cloud Tasks would: move the
    World's clock to its ``schedule_time``, then run it (the emulator holds it in real time).
    Returns how many times it read the run document (its own cost, not the sleep's)."""
    (started,) = [e for e in await _events(handle, "sleep_started")]
    until, done, own = started.data["until"], set(), 0
    while not (info := await handle.info()).done:
        own += 1
        pending = [
            t
            for t in (await client.list_tasks(parent=queue)).tasks
            if t.name not in done and json.loads(t.http_request.body)["not_before"] == until
        ]
        if not pending:
            await asyncio.sleep(0.05)
            continue
        task = min(pending, key=lambda t: t.schedule_time.timestamp())
        clock.offset += max(0.0, task.schedule_time.timestamp() - time.time())
        done.add(task.name)
        await client.run_task(name=task.name)
    assert info.status == "completed", info
    return own + 1


async def _events(handle: wf.Run[Any], kind: str) -> list[Any]:
    for _ in range(200):
        found = [e for e in await handle.events() if e.kind == kind]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no {kind} event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--sleeps", action="store_true", help="only the long sleeps")
    parser.add_argument(
        "--ttl", action="store_true", help="steps with WORLDFLOW_GCP_RUN_TTL=30d (default: off)"
    )
    args = parser.parse_args()
    em = Emulators().start()
    try:
        if not args.sleeps:
            asyncio.run(bench(em, args.steps, run_ttl=args.ttl))
        if args.sleeps or not args.ttl:
            asyncio.run(sleep_costs(em))
    finally:
        em.stop()


if __name__ == "__main__":
    main()
