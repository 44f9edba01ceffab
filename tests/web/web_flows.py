"""Workflows for the web UI's tests and bench: retries, failures, sleeps, hooks, hostile input.

Imported by name: in the test process from this folder (conftest.py puts it on
sys.path), and by ``worldflow worker web_flows`` run in this folder.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import worldflow as wf

FAILS: Counter[str] = Counter()


@wf.step(retry_delay="300ms", backoff=1.0, name="web.charge")
async def charge(order_id: str, fail_times: int) -> dict[str, Any]:
    FAILS[order_id] += 1
    if FAILS[order_id] <= fail_times:
        raise ConnectionError(f"card processor timed out (try {FAILS[order_id]})")
    return {"order": order_id, "charged": 42.5}


@wf.step(name="web.ship")
async def ship(order_id: str) -> str:
    return f"shipped {order_id}"


@wf.step(max_retries=1, retry_delay="100ms", name="web.explode")
def explode(reason: str) -> None:
    raise ValueError(f"cannot go on: {reason}")


@wf.workflow(name="web.order")
async def order(order_id: str, fail_times: int = 0) -> dict[str, Any]:
    receipt = await charge(order_id, fail_times)
    note = await ship(order_id)
    return {"receipt": receipt, "note": note}


@wf.workflow(name="web.doomed")
async def doomed(reason: str) -> None:
    await ship("before the end")
    await explode(reason)


@wf.workflow(name="web.nap")
async def nap(order_id: str) -> str:
    await ship(order_id)
    await wf.sleep("1h")
    return await ship(order_id + " after the nap")


@wf.workflow(name="web.approval")
async def approval(order_id: str) -> Any:
    await ship(order_id)
    answer = await wf.create_hook(token=f"approve:{order_id}")
    await ship(f"{order_id} approved")
    return answer


@wf.workflow(name="web.many_steps")
async def many_steps(count: int) -> int:
    for i in range(count):
        await ship(f"part {i}")
    return count


@wf.step(name="web.pack")
async def pack(item: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"packed {item}"


@wf.workflow(name="web.tour")
async def tour(order_id: str) -> dict[str, Any]:
    """A bit of everything, for the timeline screenshot: retries, parallel steps, a sleep, a hook."""
    receipt = await charge(order_id, 2)
    packed = await asyncio.gather(pack("box", 0.4), pack("letter", 0.7), pack("label", 0.2))
    await wf.sleep("1s")
    review = await wf.create_hook(token=f"review:{order_id}")
    note = await ship(order_id)
    return {"receipt": receipt, "packed": packed, "review": review, "note": note}
