"""Worker processes sharing one PostgreSQL database, killed and restarted, and the database
itself failing under them: connections terminated mid-transaction, the server restarted.

Each scenario checks that every run completes, that no step whose result was recorded
before a kill ran again afterwards (a step cut short runs again: that is
at-least-once), and that every step has exactly one result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import worldflow as wf
from worldflow._runtime import Runtime
from worldflow.testing import wait_for_hook
from worldflow.worlds.postgres import PostgresWorld
from worldflow.worlds.postgres.testing import sql

pytestmark = [pytest.mark.crash, pytest.mark.slow]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.005)


def world(url: str, schema: str, **options: Any) -> PostgresWorld:
    options.setdefault("serve_webhooks", False)
    return PostgresWorld(url, schema=schema, heartbeat=0.2, lease=1.0, **options)


def _env(database: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env.update(
        WORLDFLOW_WORLD="postgres",
        WORLDFLOW_POSTGRES_URL=database,
        WORLDFLOW_POSTGRES_SCHEMA=schema,
    )
    return env


@wf.workflow(name="pg.crash.wait")
async def waiting(token: str) -> Any:
    return await wf.create_hook(token=token)


# -- worker processes sharing one database, some of them killed ------------------------------

FLOWS = """
import asyncio, os, time
import worldflow as wf

LOG = os.environ["CRASH_LOG"]

def mark(text):
    with open(LOG, "a") as fh:
        fh.write(text + "\\n")
        fh.flush()
        os.fsync(fh.fileno())

@wf.step
async def fast(name):
    mark(f"run {name} {wf.get_step_metadata().attempt} {os.getpid()}")
    return name

@wf.step
def slow(name):
    mark(f"run {name} {wf.get_step_metadata().attempt} {os.getpid()}")
    while not os.path.exists(LOG + ".go"):
        time.sleep(0.02)
    return name + "!"

@wf.workflow
async def mid_step():
    a = await fast("one")
    b = await slow("two")
    c = await fast("three")
    return [a, b, c]

@wf.workflow
async def mid_sleep():
    a = await fast("one")
    await wf.sleep("1.5s")
    b = await fast("two")
    return [a, b]

@wf.workflow
async def mid_hook():
    a = await fast("one")
    payload = await wf.create_hook(token="crash-hook")
    b = await fast("two")
    return [a, payload, b]

@wf.step(max_retries=20, retry_delay=0.05)
async def work(run, i):
    await asyncio.sleep(0.1)
    mark(f"work {run}:{i} {wf.get_step_metadata().attempt} {os.getpid()}")
    return i

@wf.workflow
async def many(run):
    total = 0
    for i in range(6):
        total += await work(run, i)
    await wf.sleep(0.2)
    parts = await asyncio.gather(*(work(run, 10 + i) for i in range(3)))
    return total + sum(parts)
"""

RUNNER = """
import asyncio, sys
import worldflow as wf
from worldflow.worlds.postgres import PostgresWorld
import crashflows

async def main():
    url, schema, action = sys.argv[1:4]
    world = PostgresWorld(url, schema=schema, heartbeat=0.1, lease=0.6, poll_interval=0.2,
                          serve_webhooks=False)
    async with wf.worker(world):
        if action.startswith("start:"):
            await wf.start(getattr(crashflows, action[6:]), id="crash-run")
        elif action.startswith("resume:"):
            await wf.resume_hook(action[7:], "payload")
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


class Scene:
    """Worker processes on one schema, a log of the steps they executed."""

    def __init__(self, tmp_path: Path, url: str, schema: str) -> None:
        self.dir = tmp_path
        self.url = url
        self.schema = schema
        self.log = tmp_path / "steps.log"
        (tmp_path / "crashflows.py").write_text(textwrap.dedent(FLOWS))
        (tmp_path / "runner.py").write_text(textwrap.dedent(RUNNER))
        self.procs: list[subprocess.Popen[bytes]] = []
        run(world(url, schema).close())  # the schema exists before the workers race

    def worker(self, action: str = "serve") -> subprocess.Popen[bytes]:
        env = {**os.environ, "CRASH_LOG": str(self.log), "PYTHONPATH": str(self.dir)}
        proc = subprocess.Popen(
            [sys.executable, str(self.dir / "runner.py"), self.url, self.schema, action],
            env=env,
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def query(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        return sql(self.url, statement.replace("{s}", self.schema), *args)

    def events(self, run_id: str = "crash-run") -> list[tuple[str, dict[str, Any]]]:
        rows = self.query(
            "SELECT kind, data FROM {s}.events WHERE run_id = %s ORDER BY seq", run_id
        )
        return [(kind, json.loads(data)) for kind, data in rows]

    def executions(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait(self, what: str, check: Callable[[], object], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                errors = b"".join(
                    p.stderr.read() or b"" for p in self.procs if p.poll() is not None and p.stderr
                )
                raise AssertionError(f"timed out waiting for {what}; {self.events()}; {errors!r}")
            time.sleep(0.02)

    def has_event(self, kind: str) -> Callable[[], bool]:
        return lambda: any(k == kind for k, _ in self.events())

    def completed_steps(self) -> set[str]:
        scheduled = {d["cid"]: d for k, d in self.events() if k == "step_scheduled"}
        done = [d["cid"] for k, d in self.events() if k == "step_completed"]
        return {scheduled[cid]["input"][0][0] for cid in done}

    def finished(self) -> bool:
        rows = self.query("SELECT status FROM {s}.runs WHERE id = 'crash-run'")
        return rows == [("completed",)]

    def result(self) -> Any:
        ((status, output),) = self.query(
            "SELECT status, output FROM {s}.runs WHERE id = 'crash-run'"
        )
        assert status == "completed", (status, self.events())
        return json.loads(output)

    def no_rerun(self, recorded: set[str]) -> None:
        names = [line.split()[1] for line in self.executions() if line.startswith("run ")]
        for name in recorded:
            assert names.count(name) == 1, f"step {name!r} ran again after it was recorded: {names}"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def scene(tmp_path: Path, database: str, schema: str) -> Iterator[Scene]:
    s = Scene(tmp_path, database, schema)
    yield s
    s.close()


def test_kill_a_worker_mid_step_and_another_one_finishes_the_run(scene: Scene) -> None:
    others = [scene.worker(), scene.worker()]
    first = scene.worker("start:mid_step")
    scene.wait(
        "step two to start", lambda: any(x.startswith("run two 1") for x in scene.executions())
    )
    scene.kill(first)
    recorded = scene.completed_steps()
    assert recorded == {"one"}
    scene.log.with_suffix(".log.go").touch()  # let the re-run of step two finish
    scene.wait("the run to finish", scene.finished)
    assert scene.result() == ["one", "two!", "three"]
    scene.no_rerun(recorded)
    started = [d for k, d in scene.events() if k == "step_started" and d["cid"] == 2]
    assert [d["attempt"] for d in started] == [1, 2]  # the lost attempt counted
    assert started[0]["worker"] != started[1]["worker"]
    assert all(p.poll() is None for p in others)


def test_kill_a_worker_mid_sleep_and_the_timer_fires_elsewhere(scene: Scene) -> None:
    scene.worker()
    first = scene.worker("start:mid_sleep")
    scene.wait("the sleep to start", scene.has_event("sleep_started"))
    scene.kill(first)
    recorded = scene.completed_steps()
    assert recorded == {"one"}
    scene.wait("the run to finish", scene.finished)
    assert scene.result() == ["one", "two"]
    scene.no_rerun(recorded)
    assert [k for k, _ in scene.events()].count("sleep_fired") == 1


def test_kill_a_worker_mid_hook_wait_and_a_payload_sent_elsewhere_finishes_it(
    scene: Scene,
) -> None:
    scene.worker()
    first = scene.worker("start:mid_hook")
    scene.wait("the hook to be created", scene.has_event("hook_created"))
    scene.kill(first)
    recorded = scene.completed_steps()
    scene.worker("resume:crash-hook")
    scene.wait("the run to finish", scene.finished)
    assert scene.result() == ["one", "payload", "two"]
    scene.no_rerun(recorded)


def test_runs_shared_by_three_workers_survive_one_killed_every_400ms(
    scene: Scene,
) -> None:
    workers = [scene.worker() for _ in range(3)]
    for proc in workers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

    async def start_all() -> list[str]:
        ids = []
        rt = Runtime(world(scene.url, scene.schema), serve=False)  # a client: serves nothing
        await rt.start()
        for i in range(40):
            ids.append(await rt.start_run("crashflows.many", (f"r{i}",), {}, f"many-{i}"))
        await rt.close()
        return ids

    ids = run(start_all())

    def completed() -> int:
        return int(scene.query("SELECT count(*) FROM {s}.runs WHERE status = 'completed'")[0][0])

    under_way = []
    for kill in range(6):  # a run takes about a second: most runs see a kill
        time.sleep(0.4)
        under_way.append(len(ids) - completed())
        scene.kill(workers[kill % 3])
        workers[kill % 3] = scene.worker()
    assert under_way[0] == len(ids) and under_way[2] > 0  # the kills came mid-run
    scene.wait("every run to complete", lambda: completed() == len(ids), 60)
    expected = sum(range(6)) + sum(10 + i for i in range(3))
    for run_id in ids:
        events = [
            (k, json.loads(d))
            for k, d in scene.query(
                "SELECT kind, data FROM {s}.events WHERE run_id = %s ORDER BY seq", run_id
            )
        ]
        kinds = [k for k, _ in events]
        assert kinds.count("run_completed") == 1 and events[-1][1]["output"] == expected
        completed = [d["cid"] for k, d in events if k == "step_completed"]
        assert len(completed) == len(set(completed)) == 9  # one result per step


# -- connections dropped, a server restarted ----------------------------------------------------


@wf.step
async def pause(i: int) -> int:
    await asyncio.sleep(0.02)
    return i


@wf.workflow(name="pg.crash.paced")
async def paced(n: int) -> int:
    total = 0
    for i in range(n):
        total += await pause(i)
    await wf.sleep(0.1)
    return total


def _terminate_worldflow_backends(url: str) -> int:
    rows = sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'worldflow' "
        "AND pid <> pg_backend_pid()",
    )
    return len(rows)


async def _results(handles: list[wf.Run[Any]], timeout: float) -> list[Any]:
    """The runs' results, riding out errors of a database that is away for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return [await h.result(timeout=5) for h in handles]
        except (wf.WorldError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_connections_terminated_mid_transaction_lose_nothing(database: str, schema: str) -> None:
    async def main() -> None:
        w = world(database, schema, poll_interval=0.2)
        async with wf.worker(w):
            handles = [await wf.start(paced, 25) for _ in range(20)]
            killed = 0
            for _ in range(10):
                await asyncio.sleep(0.1)
                killed += await asyncio.to_thread(_terminate_worldflow_backends, database)
            assert killed >= 10
            assert await _results(handles, 60) == [sum(range(25))] * 20
            for h in handles:
                events = await h.events()
                kinds = [e.kind for e in events]
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                assert kinds.count("step_completed") == 25 and kinds[-1] == "run_completed"
            # It reconnected: a run started now runs at once.
            assert await (await wf.start(paced, 2)).result(timeout=10) == 1

    run(main(), 120)


class PrivateServer:
    """A PostgreSQL cluster of this test's own (initdb in a temporary folder), so that it
    can be restarted without disturbing anything else on the machine's server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        bindir = Path(
            subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        )
        self.pg_ctl = str(bindir / "pg_ctl")
        self.initdb = str(bindir / "initdb")

    def _as_postgres(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._as_postgres(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )

    def restart(self) -> None:
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(0.5)  # away for a moment
        self.start()

    def __enter__(self) -> PrivateServer:
        if os.geteuid() == 0:
            os.chown(self.folder, *_postgres_ids())
        self._as_postgres(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    import shutil

    if shutil.which("pg_config") is None:
        pytest.skip("pg_config is not on PATH: no initdb to make a private server with")
    if os.geteuid() == 0:
        try:
            _postgres_ids()
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run a private server")
    folder = Path(tempfile.mkdtemp(prefix="wf-pg-"))
    try:
        with PrivateServer(folder) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_server_restart_while_workers_run_loses_nothing(private_server: PrivateServer) -> None:
    async def main() -> None:
        w = PostgresWorld(
            private_server.url, heartbeat=0.2, lease=1.0, poll_interval=30, serve_webhooks=False
        )
        async with wf.worker(w):
            handles = [await wf.start(paced, 30) for _ in range(10)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(private_server.restart)
            assert await _results(handles, 60) == [sum(range(30))] * 10
            for h in handles:
                kinds = [e.kind for e in await h.events()]
                assert kinds.count("step_completed") == 30 and kinds.count("run_completed") == 1
            # The listener is back: a payload sent by a client wakes this worker at once
            # (its poll is 30 s).
            hook = await wf.start(waiting, "after-restart")
            # (Reconnecting after the restart can take a while on a loaded machine; the
            # proof is that it happens well before the 30 s poll would.)
            await until(lambda: w.queue.notifications > 0, 20)
            await wait_for_hook(hook, "after-restart", timeout=20)  # else resume finds none
            client = Runtime(PostgresWorld(private_server.url, serve_webhooks=False), serve=False)
            await client.start()
            sent = time.monotonic()
            await client.resume_hook("after-restart", "ok")
            assert await hook.result(timeout=5) == "ok"
            assert time.monotonic() - sent < 2
            await client.close()

    run(main(), 120)


def test_worldflow_worker_drains_on_sigterm_and_another_worker_goes_on(scene: Scene) -> None:
    env = {
        **_env(scene.url, scene.schema),
        "CRASH_LOG": str(scene.log),
        "PYTHONPATH": str(scene.dir),
        "WORLDFLOW_POSTGRES_HEARTBEAT": "0.1",
        "WORLDFLOW_POSTGRES_LEASE": "0.6",
        "WORLDFLOW_POSTGRES_POLL_INTERVAL": "0.2",
        "WORLDFLOW_POSTGRES_WEBHOOK_PORT": "off",
    }
    cli = [sys.executable, "-m", "worldflow", "worker", "crashflows", "--grace", "10s"]
    first = subprocess.Popen(cli, cwd=scene.dir, env=env, stderr=subprocess.PIPE)
    scene.procs.append(first)  # type: ignore[arg-type]

    async def start() -> None:
        client = Runtime(world(scene.url, scene.schema), serve=False)
        await client.start()
        await client.start_run("crashflows.mid_step", (), {}, "crash-run")
        await client.close()

    run(start())
    scene.wait(
        "step two to start", lambda: any(x.startswith("run two 1") for x in scene.executions())
    )
    first.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    scene.log.with_suffix(".log.go").touch()  # step two may finish within the grace
    assert first.wait(20) == 0
    # Step two's result was recorded by the draining worker: nobody runs it again.
    assert "two" in scene.completed_steps()
    second = subprocess.Popen(cli, cwd=scene.dir, env=env, stderr=subprocess.PIPE)
    scene.procs.append(second)  # type: ignore[arg-type]
    scene.wait("the run to finish", scene.finished)
    assert scene.result() == ["one", "two!", "three"]
    scene.no_rerun({"one", "two"})
