"""The Lambda side of the AWS world, driven the way AWS drives it, against moto.

A harness plays the SQS event source mapping (it receives batches and invokes
``worldflow.worlds.aws.lambda_handler`` with real SQS records, honouring
``batchItemFailures`` and visibility timeouts) and a gateway plays the
function URL; the examples run unchanged with ``WORLDFLOW_WORLD=aws``, their
processes only starting runs (a plain process serves nothing on this world)
while "Lambda" executes them.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
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
from worldflow._api import client
from worldflow.testing import normalized
from worldflow.world import Message, NewEvent, Outgoing, RunCreate, load_settings
from worldflow.worlds.aws import AwsWorld, _host, _queue, create_world, setup
from worldflow.worlds.aws.testing import (
    InvocationError,
    LambdaContext,
    LambdaHarness,
    MotoServer,
    RuntimeApi,
    WebhookGateway,
    world_factory,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # examples/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

EXAMPLES = "examples.hail_ride,examples.payment_webhook,examples.research_agent"
SLOW_CALLS: list[int] = []


@wf.step
async def slow_step(seconds: float) -> str:
    SLOW_CALLS.append(wf.get_step_metadata().attempt)
    await asyncio.sleep(seconds)
    return "done"


@wf.workflow(name="aws-lambda-tests.slow")
async def slow(seconds: float) -> str:
    return await slow_step(seconds)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh table and queue; the environment a deployed function would have."""
    moto.reset()
    settings = setup("wf-lambda", session=moto.session(), endpoint_url=moto.url, visibility=5)
    with WebhookGateway() as gateway:
        values = {
            **moto.env(),
            **settings,
            "WORLDFLOW_MODULES": EXAMPLES,
            "WORLDFLOW_PUBLIC_URL": gateway.url,
            "WORLDFLOW_AWS_HEARTBEAT": "0.5",
            "WORLDFLOW_AWS_WORKER_LEASE": "2",
            "AWS_LAMBDA_FUNCTION_NAME": "worldflow",
            "POWERTOOLS_METRICS_NAMESPACE": "worldflow-tests",
        }
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        yield values
    _host.reset()


@pytest.fixture
def harness(env: dict[str, str], moto: MotoServer) -> Iterator[LambdaHarness]:
    with LambdaHarness(env["WORLDFLOW_AWS_QUEUE_URL"], moto.session(), moto.url) as h:
        yield h
    assert not h.errors, h.errors


def _example(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        # WORLDFLOW_MODULES is the function's setting: the script is its own __main__.
        env={k: v for k, v in {**os.environ, **env}.items() if k != "WORLDFLOW_MODULES"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hail_ride_example_runs_unchanged_on_lambda(
    env: dict[str, str], harness: LambdaHarness
) -> None:
    done = _example("examples.hail_ride", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on the aws world" in done.stdout
    assert "retried after RetryableError: no driver free" in done.stdout
    assert "run completed" in done.stdout and "10.06" in done.stdout
    assert harness.invocations >= 1


def test_research_agent_example_runs_unchanged_on_lambda(
    env: dict[str, str], harness: LambdaHarness
) -> None:
    done = _example("examples.research_agent", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run completed" in done.stdout


def test_payment_webhook_through_the_function_url(
    env: dict[str, str], harness: LambdaHarness
) -> None:
    payment = importlib.import_module("examples.payment_webhook")

    async def main() -> Any:
        async with client("aws"):
            run = await wf.start(payment.validate_payment_method, "ride-7")
            return await run.result(timeout=30), await run.events()

    result, events = asyncio.run(main())
    assert result == {"ride_id": "ride-7", "status": "approved"}
    (created,) = [e for e in events if e.kind == "hook_created"]
    assert created.data["url"].startswith(env["WORLDFLOW_PUBLIC_URL"] + "/webhooks/")


def test_long_sleep_with_a_virtual_clock(
    env: dict[str, str], moto: MotoServer, harness: LambdaHarness
) -> None:
    loyalty = importlib.import_module("examples.loyalty_reward")
    clock = wf.VirtualClock()

    def world() -> AwsWorld:
        return AwsWorld(
            env["WORLDFLOW_AWS_TABLE"],
            env["WORLDFLOW_AWS_QUEUE_URL"],
            env["WORLDFLOW_AWS_BUCKET"],
            clock=clock,
            session=moto.session(),
            endpoint_url=moto.url,
            poll=False,
        )

    _host.install(_host.LambdaHost(world))

    async def main() -> Any:
        async with client(world()):
            run = await wf.start(loyalty.offer_loyalty_reward, "rider-1")
            await loyalty.wait_for_event(run, "sleep_started")
            clock.advance("2d")
            with pytest.raises(TimeoutError):
                await run.result(timeout=1.5)
            clock.advance("1d")
            return await run.result(timeout=20)

    reward = asyncio.run(main())
    assert reward["reward"] == "Ride Credit"


def test_a_failing_record_is_reported_and_delivered_again(
    env: dict[str, str], moto: MotoServer
) -> None:
    """A record whose handling fails is named in batchItemFailures; the others are
    acknowledged; the failed one comes back after its visibility timeout."""
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    url = env["WORLDFLOW_AWS_QUEUE_URL"]

    async def create() -> tuple[str, str]:
        world = create_world(load_settings("aws"))
        try:
            good = await wf.start(importlib.import_module("examples.hail_ride").hail_ride, "req-42")
            # A run of a workflow this function does not have: its start message fails.
            create = RunCreate(
                "orphan",
                "no.such.workflow",
                NewEvent("run_created", {"workflow": "no.such.workflow", "input": [[], {}]}, 1.0),
            )
            await world.storage.create_run(create)
            await world.queue.send([Outgoing(Message("m-orphan", "orphan", "resume"))])
            return good.id, "orphan"
        finally:
            await world.close()

    async def main() -> tuple[str, str]:
        async with client("aws"):
            return await create()

    good, _ = asyncio.run(main())
    h = LambdaHarness(url, moto.session(), moto.url, visibility=1)
    count = 0
    while count < 2:
        count += h.poll_once()
    assert len(h.failures) == 1, (h.failures, h.errors)
    # The failed record comes back once its visibility timeout is over; the other was deleted.
    # (The run that works has a retry timer on the queue too: look past it.)
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(5):
        again = sqs.receive_message(
            QueueUrl=url,
            WaitTimeSeconds=2,
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["All"],
        )
        for m in again.get("Messages", []):
            seen[json.loads(m["Body"])["id"]] = m
        if "m-orphan" in seen:
            break
    assert seen["m-orphan"]["MessageId"] == h.failures[0]
    assert int(seen["m-orphan"]["Attributes"]["ApproximateReceiveCount"]) == 2
    assert good not in {json.loads(m["Body"])["run"] for m in seen.values()} or all(
        json.loads(m["Body"]).get("nb")
        for m in seen.values()
        if json.loads(m["Body"])["run"] == good
    )  # only the good run's retry timer, never its start message again

    async def status() -> str:
        async with client("aws"):
            return await wf.get_run(good).status()

    assert asyncio.run(status()) == "running"  # waiting for its retry (taken off the queue)


def test_the_handler_refuses_an_event_it_does_not_know(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="SQS batches and function URL"):
        _host.handle({"detail-type": "Scheduled Event"}, LambdaContext(3))


def test_webhook_body_cap_and_unknown_path(env: dict[str, str]) -> None:
    status, _, body = WebhookGateway.call("POST", "/elsewhere", {}, b"")
    assert status == 404 and b"not a webhook URL" in body
    status, _, body = WebhookGateway.call("POST", "/webhooks/none", {}, b"{}")
    assert status == 404 and b"no live webhook" in body
    big = b"x" * ((1 << 20) + 1)
    status, _, body = WebhookGateway.call("POST", "/webhooks/none", {}, big)
    assert status == 413


def test_the_handler_in_the_real_runtime_client(
    env: dict[str, str], moto: MotoServer, tmp_path: Path
) -> None:
    """The function as Lambda runs it: ``python -m awslambdaric`` in its own process,
    taking invocations from a Runtime API, one at a time, with Lambda's variables set."""
    with RuntimeApi(timeout=20) as api:
        function_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
            **env,
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_FUNCTION_NAME": "worldflow",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "_HANDLER": "worldflow.worlds.aws.lambda_handler",
            "LAMBDA_TASK_ROOT": str(ROOT),
            "PYTHONPATH": str(ROOT),
        }
        log = (tmp_path / "function.log").open("w")
        function = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "worldflow.worlds.aws.lambda_handler"],
            cwd=ROOT,
            env=function_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            harness = LambdaHarness(
                env["WORLDFLOW_AWS_QUEUE_URL"], moto.session(), moto.url, handler=api.invoke
            )
            with harness:
                done = _example("examples.hail_ride", env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "run completed" in done.stdout
            assert harness.invocations >= 1 and not harness.errors, harness.errors
            assert api.init_error is None
            # An event the handler refuses comes back as Lambda reports an error.
            with pytest.raises(InvocationError) as info:
                api.invoke({"detail-type": "Scheduled Event"})
            assert "ValueError" in str(info.value)
        finally:
            function.terminate()
            function.wait(timeout=10)
            log.close()
        output = (tmp_path / "function.log").read_text()
        # powertools' Metrics, in the embedded metric format CloudWatch reads from stdout
        assert '"Namespace":"worldflow-tests"' in output and '"Messages"' in output


def test_log_lines_inside_a_step_carry_its_ids() -> None:
    import logging

    from worldflow._attempts import _STEP_METADATA, StepMetadata
    from worldflow.worlds.aws._observe import StepContext, powertools

    tools = powertools()
    handler = tools.logger.registered_handler
    (step_context,) = [f for f in handler.filters if isinstance(f, StepContext)]

    def line(message: str) -> dict[str, Any]:
        record = logging.LogRecord("worldflow", logging.INFO, __file__, 1, message, (), None)
        step_context.filter(record)
        return dict(json.loads(tools.logger.registered_formatter.format(record)))

    token = _STEP_METADATA.set(StepMetadata("wrun_1:3", 2, "wrun_1", "shop.charge"))
    try:
        inside = line("charging")
    finally:
        _STEP_METADATA.reset(token)
    outside = line("outside")
    assert inside["message"] == "charging"
    assert (inside["run_id"], inside["step_id"], inside["attempt"]) == ("wrun_1", "wrun_1:3", 2)
    assert outside["message"] == "outside" and "step_id" not in outside


def test_a_record_is_acknowledged_only_once_its_run_is_quiet(
    env: dict[str, str], moto: MotoServer
) -> None:
    """A step still running when the invocation's time is up: its record is reported
    failed (the message comes back), and the next invocation sees the step finish."""
    SLOW_CALLS.clear()

    async def start() -> str:
        async with client("aws"):
            return (await wf.start(slow, 2.0)).id

    run_id = asyncio.run(start())
    # 3 s of invocation, less the 2 s margin: the step (2 s) cannot finish in it.
    h = LambdaHarness(
        env["WORLDFLOW_AWS_QUEUE_URL"], moto.session(), moto.url, timeout=3.0, visibility=1
    )
    while not h.poll_once():
        pass
    assert len(h.failures) == 1  # not acknowledged: the run had a step running
    h.timeout = 10.0
    deadline = time.monotonic() + 20
    while len(h.failures) == 1 and time.monotonic() < deadline:
        if h.poll_once():
            break

    async def result() -> str:
        async with client("aws"):
            return str(await wf.get_run(run_id).result(timeout=10))

    assert asyncio.run(result()) == "done"
    assert SLOW_CALLS == [1]  # the same process finished its attempt: not run again
    assert len(h.failures) == 1


def test_a_webhook_through_an_api_gateway_stage(env: dict[str, str]) -> None:
    """API Gateway (HTTP API, payload 2.0) puts a named stage in the path."""
    event = {
        "version": "2.0",
        "rawPath": "/prod/webhooks/no-such-token",
        "requestContext": {"http": {"method": "POST"}, "stage": "prod"},
        "body": "{}",
    }
    answer = _host.handle(event, LambdaContext(3))
    assert answer["statusCode"] == 404
    assert "no live webhook" in answer["body"]  # the token was looked up: the path was read


DUP_CALLS: collections.Counter[str] = collections.Counter()


@wf.step(name="aws-lambda-tests.add")
async def dup_add(tag: str, i: int) -> int:
    DUP_CALLS[f"{tag}:add:{i}"] += 1
    return i


@wf.step(name="aws-lambda-tests.flaky", retry_delay="200ms")
async def dup_flaky(tag: str) -> str:
    DUP_CALLS[f"{tag}:flaky"] += 1
    if DUP_CALLS[f"{tag}:flaky"] < 2:
        raise ConnectionError("once")
    return "ok"


@wf.workflow(name="aws-lambda-tests.everything")
async def everything(tag: str, token: str) -> dict[str, Any]:
    total = 0
    for i in range(3):
        total += await dup_add(tag, i)
    pair = await asyncio.gather(dup_add(tag, 10), dup_add(tag, 11))
    await wf.sleep(0.5)
    flaky = await dup_flaky(tag)
    received = []
    async for payload in wf.create_hook(token=token):
        received.append(payload)
        if len(received) == 2:
            break
    return {"total": total, "pair": pair, "flaky": flaky, "received": received}


def _queue_is_empty(moto: MotoServer, url: str) -> bool:
    sqs = moto.session().client("sqs", endpoint_url=moto.url)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    names.append("ApproximateNumberOfMessagesDelayed")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names) == 0


def test_every_message_delivered_twice_to_lambda(env: dict[str, str], moto: MotoServer) -> None:
    """Every SQS record is in its batch twice (two copies handled at the same time):
    the log is the same as with single delivery, each step ran once (the flaky one
    twice: it fails once), two hook payloads sent 0.3 s apart arrive in order, and
    the queue empties."""
    url = env["WORLDFLOW_AWS_QUEUE_URL"]

    async def scenario() -> tuple[dict[str, Any], list[Any]]:
        async with client("aws"):
            run = await wf.start(everything, "dup", "dup-token")
            deadline = time.monotonic() + 30
            while "hook_created" not in [e.kind for e in await run.events()]:
                assert time.monotonic() < deadline, [e.kind for e in await run.events()]
                await asyncio.sleep(0.05)
            await wf.resume_hook("dup-token", "first")
            await asyncio.sleep(0.3)
            await wf.resume_hook("dup-token", "second")
            return await run.result(timeout=30), normalized(await run.events())

    logs = []
    for duplicate in (False, True):
        DUP_CALLS.clear()
        harness = LambdaHarness(url, moto.session(), moto.url, duplicate=duplicate, visibility=2)
        with harness:
            result, log = asyncio.run(scenario())
            deadline = time.monotonic() + 20
            while not _queue_is_empty(moto, url):
                assert time.monotonic() < deadline, "the queue did not settle"
                time.sleep(0.2)
        assert not harness.errors, harness.errors
        assert result == {
            "total": 3,
            "pair": [10, 11],
            "flaky": "ok",
            "received": ["first", "second"],
        }
        once = {f"dup:add:{i}": 1 for i in (0, 1, 2, 10, 11)}
        assert dict(DUP_CALLS) == {**once, "dup:flaky": 2}
        logs.append(log)
    assert logs[0] == logs[1]


def test_a_plain_script_executes_no_step_itself(
    env: dict[str, str], harness: LambdaHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script that only calls ``wf.start`` and ``run.result()`` on the aws world (no
    worker, WORLDFLOW_SERVE unset) enqueues and polls: the function executes the steps."""
    (tmp_path / "plain_flows.py").write_text(PLAIN_FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WORLDFLOW_MODULES", "plain_flows")  # the function's setting
    script_env = {k: v for k, v in {**os.environ, **env}.items() if k != "WORLDFLOW_MODULES"}
    script_env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "plain_flows.py")],
        cwd=tmp_path,
        env=script_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run_id, script_pid, result = done.stdout.split(maxsplit=2)
    assert json.loads(result) == [os.getpid(), os.getpid()]  # ran here, in "Lambda"
    assert int(script_pid) != os.getpid()

    async def workers() -> set[str]:
        async with client("aws"):
            events = await wf.get_run(run_id).events()
        return {str(e.data["worker"]) for e in events if e.kind == "step_started"}

    host = _host._host
    assert host is not None and host.engine is not None
    assert asyncio.run(workers()) == {host.engine.worker_id}
    assert f":{script_pid}:" not in host.engine.worker_id


PLAIN_FLOWS = """\
import asyncio
import json
import os

import worldflow as wf


@wf.step(name="plain.where")
async def where() -> int:
    return os.getpid()


@wf.workflow(name="plain.flow")
async def flow() -> list[int]:
    return [await where(), await where()]


async def main() -> None:
    run = await wf.start(flow)
    result = await run.result(timeout=30)
    print(run.id, os.getpid(), json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
"""


@wf.workflow(name="aws-lambda-tests.three")
async def three_payloads(token: str) -> list[str]:
    got: list[str] = []
    async for payload in wf.create_hook(token=token):
        got.append(payload)
        if len(got) == 3:
            break
    return got


def test_a_payload_parked_on_a_stale_container_is_applied(
    env: dict[str, str], moto: MotoServer
) -> None:
    """Two containers, one run: A applied payload 1, B payload 2. Payload 3 reaches A,
    whose warm state still waits for 2: it must be applied after A looks at the log
    again, not given back for ever (each redelivery counts towards the dead-letter
    queue)."""
    make = world_factory(
        {k: env[k] for k in ("WORLDFLOW_AWS_TABLE", "WORLDFLOW_AWS_QUEUE_URL")}
        | {"WORLDFLOW_AWS_BUCKET": env["WORLDFLOW_AWS_BUCKET"]},
        session=moto.session(),
        endpoint_url=moto.url,
        clock=wf.VirtualClock(),
        poll=False,
    )
    a, b = _host.LambdaHost(make), _host.LambdaHost(make)

    def record(out: Outgoing) -> dict[str, Any]:
        body = json.dumps(_queue.encode(out))
        return {"messageId": out.message.id, "receiptHandle": "r", "body": body}

    def invoke(host: _host.LambdaHost, out: Outgoing) -> list[Any]:
        answer = host({"Records": [record(out)]}, LambdaContext(30))
        return list(answer["batchItemFailures"])

    async def start() -> str:
        async with client(make()):
            return (await wf.start(three_payloads, "stale")).id

    try:
        run_id = asyncio.run(start())
        assert invoke(a, Outgoing(Message("start", run_id, "resume"))) == []
        storage = make().storage
        for _ in range(3):
            asyncio.run(storage.next_payload("stale"))

        def payload(n: int) -> Outgoing:
            data = {"token": "stale", "payload": str(n), "n": n}
            return Outgoing(Message(f"p{n}", run_id, "hook", data))

        assert invoke(a, payload(1)) == []
        assert invoke(b, payload(2)) == []
        for _ in range(3):  # SQS brings it back to A, say, each time
            if not invoke(a, payload(3)):
                break
        events = asyncio.run(storage.read_log(run_id)).events
        assert [e.data["n"] for e in events if e.kind == "hook_received"] == [1, 2, 3]
    finally:
        a.close()
        b.close()
