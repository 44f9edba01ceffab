"""A killed local worker is known dead at once (its lock file), not after its lease.

The figures are in bench/bench_recovery.py; these tests check the mechanism:
a worker holds ``flock`` on its own file while it lives, a free lock voids its
heartbeat, and a new worker adopts a killed worker's run in well under the
lease (which still decides for what a lock cannot tell).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.worlds.local import LocalWorld
from worldflow.worlds.local._liveness import WorkerLocks
from worldflow.worlds.local._store import Store

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def hold_in_another_process(
    path: Path, procs: list[subprocess.Popen[str]]
) -> subprocess.Popen[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_lock_tells_alive_dead_or_cannot_tell(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    locks = WorkerLocks(tmp_path / "db.workers")
    assert locks.alive("w-nobody") is None  # no lock file: the lease decides
    holder = hold_in_another_process(tmp_path / "db.workers" / "w-other.lock", procs)
    assert locks.alive("w-other") is True
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert locks.alive("w-other") is False
    locks.hold("w-me")
    assert locks.alive("w-me") is True
    assert WorkerLocks(tmp_path / "db.workers").alive("w-me") is True  # another open file
    locks.release()
    assert not (tmp_path / "db.workers" / "w-me.lock").exists()
    assert WorkerLocks(None).alive("w-other") is None  # in memory: cannot tell


def test_a_worker_id_that_is_not_a_file_name_cannot_be_told(tmp_path: Path) -> None:
    locks = WorkerLocks(tmp_path / "db.workers")
    (tmp_path / "secret.lock").write_text("")
    assert locks.alive("../secret") is None
    with pytest.raises(ValueError, match="worker id"):
        locks.hold("../secret")


def test_a_free_lock_voids_a_heartbeat_everywhere(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    asyncio.run(_free_lock_voids_a_heartbeat(tmp_path, procs))


async def _free_lock_voids_a_heartbeat(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    store = Store(str(tmp_path / "db.sqlite3"), "w-me", wf.SystemClock())
    try:
        until = time.time() + 60
        await store.heartbeat("w-me", until)
        assert (tmp_path / "db.sqlite3.workers" / "w-me.lock").exists()
        holder = hold_in_another_process(tmp_path / "db.sqlite3.workers" / "w-gone.lock", procs)
        await store.heartbeat("w-gone", until)  # as the other worker wrote it
        await store.heartbeat("w-hung", until)  # no lock file: cannot tell
        assert await store.expiry("w-gone") == until
        assert store.live_workers() == ["w-gone", "w-hung", "w-me"]

        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert store.live_workers() == ["w-hung", "w-me"]
        assert await store.expiry("w-gone") == 0.0
        assert await store.expired(time.time(), 10) == ["w-gone"]  # the sweeper's view
        assert not (tmp_path / "db.sqlite3.workers" / "w-gone.lock").exists()
        assert await store.expiry("w-hung") == until  # left to its lease

        await store.heartbeat("w-me", time.time() - 1)  # a clean end gives the lock up
        assert not (tmp_path / "db.sqlite3.workers" / "w-me.lock").exists()
    finally:
        store.close()


def test_expiry_sees_a_death_before_any_rescan(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    asyncio.run(_expiry_sees_a_death(tmp_path, procs))


async def _expiry_sees_a_death(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    store = Store(str(tmp_path / "db.sqlite3"), "w-me", wf.SystemClock())
    try:
        holder = hold_in_another_process(tmp_path / "db.sqlite3.workers" / "w-gone.lock", procs)
        await store.heartbeat("w-gone", time.time() + 60)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert await store.expiry("w-gone") == 0.0
        assert store.live_workers() == []
    finally:
        store.close()


FLOWS = """
import asyncio, os
import worldflow as wf

KILL_AT = 10
MARK = os.environ["RECOVERY_MARK"]

@wf.step
async def count(i):
    with open(MARK + ".log", "a") as fh:
        fh.write(f"{i} {wf.get_step_metadata().attempt}\\n")
    if i == KILL_AT and wf.get_step_metadata().attempt == 1:
        open(MARK, "w").close()
        await asyncio.sleep(600)  # killed here
    return i

@wf.workflow(name="recovery.counting")
async def counting(n):
    total = 0
    for i in range(n):
        total += await count(i)
    return total
"""

RUNNER = """
import asyncio, sys
import worldflow as wf
from worldflow.worlds.local import LocalWorld
import recoveryflows

async def main():
    async with wf.worker(LocalWorld(sys.argv[1], lease=5.0, serve_webhooks=False)):
        await wf.start(recoveryflows.counting, 20, id="killed-run")
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.crash
def test_a_killed_workers_run_is_adopted_well_under_its_lease(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    (tmp_path / "recoveryflows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "runner.py").write_text(textwrap.dedent(RUNNER))
    mark = tmp_path / "killed-here"
    os.environ["RECOVERY_MARK"] = str(mark)  # for this process's copy of the flows too
    sys.path.insert(0, str(tmp_path))
    try:
        proc = subprocess.Popen(
            [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "data")],
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            text=True,
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no step 10"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        import recoveryflows  # type: ignore[import-not-found]  # noqa: F401  # registers it

        async def adopt() -> tuple[object, float]:
            start = time.monotonic()
            async with wf.worker(LocalWorld(tmp_path / "data", lease=5.0, serve_webhooks=False)):
                result = await wf.get_run("killed-run").result(timeout=30)
            return result, time.monotonic() - start

        result, elapsed = asyncio.run(adopt())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("recoveryflows", None)
        os.environ.pop("RECOVERY_MARK", None)
    assert result == sum(range(20))
    # The dead worker's heartbeat held for 4 to 5 s more: waiting it out is >= 3 s.
    assert elapsed < 2.0, f"adopted after {elapsed:.2f} s"
    attempts = (tmp_path / "killed-here.log").read_text().split("\n")[:-1]
    # At least once: only the step cut short ran again, once; the others ran once.
    assert sorted(attempts, key=lambda a: tuple(map(int, a.split()))) == [
        f"{i} 1" for i in range(11)
    ] + ["10 2"] + [f"{i} 1" for i in range(11, 20)]


# -- postgres: a session advisory lock ------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    from worldflow.worlds.postgres.testing import ServerMissing, fresh_database

    try:
        with fresh_database() as url:
            yield url
    except ServerMissing as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


PG_RUNNER = """
import asyncio, sys
import worldflow as wf
from worldflow.worlds.postgres import PostgresWorld
import recoveryflows

async def main():
    world = PostgresWorld(sys.argv[1], schema=sys.argv[2], lease=10.0, heartbeat=2.0,
                          serve_webhooks=False)
    async with wf.worker(world):
        if sys.argv[3] == "start":
            await wf.start(recoveryflows.counting, 20, id="killed-run")
        print("serving", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _pg_worker(
    tmp_path: Path, url: str, schema: str, action: str, procs: list[subprocess.Popen[str]]
) -> subprocess.Popen[str]:
    (tmp_path / "recoveryflows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "pg_runner.py").write_text(textwrap.dedent(PG_RUNNER))
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "pg_runner.py"), url, schema, action],
        env={**os.environ, "PYTHONPATH": str(tmp_path), "RECOVERY_MARK": str(tmp_path / "m")},
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "serving\n"
    return proc


def test_postgres_reaps_a_killed_worker_only(
    tmp_path: Path, database: str, procs: list[subprocess.Popen[str]]
) -> None:
    from worldflow.worlds.postgres import PostgresWorld
    from worldflow.worlds.postgres.testing import sql

    schema = "reap"
    live = _pg_worker(tmp_path, database, schema, "serve", procs)
    killed = _pg_worker(tmp_path, database, schema, "serve", procs)
    ids = [row[0] for row in sql(database, f"SELECT id FROM {schema}.workers ORDER BY id")]
    assert len(ids) == 2
    keys = sql(database, f"SELECT key FROM {schema}.meta WHERE key LIKE 'worker-lock:%'")
    assert sorted(k[0] for k in keys) == [f"worker-lock:{i}" for i in ids]
    # An older worker's heartbeat, with no lock key: only its lease can end it.
    sql(database, f"INSERT INTO {schema}.workers (id, until) VALUES ('old:1:x', %s)", 1e12)
    killed_pid = str(killed.pid)
    gone = next(i for i in ids if f":{killed_pid}:" in i)
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    async def look() -> tuple[list[str], list[str], float | None, float | None]:
        world = PostgresWorld(database, schema=schema, serve_webhooks=False)
        try:
            store = world.store  # type: ignore[attr-defined]
            deadline = time.monotonic() + 5
            while await store.expiry(gone) != 0.0:  # the server ends the session at once
                assert time.monotonic() < deadline, "the killed worker still looks alive"
                await asyncio.sleep(0.05)
            again = await store.reap()
            expired = await store.expired(time.time(), 10)
            alive = next(i for i in ids if i != gone)
            return again, expired, await store.expiry(alive), await store.expiry("old:1:x")
        finally:
            await world.close()

    again, expired, alive_until, old_until = asyncio.run(look())
    assert again == []  # reaped once
    assert expired == [gone]
    assert alive_until is not None and alive_until > time.time()
    assert old_until == 1e12
    assert sql(database, f"SELECT 1 FROM {schema}.meta WHERE key = %s", f"worker-lock:{gone}") == []
    assert live.poll() is None


@pytest.mark.slow
@pytest.mark.crash
def test_postgres_adopts_a_killed_workers_run_well_under_its_lease(
    tmp_path: Path, database: str, procs: list[subprocess.Popen[str]]
) -> None:
    from worldflow.worlds.postgres import PostgresWorld

    schema = "adopt"
    mark = tmp_path / "m"
    proc = _pg_worker(tmp_path, database, schema, "start", procs)
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no step 10"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.environ["RECOVERY_MARK"] = str(mark)
    sys.path.insert(0, str(tmp_path))
    try:
        import recoveryflows  # noqa: F401  # registers the workflow here

        async def adopt() -> tuple[object, float]:
            start = time.monotonic()
            world = PostgresWorld(
                database, schema=schema, lease=10.0, heartbeat=2.0, serve_webhooks=False
            )
            async with wf.worker(world):
                result = await wf.get_run("killed-run").result(timeout=30)
            return result, time.monotonic() - start

        result, elapsed = asyncio.run(adopt())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("recoveryflows", None)
        os.environ.pop("RECOVERY_MARK", None)
    assert result == sum(range(20))
    # Its messages' lease and its heartbeat held for 8 to 10 s more: waiting is >= 7 s.
    assert elapsed < 3.0, f"adopted after {elapsed:.2f} s"
    attempts = (tmp_path / "m.log").read_text().split("\n")[:-1]
    assert sorted(attempts, key=lambda a: tuple(map(int, a.split()))) == [
        f"{i} 1" for i in range(11)
    ] + ["10 2"] + [f"{i} 1" for i in range(11, 20)]
