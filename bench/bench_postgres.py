"""Benchmark the postgres world against a bare commit on the same server (prints figures).

    python bench/bench_postgres.py [--quick]

Runs against the server of ``WORLDFLOW_POSTGRES_TEST_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), in a database of its own
made for the run and dropped afterwards. The server's own durability settings
apply (``synchronous_commit``, ``fsync``: printed first).

Figures, measured side by side in one run, each the median of its samples:

- the **floor**: one INSERT of an event-sized row and its COMMIT on one
  connection, through psycopg's blocking API and through its asyncio API (what
  the world uses);
- one run of N sequential no-op steps (N = 100, 1,000), per step, and
  time(1,000) / time(100);
- 200 runs x 10 steps started at once in one process;
- the time from ``wf.start`` to a one-step run's result, with the serving
  process claiming its own start message as it inserts it, and without (the
  message then goes through the table and a notification);
- 1, 2 and 4 worker processes sharing 1,000 runs x 10 steps that a client
  process starts, and how many steps were executed twice (each worker counts
  the steps it executed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

import worldflow as wf
from worldflow.worlds.postgres import PostgresWorld
from worldflow.worlds.postgres.testing import fresh_database, server_url


@wf.step
async def noop(i: int) -> int:
    return i


@wf.workflow(name="bench.sequential")
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


ROW = ("wrun_01m8xkvpv48ty58b85dwv9kk65", "step_completed", 1.7e9, '{"cid":1,"output":1}')


def floor_sync(url: str, n: int) -> float:
    """Seconds per bare commit: an autocommit INSERT of one event-sized row (blocking API)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE floor")
        start = time.perf_counter()
        for i in range(n):
            conn.execute(
                "INSERT INTO floor (run_id, seq, kind, at, data) VALUES (%s, %s, %s, %s, %s)",
                (ROW[0], i, *ROW[1:]),
            )
        return (time.perf_counter() - start) / n


async def floor_async(url: str, n: int) -> float:
    """The same through psycopg's asyncio API, on this event loop."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await conn.execute("TRUNCATE floor")
        start = time.perf_counter()
        for i in range(n):
            await conn.execute(
                "INSERT INTO floor (run_id, seq, kind, at, data) VALUES (%s, %s, %s, %s, %s)",
                (ROW[0], i, *ROW[1:]),
            )
        return (time.perf_counter() - start) / n
    finally:
        await conn.close()


async def one_run(workflow: Any, *args: object) -> float:
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


def median(samples: list[float]) -> float:
    return statistics.median(samples)


async def in_process(url: str, repeat: int) -> None:
    world = PostgresWorld(url, schema="bench", serve_webhooks=False)
    store = world.store
    async with wf.worker(world):
        await one_run(sequential, 200)  # warm: connections, prepared statements
        floors_s: list[float] = []
        floors_a: list[float] = []
        seq: dict[int, list[float]] = {100: [], 1000: []}
        for _ in range(repeat):  # interleaved, so that the disk's mood affects all alike
            floors_s.append(await asyncio.to_thread(floor_sync, url, 500))
            floors_a.append(await floor_async(url, 500))
            for n in seq:
                seq[n].append(await one_run(sequential, n) / n)
        fs, fa = median(floors_s), median(floors_a)
        print(f"bare commit, psycopg blocking     {fs * 1e6:8.0f} us/commit   (the floor)")
        print(f"bare commit, psycopg asyncio      {fa * 1e6:8.0f} us/commit")
        for n, samples in seq.items():
            per = median(samples)
            print(
                f"sequential no-op step, N={n:<5}   {per * 1e6:8.0f} us/step     "
                f"{per / fs:4.2f} x floor  {per / fa:4.2f} x asyncio commit  "
                f"(target <= 500 us, <= 1.6 x floor)"
            )
        growth = median(seq[1000]) * 1000 / (median(seq[100]) * 100)
        print(
            f"time(1,000) / time(100)           {growth:8.2f}          (target <= 11; linear = 10)"
        )
        writes = store.writes
        await one_run(sequential, 1000)
        print(f"store writes per step, N=1000     {(store.writes - writes) / 1000:8.3f}")

        runs, steps = 200, 10
        await many_runs(runs, steps)
        samples = [await many_runs(runs, steps) for _ in range(repeat)]
        writes = store.writes
        await many_runs(runs, steps)
        per_step = (store.writes - writes) / (runs * steps)
        best, typical = min(samples), median(samples)
        print(
            f"{runs} runs x {steps} steps at once      {runs * steps / typical:8,.0f} steps/s "
            f"(median; best {runs * steps / best:,.0f}; target >= 5,000)  "
            f"{per_step:.3f} writes/step"
        )

        for claim_own in (True, False):
            store.claim_own = claim_own
            latencies = [await one_run(sequential, 1) for _ in range(30 * repeat)]
            how = "claimed as inserted" if claim_own else "through the table  "
            print(f"start to result, 1 step, {how} {median(latencies) * 1e3:6.2f} ms")
        store.claim_own = True


WORKER = """
import asyncio, os, signal, sys
import worldflow as wf
from worldflow.worlds.postgres import PostgresWorld

DONE = []

@wf.step
async def noop(run, i):
    DONE.append(f"{run}:{i}")
    return i

@wf.workflow(name="bench.shared")
async def shared(run, n):
    total = 0
    for i in range(n):
        total += await noop(run, i)
    return total

async def main():
    url, out = sys.argv[1], sys.argv[2]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    world = PostgresWorld(url, schema="shared", serve_webhooks=False)
    async with wf.worker(world):
        print("ready", flush=True)
        await stop.wait()
    with open(out, "w") as fh:
        fh.write("\\n".join(DONE))

asyncio.run(main())
"""


def workers_share(url: str, processes: int, runs: int, steps: int, folder: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS shared CASCADE")
    asyncio.run(PostgresWorld(url, schema="shared", serve_webhooks=False).close())
    script = folder / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    outs = [folder / f"done-{processes}-{i}.txt" for i in range(processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(out)], stdout=subprocess.PIPE, text=True
        )
        for out in outs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        elapsed = asyncio.run(_start_and_wait(url, runs, steps))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    executed = Counter(line for out in outs for line in out.read_text().split("\n") if line)
    twice = sum(1 for count in executed.values() if count > 1)
    share = ", ".join(str(sum(1 for _ in out.read_text().split("\n") if _)) for out in outs)
    print(
        f"{processes} worker process(es), {runs} runs x {steps}  {runs * steps / elapsed:8,.0f} steps/s  "
        f"({elapsed:.2f} s; steps per worker: {share}; executed twice: {twice})"
    )


async def _start_and_wait(url: str, runs: int, steps: int) -> float:
    from worldflow._runtime import Runtime

    client = Runtime(PostgresWorld(url, schema="shared", serve_webhooks=False), serve=False)
    await client.start()
    start = time.perf_counter()
    await asyncio.gather(
        *(client.start_run("bench.shared", (f"r{i}", steps), {}, None) for i in range(runs))
    )
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        while True:
            cur = await conn.execute("SELECT count(*) FROM shared.runs WHERE status = 'completed'")
            row = await cur.fetchone()
            if row is not None and row[0] >= runs:
                break
            await asyncio.sleep(0.01)
        return time.perf_counter() - start
    finally:
        await conn.close()
        await client.close()


def main(quick: bool) -> None:
    repeat = 3 if quick else 7
    with fresh_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE floor (run_id text, seq int, kind text, at float8, data text, "
                "PRIMARY KEY (run_id, seq))"
            )
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            }
        print(
            f"worldflow postgres world benchmark - Python {sys.version.split()[0]}, "
            f"psycopg {psycopg.__version__}, server {server_url().split('@')[-1]}, "
            f"{os.cpu_count()} CPUs"
        )
        print("server: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n")
        asyncio.run(in_process(url, repeat))
        print()
        with tempfile.TemporaryDirectory() as folder:
            for processes in (1, 2, 4):
                workers_share(url, processes, 1000, 10, Path(folder))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples per figure")
    main(parser.parse_args().quick)
