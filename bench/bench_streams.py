"""Streams on every World: chunks/s written and read, and billable calls per chunk on
the cloud worlds (run by hand).

    python bench/bench_streams.py                 # local, postgres, aws (moto), gcp (emulators)
    python bench/bench_streams.py --worlds local aws --chunks 5000

One run per World: a step writes N small chunks (``"tok-<i>"``, as an LLM's
tokens) as fast as it can; ``wf.get_writable`` buffers them and flushes every
50 ms or 64 KiB, and at the step's end. Written: N / the run's time (start to
result). Read: N / the time ``run.stream`` takes to read them all back once
stored (a reader that connects late).

Calls per chunk: the storage calls of a run of N chunks minus those of a run of
0 chunks, divided by N. On aws, every DynamoDB request (counted with botocore's
``before-call`` event on the session the World's clients come from: what AWS
bills; moto only answers); on gcp, Firestore's billable document reads and
writes, and the commits (RPCs) of stream writes, counted at the store.
Heartbeats are turned off during the measure (they are per process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import worldflow as wf
from worldflow.world import SystemClock, World


@wf.step(name="bench.streams.emit")
async def emit(n: int, pause: float) -> int:
    out = wf.get_writable("tokens")
    for i in range(n):
        out.write(f"tok-{i}")
        if pause:
            await asyncio.sleep(pause)  # a model producing tokens at its pace
        elif i % 1000 == 999:
            await asyncio.sleep(0)  # a real producer awaits its source now and then
    return n


@wf.workflow(name="bench.streams.generate")
async def generate(n: int, pause: float = 0.0) -> int:
    return await emit(n, pause)


@dataclasses.dataclass
class Result:
    world: str
    chunks: int
    write_per_s: float
    read_per_s: float
    calls: dict[str, float]


async def one_run(n: int, pause: float = 0.0) -> tuple[float, float]:
    began = time.perf_counter()
    run = await wf.start(generate, n, pause)
    assert await run.result(timeout=600) == n
    wrote = time.perf_counter() - began
    began = time.perf_counter()
    count = 0
    async for _ in run.stream("tokens"):
        count += 1
    read = time.perf_counter() - began
    assert count == n, (count, n)
    return wrote, read


async def measure(
    name: str,
    world: World,
    n: int,
    calls: Callable[[], collections.Counter[str]],
    pause: float = 0.0,
) -> list[Result]:
    async with wf.worker(world):
        await one_run(10)  # warm: the first run pays for connections and caches
        before = calls()
        await one_run(0)
        zero = calls()
        zero.subtract(before)
        results = []
        for label, count, wait in ((name, n, 0.0), (f"{name} (paced)", n // 4, pause)):
            before = calls()
            wrote, read = await one_run(count, wait)
            many = calls()
            many.subtract(before)
            many.subtract(zero)
            per_chunk = {k: round(v / count, 4) for k, v in sorted(many.items()) if v > 0}
            results.append(Result(label, count, count / wrote, count / read, per_chunk))
    return results


@contextlib.asynccontextmanager
async def local_world() -> AsyncIterator[tuple[World, Callable[[], collections.Counter[str]]]]:
    from worldflow.worlds.local import LocalWorld

    with tempfile.TemporaryDirectory() as folder:
        world = LocalWorld(folder, heartbeat=3600, lease=7200)
        yield world, lambda: collections.Counter()


@contextlib.asynccontextmanager
async def postgres_world() -> AsyncIterator[tuple[World, Callable[[], collections.Counter[str]]]]:
    from worldflow.worlds.postgres import PostgresWorld
    from worldflow.worlds.postgres.testing import fresh_database

    with fresh_database() as url:
        world = PostgresWorld(url, heartbeat=3600, lease=7200, serve_webhooks=False)
        yield world, lambda: collections.Counter()


@contextlib.asynccontextmanager
async def aws_world() -> AsyncIterator[tuple[World, Callable[[], collections.Counter[str]]]]:
    from worldflow.worlds.aws import setup
    from worldflow.worlds.aws.testing import MotoServer, world_factory

    logging.disable(logging.WARNING)  # moto's request log
    with MotoServer() as moto:
        for key, value in moto.env().items():
            os.environ[key] = value
        session = moto.session()
        settings = setup("bench-streams", session=session, endpoint_url=moto.url)
        counted: collections.Counter[str] = collections.Counter()

        def count(model: Any, **_: Any) -> None:
            if model.service_model.service_name == "dynamodb":
                counted[f"dynamodb:{model.name}"] += 1

        session.events.register("before-call", count)
        make = world_factory(settings, session=session, endpoint_url=moto.url, clock=SystemClock())
        yield make(heartbeat=3600.0, lease=7200.0), lambda: collections.Counter(counted)


@contextlib.asynccontextmanager
async def gcp_world() -> AsyncIterator[tuple[World, Callable[[], collections.Counter[str]]]]:
    from worldflow.worlds.gcp import GcpWorld
    from worldflow.worlds.gcp._setup import delete_queue, ensure_queue
    from worldflow.worlds.gcp.testing import Emulators, settings_for_test

    em = Emulators().start()
    try:
        settings = dataclasses.replace(
            settings_for_test(em), heartbeat=3600.0, lease=7200.0, drain_timeout=60.0
        )
        await ensure_queue(settings)
        world = GcpWorld(settings)
        store: Any = world.store  # type: ignore[attr-defined]

        def counts() -> collections.Counter[str]:
            return collections.Counter(
                {
                    "firestore:reads": store.reads - store.run_reads,
                    "firestore:writes": store.writes,
                    "firestore:stream commits": store.stream_commits,
                }
            )

        try:
            yield world, counts
        finally:
            await delete_queue(settings)
    finally:
        em.stop()


WORLDS = {"local": local_world, "postgres": postgres_world, "aws": aws_world, "gcp": gcp_world}


async def bench(names: list[str], n: int, pause: float) -> None:
    print(
        f"{'world':<18}{'chunks':>8}{'written/s':>12}{'read/s':>10}  calls per chunk "
        f"(beyond a run); paced: a chunk every {pause * 1000:g} ms"
    )
    for name in names:
        async with WORLDS[name]() as (world, calls):
            results = await measure(name, world, n, calls, pause)
        for result in results:
            print(
                f"{result.world:<18}{result.chunks:>8}{result.write_per_s:>12.0f}"
                f"{result.read_per_s:>10.0f}  {result.calls or '-'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", choices=list(WORLDS), default=list(WORLDS))
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument(
        "--pace", type=float, default=2.0, help="ms between chunks of the paced run (of N/4)"
    )
    args = parser.parse_args()
    asyncio.run(bench(args.worlds, args.chunks, args.pace / 1000))


if __name__ == "__main__":
    main()
