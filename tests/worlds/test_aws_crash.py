"""A worker killed mid-step (``kill -9``) loses nothing: another worker runs the step
again once the dead one's heartbeat has expired (it adopts the runs the dead one held),
and the run completes (against moto)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.worlds.aws import AwsWorld
from worldflow.worlds.aws.testing import MotoServer

FLOWS = """\
import asyncio

import worldflow as wf


@wf.step(name="crash.slow")
async def slow(seconds: float) -> int:
    meta = wf.get_step_metadata()
    if meta.attempt == 1:
        await asyncio.sleep(seconds)  # the first attempt never ends: its worker is killed
    return meta.attempt


@wf.workflow(name="crash.flow")
async def flow(seconds: float) -> int:
    return await slow(seconds)


async def main() -> None:
    # This process creates the run, so it starts it here, without a queue round trip.
    async with wf.worker():
        run = await wf.start(flow, 600.0, id="crash-run")
        print(run.id, flush=True)
        await asyncio.sleep(600)


if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.mark.crash
@pytest.mark.slow
def test_a_worker_killed_mid_step(moto: MotoServer, tmp_path: Path) -> None:
    from worldflow.worlds.aws import setup

    moto.reset()
    settings = setup("wf-crash", session=moto.session(), endpoint_url=moto.url, visibility=2)
    (tmp_path / "flows.py").write_text(FLOWS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
        **moto.env(),
        **settings,
        "PYTHONPATH": str(tmp_path),
        "WORLDFLOW_AWS_POLL_WAIT": "1",
        "WORLDFLOW_AWS_VISIBILITY": "2",
        "WORLDFLOW_AWS_HEARTBEAT": "0.3",
        "WORLDFLOW_AWS_WORKER_LEASE": "1",
    }
    world = AwsWorld(
        settings["WORLDFLOW_AWS_TABLE"],
        settings["WORLDFLOW_AWS_QUEUE_URL"],
        settings["WORLDFLOW_AWS_BUCKET"],
        session=moto.session(),
        endpoint_url=moto.url,
        poll=False,
    )

    def kinds() -> list[tuple[str, dict[str, object]]]:
        return [(e.kind, e.data) for e in asyncio.run(world.storage.read_log("crash-run")).events]

    def wait_for(predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not in {timeout}s; the log has {kinds()}")
            time.sleep(0.1)

    first = subprocess.Popen(
        [sys.executable, str(tmp_path / "flows.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    second = subprocess.Popen(
        [sys.executable, "-m", "worldflow", "worker", "flows"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "crash-run"
        wait_for(lambda: any(k == "step_started" for k, _ in kinds()), 20, "the first attempt")
        time.sleep(1.5)  # the second worker sees the first alive: it leaves its step be
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        wait_for(lambda: any(k == "run_completed" for k, _ in kinds()), 40, "the run's end")
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.terminate()
            process.communicate(timeout=30)  # waits, and closes its pipes
    log = kinds()
    started = [data for kind, data in log if kind == "step_started"]
    assert [s["attempt"] for s in started] == [1, 2]
    assert started[0]["worker"] != started[1]["worker"]
    (completed,) = [data for kind, data in log if kind == "run_completed"]
    assert json.dumps(completed["output"]) == "2"  # the second attempt's result


ATTEMPTS: list[int] = []
FIRST_STARTED: dict[str, asyncio.Event] = {}


@wf.step(name="crash-tests.slow")
async def slow_step(seconds: float) -> int:
    attempt = wf.get_step_metadata().attempt
    ATTEMPTS.append(attempt)
    if attempt == 1:
        FIRST_STARTED["event"].set()
        await asyncio.sleep(seconds)
    return attempt


@wf.workflow(name="crash-tests.flow")
async def slow_flow(seconds: float) -> int:
    return await slow_step(seconds)


def test_a_started_run_stays_backed_while_its_step_runs_elsewhere(moto: MotoServer) -> None:
    """A run started where it was created has only the delayed copy of its start message
    behind its first step. Another worker that receives that copy while the step still
    runs on a live worker leaves it for later instead of using it up; so when the first
    worker dies, the run is taken up again and the step runs again."""
    from worldflow._runtime import Runtime
    from worldflow.worlds.aws import setup

    moto.reset()
    settings = setup("wf-backed", session=moto.session(), endpoint_url=moto.url)
    session = moto.session()

    def world(**options: object) -> AwsWorld:
        return AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            settings["WORLDFLOW_AWS_QUEUE_URL"],
            settings["WORLDFLOW_AWS_BUCKET"],
            session=session,
            endpoint_url=moto.url,
            poll_wait=1,
            **options,  # type: ignore[arg-type]
        )

    ATTEMPTS.clear()

    async def main() -> int:
        FIRST_STARTED["event"] = asyncio.Event()
        # The first worker runs its step but takes no message; its copy is due in 0.5 s.
        first = Runtime(world(poll=False, lease=60.0), start_safety=0.5)
        await first.start()
        async with wf.worker(world(lease=1.0, heartbeat=0.3)):
            run_id = await first.start_run(slow_flow.name, (600.0,), {}, None)
            await asyncio.wait_for(FIRST_STARTED["event"].wait(), 10)
            await asyncio.sleep(2.0)  # the copy came due: left for later, not used up
            assert ATTEMPTS == [1]
            await first.close()  # the first worker is gone (its heartbeat too)
            return int(await wf.get_run(run_id).result(timeout=20))

    assert asyncio.run(asyncio.wait_for(main(), 60)) == 2
    assert ATTEMPTS == [1, 2]
