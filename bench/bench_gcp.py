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
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

import worldflow as wf
from worldflow.worlds.gcp import GcpWorld
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
    return Count.of(world).minus(before), took


async def bench(em: Emulators, steps: list[int]) -> None:
    # No heartbeat (nor sweep) during the measure: they are per process, not per step.
    settings = dataclasses.replace(
        settings_for_test(em), heartbeat=3600.0, lease=7200.0, drain_timeout=60.0
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 100])
    args = parser.parse_args()
    em = Emulators().start()
    try:
        asyncio.run(bench(em, args.steps))
    finally:
        em.stop()


if __name__ == "__main__":
    main()
