"""kill -9 the worker whose step is writing a stream, while a reader in another process
reads it: the reader reconnects from the last index it had, a second worker runs the
step again (attempt 2), and the reader ends with every chunk exactly once, in order.

On the local world (SQLite) and the postgres world: real worker processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow._api import client
from worldflow.world import World

pytestmark = [pytest.mark.crash, pytest.mark.slow]

N = 60

FLOWS = f"""
import asyncio
import worldflow as wf
from worldflow._api import client

@wf.step(retry_delay=0)
async def tokens():
    out = wf.get_writable("tokens")
    for i in range({N}):
        out.write(f"tok-{{i}}")
        await asyncio.sleep(0.03)
    return {N}

@wf.workflow
async def generate():
    return await tokens()
"""

RUNNER = """
import asyncio, os, sys
import worldflow as wf
from worldflow._api import client
import streamflows

def world(target):
    if target.startswith("postgresql://"):
        from worldflow.worlds.postgres import PostgresWorld
        return PostgresWorld(target, schema=os.environ["STREAM_SCHEMA"], heartbeat=0.1, lease=0.6)
    from worldflow.worlds.local import LocalWorld
    return LocalWorld(target, heartbeat=0.1, lease=0.6)

async def main():
    target, action = sys.argv[1], sys.argv[2]
    async with wf.worker(world(target)):
        if action == "start":
            await wf.start(streamflows.generate, id="stream-run")
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


class Scene:
    def __init__(self, tmp_path: Path, target: str, make_world: Callable[[], World]) -> None:
        self.dir = tmp_path
        self.target = target
        self.make_world = make_world
        self.schema = ""
        (tmp_path / "streamflows.py").write_text(textwrap.dedent(FLOWS))
        (tmp_path / "runner.py").write_text(textwrap.dedent(RUNNER))
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, action: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(self.dir), "STREAM_SCHEMA": self.schema}
        proc = subprocess.Popen(
            [sys.executable, str(self.dir / "runner.py"), self.target, action],
            env=env,
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.stderr.read() if proc.stderr else b"")
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


async def _reconnecting_read(scene: Scene) -> tuple[list[Any], int]:
    """Read as a client process would: kill the writer's worker after 10 chunks, drop the
    connection, start a second worker, and read on from where it was."""
    got: list[Any] = []
    reconnects = 0
    async with client(scene.make_world()):
        run = wf.get_run("stream-run")
        killed = False
        async with asyncio.timeout(60):
            while True:
                before = len(got)
                async for chunk in run.stream("tokens", start=len(got)):
                    got.append(chunk)
                    if len(got) >= 10 and not killed:
                        scene.procs[0].send_signal(signal.SIGKILL)
                        scene.procs[0].wait(10)
                        killed = True
                        break  # the connection drops with the writer
                else:
                    if await run.status() == "completed":
                        break
                reconnects += 1
                if killed and len(scene.procs) == 1:
                    await asyncio.to_thread(scene.worker, "serve")
                if len(got) == before:
                    await asyncio.sleep(0.05)
        assert await run.result(timeout=30) == N
        attempts = [e.data["attempt"] for e in await run.events() if e.kind == "step_started"]
    return got, max(attempts)


def _check(scene: Scene) -> None:
    scene.worker("start")
    got, attempts = asyncio.run(_reconnecting_read(scene))
    assert got == [f"tok-{i}" for i in range(N)]  # every chunk once, in order
    assert attempts == 2  # the killed attempt was run again, and its repeats dropped


@pytest.fixture
def local_scene(tmp_path: Path) -> Iterator[Scene]:
    from worldflow.worlds.local import LocalWorld

    data = tmp_path / "data"
    scene = Scene(tmp_path, str(data), lambda: LocalWorld(data))
    yield scene
    scene.close()


def test_local_reader_reconnects_after_its_writer_was_killed(local_scene: Scene) -> None:
    _check(local_scene)


@pytest.fixture
def postgres_scene(tmp_path: Path) -> Iterator[Scene]:
    pytest.importorskip("psycopg")
    from worldflow.worlds.postgres import PostgresWorld
    from worldflow.worlds.postgres.testing import fresh_database

    with fresh_database() as url:
        scene = Scene(tmp_path, url, lambda: PostgresWorld(url, schema="streams"))
        scene.schema = "streams"
        yield scene
        scene.close()


def test_postgres_reader_reconnects_after_its_writer_was_killed(postgres_scene: Scene) -> None:
    _check(postgres_scene)
