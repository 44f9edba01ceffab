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
from rich.live import Live
from rich.table import Table
from rich.text import Text

from worldflow._backend import Backend
from worldflow._duration import format_duration
from worldflow._errors import CorruptLogError, WorldError
from worldflow._events import (
    CHILD_COMPLETED,
    CHILD_STARTED,
    HOOK_CREATED,
    HOOK_FAILED,
    HOOK_RECEIVED,
    RUN_COMPLETED,
    RUN_CREATED,
    RUN_FAILED,
    SLEEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SCHEDULED,
    STEP_STARTED,
)
from worldflow._inspect import call_args
from worldflow._tags import check_tags
from worldflow._world import Event, Pruning, RunInfo, RunPage

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
    missing_database,
    open_world,
    say,
    short,
    status_text,
    write_json,
)
from ._show import call_text, error_line, load_detail

__all__ = ["list_runs", "show_events"]


# -- runs list ---------------------------------------------------------------------


def _unreadable(info: RunInfo) -> str | None:
    """Why the World could not read the run's stored summary (then output and error are None)."""
    return info.unreadable


def run_summary(info: RunInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
    }
    if info.tags:
        doc["tags"] = dict(info.tags)
    unreadable = _unreadable(info)
    if unreadable is not None:
        doc["unreadable"] = unreadable
    elif info.status == "completed":
        doc["result"] = display(info.output)
    elif info.status == "failed":
        doc["error"] = info.error or {}
    return doc


async def _page(storage: Backend, args: argparse.Namespace) -> RunPage:
    try:
        tags = dict(args.tags) if getattr(args, "tags", None) else None
        if tags is not None:
            check_tags(tags, "--tag")
        return await storage.list_runs(
            status=args.status,
            workflow=args.workflow,
            limit=args.limit,
            cursor=args.cursor,
            tags=tags,
        )
    except (CorruptLogError, WorldError) as exc:
        raise CliError(f"cannot list runs: {exc}") from None
    except json.JSONDecodeError as exc:  # the store could not read a stored run
        raise CliError(f"cannot list runs: a stored run cannot be read ({exc})") from None
    except (TypeError, ValueError) as exc:
        if str(exc).startswith("--tag"):
            raise CliError(str(exc), EXIT_USAGE) from None
        if args.cursor is None:  # then it is not the cursor: the World failed
            raise CliError(f"cannot list runs: {type(exc).__name__}: {exc}") from None
        raise CliError(str(exc), EXIT_USAGE) from None  # a malformed --cursor


def list_runs(args: argparse.Namespace) -> int:
    if args.watch:
        return asyncio.run(_watch(args))

    async def fetch() -> tuple[RunPage, str | None]:
        async with open_world() as world:
            return await _page(world, args), missing_database(world)

    page, missing = asyncio.run(fetch())
    if missing is not None:
        say(f"no runs: {missing} (is --data-dir right?)")
    for info in page.runs:
        if (reason := _unreadable(info)) is not None:
            say(
                f"the stored summary of run {info.id!r} cannot be read ({reason}); "
                f"`{shlex.join(['worldflow', 'runs', 'show', info.id])}` shows it from its event log"
            )
    if args.json:
        write_json(_page_doc(page))
        return EXIT_OK
    if not page.runs:
        if missing is None:
            say("no runs" + ("" if args.cursor is None else " after this cursor"))
        return EXIT_OK
    out = console()
    out.print(_runs_table(page))
    if page.cursor is not None:
        again = ["worldflow", "runs", "list"]
        for flag, value in (("--status", args.status), ("--workflow", args.workflow)):
            if value is not None:
                again += [flag, value]
        for key, value in getattr(args, "tags", None) or ():
            again += ["--tag", f"{key}={value}"]
        again += ["--limit", str(args.limit), "--cursor", page.cursor]
        out.print(Text(f"more: {shlex.join(again)}", style="dim"))
    return EXIT_OK


def _page_doc(page: RunPage) -> dict[str, Any]:
    return {"runs": [run_summary(r) for r in page.runs], "cursor": page.cursor}


def _runs_table(page: RunPage) -> Table:
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
            status_text(info.status)
            if _unreadable(info) is None
            else Text(f"{info.status} (unreadable)", style="bold red"),
            local_time(info.created_at),
            Text(elapsed(info.created_at, info.updated_at if info.done else None)),
        )
    return table


async def _watch(args: argparse.Namespace) -> int:
    """Redraw the page every ``--interval`` until Ctrl-C (or ``--count`` refreshes).

    On a terminal the table is redrawn in place; otherwise (or with ``--json``)
    a new page is printed each time it changed, so ``--json --watch`` is a
    stream of JSON documents, one per line.
    """
    out = console()
    refreshes = 0
    last: Any = None
    async with open_world() as world:
        page = await _page(world, args)
        if out.is_terminal and not args.json:
            with Live(_runs_table(page), console=out, auto_refresh=False) as live:
                while args.count is None or refreshes < args.count:
                    await asyncio.sleep(args.interval)
                    page = await _page(world, args)
                    live.update(_runs_table(page), refresh=True)
                    refreshes += 1
            return EXIT_OK
        while True:
            doc = _page_doc(page)
            if doc != last:
                last = doc
                if args.json:
                    write_json(doc)
                else:
                    out.print(_runs_table(page))
                    out.print(Text(f"-- {local_time(time.time())}", style="dim"))
            refreshes += 1
            if args.count is not None and refreshes >= args.count:
                return EXIT_OK
            await asyncio.sleep(args.interval)
            page = await _page(world, args)


# -- runs events -------------------------------------------------------------------


def _event_summary(event: Event) -> str:
    d = event.data
    cid = f"#{d['cid']} " if "cid" in d else ""
    kind = event.kind
    try:
        if kind == RUN_CREATED:
            return f"{d.get('workflow')}({call_text(call_args(d.get('input')))})"
        if kind == STEP_SCHEDULED:
            return f"{cid}{d.get('name')}({call_text(call_args(d.get('input')))})"
        if kind == STEP_STARTED:
            return f"{cid}attempt {d.get('attempt')} on {d.get('worker')}"
        if kind == STEP_RETRYING:
            when = local_time(d.get("retry_at"), date=False, ms=True)
            return f"{cid}attempt {d.get('attempt')} failed, retry at {when}: {error_line(d.get('error'))}"
        if kind in (STEP_COMPLETED, RUN_COMPLETED):
            return f"{cid}→ {short(display(d.get('output')), 80)}"
        if kind in (STEP_FAILED, RUN_FAILED, HOOK_FAILED):
            return f"{cid}{error_line(d.get('error'))}"
        if kind == SLEEP_STARTED:
            name = f" ({d['name']})" if d.get("name") else ""
            return f"{cid}until {local_time(d.get('until'), ms=True)}{name}"
        if kind == HOOK_CREATED:
            what = "webhook" if d.get("webhook") else "hook"
            return f"{cid}{what} token {d.get('token')!r}"
        if kind == HOOK_RECEIVED:
            return f"token {d.get('token')!r} ← {short(display(d.get('payload')), 80)}"
        if kind == CHILD_STARTED:
            call = call_text(call_args(d.get("input")))
            return f"{cid}{d.get('name')}({call}) as run {d.get('id')}"
        if kind == CHILD_COMPLETED:
            if d.get("status") == "completed":
                return f"{cid}{d.get('id')} → {short(display(d.get('output')), 80)}"
            if d.get("status") == "failed":
                return f"{cid}{d.get('id')} failed: {error_line(d.get('error'))}"
            return f"{cid}{d.get('id')} {d.get('status')}"
    except (TypeError, ValueError, AttributeError):
        pass  # a malformed event: show its data as it is
    data = {k: v for k, v in d.items() if k != "cid"}
    return f"{cid}{short(display(data), 100)}" if data else cid.strip()


def prune_runs(args: argparse.Namespace) -> int:
    """``worldflow runs prune --older-than AGE``: delete runs that ended before now - AGE."""

    async def prune() -> int:
        async with open_world(read_only=False) as reader:
            storage = reader.world.storage
            if not isinstance(storage, Pruning):
                raise CliError(f"the {reader.world.name} world cannot delete old runs")
            before = reader.world.clock.now() - args.older_than
            total = 0
            while deleted := await storage.prune(before, 500):
                total += deleted
            return total

    deleted = asyncio.run(prune())
    if args.json:
        write_json({"deleted": deleted, "older_than": args.older_than})
    else:
        say(f"deleted {deleted} run(s) that ended over {format_duration(args.older_than)} ago")
    return EXIT_OK


def show_events(args: argparse.Namespace) -> int:
    async def read() -> tuple[list[Event], str | None]:
        async with open_world() as world:
            detail, unreadable = await load_detail(world, args.run_id)
            return list(detail.events), unreadable

    events, unreadable = asyncio.run(read())
    if unreadable is not None:
        say(unreadable)
    code = EXIT_OK if unreadable is None else EXIT_FAILED
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
        return code
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("SEQ", justify="right")
    table.add_column("TIME", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("DETAILS", overflow="fold")
    for e in events:
        details = json.dumps(e.data, ensure_ascii=False) if args.raw else _event_summary(e)
        table.add_row(str(e.seq), local_time(e.at, ms=True), e.kind, Text(details))
    console().print(table)
    return code
