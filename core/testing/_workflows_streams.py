"""The workflows and steps of the streams and tags conformance tests (``_suite_streams``).

Importable (``worldflow.testing._workflows_streams``) so that a World whose
handlers run in another process can import them (``WORLDFLOW_MODULES``).
"""

from __future__ import annotations

import asyncio
import collections
import threading

import worldflow as wf

__all__ = ["ATTEMPTS", "GATES"]

#: How many attempts each (tag, step) made.
ATTEMPTS: collections.Counter[str] = collections.Counter()
#: Gates a live-streaming step waits on (set by the test), by tag.
GATES: dict[str, threading.Event] = {}
_lock = threading.Lock()


def _attempt(key: str) -> int:
    with _lock:
        ATTEMPTS[key] += 1
        return ATTEMPTS[key]


@wf.step
async def emit_tokens(tag: str, n: int) -> int:
    out = wf.get_writable("tokens")
    for i in range(n):
        out.write({"i": i, "text": f"tok-{i}"})
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the flusher run while more come
    return out.written


@wf.step
def emit_sync(tag: str, n: int) -> int:
    out = wf.get_writable("lines")
    for i in range(n):
        out.write(f"line {i}")
    return n


@wf.workflow
async def stream_tokens(tag: str, n: int) -> int:
    return await emit_tokens(tag, n)


@wf.workflow
async def stream_two(tag: str, n: int) -> list[int]:
    """An async and a sync step writing to two streams at once."""
    a, b = await asyncio.gather(emit_tokens(tag, n), emit_sync(tag, n))
    return [a, b]


@wf.step(max_retries=3, retry_delay=0)
async def flaky_writer(tag: str, n: int, fail_after: int, same: bool) -> int:
    """Attempt 1 writes ``fail_after`` chunks, then fails; attempt 2 writes all ``n``
    (the same chunks if ``same``, else chunks marked with its attempt number)."""
    attempt = wf.get_step_metadata().attempt
    _attempt(f"{tag}:flaky")
    out = wf.get_writable("out")
    count = fail_after if attempt == 1 else n
    for i in range(count):
        out.write(i if same else f"a{attempt}-{i}")
    if attempt == 1:
        await out.flush()  # stored for sure before the failure: readers may have them
        raise RuntimeError("the first attempt fails after writing")
    return n


@wf.workflow
async def retried_stream(tag: str, n: int, fail_after: int, same: bool) -> int:
    return await flaky_writer(tag, n, fail_after, same)


@wf.step
def gated_writer(tag: str, before: int, after: int) -> int:
    """Writes ``before`` chunks, waits for the test to open its gate, writes ``after``."""
    out = wf.get_writable("live")
    for i in range(before):
        out.write(i)
    gate = GATES.get(tag)
    if gate is not None and not gate.wait(20):
        raise TimeoutError("the test never opened the gate")
    for i in range(before, before + after):
        out.write(i)
    return before + after


@wf.workflow
async def live_stream(tag: str, before: int, after: int) -> int:
    return await gated_writer(tag, before, after)


@wf.step(max_retries=0)
async def bad_writes(tag: str) -> list[str]:
    """Every kind of bad input, caught: the errors' messages, and the good chunks stored."""
    errors: list[str] = []
    for name in (42, "", "has space", "x" * 65):
        try:
            wf.get_writable(name)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    out = wf.get_writable("good")
    out.write("first")
    for value in (object(), {1, 2, object()}, "x" * (300 * 1024)):
        try:
            out.write(value)
        except (TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    out.write("last")
    return errors


@wf.workflow
async def bad_stream_input(tag: str) -> list[str]:
    return await bad_writes(tag)


@wf.step
async def slow_emit(tag: str, n: int, pause: float) -> int:
    out = wf.get_writable("slow")
    for i in range(n):
        out.write(i)
        await asyncio.sleep(pause)
    return n


@wf.workflow
async def slow_stream(tag: str, n: int, pause: float) -> int:
    return await slow_emit(tag, n, pause)


# -- tags ---------------------------------------------------------------------------------
@wf.step
async def lookup_customer(tag: str) -> str:
    return f"cust-{tag}"


@wf.workflow
async def tagged_later(tag: str) -> str:
    customer = await lookup_customer(tag)
    await wf.set_tags({"customer": customer, "stage": "looked-up"})
    await wf.sleep("1s")
    await wf.set_tags({"stage": "done"})
    return customer


@wf.workflow
async def plain(tag: str) -> str:
    return tag


@wf.workflow
async def bad_set_tags(tag: str) -> list[str]:
    errors: list[str] = []
    for tags in ({"bad key": "x"}, {"k": 5}, {"k": ""}, ["k"]):
        try:
            await wf.set_tags(tags)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    await wf.set_tags({"checked": tag})
    return errors
