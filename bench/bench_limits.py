"""What a concurrency limit costs a start (run by hand, prints figures).

    python bench/bench_limits.py [--world local|postgres|aws|all] [--runs N]

For each World: N runs of a one-step workflow, one after another, each
started and awaited to its end, without a limit and with a limit that never
makes a run wait (``concurrency=wf.Limit(100_000, key=...)``, one key for all:
the same limiter log for every run). Printed: the median time of the
``wf.start`` call, and of a whole run (start to result), plain and limited, and
the difference. A limited start adds a ``get_run``, a read of the limiter's log
and an append to it; the run's end adds a read and an append (the release).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import worldflow as wf
from worldflow.world import World


@wf.step
async def noop(i: int) -> int:
    return i


@wf.workflow(name="bench-limits.plain")
async def plain(i: int) -> int:
    return await noop(i)


@wf.workflow(name="bench-limits.limited", concurrency=wf.Limit(100_000, key=lambda i: "all"))
async def limited(i: int) -> int:
    return await noop(i)


async def measure(workflow: Any, runs: int) -> tuple[float, float]:
    starts: list[float] = []
    whole: list[float] = []
    for i in range(runs):
        t0 = time.perf_counter()
        run = await wf.start(workflow, i)
        t1 = time.perf_counter()
        assert await run.result(timeout=60) == i
        t2 = time.perf_counter()
        starts.append(t1 - t0)
        whole.append(t2 - t0)
    return statistics.median(starts), statistics.median(whole)


async def bench(name: str, make: Callable[[], World], runs: int) -> None:
    async with wf.worker(make()):
        await measure(plain, 10)  # warm: connections, the limiter's creation
        await measure(limited, 10)
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "limited": []}
        for _ in range(3):  # interleaved, so that the machine's mood affects both alike
            results["plain"].append(await measure(plain, runs // 3))
            results["limited"].append(await measure(limited, runs // 3))
    p_start = statistics.median(s for s, _ in results["plain"])
    p_run = statistics.median(r for _, r in results["plain"])
    l_start = statistics.median(s for s, _ in results["limited"])
    l_run = statistics.median(r for _, r in results["limited"])
    print(
        f"{name:9} start: plain {p_start * 1e3:7.2f} ms  limited {l_start * 1e3:7.2f} ms  "
        f"(+{(l_start - p_start) * 1e3:.2f} ms)   "
        f"start to result: plain {p_run * 1e3:7.2f} ms  limited {l_run * 1e3:7.2f} ms  "
        f"(+{(l_run - p_run) * 1e3:.2f} ms)",
        flush=True,
    )


@contextlib.contextmanager
def local_world() -> Iterator[Callable[[], World]]:
    from worldflow.worlds.local import LocalWorld

    with tempfile.TemporaryDirectory() as tmp:
        yield lambda: LocalWorld(Path(tmp), serve_webhooks=False)


@contextlib.contextmanager
def postgres_world() -> Iterator[Callable[[], World]]:
    from worldflow.worlds.postgres import PostgresWorld
    from worldflow.worlds.postgres.testing import fresh_database

    with fresh_database() as url:
        yield lambda: PostgresWorld(url, schema="bench", serve_webhooks=False)


@contextlib.contextmanager
def aws_world() -> Iterator[Callable[[], World]]:
    from worldflow.worlds.aws import setup
    from worldflow.worlds.aws.testing import MotoServer, world_factory

    with MotoServer() as moto:
        settings = setup("wf-bench", session=moto.session(), endpoint_url=moto.url)
        os.environ.update({**moto.env(), **settings})
        make = world_factory(
            settings, session=moto.session(), endpoint_url=moto.url, clock=wf.SystemClock()
        )
        yield make


WORLDS = {"local": local_world, "postgres": postgres_world, "aws": aws_world}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="all", choices=[*WORLDS, "all"])
    parser.add_argument("--runs", type=int, default=150)
    args = parser.parse_args()
    names = list(WORLDS) if args.world == "all" else [args.world]
    print(f"{args.runs} sequential runs of one step each, per world (medians)")
    for name in names:
        try:
            with WORLDS[name]() as make:
                asyncio.run(bench(name, make, args.runs))
        except Exception as exc:  # a World whose server is missing: say so, go on
            print(f"{name:9} skipped: {type(exc).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
