"""Load: many runs asleep at once, woken together; starts at a fixed rate.

    python bench/load.py                        # both, on local and postgres
    python bench/load.py --asleep 10000 --world local
    python bench/load.py --rate 1000 --seconds 30 --world local --only starts

*asleep*: N runs each sleep until one shared instant (``--margin`` seconds
after the first start), served by one process (the warm cache keeps each
suspended workflow in memory): the time to start them, the resident memory
per suspended run (RSS growth / N), and, from the instant, the time until
every run has completed (the wake-up of N durable timers at once).

*starts*: ``wf.start`` called at a fixed rate (open loop: each start is due
at ``t0 + i / rate`` whether or not the earlier ones have returned) for a
number of seconds, each run one no-op step, served by the same process:
the rate achieved, the start latency (p50, p99, max: from when the start
was due to when ``wf.start`` returned), and how long the last runs took to
complete after the last start.

Needs PostgreSQL on 127.0.0.1:5432 (or WORLDFLOW_POSTGRES_URL's server) for
the postgres world; the database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import worldflow as wf
from worldflow.world import World


@wf.workflow
async def nap(until: float) -> int:
    await wf.sleep(until=dt.datetime.fromtimestamp(until, dt.UTC))
    return 1


@wf.step
async def noop(i: int) -> int:
    return i


@wf.workflow
async def one(i: int) -> int:
    return await noop(i)


async def _count(workflow: Any, status: str) -> int:
    """How many runs of ``workflow`` have ``status`` (paging through the index)."""
    total, cursor = 0, None
    while True:
        page = await wf.list_runs(status=status, workflow=workflow, limit=1000, cursor=cursor)
        total += len(page.runs)
        cursor = page.cursor
        if cursor is None:
            return total


def _rss() -> int:
    """This process's resident memory, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextlib.asynccontextmanager
async def _world(name: str) -> AsyncIterator[World]:
    if name == "local":
        from worldflow.worlds.local import LocalWorld

        with tempfile.TemporaryDirectory(prefix="worldflow-load-") as tmp:
            yield LocalWorld(tmp)
        return
    from worldflow.worlds.postgres import create_world
    from worldflow.worlds.postgres.testing import fresh_database

    with fresh_database() as url:
        yield create_world({"url": url})


async def asleep(world_name: str, count: int, margin: float) -> dict[str, float]:
    async with _world(world_name) as world, wf.worker(world):
        await (await wf.start(one, 0)).result(timeout=30)  # warm up: tables, caches
        before = _rss()
        # One shared instant, far enough ahead to start them all first.
        wake_at = time.time() + margin
        began = time.perf_counter()
        runs = [await wf.start(nap, wake_at, id=f"nap-{i}") for i in range(count)]
        started = time.perf_counter() - began
        # Wait until every run is asleep (its sleep recorded, its workflow suspended).
        while True:
            if await _count(nap, "running") >= count:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        per_run = (_rss() - before) / count
        if time.time() > wake_at:
            raise RuntimeError(f"starting {count} runs took longer than the {margin}s margin")
        await asyncio.gather(*(r.result(timeout=margin + 600) for r in runs))
        wakeup = time.time() - wake_at
    return {"start": started, "per_run": per_run, "wakeup": wakeup}


async def starts(world_name: str, rate: float, seconds: float) -> dict[str, float]:
    async with _world(world_name) as world, wf.worker(world):
        await (await wf.start(one, 0)).result(timeout=30)
        total = int(rate * seconds)
        latencies: list[float] = []
        runs: list[wf.Run[int]] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1

        async def start(i: int) -> None:
            due = t0 + i / rate
            runs.append(await wf.start(one, i))
            latencies.append(loop.time() - due)

        tasks = []
        for i in range(total):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(start(i)))
        await asyncio.gather(*tasks)
        last_start = loop.time()
        achieved = total / (last_start - t0)
        await asyncio.gather(*(r.result(timeout=600) for r in runs))
        drained = loop.time() - last_start
    latencies.sort()
    return {
        "achieved": achieved,
        "p50": statistics.median(latencies),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "max": latencies[-1],
        "drained": drained,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=("local", "postgres", "both"), default="both")
    parser.add_argument("--only", choices=("asleep", "starts"), default=None)
    parser.add_argument("--asleep", type=int, default=10_000, metavar="N")
    parser.add_argument(
        "--margin", type=float, default=90.0, help="seconds from the first start to the instant"
    )
    parser.add_argument("--rate", type=float, default=1000.0, metavar="PER_S")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    worlds = ["local", "postgres"] if args.world == "both" else [args.world]
    if args.only in (None, "asleep"):
        print(f"{args.asleep} runs asleep at once, woken together (one serving process)")
        print("world       start all   RSS per suspended run   all completed after the instant")
        for name in worlds:
            r = asyncio.run(asleep(name, args.asleep, args.margin))
            print(
                f"{name:<10} {r['start']:9.1f}s {r['per_run'] / 1024:14.1f} KiB"
                f" {r['wakeup']:20.2f}s"
            )
    if args.only in (None, "starts"):
        print(f"\nwf.start at {args.rate:.0f}/s for {args.seconds:.0f}s (one no-op step each)")
        print("world      achieved    p50 latency   p99 latency   max latency   drained after")
        for name in worlds:
            r = asyncio.run(starts(name, args.rate, args.seconds))
            print(
                f"{name:<10} {r['achieved']:6.0f}/s {r['p50'] * 1e3:11.1f}ms"
                f" {r['p99'] * 1e3:11.1f}ms {r['max'] * 1e3:11.1f}ms {r['drained']:12.2f}s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
