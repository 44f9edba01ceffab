"""What the AWS world does beyond the conformance suite, against moto: big payloads in
S3, listing runs from the indexes, the outbox after a failed send, delays past what
the consumer holds, worker heartbeats, and errors translated at the seam."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import worldflow as wf
from worldflow._world import Append, Message, NewEvent, Outgoing
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws._errors import AwsWorldError
from worldflow.worlds.aws.testing import MotoServer


@wf.step
def blow_up(text: str) -> str:
    return text * 2


@wf.workflow(name="aws-tests.big")
async def big(text: str) -> str:
    return await blow_up(text)


@wf.workflow(name="aws-tests.noop")
async def noop(n: int) -> int:
    return n


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def make(moto: MotoServer) -> Callable[..., AwsWorld]:
    moto.reset()
    settings = setup("wf-world", session=moto.session(), endpoint_url=moto.url)

    def world(**options: Any) -> AwsWorld:
        kwargs: dict[str, Any] = {
            "session": moto.session(),
            "endpoint_url": moto.url,
            "poll_wait": 1,
            "heartbeat": 0.5,
            "worker_lease": 2.0,
        }
        kwargs.update(options)
        return AwsWorld(
            options.pop("table", settings["WORLDFLOW_AWS_TABLE"]),
            options.pop("queue_url", settings["WORLDFLOW_AWS_QUEUE_URL"]),
            settings["WORLDFLOW_AWS_BUCKET"],
            **{k: v for k, v in kwargs.items() if k not in ("table", "queue_url")},
        )

    return world


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_big_payloads_go_to_s3_transparently(make: Callable[..., AwsWorld]) -> None:
    text = "x" * 300_000  # 600 KB once doubled: past DynamoDB's 400 KB item limit

    async def main() -> tuple[str, list[Any]]:
        async with wf.worker(make()):
            handle = await wf.start(big, text)
            return await handle.result(timeout=30), await handle.events()

    result, events = run(main())
    assert result == text * 2
    assert events[-1].kind == "run_completed"
    world = make()
    items = world.store.client.query(
        TableName=world.store.table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": f"R#{events[0].run_id}"}},
    )["Items"]
    assert any("blob" in item for item in items)  # a chunk of the log is in S3
    (run_item,) = [i for i in items if i["sk"]["S"] == "#RUN"]
    assert "output_blob" in run_item and "output" not in run_item


def test_runs_are_listed_newest_first_with_filters_and_cursors(
    make: Callable[..., AwsWorld],
) -> None:
    clock = wf.VirtualClock()

    async def main() -> list[str]:
        ids = []
        async with wf.worker(make(clock=clock)):
            for i in range(5):
                handle = await wf.start(noop, i, id=f"noop-{i}")
                await handle.result(timeout=10)
                ids.append(handle.id)
                clock.advance(1)
            sleeping = await wf.start(big, "a", id="big-0")  # a second workflow
            await sleeping.result(timeout=10)
        return ids

    ids = run(main())
    world = make()

    async def listing() -> None:
        page = await world.list_runs(limit=2)
        assert [r.id for r in page.runs] == ["big-0", "noop-4"]
        seen = [r.id for r in page.runs]
        while page.cursor:
            page = await world.list_runs(limit=2, cursor=page.cursor)
            seen += [r.id for r in page.runs]
        assert seen == ["big-0", *reversed(ids)]
        only = await world.list_runs(workflow="aws-tests.noop", limit=10)
        assert [r.id for r in only.runs] == list(reversed(ids))
        done = await world.list_runs(status="completed", workflow="aws-tests.big")
        assert [r.id for r in done.runs] == ["big-0"]
        assert (await world.list_runs(status="running")).runs == []

    run(listing())


def test_messages_of_an_append_survive_a_failed_send(
    make: Callable[..., AwsWorld], moto: MotoServer
) -> None:
    """The append is durable but SQS refused the send (as if the process died between
    the two): the outbox keeps the messages, and the next cold read sends them."""
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    broken = make(queue_url=f"{moto.url}/123456789012/no-such-queue")
    healthy = make(outbox_grace=0.0)

    async def main() -> None:
        async with wf.worker(healthy):
            handle = await wf.start(noop, 1, id="outbox-run")
            await handle.result(timeout=10)
        timer = Outgoing(Message("m-timer", "outbox-run", "resume"), time.time(), key="k")
        append = Append(
            "outbox-run",
            (await healthy.get_run("outbox-run")).last_seq,  # type: ignore[union-attr]
            [NewEvent("cancel_requested", {"id": "x"}, time.time())],
            messages=[timer],
        )
        assert await broken.append([append]) == [True]
        await healthy.read_events("outbox-run")  # a cold load: the outbox is sent now
        await healthy.read_events("outbox-run")  # and only once

    run(main())
    url = healthy.queue.url
    bodies = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies += [m["Body"] for m in got.get("Messages", [])]
    assert sum('"m-timer"' in b for b in bodies) == 1


def test_a_failed_send_is_retried_and_holds_its_run_busy(
    make: Callable[..., AwsWorld], moto: MotoServer
) -> None:
    """SQS refused the send after the append committed: the world keeps the messages,
    counts the run as busy (its message is not acknowledged) and sends them later."""
    healthy = make()
    world = make(queue_url=f"{moto.url}/123456789012/no-such-queue")

    async def main() -> None:
        async with wf.worker(healthy):
            handle = await wf.start(noop, 1, id="unsent-run")
            await handle.result(timeout=10)
        last = (await healthy.get_run("unsent-run")).last_seq  # type: ignore[union-attr]
        timer = Outgoing(Message("m-unsent", "unsent-run", "resume"), time.time())
        event = NewEvent("cancel_requested", {"id": "y"}, time.time())
        assert await world.append([Append("unsent-run", last, [event], messages=[timer])])
        assert world.busy("unsent-run") and list(world.unsent) == [("unsent-run", last + 1)]
        assert world.resend_unsent() == []  # the queue is still wrong: still waiting
        world.queue.url = healthy.queue.url  # SQS takes messages again
        assert world.resend_unsent() == ["unsent-run"]
        assert not world.busy("unsent-run") and not world.unsent

    run(main())
    items = healthy.store.client.query(
        TableName=healthy.store.table,
        KeyConditionExpression="pk = :p AND begins_with(sk, :o)",
        ExpressionAttributeValues={":p": {"S": "R#unsent-run"}, ":o": {"S": "O#"}},
    )["Items"]
    assert items == []  # sent, so the outbox item is gone
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    got = sqs.receive_message(QueueUrl=healthy.queue.url, MaxNumberOfMessages=10)
    assert ['"m-unsent"' in m["Body"] for m in got.get("Messages", [])] == [True]


def test_a_message_due_later_than_held_is_chained(make: Callable[..., AwsWorld]) -> None:
    """With the real clock, a message due past ``hold_max`` is re-sent with an SQS
    delay rather than held; it reaches the handler once, when it is due."""
    world = make(hold_max=0.5)
    got: list[tuple[str, float]] = []

    async def main() -> None:
        arrived = asyncio.Event()

        async def handler(message: Message) -> None:
            got.append((message.id, time.time()))
            arrived.set()

        await world.start(handler)
        try:
            due = time.time() + 2.5
            await world.send([Outgoing(Message("later", "r", "resume"), due)])
            await asyncio.wait_for(arrived.wait(), 10)
            await asyncio.sleep(0.5)  # no second delivery
        finally:
            await world.close()
        assert [m for m, _ in got] == ["later"]
        assert got[0][1] >= due

    run(main())


def test_worker_heartbeats(make: Callable[..., AwsWorld]) -> None:
    async def main() -> None:
        a, b = make(), make()

        async def ignore(message: Message) -> None:
            pass

        await a.start(ignore)
        try:
            assert await b.worker_alive(a.worker_id)
            assert not await b.worker_alive("some-host:1:gone")
        finally:
            await a.close()
        assert not await b.worker_alive(a.worker_id)  # a worker that stopped says so

    run(main())


def test_errors_name_the_call_and_the_resource(make: Callable[..., AwsWorld]) -> None:
    world = make(table="no-such-table")
    with pytest.raises(AwsWorldError) as info:
        run(world.get_run("r"))
    assert isinstance(info.value, wf.WorldError)
    message = str(info.value)
    assert "GetItem" in message and "'no-such-table'" in message
    assert "worldflow setup aws" in message
    assert info.value.code == "ResourceNotFoundException"
    assert info.value.__cause__ is not None  # chained to botocore's error


def test_the_factory_says_what_is_missing() -> None:
    from worldflow.worlds.aws import create_world

    with pytest.raises(ValueError, match="WORLDFLOW_AWS_TABLE, WORLDFLOW_AWS_QUEUE_URL"):
        create_world({})
    with pytest.raises(ValueError, match="WORLDFLOW_AWS_VISIBILITY='soon'"):
        create_world({"table": "t", "queue_url": "http://q", "visibility": "soon"})
