"""The ``worldflow`` command (also ``python -m worldflow``).

::

    worldflow start MODULE:FUNCTION [JSON_ARGS...] [--id ID] [--wait] [--timeout S]
    worldflow runs list [--status S] [--workflow NAME] [--limit N] [--cursor C]
    worldflow runs list --watch [--interval S] [--count N]
    worldflow runs show RUN_ID [--follow [--interval S] [--timeout S]]
    worldflow runs events RUN_ID [--raw]
    worldflow runs cancel RUN_ID
    worldflow runs rerun RUN_ID [--id ID] [--wait] [--timeout S]
    worldflow sleeps wake RUN_ID [--position N]
    worldflow hooks resume TOKEN JSON
    worldflow worker MODULE [MODULE...] [--grace D] [-v]
    worldflow web [--host H] [--port P] [--open] [-v]
    worldflow setup aws [--name N] [--endpoint-url URL]
    worldflow package aws MODULE [MODULE...] [--out DIR] [--requirements FILE]
    worldflow setup gcp
    worldflow package gcp [--modules M[,M...]] [--out DIR]

Every command takes ``--json`` (one JSON document on stdout), ``--data-dir
DIR`` and ``--world NAME``. Stdout carries only what the command is for;
reasons and progress go to stderr. Exit codes: 0 ok; 1 a run failed, or the
run, hook, module or workflow named does not exist; 2 a usage error (bad
arguments, bad JSON); 3 the run was cancelled; 4 ``--timeout`` passed first;
130 interrupted. ``start --wait``, ``runs rerun --wait`` and ``runs show
--follow`` exit with the run's outcome.

``runs list|show|events`` only read the World's storage: they start no
runtime and import none of the user's code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Protocol

from worldflow._errors import WorldflowError

from ._common import EXIT_FAILED, EXIT_USAGE, CliError, data_dir_problem, say, write_json
from ._parser import build_parser

__all__ = ["EXIT_USAGE", "CliError", "WorldCommand", "main", "say", "write_json"]


class WorldCommand(Protocol):
    """A command a World brings (``worldflow setup <world>``): list it in the world
    package's ``CLI_COMMANDS`` as ``{"setup": "mypkg.cli:SETUP"}``."""

    help: str
    description: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


EXIT_INTERRUPTED = 130  # what a shell reports for a process stopped by Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code.

    ``--data-dir`` and ``--world`` set ``WORLDFLOW_DATA_DIR`` and
    ``WORLDFLOW_WORLD`` in ``os.environ``, so that the API's runtime finds them.
    """
    from worldflow import __version__

    parser = build_parser(__version__)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help or --version, already printed
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        args.json = getattr(args, "json", False)
        _configure(args)
        code: int = args.handler(args)
    except CliError as exc:
        say(f"error: {exc.message}")
        return exc.code
    except WorldflowError as exc:  # RunNotFound, HookNotFound, a storage failure ...
        say(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`worldflow runs list | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if os.environ.get("WORLDFLOW_DEBUG"):
            raise
        say(f"error: {type(exc).__name__}: {exc} (set WORLDFLOW_DEBUG=1 for the traceback)")
        return EXIT_FAILED
    return code


def _configure(args: argparse.Namespace) -> None:
    """Pass ``--data-dir`` and ``--world`` on to the API's runtime through ``os.environ``."""
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:  # checked, and made absolute, by the parser
        os.environ["WORLDFLOW_DATA_DIR"] = data_dir
    elif os.environ.get("WORLDFLOW_DATA_DIR"):
        problem = data_dir_problem(Path(os.environ["WORLDFLOW_DATA_DIR"]).expanduser())
        if problem is not None:
            raise CliError(f"WORLDFLOW_DATA_DIR: {problem}", EXIT_USAGE)
    if getattr(args, "world", None) is not None:
        os.environ["WORLDFLOW_WORLD"] = args.world
