"""The local world's store failing under it: another process holding SQLite's lock,
and a disk that fills up. Writes are retried (with a backoff) or fail with an error
that names the database; no run is corrupted, stuck for good, or loses a step.

(The postgres world's faults, a connection terminated mid-transaction and a
server restart, are in tests/worlds/test_postgres_crash.py.)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.worlds.local import LocalWorld

pytestmark = pytest.mark.slow


@wf.step
async def pad(i: int) -> str:
    return "x" * 2000


@wf.workflow
async def fill(n: int) -> int:
    total = 0
    for i in range(n):
        total += len(await pad(i))
    return total


HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


def test_a_lock_held_by_another_process_delays_and_loses_nothing(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock for 1.5 s in the middle of the runs:
    the writes wait for it (retried while locked) and every run completes."""

    async def main() -> list[int]:
        async with wf.worker(LocalWorld(tmp_path)):
            first = await wf.start(fill, 2)
            await first.result(timeout=10)  # the database exists, with its tables
            holder = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                HOLD,
                str(tmp_path / "worldflow.sqlite3"),
                "1.5",
                stdout=subprocess.PIPE,
            )
            assert holder.stdout is not None
            assert await holder.stdout.readline() == b"held\n"
            began = time.monotonic()
            try:
                runs = [await wf.start(fill, 5) for _ in range(4)]
                results = [await run.result(timeout=30) for run in runs]
            finally:
                await holder.wait()
            assert time.monotonic() - began >= 1.0  # they did wait for the lock
            return results

    assert asyncio.run(main()) == [5 * 2000] * 4


FLOWS = """
import worldflow as wf

@wf.step
async def pad(i: int) -> str:
    return "x" * 2000

@wf.workflow
async def fill(n: int) -> int:
    total = 0
    for i in range(n):
        total += len(await pad(i))
    return total
"""

FINISH = """
import asyncio, json, sys
import worldflow as wf
from worldflow.worlds.local import LocalWorld
sys.path.insert(0, sys.argv[2])
import fillflows

async def main():
    results = []
    async with wf.worker(LocalWorld(sys.argv[1])):
        for i in range(12):
            run = wf.get_run(f"fill-{i}")
            try:
                results.append(await run.result(timeout=60))
            except wf.RunNotFound:
                results.append("never started")  # its start failed, and said so
                continue
            done = [e.data["cid"] for e in await run.events() if e.kind == "step_completed"]
            assert sorted(done) == sorted(set(done)), "a step recorded twice"
    print(json.dumps(results))

asyncio.run(main())
"""

WORKER = """
import asyncio, logging, resource, signal, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
import worldflow as wf
from worldflow.worlds.local import LocalWorld
sys.path.insert(0, sys.argv[3])
from fillflows import fill

async def main():
    async with wf.worker(LocalWorld(sys.argv[1])):
        for i in range(12):
            try:
                await wf.start(fill, 40, id=f"fill-{i}")
            except wf.WorldError as exc:
                print("start failed:", exc, flush=True)
        await asyncio.sleep(6)

asyncio.run(main())
"""


def test_a_full_disk_stalls_runs_loudly_and_they_finish_once_there_is_room(
    tmp_path: Path,
) -> None:
    """A worker whose files may not grow past 1.5 MB (RLIMIT_FSIZE: what a full disk
    does to SQLite's writes): its writes fail and are retried with a backoff, each
    failure logged naming the database; the database stays intact, and a worker with
    room finishes every run, each step recorded once."""
    data = tmp_path / "data"
    (tmp_path / "fillflows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "finish.py").write_text(textwrap.dedent(FINISH))
    done = subprocess.run(
        [sys.executable, str(tmp_path / "worker.py"), str(data), "1500000", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stderr + done.stdout
    assert "local world database" in log and "worldflow.sqlite3" in log
    assert "failed; retrying in" in log  # the appends were retried with a backoff
    assert max(p.stat().st_size for p in data.iterdir()) <= 1_500_000  # the limit held
    with sqlite3.connect(data / "worldflow.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    finished = subprocess.run(
        [sys.executable, str(tmp_path / "finish.py"), str(data), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    results = json.loads(finished.stdout.splitlines()[-1])
    started = [r for r in results if r != "never started"]
    assert started and all(r == 40 * 2000 for r in started), results
    assert len(results) - len(started) == done.stdout.count("start failed:")
