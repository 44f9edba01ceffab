"""``worldflow schedules list|pause|resume|trigger MODULE ...``: the schedules that
modules define (``@wf.schedule``), their next times, and their controls.

Schedules live in code: the commands import the MODULEs named (as ``worldflow
worker`` does) to know them, and act through a client runtime (the workers
run what they start).
"""

from __future__ import annotations

import argparse
import asyncio

from rich import box
from rich.table import Table

from worldflow import schedules as _schedules
from worldflow._api import client

from ._common import EXIT_FAILED, EXIT_OK, CliError, console, iso, local_time, say, write_json
from ._load import import_module

__all__ = ["schedules_command"]


def _load(args: argparse.Namespace) -> None:
    for name in args.modules:
        import_module(name)


def schedules_command(args: argparse.Namespace) -> int:
    _load(args)
    action = args.action

    async def main() -> int:
        async with client():
            if action == "list":
                infos = await _schedules.list_schedules()
                if args.json:
                    write_json(
                        [
                            {
                                "workflow": i.workflow,
                                "cron": i.cron,
                                "timezone": i.timezone,
                                "overlap": i.overlap,
                                "catch_up": i.catch_up,
                                "paused": i.paused,
                                "next_at": None
                                if i.next_at is None
                                else iso(i.next_at.timestamp()),
                            }
                            for i in infos
                        ]
                    )
                    return EXIT_OK
                if not infos:
                    say("no schedules in these modules")
                    return EXIT_OK
                table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
                for column in ("WORKFLOW", "CRON", "ZONE", "NEXT", "OVERLAP", "CATCH-UP"):
                    table.add_column(column, no_wrap=True)
                for i in infos:
                    upcoming = "paused" if i.next_at is None else local_time(i.next_at.timestamp())
                    table.add_row(i.workflow, i.cron, i.timezone, upcoming, i.overlap, i.catch_up)
                console().print(table)
                return EXIT_OK
            try:
                if action == "pause":
                    changed = await _schedules.pause(args.workflow)
                    say(
                        f"paused {args.workflow}"
                        if changed
                        else f"{args.workflow} was paused already"
                    )
                    return EXIT_OK if changed else EXIT_FAILED
                if action == "resume":
                    changed = await _schedules.resume(args.workflow)
                    say(
                        f"resumed {args.workflow}" if changed else f"{args.workflow} was not paused"
                    )
                    return EXIT_OK if changed else EXIT_FAILED
                run_id = await _schedules.trigger(args.workflow)
            except LookupError as exc:
                raise CliError(str(exc), EXIT_FAILED) from None
            if args.json:
                write_json({"workflow": args.workflow, "run_id": run_id})
            else:
                print(run_id)
            return EXIT_OK

    return asyncio.run(main())


def add_schedule_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], command: object, text: object
) -> None:
    """Add ``schedules list|pause|resume|trigger`` (called by the parser)."""
    parent = commands.add_parser(
        "schedules", help="cron schedules of workflows: list, pause, resume, trigger"
    )
    subs = parent.add_subparsers(title="commands", metavar="COMMAND", required=True)
    helps = {
        "list": "the schedules the MODULEs define, with their next times",
        "pause": "stop a schedule's fires until resumed",
        "resume": "start a paused schedule's fires again, from its next time",
        "trigger": "start a run of the scheduled workflow now",
    }
    for action, summary in helps.items():
        sub = command(subs, action, schedules_command, summary)  # type: ignore[operator]
        if action != "list":
            sub.add_argument(
                "workflow", metavar="WORKFLOW", type=text, help="the workflow's name (see list)"
            )
        sub.add_argument(
            "--modules",
            required=True,
            type=lambda t: [m for m in text(t).split(",") if m],  # type: ignore[operator]
            metavar="M[,M...]",
            help="the modules that define the schedules (imported, as `worldflow worker` does)",
        )
        sub.set_defaults(action=action)
