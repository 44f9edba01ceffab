"""Running one attempt of a step, off the workflow's loop.

``async def`` steps run as tasks on the real loop; plain ``def`` steps run on
daemon threads (a thread cannot be killed, and a non-daemon one would hold
the interpreter open at exit), with ``contextvars`` copied in. A timed-out
sync attempt is abandoned: its late result is fenced out by attempt number.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import encode
from ._duration import format_duration
from ._streams import finish_sync, open_attempt

if TYPE_CHECKING:
    from ._definitions import Step

__all__ = ["AttemptDone", "StepMetadata", "get_step_metadata", "run_attempt"]


@dataclasses.dataclass(frozen=True, slots=True)
class StepMetadata:
    """What a step knows about itself: ``step_id`` is stable across retries
    (an idempotency key for external APIs), ``attempt`` is 1 for the first."""

    step_id: str
    attempt: int
    run_id: str
    step_name: str


_STEP_METADATA: contextvars.ContextVar[StepMetadata | None] = contextvars.ContextVar(
    "worldflow_step_metadata", default=None
)


def get_step_metadata() -> StepMetadata:
    """The metadata of the step attempt running now.

    >>> meta = wf.get_step_metadata()
    >>> charge(card, idempotency_key=meta.step_id)
    """
    meta = _STEP_METADATA.get()
    if meta is None:
        raise RuntimeError("wf.get_step_metadata() can only be called inside a running step")
    return meta


# (ok, value): the encoded output when ok, else the exception
AttemptDone = Callable[[bool, Any], None]


class _DaemonPool:
    """Daemon threads for sync steps, started on demand up to a limit."""

    def __init__(self, max_threads: int = 64) -> None:
        self._max = max_threads
        self._reset()

    def _reset(self) -> None:
        """Empty, with no threads: at creation, and in a forked child, which has none of
        its parent's threads (counting them would leave its jobs waiting for ever)."""
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle == 0 and self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._work, name="worldflow-step", daemon=True).start()
        self._queue.put(job)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._queue.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            job()


_POOL = _DaemonPool()
os.register_at_fork(after_in_child=_POOL._reset)


def _timeout_error(step: Step[Any, Any], timeout: float) -> TimeoutError:
    return TimeoutError(f"step {step.name!r} timed out after {format_duration(timeout)}")


def run_attempt(
    loop: asyncio.AbstractEventLoop,
    step: Step[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    meta: StepMetadata,
    done: AttemptDone,
) -> Callable[[], None]:
    """Start one attempt; ``done`` is called on ``loop`` exactly once. Returns a canceller."""
    context = contextvars.copy_context()
    context.run(_STEP_METADATA.set, meta)
    # Stream writers the attempt opens are flushed before its outcome is reported.
    streams = open_attempt(context, loop, meta)
    timeout = step.options.timeout
    where = f"the return value of step {step.name!r}"
    finished = False

    def finish(ok: bool, value: Any) -> None:
        nonlocal finished
        if not finished:
            finished = True
            done(ok, value)

    if step.is_async:

        async def body() -> None:
            try:
                if timeout is None:
                    result = await step.fn(*args, **kwargs)
                else:
                    try:
                        result = await asyncio.wait_for(step.fn(*args, **kwargs), timeout)
                    except TimeoutError:
                        raise _timeout_error(step, timeout) from None
                outcome: tuple[bool, Any] = (True, encode(result, where=where))
            except Exception as exc:
                outcome = (False, exc)
            if streams.writers:
                try:
                    await streams.finish()
                except Exception as exc:
                    outcome = outcome if not outcome[0] else (False, exc)
            # Report from inside the task (not from a done-callback, one loop turn
            # later), in a context of the engine's own rather than the step's.
            contextvars.Context().run(finish, *outcome)

        task = loop.create_task(body(), context=context)

        def on_done(t: asyncio.Task[Any]) -> None:
            if t.cancelled():
                finish(False, asyncio.CancelledError(f"step {step.name!r} was cancelled"))
            elif (exc := t.exception()) is not None:  # a BaseException from the step
                finish(False, exc)

        task.add_done_callback(on_done)

        def cancel() -> None:
            task.cancel()

        return cancel

    timer: asyncio.TimerHandle | None = None
    if timeout is not None:
        timer = loop.call_later(timeout, finish, False, _timeout_error(step, timeout))

    def job() -> None:
        try:
            result = context.run(step.fn, *args, **kwargs)
            outcome: tuple[bool, Any] = (True, encode(result, where=where))
        except BaseException as exc:
            outcome = (False, exc)
        try:
            finish_sync(streams)
        except BaseException as exc:
            outcome = outcome if not outcome[0] else (False, exc)
        # If the loop has closed, the run resumes elsewhere and this result is lost.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, *outcome)

    def deliver(ok: bool, value: Any) -> None:
        if timer is not None:
            timer.cancel()
        finish(ok, value)

    _POOL.submit(job)
    return lambda: None
