"""What the AWS world does beyond the conformance suite, against moto: the table (big
payloads as S3 references, listing runs from the indexes, unreadable items, the
outbox, hook payload counters, holders, heartbeats), the queue (delays, hops past its
longest delay, releasing messages on close) and errors translated at the seam."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import worldflow as wf
from worldflow._api import client  # a runtime that serves nothing: a plain script's
from worldflow.world import (
    Append,
    CorruptLogError,
    HookInfo,
    Message,
    NewEvent,
    Outgoing,
    RunCreate,
)
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws._blobs import S3Blobs
from worldflow.worlds.aws._errors import AwsWorldError
from worldflow.worlds.aws.testing import MotoServer

SLEPT: dict[str, float] = {}


@wf.step
def blow_up(text: str) -> str:
    return text * 2


@wf.workflow(name="aws-tests.big")
async def big(text: str) -> str:
    return await blow_up(text)


@wf.workflow(name="aws-tests.noop")
async def noop(n: int) -> int:
    return n


@wf.step
async def now() -> float:
    return time.time()


@wf.workflow(name="aws-tests.nap")
async def nap(seconds: float) -> float:
    await wf.sleep(seconds)
    return await now()


@wf.workflow(name="aws-tests.wait-then-nap")
async def wait_then_nap(token: str) -> str:
    value: str = await wf.create_hook(token=token)
    await wf.sleep(30)
    return value


handle: Any = None


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def make(moto: MotoServer) -> Callable[..., AwsWorld]:
    moto.reset()
    settings = setup("wf-world", session=moto.session(), endpoint_url=moto.url)
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
            kwargs.pop("table", settings["WORLDFLOW_AWS_TABLE"]),
            kwargs.pop("queue_url", settings["WORLDFLOW_AWS_QUEUE_URL"]),
            settings["WORLDFLOW_AWS_BUCKET"],
            **kwargs,
        )

    return world


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def _items(world: AwsWorld, pk: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = world.store.client.query(
        TableName=world.store.table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": pk}},
    )["Items"]
    return items


def _event(kind: str, **data: Any) -> NewEvent:
    return NewEvent(kind, data, time.time())


async def _created(world: AwsWorld, run_id: str) -> None:
    event = _event("run_created", workflow="w", input=[[], {}])
    await world.storage.create_run(RunCreate(run_id, "w", event))


def test_big_payloads_are_s3_references_in_the_table(make: Callable[..., AwsWorld]) -> None:
    text = "x" * 300_000  # 600 KB once doubled: past DynamoDB's 400 KB item limit

    async def main() -> tuple[str, list[Any]]:
        async with wf.worker(make()):
            handle = await wf.start(big, text)
            return await handle.result(timeout=30), await handle.events()

    result, events = run(main())
    assert result == text * 2
    assert events[-1].kind == "run_completed"
    world = make()
    items = _items(world, f"R#{events[0].run_id}")
    chunks = [json.loads(i["ev"]["S"]) for i in items if i["sk"]["S"].startswith("E#")]
    refs = [data for chunk in chunks for _, data, _ in chunk if data.get("$t") == "blob"]
    assert refs  # the engine moved the big event to S3; the item holds the key
    (run_item,) = [i for i in items if i["sk"]["S"] == "#RUN"]
    assert json.loads(run_item["output"]["S"])["$t"] == "blob"
    assert isinstance(world.blobs, S3Blobs)
    stored = world.blobs.client.list_objects_v2(Bucket=world.blobs.bucket)["Contents"]
    assert all(o["Key"].startswith("worldflow/runs/") for o in stored) and len(stored) >= 2


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
            other = await wf.start(big, "a", id="big-0")  # a second workflow
            await other.result(timeout=10)
        return ids

    ids = run(main())
    store = make().storage

    async def listing() -> None:
        page = await store.list_runs(limit=2)
        assert [r.id for r in page.runs] == ["big-0", "noop-4"]
        seen = [r.id for r in page.runs]
        while page.cursor:
            page = await store.list_runs(limit=2, cursor=page.cursor)
            seen += [r.id for r in page.runs]
        assert seen == ["big-0", *reversed(ids)]
        only = await store.list_runs(workflow="aws-tests.noop", limit=10)
        assert [r.id for r in only.runs] == list(reversed(ids))
        done = await store.list_runs(status="completed", workflow="aws-tests.big")
        assert [r.id for r in done.runs] == ["big-0"]
        assert (await store.list_runs(status="running")).runs == []
        with pytest.raises(ValueError, match="invalid cursor"):
            await store.list_runs(cursor="not-a-cursor")

    run(listing())


def test_an_unreadable_item_is_named_and_breaks_no_listing(
    make: Callable[..., AwsWorld],
) -> None:
    world = make()
    table, ddb = world.store.table, world.store.client

    async def main() -> None:
        for run_id in ("good", "bad-output", "bad-log"):
            await _created(world, run_id)
        done = Append("bad-output", 1, [_event("run_completed")], status="completed", output=1)
        assert await world.storage.append([done]) == [True]
        ddb.update_item(
            TableName=table,
            Key={"pk": {"S": "R#bad-output"}, "sk": {"S": "#RUN"}},
            UpdateExpression="SET #o = :o",
            ExpressionAttributeNames={"#o": "output"},
            ExpressionAttributeValues={":o": {"S": "{not json"}},
        )
        ddb.put_item(
            TableName=table,
            Item={
                "pk": {"S": "R#bad-log"},
                "sk": {"S": "E#000000000002"},
                "first": {"N": "2"},
                "ev": {"S": '[["step_scheduled", {"cid": 1}, NaN]]'},
            },
        )
        page = await world.storage.list_runs()
        runs = {r.id: r for r in page.runs}
        assert set(runs) == {"good", "bad-output", "bad-log"}
        assert runs["good"].unreadable is None
        assert "the output of run 'bad-output'" in (runs["bad-output"].unreadable or "")
        assert runs["bad-output"].status == "completed"
        with pytest.raises(CorruptLogError) as info:
            await world.storage.read_log("bad-log")
        assert "'bad-log'" in str(info.value) and "E#000000000002" in str(info.value)
        with pytest.raises(wf.CorruptLogError, match="bad-output"):
            await wf.get_run("bad-output").result(timeout=5)

    async def with_client() -> None:
        async with client(world):
            await main()

    run(with_client())


def test_the_outbox_is_kept_with_the_append_until_marked_sent(
    make: Callable[..., AwsWorld],
) -> None:
    world = make()

    async def main() -> None:
        await _created(world, "ob")
        timer = Outgoing(Message("m-1", "ob", "resume"), 12.5, key="ob:timer:1")
        plain = Append("ob", 1, [_event("run_started")], status="running")
        with_messages = Append("ob", 2, [_event("sleep_started", cid=1)], messages=[timer])
        assert await world.storage.append([plain, with_messages]) == [True, True]
        log = await world.storage.read_log("ob")
        assert [e.seq for e in log.events] == [1, 2, 3]
        (unsent,) = log.unsent
        assert unsent.seq == 2 and unsent.messages == [timer]
        assert abs(unsent.written_at - time.time()) < 5
        assert (await world.storage.read_log("ob", after_seq=2)).unsent == [unsent]
        await world.storage.mark_sent("ob", [2])
        assert (await world.storage.read_log("ob")).unsent == []
        # A lost race writes nothing, outbox included.
        late = Append("ob", 2, [_event("run_completed")], status="completed", messages=[timer])
        assert await world.storage.append([late]) == [False]
        assert (await world.storage.read_log("ob")).unsent == []

    run(main())


def test_a_dead_writers_outbox_is_sent_by_the_next_reader(
    make: Callable[..., AwsWorld], moto: MotoServer
) -> None:
    """The append is durable but its messages never went (the writer died): the next
    cold read of the run's log through the engine sends them, once, and forgets them."""
    healthy = make()

    async def main() -> None:
        async with wf.worker(healthy):
            handle = await wf.start(noop, 1, id="outbox-run")
            await handle.result(timeout=10)
        writer = make()
        info = await writer.storage.get_run("outbox-run")
        assert info is not None
        timer = Outgoing(Message("m-timer", "outbox-run", "resume"), time.time(), key="k")
        event = _event("cancel_requested", id="x")
        append = Append("outbox-run", info.last_seq, [event], messages=[timer])
        assert await writer.storage.append([append]) == [True]
        # Written two minutes ago, as far as the engine can tell: past its grace.
        writer.store.client.update_item(
            TableName=writer.store.table,
            Key={"pk": {"S": "R#outbox-run"}, "sk": {"S": f"O#{info.last_seq:012d}"}},
            UpdateExpression="SET t = :t",
            ExpressionAttributeValues={":t": {"N": str(time.time() - 120)}},
        )
        async with client(make()):
            await wf.get_run("outbox-run").events()  # a cold read: the outbox is sent now
            await wf.get_run("outbox-run").events()  # and only once

    run(main())
    assert not [i for i in _items(healthy, "R#outbox-run") if i["sk"]["S"].startswith("O#")]
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    bodies = []
    for _ in range(3):
        got = sqs.receive_message(
            QueueUrl=healthy.sqs.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        bodies += [m["Body"] for m in got.get("Messages", [])]
    assert sum('"m-timer"' in b for b in bodies) == 1


def test_a_refused_send_is_kept_and_sent_when_sqs_takes_messages_again(
    make: Callable[..., AwsWorld], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS refuses the sends after an append committed: the outbox item stays in the
    table while the engine tries again, and once SQS takes messages the timer goes, the
    outbox item is gone and the run ends."""
    clock = wf.VirtualClock()
    world = make(clock=clock)
    token = f"refused-{time.monotonic_ns()}"

    def outbox() -> list[dict[str, Any]]:
        return [i for i in _items(world, f"R#{handle.id}") if i["sk"]["S"].startswith("O#")]

    def resume() -> None:  # another process: its own queue, which works
        async def go() -> None:
            async with client(make(clock=clock)):
                await wf.resume_hook(token, "go")

        asyncio.run(go())

    def refuse(entries: Any) -> None:
        raise AwsWorldError("AWS SQS SendMessageBatch refused (test)", "InternalError")

    async def wait_for(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.1)

    async def main() -> str:
        global handle
        async with wf.worker(world):
            handle = await wf.start(wait_then_nap, token)
            await wait_for(lambda: bool(world.store._get_hook(token)), "no hook")
            monkeypatch.setattr(world.sqs, "_send", refuse)
            await asyncio.to_thread(resume)
            await wait_for(lambda: bool(outbox()), "no outbox item")
            await asyncio.sleep(1.0)
            assert outbox() and await handle.status() == "running"
            monkeypatch.undo()
            await wait_for(lambda: not outbox(), "the outbox item stayed")
            clock.advance(30)
            return str(await handle.result(timeout=20))

    assert run(main()) == "go"


def test_delays_are_sqs_delays_on_the_real_clock_only(
    make: Callable[..., AwsWorld], moto: MotoServer
) -> None:
    real, virtual = make(), make(clock=wf.VirtualClock())
    sqs = moto.session().client("sqs", endpoint_url=moto.url)

    async def send(world: AwsWorld, due: float) -> None:
        await world.queue.send([Outgoing(Message("m", "r", "resume"), due)])

    def visible() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=real.sqs.url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    run(send(virtual, time.time() + 3600))
    assert visible() == 1  # a virtual clock's due time is the engine's business
    sqs.purge_queue(QueueUrl=real.sqs.url)
    run(send(real, time.time() + 3600))
    assert visible() == 0  # delayed by SQS (15 minutes at most)
    got = sqs.receive_message(QueueUrl=real.sqs.url, WaitTimeSeconds=1)
    assert "Messages" not in got


def test_a_sleep_past_the_longest_delay_hops(
    make: Callable[..., AwsWorld], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real clock, a timer due later than the queue's longest delay is sent with
    that delay and sent again (a hop) when it comes early; it fires once, on time.
    (SQS's 15 minutes are made 1 s here, so that a hop takes a second.)"""
    from worldflow.worlds.aws import _queue

    monkeypatch.setattr(_queue, "MAX_DELAY", 1)
    world = make(hold=0.5)
    world.capabilities = dataclasses.replace(world.capabilities, max_delay=1.0)
    sends: list[str] = []
    world.sqs.client.meta.events.register(
        "before-call.sqs.SendMessageBatch", lambda **kw: sends.append("send")
    )

    async def main() -> tuple[float, float, list[Any]]:
        async with wf.worker(world):
            handle = await wf.start(nap, 2.6)
            fired = float(await handle.result(timeout=20))
            return fired, (await handle.events())[0].at, await handle.events()

    fired, created, events = run(main())
    assert fired - created >= 2.6
    assert [e.kind for e in events].count("sleep_fired") == 1
    # the start message, the timer (delayed 1 s), then at least one hop
    assert len(sends) >= 3


def test_a_worker_restart_does_not_wait_for_the_visibility_timeout(
    make: Callable[..., AwsWorld],
) -> None:
    """A worker that stops gives back the messages it holds (a timer not due yet): the
    next worker takes it at once, not after the queue's visibility timeout (30 s)."""
    clock = wf.VirtualClock()

    async def main() -> float:
        first = make(clock=clock, visibility=30)
        async with wf.worker(first):
            handle = await wf.start(nap, 10.0)
            await asyncio.sleep(1.5)  # the timer came back from SQS and is held here
            assert await handle.status() == "running"
        started = time.monotonic()
        async with wf.worker(make(clock=clock, visibility=30)):
            await asyncio.sleep(1.5)  # the second worker took the timer and holds it
            clock.advance(10)
            await handle.result(timeout=20)
        return time.monotonic() - started

    assert run(main()) < 10


def test_hook_payloads_are_counted_atomically(make: Callable[..., AwsWorld]) -> None:
    world = make()

    async def main() -> None:
        await _created(world, "hooked")
        created = Append(
            "hooked",
            1,
            [_event("hook_created", cid=1, token="t-1")],
            hooks_created=[HookInfo("t-1", "hooked"), HookInfo("w-1", "hooked", webhook=True)],
        )
        assert await world.storage.append([created]) == [True]
        counted = await asyncio.gather(*(world.storage.next_payload("t-1") for _ in range(12)))
        assert sorted(h.n for h in counted if h is not None) == list(range(1, 13))
        assert {h.run_id for h in counted if h is not None} == {"hooked"}
        assert await world.storage.next_payload("t-1", webhook=True) is None  # not a webhook
        hook = await world.storage.next_payload("w-1", webhook=True)
        assert hook is not None and hook.webhook and hook.n == 1
        assert await world.storage.next_payload("no-such-token") is None
        found = await world.storage.get_hook("t-1")
        assert found is not None and found.n == 12 and not found.webhook
        # Another run cannot take a live token; the one that holds it keeps its count.
        await _created(world, "other")
        taken = Append(
            "other",
            1,
            [_event("hook_created", cid=1, token="t-1")],
            hooks_created=[HookInfo("t-1", "other")],
        )
        assert await world.storage.append([taken]) == [True]
        found = await world.storage.get_hook("t-1")
        assert found is not None and found.run_id == "hooked" and found.n == 12
        removed = Append(
            "hooked", 2, [_event("run_completed")], status="completed", hooks_removed=["t-1", "w-1"]
        )
        assert await world.storage.append([removed]) == [True]
        assert await world.storage.get_hook("t-1") is None

    run(main())


def test_the_runs_a_worker_holds_are_found_from_the_index(
    make: Callable[..., AwsWorld],
) -> None:
    world = make()

    async def main() -> None:
        for run_id in ("h-1", "h-2", "h-3"):
            await _created(world, run_id)
            held = Append(
                run_id,
                1,
                [_event("run_started")],
                status="running",
                holder="w-a",
                holder_changed=True,
            )
            assert await world.storage.append([held]) == [True]
        assert sorted(await world.storage.runs_held_by("w-a", 10)) == ["h-1", "h-2", "h-3"]
        assert len(await world.storage.runs_held_by("w-a", 2)) == 2
        released = Append(
            "h-1", 2, [_event("step_completed", cid=1)], holder=None, holder_changed=True
        )
        ended = Append("h-2", 2, [_event("run_completed")], status="completed")
        assert await world.storage.append([released, ended]) == [True, True]
        assert await world.storage.runs_held_by("w-a", 10) == ["h-3"]  # h-2 has ended
        assert await world.storage.runs_held_by("w-b", 10) == []
        item = next(i for i in _items(world, "R#h-1") if i["sk"]["S"] == "#RUN")
        assert "holder" not in item  # removed: the index stays sparse

    run(main())


def test_worker_heartbeats(make: Callable[..., AwsWorld]) -> None:
    async def main() -> None:
        a, b = make(), make()
        async with wf.worker(a):
            until = await b.workers.expiry(a.worker_id)
            assert until is not None and until > time.time()
            assert await b.workers.expiry("some-host:1:gone") is None
            assert a.worker_id not in await b.workers.expired(time.time(), 10)
        # a worker that stopped says so: its heartbeat has run out
        assert a.worker_id in await b.workers.expired(time.time(), 10)
        await b.workers.forget(a.worker_id)
        assert await b.workers.expiry(a.worker_id) is None
        await b.workers.heartbeat("w-old", time.time() - 100)
        await b.workers.heartbeat("w-older", time.time() - 200)
        await b.workers.heartbeat("w-live", time.time() + 100)
        assert await b.workers.expired(time.time(), 1) == ["w-older"]
        assert await b.workers.expired(time.time() - 150, 10) == ["w-older"]

    run(main())


def test_errors_name_the_call_and_the_resource(make: Callable[..., AwsWorld]) -> None:
    world = make(table="no-such-table")
    with pytest.raises(AwsWorldError) as info:
        run(world.storage.get_run("r"))
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


def test_webhook_urls_need_a_public_url(make: Callable[..., AwsWorld]) -> None:
    assert make(public_url="https://x.example/").webhook_url("a b") == (
        "https://x.example/webhooks/a%20b"
    )
    with pytest.raises(ValueError, match="WORLDFLOW_PUBLIC_URL"):
        make().webhook_url("t")  # not on Lambda: no function URL to look up


def test_a_finished_run_s_items_expire(make: Callable[..., AwsWorld]) -> None:
    """With expire_finished, every item of a run that ended (the run, its events, from
    every append) gets a ``ttl`` that far ahead, which the table's TTL deletes; a run
    that has not ended keeps its items."""
    world = make(expire_finished=30 * 86400.0)

    async def main() -> tuple[str, str]:
        async with wf.worker(world):
            done = await wf.start(big, "ab", tags={"team": "ttl"})
            assert await done.result(timeout=20) == "abab"
            waiting = await wf.start(wait_then_nap, "ttl-token")
            for _ in range(200):
                if await waiting.status() == "running":
                    break
                await asyncio.sleep(0.05)
            assert await waiting.status() == "running"
            return done.id, waiting.id

    done, waiting = run(main())
    items = _items(world, f"R#{done}")
    assert len(items) >= 3  # the run and its event chunks
    expected = time.time() + 30 * 86400
    for item in items:
        assert abs(int(item["ttl"]["N"]) - expected) < 60, item["sk"]
    assert all("ttl" not in item for item in _items(world, f"R#{waiting}"))
    (tag_item,) = _items(world, "T#team=ttl")  # the tag index's item expires with its run
    assert abs(int(tag_item["ttl"]["N"]) - expected) < 60


def test_listings_merge_the_shards_newest_first_and_page_across_them(
    make: Callable[..., AwsWorld],
) -> None:
    """Runs spread over the shards of by_time and by_status (and a run written before
    sharding, in the old unsharded partition) are listed in one newest-first order,
    page by page, each once."""
    from worldflow.worlds.aws._store import ALL_RUNS, SHARDS

    world = make()
    store = world.store
    base = time.time()

    async def create() -> list[str]:
        ids = []
        for i in range(25):
            run_id = f"shard-run-{i:02d}"
            event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, base + i)
            await world.storage.create_run(RunCreate(run_id, "w", event))
            ids.append(run_id)
        return ids

    ids = run(create())
    # A run item as written before sharding: unsharded index keys.
    legacy = {
        **_items(world, "R#shard-run-00")[0],
        "pk": {"S": "R#legacy-run"},
        "all_pk": {"S": ALL_RUNS},
        "st_pk": {"S": "S#pending"},
        "order": {"S": f"{base + 12.5:017.6f}#legacy-run"},
        "created": {"N": str(base + 12.5)},
    }
    store.client.put_item(TableName=store.table, Item=legacy)
    created = {r: float(i) for i, r in enumerate(ids)} | {"legacy-run": 12.5}
    expected = sorted(created, key=lambda r: -created[r])
    partitions = {item["all_pk"]["S"] for r in ids for item in _items(world, f"R#{r}")[:1]}
    assert len(partitions) >= SHARDS // 2  # spread over the shards

    async def pages(**filters: Any) -> list[list[str]]:
        out = []
        page = await store.list_runs(limit=4, **filters)
        out.append([r.id for r in page.runs])
        while page.cursor:
            page = await store.list_runs(limit=4, cursor=page.cursor, **filters)
            out.append([r.id for r in page.runs])
        return out

    by_time = run(pages())
    assert [r for p in by_time for r in p] == expected
    assert all(len(p) == 4 for p in by_time[:-1])
    by_status = run(pages(status="pending"))
    assert [r for p in by_status for r in p] == expected
    with_workflow = run(pages(status="pending", workflow="w"))
    assert [r for p in with_workflow for r in p] == expected
    # A cursor from before sharding (DynamoDB's LastEvaluatedKey) goes on from its order.
    old = {"pk": {"S": "R#shard-run-03"}, "sk": {"S": "#RUN"}, "all_pk": {"S": ALL_RUNS}}
    old["order"] = _items(world, "R#shard-run-03")[0]["order"]
    cursor = base64.urlsafe_b64encode(json.dumps(old).encode()).decode()
    rest = run(store.list_runs(limit=10, cursor=cursor))
    assert [r.id for r in rest.runs] == ["shard-run-02", "shard-run-01", "shard-run-00"]
