"""What the GCP world does beyond the conformance suite: its settings, the service's
routes (authentication, size caps, a half-sent webhook body, what a task that must
come again is answered), big payloads in Cloud Storage, run listing, long sleeps
bridged past Cloud Tasks' 30 days, the outbox, Cloud Logging's format, errors.

Against the emulators of worldflow.worlds.gcp.testing (Firestore, Cloud Tasks,
Cloud Storage).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import worldflow as wf
from worldflow._config import create_world
from worldflow.testing import normalized
from worldflow.testing._harness import http_call
from worldflow.world import Message, Outgoing
from worldflow.worlds.gcp import GcpError, GcpSettings, GcpWorld
from worldflow.worlds.gcp._errors import translate
from worldflow.worlds.gcp._logs import CloudLoggingFormatter, current_run
from worldflow.worlds.gcp._queue import TASK_ROUTE, decode_task, encode_task, make_client
from worldflow.worlds.gcp._setup import delete_queue, ensure_queue
from worldflow.worlds.gcp.testing import SECRET, settings_for_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcp_support import emulators

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


@wf.workflow(name="gcp-test-echo")
async def echo_flow(value: Any) -> Any:
    return await echo_step(value)


@wf.step(name="gcp-test-echo-step")
async def echo_step(value: Any) -> Any:
    return value


@wf.step(name="gcp-test-writes")
async def writes_chunks(value: Any) -> Any:
    out = wf.get_writable("tokens")
    for i in range(3):
        out.write(i)
        await out.flush()  # three flushes: three chunk documents
    return value


@wf.workflow(name="gcp-test-streams")
async def streams_flow(value: Any) -> Any:
    return await writes_chunks(value)


@wf.workflow(name="gcp-test-waits")
async def waits_for_hook(token: str) -> Any:
    return await wf.create_hook(token=token)


@wf.workflow(name="gcp-test-long-sleep")
async def long_sleep() -> str:
    await wf.sleep("40d")
    return "woke"


@pytest.fixture
def settings() -> Any:
    em = emulators()
    made = settings_for_test(em)
    asyncio.run(ensure_queue(made))
    yield made
    asyncio.run(delete_queue(made))


# -- settings ----------------------------------------------------------------------------
def test_create_world_reads_the_gcp_settings() -> None:
    env = {
        "WORLDFLOW_WORLD": "gcp",
        "WORLDFLOW_GCP_PROJECT": "p1",
        "WORLDFLOW_GCP_LOCATION": "europe-west1",
        "WORLDFLOW_GCP_QUEUE": "flows",
        "WORLDFLOW_GCP_SERVICE_URL": "https://svc.example/",
        "WORLDFLOW_GCP_BUCKET": "b1",
        "WORLDFLOW_GCP_OIDC_AUDIENCE": "https://svc.example",
        "WORLDFLOW_PUBLIC_URL": "https://hooks.example",
    }
    world = create_world(env=env)
    assert isinstance(world, GcpWorld)
    s = world.settings
    assert (s.project, s.location, s.queue, s.bucket) == ("p1", "europe-west1", "flows", "b1")
    assert s.queue_path == "projects/p1/locations/europe-west1/queues/flows"
    assert s.service_url == "https://svc.example"
    assert world.webhook_url("a/b c") == "https://hooks.example/webhooks/a%2Fb%20c"


def test_a_missing_project_is_named() -> None:
    with pytest.raises(ValueError, match="WORLDFLOW_GCP_PROJECT"):
        create_world("gcp", env={})
    with pytest.raises(ValueError, match="WORLDFLOW_GCP_LEASE must be a number"):
        create_world("gcp", env={"WORLDFLOW_GCP_PROJECT": "p", "WORLDFLOW_GCP_LEASE": "soon"})


@wf.workflow(name="gcp-test-webhook-url")
async def webhook_url_flow() -> str:
    return wf.create_webhook().url


def test_webhook_urls_are_absolute_or_a_clear_error_at_create_webhook(
    settings: GcpSettings,
) -> None:
    """Cloud Run does not tell a service its URL: webhook URLs are WORLDFLOW_PUBLIC_URL's,
    else the service URL's; a URL that is not absolute is refused where it is set, and
    with none, create_webhook fails the run saying which setting to give."""
    base = {"WORLDFLOW_GCP_PROJECT": "p"}
    for key, value in (
        ("WORLDFLOW_PUBLIC_URL", "hooks.example"),
        ("WORLDFLOW_GCP_SERVICE_URL", "/x"),
    ):
        with pytest.raises(ValueError, match=f"{key} must be an absolute http"):
            create_world("gcp", env={**base, key: value})
    world = create_world("gcp", env={**base, "WORLDFLOW_GCP_SERVICE_URL": "https://svc.example/"})
    assert world.webhook_url("t") == "https://svc.example/webhooks/t"  # the service's own
    unset = GcpWorld(dataclasses.replace(settings, service_url=None, public_url=None))
    with pytest.raises(ValueError, match="no public URL for webhooks: set WORLDFLOW_PUBLIC_URL"):
        unset.webhook_url("t")

    async def main() -> None:
        served = GcpWorld(settings)
        async with wf.worker(served):
            handle = await wf.start(webhook_url_flow)
            url = await handle.result(timeout=10)
            assert url.startswith(f"{settings.public_url}/webhooks/")  # absolute
            served.public_url = None  # as if neither URL were known
            failed = await wf.start(webhook_url_flow)
            with pytest.raises(wf.RunFailed, match="WORLDFLOW_PUBLIC_URL"):
                await failed.result(timeout=10)

    run(main())


def test_without_the_extra_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("google.cloud") else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install 'worldflow\[gcp\]'"):
        create_world("gcp", env={"WORLDFLOW_GCP_PROJECT": "p"})


def test_google_errors_are_translated_at_the_seam() -> None:
    from google.api_core import exceptions

    expected = r"could not read run 'r1': NotFound: .*gone"
    with pytest.raises(GcpError, match=expected) as info, translate("read run 'r1'"):
        raise exceptions.NotFound("gone")
    assert isinstance(info.value, wf.WorldError)
    assert isinstance(info.value.__cause__, exceptions.NotFound)
    with pytest.raises(KeyError), translate("x"):  # not a Google error: left alone
        raise KeyError("k")


# -- the service's internal route: authentication -----------------------------------------
async def _task_call(settings: GcpSettings, run_id: str, headers: dict[str, str]) -> int:
    body = encode_task(Outgoing(Message("m-" + run_id, run_id, "cancel")))
    status, _ = await http_call(
        "POST",
        settings.service_url + TASK_ROUTE,
        body,
        {"Content-Type": "application/json", **headers},
    )
    return status


@pytest.mark.parametrize(
    ("secret", "headers", "expected"),
    [
        ("s3cret", {}, 401),
        ("s3cret", {"Authorization": "Bearer wrong"}, 403),
        ("s3cret", {"Authorization": "Basic czNjcmV0"}, 401),
        (None, {"Authorization": "Bearer anything"}, 403),  # neither secret nor audience
    ],
    ids=["no-token", "wrong-secret", "not-bearer", "closed"],
)
def test_unauthenticated_task_calls_are_refused_and_change_nothing(
    settings: GcpSettings, secret: str | None, headers: dict[str, str], expected: int
) -> None:
    import dataclasses

    settings = dataclasses.replace(settings, shared_secret=secret)

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(waits_for_hook, f"tok-{settings.queue}")
            await _wait_event(handle, "hook_created")
            before = await handle.events()
            assert await _task_call(settings, handle.id, headers) == expected
            await asyncio.sleep(0.3)
            assert await handle.events() == before
            assert await handle.status() == "running"

    run(main())


class _KeyServer:
    """Publishes public keys as Google's certs endpoint does ({key id: PEM}), on 127.0.0.1."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        import http.server
        import threading

        body = json.dumps({kid: pem.decode() for kid, pem in keys.items()}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _rsa_key() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _token(private: bytes, kid: str, **claims: Any) -> str:
    from google.auth import crypt, jwt

    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "iat": now,
        "exp": now + 600,
        "email_verified": True,
        **claims,
    }
    signer = crypt.RSASigner.from_string(private, key_id=kid)
    return jwt.encode(signer, payload).decode()


def test_oidc_tokens_are_verified_with_google_auth(settings: GcpSettings) -> None:
    """The OIDC path end to end, with keys this test publishes in place of Google's:
    signature, key id, audience, expiry, issuer and the tasks service account."""
    import dataclasses

    private, public = _rsa_key()
    other_private, _ = _rsa_key()
    keys = _KeyServer({"k1": public})
    tasks_account = "wf-tasks@p.iam.gserviceaccount.com"
    settings = dataclasses.replace(
        settings,
        shared_secret=None,
        oidc_audience=settings.service_url,
        tasks_service_account=tasks_account,
        oidc_certs_url=keys.url,
    )
    aud = settings.service_url
    good = {"aud": aud, "email": tasks_account}
    refused = {
        "unsigned-by-google": (_token(other_private, "k1", **good), 401),
        "unknown-key-id": (_token(private, "k9", **good), 401),
        "wrong-audience": (_token(private, "k1", aud="https://else", email=tasks_account), 401),
        "expired": (_token(private, "k1", **good, iat=1, exp=2), 401),
        "wrong-issuer": (_token(private, "k1", **good, iss="https://evil.example"), 401),
        "another-account": (
            _token(private, "k1", aud=aud, email="x@p.iam.gserviceaccount.com"),
            403,
        ),
        "not-a-jwt": ("abc.def", 401),
    }

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(waits_for_hook, f"oidc-{settings.queue}")
            await _wait_event(handle, "hook_created")
            before = await handle.events()
            for name, (token, status) in refused.items():
                got = await _task_call(settings, handle.id, {"Authorization": f"Bearer {token}"})
                assert got == status, name
            assert await handle.events() == before  # nothing changed
            token = _token(private, "k1", **good)
            assert (
                await _task_call(settings, handle.id, {"Authorization": f"Bearer {token}"}) == 200
            )
            with pytest.raises(wf.RunCancelled):
                await handle.result(timeout=10)

    try:
        run(main())
    finally:
        keys.close()


def test_a_good_secret_is_accepted(settings: GcpSettings) -> None:
    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(waits_for_hook, f"tok-{settings.queue}")
            await _wait_event(handle, "hook_created")
            status = await _task_call(settings, handle.id, {"Authorization": f"Bearer {SECRET}"})
            assert status == 200
            with pytest.raises(wf.RunCancelled):
                await handle.result(timeout=10)

    run(main())


# -- webhooks ------------------------------------------------------------------------------
def test_webhook_bodies_are_size_capped(settings: GcpSettings) -> None:
    import dataclasses

    settings = dataclasses.replace(settings, max_webhook_bytes=1000)

    @wf.workflow(name="gcp-test-webhook")
    async def hooked() -> str:
        request = await wf.create_webhook()
        return request.text()

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(hooked)
            (created,) = await _wait_event(handle, "hook_created")
            url = created.data["url"]
            status, body = await http_call("POST", url, b"x" * 1001)
            assert status == 413 and b"1000 limit" in body
            assert (await http_call("POST", url.replace("/webhooks/", "/webhooks/x"), b"hi"))[
                0
            ] == 404
            assert (await http_call("POST", url, b"small"))[0] == 202
            assert await handle.result(timeout=10) == "small"

    run(main())


# -- big payloads go to Cloud Storage -----------------------------------------------------
def test_a_webhook_body_too_big_for_a_task_travels_through_cloud_storage(
    settings: GcpSettings,
) -> None:
    body = bytes(range(256)) * 3000  # 768 KB, ~1 MB as base64: past a task's 1 MB limit

    @wf.workflow(name="gcp-test-big-webhook")
    async def hooked() -> int:
        request = await wf.create_webhook()
        assert request.body == body
        return len(request.body)

    async def main() -> None:
        world = GcpWorld(settings)
        async with wf.worker(world):
            handle = await wf.start(hooked)
            (created,) = await _wait_event(handle, "hook_created")
            assert (await http_call("POST", created.data["url"], body))[0] == 202
            assert await handle.result(timeout=20) == len(body)
            assert world.cloud_storage.writes >= 2  # the message, then the event

    run(main())


def test_payloads_past_firestores_limit_go_to_cloud_storage(settings: GcpSettings) -> None:
    big = "é" * 700_000  # 1.4 MB of UTF-8: over Firestore's 1 MiB document limit

    async def main() -> None:
        world = GcpWorld(settings)
        async with wf.worker(world):
            handle = await wf.start(echo_flow, big)
            assert await handle.result(timeout=20) == big
            assert world.cloud_storage.writes >= 3  # the input, the step's output, the run's output
            assert [e.kind for e in await handle.events()][-1] == "run_completed"
        # A cold process reads the same log back from both services.
        async with wf.worker(GcpWorld(settings)):
            events = await wf.get_run(handle.id).events()
            assert events[0].data["input"] == [[big], {}]
            assert await wf.get_run(handle.id).result(timeout=5) == big

    run(main())


def test_without_a_bucket_a_big_payload_fails_clearly(settings: GcpSettings) -> None:
    import dataclasses

    settings = dataclasses.replace(settings, bucket=None)

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            with pytest.raises(wf.WorldError, match="set WORLDFLOW_GCP_BUCKET"):
                await wf.start(echo_flow, "x" * 1_000_000)

    run(main())


# -- listing runs ----------------------------------------------------------------------------
def test_list_runs_newest_first_with_filters_and_cursors(settings: GcpSettings) -> None:
    async def main() -> None:
        clock = wf.VirtualClock()
        world = GcpWorld(settings, clock=clock)
        async with wf.worker(world):
            ids = []
            for i in range(5):
                clock.advance(1)
                handle = await wf.start(echo_flow, i)
                await handle.result(timeout=10)
                ids.append(handle.id)
            clock.advance(1)
            waiting = await wf.start(waits_for_hook, f"list-{settings.queue}")
            await _wait_event(waiting, "hook_created")
            page = await wf.list_runs(limit=2)
            assert [r.id for r in page.runs] == [waiting.id, ids[4]]
            seen = [r.id for r in page.runs]
            while page.cursor:
                page = await wf.list_runs(limit=2, cursor=page.cursor)
                seen += [r.id for r in page.runs]
            assert seen == [waiting.id, *reversed(ids)]
            done = await wf.list_runs(status="completed", workflow="gcp-test-echo", limit=3)
            assert [r.id for r in done.runs] == ids[:1:-1]
            rest = await wf.list_runs(
                status="completed", workflow="gcp-test-echo", limit=3, cursor=done.cursor
            )
            assert [r.id for r in rest.runs] == ids[1::-1] and rest.cursor is None
            running = await wf.list_runs(status="running")
            assert [r.id for r in running.runs] == [waiting.id]
            assert (await wf.list_runs(workflow="nope")).runs == []
            with pytest.raises(ValueError, match="not a cursor"):
                await wf.list_runs(cursor="%%%")

    run(main())


# -- long sleeps, on the real clock ------------------------------------------------------------
def test_a_sleep_past_30_days_is_bridged_by_rescheduling(settings: GcpSettings) -> None:
    async def main() -> None:
        world = GcpWorld(settings)  # the real clock: tasks carry a schedule_time
        async with wf.worker(world):
            handle = await wf.start(long_sleep)
            (started,) = await _wait_event(handle, "sleep_started")
            until = started.data["until"]
            client = make_client(settings)
            try:
                # The timer's task is sent once the append that started the sleep is
                # durable: it may come a moment after the event.
                deadline = time.monotonic() + 10
                while not (
                    timers := [
                        t
                        for t in (await client.list_tasks(parent=settings.queue_path)).tasks
                        if json.loads(t.http_request.body)["not_before"] == until
                    ]
                ):
                    assert time.monotonic() < deadline, "no timer task"
                    await asyncio.sleep(0.05)
                # A read of the log racing the sender may send the outbox again: the same
                # task name, which real Cloud Tasks refuses (the emulator keeps both).
                assert len({t.name for t in timers}) == 1
                first_hop = timers[0].schedule_time.timestamp()
                assert first_hop == pytest.approx(time.time() + 29 * 86400, abs=60)
                # Delivered early (as Cloud Tasks does after 29 days): the route schedules
                # the next hop and the run sleeps on.
                await client.run_task(name=timers[0].name)
                await asyncio.sleep(0.5)
                assert await handle.status() == "running"
                assert "sleep_fired" not in [e.kind for e in await handle.events()]
                tasks = (await client.list_tasks(parent=settings.queue_path)).tasks
                hops = [
                    t
                    for t in tasks
                    if json.loads(t.http_request.body)["not_before"] == until
                    and t.name != timers[0].name
                ]
                assert len({t.name for t in hops}) == 1
                # Still 40 days to go from here: another hop of 29 days, a task of its own.
                assert hops[0].name != timers[0].name
                next_hop = hops[0].schedule_time.timestamp()
                assert next_hop == pytest.approx(time.time() + 29 * 86400, abs=60)
            finally:
                await client.transport.close()

    run(main())


def test_a_cancelled_runs_long_sleep_stops_at_its_next_hop(settings: GcpSettings) -> None:
    """A 40-day sleep is a chain of hops. Cancel the run: its pending hop, delivered
    (early, as Cloud Tasks would after 29 days), is acknowledged and makes no next hop."""

    async def main() -> None:
        world = GcpWorld(settings)  # the real clock: tasks carry a schedule_time
        async with wf.worker(world):
            handle = await wf.start(long_sleep)
            (started,) = await _wait_event(handle, "sleep_started")
            until = started.data["until"]
            client = make_client(settings)
            try:

                async def timers() -> list[Any]:
                    tasks = (await client.list_tasks(parent=settings.queue_path)).tasks
                    return [
                        t for t in tasks if json.loads(t.http_request.body)["not_before"] == until
                    ]

                deadline = time.monotonic() + 10
                while not (found := await timers()):  # sent once the append is durable
                    assert time.monotonic() < deadline, "no timer task"
                    await asyncio.sleep(0.05)
                first = found[0]
                await handle.cancel()  # a message: the run ends when it is delivered
                await _wait_event(handle, "run_cancelled")
                assert await handle.status() == "cancelled"
                created = world.tasks.created
                await client.run_task(name=first.name)  # the hop comes due, early
                await asyncio.sleep(1.0)
                assert world.tasks.created == created  # no next hop
                assert await timers() == []  # delivered and acknowledged: no timer left
                assert "sleep_fired" not in [e.kind for e in await handle.events()]
            finally:
                await client.transport.close()

    run(main())


# -- the outbox: messages of a durable append survive the writer's death --------------------
def test_messages_a_dead_writer_did_not_send_go_at_the_next_read(settings: GcpSettings) -> None:
    """The append's document keeps its messages until they are marked sent; a reader of the
    log finds what a writer that died in between left, and (once it is stale, so a live
    writer is not raced) the engine sends it and marks it sent."""
    from worldflow._api import client
    from worldflow.world import Append, NewEvent, RunCreate

    settings = dataclasses.replace(settings, listen=None)

    async def queued(tasks: Any) -> list[str]:
        found = (await tasks.list_tasks(parent=settings.queue_path)).tasks
        return [json.loads(t.http_request.body)["id"] for t in found]

    async def main() -> None:
        writer = GcpWorld(settings)  # the real clock: the timer's task waits in the queue
        store = writer.store
        now = writer.clock.now()
        event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, now)
        assert (await store.create_run(RunCreate("run-o", "w", event)))[1] is True
        timer = Outgoing(Message("timer-1", "run-o", "resume"), now + 3600, "run-o:timer:1")
        started = Append("run-o", 1, [NewEvent("run_started", {}, now)], messages=[timer])
        assert await store.append([started]) == [True]  # ... and the writer dies here
        log = await store.read_log("run-o")
        assert [e.kind for e in log.events] == ["run_created", "run_started"]
        (unsent,) = log.unsent
        assert (unsent.seq, unsent.messages) == (1, [timer])
        assert unsent.written_at == pytest.approx(time.time(), abs=30)
        batch = store.client.collection("runs").document("run-o").collection("events")
        await batch.document(f"{1:012d}").update({"written_at": time.time() - 3600})
        await writer.close()
        tasks = make_client(settings)
        try:
            assert await queued(tasks) == []
            async with client(GcpWorld(settings)):
                kinds = [e.kind for e in await wf.get_run("run-o").events()]
                assert kinds == ["run_created", "run_started"]
                assert await queued(tasks) == ["timer-1"]
                await wf.get_run("run-o").events()  # marked sent: not again
                assert await queued(tasks) == ["timer-1"]
            reader = GcpWorld(settings)
            assert (await reader.store.read_log("run-o")).unsent == []
            await reader.close()
        finally:
            await tasks.transport.close()

    run(main())


# -- the store's other parts: holders, heartbeats, payload numbers -----------------------
def test_runs_held_by_a_worker_are_found_from_a_hint_checked_against_the_log(
    settings: GcpSettings,
) -> None:
    """The run document's ``holder`` is written only when it changes to a new worker (not
    when the run stops waiting on one, not again by the process that wrote it): the
    sweeper's query checks the last events document, which always has the exact holder."""
    from worldflow.world import Append, HookInfo, NewEvent, RunCreate

    async def main() -> None:
        world = GcpWorld(settings)
        store = world.store
        now = time.time()
        event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, now)
        await store.create_run(RunCreate("run-h", "w", event))

        def step(seq: int, holder: str | None, **more: Any) -> Append:
            events = [NewEvent("step_started", {"cid": seq}, now)]
            return Append("run-h", seq, events, holder=holder, holder_changed=True, **more)

        assert await store.append([step(1, "w1", status="running")]) == [True]
        assert await store.runs_held_by("w1", 10) == ["run-h"]
        writes = store.writes
        assert await store.append([step(2, None)]) == [True]  # waits on a timer now
        assert store.writes == writes + 1  # the events document only: the hint stays
        assert await store.runs_held_by("w1", 10) == []
        writes = store.writes
        assert await store.append([step(3, "w1")]) == [True]
        assert store.writes == writes + 1  # this process wrote w1 last: not again
        assert await store.runs_held_by("w1", 10) == ["run-h"]
        other = GcpWorld(settings).store  # another process: it knows nothing of the hint
        await other.read_log("run-h")
        writes = other.writes
        assert await other.append([step(4, "w2")]) == [True]
        assert other.writes == writes + 2
        assert await store.runs_held_by("w1", 10) == []
        assert await store.runs_held_by("w2", 10) == ["run-h"]
        # The first process is behind: its append loses, and it forgets what it wrote.
        assert await store.append([step(4, "w1")]) == [False]
        await store.read_log("run-h")
        done = step(5, None, status="completed", output=1)
        assert await store.append([done]) == [True]
        assert await store.runs_held_by("w2", 10) == []
        # Hook payloads are numbered, one transaction each; a hook is not a webhook.
        hook = HookInfo("tok-h", "run-h", webhook=False)
        created = Append("run-h", 6, [NewEvent("hook_created", {}, now)], hooks_created=[hook])
        assert await store.append([created]) == [True]
        assert await store.next_payload("tok-h", webhook=True) is None
        numbers = [(await store.next_payload("tok-h")) for _ in range(3)]
        assert [(h.run_id, h.n) for h in numbers if h] == [("run-h", 1), ("run-h", 2), ("run-h", 3)]
        assert await store.next_payload("no-such-token") is None
        await world.close()
        other.close()

    run(main())


def test_corrupt_stored_values_are_named_and_never_break_a_listing(settings: GcpSettings) -> None:
    from worldflow.world import NewEvent, RunCreate

    async def main() -> None:
        world = GcpWorld(settings)
        store = world.store
        for run_id in ("r-good", "r-bad"):
            event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, time.time())
            await store.create_run(RunCreate(run_id, "w", event))
        runs = store.client.collection("runs")
        await runs.document("r-bad").update({"status": "completed", "output": "{not json"})
        page = await store.list_runs()
        by_id = {r.id: r for r in page.runs}
        assert by_id["r-good"].unreadable is None
        assert "the output of run 'r-bad'" in (by_id["r-bad"].unreadable or "")
        assert (await store.get_run("r-bad")).unreadable  # type: ignore[union-attr]
        first = runs.document("r-good").collection("events").document(f"{0:012d}")
        await first.update({"log": '[{"kind": "run_created", "at": 1e400, "data": {}}]'})
        with pytest.raises(wf.CorruptLogError, match=r"run 'r-good': events document 0+ "):
            await store.read_log("r-good")
        await first.update({"log": "[]", "out": '[{"kind": "resume"}]'})
        with pytest.raises(wf.CorruptLogError, match="its outbox is not a list of messages"):
            await store.read_log("r-good")
        await world.close()

    run(main())


def test_runs_that_ended_before_the_retention_are_deleted_with_their_logs(
    settings: GcpSettings,
) -> None:
    from worldflow.world import Append, ChunkWrite, NewEvent, RunCreate

    async def main() -> None:
        world = GcpWorld(settings)
        store = world.store
        for run_id, at, status in (("r-old", 100.0, "completed"), ("r-new", 900.0, "failed")):
            event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, at)
            await store.create_run(RunCreate(run_id, "w", event))
            end = Append(run_id, 1, [NewEvent("run_completed", {}, at)], status=status)
            assert await store.append([end]) == [True]
        event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, 50.0)
        await store.create_run(RunCreate("r-running", "w", event))  # old, but not ended
        await store.write_chunks(ChunkWrite("r-old", "tokens", "s", 0, ['"a"', '"b"']))
        assert await store.prune(500.0, 10) == 1
        assert await store.get_run("r-old") is None
        assert (await store.read_log("r-old")).events == []
        assert await store.list_streams("r-old") == []  # its streams went with it
        assert await store.read_chunks("r-old", "tokens", 0, 10) == []
        assert {r.id for r in (await store.list_runs()).runs} == {"r-new", "r-running"}
        assert await store.prune(500.0, 10) == 0
        await world.close()

    run(main())


def test_dead_letters_are_kept_listed_and_redriven_as_first_deliveries(
    settings: GcpSettings,
) -> None:
    """The parts under the suite's dead-letter test: a message buried twice (two copies of
    its task) is one letter; a redrive creates a first delivery of the message as it was
    sent, named after the burial, and forgets the letter; ids it does not hold count 0."""
    from worldflow.world import Delivery

    async def main() -> None:
        world = GcpWorld(settings)
        letters = world.dead_letters
        assert letters is not None
        tasks = make_client(settings)
        try:
            first = Delivery(Message("m-1", "r-1", "resume", {"a": 1}), 5.0, "k-1", 16)
            await letters.bury(first, "boom " * 2000)
            await letters.bury(dataclasses.replace(first, attempt=17), "boom again")
            await letters.bury(Delivery(Message("x/y", "r-2", "resume"), attempt=3), "gone")
            listed = await letters.dead_letters(10)
            assert len(listed) == 2  # m-1 once
            assert (listed[0].id, listed[0].attempts, listed[0].reason) == ("m-1", 17, "boom again")
            assert listed[1].id.startswith("m-") and listed[1].message.message.id == "x/y"
            assert listed[0].message == first.outgoing
            assert await letters.dead_letters(1) == listed[:1]
            assert await letters.redrive(["m-1", "nope", "a/b", "m-1"]) == 1
            (task,) = (await tasks.list_tasks(parent=settings.queue_path)).tasks
            body = json.loads(task.http_request.body)
            assert "delivered" not in body  # a first delivery
            assert (body["id"], body["data"], body["key"]) == ("m-1", {"a": 1}, "k-1")
            assert decode_task(task.http_request.body).attempt == 1
            assert task.name.rsplit("/", 1)[1].startswith("wf-")  # named: a redo is refused
            assert [d.id for d in await letters.dead_letters(10)] == [listed[1].id]
            assert await letters.redrive() == 1
            assert await letters.dead_letters(10) == []
            assert await letters.redrive() == 0
            await letters.bury(first, "x" * 10_000)  # cut, so the document stays small
            (kept,) = await letters.dead_letters(10)
            assert len(kept.reason) == 4000
            await (
                world.store.client.collection("dead_letters")
                .document("bad")
                .set({"body": "{", "attempts": 1, "at": 0.0})
            )
            with pytest.raises(wf.CorruptLogError, match="dead letter 'bad'"):
                await letters.dead_letters(10)
        finally:
            await tasks.transport.close()
            await world.close()

    run(main())


def test_a_finished_runs_documents_get_the_expiry_firestores_ttl_deletes_after(
    settings: GcpSettings,
) -> None:
    """When a run ends, its run document and each of its events documents get
    ``expire_at`` (its end + run_ttl), the field of the TTL policy in infra/gcp; a run
    still going has none, and with run_ttl off none is written."""
    import datetime as dt

    async def expiries(world: GcpWorld, run_id: str) -> list[Any]:
        run_doc = (await world.store._run_ref(run_id).get()).to_dict()
        events = world.store._run_ref(run_id).collection("events")
        found = [run_doc.get("expire_at")]
        found += [d.to_dict().get("expire_at") async for d in events.stream()]
        async for head in world.store._run_ref(run_id).collection("streams").stream():
            found.append(head.to_dict().get("expire_at"))
            chunks = head.reference.collection("chunks")
            found += [d.to_dict().get("expire_at") async for d in chunks.stream()]
        return found

    async def main() -> None:
        world = GcpWorld(dataclasses.replace(settings, run_ttl=3 * 86400.0))
        async with wf.worker(world):
            done = await wf.start(streams_flow, "x")
            assert await done.result(timeout=10) == "x"
            assert [c async for c in done.stream("tokens")] == [0, 1, 2]
            waiting = await wf.start(waits_for_hook, f"ttl-{settings.queue}")
            await _wait_event(waiting, "hook_created")
            ended = (await done.info()).updated_at
            found = await expiries(world, done.id)
            assert len(found) >= 3 + 4  # the run document, its appends, a head, 3 flushes
            want = dt.datetime.fromtimestamp(ended + 3 * 86400.0, dt.UTC)
            assert all(e is not None and abs((e - want).total_seconds()) < 1 for e in found), found
            assert set(await expiries(world, waiting.id)) == {None}  # not ended
        # A run that ends in another process than the one that wrote its log: that one
        # reads the ids of the events documents (the query), the same expiry on each.
        from worldflow.world import Append, NewEvent, RunCreate

        ttl_settings = dataclasses.replace(settings, run_ttl=86400.0)
        writer, ender = GcpWorld(ttl_settings), GcpWorld(ttl_settings)
        event = NewEvent("run_created", {"workflow": "w", "input": [[], {}]}, 100.0)
        await writer.store.create_run(RunCreate("r-elsewhere", "w", event))
        more = Append("r-elsewhere", 1, [NewEvent("run_started", {}, 101.0)])
        assert await writer.store.append([more]) == [True]
        end = Append("r-elsewhere", 2, [NewEvent("run_completed", {}, 200.0)], status="completed")
        reads = ender.store.reads
        assert await ender.store.append([end]) == [True]
        assert ender.store.reads > reads  # it had to list them
        want = dt.datetime.fromtimestamp(200.0 + 86400.0, dt.UTC)
        assert await expiries(ender, "r-elsewhere") == [want] * 4
        await writer.close()
        await ender.close()
        world = GcpWorld(dataclasses.replace(settings, run_ttl=None))
        async with wf.worker(world):
            kept = await wf.start(echo_flow, "y")
            assert await kept.result(timeout=10) == "y"
            assert set(await expiries(world, kept.id)) == {None}

    run(main())


def test_the_run_ttl_setting() -> None:
    base = {"WORLDFLOW_GCP_PROJECT": "p"}

    def ttl(value: str) -> float | None:
        world = create_world("gcp", env={**base, "WORLDFLOW_GCP_RUN_TTL": value})
        assert isinstance(world, GcpWorld)
        return world.settings.run_ttl

    assert ttl("") is None  # the default: kept, as on every world
    assert (ttl("7d"), ttl("12h"), ttl("90"), ttl("off")) == (7 * 86400.0, 43200.0, 90.0, None)
    for bad in ("soon", "-1d", "inf"):
        with pytest.raises(ValueError, match="WORLDFLOW_GCP_RUN_TTL must be a duration"):
            ttl(bad)


def test_heartbeats_say_until_when_a_worker_is_alive(settings: GcpSettings) -> None:
    async def main() -> None:
        world = GcpWorld(settings)
        store = world.store
        now = time.time()
        await store.heartbeat("wa", now - 10)
        await store.heartbeat("wb", now - 5)
        await store.heartbeat("wc", now + 30)
        assert await store.expiry("wc") == now + 30
        assert await store.expiry("nobody") is None
        assert await store.expired(now, 10) == ["wa", "wb"]  # the longest gone first
        assert await store.expired(now, 1) == ["wa"]
        await store.forget("wa")
        assert await store.expired(now, 10) == ["wb"]
        await world.close()

    run(main())


# -- the host's limit on a step attempt ------------------------------------------------------
def test_the_request_timeout_is_the_step_limit_and_the_tasks_dispatch_deadline() -> None:
    base = {"WORLDFLOW_GCP_PROJECT": "p"}
    world = create_world("gcp", env=base)
    assert isinstance(world, GcpWorld)
    caps = world.capabilities
    assert caps.max_attempt_seconds == 300.0  # Cloud Run's default request timeout
    assert caps.host_limit.startswith("Cloud Run's request timeout")
    assert world.settings.drain_timeout == 240.0  # the route answers a minute before
    world = create_world("gcp", env={**base, "WORLDFLOW_GCP_REQUEST_TIMEOUT": "900"})
    assert isinstance(world, GcpWorld)
    assert world.capabilities.max_attempt_seconds == 900.0
    assert (world.settings.drain_timeout, world.settings.dispatch_deadline) == (840.0, 900.0)
    for bad in ("10", "3600"):
        with pytest.raises(ValueError, match="WORLDFLOW_GCP_REQUEST_TIMEOUT must be from 15"):
            create_world("gcp", env={**base, "WORLDFLOW_GCP_REQUEST_TIMEOUT": bad})
    too_long = {**base, "WORLDFLOW_GCP_REQUEST_TIMEOUT": "60", "WORLDFLOW_GCP_DRAIN_TIMEOUT": "60"}
    with pytest.raises(ValueError, match=r"DRAIN_TIMEOUT \(60 s\) must be .* under"):
        create_world("gcp", env=too_long)


@wf.step(name="gcp-test-too-long", timeout="20m")
async def too_long_step() -> None:
    return None


def test_a_worker_warns_about_steps_longer_than_the_request_timeout(
    settings: GcpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(settings, request_timeout=600.0)

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            pass

    with caplog.at_level(logging.WARNING, logger="worldflow"):
        run(main())
    (warned,) = [r.getMessage() for r in caplog.records if "gcp-test-too-long" in r.getMessage()]
    assert "Cloud Run's request timeout" in warned and "(10m" in warned


@pytest.mark.slow
def test_a_request_cut_off_at_its_dispatch_deadline_comes_again_and_the_step_runs_once(
    settings: GcpSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each task carries the request timeout as its dispatch deadline, which the emulator
    (patched) enforces as Cloud Tasks does: it stops waiting and retries the task. Here the
    route waits longer than that (DRAIN_TIMEOUT past the request timeout, as when Cloud Run
    cuts a request off): the task comes again while the step still runs in its live worker,
    and the step is not run a second time."""
    settings = dataclasses.replace(settings, request_timeout=15.0, drain_timeout=60.0)
    tag = f"cut-{settings.queue}"
    ATTEMPTS.pop(tag, None)
    from worldflow.worlds.gcp import _host

    delivered: list[int] = []  # the attempt of each delivery the route takes

    def decode(body: bytes, retries: int = 0) -> Any:
        delivery = decode_task(body, retries)
        delivered.append(delivery.attempt)
        return delivery

    monkeypatch.setattr(_host, "decode_task", decode)

    async def main() -> None:
        world = GcpWorld(settings)
        async with wf.worker(world):
            tasks = make_client(settings)
            try:
                handle = await wf.start(counted_gate, tag)  # runs here, its step inline
                await _wait_event(handle, "step_started")
                # A task for the run: the route waits for the run's step, past the deadline.
                await world.tasks.send([Outgoing(Message(f"m-{tag}", handle.id, "resume"))])
                # The start's safety copy waits on the queue (the resume is in flight).
                listed = (await tasks.list_tasks(parent=settings.queue_path)).tasks
                assert listed and {t.dispatch_deadline.total_seconds() for t in listed} == {15.0}
                started = time.monotonic()
                # Past the deadline the emulator gave up on the first request and retried.
                while max(delivered, default=0) < 2:
                    assert time.monotonic() < started + 25, "the cut-off task never came again"
                    await asyncio.sleep(0.2)
                assert time.monotonic() - started > 10  # not before the deadline
                GATES.setdefault(tag, asyncio.Event()).set()
                assert await handle.result(timeout=20) == "through"
            finally:
                GATES.setdefault(tag, asyncio.Event()).set()
                await tasks.transport.close()
        assert ATTEMPTS[tag] == [1]  # run once, though its task was delivered again

    asyncio.run(asyncio.wait_for(main(), 60))


ATTEMPTS: dict[str, list[int]] = {}


@wf.step(name="gcp-test-counted-gate")
async def counted_gate_step(tag: str) -> str:
    ATTEMPTS.setdefault(tag, []).append(wf.get_step_metadata().attempt)
    await GATES.setdefault(tag, asyncio.Event()).wait()
    return "through"


@wf.workflow(name="gcp-test-counted-gated")
async def counted_gate(tag: str) -> str:
    return await counted_gate_step(tag)


# -- the task route's answers ---------------------------------------------------------------
@wf.step(name="gcp-test-gate")
async def gate(tag: str) -> str:
    await GATES.setdefault(tag, asyncio.Event()).wait()
    return "through"


@wf.workflow(name="gcp-test-gated")
async def gated(tag: str) -> str:
    return await gate(tag)


GATES: dict[str, asyncio.Event] = {}


@pytest.mark.parametrize(("lease", "answer"), [(2.0, 503), (12.0, 200)], ids=["soon", "later"])
def test_a_task_that_must_come_again_is_retried_soon_or_copied_for_later(
    settings: GcpSettings, lease: float, answer: int
) -> None:
    """A run whose step runs on another live worker is not acknowledged (that worker may die
    with nothing else to bring the run back): the task must come again once the worker's
    lease has run out. Within a few seconds, a 503 (Cloud Tasks retries); later than that,
    a copy of the task scheduled for then, and a 200."""
    from worldflow._runtime import Runtime

    settings = dataclasses.replace(settings, lease=lease, heartbeat=1.0)
    tag = f"gate-{settings.queue}"

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):  # serves the app (the real clock)
            other = Runtime(GcpWorld(settings))  # a second worker: the address is taken
            await other.start()
            tasks = make_client(settings)
            try:
                run_id = await other.start_run(gated.name, (tag,), {}, None)
                (started,) = await _wait_event(wf.get_run(run_id), "step_started")
                assert started.data["worker"] == other.worker_id
                out = Outgoing(Message(f"m-{tag}", run_id, "resume"))
                status, body = await http_call(
                    "POST",
                    settings.service_url + TASK_ROUTE,
                    encode_task(out),
                    {"Authorization": f"Bearer {SECRET}", "X-CloudTasks-TaskName": "t1"},
                )
                assert status == answer, body
                copies = [
                    t
                    for t in (await tasks.list_tasks(parent=settings.queue_path)).tasks
                    if json.loads(t.http_request.body)["id"] == out.message.id
                ]
                if answer == 503:
                    assert copies == []
                else:
                    again = json.loads(body)["again_in"]
                    assert lease < again <= lease + 2
                    (copy,) = copies
                    due = copy.schedule_time.timestamp()
                    assert due == pytest.approx(time.time() + again, abs=3)
                    copied = json.loads(copy.http_request.body)
                    assert copied["not_before"] == pytest.approx(due, abs=3)
                    # Its attempts go on from this delivery's (the engine's backoff grows).
                    assert decode_task(copy.http_request.body, retries=2).attempt == 1 + 2 + 1
            finally:
                GATES.setdefault(tag, asyncio.Event()).set()
                await tasks.transport.close()
                await other.close()

    run(main())


def test_every_task_delivered_twice_through_the_app_leaves_the_same_log(
    settings: GcpSettings,
) -> None:
    """Every message sent twice, each copy late by a random delay (so reordered): two
    tasks per message, both through the emulator to the app's task route. The logs are
    the same as with one task each, every step ran as often, and the queue settles."""
    from worldflow.testing import _workflows as w
    from worldflow.testing._harness import chaotic

    clock = wf.VirtualClock()

    async def scenario() -> list[Any]:
        logs = []
        tag, token = f"twice-{settings.queue}", f"twice-token-{settings.queue}"
        handle: wf.Run[Any] = await wf.start(w.hail_ride, tag, "r1")
        await handle.result(timeout=20)
        logs.append(normalized(await handle.events()))
        handle = await wf.start(w.hook_before_await, tag, token)
        await _wait_event(handle, "sleep_started")
        await wf.resume_hook(token, "a")
        await wf.resume_hook(token, "b")
        await _wait_event(handle, "hook_received", count=2)
        clock.advance("1h")
        await handle.result(timeout=20)
        logs.append(normalized(await handle.events()))
        handle = await wf.start(w.retrying, tag, 1)
        await handle.result(timeout=20)
        logs.append(normalized(await handle.events()))
        handle = await wf.start(w.cancellable, tag)
        await _wait_event(handle, "sleep_started")
        await handle.cancel()
        with pytest.raises(wf.RunCancelled):
            await handle.result(timeout=20)
        logs.append(normalized(await handle.events()))
        return logs

    async def settled(tasks: Any) -> None:
        """No task left in the queue, nor one in flight, for a while."""
        quiet_since = time.monotonic()
        deadline = quiet_since + 20
        while time.monotonic() - quiet_since < 1.0:
            assert time.monotonic() < deadline, "the queue never settled"
            if (await tasks.list_tasks(parent=settings.queue_path)).tasks:
                quiet_since = time.monotonic()
            await asyncio.sleep(0.1)

    async def main() -> None:
        w.CALLS.clear()
        async with wf.worker(GcpWorld(settings, clock=clock)):
            plain = await scenario()
        once = dict(w.CALLS)
        w.CALLS.clear()
        world = chaotic(GcpWorld(settings, clock=clock), max_delay=0.2, duplicate=True)
        tasks = make_client(settings)
        try:
            async with wf.worker(world):
                doubled = await scenario()
                assert doubled == plain
                assert dict(w.CALLS) == once  # each step as often as with one task each
                # The starts' safety copies and the cancelled run's timer come due: no-ops.
                clock.advance("2h")
                await settled(tasks)
        finally:
            await tasks.transport.close()

    run(main())


def test_a_task_body_that_is_not_one_is_refused(settings: GcpSettings) -> None:
    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            auth = {"Authorization": f"Bearer {SECRET}"}
            url = settings.service_url + TASK_ROUTE
            assert (await http_call("POST", url, b"{not json", auth))[0] == 400
            assert (await http_call("POST", url, b'{"kind": "explode"}', auth))[0] == 400
            assert (await http_call("GET", url, b"", auth))[0] == 405

    run(main())


def test_a_half_sent_webhook_body_is_never_delivered(settings: GcpSettings) -> None:
    """A client that leaves before its body is complete delivers nothing (the app is
    uvicorn's, as on Cloud Run); a complete request afterwards goes through."""
    from urllib.parse import urlsplit

    @wf.workflow(name="gcp-test-webhook-text")
    async def hooked() -> str:
        request = await wf.create_webhook()
        return request.text()

    async def main() -> None:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(hooked)
            (created,) = await _wait_event(handle, "hook_created")
            url = urlsplit(created.data["url"])
            assert url.hostname is not None and url.port is not None
            _, writer = await asyncio.open_connection(url.hostname, url.port)
            head = (
                f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                "Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
            )
            writer.write(head.encode() + b"only the first part")
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.transport.abort()  # gone, 81 bytes short
            await asyncio.sleep(0.5)
            kinds = [e.kind for e in await handle.events()]
            assert "hook_received" not in kinds and await handle.status() == "running"
            status, _ = await http_call("POST", created.data["url"], b"all of it")
            assert status == 202
            assert await handle.result(timeout=10) == "all of it"

    run(main())


# -- logs -------------------------------------------------------------------------------------
def test_logs_are_cloud_logging_json_with_the_run_id() -> None:
    formatter = CloudLoggingFormatter()
    record = logging.LogRecord("worldflow", logging.WARNING, "f", 1, "step %s failed", ("x",), None)
    token = current_run.set("wrun_1")
    try:
        entry = json.loads(formatter.format(record))
    finally:
        current_run.reset(token)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "step x failed"
    assert entry["run_id"] == "wrun_1"
    assert entry["logging.googleapis.com/labels"] == {"run_id": "wrun_1"}
    assert entry["time"].endswith("+00:00")


async def _wait_event(
    handle: wf.Run[Any], kind: str, timeout: float = 10, count: int = 1
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in await handle.events() if e.kind == kind]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} in {timeout}s")
        await asyncio.sleep(0.02)
