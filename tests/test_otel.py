"""OpenTelemetry: the span tree of a run with retries, a sleep and a hook, across a restart.

The spans go to the SDK's in-memory exporter through a provider of the test's
own (the process-wide provider can be set only once, and other tests must
run untraced: that is what they check).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import worldflow as wf
from worldflow import _otel, _runtime
from worldflow.worlds.local import LocalWorld

FLAKES: Counter[str] = Counter()


@wf.step(retry_delay="10ms", name="otel.charge")
async def charge(order: str) -> str:
    FLAKES[order] += 1
    if FLAKES[order] <= 2:
        raise ConnectionError(f"card network down ({FLAKES[order]})")
    return f"charged {order}"


@wf.workflow(name="otel.order")
async def order(order_id: str) -> dict[str, Any]:
    receipt = await charge(order_id)
    await wf.sleep("1h")
    answer = await wf.create_hook(token=f"ship:{order_id}")
    return {"receipt": receipt, "answer": answer}


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_runtime, "tracing", lambda: _otel.Tracing(provider))
    return provider, exporter


async def _until(predicate: Any, clock: wf.VirtualClock) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        clock.advance(0.01)  # retry delays pass
        await asyncio.sleep(0.01)


def test_span_tree_of_a_run_across_a_restart(
    tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    clock = wf.VirtualClock()

    async def main() -> Any:
        async with wf.worker(LocalWorld(tmp_path, clock=clock, serve_webhooks=False)):
            with tracer.start_as_current_span("POST /orders"):
                run = await wf.start(order, "o-1")

            async def sleeping() -> bool:
                return bool((await run.detail()).sleeping)

            await _until(sleeping, clock)
        # Another process (a new runtime over the same store) carries the run on.
        async with wf.worker(LocalWorld(tmp_path, clock=clock, serve_webhooks=False)):
            clock.advance("1h")

            async def hooked() -> bool:
                return bool((await run.detail()).hooks_waiting)

            await _until(hooked, clock)
            with tracer.start_as_current_span("approve"):
                await wf.resume_hook("ship:o-1", "go")
            return await run.result(timeout=10)

    assert asyncio.run(main()) == {"receipt": "charged o-1", "answer": "go"}
    finished = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)

    (request,) = by_name["POST /orders"]
    (approve,) = by_name["approve"]
    (run_span,) = by_name["workflow otel.order"]
    attempts = sorted(
        by_name["step otel.charge"], key=lambda s: s.attributes["worldflow.step.attempt"]
    )  # type: ignore[index]
    (sleep,) = by_name["sleep"]
    (hook,) = by_name["hook wait"]

    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in (run_span, *attempts, sleep, hook)} == {trace_id}
    assert run_span.parent is not None and run_span.parent.span_id == request.context.span_id
    for child in (*attempts, sleep, hook):
        assert child.parent is not None and child.parent.span_id == run_span.context.span_id

    assert [s.attributes["worldflow.step.attempt"] for s in attempts] == [1, 2, 3]  # type: ignore[index]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.OK,
    ]
    assert attempts[0].events[0].name == "exception"  # the ConnectionError, recorded
    assert "card network down (1)" in (attempts[0].status.description or "")

    assert sleep.start_time is not None and sleep.end_time is not None
    assert (sleep.end_time - sleep.start_time) / 1e9 == pytest.approx(3600, abs=1)
    assert [link.context.span_id for link in hook.links] == [approve.context.span_id]
    assert run_span.status.status_code == StatusCode.OK
    assert run_span.attributes is not None
    assert run_span.attributes["worldflow.status"] == "completed"
    assert run_span.start_time is not None and sleep.start_time >= run_span.start_time


def test_a_run_started_outside_any_span_gets_a_trace_of_its_own(
    tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = spans

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = await wf.start(order, "o-2")
            FLAKES["o-2"] = 5  # no failures
            await run.cancel()
            with pytest.raises(wf.RunCancelled):
                await run.result(timeout=10)

    asyncio.run(main())
    (run_span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("workflow")]
    assert run_span.parent is None
    assert (
        run_span.attributes is not None and run_span.attributes["worldflow.status"] == "cancelled"
    )
    for span in exporter.get_finished_spans():
        assert span.context.trace_id == run_span.context.trace_id


def test_tracing_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _otel.tracing() is None  # no provider set in this process: zero cost
    assert _otel.current_traceparent() is None
    monkeypatch.setenv("WORLDFLOW_OTEL", "off")
    assert _otel.tracing() is None
