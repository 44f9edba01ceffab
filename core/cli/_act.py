"""``worldflow start``, ``runs cancel`` and ``hooks resume``: commands that act, through the API.

They use ``import worldflow as wf`` like any program would, so they behave as
the API does (the configured World, ``WORLDFLOW_MODULES``). The runtime that
the API starts on this process's loop stops when the command's loop ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.status import Status

import worldflow as wf
from worldflow._api import client
from worldflow._duration import format_duration
from worldflow._inspect import RunDetail

from ._common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    display,
    local_time,
    say,
    write_json,
)
from ._load import load_workflow, parse_json

__all__ = ["cancel_run", "progress_line", "rerun_run", "resume_hook", "start_run", "wake_sleeps"]


def start_run(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.target)
    values = [parse_json(text, f"argument {i}") for i, text in enumerate(args.args, 1)]
    try:
        workflow.check_arguments(tuple(values), {})
    except TypeError as exc:  # the run would only fail with it, once a worker ran it
        raise CliError(str(exc), EXIT_USAGE) from None
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
    except wf.SerializationError as exc:  # e.g. JSON arguments nested too deeply to store
        raise CliError(str(exc), EXIT_USAGE) from None
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

    return await _wait(args, run, doc, started=True)


async def _wait(
    args: argparse.Namespace, run: wf.Run[Any], doc: dict[str, Any], started: bool
) -> int:
    """Wait for the run to end, showing its progress on a terminal; print and exit with its outcome."""
    if not args.json:
        say(
            f"{'started' if started else 'waiting for'} run {run.id} ({doc['workflow']}); waiting for it to end"
        )
    timed_out = False
    progress = _Progress(run) if sys.stderr.isatty() and not args.json else None
    try:
        if progress is not None:
            progress.start()
        await run.result(timeout=args.timeout)
    except TimeoutError:
        timed_out = True
    except (wf.RunFailed, wf.RunCancelled, wf.SerializationError):
        pass  # the outcome is read below, in its display form
    finally:
        if progress is not None:
            await progress.stop()
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


class _Progress:
    """A spinner line on stderr while a run goes on: steps done and running, what it waits on."""

    def __init__(self, run: wf.Run[Any], interval: float = 0.25) -> None:
        self.run = run
        self.interval = interval
        self.began = time.monotonic()
        self.status = Status("starting", console=Console(stderr=True, markup=False, emoji=False))
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.status.start()
        self.task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.status.stop()

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(wf.WorldflowError):
                self.status.update(
                    progress_line(await self.run.detail(), time.monotonic() - self.began)
                )
            await asyncio.sleep(self.interval)


def progress_line(detail: RunDetail, seconds: float) -> str:
    """``running · 3/5 steps done, 1 running · sleeping until 12:00:00 · 4.2s``."""
    done = sum(1 for s in detail.steps if s.status == "completed")
    running = sum(1 for s in detail.steps if s.status == "running")
    retrying = sum(1 for s in detail.steps if s.status == "retrying")
    parts = [detail.status, f"{done}/{len(detail.steps)} steps done, {running} running"]
    if retrying:
        parts.append(f"{retrying} waiting to retry")
    for w in detail.sleeping:
        parts.append(f"sleeping until {local_time(w.until)}")
    for h in detail.hooks_waiting:
        parts.append(f"waiting on {h.kind} {h.token!r}")
    parts.append(format_duration(seconds))
    return " · ".join(parts)


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
        try:
            run = await wf.resume_hook(args.token, payload)  # wf.HookNotFound if no live hook
        except wf.SerializationError as exc:  # e.g. a payload nested too deeply to store
            raise CliError(str(exc), EXIT_USAGE) from None
        if args.json:
            write_json({"token": args.token, "run_id": run.id})
        else:
            print(f"resumed hook {args.token!r} of run {run.id}")
        return EXIT_OK

    async def main() -> int:
        async with client():
            return await resume()

    return asyncio.run(main())


def rerun_run(args: argparse.Namespace) -> int:
    """``runs rerun RUN_ID``: a new run of the same workflow with the same input."""

    async def main() -> int:
        async with client():  # workers execute it (this process may not have the workflow)
            old = wf.get_run(args.run_id)
            try:
                run = await old.rerun(id=args.id)
            except ValueError as exc:  # a malformed --id, or one taken by another workflow's run
                raise CliError(str(exc), EXIT_USAGE) from None
            info = await run.info()
            doc: dict[str, Any] = {"id": run.id, "workflow": info.workflow, "rerun_of": old.id}
            if args.wait or args.timeout is not None:
                return await _wait(args, run, doc, started=False)
            doc["status"] = info.status
            if args.json:
                write_json(doc)
            else:
                print(run.id)
            return EXIT_OK

    return asyncio.run(main())


def wake_sleeps(args: argparse.Namespace) -> int:
    """``sleeps wake RUN_ID [--position N]``: fire pending sleeps now."""

    async def main() -> int:
        async with client():
            run = wf.get_run(args.run_id)
            detail = await run.detail()  # wf.RunNotFound if there is none
            sleeping = [w for w in detail.sleeping if args.position in (None, w.position)]
            if not sleeping:
                what = (
                    "no pending sleep"
                    if args.position is None
                    else f"no pending sleep #{args.position}"
                )
                raise CliError(f"run {run.id} ({detail.status}) has {what}; nothing to wake")
            await run.wake(args.position)
            positions = [w.position for w in sleeping]
            if args.json:
                write_json({"id": run.id, "woken": positions})
            else:
                print(
                    f"woke sleep{'s' if len(positions) > 1 else ''} "
                    + ", ".join(f"#{p}" for p in positions)
                    + f" of run {run.id}"
                )
            return EXIT_OK

    return asyncio.run(main())
