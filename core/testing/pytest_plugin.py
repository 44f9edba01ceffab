"""worldflow's pytest plugin (entry point ``pytest11``; on once worldflow is installed).

Fixtures:

- ``wf_clock``: a fresh :class:`worldflow.VirtualClock` (at the real time now);
  ``wf_clock.advance("3d")`` ends a three-day sleep in no time.
- ``wf_world``: a fresh in-memory local World on that clock, private to the test:

    async def test_reward(wf_world, wf_clock):
        async with wf.worker(wf_world):
            run = await wf.start(offer_reward, "rider-7")
            await wait_until_asleep(run)  # from worldflow.testing
            wf_clock.advance("3d")
            assert (await run.result(timeout=5))["reward"] == "Ride Credit"

  (with ``asyncio.run`` around it, or pytest-asyncio / anyio's markers).

With them, in :mod:`worldflow.testing`: ``wait_until_asleep(run)``,
``wait_for_hook(run, token)`` and ``replay(log, workflow)``.
"""

from __future__ import annotations

import pytest

import worldflow as wf
from worldflow.world import World


@pytest.fixture
def wf_clock() -> wf.VirtualClock:
    """A virtual clock for one test: time moves only when the test says."""
    return wf.VirtualClock()


@pytest.fixture
def wf_world(wf_clock: wf.VirtualClock) -> World:
    """A fresh in-memory local World on ``wf_clock``, private to this test."""
    from worldflow.worlds.local import LocalWorld

    return LocalWorld(":memory:", clock=wf_clock)
