"""``worldflow runs list|show|events``: read-only views of the World's storage.

These never start a runtime (no background work, no message delivery) and
never import the user's modules: values are shown in their display form
(:func:`worldflow._codec.to_display`), so a class in a log is only a name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import time
from typing import Any

from rich import box
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from worldflow._duration import format_duration
from worldflow._errors import CorruptLogError, RunNotFound
from worldflow._state import RunState, StepState
from worldflow._world import Event, RunInfo, RunPage, Storage

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    console,
    display,
    elapsed,
    iso,
    local_time,
    open_world,
    say,
    short,
    status_text,
    write_json,
)

__all__ = ["list_runs", "show_events", "show_run"]


# -- runs list ---------------------------------------------------------------------


def run_summary(info: RunInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
    }
    if info.status == "completed":
        doc["result"] = display(info.output)
    elif info.status == "failed":
        doc["error"] = info.error or {}
    return doc


def list_runs(args: argparse.Namespace) -> int:
    async def fetch() -> RunPage:
        async with open_world() as world:
            try:
                return await world.list_runs(
                    status=args.status, workflow=args.workflow, limit=args.limit, cursor=args.cursor
                )
            except ValueError as exc:  # a malformed --cursor
                raise CliError(str(exc), EXIT_USAGE) from None

    page = asyncio.run(fetch())
    if args.json:
        write_json({"runs": [run_summary(r) for r in page.runs], "cursor": page.cursor})
        return EXIT_OK
    if not page.runs:
        say("no runs" + ("" if args.cursor is None else " after this cursor"))
        return EXIT_OK
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("WORKFLOW", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    for info in page.runs:
        table.add_row(
            info.id,
            info.workflow,
            status_text(info.status),
            local_time(info.created_at),
            Text(elapsed(info.created_at, info.updated_at if info.done else None)),
        )
    out = console()
    out.print(table)
    if page.cursor is not None:
        again = ["worldflow", "runs", "list"]
        for flag, value in (("--status", args.status), ("--workflow", args.workflow)):
            if value is not None:
                again += [flag, value]
        again += ["--limit", str(args.limit), "--cursor", page.cursor]
        out.print(Text(f"more: {shlex.join(again)}", style="dim"))
    return EXIT_OK


# -- runs show ---------------------------------------------------------------------


async def _load(storage: Storage, run_id: str) -> tuple[RunInfo, list[Event]]:
    info = await storage.get_run(run_id)
    if info is None:
        raise RunNotFound(run_id)
    return info, await storage.read_events(run_id)


def _read(run_id: str) -> tuple[RunInfo, list[Event]]:
    async def read() -> tuple[RunInfo, list[Event]]:
        async with open_world() as world:
            return await _load(world, run_id)

    return asyncio.run(read())


def _fold(run_id: str, events: list[Event]) -> tuple[RunState, str | None]:
    """The run's state; a corrupt log is folded up to the bad event and the reason returned."""
    state = RunState(run_id)
    for event in events:
        try:
            state.apply(event)
        except CorruptLogError as exc:
            return state, str(exc)
    return state, None


def _call(tree: Any) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments in an encoded ``[args, kwargs]`` tree."""
    shown = display(tree)
    if isinstance(shown, list) and len(shown) == 2 and isinstance(shown[1], dict):
        args = shown[0] if isinstance(shown[0], list) else [shown[0]]
        return args, shown[1]
    return [shown], {}


def _call_text(args: list[Any], kwargs: dict[str, Any]) -> str:
    parts = [json.dumps(a, ensure_ascii=False) for a in args]
    parts += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _error_line(error: dict[str, Any] | None) -> str:
    error = error or {}
    message = str(error.get("message", ""))
    return f"{error.get('type', 'Error')}: {message}" if message else str(error.get("type", ""))


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _input_doc(tree: Any) -> dict[str, Any]:
    args, kwargs = _call(tree)
    return {"args": args, "kwargs": kwargs}


def _step_doc(st: StepState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "cid": st.cid,
        "name": st.name,
        "status": st.status,
        "attempts": st.attempt,
        "scheduled_at": iso(st.scheduled_at),
        "started_at": iso(st.started_at),
        "ended_at": iso(st.ended_at),
        "duration": _span(st.started_at, st.ended_at),
        "input": _input_doc(st.input),
    }
    if st.status == "completed":
        doc["output"] = display(st.output)
    elif st.error is not None:  # failed, or a failed attempt's error before a retry
        doc["error"] = st.error
    if st.status == "retrying":
        doc["retry_at"] = iso(st.retry_at)
    if st.worker is not None:
        doc["worker"] = st.worker
    return doc


def _show_doc(info: RunInfo, state: RunState, events: int, problem: str | None) -> dict[str, Any]:
    ended = state.ended_at if info.done else None
    doc: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "started_at": iso(state.started_at),
        "ended_at": iso(ended),
        "duration": None if ended is None else ended - info.created_at,
        "events": events,
        "input": _input_doc(state.input),
        "steps": [_step_doc(st) for st in state.steps.values()],
        "sleeps": [],
        "hooks": [],
    }
    if not info.done:
        doc["sleeps"] = [{"cid": cid, "until": iso(until)} for cid, until in state.timers.items()]
        doc["hooks"] = [
            {
                "cid": h.cid,
                "token": h.token,
                "webhook": h.webhook,
                "url": h.url,
                "received": h.received,
            }
            for h in state.hooks.values()
        ]
        doc["cancel_requested"] = state.cancel_requested
    if info.status == "completed":
        doc["result"] = display(info.output)
    elif info.status == "failed":
        error = info.error or {}
        doc["error"] = {
            "type": error.get("type"),
            "message": error.get("message"),
            "traceback": error.get("traceback"),
        }
    if problem is not None:
        doc["log_error"] = problem
    return doc


def show_run(args: argparse.Namespace) -> int:
    info, events = _read(args.run_id)
    state, problem = _fold(args.run_id, events)
    if args.json:
        write_json(_show_doc(info, state, len(events), problem))
    else:
        _print_run(info, state, len(events))
    if problem is not None:
        say(f"the event log is corrupt: {problem}")
        return EXIT_FAILED
    return EXIT_OK


def _step_summary(st: StepState) -> Text:
    if st.status == "completed":
        return Text(short(display(st.output)))
    if st.status == "failed":
        return Text(short(_error_line(st.error), 80), style="red")
    if st.status == "retrying":
        when = local_time(st.retry_at, date=False, ms=True)
        return Text(short(f"retry at {when} after {_error_line(st.error)}", 80), style="yellow")
    if st.status == "running" and st.worker:
        return Text(f"on {st.worker}", style="dim")
    return Text("")


def _print_run(info: RunInfo, state: RunState, events: int) -> None:
    out = console()
    args, kwargs = _call(state.input)
    ended = state.ended_at if info.done else None
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("run", Text(info.id, style="bold"))
    head.add_row("workflow", info.workflow)
    head.add_row("status", status_text(info.status))
    head.add_row("input", Text(short(_call_text(args, kwargs), 200) or "(no arguments)"))
    head.add_row("created", local_time(info.created_at))
    head.add_row("duration", elapsed(info.created_at, ended))
    head.add_row("events", str(events))
    out.print(head)

    if state.steps:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("STEP", overflow="fold")
        table.add_column("STATUS", no_wrap=True)
        table.add_column("ATTEMPTS", justify="right")
        table.add_column("STARTED", no_wrap=True)
        table.add_column("DURATION", justify="right", no_wrap=True)
        table.add_column("OUTPUT / ERROR", overflow="ellipsis", max_width=80)
        for st in state.steps.values():
            table.add_row(
                str(st.cid),
                st.name,
                status_text(st.status),
                str(st.attempt),
                local_time(st.started_at, date=False, ms=True),
                elapsed(st.started_at, st.ended_at) if st.started_at is not None else "",
                _step_summary(st),
            )
        out.print()
        out.print(table)

    if not info.done:
        waiting = [
            f"sleep #{cid} until {local_time(until)} ({_due(until)})"
            for cid, until in state.timers.items()
        ]
        for h in state.hooks.values():
            kind = "webhook" if h.webhook else "hook"
            line = f"{kind} #{h.cid} token {h.token!r}, {h.received} payload(s) received"
            waiting.append(line + (f", {h.url}" if h.url else ""))
        if state.cancel_requested:
            waiting.append("cancellation requested")
        if waiting:
            out.print()
            out.print(Text("waiting", style="bold"))
            for line in waiting:
                out.print(Text(f"  {line}"))

    if info.status == "completed":
        out.print()
        out.print(Text("result", style="bold green"))
        out.print(JSON.from_data(display(info.output), ensure_ascii=False))
    elif info.status == "failed":
        error = info.error or {}
        out.print()
        out.print(Text(f"error: {_error_line(error)}", style="bold red"))
        traceback = str(error.get("traceback") or "").rstrip()
        if traceback:
            out.print(Text(traceback, style="dim"))


def _due(until: float) -> str:
    left = until - time.time()
    return f"in {format_duration(left)}" if left > 0 else "due now"


# -- runs events -------------------------------------------------------------------


def _event_summary(event: Event) -> str:
    d = event.data
    cid = f"#{d['cid']} " if "cid" in d else ""
    kind = event.kind
    try:
        if kind == "run_created":
            return f"{d.get('workflow')}({_call_text(*_call(d.get('input')))})"
        if kind == "step_scheduled":
            return f"{cid}{d.get('name')}({_call_text(*_call(d.get('input')))})"
        if kind == "step_started":
            return f"{cid}attempt {d.get('attempt')} on {d.get('worker')}"
        if kind == "step_retrying":
            when = local_time(d.get("retry_at"), date=False, ms=True)
            return f"{cid}attempt {d.get('attempt')} failed, retry at {when}: {_error_line(d.get('error'))}"
        if kind in ("step_completed", "run_completed"):
            return f"{cid}→ {short(display(d.get('output')), 80)}"
        if kind in ("step_failed", "run_failed", "hook_failed"):
            return f"{cid}{_error_line(d.get('error'))}"
        if kind == "sleep_started":
            name = f" ({d['name']})" if d.get("name") else ""
            return f"{cid}until {local_time(d.get('until'), ms=True)}{name}"
        if kind == "hook_created":
            what = "webhook" if d.get("webhook") else "hook"
            return f"{cid}{what} token {d.get('token')!r}"
        if kind == "hook_received":
            return f"token {d.get('token')!r} ← {short(display(d.get('payload')), 80)}"
    except (TypeError, ValueError, AttributeError):
        pass  # a malformed event: show its data as it is
    data = {k: v for k, v in d.items() if k != "cid"}
    return f"{cid}{short(display(data), 100)}" if data else cid.strip()


def show_events(args: argparse.Namespace) -> int:
    _, events = _read(args.run_id)
    if args.json:
        write_json(
            [
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "at": iso(e.at),
                    "data": e.data if args.raw else display(e.data),
                }
                for e in events
            ]
        )
        return EXIT_OK
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("SEQ", justify="right")
    table.add_column("TIME", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("DETAILS", overflow="fold")
    for e in events:
        details = json.dumps(e.data, ensure_ascii=False) if args.raw else _event_summary(e)
        table.add_row(str(e.seq), local_time(e.at, ms=True), e.kind, Text(details))
    console().print(table)
    return EXIT_OK
