"""``worldflow runs show RUN_ID [--follow]``: one run, from :func:`worldflow._inspect.inspect_run`.

The view is built from the same :class:`~worldflow.RunDetail` that
``run.detail()`` returns and the web UI shows. ``--follow`` redraws it as the
run goes on (on a terminal; off one, it prints the view once the run ends)
and exits with the run's outcome, like ``start --wait``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, cast

from rich import box
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.live import Live
from rich.table import Table
from rich.text import Text

from worldflow._backend import Backend
from worldflow._documents import detail_document
from worldflow._duration import format_duration
from worldflow._errors import CorruptLogError, RunNotFound, WorldError
from worldflow._inspect import RunDetail, StepInfo, inspect_run
from worldflow._state import RunState
from worldflow._world import RunInfo, RunStatus

from ._common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    console,
    display,
    elapsed,
    local_time,
    missing_database,
    open_world,
    say,
    short,
    status_text,
    write_json,
)

__all__ = ["load_detail", "run_view", "show_run"]


async def load_detail(storage: Backend, run_id: str) -> tuple[RunDetail, str | None]:
    """The run, and why its stored summary could not be read if it could not.

    A summary the World cannot read (a corrupt row) does not hide the run: it
    is rebuilt from the event log, which holds everything the summary does.
    """
    try:
        info = await storage.get_run(run_id)
    except (CorruptLogError, WorldError, ValueError) as exc:
        problem = f"the stored summary of run {run_id!r} cannot be read ({exc})"
        return await _from_log(storage, run_id, problem), problem
    if info is not None and info.unreadable:
        problem = f"the stored summary of run {run_id!r} cannot be read ({info.unreadable})"
        return await _from_log(storage, run_id, problem), problem
    if info is None:
        missing = missing_database(storage)
        if missing is not None:
            raise CliError(f"{RunNotFound(run_id)} ({missing}; is --data-dir right?)")
        raise RunNotFound(run_id)
    return inspect_run(info, await storage.read_events(run_id)), None


async def _from_log(storage: Backend, run_id: str, problem: str) -> RunDetail:
    try:
        events = await storage.read_events(run_id)
    except (CorruptLogError, WorldError, ValueError) as exc:
        raise CliError(f"{problem}, nor its event log ({exc})") from None
    if not events:
        raise CliError(f"{problem}, and it has no events")
    state = RunState(run_id)
    for event in events:
        try:
            state.apply(event)
        except (CorruptLogError, KeyError, TypeError, ValueError):
            break  # inspect_run reports it as the detail's log_error
    info = RunInfo(
        id=run_id,
        workflow=state.workflow,
        status=cast(RunStatus, state.status),
        created_at=state.created_at,
        updated_at=events[-1].at,
        last_seq=events[-1].seq,
        output=state.output,
        error=state.error,
    )
    return inspect_run(info, events)


# -- JSON --------------------------------------------------------------------------


def call_text(call: dict[str, Any]) -> str:
    parts = [json.dumps(a, ensure_ascii=False) for a in call.get("args", [])]
    parts += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.get("kwargs", {}).items()]
    return ", ".join(parts)


def error_line(error: dict[str, Any] | None) -> str:
    error = error or {}
    message = str(error.get("message", ""))
    return f"{error.get('type', 'Error')}: {message}" if message else str(error.get("type", ""))


def _step_summary(st: StepInfo) -> Text:
    if st.status == "completed":
        return Text(short(st.output))
    if st.status == "failed":
        return Text(short(error_line(st.error), 80), style="red")
    if st.status == "retrying":
        when = local_time(st.retry_at, date=False, ms=True)
        return Text(short(f"retry at {when} after {error_line(st.error)}", 80), style="yellow")
    if st.status == "running" and st.attempts and st.attempts[-1].worker:
        return Text(f"on {st.attempts[-1].worker}", style="dim")
    return Text("")


def _due(until: float | None) -> str:
    if until is None:
        return ""
    left = until - time.time()
    return f"in {format_duration(left)}" if left > 0 else "due now"


#: One child in the tree ``runs show`` draws: (id, workflow, status, its own children).
ChildNode = tuple[str, str, str, list[Any]]


async def load_children(
    storage: Backend, d: RunDetail, *, depth: int = 4, limit: int = 200
) -> list[ChildNode]:
    """The run's children, and theirs (``depth`` levels, at most ``limit`` runs in
    all), each with the status its own summary gives."""
    seen = 0

    async def level(run_id: str, events: Any, left: int) -> list[ChildNode]:
        from worldflow._children import children_in

        nonlocal seen
        nodes: list[ChildNode] = []
        for link in children_in(events):
            if seen >= limit:
                break
            seen += 1
            info = await storage.get_run(link.id)
            status = info.status if info is not None else "not created yet"
            below: list[ChildNode] = []
            if info is not None and left > 1:
                below = await level(link.id, await storage.read_events(link.id), left - 1)
            nodes.append((link.id, link.workflow, status, below))
        return nodes

    return await level(d.id, d.events, depth)


def _tree_lines(nodes: list[ChildNode], indent: str = "  ") -> list[Text]:
    lines: list[Text] = []
    for run_id, workflow, status, below in nodes:
        line = Text(f"{indent}{run_id}  {workflow}  ")
        line.append_text(status_text(status))
        lines.append(line)
        lines += _tree_lines(below, indent + "  ")
    return lines


def run_view(d: RunDetail, children: list[ChildNode] | None = None) -> RenderableType:
    """The run as rich renderables: a header, the steps table, what it waits on, the
    outcome; ``children``: the tree of its child runs (from :func:`load_children`)."""
    info = d.info
    parts: list[RenderableType] = []
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("run", Text(info.id, style="bold"))
    head.add_row("workflow", info.workflow)
    if d.parent is not None:
        head.add_row("parent", d.parent)
    head.add_row("status", status_text(info.status))
    head.add_row("input", Text(short(call_text(d.input), 200) or "(no arguments)"))
    head.add_row("created", local_time(info.created_at))
    head.add_row("duration", elapsed(info.created_at, d.ended_at))
    done = sum(1 for s in d.steps if s.status == "completed")
    running = sum(1 for s in d.steps if s.status == "running")
    head.add_row("steps", f"{done} done, {running} running, {len(d.steps)} in all")
    head.add_row("events", str(len(d.events)))
    parts.append(head)

    if d.steps:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("STEP", overflow="fold")
        table.add_column("STATUS", no_wrap=True)
        table.add_column("ATTEMPTS", justify="right")
        table.add_column("STARTED", no_wrap=True)
        table.add_column("DURATION", justify="right", no_wrap=True)
        table.add_column("OUTPUT / ERROR", overflow="ellipsis", max_width=80)
        for st in d.steps:
            table.add_row(
                str(st.position),
                st.name,
                status_text(st.status),
                str(len(st.attempts)),
                local_time(st.started_at, date=False, ms=True),
                elapsed(st.started_at, st.ended_at) if st.started_at is not None else "",
                _step_summary(st),
            )
        parts += [Text(""), table]

    if children is None and d.children:  # as far as this run's log knows
        children = [(k.id, k.workflow, k.status or "running", []) for k in d.children]
    if children:
        parts += [Text(""), Text("children", style="bold"), *_tree_lines(children)]

    if not info.done:
        waiting = [
            f"sleep #{w.position} until {local_time(w.until)} ({_due(w.until)})" for w in d.sleeping
        ]
        for h in d.hooks_waiting:
            line = f"{h.kind} #{h.position} token {h.token!r}, {h.received} payload(s) received"
            waiting.append(line + (f", {h.url}" if h.url else ""))
        if d.cancel_requested:
            waiting.append("cancellation requested")
        if waiting:
            parts += [Text(""), Text("waiting", style="bold")]
            parts += [Text(f"  {line}") for line in waiting]

    if info.status == "completed":
        parts += [Text(""), Text("result", style="bold green")]
        parts.append(JSON.from_data(display(info.output), ensure_ascii=False))
    elif info.status == "failed":
        error = info.error or {}
        parts += [Text(""), Text(f"error: {error_line(error)}", style="bold red")]
        traceback = str(error.get("traceback") or "").rstrip()
        if traceback:
            parts.append(Text(traceback, style="dim"))
    return Group(*parts)


# -- the command ---------------------------------------------------------------------


def outcome_code(status: str) -> int:
    return {"failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(status, EXIT_OK)


def show_run(args: argparse.Namespace) -> int:
    if args.follow:
        return asyncio.run(_follow(args))

    async def read() -> tuple[RunDetail, str | None, list[ChildNode]]:
        async with open_world() as world:
            detail, unreadable = await load_detail(world, args.run_id)
            tree = await load_children(world, detail) if detail.children else []
            return detail, unreadable, tree

    detail, unreadable, tree = asyncio.run(read())
    if args.json:
        doc = detail_document(detail, unreadable)
        statuses = {node[0]: node[2] for node in tree}
        for child in doc["children"]:  # each child's status from its own summary
            child["status"] = statuses.get(child["id"], child["status"])
        write_json(doc)
    else:
        console().print(run_view(detail, tree))
    code = EXIT_OK
    if unreadable is not None:
        say(f"{unreadable}; shown from its event log")
        code = EXIT_FAILED
    if detail.log_error is not None:
        say(f"the event log is corrupt: {detail.log_error}")
        code = EXIT_FAILED
    return code


async def _follow(args: argparse.Namespace) -> int:
    """Redraw the run until it ends (or ``--timeout`` passes); exit with its outcome."""
    out = console()
    async with open_world() as world:
        detail, unreadable = await load_detail(world, args.run_id)
        if out.is_terminal and not args.json:
            with Live(run_view(detail), console=out, auto_refresh=False) as live:

                def redraw(d: RunDetail) -> None:
                    live.update(run_view(d), refresh=True)

                detail, unreadable = await _until_done(world, detail, unreadable, args, redraw)
        else:
            detail, unreadable = await _until_done(world, detail, unreadable, args, None)
            if not args.json:
                out.print(run_view(detail))
    if args.json:
        write_json(detail_document(detail, unreadable))
    if unreadable is not None:
        say(f"{unreadable}; shown from its event log")
    if not detail.info.done:
        say(f"run {detail.id} is still {detail.status} after {format_duration(args.timeout)}")
        return EXIT_TIMEOUT
    return outcome_code(detail.status)


async def _until_done(
    storage: Backend,
    detail: RunDetail,
    unreadable: str | None,
    args: argparse.Namespace,
    redraw: Callable[[RunDetail], None] | None,
) -> tuple[RunDetail, str | None]:
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    while not detail.info.done:
        if deadline is not None and loop.time() >= deadline:
            break
        await asyncio.sleep(args.interval)
        detail, unreadable = await load_detail(storage, detail.id)
        if redraw is not None:
            redraw(detail)
    return detail, unreadable
