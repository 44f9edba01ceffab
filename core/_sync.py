"""Blocking entry points, for code that has no event loop of its own: a Django or
Flask view, a gunicorn sync worker, a script, a thread.

``wf.start_sync``, ``wf.resume_hook_sync``, ``wf.get_run(...).result_sync()``
and the other ``*_sync`` methods run their coroutine on one event loop that
worldflow keeps in a daemon thread of the process (started on first use) and
block the calling thread until it is done. So:

- the worldflow runtime lives on that loop, made from the configuration as
  ``wf.start`` makes it (on the local and postgres worlds it also serves, so a
  plain Flask process executes the runs it starts, in that thread);
- a call made from inside a running event loop's thread (an async view that
  calls a sync helper) blocks that loop for the call, but works: the work
  happens on worldflow's own loop, never on the caller's;
- after ``fork`` (gunicorn's pre-fork workers) a child starts its own loop and
  runtime on first use, never the parent's;
- at interpreter exit the runtime is closed (steps still running get the
  ``grace`` of ``wf.configure``'s default, none), its World's connections
  released.

Calling a ``*_sync`` function from worldflow's own loop (inside a step that
the runtime runs on it) would wait on itself: that raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

if TYPE_CHECKING:
    from ._api import Run
    from ._definitions import Workflow

P = ParamSpec("P")
R = TypeVar("R")
__all__ = ["resume_hook_sync", "run_sync", "start_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = 0


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _pid
    with _lock:
        if _loop is not None and _pid == os.getpid() and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name="worldflow-sync", daemon=True)
        thread.start()
        started.wait()
        _loop, _thread, _pid = loop, thread, os.getpid()
        return loop


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on worldflow's background loop; block until it is done.

    ``timeout``: seconds to wait for it (``TimeoutError`` after, and the
    coroutine is cancelled); ``None`` waits as long as it takes.
    """
    loop = _background_loop()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError(
            "a worldflow *_sync function cannot be called from worldflow's own event "
            "loop (inside a step it runs): await the async function instead"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        if future.done():
            raise  # the coroutine's own TimeoutError (e.g. a result's timeout)
        future.cancel()
        raise TimeoutError(f"gave up waiting after {timeout}s") from None


def start_sync(
    workflow: Workflow[P, R] | Callable[P, Coroutine[Any, Any, R]] | str,
    *args: Any,
    id: str | None = None,
    on_conflict: Literal["return", "raise"] = "return",
    **kwargs: Any,
) -> Run[R]:
    """``wf.start`` for code without an event loop (a Django view, a script): starts
    the run and returns its :class:`wf.Run` once the start is recorded.

    >>> run = wf.start_sync(checkout, "order-1", id="order-1")
    >>> run.result_sync(timeout=30)
    """
    from ._api import start

    return run_sync(start(workflow, *args, id=id, on_conflict=on_conflict, **kwargs))


def resume_hook_sync(token: str, payload: Any = None) -> Run[Any]:
    """``wf.resume_hook`` for code without an event loop: returns the run."""
    from ._api import resume_hook

    return run_sync(resume_hook(token, payload))


def _close_at_exit() -> None:
    """Close the background loop's runtime, if this process made one."""
    with _lock:
        loop, thread = _loop, _thread
        if loop is None or thread is None or _pid != os.getpid() or not thread.is_alive():
            return

    async def close() -> None:
        from ._api import _runtimes

        ready = _runtimes.pop(loop, None)
        if ready is not None and ready.done() and ready.exception() is None:
            await ready.result().close()

    with contextlib.suppress(Exception):  # at exit, with nothing left to tell
        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


atexit.register(_close_at_exit)
