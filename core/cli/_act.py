"""``worldflow start``, ``runs cancel`` and ``hooks resume``: commands that act, through the API.

They use ``import worldflow as wf`` like any program would, so they behave as
the API does (the configured World, ``WORLDFLOW_MODULES``). The runtime that
the API starts on this process's loop stops when the command's loop ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import worldflow as wf
from worldflow._api import client
from worldflow._duration import format_duration

from ._common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    display,
    say,
    write_json,
)
from ._load import load_workflow, parse_json

__all__ = ["cancel_run", "resume_hook", "start_run"]


def start_run(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.target)
    values = [parse_json(text, f"argument {i}") for i, text in enumerate(args.args, 1)]
    wait = args.wait or args.timeout is not None

    async def main() -> int:
        if wait:  # this process executes the run while it waits
            return await _start(args, workflow, values, wait)
        async with client():  # a worker executes it; this process only records it
            return await _start(args, workflow, values, wait)

    return asyncio.run(main())


async def _start(
    args: argparse.Namespace, workflow: wf.Workflow[Any, Any], values: list[Any], wait: bool
) -> int:
    try:
        run = await wf.start(workflow, *values, id=args.id)
    except ValueError as exc:  # a malformed --id, or one taken by another workflow's run
        raise CliError(str(exc), EXIT_USAGE) from None
    doc: dict[str, Any] = {"id": run.id, "workflow": workflow.name}
    if not wait:
        doc["status"] = await run.status()
        if args.json:
            write_json(doc)
        else:
            print(run.id)
        return EXIT_OK

    if not args.json:
        say(f"started run {run.id} ({workflow.name}); waiting for it to end")
    timed_out = False
    try:
        await run.result(timeout=args.timeout)
    except TimeoutError:
        timed_out = True
    except (wf.RunFailed, wf.RunCancelled, wf.SerializationError):
        pass  # the outcome is read below, in its display form
    info = await run.info()
    doc["status"] = info.status
    if info.status == "completed":
        doc["result"] = display(info.output)
    elif info.status == "failed":
        doc["error"] = info.error or {}
    if args.json:
        write_json(doc)
    elif info.status == "completed":
        print(_json_text(doc["result"]))

    if info.status == "completed":
        return EXIT_OK
    if info.status == "failed":
        error = info.error or {}
        say(
            f"run {run.id} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
            f" (details: worldflow runs show {run.id})"
        )
        return EXIT_FAILED
    if info.status == "cancelled":
        say(f"run {run.id} was cancelled")
        return EXIT_CANCELLED
    assert timed_out
    say(
        f"run {run.id} is still {info.status} after {format_duration(args.timeout)}; "
        "a worker (worldflow worker MODULE) will carry it on"
    )
    return EXIT_TIMEOUT


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def cancel_run(args: argparse.Namespace) -> int:
    async def cancel() -> int:
        run = wf.get_run(args.run_id)
        info = await run.info()  # wf.RunNotFound if there is none
        if info.done:
            if args.json:
                write_json({"id": run.id, "status": info.status, "cancel_requested": False})
            say(f"run {run.id} has already ended ({info.status}); nothing to cancel")
            return EXIT_OK
        await run.cancel()
        if args.json:
            write_json({"id": run.id, "status": info.status, "cancel_requested": True})
        else:
            print(f"cancellation requested for run {run.id} ({info.workflow})")
        return EXIT_OK

    async def main() -> int:
        async with client():
            return await cancel()

    return asyncio.run(main())


def resume_hook(args: argparse.Namespace) -> int:
    payload = parse_json(args.payload, "the payload")

    async def resume() -> int:
        run = await wf.resume_hook(args.token, payload)  # wf.HookNotFound if no live hook
        if args.json:
            write_json({"token": args.token, "run_id": run.id})
        else:
            print(f"resumed hook {args.token!r} of run {run.id}")
        return EXIT_OK

    async def main() -> int:
        async with client():
            return await resume()

    return asyncio.run(main())
