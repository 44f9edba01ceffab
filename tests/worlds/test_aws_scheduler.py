"""Sleeps past SQS's 15 minutes on the AWS world: one EventBridge Scheduler one-time
schedule each, not a hop every 15 minutes (against moto, which stores schedules but
never fires them: the tests fire the due ones through moto's Scheduler API)."""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import worldflow as wf
from worldflow.world import Message, Outgoing
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import MotoServer, ScheduleFirer, ShiftedClock


@wf.workflow(name="aws-scheduler.nap")
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
    return setup("wf-sched", session=moto.session(), endpoint_url=moto.url)


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
            "scheduler_role": settings["WORLDFLOW_AWS_SCHEDULER_ROLE"],
            "schedule_group": settings["WORLDFLOW_AWS_SCHEDULE_GROUP"],
            **options,
        }
        return AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            settings["WORLDFLOW_AWS_QUEUE_URL"],
            settings["WORLDFLOW_AWS_BUCKET"],
            **kwargs,
        )

    return world


def _schedules(moto: MotoServer) -> list[dict[str, Any]]:
    client = moto.session().client("scheduler", endpoint_url=moto.url)
    return [
        client.get_schedule(GroupName=s["GroupName"], Name=s["Name"])
        for s in client.list_schedules()["Schedules"]
    ]


def _count(world: AwsWorld) -> collections.Counter[str]:
    calls: collections.Counter[str] = collections.Counter()

    def count(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}:{model.name}"] += 1

    for client in (world.sqs.client, world.scheduler.client):  # type: ignore[union-attr]
        client.meta.events.register("before-call", count)
    return calls


def test_setup_makes_the_group_and_a_role_that_may_only_send_to_the_queue(
    moto: MotoServer, settings: dict[str, str]
) -> None:
    iam = moto.session().client("iam", endpoint_url=moto.url)
    role = settings["WORLDFLOW_AWS_SCHEDULER_ROLE"].rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    assert trust["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
    policy = iam.get_role_policy(RoleName=role, PolicyName="send-to-the-queue")["PolicyDocument"]
    if isinstance(policy, str):
        policy = json.loads(policy)
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=settings["WORLDFLOW_AWS_QUEUE_URL"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert policy["Statement"] == [
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}
    ]
    scheduler = moto.session().client("scheduler", endpoint_url=moto.url)
    group = scheduler.get_schedule_group(Name=settings["WORLDFLOW_AWS_SCHEDULE_GROUP"])
    assert group["Name"] == "wf-sched"
    # Running it again finds what exists.
    again = setup("wf-sched", session=moto.session(), endpoint_url=moto.url)
    assert again == settings


def test_a_message_due_in_a_day_is_one_schedule_even_sent_twice(
    make: Callable[..., AwsWorld], moto: MotoServer
) -> None:
    world = make()
    due = time.time() + 86_400
    out = Outgoing(Message("m-1", "wrun_1", "resume", {"n": 1}), due, "k-1")

    async def main() -> None:
        assert world.scheduler is not None
        await world.scheduler.schedule([out])
        await world.scheduler.schedule([out])  # at least once: a duplicate send

    asyncio.run(main())
    (schedule,) = _schedules(moto)
    assert schedule["GroupName"] == "wf-sched"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(math.ceil(due)))
    assert schedule["ScheduleExpression"] == f"at({expected})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    target = schedule["Target"]
    assert target["Arn"].endswith(":wf-sched")
    assert target["RoleArn"] == world.scheduler.role_arn  # type: ignore[union-attr]
    assert json.loads(target["Input"]) == {
        "id": "m-1",
        "run": "wrun_1",
        "kind": "resume",
        "data": {"n": 1},
        "nb": due,
        "key": "k-1",
    }


@pytest.mark.parametrize("seconds", [3600.0, 86_400.0, 30 * 86_400.0])
def test_a_long_sleep_is_one_schedule_and_no_hop(
    make: Callable[..., AwsWorld], moto: MotoServer, seconds: float
) -> None:
    """An hour, a day, 30 days of sleep on the real clock (shifted forward, so that the test
    need not wait): one CreateSchedule, and the timer comes to the queue once, when the
    schedule fires; no hop. Before: 4, 96 and 2,880 hops."""
    clock = ShiftedClock()
    world = make(clock=clock)
    calls = _count(world)

    async def main() -> float:
        async with wf.worker(world):
            handle = await wf.start(nap, seconds)
            deadline = time.monotonic() + 20
            while not _schedules(moto):
                assert time.monotonic() < deadline, "no schedule was made"
                await asyncio.sleep(0.1)
            assert calls["sqs:SendMessageBatch"] == 1  # the start; the timer is scheduled
            clock.skip(seconds)
            with ScheduleFirer(moto.session(), moto.url, now=clock.now) as firer:
                assert await handle.result(timeout=20) == "rested"
            assert firer.fired == 1 and not firer.errors
            events = await handle.events()
            return events[-1].at - events[0].at

    took = asyncio.run(asyncio.wait_for(main(), 50))
    assert took >= seconds
    assert calls["scheduler:CreateSchedule"] == 1
    assert calls["sqs:SendMessageBatch"] == 1  # no hop
    assert _schedules(moto) == []  # deleted after it ran
