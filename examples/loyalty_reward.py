"""Offer a loyalty reward three days after a ride: a durable sleep.

In production ``await wf.sleep("3d")`` really waits three days. The run uses
no compute meanwhile: its log records ``sleep_started`` with the wake-up
time, the World keeps a timer, and whichever worker is alive when the timer
comes due resumes the run, even if every process was restarted in between.

This demo does not wait three days. On the local world it gives the World a
:class:`worldflow.VirtualClock` and moves it forward, which is also how you
test code that sleeps. On another configured World (``WORLDFLOW_WORLD=aws``,
``gcp``, ``postgres``), whose clock is the real one, it wakes the sleep early,
as ``worldflow sleeps wake RUN_ID`` does.

    python -m examples.loyalty_reward
    WORLDFLOW_WORLD=gcp python -m examples.loyalty_reward
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import worldflow as wf
from worldflow.worlds.local import LocalWorld

from ._common import console, fold, format_seconds, wait_for_event


@wf.workflow
async def offer_loyalty_reward(rider_id: str) -> dict[str, Any]:
    await wf.sleep("3d")
    return {"rider_id": rider_id, "reward": "Ride Credit", "offered_at": wf.now()}


async def main() -> int:
    world = os.environ.get("WORLDFLOW_WORLD", "local")
    began = time.perf_counter()
    if world == "local":
        clock = wf.VirtualClock()
        # ":memory:" keeps this demo's run out of ./.worldflow; `async with wf.worker(world)`
        # serves runs on this World for the duration of the block.
        async with wf.worker(LocalWorld(":memory:", clock=clock)):
            reward, state = await _offer(lambda run: _advance(clock))
    else:
        # The configured World, on the real clock: its workers run the workflow.
        reward, state = await _offer(lambda run: run.wake())
    real = time.perf_counter() - began
    slept = (state.ended_at or 0) - (state.started_at or 0)
    console.print(f"{reward['reward']} for {reward['rider_id']}, offered at {reward['offered_at']}")
    console.print(f"{format_seconds(slept)} after the run started, on the {world} world")
    console.print(f"that took {format_seconds(real)} of real time")
    return 0


async def _advance(clock: wf.VirtualClock) -> None:
    # In production nothing does this: three real days go by, the run uses no
    # process meanwhile, and whichever worker is up then resumes it, even if
    # every process was restarted in between.
    console.print("moving the virtual clock 3 days on")
    clock.advance("3d")


async def _offer(
    hurry: Callable[[wf.Run[dict[str, Any]]], Awaitable[None]],
) -> tuple[dict[str, Any], Any]:
    run = await wf.start(offer_loyalty_reward, "rider-7")
    await wait_for_event(run, "sleep_started", timeout=60)
    (timer,) = (await fold(run)).timers.values()
    wakes = dt.datetime.fromtimestamp(timer, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    console.print(f"run {run.id} sleeps until {wakes}")
    await hurry(run)
    reward = await run.result(timeout=60)
    return reward, await fold(run)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
