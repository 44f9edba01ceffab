"""kill -9 a worker mid-step, mid-sleep and mid-hook-wait; a new process finishes the run.

Each scenario runs a real worker process on a data directory, SIGKILLs it at a
chosen point, starts a second worker on the same directory and checks that the
run completes, and that no step whose result was recorded before the kill ran
again afterwards (a step cut short runs again: that is at-least-once).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.crash, pytest.mark.slow]

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
    mark(f"run {name} {wf.get_step_metadata().attempt}")
    return name

@wf.step
def slow(name):
    mark(f"run {name} {wf.get_step_metadata().attempt}")
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
async def mid_webhook():
    a = await fast("one")
    request = await wf.create_webhook()
    return [a, request.json()]

@wf.workflow
async def mid_hook():
    a = await fast("one")
    payload = await wf.create_hook(token="crash-hook")
    b = await fast("two")
    return [a, payload, b]
"""

RUNNER = """
import asyncio, sys
import worldflow as wf
from worldflow.worlds.local import LocalWorld
import crashflows

async def main():
    data, action = sys.argv[1], sys.argv[2]
    async with wf.worker(LocalWorld(data, heartbeat=0.1, lease=0.6)):
        if action.startswith("start:"):
            await wf.start(getattr(crashflows, action[6:]), id="crash-run")
        elif action.startswith("resume:"):
            await wf.resume_hook(action[7:], "payload")
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


class Scene:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.data = tmp_path / "data"
        self.log = tmp_path / "steps.log"
        (tmp_path / "crashflows.py").write_text(textwrap.dedent(FLOWS))
        (tmp_path / "runner.py").write_text(textwrap.dedent(RUNNER))
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, action: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CRASH_LOG": str(self.log), "PYTHONPATH": str(self.dir)}
        proc = subprocess.Popen(
            [sys.executable, str(self.dir / "runner.py"), str(self.data), action],
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

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        db = sqlite3.connect(self.data / "worldflow.sqlite3", timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def events(self) -> list[tuple[str, dict[str, object]]]:
        rows = self.query("SELECT kind, data FROM events WHERE run_id = 'crash-run' ORDER BY seq")
        return [(str(kind), json.loads(str(data))) for kind, data in rows]

    def executions(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                errors = b"".join(
                    p.stderr.read() or b"" for p in self.procs if p.poll() is not None and p.stderr
                )
                raise AssertionError(
                    f"timed out waiting for {what}; events: {self.events()}; {errors!r}"
                )
            time.sleep(0.02)

    def has_event(self, kind: str) -> Callable[[], bool]:
        def check() -> bool:
            try:
                return any(k == kind for k, _ in self.events())
            except sqlite3.OperationalError:  # the worker is still creating the database
                return False

        return check

    def completed_steps(self) -> set[str]:
        """Names (first argument) of steps whose result is recorded in the log."""
        scheduled = {d["cid"]: d for k, d in self.events() if k == "step_scheduled"}
        done = [d["cid"] for k, d in self.events() if k == "step_completed"]
        return {scheduled[cid]["input"][0][0] for cid in done}  # type: ignore[index]

    def result(self) -> object:
        rows = self.query("SELECT status, output FROM runs WHERE id = 'crash-run'")
        status, output = rows[0]
        assert status == "completed", (status, self.events())
        return json.loads(str(output))


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    s = Scene(tmp_path)
    yield s
    for proc in s.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def _finished(scene: Scene) -> Callable[[], bool]:
    return lambda: bool(
        scene.query("SELECT 1 FROM runs WHERE id = 'crash-run' AND status = 'completed'")
    )


def _check_no_rerun(scene: Scene, recorded: set[str]) -> None:
    runs = [line.split()[1] for line in scene.executions()]
    for name in recorded:
        assert runs.count(name) == 1, (
            f"step {name!r} ran again after its result was recorded: {runs}"
        )


def test_kill_mid_step(scene: Scene) -> None:
    first = scene.worker("start:mid_step")
    scene.wait("step two to start", lambda: "run two 1" in scene.executions())
    scene.kill(first)
    recorded = scene.completed_steps()
    assert recorded == {"one"}
    scene.log.with_suffix(".log.go").touch()  # let the re-run of step two finish
    scene.worker("serve")
    scene.wait("the run to finish", _finished(scene))
    assert scene.result() == ["one", "two!", "three"]
    _check_no_rerun(scene, recorded)
    runs = scene.executions()
    assert "run two 2" in runs  # the lost attempt counted: the re-run is attempt 2
    started = [d for k, d in scene.events() if k == "step_started" and d["cid"] == 2]
    assert [d["attempt"] for d in started] == [1, 2]
    assert started[0]["worker"] != started[1]["worker"]


def test_kill_mid_sleep(scene: Scene) -> None:
    first = scene.worker("start:mid_sleep")
    scene.wait("the sleep to start", scene.has_event("sleep_started"))
    scene.kill(first)
    recorded = scene.completed_steps()
    assert recorded == {"one"}
    scene.worker("serve")
    scene.wait("the run to finish", _finished(scene))
    assert scene.result() == ["one", "two"]
    _check_no_rerun(scene, recorded)
    kinds = [k for k, _ in scene.events()]
    assert kinds.count("sleep_fired") == 1


def test_kill_mid_hook_wait(scene: Scene) -> None:
    first = scene.worker("start:mid_hook")
    scene.wait("the hook to be created", scene.has_event("hook_created"))
    scene.kill(first)
    recorded = scene.completed_steps()
    scene.worker("resume:crash-hook")
    scene.wait("the run to finish", _finished(scene))
    assert scene.result() == ["one", "payload", "two"]
    _check_no_rerun(scene, recorded)


def test_kill_mid_webhook_wait_and_the_url_still_works(scene: Scene) -> None:
    first = scene.worker("start:mid_webhook")
    scene.wait("the webhook to be created", scene.has_event("hook_created"))
    (url,) = [d["url"] for k, d in scene.events() if k == "hook_created"]
    scene.kill(first)  # it served the data directory's webhook port
    second = scene.worker("serve")
    assert second.stdout is not None
    assert second.stdout.readline().strip() == b"ready"  # it holds the port now
    body = b'{"paid": true}'
    request = urllib.request.Request(str(url), data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    scene.wait("the run to finish", _finished(scene))
    assert scene.result() == ["one", {"paid": True}]
