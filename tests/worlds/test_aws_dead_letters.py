"""Dead letters on the AWS world, against moto: a message the engine gives up on goes to
the SQS dead-letter queue with its reason, from a poller worker and from the Lambda
host; ``worldflow dlq list|redrive`` shows and sends them again. (The conformance
suite's dead-letter test runs on the poller classes of test_aws_conformance.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow.world import Message, NewEvent, Outgoing, RunCreate
from worldflow.worlds.aws import AwsWorld, _host, setup
from worldflow.worlds.aws.testing import LambdaHarness, MotoServer

MISSING = "aws-dlq-tests.nowhere"  # a workflow no module defines


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def settings(moto: MotoServer) -> dict[str, str]:
    moto.reset()
    return setup("wf-dlq", session=moto.session(), endpoint_url=moto.url, visibility=5)


def _world(moto: MotoServer, settings: dict[str, str], **options: Any) -> AwsWorld:
    world = AwsWorld(
        settings["WORLDFLOW_AWS_TABLE"],
        settings["WORLDFLOW_AWS_QUEUE_URL"],
        settings["WORLDFLOW_AWS_BUCKET"],
        session=moto.session(),
        endpoint_url=moto.url,
        poll_wait=1,
        heartbeat=0.5,
        lease=2.0,
        **options,
    )
    world.max_deliveries = 2
    return world


async def _orphan(world: AwsWorld, run_id: str) -> Message:
    """A run of a workflow no module defines, and a message for it on the queue."""
    event = NewEvent("run_created", {"workflow": MISSING, "input": [[], {}]}, time.time())
    await world.storage.create_run(RunCreate(run_id, MISSING, event))
    message = Message(f"msg-{run_id}", run_id, "resume")
    await world.queue.send([Outgoing(message)])
    return message


async def _letters(world: AwsWorld, count: int = 1) -> list[Any]:
    deadline = time.monotonic() + 30
    while len(found := await world.dlq.dead_letters(100)) < count:
        assert time.monotonic() < deadline, "no dead letter"
        await asyncio.sleep(0.2)
    return found


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worldflow", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _main_queue(moto: MotoServer, settings: dict[str, str]) -> list[dict[str, Any]]:
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    got = sqs.receive_message(
        QueueUrl=settings["WORLDFLOW_AWS_QUEUE_URL"],
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        VisibilityTimeout=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    messages: list[dict[str, Any]] = got.get("Messages", [])
    return messages


@pytest.mark.timeout(240)  # runs the worldflow command in subprocesses
def test_a_poller_buries_and_the_cli_lists_and_redrives(
    moto: MotoServer, settings: dict[str, str], tmp_path: Path
) -> None:
    world = _world(moto, settings)

    async def bury() -> Message:
        async with wf.worker(world):
            message = await _orphan(world, "wrun_dlq_poller")
            await _letters(world)
        return message

    message = asyncio.run(asyncio.wait_for(bury(), 50))
    assert _main_queue(moto, settings) == []  # taken off the queue
    env = {**moto.env(), **settings, "WORLDFLOW_AWS_POLL": "0"}

    listed = _cli(["dlq", "list", "--json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    (letter,) = json.loads(listed.stdout)
    assert letter["run_id"] == "wrun_dlq_poller"
    assert letter["message_id"] == message.id
    assert letter["kind"] == "resume"
    assert letter["attempts"] == 2
    assert MISSING in letter["reason"]
    again = _cli(["dlq", "list", "--json"], env, tmp_path)  # listing consumed nothing
    assert [d["id"] for d in json.loads(again.stdout)] == [letter["id"]]
    table = _cli(["dlq", "list"], env, tmp_path)
    assert table.returncode == 0 and "wrun_dlq_poller" in table.stdout, table.stdout

    redriven = _cli(["dlq", "redrive", letter["id"]], env, tmp_path)
    assert redriven.returncode == 0, redriven.stderr
    assert "sent 1 dead letter" in redriven.stdout + redriven.stderr
    (back,) = _main_queue(moto, settings)
    assert json.loads(back["Body"])["id"] == message.id
    assert back["Attributes"]["ApproximateReceiveCount"] == "1"  # a first delivery
    assert json.loads(_cli(["dlq", "list", "--json"], env, tmp_path).stdout) == []
    twice = _cli(["dlq", "redrive", letter["id"]], env, tmp_path)
    assert twice.returncode == 1  # not a dead letter any more
    assert "not dead letters" in twice.stdout + twice.stderr


def test_the_lambda_host_buries_and_reports_the_record_done(
    moto: MotoServer, settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {**moto.env(), **settings}.items():
        monkeypatch.setenv(key, value)
    session = moto.session()
    _host.install(_host.LambdaHost(lambda: _world(moto, settings, poll=False)))
    client = _world(moto, settings, poll=False)
    try:
        asyncio.run(_orphan(client, "wrun_dlq_lambda"))
        harness = LambdaHarness(settings["WORLDFLOW_AWS_QUEUE_URL"], session, moto.url)
        deadline = time.monotonic() + 40
        while not asyncio.run(client.dlq.dead_letters(10)):
            assert time.monotonic() < deadline, "no dead letter"
            harness.poll_once()
    finally:
        _host.reset()
    (letter,) = asyncio.run(client.dlq.dead_letters(10))
    assert letter.message.message.run_id == "wrun_dlq_lambda"
    assert letter.attempts == 2
    assert MISSING in letter.reason
    # The first delivery failed (named in batchItemFailures), the second was buried and
    # reported done: the event source mapping deleted it.
    assert len(harness.failures) == 1
    assert _main_queue(moto, settings) == []
    assert not harness.errors
