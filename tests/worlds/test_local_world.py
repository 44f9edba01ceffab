"""What is particular to the local world: processes sharing a database, its webhook server."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import worldflow as wf
from worldflow import _api
from worldflow._world import Message, NewEvent, Outgoing, RunCreate
from worldflow.testing import Harness
from worldflow.testing import _workflows as w
from worldflow.worlds.local import LocalWorld

FLOWS = """
import os
import worldflow as wf

@wf.step
def work(run, i):
    with open(os.environ["STEP_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {run} {i}\\n")
    return i

@wf.workflow
async def five_steps(run):
    return sum([await work(run, i) for i in range(5)])
"""

SERVE = """
import asyncio, sys
import worldflow as wf
from worldflow.worlds.local import LocalWorld
import sharedflows

async def main():
    async with wf.worker(LocalWorld(sys.argv[1], heartbeat=0.1, lease=0.6)):
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.slow
def test_two_processes_share_a_database_and_each_step_runs_once(tmp_path: Path) -> None:
    (tmp_path / "sharedflows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "serve.py").write_text(textwrap.dedent(SERVE))
    data, log = tmp_path / "data", tmp_path / "steps.log"
    runs = 30

    async def create() -> None:
        # Runs made by a worker that never serves: the two processes adopt them.
        world = LocalWorld(data, serve_webhooks=False)
        for i in range(runs):
            run_id = f"shared-{i}"
            event = NewEvent(
                "run_created",
                {"workflow": "sharedflows.five_steps", "input": [[run_id], {}]},
                time.time(),
            )
            start = Outgoing(Message(f"m-{i}", run_id, "resume"))
            await world.storage.create_run(
                RunCreate(run_id, "sharedflows.five_steps", event, [start])
            )
        world.store.close()

    env = {**os.environ, "STEP_LOG": str(log), "PYTHONPATH": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "serve.py"), str(data)],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 30
        while _count(data, "SELECT count(*) FROM workers") != 2:  # both serving
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                for proc in procs:
                    proc.kill()
                errors = [p.communicate()[1].decode() for p in procs]
                raise AssertionError(f"the workers did not both start: {errors}")
            time.sleep(0.02)
        asyncio.run(create())
        db = sqlite3.connect(data / "worldflow.sqlite3", timeout=10)
        while (
            db.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0] < runs
        ):
            assert time.monotonic() < deadline, db.execute(
                "SELECT status, count(*) FROM runs GROUP BY 1"
            ).fetchall()
            time.sleep(0.05)
        outputs = {row[0] for row in db.execute("SELECT output FROM runs")}
        db.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
            assert proc.stderr is not None
            proc.stderr.close()
    assert outputs == {"10"}
    lines = log.read_text().split("\n")[:-1]
    executions = collections.Counter(tuple(line.split()[1:]) for line in lines)
    assert len(executions) == runs * 5
    assert set(executions.values()) == {1}, "a step ran twice without any crash"


def _count(data: Path, sql: str) -> int:
    try:
        db = sqlite3.connect(data / "worldflow.sqlite3", timeout=10)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", parts.path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        if body:
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_webhook_server_rejects_malformed_requests(tmp_path: Path) -> None:
    async def main() -> None:
        world = LocalWorld(tmp_path, max_webhook_bytes=100)
        async with wf.worker(world):
            run = await wf.start(w.webhook_echo)
            (created,) = await Harness.wait_event(None, run, "hook_created")  # type: ignore[arg-type]
            url = created.data["url"]
            cases = [
                ({"Content-Length": "abc"}, b"", 400, b"bad Content-Length"),
                ({"Content-Length": "-5"}, b"", 400, b"bad Content-Length"),
                ({"Content-Length": "1000"}, b"", 413, b"over the 100 limit"),
                ({"Transfer-Encoding": "chunked"}, b"0\r\n\r\n", 411, b"Content-Length"),
            ]
            for headers, body, status, text in cases:
                got = await asyncio.to_thread(_post, url, body, headers)
                assert got[0] == status and text in got[1], (headers, got)
            base = url.rsplit("/webhooks/", 1)[0]
            got = await asyncio.to_thread(_post, base + "/elsewhere", b"", {"Content-Length": "0"})
            assert got[0] == 404
            assert await run.status() == "running"  # nothing reached the run
            body = json.dumps({"ok": 1}).encode()
            got = await asyncio.to_thread(_post, url, body, {"Content-Length": str(len(body))})
            assert got[0] == 202 and json.loads(got[1])["run_id"] == run.id
            assert (await run.result(timeout=10))["json"] == {"ok": 1}

    asyncio.run(main())


def test_webhook_port_is_stable_per_data_directory(tmp_path: Path) -> None:
    first = LocalWorld(tmp_path)
    url = first.webhook_url("t")
    first.store.close()
    second = LocalWorld(tmp_path)
    assert second.webhook_url("t") == url
    second.store.close()
    assert (
        LocalWorld(tmp_path, public_url="https://example.com/hooks/").webhook_url("a b")
        == "https://example.com/hooks/webhooks/a%20b"
    )


def test_a_corrupt_event_is_reported_with_its_place(tmp_path: Path) -> None:
    async def main() -> str:
        async with wf.worker(LocalWorld(tmp_path)):
            run = await wf.start(w.sequential, "corrupt", 2)
            await run.result(timeout=10)
        db = sqlite3.connect(tmp_path / "worldflow.sqlite3")
        db.execute("UPDATE events SET data = '{broken' WHERE run_id = ? AND seq = 3", (run.id,))
        db.commit()
        db.close()
        async with wf.worker(LocalWorld(tmp_path)):
            with pytest.raises(
                wf.CorruptLogError, match=r"event 3 \(step_scheduled\).*not valid JSON"
            ):
                await run.events()
        return run.id

    asyncio.run(main())


def test_memory_world_works_and_is_private() -> None:
    async def main() -> None:
        world = LocalWorld(":memory:")
        assert world.capabilities.process_private
        async with wf.worker(world):
            run = await wf.start(w.sequential, "memory", 3)
            assert await run.result(timeout=10) == 3

    asyncio.run(main())


def test_a_database_of_another_schema_version_is_refused_clearly(tmp_path: Path) -> None:
    LocalWorld(tmp_path).store.close()
    db = sqlite3.connect(tmp_path / "worldflow.sqlite3")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(
        wf.WorldError, match=r"another version of worldflow \(schema 1; this one reads 3\)"
    ):
        LocalWorld(tmp_path)


def test_the_sweeper_adopts_a_run_held_by_a_dead_worker_with_no_message_left(
    tmp_path: Path,
) -> None:
    """A worker dies mid-step and no message of its run is left anywhere: another
    serving process finds the run by its holder and runs the step again."""
    from worldflow._runtime import Runtime

    async def main() -> list[int]:
        first = Runtime(LocalWorld(tmp_path, serve_webhooks=False, heartbeat=0.1, lease=0.5))
        await first.start()
        run_id = await first.start_run(w.gated_workflow.name, ("swept",), {}, None)
        run = wf.get_run(run_id)
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False, heartbeat=0.1, lease=0.5)):
            for _ in range(500):
                if "step_started" in [e.kind for e in await run.events()]:
                    break
                await asyncio.sleep(0.01)
            await first.close()  # the first worker stops mid-step
            db = sqlite3.connect(tmp_path / "worldflow.sqlite3")
            db.execute("DELETE FROM messages")  # nothing left to bring the run back
            db.commit()
            held = db.execute("SELECT holder FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            db.close()
            assert held == first.worker_id
            w.GATES["swept"] = True
            assert await run.result(timeout=10) == 2  # the lost attempt counted
            return [e.data["attempt"] for e in await run.events() if e.kind == "step_started"]

    assert asyncio.run(asyncio.wait_for(main(), 20)) == [1, 2]


def test_a_process_that_does_not_serve_only_enqueues(tmp_path: Path) -> None:
    """WORLDFLOW_SERVE=never: a plain process's wf.start + result() executes nothing;
    a worker (another loop here, another process in production) does."""

    async def client() -> tuple[str, str]:
        run = await wf.start(w.sequential, "client-only", 3)
        with pytest.raises(TimeoutError):
            await run.result(timeout=0.5)
        return run.id, await run.status()

    wf.configure(world=lambda: LocalWorld(tmp_path, serve_webhooks=False), serve="never")
    try:
        run_id, status = asyncio.run(client())
    finally:
        _api._config.serve = None  # back to WORLDFLOW_SERVE (or auto)
        _api._config.world = None
    assert status == "pending"

    async def serve() -> Any:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            return await wf.get_run(run_id).result(timeout=10)

    assert asyncio.run(serve()) == 3


def test_the_implicit_runtime_is_closed_when_asyncio_run_ends(tmp_path: Path) -> None:
    """A plain script: the runtime made by its first wf.start is closed with its loop,
    so the worker says it has left (others adopt at once) and nothing is left open."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, threading
            import worldflow as wf
            from worldflow.testing import _workflows as w
            from worldflow.worlds.local import LocalWorld

            wf.configure(world=lambda: LocalWorld({str(tmp_path)!r}, serve_webhooks=False))

            async def main():
                run = await wf.start(w.sequential, "script", 2)
                print(await run.result(timeout=10))

            asyncio.run(main())
            print(sorted(t.name for t in threading.enumerate() if not t.daemon))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["1", "['MainThread']"], done.stderr
    assert _count(tmp_path, "SELECT count(*) FROM workers WHERE until > strftime('%s','now')") == 0


def test_a_live_worker_never_takes_a_run_from_another_live_worker(tmp_path: Path) -> None:
    """The claim reads the owner's liveness in its own transaction: a worker that has
    just started (its heartbeat newer than anything another worker cached) keeps its
    runs; once its heartbeat runs out, they can be taken."""

    async def main() -> None:
        x = LocalWorld(tmp_path, serve_webhooks=False)
        y = LocalWorld(tmp_path, serve_webhooks=False)
        await y.store.heartbeat(y.worker_id, time.time() + 2.0)
        event = NewEvent("run_created", {"workflow": w.sequential.name, "input": [[], {}]}, 1.0)
        await y.store.create_run(RunCreate("r-y", w.sequential.name, event))
        assert not await x.store.claim("r-y")  # y is alive
        await y.store.heartbeat(y.worker_id, time.time() - 1.0)  # y's lease ran out
        assert await x.store.claim("r-y")
        x.store.close()
        y.store.close()

    asyncio.run(main())
