"""``@conformance``: a conformance test as ``async def test_x(self, h)`` (moved out of
``_suite`` so that the suite's mixins in other modules can import it)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._harness import Harness

if TYPE_CHECKING:
    from worldflow._world import World

__all__ = ["conformance"]

Body = Callable[[Any, Harness], Awaitable[None]]


def _scale() -> float:
    """``WORLDFLOW_TEST_TIMEOUT_SCALE``: multiplies the suite's timeouts (a campaign that
    makes the queue slow on purpose, a slow machine)."""
    return max(1.0, float(os.environ.get("WORLDFLOW_TEST_TIMEOUT_SCALE", "1")))


def conformance(fn: Body) -> Callable[[Any, Callable[[], World]], None]:
    """Turn ``async def test_x(self, h)`` into a sync pytest test using ``make_world``."""

    def test(self: Any, make_world: Callable[[], World]) -> None:
        async def main() -> None:
            harness = self.harness_class(
                make_world, always_replay=self.always_replay, serve=self.serve
            )
            async with harness as h:
                await asyncio.wait_for(fn(self, h), self.timeout * _scale())

        asyncio.run(main())

    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    return test
