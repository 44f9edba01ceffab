"""Time, injected: the wall clock for production and a virtual clock for tests.

Worlds read time only through a :class:`Clock`, so a test can run
``sleep("3d")`` in milliseconds by advancing a :class:`VirtualClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

from ._duration import parse_duration

__all__ = ["Clock", "SystemClock", "VirtualClock", "sleep_until_or_woken"]


@runtime_checkable
class Clock(Protocol):
    """What a World reads time from: the wall clock, or a virtual one in tests."""

    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        delay = when - time.time()
        while delay > 0:
            await asyncio.sleep(delay)
            delay = when - time.time()


class VirtualClock:
    """A clock that moves only when told to: ``advance("3d")`` fires what is due.

    >>> clock = VirtualClock(start=1_700_000_000.0)
    >>> clock.advance("1h")
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (when, next(self._counter), fut))
        await fut

    def advance(self, duration: object) -> None:
        """Move time forward and wake every sleeper that is now due."""
        self.set(self._now + parse_duration(duration, what="advance"))

    def set(self, when: float) -> None:
        """Jump to ``when`` (never backwards)."""
        self._now = max(self._now, when)
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_wake, fut)

    def next_due(self) -> float | None:
        """When the earliest sleeper wakes, if any (for time-skipping tests)."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        return self._waiters[0][0] if self._waiters else None


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def sleep_until_or_woken(clock: Clock, when: float, woken: asyncio.Event) -> None:
    """Return at ``when`` on ``clock``, or as soon as ``woken`` is set, whichever is first.

    What a World's timer loop waits on: the earliest due message, unless an
    earlier one arrives meanwhile (it sets ``woken``).
    """
    loop = asyncio.get_running_loop()
    sleeper = loop.create_task(clock.sleep_until(when))
    waker = loop.create_task(woken.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waker.cancel()
