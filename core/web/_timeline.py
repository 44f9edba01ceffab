"""The run page's waterfall: one row per step, sleep or hook wait, drawn to scale.

:func:`layout` turns a :class:`~worldflow._inspect.RunDetail` into rows of bars
whose positions are percentages of the run's span (from its creation to its
end, or to now while it runs), as tracing tools draw spans. It only computes;
the page draws the rows as SVG. Kept apart from the HTML so that the geometry
(a retry's gap really is a gap, a bar never leaves the chart) can be tested
without a browser.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from worldflow._duration import format_duration
from worldflow._inspect import RunDetail, StepInfo, WaitInfo

__all__ = ["Bar", "Mark", "Row", "Timeline", "layout"]

BarKind = Literal[
    "queued",  # a step scheduled, no attempt started yet
    "completed",
    "failed",
    "retried",  # an attempt that failed and was retried
    "running",
    "lost",  # its worker went away
    "backoff",  # the wait between a failed attempt and the next
    "sleep",
    "sleep-pending",
    "hook",
    "hook-waiting",
]

MIN_WIDTH = 0.3  # percent: an instant still shows as a sliver


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    """A span on a row: ``left`` and ``width`` are percentages of the chart."""

    left: float
    width: float
    kind: BarKind
    label: str  # the tooltip


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    """An instant on a row (a hook payload's arrival), as a percentage."""

    at: float
    label: str


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    kind: Literal["step", "sleep", "hook", "webhook"]
    position: int
    label: str
    status: str
    bars: tuple[Bar, ...]
    marks: tuple[Mark, ...] = ()
    note: str = ""  # e.g. "3 attempts", "until 12:00:00 UTC"


@dataclasses.dataclass(frozen=True, slots=True)
class Timeline:
    start: float  # epoch seconds at 0%
    end: float  # epoch seconds at 100%
    rows: tuple[Row, ...]
    ticks: tuple[tuple[float, str], ...]  # (percent, "+1.5s")


class _Scale:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.span = max(end - start, 1e-3)

    def pct(self, t: float) -> float:
        return min(100.0, max(0.0, (t - self.start) / self.span * 100.0))

    def bar(self, t0: float, t1: float, kind: BarKind, label: str) -> Bar:
        left = self.pct(t0)
        width = max(self.pct(t1) - left, MIN_WIDTH)
        left = min(left, 100.0 - width)  # an instant at the very end stays inside
        return Bar(round(left, 3), round(width, 3), kind, label)


def layout(detail: RunDetail, now: float) -> Timeline:
    """The waterfall of ``detail``, with running things drawn up to ``now``."""
    start = detail.info.created_at
    end = detail.ended_at if detail.ended_at is not None else max(now, detail.info.updated_at)
    scale = _Scale(start, end)
    rows: list[tuple[int, Row]] = [(s.position, _step_row(s, scale)) for s in detail.steps]
    rows += [(w.position, _wait_row(w, scale, detail.info.done)) for w in detail.waits]
    rows.sort(key=lambda pair: pair[0])
    return Timeline(start, end, tuple(r for _, r in rows), _ticks(scale))


def _step_row(step: StepInfo, scale: _Scale) -> Row:
    bars: list[Bar] = []
    first = step.attempts[0].started_at if step.attempts else scale.end
    if first > step.scheduled_at:
        bars.append(
            scale.bar(step.scheduled_at, first, "queued", f"queued {_d(first - step.scheduled_at)}")
        )
    previous_end: float | None = None
    for attempt in step.attempts:
        if previous_end is not None and attempt.started_at > previous_end:
            gap = attempt.started_at - previous_end
            bars.append(
                scale.bar(previous_end, attempt.started_at, "backoff", f"retry delay {_d(gap)}")
            )
        ended = attempt.ended_at if attempt.ended_at is not None else scale.end
        label = f"attempt {attempt.number}: {attempt.outcome}, {_d(ended - attempt.started_at)}"
        if attempt.error:
            label += f" — {attempt.error.get('type', 'Error')}: {attempt.error.get('message', '')}"
        bars.append(scale.bar(attempt.started_at, ended, attempt.outcome, label))
        previous_end = attempt.ended_at
    if step.status == "retrying" and previous_end is not None:
        until = step.retry_at if step.retry_at is not None else scale.end
        bars.append(
            scale.bar(previous_end, min(until, scale.end), "backoff", f"next attempt at {until}")
        )
    count = len(step.attempts)
    note = f"{count} attempts" if count > 1 else (_d(step.duration) if step.duration else "")
    return Row("step", step.position, step.name, step.status, tuple(bars), note=note)


def _wait_row(wait: WaitInfo, scale: _Scale, run_done: bool) -> Row:
    ended = wait.ended_at
    if wait.kind == "sleep":
        asked = "" if wait.until is None else _d(wait.until - wait.started_at)
        label = f"sleep {asked}".strip() + (f" ({wait.name})" if wait.name else "")
        if ended is not None:
            status = "woken early" if wait.early else "done"
            bar = scale.bar(wait.started_at, ended, "sleep", f"slept {_d(ended - wait.started_at)}")
            return Row("sleep", wait.position, label, status, (bar,))
        status = "left" if run_done else "sleeping"
        bar = scale.bar(wait.started_at, scale.end, "sleep-pending", f"sleeping, {asked}")
        return Row("sleep", wait.position, label, status, (bar,), note="until deadline")
    label = f"{wait.kind} {wait.token}" if wait.token else wait.kind
    marks = tuple(
        Mark(round(scale.pct(t), 3), f"payload {i} at +{_d(t - scale.start)}")
        for i, t in enumerate(wait.payloads_at, 1)
    )
    if ended is not None:
        bar = scale.bar(wait.started_at, ended, "hook", f"waited {_d(ended - wait.started_at)}")
        status = f"{wait.received} received"
    else:
        status = "left" if run_done else "waiting"
        bar = scale.bar(wait.started_at, scale.end, "hook-waiting", "waiting for a payload")
    return Row(wait.kind, wait.position, label, status, (bar,), marks)


# Tick spacings people read at a glance: 1-2-5 steps below a minute, then
# whole minutes, hours and days (never "+3m 20s").
_STEPS = tuple(
    sorted(
        {
            *(m * 10.0**e for e in range(-3, 2) for m in (1, 2, 5)),
            *(60.0 * m for m in (1, 2, 5, 10, 15, 30)),
            *(3600.0 * m for m in (1, 2, 3, 6, 12)),
            *(86400.0 * m for m in (1, 2, 7, 14, 30)),
        }
    )
)


def _ticks(scale: _Scale, most: int = 6) -> tuple[tuple[float, str], ...]:
    """Round offsets from the run's start (at most ``most`` of them), as axis labels."""
    step = next((s for s in _STEPS if scale.span / s <= most), scale.span / most)
    count = int(scale.span / step + 1e-9)
    return tuple(
        (round(i * step / scale.span * 100.0, 3), "0" if i == 0 else "+" + _d(i * step))
        for i in range(count + 1)
    )


def _d(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(max(0.0, seconds))
