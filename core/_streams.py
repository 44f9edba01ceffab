"""Streams: a step writes chunks to a named stream of its run, any process reads them.

``wf.get_writable("tokens")`` inside a step (async or sync) gives the step's
:class:`StreamWriter` for that stream; ``writer.write(value)`` takes any value
the codec can store and returns at once: the writer buffers and a task on the
runtime's loop flushes the buffer to the World (:class:`~worldflow.world.Streams`)
when it holds :data:`FLUSH_BYTES`, after :data:`FLUSH_SECONDS`, and when the
step attempt ends, before its result is recorded. So a token stream costs one
storage write per batch, not per token, and a run's chunks are all stored
before the run can end.

Retries: every chunk is written with its position among what its step
(``step_id``, stable across attempts) has written to the stream, and a World
keeps only the positions it does not have yet (:class:`~worldflow.world.ChunkWrite`).
A retried attempt that writes the same chunks again adds nothing; one that
writes more adds only what is past the failed attempt's last chunk. Readers
therefore see each position of a step's output once, as the first attempt to
write it wrote it ("dropped": a retry's chunks already written are dropped).

``run.stream("tokens", start=0)`` (:func:`read_stream`) yields the chunks
from index ``start`` on, live: it polls the World with a backoff (20 ms up to
0.5 s), and ends once the run has ended and every chunk is read. A reader that
reconnects with ``start=`` the number of chunks it had misses nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ._codec import dumps
from ._decode import decode
from ._errors import CorruptLogError
from ._json import loads as json_loads
from ._world import ChunkWrite, Streams

if TYPE_CHECKING:
    from ._attempts import StepMetadata

__all__ = [
    "FLUSH_BYTES",
    "FLUSH_SECONDS",
    "MAX_CHUNK_BYTES",
    "StreamWriter",
    "check_stream_name",
    "get_writable",
    "read_stream",
]

#: A stream name: letters, digits, ``_ . -``, at most 64 characters (it is part of
#: keys and document ids in every World).
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: The largest one chunk may be, encoded (every World's item or row takes it whole).
MAX_CHUNK_BYTES = 256 * 1024
#: A writer flushes once its buffer holds this many bytes ...
FLUSH_BYTES = 64 * 1024
#: ... or this long after the first chunk it holds was written.
FLUSH_SECONDS = 0.05
#: Chunks in one read.
READ_LIMIT = 500


def check_stream_name(name: object, where: str) -> str:
    """``name`` if it is a valid stream name, else a TypeError / ValueError naming it."""
    if not isinstance(name, str):
        raise TypeError(f"{where}: a stream name must be a str, got {type(name).__name__} {name!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{where}: invalid stream name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-'"
        )
    return name


def _store(loop: asyncio.AbstractEventLoop) -> Streams:
    from ._api import _runtimes

    ready = _runtimes.get(loop)
    if ready is None or not ready.done() or ready.exception() is not None:
        raise RuntimeError("no worldflow runtime is serving on this step's event loop")
    return ready.result().world.stream_store()


class StreamWriter:
    """Writes chunks to one stream of the running step's run (``wf.get_writable``).

    ``write(value)`` encodes the value at once (a value the codec cannot store is
    a ``TypeError`` right there) and buffers it; the buffer is flushed in the
    background and when the step attempt ends. ``await writer.flush()`` (async
    steps) waits until what was written is stored. ``writer.written``: how many
    chunks this attempt has written.
    """

    def __init__(self, attempt: _AttemptStreams, name: str) -> None:
        self.name = name
        self._attempt = attempt
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._bytes = 0
        self._start = 0  # the position of _buffer[0] among this writer's chunks
        self._first_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.written = 0

    def __repr__(self) -> str:
        return f"<StreamWriter {self.name!r} of step {self._attempt.meta.step_id!r}>"

    def write(self, value: Any) -> None:
        """Add ``value`` to the stream (buffered; stored within about 50 ms)."""
        if self._attempt.closed:
            raise RuntimeError(
                f"stream {self.name!r}: the step attempt that opened this writer has ended"
            )
        if self._error is not None:
            raise self._error
        text = dumps(value, where=f"a chunk of stream {self.name!r}")
        size = len(text.encode())
        if size > MAX_CHUNK_BYTES:
            raise ValueError(
                f"a chunk of stream {self.name!r} is {size} bytes encoded; the most is "
                f"{MAX_CHUNK_BYTES} (split it, or keep big values elsewhere)"
            )
        with self._lock:
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.append(text)
            self._bytes += size
            self.written += 1
            kick = self._task is None
        if kick:
            self._attempt.call(self._schedule)

    def _schedule(self) -> None:
        """On the loop: start the flusher unless it runs."""
        if self._task is None:
            self._task = self._attempt.loop.create_task(self._flusher())

    async def _flusher(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._buffer:
                        self._task = None
                        return
                    wait = FLUSH_SECONDS - (time.monotonic() - self._first_at)
                    full = self._bytes >= FLUSH_BYTES
                if wait > 0 and not full and not self._attempt.closing:
                    await asyncio.sleep(min(wait, FLUSH_SECONDS))
                    continue
                await self._flush_once()
        except BaseException as exc:
            self._error = exc
            with self._lock:
                self._task = None
            if not isinstance(exc, Exception):
                raise

    async def _flush_once(self) -> None:
        with self._lock:
            chunks, start = self._buffer, self._start
            self._buffer, self._bytes = [], 0
            self._start += len(chunks)
        if not chunks:
            return
        meta = self._attempt.meta
        write = ChunkWrite(meta.run_id, self.name, meta.step_id, start, chunks)
        delay = 0.05
        for attempt in range(6):  # a World's transient error: the same write again is harmless
            try:
                await self._attempt.store().write_chunks(write)
                return
            except Exception:
                if attempt == 5:
                    raise
                await asyncio.sleep(delay)
                delay *= 2

    async def flush(self) -> None:
        """Wait until every chunk written so far is stored (raises what storing raised)."""
        self._attempt.closing = True  # no more waiting for a fuller buffer
        try:
            while True:
                if self._error is not None:
                    raise self._error
                task = self._task
                if task is None:
                    with self._lock:
                        empty = not self._buffer
                    if empty:
                        return
                    self._schedule()
                    continue
                await asyncio.shield(task)
        finally:
            self._attempt.closing = False


@dataclasses.dataclass(eq=False)
class _AttemptStreams:
    """The writers one step attempt opened."""

    loop: asyncio.AbstractEventLoop
    meta: StepMetadata
    writers: dict[str, StreamWriter] = dataclasses.field(default_factory=dict)
    closing: bool = False
    closed: bool = False
    _store: Streams | None = None

    def store(self) -> Streams:
        if self._store is None:
            self._store = _store(self.loop)
        return self._store

    def call(self, fn: Any) -> None:
        """Run ``fn`` on the loop (from the loop itself, or from a sync step's thread)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    async def finish(self) -> None:
        """Flush every writer (the attempt has returned or raised); on the loop."""
        try:
            for writer in list(self.writers.values()):
                await writer.flush()
        finally:
            self.closed = True


_ATTEMPT: contextvars.ContextVar[_AttemptStreams | None] = contextvars.ContextVar(
    "worldflow_attempt_streams", default=None
)


def open_attempt(
    context: contextvars.Context, loop: asyncio.AbstractEventLoop, meta: StepMetadata
) -> _AttemptStreams:
    """Give a step attempt's context its (lazily used) stream writers."""
    streams = _AttemptStreams(loop, meta)
    context.run(_ATTEMPT.set, streams)
    return streams


def finish_sync(streams: _AttemptStreams) -> None:
    """From a sync step's thread: flush its writers, waiting for the loop to store them."""
    if not streams.writers:
        streams.closed = True
        return
    future = asyncio.run_coroutine_threadsafe(streams.finish(), streams.loop)
    future.result(timeout=120)


def get_writable(name: str) -> StreamWriter:
    """The running step's writer for stream ``name`` of its run (the same object each
    time in one attempt).

    >>> @wf.step
    ... async def generate(prompt: str) -> str:
    ...     out = wf.get_writable("tokens")
    ...     async for token in llm(prompt):
    ...         out.write(token)
    ...     return "done"
    """
    check_stream_name(name, "wf.get_writable()")
    streams = _ATTEMPT.get()
    if streams is None:
        raise RuntimeError(
            "wf.get_writable() can only be called inside a running step (streams are "
            "written by steps; a workflow can call a step that writes)"
        )
    writer = streams.writers.get(name)
    if writer is None:
        writer = streams.writers[name] = StreamWriter(streams, name)
    return writer


async def read_stream(
    store: Streams,
    run_id: str,
    name: str,
    start: int,
    is_done: Any,
    *,
    poll: float = 0.02,
    max_poll: float = 0.5,
) -> AsyncIterator[Any]:
    """The stream's chunks (decoded) from index ``start`` on, until ``is_done()`` (an
    async callable: has the run ended?) says so and nothing more is stored."""
    index = start
    delay = poll
    while True:
        # Whether the run had ended is read *before* the chunks: every chunk is stored
        # before the run ends, so an ended run's stream is complete once read after.
        ended = await is_done()
        texts = await store.read_chunks(run_id, name, index, READ_LIMIT)
        for offset, text in enumerate(texts):
            yield _decode(text, run_id, name, index + offset)
        index += len(texts)
        if texts:
            delay = poll
            continue
        if ended:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_poll)


def _decode(text: str, run_id: str, name: str, index: int) -> Any:
    """A stored chunk's value; text that is not one is a CorruptLogError saying which."""
    where = f"chunk {index} of stream {name!r} of run {run_id!r}"
    tree = json_loads(text, where)
    try:
        return decode(tree)
    except CorruptLogError:
        raise
    except ValueError as exc:
        raise CorruptLogError(f"{where} cannot be read: {exc}") from exc
