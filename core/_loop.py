"""A deterministic asyncio event loop for workflow code.

Workflow code runs on this loop, never on the real one: it has no I/O and no
clock of its own. ``time()`` is the run's logical time (the timestamp of the
event being replayed), ``call_at``/``call_later`` become durable timers (so
``asyncio.sleep``, ``wait_for`` and ``asyncio.timeout`` are durable), and the
loop runs only when the engine drives it with :meth:`WorkflowLoop.run_ready`,
until nothing is ready. This is the approach of Temporal's Python SDK.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import weakref
from asyncio import events
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from ._instance import WorkflowInstance

_T = TypeVar("_T")

log = logging.getLogger("worldflow")

__all__ = ["WorkflowLoop", "current_instance"]


class WorkflowLoop(asyncio.AbstractEventLoop):
    """The loop one workflow run executes on."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self.instance = instance
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._time = 0.0
        self._closed = False
        self._exception_handler: Any = None
        self._task_factory: Any = None
        self._tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    # -- driving ---------------------------------------------------------
    def set_time(self, when: float) -> None:
        self._time = when

    def run_ready(self) -> None:
        """Run callbacks until none is ready; workflow code runs only here."""
        ready = self._ready
        outer = events._get_running_loop()
        events._set_running_loop(self)
        try:
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            events._set_running_loop(outer)

    # -- time and scheduling ---------------------------------------------
    def time(self) -> float:
        return self._time

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        return self._io("call_soon_threadsafe")

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self._time + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        self.instance.start_timer(handle)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        self.instance.timer_cancelled(handle)

    def fire(self, handle: asyncio.Handle) -> None:
        """Make a fired durable timer's callback ready."""
        if not handle._cancelled:
            self._ready.append(handle)

    # -- futures and tasks -----------------------------------------------
    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        if not asyncio.iscoroutine(coro) and inspect.isawaitable(coro):
            # Inside a workflow a step call, a sleep or a hook is a future;
            # create_task() takes those too, like any awaitable.
            coro = _awaiting(coro)
        if self._task_factory is not None:
            if context is None:
                task = self._task_factory(self, coro)
            else:
                task = self._task_factory(self, coro, context=context)
        else:
            task = asyncio.Task(coro, loop=self, name=name, context=context)
        self._tasks.add(task)
        return task  # type: ignore[no-any-return]

    def set_task_factory(self, factory: Any) -> None:
        self._task_factory = factory

    def get_task_factory(self) -> Any:
        return self._task_factory

    # -- state -----------------------------------------------------------
    def is_running(self) -> bool:
        return events._get_running_loop() is self

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Tear the run's code down without letting it act.

        A dropped coroutine would otherwise be closed by the garbage collector,
        running its ``finally`` blocks outside the workflow, where a step call
        is a plain function call. Here every unfinished task's coroutine is
        closed with this loop current and the instance discarded, so such a
        block cannot make a command (the attempt raises ``Discarded``).
        """
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        outer = events._get_running_loop()
        events._set_running_loop(self)
        try:
            for task in list(self._tasks):
                if not task.done():
                    with contextlib.suppress(BaseException):
                        task.get_coro().close()
        finally:
            events._set_running_loop(outer)

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass  # debug mode has no meaning on a loop without I/O or clock

    def get_exception_handler(self) -> Any:
        return self._exception_handler

    def set_exception_handler(self, handler: Any) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        # What asyncio would print ("Task exception was never retrieved", ...) goes
        # to the worldflow logger; replays repeat it, so not above DEBUG.
        log.debug(
            "worldflow: run %r: %s",
            self.instance.run_id,
            context.get("message", "unhandled exception in workflow code"),
            exc_info=context.get("exception"),
        )

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if self._exception_handler is not None:
            self._exception_handler(self, context)
        else:
            self.default_exception_handler(context)

    # -- everything that would do I/O belongs in a step ------------------
    def _io(self, what: str) -> NoReturn:
        raise RuntimeError(
            f"{what}() is not available inside a workflow: workflow code must be "
            "deterministic; do I/O, threads and subprocesses in a @step"
        )

    def run_until_complete(self, future: Any) -> Any:
        self._io("run_until_complete")

    def run_forever(self) -> None:
        self._io("run_forever")

    def stop(self) -> None:
        self._io("stop")

    async def shutdown_asyncgens(self) -> None:
        pass  # no async generators outlive a workflow run

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        pass  # there is no executor

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:  # type: ignore[override]
        self._io("run_in_executor")


async def _awaiting(awaitable: Any) -> Any:
    return await awaitable


def _refuse(name: str) -> Callable[..., NoReturn]:
    def refuse(self: WorkflowLoop, *args: Any, **kwargs: Any) -> NoReturn:
        self._io(name)

    refuse.__name__ = name
    return refuse


for _name in [
    "add_reader",
    "add_signal_handler",
    "add_writer",
    "connect_accepted_socket",
    "connect_read_pipe",
    "connect_write_pipe",
    "create_connection",
    "create_datagram_endpoint",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "getaddrinfo",
    "getnameinfo",
    "remove_reader",
    "remove_signal_handler",
    "remove_writer",
    "sendfile",
    "set_default_executor",
    "sock_accept",
    "sock_connect",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendfile",
    "sock_sendto",
    "start_tls",
    "subprocess_exec",
    "subprocess_shell",
]:
    setattr(WorkflowLoop, _name, _refuse(_name))


def current_instance() -> WorkflowInstance | None:
    """The workflow instance whose code is running now, if any."""
    loop = events._get_running_loop()
    if type(loop) is WorkflowLoop:
        return loop.instance
    return None
