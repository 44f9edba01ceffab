"""Offer a loyalty reward three days after a ride: a durable sleep.

In production ``await wf.sleep("3d")`` really waits three days. The run uses
no compute meanwhile: its log records ``sleep_started`` with the wake-up
time, the World keeps a timer, and whichever worker is alive when the timer
comes due resumes the run, even if every process was restarted in between.

This demo does not wait three days: it gives the World a
:class:`worldflow.VirtualClock` and moves it forward, which is also how you
test code that sleeps.

    python -m examples.loyalty_reward
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from typing import Any

import worldflow as wf
from worldflow.worlds.local import LocalWorld

from ._common import console, fold, format_seconds, wait_for_event


@wf.workflow
async def offer_loyalty_reward(rider_id: str) -> dict[str, Any]:
    await wf.sleep("3d")
    return {"rider_id": rider_id, "reward": "Ride Credit", "offered_at": wf.now()}


async def main() -> int:
    clock = wf.VirtualClock()
    began = time.perf_counter()
    # ":memory:" keeps this demo's run out of ./.worldflow; `async with wf.worker(world)`
    # serves runs on this World for the duration of the block.
    async with wf.worker(LocalWorld(":memory:", clock=clock)):
        run = await wf.start(offer_loyalty_reward, "rider-7")
        await wait_for_event(run, "sleep_started")
        (timer,) = (await fold(run)).timers.values()
        wakes = dt.datetime.fromtimestamp(timer, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"run {run.id} sleeps until {wakes}")

        # In production nothing does this: three real days go by, the run uses no
        # process meanwhile, and whichever worker is up then resumes it, even if
        # every process was restarted in between.
        clock.advance("3d")
        reward = await run.result(timeout=10)
        real = time.perf_counter() - began
        state = await fold(run)

    slept = (state.ended_at or 0) - (state.started_at or 0)
    console.print(f"moved the virtual clock 3 days on: {reward['reward']} for {reward['rider_id']}")
    console.print(
        f"offered {format_seconds(slept)} after the run started, at {reward['offered_at']}"
    )
    console.print(f"that took {format_seconds(real)} of real time")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
