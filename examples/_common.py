"""What the examples share: printing a run for a human, and waiting for an event.

Every example prints its run the same way. The table is built from nothing
but the run's events (``await run.events()``): the log holds everything
that happened, so any tool can show it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import worldflow as wf
from worldflow._state import RunState

__all__ = [
    "console",
    "fold",
    "format_seconds",
    "print_steps",
    "short_error",
    "short_name",
    "wait_for_event",
]

console = Console(highlight=False)

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "retrying": "yellow",
    "running": "cyan",
}


async def fold(run: wf.Run[Any]) -> RunState:
    """The run's state, folded from its event log."""
    return RunState.from_events(run.id, await run.events())


async def wait_for_event(run: wf.Run[Any], kind: str, timeout: float = 10.0) -> None:
    """Poll the run's log until it holds an event of this kind (e.g. ``"hook_created"``)."""
    deadline = time.monotonic() + timeout
    while not any(event.kind == kind for event in await run.events()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run.id} has no {kind!r} event after {timeout}s")
        await asyncio.sleep(0.01)


def short_name(name: str) -> str:
    """``examples.hail_ride.assign_driver`` -> ``assign_driver``."""
    return name.rpartition(".")[2]


def short_error(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{short_name(str(error.get('type', 'Error')))}: {error.get('message', '')}"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def print_steps(state: RunState) -> None:
    """One row per step: status, attempts, when it started and how long it took."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("step")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("started", justify="right")
    table.add_column("took", justify="right")
    origin = state.started_at or state.created_at
    notes: list[str] = []
    for number, step in enumerate(state.steps.values(), start=1):
        style = _STATUS_STYLE.get(step.status, "")
        started = "" if step.started_at is None else f"+{format_seconds(step.started_at - origin)}"
        took = ""
        if step.started_at is not None and step.ended_at is not None:
            took = format_seconds(step.ended_at - step.started_at)
        name = short_name(step.name)
        table.add_row(
            str(number),
            name,
            f"[{style}]{step.status}[/]" if style else step.status,
            str(step.attempt),
            started,
            took,
        )
        # A step keeps the last error it was retried on (or failed with).
        if step.error and step.status == "failed":
            notes.append(f"[red]{number} {name} failed:[/] {short_error(step.error)}")
        elif step.error and step.attempt > 1:
            notes.append(f"[yellow]{number} {name} retried after[/] {short_error(step.error)}")
    console.print(table)
    for note in notes:
        console.print(f"  {note}", soft_wrap=True)
    console.print()
