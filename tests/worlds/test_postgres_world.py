"""What the postgres world does beyond the conformance suite: its settings and errors,
the schema's creation, versions and migration, the store's group commit and listing,
the queue's claims, leases and notifications, webhooks, the examples, the CLI and the
web UI on it, the deployment examples. Worker processes killed and the database failing
under them: test_postgres_crash.py.

Against the real PostgreSQL server of ``worldflow.worlds.postgres.testing`` (a
database of this module's own, dropped at the end).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import worldflow as wf
from worldflow._config import create_world
from worldflow.world import (
    ACK,
    Append,
    Delivery,
    Disposition,
    Message,
    NewEvent,
    Outgoing,
    RunCreate,
)
from worldflow.worlds.postgres import PostgresError, PostgresSettings, PostgresWorld, _schema
from worldflow.worlds.postgres.testing import (
    database_url,
    server_url,
    sql,
)

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (an AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.005)


def world(url: str, schema: str, **options: Any) -> PostgresWorld:
    options.setdefault("serve_webhooks", False)
    return PostgresWorld(url, schema=schema, heartbeat=0.2, lease=1.0, **options)


@wf.step
async def add(a: int, b: int) -> int:
    return a + b


@wf.workflow(name="pg.sum")
async def summing(n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@wf.workflow(name="pg.wait")
async def waiting(token: str) -> Any:
    return await wf.create_hook(token=token)


# -- settings and errors ----------------------------------------------------------------


def test_settings_are_checked_and_each_error_names_its_setting() -> None:
    cases = {
        "WORLDFLOW_POSTGRES_URL=postgresql": {},
        "WORLDFLOW_POSTGRES_URL must be a postgresql:// URL": {"url": "mysql://x"},
        "WORLDFLOW_POSTGRES_SCHEMA": {"url": "postgresql://h/d", "schema": "My-Schema"},
        "WORLDFLOW_POSTGRES_POOL_MAX": {
            "url": "postgresql://h/d",
            "pool_min": "5",
            "pool_max": "2",
        },
        "WORLDFLOW_POSTGRES_LEASE must be longer": {"url": "postgresql://h/d", "lease": "1"},
        "WORLDFLOW_POSTGRES_HEARTBEAT must be a number": {
            "url": "postgresql://h/d",
            "heartbeat": "often",
        },
        "WORLDFLOW_POSTGRES_WEBHOOK_PORT": {"url": "postgresql://h/d", "webhook_port": "99999"},
    }
    for message, settings in cases.items():
        with pytest.raises(ValueError, match=message):
            PostgresSettings.from_mapping(settings)
    parsed = PostgresSettings.from_mapping(
        {"url": "postgresql://h/d", "webhook_port": "off", "pool_max": "3", "lease": "4"}
    )
    assert not parsed.serve_webhooks and parsed.pool_max == 3 and parsed.lease == 4.0


def test_the_world_is_chosen_by_configuration(database: str, schema: str) -> None:
    env = {
        "WORLDFLOW_WORLD": "postgres",
        "WORLDFLOW_POSTGRES_URL": database,
        "WORLDFLOW_POSTGRES_SCHEMA": schema,
        "WORLDFLOW_POSTGRES_POOL_MAX": "4",
        "WORLDFLOW_POSTGRES_WEBHOOK_PORT": "off",
        "WORLDFLOW_RETENTION": "7d",
    }
    made = create_world(env=env)
    assert isinstance(made, PostgresWorld)
    assert made.settings.schema == schema and made.settings.pool_max == 4
    assert made.retention == 7 * 86400 and made.webhook_listen is None
    assert made.capabilities.transactional_messages and made.capabilities.embedded
    run(made.close())


def test_without_psycopg_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("psycopg") else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install 'worldflow\[postgres\]'") as info:
        create_world("postgres", env={"WORLDFLOW_POSTGRES_URL": "postgresql://h/d"})
    assert info.value.name == "psycopg"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:1/x", "could not be reached"),
        ("postgresql://postgres@no-such-host.invalid:5432/x", "could not be reached"),
        ("postgresql://postgres@10.255.255.1:5432/x", "could not be reached"),
        ("postgresql://nobody_here@127.0.0.1:5432/postgres", "refused the user or password"),
    ],
    ids=["refused", "unknown-host", "unroutable", "unknown-user"],
)
def test_a_wrong_url_fails_quickly_and_says_which_setting(url: str, expected: str) -> None:
    start = time.monotonic()
    with pytest.raises(PostgresError, match=expected) as info:
        PostgresWorld(url, connect_timeout=2)
    assert time.monotonic() - start < 6  # bounded by connect_timeout, never a hang
    assert "WORLDFLOW_POSTGRES_URL" in str(info.value)
    assert isinstance(info.value, wf.WorldError)


def test_a_missing_database_is_named(database: str) -> None:
    missing = database_url(server_url(), "no_such_database_here")
    with pytest.raises(PostgresError, match="does not exist: create it"):
        PostgresWorld(missing)


def test_a_user_without_permission_is_told_what_to_grant(database: str, schema: str) -> None:
    role = f"wf_nobody_{secrets.token_hex(4)}"
    sql(database, f"CREATE ROLE {role} LOGIN")
    try:
        url = database.replace("postgres@", f"{role}@", 1)
        with pytest.raises(PostgresError, match="may not") as info:
            PostgresWorld(url, schema=schema)
        assert "worldflow setup postgres" in str(info.value) and "GRANT" in str(info.value)
        # Once the owner has set the schema up, the user is refused its tables by name.
        run(PostgresWorld(database, schema=schema).close())
        sql(database, f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        with pytest.raises(PostgresError, match="GRANT USAGE ON SCHEMA"):
            PostgresWorld(url, schema=schema)
        # With the grants docs/postgres.md lists, the user runs workflows.
        sql(
            database,
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        )

        async def main() -> None:
            async with wf.worker(world(url, schema)):
                assert await (await wf.start(summing, 3)).result(timeout=10) == 3

        run(main())
    finally:
        sql(database, f"DROP OWNED BY {role}")
        sql(database, f"DROP ROLE {role}")


# -- the schema: created once, versioned, migrated -----------------------------------------


def test_concurrent_first_use_creates_the_schema_once(database: str, schema: str) -> None:
    barrier = threading.Barrier(6)
    made: list[PostgresWorld] = []
    errors: list[BaseException] = []

    def open_world() -> None:
        barrier.wait()
        try:
            made.append(PostgresWorld(database, schema=schema, serve_webhooks=False))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_world) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(w.schema_created for w in made) == [False] * 5 + [True]
    assert sql(database, f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'") == [
        (str(_schema.SCHEMA_VERSION),)
    ]
    for w in made:
        run(w.close())


def test_a_newer_schema_is_refused_clearly(database: str, schema: str) -> None:
    run(world(database, schema).close())
    sql(database, f"UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(PostgresError, match="newer worldflow") as info:
        world(database, schema)
    message = str(info.value)
    assert "version 99" in message and "WORLDFLOW_POSTGRES_SCHEMA" in message
    assert "pip install -U 'worldflow[postgres]'" in message


def test_an_older_schema_waits_for_setup_which_migrates_it(
    database: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(world(database, schema).close())
    sql(database, f"UPDATE {schema}.meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(PostgresError, match="run `worldflow setup postgres` to migrate it"):
        world(database, schema)
    monkeypatch.setitem(_schema.MIGRATIONS, 0, lambda s: [f"CREATE TABLE {s}.migrated (x int)"])
    from worldflow.cli import main

    env = {"WORLDFLOW_POSTGRES_URL": database, "WORLDFLOW_POSTGRES_SCHEMA": schema}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["setup", "postgres", "--check"]) == 1
    assert main(["setup", "postgres"]) == 0
    assert sql(database, f"SELECT count(*) FROM {schema}.migrated") == [(0,)]
    assert main(["setup", "postgres", "--check"]) == 0
    run(world(database, schema).close())


def test_setup_migrates_a_version_1_schema_to_streams_and_tags(
    database: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema written by the release before streams and tags (version 1: no run_tags,
    stream_chunks, stream_writers) is refused, then migrated by setup, and works."""
    run(world(database, schema).close())
    for table in ("run_tags", "stream_chunks", "stream_writers"):
        sql(database, f"DROP TABLE {schema}.{table}")
    sql(database, f"UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(PostgresError, match="run `worldflow setup postgres` to migrate it"):
        world(database, schema)
    from worldflow.cli import main

    monkeypatch.setenv("WORLDFLOW_POSTGRES_URL", database)
    monkeypatch.setenv("WORLDFLOW_POSTGRES_SCHEMA", schema)
    assert main(["setup", "postgres"]) == 0
    assert sql(database, f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'") == [
        ("2",)
    ]

    async def main_() -> None:
        async with wf.worker(world(database, schema)):
            first = await wf.start(summing, 3, tags={"k": "v"})
            assert await first.result(timeout=10) == 3
            assert [r.id for r in (await wf.list_runs(tags={"k": "v"})).runs] == [first.id]

    run(main_())


def test_setup_creates_the_schema_and_prints_the_exports(
    database: str, schema: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worldflow.cli import main

    monkeypatch.setenv("WORLDFLOW_POSTGRES_URL", database)
    assert main(["setup", "postgres", "--schema", schema, "--check"]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["setup", "postgres", "--schema", schema]) == 0
    out, err = capsys.readouterr()
    assert f"export WORLDFLOW_POSTGRES_SCHEMA={schema}" in out
    assert "export WORLDFLOW_WORLD=postgres" in out
    assert f"created (version {_schema.SCHEMA_VERSION})" in err
    assert main(["setup", "postgres", "--schema", schema, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ready"] and report["version_before"] == _schema.SCHEMA_VERSION
    assert main(["setup", "postgres", "--url", "postgresql://postgres@127.0.0.1:1/x"]) == 1
    assert "could not be reached" in capsys.readouterr().err


def test_two_schemas_in_one_database_are_two_worlds(database: str) -> None:
    one, two = f"a_{secrets.token_hex(4)}", f"b_{secrets.token_hex(4)}"

    async def main() -> None:
        async with wf.worker(world(database, one)):
            first = await wf.start(summing, 3)
            assert await first.result(timeout=10) == 3
        async with wf.worker(world(database, two)):
            assert (await wf.list_runs()).runs == []
            with pytest.raises(wf.RunNotFound):
                await wf.get_run(first.id).status()

    run(main())


def test_a_read_only_world_creates_nothing_and_reads_empty(database: str, schema: str) -> None:
    reader = PostgresWorld(database, schema=schema, read_only=True)

    async def main() -> None:
        assert (await reader.storage.list_runs()).runs == []
        assert await reader.storage.get_run("x") is None
        assert (await reader.storage.read_log("x")).events == []
        assert await reader.storage.get_hook("t") is None
        await reader.close()

    run(main())
    assert sql(database, "SELECT to_regnamespace(%s)", schema) == [(None,)]


# -- webhooks ------------------------------------------------------------------------------


def test_the_webhook_port_is_chosen_once_and_kept(database: str, schema: str) -> None:
    first = PostgresWorld(database, schema=schema)
    again = PostgresWorld(database, schema=schema)
    assert first.public_url == again.public_url
    assert first.webhook_listen == again.webhook_listen
    assert first.public_url == f"http://127.0.0.1:{first.webhook_listen[1]}"
    fixed = PostgresWorld(database, schema=schema, webhook_port=18_765)
    assert fixed.webhook_listen == ("127.0.0.1", 18_765)
    public = PostgresWorld(database, schema=schema, public_url="https://hooks.example.com/wf")
    assert public.webhook_url("t 1") == "https://hooks.example.com/wf/webhooks/t%201"
    assert public.webhook_listen == first.webhook_listen  # a proxy forwards to the stored port
    off = PostgresWorld(database, schema=schema, serve_webhooks=False)
    assert off.webhook_listen is None and off.public_url == first.public_url
    for w in (first, again, fixed, public, off):
        run(w.close())


# -- the store ------------------------------------------------------------------------------


def _create(run_id: str, at: float = 1000.0) -> RunCreate:
    return RunCreate(run_id, "pg.sum", NewEvent("run_created", {"workflow": "pg.sum"}, at))


def _append(run_id: str, expected: int, n: int = 1, **more: Any) -> Append:
    events = [NewEvent("step_completed", {"i": i}, 1000.0 + i) for i in range(n)]
    return Append(run_id, expected, events, **more)


def test_a_lost_race_in_a_group_commit_fails_only_its_appends(database: str, schema: str) -> None:
    w = world(database, schema)
    store = w.store

    async def main() -> None:
        for run_id in ("x", "y"):
            await store.create_run(_create(run_id))
        assert await store.append([_append("x", 1, 2)]) == [True]  # x's log ends at 3 now
        results = await store.append(
            [
                _append("x", 1),  # seq 2 is taken: lost
                _append("y", 1, 3, status="running", holder="w1", holder_changed=True),
                _append("x", 2),  # the same run after a lost append: a chain, lost too
            ]
        )
        assert results == [False, True, False]
        assert [e.seq for e in (await store.read_log("y")).events] == [1, 2, 3, 4]
        assert [e.seq for e in (await store.read_log("x")).events] == [1, 2, 3]
        info = await store.get_run("y")
        assert info is not None and info.status == "running" and info.last_seq == 4
        assert await store.runs_held_by("w1", 10) == ["y"]
        await w.close()

    run(main())


def test_listing_pages_newest_first_and_a_corrupt_row_is_unreadable(
    database: str, schema: str
) -> None:
    w = world(database, schema)
    store = w.store

    async def main() -> None:
        await asyncio.gather(
            *(store.create_run(_create(f"r{i:03}", 1000.0 + i)) for i in range(120))
        )
        seen: list[str] = []
        cursor = None
        while True:
            page = await store.list_runs(limit=50, cursor=cursor)
            seen += [r.id for r in page.runs]
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == [f"r{i:03}" for i in reversed(range(120))]
        sql(
            database,
            f"UPDATE {schema}.runs SET status = 'completed', output = '{{nope' WHERE id = 'r005'",
        )
        page = await store.list_runs(status="completed")
        (bad,) = page.runs
        assert bad.id == "r005" and bad.unreadable is not None and "r005" in bad.unreadable
        assert len((await store.list_runs(status="pending", limit=200)).runs) == 119
        await w.close()

    run(main())


def test_prune_deletes_old_ended_runs_with_their_logs_only(database: str, schema: str) -> None:
    w = world(database, schema)
    store = w.store

    async def main() -> None:
        for run_id, at in (("old", 1000.0), ("new", 5000.0), ("live", 1000.0)):
            await store.create_run(_create(run_id, at))
        for run_id, at in (("old", 1001.0), ("new", 5001.0)):
            ended = NewEvent("run_completed", {"output": 1}, at)
            assert await store.append([Append(run_id, 1, [ended], status="completed", output=1)])
        await store.send([Outgoing(Message("m1", "old", "resume"), not_before=9e9)])
        assert await store.prune(2000.0, 10) == 1
        assert await store.get_run("old") is None and (await store.read_log("old")).events == []
        assert sql(database, f"SELECT count(*) FROM {schema}.messages") == [(0,)]
        assert await store.get_run("new") is not None and await store.get_run("live") is not None
        await w.close()

    run(main())


def test_retention_deletes_ended_runs_from_a_serving_process(database: str, schema: str) -> None:
    from worldflow._sweeper import sweep
    from worldflow.testing import Harness

    clock = wf.VirtualClock()

    def make() -> PostgresWorld:
        made = world(database, schema, clock=clock)
        made.retention = 3600
        return made

    async def main() -> None:
        async with Harness(make) as h:
            first = await wf.start(summing, 2)
            await first.result(timeout=10)
            second = await wf.start(waiting, f"tok-{schema}")
            await h.wait_event(second, "hook_created")
            clock.advance("2h")
            await sweep(h.runtime)
            with pytest.raises(wf.RunNotFound):
                await first.status()
            assert await second.status() == "running"  # not ended: kept

    run(main())


@wf.workflow(name="pg.nul")
async def nul_hook() -> Any:
    return await wf.create_hook(token="bad\x00token")


def test_ids_and_tokens_postgres_cannot_store_fail_alone(database: str, schema: str) -> None:
    """PostgreSQL's text cannot hold a NUL character: such a run id is refused at start,
    such a hook token is never indexed (nobody can resume it), and neither stops the
    runs committed beside it."""

    async def main() -> None:
        async with wf.worker(world(database, schema)):
            with pytest.raises(ValueError, match="printable"):  # core refuses it first
                await wf.start(summing, 1, id="bad\x00id")
            stuck = await wf.start(nul_hook)
            others = [await wf.start(summing, 5) for _ in range(3)]
            assert [await h.result(timeout=10) for h in others] == [10] * 3
            with pytest.raises(wf.HookNotFound):
                await wf.resume_hook("bad\x00token", 1)
            with pytest.raises(wf.RunNotFound):
                await wf.get_run("bad\x00id").status()
            assert await stuck.status() == "running"

    run(main())


# -- the queue -------------------------------------------------------------------------------


def test_two_workers_racing_for_the_same_messages_deliver_each_once(
    database: str, schema: str
) -> None:
    delivered: Counter[str] = Counter()
    by_worker: dict[str, set[str]] = {"a": set(), "b": set()}

    async def main() -> None:
        a, b, client = (world(database, schema) for _ in range(3))

        def recorder(name: str) -> Any:
            async def deliver(d: Delivery) -> Disposition:
                delivered[d.message.id] += 1
                by_worker[name].add(d.message.id)
                await asyncio.sleep(0.001)
                return ACK

            return deliver

        await a.queue.start(recorder("a"))
        await b.queue.start(recorder("b"))
        messages = [Outgoing(Message(f"m{i}", f"run{i % 7}", "resume")) for i in range(400)]
        for i in range(0, 400, 40):
            await client.queue.send(messages[i : i + 40])
        await until(lambda: sum(delivered.values()) >= 400, 20)
        await asyncio.sleep(0.3)  # anything delivered twice would show by now
        for w in (a, b, client):
            await w.close()

    run(main())
    assert len(delivered) == 400 and set(delivered.values()) == {1}
    assert by_worker["a"] and by_worker["b"]  # both took a share
    assert sql(database, f"SELECT count(*) FROM {schema}.messages") == [(0,)]


def test_a_notification_wakes_a_worker_without_waiting_for_its_poll(
    database: str, schema: str
) -> None:
    got: list[float] = []

    async def main() -> None:
        worker = world(database, schema, poll_interval=60)
        client = world(database, schema)

        async def deliver(d: Delivery) -> Disposition:
            got.append(time.monotonic())
            return ACK

        await worker.queue.start(deliver)
        await asyncio.sleep(0.3)  # its listener is connected
        sent = time.monotonic()
        await client.queue.send([Outgoing(Message("m1", "r1", "resume"))])
        await until(lambda: got)
        assert got[0] - sent < 1.0
        assert worker.queue.notifications >= 1
        for w in (worker, client):
            await w.close()

    run(main())


def test_a_long_delivery_keeps_its_lease_and_a_dead_workers_message_comes_back(
    database: str, schema: str
) -> None:
    async def main() -> None:
        slow, other, client = (world(database, schema, poll_interval=0.1) for _ in range(3))
        holding = asyncio.Event()
        seen_by_other: list[str] = []

        async def hold(d: Delivery) -> Disposition:
            holding.set()
            await asyncio.sleep(3.5)  # three leases of 1 s: the keeper renews it
            return ACK

        async def record(d: Delivery) -> Disposition:
            seen_by_other.append(d.message.id)
            return ACK

        await slow.queue.start(hold)
        await client.queue.send([Outgoing(Message("long", "r1", "resume"))])
        await asyncio.wait_for(holding.wait(), 5)
        await other.queue.start(record)
        await asyncio.sleep(2.5)
        assert seen_by_other == []  # still held by the slow worker, past its first lease
        # The slow worker dies: its tasks stop and nothing gives the message back.
        for task in [*slow.queue._tasks, *slow.queue._inflight.values()]:
            task.cancel()
        slow.queue._tasks = []
        slow.queue._inflight = {}
        await until(lambda: seen_by_other, 5)
        assert seen_by_other == ["long"]  # after the lease ran out, another worker took it
        # ... and acknowledged it (deletes are batched: give the batch a moment).
        await until(lambda: sql(database, f"SELECT attempts FROM {schema}.messages") == [], 10)
        for w in (slow, other, client):
            await w.close()

    run(main())


def test_timers_wait_for_the_worlds_clock(database: str, schema: str) -> None:
    got: list[str] = []

    async def main() -> None:
        clock = wf.VirtualClock()
        worker = world(database, schema, clock=clock)

        async def deliver(d: Delivery) -> Disposition:
            got.append(d.message.id)
            return ACK

        await worker.queue.start(deliver)
        later = clock.now() + 3600
        await worker.queue.send([Outgoing(Message("t1", "r1", "resume"), not_before=later)])
        await asyncio.sleep(0.5)
        assert got == []
        clock.advance("1h")
        await until(lambda: got, 3)
        assert got == ["t1"]
        await worker.close()

    run(main())


def test_a_message_given_back_comes_again_with_its_attempt_counted(
    database: str, schema: str
) -> None:
    attempts: list[int] = []

    async def main() -> None:
        worker = world(database, schema, poll_interval=0.1)

        async def deliver(d: Delivery) -> Disposition:
            attempts.append(d.attempt)
            return ACK if d.attempt == 3 else Disposition.later(0.1, "not yet")

        await worker.queue.start(deliver)
        await worker.queue.send([Outgoing(Message("m1", "r1", "resume"), key="k1")])
        await until(lambda: len(attempts) >= 3, 5)
        await worker.close()

    run(main())
    assert attempts == [1, 2, 3]


# -- the examples, the CLI and the web UI, unchanged ------------------------------------------


def _env(database: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env.update(
        WORLDFLOW_WORLD="postgres",
        WORLDFLOW_POSTGRES_URL=database,
        WORLDFLOW_POSTGRES_SCHEMA=schema,
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("hail_ride", ["on the postgres world", "create_receipt", "run completed", "10.06"]),
        ("research_agent", ["# durable workflows", "write_report", "run completed"]),
    ],
)
def test_the_examples_run_unchanged_with_worldflow_world_postgres(
    database: str, schema: str, example: str, expected: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{example}"],
        cwd=ROOT,
        env=_env(database, schema),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, (text, done.stdout)
    rows = sql(database, f"SELECT status FROM {schema}.runs")
    assert rows == [("completed",)]


def test_the_examples_workflows_on_postgres(database: str, schema: str) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    loyalty = importlib.import_module("examples.loyalty_reward")
    payment = importlib.import_module("examples.payment_webhook")
    clock = wf.VirtualClock()

    async def main() -> None:
        async with wf.worker(PostgresWorld(database, schema=schema, clock=clock)):
            reward = await wf.start(loyalty.offer_loyalty_reward, "rider-7")
            await loyalty.wait_for_event(reward, "sleep_started")
            clock.advance("3d")
            assert (await reward.result(timeout=10))["reward"] == "Ride Credit"
            # The provider calls the webhook URL back: the engine's own server answers.
            paid = await wf.start(payment.validate_payment_method, "ride-9")
            assert await paid.result(timeout=20) == {"ride_id": "ride-9", "status": "approved"}

    run(main())


def test_the_cli_and_the_web_ui_read_the_postgres_world(
    database: str, schema: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from starlette.testclient import TestClient

    from worldflow.cli import main as cli
    from worldflow.web import create_app

    for key, value in _env(database, schema).items():
        if key.startswith("WORLDFLOW_"):
            monkeypatch.setenv(key, value)

    async def make() -> str:
        async with wf.worker(world(database, schema)):
            done = await wf.start(summing, 4)
            await done.result(timeout=10)
            return done.id

    run_id = run(make())
    assert cli(["runs", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed["runs"]] == [run_id]
    assert cli(["runs", "show", run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "completed" and shown["result"] == 6
    with TestClient(create_app(), base_url="http://127.0.0.1:8765") as web:
        assert run_id in web.get("/").text
        assert web.get(f"/api/runs/{run_id}").json()["result"] == 6


# -- webhooks through the user's own ASGI app, and the deployment examples ----------------------


class ThreadWorker:
    """A postgres-world worker on a thread of its own, as another process would be."""

    def __init__(self, made: PostgresWorld) -> None:
        self.world = made
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),))

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with wf.worker(self.world):
            self.ready.set()
            await self.stop.wait()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> ThreadWorker:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@wf.workflow(name="pg.webhook")
async def webhook_flow() -> Any:
    request = await wf.create_webhook()
    return request.json()


def test_webhooks_answered_by_the_users_own_asgi_app(
    database: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from worldflow.world import webhook_app

    public = "https://app.example.com/hooks"
    for key, value in {
        **_env(database, schema),
        "WORLDFLOW_PUBLIC_URL": public,
        "WORLDFLOW_POSTGRES_WEBHOOK_PORT": "off",
        "WORLDFLOW_SERVE": "never",  # the web app only answers; the worker executes
    }.items():
        if key.startswith("WORLDFLOW_"):
            monkeypatch.setenv(key, value)
    app = Starlette(routes=[Mount("/hooks", app=webhook_app())])
    with ThreadWorker(world(database, schema, public_url=public)) as worker:
        started = worker.call(wf.start(webhook_flow))
        events = worker.call(until_event(started, "hook_created"))
        url = events["url"]
        assert url.startswith(f"{public}/webhooks/")
        with TestClient(app, base_url="https://app.example.com") as client:
            assert client.post("/hooks/webhooks/no-such-token", json={}).status_code == 404
            answer = client.post(url.removeprefix("https://app.example.com"), json={"paid": 3})
            assert answer.status_code == 202, answer.text
        assert worker.call(started.result(timeout=30)) == {"paid": 3}


async def until_event(handle: wf.Run[Any], kind: str) -> dict[str, Any]:
    for _ in range(1000):
        found = [e for e in await handle.events() if e.kind == kind]
        if found:
            return found[0].data
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind} event")


def test_the_deployment_examples_use_real_settings_and_drain_in_time() -> None:
    import dataclasses

    import yaml

    known = {f"WORLDFLOW_POSTGRES_{f.name.upper()}" for f in dataclasses.fields(PostgresSettings)}
    known |= {
        "WORLDFLOW_WORLD",
        "WORLDFLOW_PUBLIC_URL",
        "WORLDFLOW_RETENTION",
        "WORLDFLOW_POSTGRES_WEBHOOK_PORT",
    }
    folder = ROOT / "infra" / "postgres"
    job, deployment, service = yaml.safe_load_all((folder / "deployment.yaml").read_text())
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "worldflow",
        "setup",
        "postgres",
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["worldflow", "worker"]
    grace = float(command[command.index("--grace") + 1].rstrip("s"))
    assert pod["terminationGracePeriodSeconds"] > grace
    names = {env["name"] for env in container["env"]}
    assert names <= known, names - known
    settings = {
        env["name"].removeprefix("WORLDFLOW_POSTGRES_").lower(): env["value"]
        for env in container["env"]
        if env["name"].startswith("WORLDFLOW_POSTGRES_") and "value" in env
    }
    PostgresSettings.from_mapping({**settings, "url": "postgresql://h/d"})  # all valid
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    unit = (folder / "worldflow-worker.service").read_text()
    (start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert " worldflow worker " in start.replace("/worldflow worker", " worldflow worker")
    grace = float(start.split("--grace")[1].split()[0].rstrip("s"))
    (stop,) = [line for line in unit.splitlines() if line.startswith("TimeoutStopSec=")]
    assert float(stop.split("=")[1]) > grace
    mentioned = {
        word.split("=")[0].lstrip("#").strip()
        for word in unit.split()
        if word.lstrip("#").startswith("WORLDFLOW_") and "=" in word
    }
    assert mentioned and mentioned <= known, mentioned - known
