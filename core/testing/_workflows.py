"""The workflows and steps the conformance suite runs on every World.

They live in an importable module (``worldflow.testing._workflows``) so a
World whose handlers run elsewhere can import them (``WORLDFLOW_MODULES``).
Steps count their executions in :data:`CALLS`, keyed by a per-test tag.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import worldflow as wf
from worldflow import _definitions

CALLS: collections.Counter[str] = collections.Counter()
ATTEMPTS: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
_lock = threading.Lock()


def _count(key: str) -> int:
    with _lock:
        CALLS[key] += 1
        return CALLS[key]


# -- the seed's three examples -------------------------------------------------
@wf.step
async def validate_ride_request(tag: str, request_id: str) -> dict[str, str]:
    _count(f"{tag}:validate")
    return {"rider": f"rider-of-{request_id}", "pickup": "Main St"}


@wf.step(retry_delay=0)
def assign_driver(tag: str, request: dict[str, str]) -> dict[str, str]:
    _count(f"{tag}:assign")
    return {**request, "driver": "driver-7"}


@wf.step
async def notify_rider(tag: str, trip: dict[str, str]) -> str:
    _count(f"{tag}:notify")
    return f"notified {trip['rider']}"


@wf.step
async def create_receipt(tag: str, trip: dict[str, str]) -> dict[str, str]:
    _count(f"{tag}:receipt")
    return {"receipt": f"{trip['rider']} with {trip['driver']}"}


@wf.workflow
async def hail_ride(tag: str, request_id: str) -> dict[str, Any]:
    request = await validate_ride_request(tag, request_id)
    trip = await assign_driver(tag, request)
    confirmation = await notify_rider(tag, trip)
    receipt = await create_receipt(tag, trip)
    return {"confirmation": confirmation, **receipt}


@wf.workflow
async def offer_loyalty_reward(rider_id: str) -> dict[str, str]:
    await wf.sleep("3d")
    return {"rider_id": rider_id, "reward": "Ride Credit"}


@wf.step
def call_payment_provider(ride_id: str, callback: str) -> str:
    """Simulate a provider that calls the webhook back a moment later."""

    def call_back() -> None:
        body = f'{{"ride_id": "{ride_id}", "status": "approved"}}'.encode()
        request = urllib.request.Request(callback, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    threading.Thread(target=call_back, daemon=True).start()
    return "requested"


@wf.workflow
async def validate_payment_method(ride_id: str) -> dict[str, Any]:
    webhook = wf.create_webhook()
    await call_payment_provider(ride_id, webhook.url)
    request = await webhook
    confirmation = request.json()
    return {
        "ride_id": ride_id,
        "status": confirmation["status"],
        "method": request.method,
        "content_type": request.headers.get("content-type"),
    }


# -- sequences and parallelism ---------------------------------------------------
@wf.step
async def add(tag: str, a: int, b: int) -> int:
    _count(f"{tag}:add")
    return a + b


@wf.step
def multiply(tag: str, a: int, b: int) -> int:
    _count(f"{tag}:multiply")
    return a * b


@wf.workflow
async def sequential(tag: str, n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(tag, total, i)
    return total


@wf.workflow
async def fan_out(tag: str, n: int) -> list[int]:
    squares = await asyncio.gather(*(multiply(tag, i, i) for i in range(n)))
    return list(squares)


@wf.workflow
async def fire_and_forget(tag: str) -> str:
    wf_task = add(tag, 1, 2)  # never awaited: the step still runs
    del wf_task
    await wf.sleep(0)
    await add(tag, 10, 20)
    return "done"


@wf.workflow
async def with_tasks(tag: str) -> list[int]:
    async def child(i: int) -> int:
        return await add(tag, i, 100)

    tasks = [asyncio.create_task(child(i)) for i in range(3)]
    return [await t for t in tasks]


# -- retries and errors ------------------------------------------------------------
class InventoryError(Exception):
    """A user exception class, importable where the workflow runs."""


@wf.step(max_retries=3, retry_delay=0)
def flaky(tag: str, fail_times: int) -> str:
    meta = wf.get_step_metadata()
    with _lock:
        ATTEMPTS[tag].append((meta.step_id, meta.attempt))
    if _count(f"{tag}:flaky") <= fail_times:
        raise InventoryError(f"out of stock (attempt {meta.attempt})")
    return f"ok after {meta.attempt}"


@wf.workflow
async def retrying(tag: str, fail_times: int) -> str:
    return await flaky(tag, fail_times)


@wf.workflow
async def retrying_caught(tag: str, fail_times: int) -> str:
    try:
        return await flaky(tag, fail_times)
    except InventoryError as exc:
        return f"caught {type(exc).__name__}: {exc}"


@wf.step(max_retries=5, retry_delay=0)
async def fatal(tag: str) -> None:
    _count(f"{tag}:fatal")
    raise wf.FatalError("card declined")


@wf.workflow
async def fatal_workflow(tag: str) -> str:
    try:
        await fatal(tag)
    except wf.FatalError as exc:
        return f"fatal: {exc}"
    return "unreachable"


@wf.step(max_retries=2, retry_delay="1h")
async def rate_limited(tag: str) -> str:
    if _count(f"{tag}:rate") == 1:
        raise wf.RetryableError("slow down", retry_after="30s")
    return "through"


@wf.workflow
async def rate_limited_workflow(tag: str) -> str:
    return await rate_limited(tag)


@wf.step(max_retries=3, retry_delay="1s", backoff=3.0)
async def always_fails(tag: str) -> None:
    _count(f"{tag}:fails")
    raise ValueError("never works")


@wf.workflow
async def exhausted(tag: str) -> None:
    await always_fails(tag)


@wf.step(max_retries=1, retry_delay=0, timeout="50ms")
async def slow_async(tag: str) -> str:
    if _count(f"{tag}:slow") == 1:
        await asyncio.sleep(5)
    return "fast enough"


@wf.workflow
async def timeout_workflow(tag: str) -> str:
    return await slow_async(tag)


@wf.workflow
async def failing_workflow(message: str) -> None:
    raise InventoryError(message)


# -- metadata and determinism helpers ---------------------------------------------------
@wf.step
async def metadata_step() -> dict[str, Any]:
    meta = wf.get_step_metadata()
    return {"step_id": meta.step_id, "attempt": meta.attempt, "run_id": meta.run_id}


@wf.workflow
async def metadata_workflow() -> dict[str, Any]:
    meta = wf.get_workflow_metadata()
    step_meta = await metadata_step()
    return {
        "run_id": meta.run_id,
        "workflow_name": meta.workflow_name,
        "started_at": meta.started_at,
        "step": step_meta,
        "now": wf.now(),
        "random": wf.random(),
        "uuid": wf.uuid4(),
    }


# -- sleeping -------------------------------------------------------------------------
@wf.workflow
async def sleeper(duration: Any) -> str:
    await wf.sleep(duration)
    return "awake"


@wf.workflow
async def sleep_until(when: dt.datetime) -> dt.datetime:
    await wf.sleep(until=when)
    return wf.now()


@wf.workflow
async def asyncio_sleeper(seconds: float) -> float:
    before = asyncio.get_running_loop().time()
    await asyncio.sleep(seconds)
    return asyncio.get_running_loop().time() - before


# -- hooks and webhooks ---------------------------------------------------------------------
@wf.workflow
async def one_hook(token: str) -> Any:
    hook = wf.create_hook(token=token)
    return await hook


@wf.workflow
async def many_payloads(token: str, n: int) -> list[Any]:
    hook = wf.create_hook(token=token)
    received = []
    async for payload in hook:
        received.append(payload)
        if len(received) == n:
            break
    return received


@wf.step
async def slow_step(tag: str) -> str:
    _count(f"{tag}:slow_step")
    return "slept"


@wf.workflow
async def hook_before_await(tag: str, token: str) -> list[Any]:
    hook = wf.create_hook(token=token)
    await wf.sleep("1h")  # payloads resumed meanwhile must wait, in order
    first = await hook
    second = await hook
    return [first, second]


@wf.workflow
async def hook_with_timeout(token: str, seconds: float) -> Any:
    hook = wf.create_hook(token=token)
    try:
        return await asyncio.wait_for(hook, timeout=seconds)
    except TimeoutError:
        return "timed out"


@wf.workflow
async def race_hook_and_sleep(token: str) -> str:
    hook = wf.create_hook(token=token)
    timer = asyncio.ensure_future(wf.sleep("1d"))
    done, _ = await asyncio.wait({hook, timer}, return_when=asyncio.FIRST_COMPLETED)
    return "hook" if hook in done else "timer"


@wf.workflow
async def webhook_echo() -> dict[str, Any]:
    webhook = wf.create_webhook()
    await record_url(webhook.url)
    request = await webhook
    return {"method": request.method, "body": request.text(), "json": request.json()}


@wf.step
async def record_url(url: str) -> str:
    return url


# -- cancellation ---------------------------------------------------------------------------
@wf.step
async def cleanup(tag: str) -> str:
    _count(f"{tag}:cleanup")
    return "cleaned"


@wf.workflow
async def cancellable(tag: str) -> str:
    try:
        await wf.sleep("1h")
    except asyncio.CancelledError:
        await cleanup(tag)
        raise
    return "finished"


# -- serialization ---------------------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    amount: decimal.Decimal
    tags: frozenset[str]
    placed: dt.datetime


try:
    import pydantic
except ImportError:  # pragma: no cover - pydantic is optional
    Item: Any = None
else:

    class Item(pydantic.BaseModel):  # type: ignore[no-redef]
        name: str
        price: decimal.Decimal


@wf.step
async def echo_step(value: Any) -> Any:
    return value


@wf.workflow
async def echo(value: Any) -> Any:
    return await echo_step(value)


@contextlib.contextmanager
def unregistered(workflow: wf.Workflow[Any, Any]) -> Iterator[None]:
    """While inside, this process does not know ``workflow`` (as if its module were not
    deployed): a message for one of its runs fails with ``WorkflowNotFound``."""
    definition = _definitions._WORKFLOWS.pop(workflow.name)
    try:
        yield
    finally:
        _definitions._WORKFLOWS[workflow.name] = definition


def sample_values() -> dict[str, Any]:
    """One value of every type the codec must round-trip exactly."""
    values: dict[str, Any] = {
        "none": None,
        "bool": True,
        "int": 2**70,
        "float": 1.5,
        "str": "héllo",
        "list": [1, "a", None],
        "dict": {"a": 1, "$t": "not a tag"},
        "int_keys": {1: "one", 2: "two"},
        "datetime": dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5, 6),
        "date": dt.date(2026, 2, 28),
        "timedelta": dt.timedelta(days=3, seconds=7),
        "decimal": decimal.Decimal("12.50"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "bytes": b"\x00\xffdata",
        "tuple": (1, (2, 3)),
        "set": {"b", "a", "c"},
        "frozenset": frozenset({3, 1}),
        "enum": Color.GREEN,
        "dataclass": Order(
            "o-1",
            decimal.Decimal("9.99"),
            frozenset({"x"}),
            dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        ),
    }
    if Item is not None:
        values["pydantic"] = Item(name="pen", price=decimal.Decimal("1.20"))
    return values


# -- determinism ---------------------------------------------------------------------------------
VERSION = {"value": 1}


@wf.step
async def step_a() -> str:
    return "a"


@wf.step
async def step_b() -> str:
    return "b"


@wf.workflow
async def changing(token: str) -> str:
    first = await (step_a() if VERSION["value"] == 1 else step_b())
    await wf.create_hook(token=token)
    second = await step_a()
    return first + second


@wf.workflow
async def hook_as_task(token: str) -> list[Any]:
    hook = wf.create_hook(token=token)
    # create_task() takes any awaitable in a workflow, as api.md promises; type
    # checkers know only coroutines there (asyncio.ensure_future is the typed spelling).
    first: asyncio.Task[Any] = asyncio.create_task(hook)  # type: ignore[arg-type]
    timer: asyncio.Task[None] = asyncio.create_task(wf.sleep("1h"))  # type: ignore[arg-type]
    done, _ = await asyncio.wait({first, timer}, return_when=asyncio.FIRST_COMPLETED)
    second = await asyncio.wait_for(hook, timeout=60)
    return [await first, second, timer in done]


GATES: dict[str, bool] = {}


@wf.step(max_retries=2, retry_delay=0)
async def gated(tag: str) -> int:
    attempt = wf.get_step_metadata().attempt
    while not GATES.get(tag):  # noqa: ASYNC110 - a plain flag the test sets from outside
        await asyncio.sleep(0.005)
    return attempt


@wf.workflow
async def gated_workflow(tag: str) -> int:
    return await gated(tag)


@wf.step
async def returns_a_lock() -> Any:
    return threading.Lock()


@wf.workflow
async def unserializable_step_result() -> str:
    try:
        await returns_a_lock()
    except TypeError as exc:  # SerializationError is a TypeError
        return f"{type(exc).__name__}: {exc}"
    return "unreachable"


@wf.workflow
async def unserializable_return() -> Any:
    return threading.Event()


@wf.workflow
async def guarded(tag: str) -> str:
    try:
        await wf.sleep("1s")
        await add(tag, 1, 1)
        await wf.sleep("1s")
    finally:
        await cleanup(tag)  # must run once, when the code really gets here
    return "ok"


@wf.workflow
async def hook_conflict(token: str) -> str:
    try:
        return str(await wf.create_hook(token=token))
    except wf.HookConflict as exc:
        return f"conflict: {exc.holder}"


class PaymentDeclined(Exception):
    """An exception whose __init__ takes other arguments than a message."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"declined with code {code}: {reason}")
        self.code = code
        self.reason = reason


@wf.step(max_retries=0)
async def decline(code: int) -> None:
    raise PaymentDeclined(code, "insufficient funds")


@wf.workflow
async def declined(code: int) -> dict[str, Any]:
    try:
        await decline(code)
    except PaymentDeclined as exc:
        return {"message": str(exc), "code": exc.code, "reason": exc.reason}
    return {}


class Point:
    """A class of the user's own, neither dataclass nor model: stored via wf.register_type."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)

    __hash__ = None  # type: ignore[assignment]


wf.register_type(
    Point, name="worldflow.testing.Point", encode=lambda p: [p.x, p.y], decode=lambda v: Point(*v)
)


@wf.step
async def move(point: Point, dx: int) -> Point:
    return Point(point.x + dx, point.y)


@wf.workflow
async def walk(start: Point, steps: int) -> list[Point]:
    path = [start]
    for _ in range(steps):
        path.append(await move(path[-1], 1))
    return path


@wf.workflow
async def hook_with_asyncio_timeout(token: str, seconds: float) -> Any:
    hook = wf.create_hook(token=token)
    try:
        async with asyncio.timeout(seconds):
            return await hook
    except TimeoutError:
        return "timed out"
