"""Queue hygiene on the AWS world, against moto: a stopping worker leaves no SQS long poll
behind to hide the next message, the timers of a cancelled run stop at their next hop,
and a message the engine gives up on goes to the dead-letter queue."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import MotoServer

FLOWS = """\
import worldflow as wf


@wf.workflow(name="hygiene.nap")
async def nap(seconds: float) -> str:
    await wf.sleep(seconds)
    return "rested"
"""


@wf.workflow(name="hygiene.nap")
async def nap(seconds: float) -> str:
    await wf.sleep(seconds)
    return "rested"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def settings(moto: MotoServer) -> dict[str, str]:
    moto.reset()
    return setup("wf-hygiene", session=moto.session(), endpoint_url=moto.url)


@pytest.fixture
def make(moto: MotoServer, settings: dict[str, str]) -> Callable[..., AwsWorld]:
    session = moto.session()

    def world(**options: Any) -> AwsWorld:
        kwargs: dict[str, Any] = {
            "session": session,
            "endpoint_url": moto.url,
            "poll_wait": 1,
            "heartbeat": 0.5,
            "lease": 2.0,
            **options,
        }
        return AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            settings["WORLDFLOW_AWS_QUEUE_URL"],
            settings["WORLDFLOW_AWS_BUCKET"],
            **kwargs,
        )

    return world


def run(coro: Any, timeout: float = 50) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.mark.slow
def test_a_restarted_worker_leaves_no_long_poll_to_hide_the_next_message(
    moto: MotoServer, settings: dict[str, str], make: Callable[..., AwsWorld], tmp_path: Path
) -> None:
    """A worker process stopped while its long poll (5 s here, 20 s by default) waits on
    an empty queue: before, the poll outlived the process on SQS's side, took the next
    message and hid it for the visibility timeout (60 s here: the 3 s sleep did not end
    within the 40 s this test waits).
    Now the worker waits for its poll and gives back what it took, so the next run's
    3 s sleep ends in about 3 s."""
    (tmp_path / "hygiene_flows.py").write_text(FLOWS)
    env = {
        **os.environ,
        **moto.env(),
        **settings,
        "WORLDFLOW_AWS_POLL_WAIT": "5",
        "WORLDFLOW_AWS_VISIBILITY": "60",
        "PYTHONPATH": str(tmp_path),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "worldflow", "worker", "hygiene_flows"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as worker:
        assert worker.stderr is not None
        line = worker.stderr.readline()
        assert "serving" in line, line
        time.sleep(1.0)  # its first long poll is in flight on the empty queue
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
        stopped_in = time.monotonic() - stopping
    assert stopped_in < 8  # at most the poll's wait, and a margin

    async def main() -> float:
        async with wf.worker(make(visibility=60)):
            handle = await wf.start(nap, 3.0)
            assert await handle.result(timeout=40) == "rested"
            events = await handle.events()
            return events[-1].at - events[0].at

    took = run(main())
    print(f"a 3 s sleep after a worker restart took {took:.1f} s")
    assert took < 10, took


def test_the_timers_of_a_cancelled_run_stop_at_the_next_hop(
    make: Callable[..., AwsWorld], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long sleep hops (SQS's 15 minutes made 1 s here) until its run is cancelled: the
    next hop finds the run ended, and nothing is sent again."""
    from worldflow.worlds.aws import _queue

    monkeypatch.setattr(_queue, "MAX_DELAY", 1)
    world = make(hold=0.5)
    world.capabilities = dataclasses.replace(world.capabilities, max_delay=1.0)
    sends: list[float] = []
    world.sqs.client.meta.events.register(
        "before-call.sqs.SendMessageBatch", lambda **kw: sends.append(time.monotonic())
    )

    async def main() -> tuple[int, int]:
        async with wf.worker(world):
            handle = await wf.start(nap, 3600.0)
            deadline = time.monotonic() + 20
            while len(sends) < 4:  # the start, the timer, and hops
                assert time.monotonic() < deadline, "the timer does not hop"
                await asyncio.sleep(0.1)
            hopping = len(sends)
            await handle.cancel()
            while await handle.status() != "cancelled":
                assert time.monotonic() < deadline + 10, "the cancel was not applied"
                await asyncio.sleep(0.05)
            cancelled = len(sends)
            await asyncio.sleep(4)  # a hop a second, had it gone on
            return hopping, len(sends) - cancelled

    hopping, after = run(main())
    assert hopping >= 4
    assert after <= 1, f"{after} sends after the cancel"  # at most one hop in flight
