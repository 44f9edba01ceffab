"""Conformance tests of streams and run tags: a mixin of :class:`WorldConformance`.

Every World runs them, warm and always replaying, through its own
:class:`~worldflow.world.Streams` (``write_chunks``, ``read_chunks``,
``list_streams``) and its tag index (``RunCreate.tags``, ``Storage.set_tags``,
``list_runs(tags=)``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import worldflow as wf
from worldflow._world import ChunkWrite, World

from . import _workflows_streams as s
from ._harness import DuplicatingWorld, Harness

__all__ = ["StreamsConformance"]


def conformance(fn: Any) -> Callable[[Any, Callable[[], World]], None]:
    """``_suite.conformance``, looked up when the test runs (``_suite`` imports this
    module to build ``WorldConformance``)."""

    def test(self: Any, make_world: Callable[[], World]) -> None:
        from ._suite import conformance as real

        real(fn)(self, make_world)

    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    return test


def _tag() -> str:
    return uuid.uuid4().hex[:12]


async def _read(run: wf.Run[Any], name: str, start: int = 0, timeout: float = 20) -> list[Any]:
    async def collect() -> list[Any]:
        return [chunk async for chunk in run.stream(name, start=start)]

    return await asyncio.wait_for(collect(), timeout)


class StreamsConformance:
    """Streams and tags, on every World."""

    def _needs_a_serving_test_process(self) -> None:
        raise NotImplementedError  # WorldConformance's

    # -- streams ----------------------------------------------------------------------
    @conformance
    async def test_a_step_streams_chunks_a_client_reads_whole(self, h: Harness) -> None:
        run = await wf.start(s.stream_tokens, _tag(), 300)
        assert await run.result(timeout=20) == 300
        chunks = await _read(run, "tokens")
        assert chunks == [{"i": i, "text": f"tok-{i}"} for i in range(300)]
        # Resumable from any index; past the end it ends at once.
        assert await _read(run, "tokens", start=287) == chunks[287:]
        assert await _read(run, "tokens", start=300) == []
        assert await _read(run, "nothing-here") == []
        infos = await h.world.stream_store().list_streams(run.id)
        assert [(i.name, i.length) for i in infos] == [("tokens", 300)]

    @conformance
    async def test_async_and_sync_steps_write_two_streams(self, h: Harness) -> None:
        run = await wf.start(s.stream_two, _tag(), 120)
        assert await run.result(timeout=20) == [120, 120]
        assert [c["i"] for c in await _read(run, "tokens")] == list(range(120))
        assert await _read(run, "lines") == [f"line {i}" for i in range(120)]

    @conformance
    async def test_a_stream_is_read_live_while_the_step_writes(self, h: Harness) -> None:
        self._needs_a_serving_test_process()
        tag = _tag()
        gate = s.GATES[tag] = threading.Event()
        try:
            run = await wf.start(s.live_stream, tag, 5, 4)
            got: list[Any] = []
            reader = run.stream("live")
            async with asyncio.timeout(20):
                while len(got) < 5:  # the first five, while the step still runs
                    got.append(await anext(reader))
            assert got == [0, 1, 2, 3, 4]
            assert await run.status() == "running"
            gate.set()
            async with asyncio.timeout(20):
                got += [chunk async for chunk in reader]
            assert got == list(range(9))
            assert await run.result(timeout=10) == 9
        finally:
            gate.set()
            s.GATES.pop(tag, None)

    @conformance
    async def test_a_retried_step_adds_no_chunk_twice(self, h: Harness) -> None:
        """Attempt 1 writes 4 chunks and fails; attempt 2 writes 10: readers see 10, once
        each. With other content, positions attempt 1 wrote keep its chunks (dropped)."""
        tag = _tag()
        run = await wf.start(s.retried_stream, tag, 10, 4, True)
        assert await run.result(timeout=20) == 10
        assert s.ATTEMPTS[f"{tag}:flaky"] == 2
        assert await _read(run, "out") == list(range(10))
        tag = _tag()
        run = await wf.start(s.retried_stream, tag, 6, 3, False)
        assert await run.result(timeout=20) == 6
        assert await _read(run, "out") == ["a1-0", "a1-1", "a1-2", "a2-3", "a2-4", "a2-5"]

    @conformance
    async def test_a_repeated_write_is_harmless(self, h: Harness) -> None:
        """The seam itself: a ChunkWrite repeated (an error after it was stored), or one
        that overlaps what the writer has, appends only the new positions; two writers
        interleave."""
        store = h.world.stream_store()
        run = await wf.start(s.plain, _tag())
        await run.result(timeout=10)
        w = ChunkWrite(run.id, "raw", "step-a", 0, ['"a0"', '"a1"'])
        assert await store.write_chunks(w) == 2
        assert await store.write_chunks(w) == 2
        assert await store.write_chunks(ChunkWrite(run.id, "raw", "step-b", 0, ['"b0"'])) == 3
        overlap = ChunkWrite(run.id, "raw", "step-a", 1, ['"a1"', '"a2"', '"a3"'])
        assert await store.write_chunks(overlap) == 5
        assert await _read(run, "raw") == ["a0", "a1", "b0", "a2", "a3"]
        assert await store.read_chunks(run.id, "raw", 3, 100) == ['"a2"', '"a3"']
        assert await store.read_chunks(run.id, "raw", 5, 100) == []
        # Another process (a World over the same storage) writes between two writes of
        # this one: whatever this one remembered of the stream, nothing is lost or
        # overwritten.
        other = h.make_world()
        try:
            theirs = other.stream_store()
            assert await theirs.write_chunks(ChunkWrite(run.id, "raw", "step-c", 0, ['"c0"'])) == 6
            assert await theirs.read_chunks(run.id, "raw", 4, 100) == ['"a3"', '"c0"']
        finally:
            await other.close()
        assert await store.write_chunks(ChunkWrite(run.id, "raw", "step-a", 4, ['"a4"'])) == 7
        assert await store.write_chunks(ChunkWrite(run.id, "raw", "step-c", 0, ['"c0"'])) == 7
        assert await _read(run, "raw", start=4) == ["a3", "c0", "a4"]

    @conformance
    async def test_a_reader_that_reconnects_misses_nothing(self, h: Harness) -> None:
        run = await wf.start(s.slow_stream, _tag(), 40, 0.01)
        got: list[Any] = []
        for _ in range(100):  # read a few at a time, reconnecting after each
            before = len(got)
            async with asyncio.timeout(20):
                async for chunk in run.stream("slow", start=len(got)):
                    got.append(chunk)
                    if len(got) - before == 7:
                        break
            if len(got) == before:
                break  # the stream ended
        assert got == list(range(40))
        assert await run.result(timeout=10) == 40

    @conformance
    async def test_streams_outlive_a_restart(self, h: Harness) -> None:
        run = await wf.start(s.stream_tokens, _tag(), 50)
        assert await run.result(timeout=20) == 50
        await h.restart()
        assert [c["i"] for c in await _read(run, "tokens", start=10)] == list(range(10, 50))

    @conformance
    async def test_duplicate_delivery_adds_no_chunk_twice(self, h: Harness) -> None:
        self._needs_a_serving_test_process()
        await h.close()
        inner = h.make_world
        h.make_world = lambda: DuplicatingWorld(inner())
        await h.restart()
        run = await wf.start(s.retried_stream, _tag(), 8, 3, True)
        assert await run.result(timeout=20) == 8
        assert await _read(run, "out") == list(range(8))

    @conformance
    async def test_bad_stream_input_is_a_clear_error_and_loses_nothing(self, h: Harness) -> None:
        run = await wf.start(s.bad_stream_input, _tag())
        errors = await run.result(timeout=20)
        assert errors[0].startswith("TypeError: wf.get_writable(): a stream name must be a str")
        assert "int 42" in errors[0]
        for error, name in zip(errors[1:4], ["''", "'has space'", "'xxx"], strict=True):
            assert error.startswith("ValueError: wf.get_writable(): invalid stream name " + name)
        assert errors[4].startswith("SerializationError: cannot serialize a chunk of stream 'good'")
        assert "object" in errors[4]
        assert errors[5].startswith("SerializationError: cannot serialize a chunk of stream 'good'")
        assert errors[6].startswith("ValueError: a chunk of stream 'good' is 307202 bytes")
        assert await _read(run, "good") == ["first", "last"]
        with pytest.raises(TypeError, match="a stream name must be a str, got bytes"):
            await anext(run.stream(b"x"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="start must be an int >= 0, got -1"):
            await anext(run.stream("good", start=-1))
        with pytest.raises(RuntimeError, match="only be called inside a running step"):
            wf.get_writable("tokens")
        with pytest.raises(wf.RunNotFound):
            await anext(wf.get_run("no-such-run-" + _tag()).stream("tokens"))

    # -- tags ---------------------------------------------------------------------------
    @conformance
    async def test_runs_are_listed_by_tags_from_an_index(self, h: Harness) -> None:
        tag = _tag()
        c1, c2 = f"c1-{tag}", f"c2-{tag}"
        runs = []
        for i, (customer, tier) in enumerate(
            [(c1, "gold"), (c2, "gold"), (c1, "basic"), (c1, "gold"), (c2, "basic")]
        ):
            run = await wf.start(s.plain, f"{tag}-{i}", tags={"customer": customer, "tier": tier})
            runs.append(run)
            if h.serve:
                h.advance("1s")  # creation times in order (a virtual clock)
        for run in runs:
            await run.result(timeout=20)

        async def ids(**kwargs: Any) -> list[str]:
            page = await wf.list_runs(**kwargs)
            return [r.id for r in page.runs]

        newest_first = [r.id for r in reversed(runs)]
        by_c1 = [runs[3].id, runs[2].id, runs[0].id]
        assert sorted(await ids(tags={"customer": c1})) == sorted(by_c1)
        if h.serve:
            assert await ids(tags={"customer": c1}) == by_c1
        assert sorted(await ids(tags={"customer": c1, "tier": "gold"})) == sorted(
            [runs[3].id, runs[0].id]
        )
        assert await ids(tags={"customer": c2, "tier": "platinum"}) == []
        assert sorted(await ids(tags={"customer": c2}, status="completed")) == sorted(
            [runs[1].id, runs[4].id]
        )
        assert await ids(tags={"customer": c2}, status="failed") == []
        assert await ids(tags={"customer": c2}, workflow="nope") == []
        # Pages of one by one: every run once.
        seen: list[str] = []
        cursor = None
        while True:
            page = await wf.list_runs(tags={"customer": c1}, limit=1, cursor=cursor)
            seen += [r.id for r in page.runs]
            cursor = page.cursor
            if cursor is None:
                break
        assert sorted(seen) == sorted(by_c1) and len(seen) == 3
        info = await runs[1].info()
        assert info.tags == {"customer": c2, "tier": "gold"}
        listed = (await wf.list_runs(tags={"customer": c2, "tier": "gold"})).runs
        assert [r.tags for r in listed] == [{"customer": c2, "tier": "gold"}]
        del newest_first

    @conformance
    async def test_set_tags_inside_a_workflow_is_recorded(self, h: Harness) -> None:
        tag = _tag()
        run = await wf.start(s.tagged_later, tag, tags={"origin": tag})
        await h.wait_event(run, "sleep_started")
        h.advance("2s")
        assert await run.result(timeout=20) == f"cust-{tag}"
        info = await run.info()
        assert info.tags == {"origin": tag, "customer": f"cust-{tag}", "stage": "done"}
        found = await wf.list_runs(tags={"customer": f"cust-{tag}"})
        assert [r.id for r in found.runs] == [run.id]
        assert [r.id for r in (await wf.list_runs(tags={"origin": tag, "stage": "done"})).runs] == [
            run.id
        ]
        assert (await wf.list_runs(tags={"origin": tag, "stage": "looked-up"})).runs == []
        events = await run.events()
        steps = [e.data.get("name") for e in events if e.kind == "step_scheduled"]
        assert steps.count("worldflow.set_tags") == 2, steps
        assert events[0].data["tags"] == {"origin": tag}

    @conformance
    async def test_bad_tags_are_clear_errors_and_create_nothing(self, h: Harness) -> None:
        tag = _tag()
        for tags, error, text in (
            ({"bad key": "x"}, ValueError, "invalid tag key 'bad key'"),
            ({1: "x"}, TypeError, "a tag key must be a str, got int 1"),
            ({"k": 5}, TypeError, "the value of tag 'k' must be a str, got int 5"),
            ({"k": "a\nb"}, ValueError, "invalid value 'a\\\\nb' of tag 'k'"),
            (["k"], TypeError, "tags must be a dict of str to str, got list"),
            ({f"k{i}": "v" for i in range(17)}, ValueError, "at most 16 tags per run"),
        ):
            with pytest.raises(error, match=text):
                await wf.start(s.plain, tag, id=f"bad-{tag}", tags=tags)  # type: ignore[arg-type]
        with pytest.raises(wf.RunNotFound):
            await wf.get_run(f"bad-{tag}").status()
        with pytest.raises(TypeError, match=r"wf\.list_runs"):
            await wf.list_runs(tags={"k": 5})  # type: ignore[dict-item]
        run = await wf.start(s.bad_set_tags, tag)
        errors = await run.result(timeout=20)
        assert [e.split(":")[0] for e in errors] == [
            "ValueError",
            "TypeError",
            "ValueError",
            "TypeError",
        ]
        assert "wf.set_tags(): invalid tag key 'bad key'" in errors[0]
        assert (await run.info()).tags == {"checked": tag}
        with pytest.raises(RuntimeError, match="only be called inside a workflow"):
            await wf.set_tags({"k": "v"})
