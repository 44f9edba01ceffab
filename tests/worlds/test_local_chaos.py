"""Three workers on one data directory, one of them killed with SIGKILL every 300 ms.

Every run must still complete with the right result, and its log must be a
valid one with exactly one result per step, whatever was killed mid-write,
mid-step, mid-sleep or mid-adoption.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from worldflow._state import RunState
from worldflow._world import Event, Message, NewEvent, Outgoing, RunCreate
from worldflow.worlds.local import LocalWorld

pytestmark = [pytest.mark.crash, pytest.mark.slow]

FLOWS = """
import asyncio, random, time
import worldflow as wf

@wf.step(max_retries=20, retry_delay=0.05)
async def work(run, i):
    await asyncio.sleep(random.random() * 0.02)
    if random.random() < 0.05:
        raise RuntimeError("flaky")
    return i

@wf.step(max_retries=20, retry_delay=0.05)
def sync_work(run, i):
    time.sleep(random.random() * 0.01)
    return i * 2

@wf.workflow
async def chaos(run):
    total = 0
    for i in range(5):
        total += await work(run, i)
    await wf.sleep(0.3)
    total += await work(run, 10)
    parts = await asyncio.gather(*(sync_work(run, i) for i in range(5)))
    return total + sum(parts)
"""

SERVE = """
import asyncio, sys
import worldflow as wf
from worldflow.worlds.local import LocalWorld
import chaosflows

async def main():
    async with wf.worker(LocalWorld(sys.argv[1], heartbeat=0.2, lease=1.0)):
        await asyncio.Event().wait()

asyncio.run(main())
"""

# The soak, short by default; longer a flag away:
#   WORLDFLOW_SOAK_KILLS=200 WORLDFLOW_SOAK_RUNS=200 pytest tests/worlds/test_local_chaos.py
RUNS = int(os.environ.get("WORLDFLOW_SOAK_RUNS", "60"))
KILLS = int(os.environ.get("WORLDFLOW_SOAK_KILLS", "20"))
EXPECTED = sum(range(5)) + 10 + 2 * sum(range(5))


def test_runs_survive_workers_killed_at_random(tmp_path: Path) -> None:
    (tmp_path / "chaosflows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "serve.py").write_text(textwrap.dedent(SERVE))
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(tmp_path / "serve.py"), str(data)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def create() -> None:
        world = LocalWorld(data, serve_webhooks=False)
        for i in range(RUNS):
            run_id = f"chaos-{i}"
            event = NewEvent(
                "run_created",
                {"workflow": "chaosflows.chaos", "input": [[run_id], {}]},
                time.time(),
            )
            start = Outgoing(Message(f"start-{i}", run_id, "resume"))
            await world.storage.create_run(RunCreate(run_id, "chaosflows.chaos", event, [start]))
        world.store.close()

    asyncio.run(create())
    workers = [worker() for _ in range(3)]
    chooser = random.Random(7)
    kills = 0
    try:
        db = sqlite3.connect(data / "worldflow.sqlite3", timeout=10)
        deadline = time.monotonic() + 120 + 2 * KILLS
        while (
            db.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0] < RUNS
        ):
            assert time.monotonic() < deadline, db.execute(
                "SELECT status, count(*) FROM runs GROUP BY 1"
            ).fetchall()
            time.sleep(0.3)
            if kills < KILLS:
                k = chooser.randrange(3)
                workers[k].send_signal(signal.SIGKILL)
                workers[k].wait(10)
                workers[k] = worker()
                kills += 1
        rows = db.execute(
            "SELECT run_id, seq, kind, at, data FROM events ORDER BY run_id, seq"
        ).fetchall()
        db.close()
    finally:
        for proc in workers:
            proc.kill()
            proc.wait(10)
    assert kills >= 3, "the runs finished before the workers could be killed: make them longer"
    logs: dict[str, list[Event]] = {}
    for run_id, seq, kind, at, text in rows:
        logs.setdefault(run_id, []).append(Event(run_id, seq, kind, json.loads(text), at))
    assert len(logs) == RUNS
    for run_id, events in logs.items():
        state = RunState.from_events(run_id, events)  # dense, well-formed
        assert (state.status, state.output) == ("completed", EXPECTED), run_id
        results = [e.data["cid"] for e in events if e.kind in ("step_completed", "step_failed")]
        assert len(results) == len(set(results)) == len(state.steps), run_id
