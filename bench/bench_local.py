"""Benchmark the local world with its default durability (run by hand, prints figures).

    scripts/bench            # or: python bench/bench_local.py [--quick]

The data directory is on disk, SQLite in WAL mode with synchronous=NORMAL:
every step's result survives ``kill -9`` of the process; on power loss the
last commits may be lost (never the database's integrity).

Figures: one run of N sequential no-op steps (N = 100, 1,000); 200 runs x 10
steps started at once; steps passing a 10 KB payload, beside a no-op step; and,
as floors, a bare SQLite WAL commit loop in this process, small rows and the
two 10 KB rows a payload step writes.

``--otel`` configures the OpenTelemetry SDK first (a batch processor feeding an
exporter that drops the spans), to measure what tracing costs a step.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import worldflow as wf
from worldflow.worlds.local import LocalWorld


@wf.step
async def noop(i: int) -> int:
    return i


@wf.step
async def carry(payload: str) -> str:
    return payload


@wf.workflow(name="bench.sequential")
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@wf.workflow(name="bench.payload")
async def payload_steps(n: int, size: int) -> int:
    payload = "x" * size
    for _ in range(n):
        payload = await carry(payload)
    return len(payload)


def wal_commit_floor(path: Path, n: int, rows: tuple[str, ...] = ()) -> float:
    """Seconds per bare commit: BEGIN IMMEDIATE, one small insert (or ``rows``), COMMIT."""
    db = sqlite3.connect(path / f"floor-{time.monotonic_ns()}.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    start = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        if rows:
            db.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in rows])
        else:
            db.execute("INSERT INTO t (v) VALUES (?)", (f"value {i}",))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed / n


async def one_run(workflow: wf.Workflow, *args: object) -> float:  # type: ignore[type-arg]
    gc.collect()
    start = time.perf_counter()
    run = await wf.start(workflow, *args)
    await run.result(timeout=600)
    return time.perf_counter() - start


async def many_runs(runs: int, steps: int) -> float:
    gc.collect()
    start = time.perf_counter()
    handles = await asyncio.gather(*(wf.start(sequential, steps) for _ in range(runs)))
    await asyncio.gather(*(h.result(timeout=600) for h in handles))
    return time.perf_counter() - start


async def best_of(repeat: int, body: Callable[[], Awaitable[float]]) -> float:
    """The best of ``repeat`` samples, after one warm-up (the database files grow
    to their working size then, as they have in any data directory in use)."""
    await body()
    return min([await body() for _ in range(repeat)])


async def main(quick: bool) -> None:
    repeat = 1 if quick else 5
    root = Path(tempfile.mkdtemp(prefix="worldflow-bench-"))
    counter = iter(range(1_000_000))

    def world() -> LocalWorld:
        return LocalWorld(root / f"w{next(counter)}", serve_webhooks=False)

    print(f"worldflow local world benchmark - Python {sys.version.split()[0]}, data in {root}")
    print(
        "durability: SQLite WAL, synchronous=NORMAL (survives kill -9; power loss may drop the last commits)\n"
    )

    floor = statistics.median(wal_commit_floor(root, 5000) for _ in range(3))
    print(f"bare WAL commit (floor)            {floor * 1e6:8.1f} us/commit")

    seq = {}
    for n in (100, 1000):
        async with wf.worker(world()):
            seq[n] = await best_of(repeat, lambda n=n: one_run(sequential, n))
        per_step = seq[n] / n
        print(
            f"sequential, N={n:<5}              {per_step * 1e6:8.1f} us/step   "
            f"{n / seq[n]:9,.0f} steps/s   {per_step / floor:5.1f} x floor"
        )
    print(f"time(1000) / time(100)             {seq[1000] / seq[100]:8.2f}        (linear = 10)")

    # What one step costs the store: write transactions and queue messages.
    counted = world()
    async with wf.worker(counted):
        commits, queued = counted.store.commits, counted.store.messages_queued
        await one_run(sequential, 1000)
        commits = counted.store.commits - commits
        queued = counted.store.messages_queued - queued
    print(
        f"store cost, N=1000                 {commits / 1000:8.2f} transactions/step "
        f"{queued / 1000:5.2f} queue messages/step ({commits} and {queued} for the run)"
    )

    runs, steps = 200, 10
    shared = world()
    async with wf.worker(shared):
        elapsed = await best_of(repeat, lambda: many_runs(runs, steps))
        commits = shared.store.commits
        await many_runs(runs, steps)
        commits = shared.store.commits - commits
    print(
        f"{runs} runs x {steps} steps at once        {runs * steps / elapsed:8,.0f} steps/s  "
        f"({elapsed * 1000:.0f} ms in all)"
    )
    print(
        f"store cost, {runs} x {steps}                 {commits / (runs * steps):8.2f} transactions/step "
        "(commits of many runs grouped, run starts included)"
    )

    n, size = 100, 10_000
    async with wf.worker(world()):
        elapsed = await best_of(repeat, lambda: one_run(payload_steps, n, size))
    noop = seq[1000] / 1000
    print(
        f"sequential, 10 KB payload, N={n}    {elapsed / n * 1e6:8.1f} us/step   "
        f"{elapsed / n / noop:5.2f} x a no-op step (target <= 1.5)"
    )
    # The floor under that: the same commit writing two 10 KB rows (a step's input
    # and its output are both in the log) instead of one small one.
    big = statistics.median(wal_commit_floor(root, 2000, rows=("x" * size,) * 2) for _ in range(3))
    print(
        f"bare WAL commit of 2 x 10 KB rows  {big * 1e6:8.1f} us/commit  {big / floor:5.1f} x floor"
    )

    print(
        "\nreference points on these machines: DBOS/SQLite 850 us/step and 750 steps/s on 200x10;"
    )
    print(
        "Restate 1.5 ms/step and 2,600 steps/s; targets: <= 100 us/step, ratio <= 11, >= 10,000 steps/s"
    )


def enable_tracing() -> None:
    from collections.abc import Sequence

    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    print("OpenTelemetry on: SDK tracer provider, batch processor, spans dropped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one sample per figure")
    parser.add_argument("--otel", action="store_true", help="with OpenTelemetry tracing on")
    options = parser.parse_args()
    if options.otel:
        enable_tracing()
    asyncio.run(main(options.quick))
