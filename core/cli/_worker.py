"""``worldflow worker MODULE...``: serve the modules' workflows until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from typing import Any

import worldflow as wf
from worldflow._api import _runtime
from worldflow._definitions import workflow_names
from worldflow._world import World

from ._common import EXIT_OK, EXIT_USAGE, CliError, say, write_json
from ._load import import_module
from ._logging import logging_to_stderr

__all__ = ["serve"]


def serve(args: argparse.Namespace) -> int:
    for name in args.modules:
        import_module(name)
    # After the imports: a module that configures logging decides where logs go.
    # KeyboardInterrupt: where no signal handler could be installed (Windows, a thread).
    with logging_to_stderr(args.verbose), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    say("worker stopped")
    return EXIT_OK


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not on this platform, or not the main thread
        installed.append(sig)
    try:
        async with wf.worker():
            world = (await _runtime()).world
            names = workflow_names()
            if not names:
                raise CliError(
                    f"no workflows found in {', '.join(args.modules)} "
                    "(a worker serves functions decorated with @wf.workflow)",
                    EXIT_USAGE,
                )
            if args.json:
                write_json(_describe(world, names))
            say(
                f"worker {os.getpid()} serving {', '.join(names)} from {_where(world)} "
                "(Ctrl-C to stop)"
            )
            await stop.wait()
            await _drain(stop, args.grace)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _drain(stop: asyncio.Event, grace: float) -> None:
    """Let the steps this worker is running finish (their results recorded), up to
    ``grace`` seconds or a second stop signal; what is cut short runs again elsewhere."""
    runtime = await _runtime()
    if grace <= 0 or runtime.idle:
        return
    say(f"stopping: letting running steps finish (up to {grace:g}s; Ctrl-C again to stop now)")
    stop.clear()
    drained = asyncio.ensure_future(runtime.drain(grace))
    signalled = asyncio.ensure_future(stop.wait())
    await asyncio.wait({drained, signalled}, return_when=asyncio.FIRST_COMPLETED)
    drained.cancel()
    signalled.cancel()


def _where(world: World) -> str:
    data_dir = getattr(world, "data_dir", None)
    if data_dir is not None:
        return f"the local world in {os.path.abspath(data_dir)}"
    return repr(world)


def _describe(world: World, names: list[str]) -> dict[str, Any]:
    data_dir = getattr(world, "data_dir", None)
    return {
        "pid": os.getpid(),
        "worker_id": world.worker_id,
        "world": type(world).__name__,
        "data_dir": None if data_dir is None else os.path.abspath(data_dir),
        "workflows": names,
    }
