"""Benchmark ``asyncio.gather`` over N child workflows (run by hand, prints figures).

    python bench/bench_children.py [--world local|postgres|all] [--children 200]

A parent gathers N children, each of which runs one no-op step. Figures: the
wall time from ``wf.start`` of the parent to its result, and the store's cost
(``Storage.append`` calls and the appends they carried, run creations), per
child. The appends grow as O(children): the parent appends its N
``child_started`` in one batch, then one ``child_completed`` per child (grouped
when several end together); each child appends its own few.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import worldflow as wf
from worldflow.world import World


@wf.step(name="bench.children.noop")
async def noop(i: int) -> int:
    return i


@wf.workflow(name="bench.children.kid")
async def kid(i: int) -> int:
    return await noop(i)


@wf.workflow(name="bench.children.parent")
async def parent(n: int) -> int:
    return sum(await asyncio.gather(*(kid(i) for i in range(n))))


class Counting:
    """Counts what a World's storage is asked to write."""

    def __init__(self, world: World) -> None:
        self.calls = self.appends = self.creates = 0
        storage: Any = world.storage
        append, create = storage.append, storage.create_run

        async def counted_append(appends: Any) -> Any:
            self.calls += 1
            self.appends += len(appends)
            return await append(appends)

        async def counted_create(run: Any) -> Any:
            self.creates += 1
            return await create(run)

        storage.append = counted_append
        storage.create_run = counted_create


@contextlib.contextmanager
def _world(name: str) -> Iterator[World]:
    if name == "local":
        from worldflow.worlds.local import LocalWorld

        with tempfile.TemporaryDirectory() as data:
            yield LocalWorld(data)
    else:
        from worldflow.worlds.postgres import PostgresWorld
        from worldflow.worlds.postgres.testing import fresh_database

        with fresh_database() as url:
            yield PostgresWorld(url)


async def _measure(world: World, n: int) -> dict[str, float]:
    counting = Counting(world)
    async with wf.worker(world):
        warm = await wf.start(parent, 2)  # imports, connections, the first run's setup
        await warm.result(timeout=60)
        before = (counting.calls, counting.appends, counting.creates)
        t0 = time.perf_counter()
        run = await wf.start(parent, n)
        total = await run.result(timeout=600)
        wall = time.perf_counter() - t0
        assert total == sum(range(n)), total
        events = await run.events()
    calls, appends, creates = (
        counting.calls - before[0],
        counting.appends - before[1],
        counting.creates - before[2],
    )
    return {
        "wall_s": wall,
        "append_calls_per_child": calls / n,
        "appends_per_child": appends / n,
        "creates": creates,
        "parent_events": len(events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=("local", "postgres", "all"), default="all")
    parser.add_argument("--children", type=int, default=200)
    args = parser.parse_args()
    worlds = ("local", "postgres") if args.world == "all" else (args.world,)
    for name in worlds:
        for n in (args.children // 4, args.children):
            with _world(name) as world:
                r = asyncio.run(_measure(world, n))
            print(
                f"{name:8} gather over {n:4} children: {r['wall_s'] * 1000:8.0f} ms "
                f"({r['wall_s'] / n * 1000:.2f} ms/child); "
                f"{r['appends_per_child']:.2f} appends/child in "
                f"{r['append_calls_per_child']:.2f} storage calls/child; "
                f"{r['creates']:.0f} runs created; parent log {r['parent_events']:.0f} events",
                flush=True,
            )


if __name__ == "__main__":
    main()
