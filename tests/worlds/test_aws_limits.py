"""The Lambda host's limits, against moto: a step attempt may take at most the function's
timeout (a capability the worker warns about), and a record whose invocation is killed
at its timeout comes back once the worker's lease has run out, not after the queue's
visibility timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import worldflow as wf
from worldflow._api import client  # a runtime that serves nothing: a plain script's
from worldflow.worlds.aws import AwsWorld, _host, create_world, setup
from worldflow.worlds.aws.testing import LambdaHarness, MotoServer

RELEASE = threading.Event()
ATTEMPTS: list[int] = []


@wf.step(name="aws-limits.stuck")
async def stuck() -> int:
    attempt = wf.get_step_metadata().attempt
    ATTEMPTS.append(attempt)
    if attempt == 1:
        # Blocks the whole event loop, as a frozen, then killed, Lambda process does:
        # no heartbeat, no answer.
        RELEASE.wait(60)
    return attempt


@wf.workflow(name="aws-limits.flow")
async def flow() -> int:
    return await stuck()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def test_the_function_timeout_is_the_longest_step_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    world = create_world(
        {"table": "t", "queue_url": "http://127.0.0.1:1/1/q", "function_timeout": "300"}
    )
    assert world.capabilities.max_attempt_seconds == 300
    assert world.capabilities.host_limit == "Lambda's function timeout"
    plain = create_world({"table": "t", "queue_url": "http://127.0.0.1:1/1/q"})
    assert plain.capabilities.max_attempt_seconds is None
    with pytest.raises(ValueError, match="WORLDFLOW_AWS_FUNCTION_TIMEOUT='5m'"):
        create_world({"table": "t", "queue_url": "q", "function_timeout": "5m"})


def test_a_killed_invocation_s_record_comes_back_after_the_lease(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's visibility timeout is 30 minutes; the invocation (3 s left) takes the
    record and is killed mid-step. The record comes back after the 3 s and the 2 s lease,
    and the next invocation runs the step again."""
    moto.reset()
    settings = setup("wf-limits", session=moto.session(), endpoint_url=moto.url)
    for key, value in {**moto.env(), **settings}.items():
        monkeypatch.setenv(key, value)
    session = moto.session()

    def make(**options: Any) -> AwsWorld:
        return AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            settings["WORLDFLOW_AWS_QUEUE_URL"],
            settings["WORLDFLOW_AWS_BUCKET"],
            session=session,
            endpoint_url=moto.url,
            poll=False,
            visibility=1800,  # the queue's, as the template passes it
            heartbeat=0.5,
            lease=2.0,
            **options,
        )

    first, second = _host.LambdaHost(make), _host.LambdaHost(make)
    url = settings["WORLDFLOW_AWS_QUEUE_URL"]
    killed = LambdaHarness(url, session, moto.url, handler=first, timeout=3, visibility=1800)
    ATTEMPTS.clear()
    RELEASE.clear()

    async def start() -> str:
        async with client(make()):
            return (await wf.start(flow)).id

    run_id = asyncio.run(start())
    invocation = threading.Thread(target=killed.poll_once, daemon=True)
    invocation.start()
    try:
        deadline = time.monotonic() + 20
        while ATTEMPTS != [1]:
            assert time.monotonic() < deadline, "the first invocation did not start the step"
            time.sleep(0.05)
        killed_at = time.monotonic()
        revived = LambdaHarness(url, session, moto.url, handler=second, visibility=1800)
        while 2 not in ATTEMPTS:
            assert time.monotonic() - killed_at < 30, "the record did not come back"
            revived.poll_once()
        back_after = time.monotonic() - killed_at

        async def result() -> Any:
            async with client(make()):
                return await wf.get_run(run_id).result(timeout=20)

        while True:
            revived.poll_once()
            try:
                value = asyncio.run(result())
                break
            except TimeoutError:
                assert time.monotonic() - killed_at < 50
    finally:
        RELEASE.set()
        invocation.join(timeout=30)
        first.close()
        second.close()
    print(f"the killed invocation's record came back after {back_after:.1f} s")
    assert value == 2
    assert back_after < 15, back_after  # 3 s left + 2 s lease (and polling); not 1800 s


def test_a_record_nobody_can_read_comes_back_after_a_backoff(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that is not a worldflow message is reported failed and comes back after a
    backoff (2 s the first time), not after the queue's 30-minute visibility timeout."""
    moto.reset()
    settings = setup("wf-backoff", session=moto.session(), endpoint_url=moto.url)
    for key, value in {**moto.env(), **settings}.items():
        monkeypatch.setenv(key, value)
    session = moto.session()
    url = settings["WORLDFLOW_AWS_QUEUE_URL"]
    host = _host.LambdaHost(
        lambda: AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            url,
            session=session,
            endpoint_url=moto.url,
            poll=False,
        )
    )
    harness = LambdaHarness(url, session, moto.url, handler=host, visibility=1800)
    session.client("sqs", endpoint_url=moto.url).send_message(QueueUrl=url, MessageBody="hello")
    try:
        assert harness.poll_once() == 1
        failed_at = time.monotonic()
        assert len(harness.failures) == 1
        while harness.poll_once() == 0:
            assert time.monotonic() - failed_at < 15, "the record did not come back"
        back_after = time.monotonic() - failed_at
    finally:
        host.close()
    assert len(harness.failures) == 2
    assert 1.5 <= back_after < 6, back_after


def test_the_lambda_hosts_world_takes_the_shared_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORLDFLOW_MAX_DELIVERIES and WORLDFLOW_RETENTION reach the function's World (the
    host builds it with the aws factory, which alone would skip them)."""
    from worldflow.worlds.aws._host import world_from_settings

    monkeypatch.setenv("WORLDFLOW_MAX_DELIVERIES", "5")
    monkeypatch.setenv("WORLDFLOW_RETENTION", "3d")
    monkeypatch.setenv("WORLDFLOW_AWS_TABLE", "t")
    monkeypatch.setenv("WORLDFLOW_AWS_QUEUE_URL", "http://127.0.0.1:1/queue/q")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    world = world_from_settings()
    assert world.max_deliveries == 5
    assert world.retention == 3 * 86400
