"""The workflows and steps of the conformance suite's concurrency and rate limit tests.

Every limit is keyed by the test's tag first, so tests (and the warm and
always-replaying classes) never share a limiter.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

import worldflow as wf

ACTIVE: collections.Counter[str] = collections.Counter()
MOST: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


@wf.workflow(
    name="limits.one_per_customer",
    concurrency=wf.Limit(1, key=lambda tag, customer, i: f"{tag}:{customer}"),
)
async def one_per_customer(tag: str, customer: str, i: int) -> int:
    """Holds its customer's slot for a second of the run's time (the clock is virtual)."""
    await wf.sleep("1s")
    return i


@wf.step(name="limits.tick", rate_limit="10/s", key=lambda tag, i: tag)
async def tick(tag: str, i: int) -> int:
    return i


@wf.workflow(name="limits.ticks")
async def ticks(tag: str, first: int, n: int) -> int:
    values = await asyncio.gather(*(tick(tag, first + i) for i in range(n)))
    return sum(values)


@wf.step(name="limits.busy", concurrency=wf.Limit(2, key=lambda tag, i: tag))
async def busy(tag: str, i: int) -> int:
    """Counts how many attempts of it run at once (for the tag), in this process."""
    with _lock:
        ACTIVE[tag] += 1
        MOST[tag] = max(MOST[tag], ACTIVE[tag])
    try:
        await asyncio.sleep(0.2)
    finally:
        with _lock:
            ACTIVE[tag] -= 1
    return i


@wf.workflow(name="limits.fan_out")
async def fan_out(tag: str, n: int) -> list[int]:
    return list(await asyncio.gather(*(busy(tag, i) for i in range(n))))


def _bad_key(tag: str, mode: str) -> Any:
    if mode == "raise":
        raise KeyError("no-such-field")
    if mode == "list":
        return ["not", "a", "key"]
    return tag


@wf.workflow(name="limits.picky", concurrency=wf.Limit(1, key=_bad_key))
async def picky(tag: str, mode: str) -> str:
    return f"{tag}:{mode}"


@wf.step(name="limits.keyed_badly", rate_limit="100/s", key=lambda tag, mode: _bad_key(tag, mode))
async def keyed_badly(tag: str, mode: str) -> str:
    return mode


@wf.workflow(name="limits.calls_keyed_badly")
async def calls_keyed_badly(tag: str, mode: str) -> str:
    try:
        return await keyed_badly(tag, mode)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


EMAILS = wf.Queue("limits.emails", concurrency=1, key=lambda tag: tag)


@wf.workflow(name="limits.welcome", concurrency=EMAILS)
async def welcome(tag: str) -> str:
    await wf.sleep("1s")
    return "welcome"


@wf.workflow(name="limits.goodbye", concurrency=EMAILS)
async def goodbye(tag: str) -> str:
    await wf.sleep("1s")
    return "goodbye"


GATES: dict[str, bool] = {}


@wf.step(
    name="limits.gated_one",
    concurrency=wf.Limit(1, key=lambda tag: tag),
    max_retries=2,
    retry_delay=0,
)
async def gated_one(tag: str) -> int:
    attempt = wf.get_step_metadata().attempt
    while not GATES.get(tag):  # noqa: ASYNC110 - a plain flag the test sets from outside
        await asyncio.sleep(0.005)
    return attempt


@wf.workflow(name="limits.gated_one_flow")
async def gated_one_flow(tag: str) -> int:
    return await gated_one(tag)


@wf.workflow(name="limits.synced")
async def synced(tag: str, n: int) -> int:
    return n
