"""OpenTelemetry spans for runs, step attempts, sleeps and hook waits.

Enabled when the ``opentelemetry`` API is importable and a real tracer
provider is set (``trace.set_tracer_provider(...)``, or an auto-instrumented
process) by the time a runtime starts; ``WORLDFLOW_OTEL=off`` turns it off.
Otherwise :func:`tracing` returns None and the engine does nothing more than
one ``is None`` check per commit and per attempt.

One trace covers a run across processes and machines without any process
holding a span open for the run's lifetime:

- ``wf.start`` records the caller's span context (``traceparent``) in the
  run's first event, which every process that handles the run reads. Hook
  resumptions, cancellations and wake-ups carry the sender's context in their
  queue message; the hook wait's span links to it.
- The run's span id is derived from the run id, so a step attempt running on
  any machine can name the run span as its parent before the run span
  exists. The run span itself is written, with its real start time, by the
  process that records the run's end. (With the OpenTelemetry SDK this uses
  the tracer's id generator; with another implementation the run span gets a
  random id and the spans of the run hang off the caller's span instead.)
- Step attempts are live spans around the step's code (so spans the step
  makes, an HTTP call say, nest under it). Sleeps and hook waits are written
  when they end, with the times the log recorded.

Every span is written by the process that committed the event ending it, so
it is written once (a step attempt lost with its worker is never ended, and
not exported).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._events import EventKind

if TYPE_CHECKING:
    from ._state import RunState
    from ._world import Event, NewEvent

__all__ = ["Tracing", "current_traceparent", "tracing"]

log = logging.getLogger("worldflow")

_PENDING_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "worldflow_otel_pending_ids", default=None
)


def tracing() -> Tracing | None:
    """The engine's tracing, or None when OpenTelemetry is absent, unconfigured or off."""
    if os.environ.get("WORLDFLOW_OTEL", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # nobody configured OpenTelemetry: spans would go nowhere
    return Tracing(provider)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the caller's current span, if one is recording."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _parse_traceparent(text: Any) -> tuple[int, int, int] | None:
    if not isinstance(text, str):
        return None
    parts = text.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    return (trace_id, span_id, flags) if trace_id and span_id else None


def _derived(run_id: str, what: str, bits: int) -> int:
    digest = hashlib.sha256(f"{what}:{run_id}".encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


class Tracing:
    """Writes worldflow's spans to one tracer provider."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        self._trace = trace
        self._SpanContext = SpanContext
        self._TraceFlags = TraceFlags
        self._Status = Status
        self._StatusCode = StatusCode
        from . import __version__

        self.tracer = provider.get_tracer("worldflow", __version__)
        generator = getattr(self.tracer, "id_generator", None)
        # The SDK's tracer asks its id generator for ids: ours gives the run span
        # the id its children already point at, and defers to the SDK's otherwise.
        self.fixed_ids = generator is not None
        if generator is not None:
            self.tracer.id_generator = _RunIds(generator)

    # -- the run's context ---------------------------------------------------------
    def _ids(self, state: RunState) -> tuple[int, int, int, int | None]:
        """(trace id, run span id, flags, caller span id) of a run."""
        caller = _parse_traceparent(state.trace)
        if caller is not None:
            trace_id, caller_span, flags = caller
        else:
            trace_id, caller_span, flags = _derived(state.run_id, "trace", 128), None, 1
        if not self.fixed_ids:  # children hang off the caller (or a derived root)
            return trace_id, caller_span or _derived(state.run_id, "run", 64), flags, caller_span
        return trace_id, _derived(state.run_id, "run", 64), flags, caller_span

    def _context(self, trace_id: int, span_id: int, flags: int) -> Any:
        parent = self._SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=self._TraceFlags(flags)
        )
        return self._trace.set_span_in_context(self._trace.NonRecordingSpan(parent))

    def run_context(self, state: RunState) -> Any:
        trace_id, run_span, flags, _ = self._ids(state)
        return self._context(trace_id, run_span, flags)

    def _link(self, traceparent: Any) -> list[Any]:
        parsed = _parse_traceparent(traceparent)
        if parsed is None:
            return []
        trace_id, span_id, flags = parsed
        ctx = self._SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=self._TraceFlags(flags)
        )
        return [self._trace.Link(ctx)]

    # -- live spans: step attempts ------------------------------------------------
    @contextlib.contextmanager
    def attempt(
        self, state: RunState, name: str, step_id: str, attempt: int
    ) -> Iterator[Callable[[bool, Any], None]]:
        """Open the attempt's span as the current one while the attempt is started
        (its task or thread copies the context); yields the callback that ends it."""
        try:
            span = self._attempt_span(state, name, step_id, attempt)
            from opentelemetry import context as otel_context

            token = otel_context.attach(self._trace.set_span_in_context(span))
        except Exception:  # tracing must never stop the engine
            log.exception("worldflow: could not start the span of step %r", name)
            yield lambda ok, value: None
            return
        ended = False

        def end(ok: bool, value: Any) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            try:
                if ok:
                    span.set_status(self._Status(self._StatusCode.OK))
                else:
                    if isinstance(value, BaseException):
                        span.record_exception(value)
                    description = f"{type(value).__name__}: {value}"
                    span.set_status(self._Status(self._StatusCode.ERROR, description))
                span.end()
            except Exception:
                log.exception("worldflow: could not end the span of step %r", name)

        try:
            yield end
        finally:
            otel_context.detach(token)

    def _attempt_span(self, state: RunState, name: str, step_id: str, attempt: int) -> Any:
        return self.tracer.start_span(
            f"step {name}",
            context=self.run_context(state),
            attributes={
                "worldflow.run_id": state.run_id,
                "worldflow.workflow": state.workflow,
                "worldflow.step.name": name,
                "worldflow.step.id": step_id,
                "worldflow.step.attempt": attempt,
            },
        )

    # -- spans written from the log: sleeps, hook waits, the run ---------------------
    def committed(self, state: RunState, events: Sequence[NewEvent]) -> None:
        """Write the spans that the events just committed end."""
        for event in events:
            kind = event.kind
            try:
                if kind == EventKind.SLEEP_FIRED:
                    self._sleep(state, event)
                elif kind == EventKind.HOOK_RECEIVED:
                    self._hook(state, event)
                elif kind in (
                    EventKind.RUN_COMPLETED,
                    EventKind.RUN_FAILED,
                    EventKind.RUN_CANCELLED,
                ):
                    self._run(state, event)
            except Exception:  # tracing must never stop the engine
                log.exception(
                    "worldflow: could not write the span for %s of run %r", kind, state.run_id
                )

    @staticmethod
    def _command(state: RunState, cid: int) -> Event | None:
        """The event that recorded command ``cid`` (a sleep's or a hook's start)."""
        return state.commands[cid - 1] if 0 < cid <= len(state.commands) else None

    def _sleep(self, state: RunState, event: NewEvent) -> None:
        cid = int(event.data["cid"])
        command = self._command(state, cid)
        if command is None:
            return
        attributes: dict[str, Any] = {
            "worldflow.run_id": state.run_id,
            "worldflow.sleep.position": cid,
            "worldflow.sleep.until": float(command.data.get("until", 0.0)),
            "worldflow.sleep.early": bool(event.data.get("early")),
        }
        span = self.tracer.start_span(
            "sleep",
            context=self.run_context(state),
            start_time=_ns(command.at),
            attributes=attributes,
            links=self._link(event.data.get("trace")),
        )
        span.end(end_time=_ns(event.at))

    def _hook(self, state: RunState, event: NewEvent) -> None:
        token = str(event.data.get("token"))
        hook = state.hooks.get(token)
        command = None if hook is None else self._command(state, hook.cid)
        if hook is None or command is None:
            return
        span = self.tracer.start_span(
            f"{'webhook' if hook.webhook else 'hook'} wait",
            context=self.run_context(state),
            start_time=_ns(command.at),
            attributes={
                "worldflow.run_id": state.run_id,
                "worldflow.hook.token": token,
                "worldflow.hook.position": hook.cid,
                "worldflow.hook.payload_number": hook.received,
            },
            links=self._link(event.data.get("trace")),
        )
        span.end(end_time=_ns(event.at))

    def _run(self, state: RunState, event: NewEvent) -> None:
        trace_id, run_span, flags, caller_span = self._ids(state)
        parent = (
            self._context(trace_id, caller_span, flags)
            if caller_span is not None
            else self._trace.set_span_in_context(self._trace.INVALID_SPAN)
        )
        reset = _PENDING_IDS.set((trace_id, run_span)) if self.fixed_ids else None
        try:
            span = self.tracer.start_span(
                f"workflow {state.workflow}",
                context=parent,
                start_time=_ns(state.created_at),
                attributes={
                    "worldflow.run_id": state.run_id,
                    "worldflow.workflow": state.workflow,
                    "worldflow.status": event.kind.removeprefix("run_"),
                },
            )
        finally:
            if reset is not None:
                _PENDING_IDS.reset(reset)
        if event.kind == EventKind.RUN_FAILED:
            error = event.data.get("error") or {}
            description = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            span.set_status(self._Status(self._StatusCode.ERROR, description))
        elif event.kind == EventKind.RUN_COMPLETED:
            span.set_status(self._Status(self._StatusCode.OK))
        span.end(end_time=_ns(event.at))


class _RunIds:
    """The SDK's IdGenerator, except for the run span: its ids are the derived ones."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        pending = _PENDING_IDS.get()
        return pending[1] if pending is not None else int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        pending = _PENDING_IDS.get()
        return pending[0] if pending is not None else int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        # The derived ids are as random as a hash; the SDK's own ones are random.
        return bool(getattr(self.inner, "is_trace_id_random", lambda: True)())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
