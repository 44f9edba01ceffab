"""Helpers to test against AWS's protocols on localhost: a moto server, sessions.

Needs ``moto[server]`` (the test extra). Used by worldflow's own tests and
usable in a project's tests::

    with MotoServer() as moto:
        settings = setup("wf-test", session=moto.session(), endpoint_url=moto.url)
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from worldflow.world import SystemClock

if TYPE_CHECKING:
    from worldflow.world import Clock

    from ._world import AwsWorld

__all__ = [
    "InvocationError",
    "LambdaContext",
    "LambdaHarness",
    "MotoServer",
    "RuntimeApi",
    "ScheduleFirer",
    "ShiftedClock",
    "WebhookGateway",
    "fire_due_schedules",
    "world_factory",
]


def world_factory(
    settings: dict[str, str],
    *,
    session: Any,
    endpoint_url: str,
    clock: Clock,
    public_url: str | None = None,
    **options: Any,
) -> Callable[..., AwsWorld]:
    """A conformance suite's ``make_world``: new AwsWorlds over the resources ``setup``
    made, sharing ``clock`` and one boto3 session (it caches the service models, ~0.2 s
    a client), with short polls and leases so that tests go fast. ``options`` (and
    keyword arguments to the factory) go to :class:`AwsWorld` (``poll=False``...)."""
    from ._world import AwsWorld

    def make(**more: Any) -> AwsWorld:
        kwargs: dict[str, Any] = {
            "poll_wait": 1,
            "visibility": 20,
            "heartbeat": 0.5,
            "lease": 2.0,
            **options,
            **more,
        }
        return AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            settings["WORLDFLOW_AWS_QUEUE_URL"],
            settings["WORLDFLOW_AWS_BUCKET"],
            clock=clock,
            session=session,
            endpoint_url=endpoint_url,
            public_url=public_url,
            **kwargs,
        )

    return make


_DYNAMODB = threading.RLock()


def _serialize_dynamodb() -> None:
    """Make moto's DynamoDB answer one request at a time (once per process).

    moto (5.2) is not atomic under concurrent requests where DynamoDB is. It runs a
    ``TransactWriteItems`` by deep-copying each table it touches and, if a condition
    fails, putting the copies back: a write another request thread committed in
    between is undone. Seen here: a second ``wf.start`` of the same run id (its
    transaction fails on ``attribute_not_exists``) undid the run's first append,
    racing with it, and the run lost every append race after that
    (``test_idempotent_start``, 4 runs in 12). And it applies an update's ``SET``
    actions one by one on the stored item, so a read in between sees half of it (a
    run ``failed`` without its error yet). One lock around each request keeps both
    to what DynamoDB does.
    """
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler, "_worldflow_serialized", False):
        return
    call_action = DynamoHandler.call_action

    @functools.wraps(call_action)
    def one_at_a_time(self: Any) -> Any:
        with _DYNAMODB:
            return call_action(self)

    DynamoHandler.call_action = one_at_a_time  # type: ignore[method-assign]
    DynamoHandler._worldflow_serialized = True  # type: ignore[attr-defined]


class MotoServer:
    """A moto server on 127.0.0.1 (a free port), in a thread of this process.
    Its DynamoDB answers one request at a time (see :func:`_serialize_dynamodb`)."""

    region = "us-east-1"

    def __init__(self, port: int | None = None) -> None:
        from moto.server import ThreadedMotoServer

        _serialize_dynamodb()

        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> MotoServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every resource (moto's reset endpoint)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def session(self) -> Any:
        """A boto3 session with moto's dummy credentials (nothing read from the machine)."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=self.region,
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and so a subprocess) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


def fire_due_schedules(session: Any, endpoint_url: str, now: float | None = None) -> int:
    """Do what EventBridge Scheduler does and moto does not: every one-time schedule due
    by ``now`` (default: the wall clock) sends its target's input to its SQS queue, and
    is deleted if its ``ActionAfterCompletion`` says so. Only moto's Scheduler and SQS
    APIs are used (list, get, send, delete). Returns how many fired."""
    import calendar

    scheduler = session.client("scheduler", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    now = time.time() if now is None else now
    fired = 0
    for page in scheduler.get_paginator("list_schedules").paginate():
        for summary in page["Schedules"]:
            group, name = summary.get("GroupName", "default"), summary["Name"]
            schedule = scheduler.get_schedule(GroupName=group, Name=name)
            expression = str(schedule["ScheduleExpression"])
            if not expression.startswith("at("):
                continue
            due = calendar.timegm(time.strptime(expression[3:-1], "%Y-%m-%dT%H:%M:%S"))
            if due > now or schedule.get("State") == "DISABLED":
                continue
            target = schedule["Target"]
            arn = str(target["Arn"]).split(":")
            if arn[2] != "sqs":
                continue
            url = sqs.get_queue_url(QueueName=arn[5], QueueOwnerAWSAccountId=arn[4])["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=target["Input"])
            fired += 1
            if schedule.get("ActionAfterCompletion") == "DELETE":
                scheduler.delete_schedule(GroupName=group, Name=name)
            else:  # a one-time schedule that stays fires once
                scheduler.update_schedule(
                    GroupName=group,
                    Name=name,
                    ScheduleExpression=expression,
                    FlexibleTimeWindow=schedule["FlexibleTimeWindow"],
                    Target=target,
                    State="DISABLED",
                )
    return fired


class ShiftedClock(SystemClock):
    """The wall clock, ``offset`` seconds ahead (``skip(86400)``): a World on it is on the
    real clock (SQS delays, EventBridge schedules), yet a test need not wait out a day's
    sleep."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds

    async def sleep_until(self, when: float) -> None:
        import asyncio

        # Polled: skip() moves the time forward under a sleeper.
        while (delay := when - self.now()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(delay, 0.5))


class ScheduleFirer:
    """Fires due schedules (:func:`fire_due_schedules`) every ``every`` seconds on a daemon
    thread, while in its ``with``; ``now``: the clock to compare with (default: the wall
    clock). ``fired`` counts them."""

    def __init__(
        self,
        session: Any,
        endpoint_url: str,
        *,
        every: float = 0.2,
        now: Callable[[], float] | None = None,
    ) -> None:
        import threading

        self.session = session
        self.endpoint_url = endpoint_url
        self.every = every
        self.now = now or time.time
        self.fired = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="schedule-firer")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.fired += fire_due_schedules(self.session, self.endpoint_url, self.now())
            except Exception as exc:
                self.errors.append(exc)

    def __enter__(self) -> ScheduleFirer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class WebhookGateway:
    """An HTTP server that plays a Lambda function URL: each request becomes a
    payload-2.0 event for ``handler`` (default ``worldflow.worlds.aws.lambda_handler``,
    which builds its World from the environment), and its answer the HTTP response.
    A handler of its own (a ``LambdaHost``) plays another Lambda container."""

    def __init__(self, handler: Any = None) -> None:
        import http.server
        import threading

        gateway = self
        self.handler = handler

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = gateway.call(
                    self.command, self.path, dict(self.headers.items()), body, gateway.handler
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @staticmethod
    def call(
        method: str, target: str, headers: dict[str, str], body: bytes, handler: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        import base64
        from urllib.parse import urlsplit

        from . import lambda_handler

        parts = urlsplit(target)
        event = {
            "version": "2.0",
            "rawPath": parts.path,
            "rawQueryString": parts.query,
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {"http": {"method": method, "path": parts.path}, "stage": "$default"},
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }
        answer = (handler or lambda_handler)(event, None)
        payload = str(answer.get("body", "")).encode()
        return int(answer["statusCode"]), dict(answer.get("headers", {})), payload

    def __enter__(self) -> WebhookGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.handler is None:
            from . import _host

            _host.reset()
        elif hasattr(self.handler, "close"):
            self.handler.close()


class LambdaContext:
    """What Lambda passes as ``context``: the invocation's identity and deadline."""

    def __init__(self, timeout: float, function_name: str = "worldflow") -> None:
        import uuid

        self._deadline = time.monotonic() + timeout
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = (
            f"arn:aws:lambda:{MotoServer.region}:123456789012:function:{function_name}"
        )
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LambdaHarness:
    """Plays Lambda's SQS event source mapping for a handler, as AWS drives it.

    Receives up to ``batch_size`` messages (long polling), invokes the handler
    with real SQS event records, one invocation at a time, then deletes the
    records that succeeded; those named in ``batchItemFailures`` (or all of
    them, if the invocation raised) are left to reappear after their
    visibility timeout (which the handler may have changed). ``duplicate``:
    every record is in its batch twice (at-least-once delivery at its worst:
    two copies handled at the same time). ``run()`` polls on a daemon thread
    until ``stop()``.
    """

    def __init__(
        self,
        queue_url: str,
        session: Any,
        endpoint_url: str,
        *,
        handler: Any = None,
        batch_size: int = 10,
        timeout: float = 30.0,
        visibility: int = 5,
        wait: int = 1,
        duplicate: bool = False,
    ) -> None:
        import threading

        self.queue_url = queue_url
        self.duplicate = duplicate
        self.sqs = session.client("sqs", endpoint_url=endpoint_url)
        if handler is None:
            from . import lambda_handler

            handler = lambda_handler
        self.handler = handler
        self.batch_size = batch_size
        self.timeout = timeout
        self.visibility = visibility
        self.wait = wait
        self.invocations = 0
        self.failures: list[str] = []
        self.errors: list[BaseException] = []
        self._arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lambda-harness")

    def poll_once(self) -> int:
        """One receive and (if anything came) one invocation; returns the record count."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait,
            VisibilityTimeout=self.visibility,
            MessageSystemAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        records = [self._record(m) for m in messages]
        if self.duplicate:
            records = [r for r in records for _ in range(2)]
        self.invocations += 1
        try:
            result = self.handler({"Records": records}, LambdaContext(self.timeout))
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        except Exception as exc:  # the whole batch comes back after its visibility timeout
            self.errors.append(exc)
            failed = {m["MessageId"] for m in messages}
        self.failures += sorted(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done[start : start + 10])
                ],
            )
        return len(messages)

    def _record(self, m: dict[str, Any]) -> dict[str, Any]:
        import hashlib

        return {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": MotoServer.region,
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:
                self.errors.append(exc)
                time.sleep(0.2)

    def run(self) -> LambdaHarness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.wait + self.timeout)

    def __enter__(self) -> LambdaHarness:
        return self.run()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RuntimeApi:
    """A minimal Lambda Runtime API (2018-06-01) on 127.0.0.1, for a real runtime
    client (``python -m awslambdaric HANDLER``) in another process.

    ``invoke(event)`` queues an invocation, which the client takes with ``GET
    .../invocation/next``, and returns what the client posts back to
    ``.../response`` (or raises :class:`InvocationError` for ``.../error``).
    ``invoke`` suits :class:`LambdaHarness` as its ``handler``.
    """

    PREFIX = "/2018-06-01/runtime"

    def __init__(self, timeout: float = 30.0) -> None:
        import http.server
        import queue
        import threading

        self.timeout = timeout
        self._next: queue.Queue[tuple[str, bytes, float]] = queue.Queue()
        self._results: dict[str, queue.Queue[tuple[bool, Any]]] = {}
        self.init_error: Any = None
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"{}", **headers: str) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{api.PREFIX}/invocation/next":
                    self._reply(404)
                    return
                request_id, body, deadline = api._next.get()
                self._reply(
                    200,
                    body,
                    Lambda_Runtime_Aws_Request_Id=request_id,
                    Lambda_Runtime_Deadline_Ms=str(int(deadline * 1000)),
                    Lambda_Runtime_Invoked_Function_Arn=(
                        f"arn:aws:lambda:{MotoServer.region}:123456789012:function:worldflow"
                    ),
                    Lambda_Runtime_Trace_Id="Root=1-00000000-000000000000000000000000;Sampled=0",
                )

            def do_POST(self) -> None:
                import json

                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                if self.path == f"{api.PREFIX}/init/error":
                    api.init_error = payload.decode(errors="replace")
                    self._reply(202)
                    return
                parts = self.path[len(api.PREFIX) :].strip("/").split("/")
                if len(parts) != 3 or parts[0] != "invocation" or parts[1] not in api._results:
                    self._reply(404)
                    return
                ok = parts[2] == "response"
                value = json.loads(payload) if payload else None
                api._results[parts[1]].put((ok, value))
                self._reply(202)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A client that stops while it waits for the next invocation is no error here.
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign,assignment]
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def invoke(self, event: Any, context: Any = None) -> Any:
        import json
        import queue
        import uuid

        request_id = str(uuid.uuid4())
        results: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._results[request_id] = results
        try:
            self._next.put((request_id, json.dumps(event).encode(), time.time() + self.timeout))
            try:
                ok, value = results.get(timeout=self.timeout + 5)
            except queue.Empty:
                raise TimeoutError(f"no answer to invocation {request_id}") from None
        finally:
            self._results.pop(request_id, None)
        if not ok:
            raise InvocationError(value)
        return value

    def __enter__(self) -> RuntimeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class InvocationError(Exception):
    """The function reported an error (the body it posted is ``args[0]``)."""
