"""What a World's host drives: the engine of one process, as a small public object.

A host is the process entry point of a World: the local world's own process,
a long-running queue consumer, the Lambda handler, the Cloud Run app. It opens
an engine with :func:`serve` and hands it what arrives:

>>> async with worldflow.world.serve(world) as engine:
...     disposition = await engine.deliver(delivery, deadline=loop.time() + 25)
...     status, body = await engine.answer_webhook("POST", "/webhooks/abc", headers, body)

A World whose queue is pulled (``Queue.start``) needs no host code at all:
``wf.worker()`` and ``worldflow worker`` open the engine and the queue
delivers to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from ._intake import DEFAULT_MAX_BODY, Reply, answer
from ._world import Delivery, Disposition, World

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["Engine", "current_engine", "serve"]


class Engine:
    """The serving engine of this process, on the running loop."""

    __slots__ = ("_rt",)

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def __repr__(self) -> str:
        return f"<Engine {self._rt.world!r} worker={self.worker_id!r}>"

    @property
    def world(self) -> World:
        return self._rt.world

    @property
    def worker_id(self) -> str:
        return self._rt.worker_id

    @property
    def lease_until(self) -> float:
        """Wall-clock time until which this worker's last heartbeat proves it alive."""
        return self._rt.lease_until

    @property
    def idle(self) -> bool:
        """No step attempt of this process runs and every batch is committed."""
        return self._rt.idle

    async def deliver(
        self, delivery: Delivery, *, hold: float | None = None, deadline: float | None = None
    ) -> Disposition:
        """Handle one delivered message: acknowledge it, or deliver it again later.

        ``hold``: how long this host may keep a message that came early (default
        ``World.hold``); ``deadline``: the loop time (``loop.time()``) by which it
        must answer, for hosts with a time limit.
        """
        return await self._rt.deliver(delivery, hold=hold, deadline=deadline)

    async def answer_webhook(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        query: str = "",
        *,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> Reply:
        """One complete HTTP request to ``/webhooks/<token>`` (path percent-decoded,
        header names in lower case): the status and JSON body to answer with."""
        return await answer(self._rt, method, path, headers, body, query, max_body=max_body)

    async def heartbeat(self) -> None:
        """Prove this worker alive for the World's lease from now (hosts that are frozen
        between requests call it at the start of each)."""
        await self._rt.heartbeat()

    async def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no step attempt of this process runs."""
        return await self._rt.drain(timeout)


@contextlib.asynccontextmanager
async def serve(
    world: str | World | Callable[[], World] | None = None,
    *,
    always_replay: bool | None = None,
    grace: float = 0.0,
) -> AsyncIterator[Engine]:
    """Serve ``world`` (default: the configured one) on this loop for the block.

    The same as ``wf.worker()``, giving the host its :class:`Engine`. On leaving,
    steps still running get up to ``grace`` seconds to record their results.
    """
    from ._api import _serving

    async with _serving(world, always_replay, serve=True, grace=grace) as runtime:
        yield Engine(runtime)


async def current_engine(*, create: bool = True) -> Engine:
    """The engine of this loop's runtime.

    With ``create`` (the default) a runtime is made from the configuration when
    none runs on this loop (as ``wf.start`` does); with ``create=False`` that is
    a ``RuntimeError`` instead (a host whose own runtime is shutting down).
    """
    import asyncio

    from ._api import _runtime, _runtimes

    if not create:
        ready = _runtimes.get(asyncio.get_running_loop())
        if ready is None or not ready.done() or ready.exception() is not None:
            raise RuntimeError("no worldflow runtime runs on this event loop")
        return Engine(ready.result())
    return Engine(await _runtime())
