"""The command line: argparse parsers for every command."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, cast

from worldflow._duration import format_duration, parse_duration

from ._act import cancel_run, rerun_run, resume_hook, start_run, wake_sleeps
from ._cloud import add_world_commands
from ._common import EXIT_USAGE, CliError, clip, data_dir_problem
from ._dlq import list_dead_letters, redrive_dead_letters
from ._replay import replay_runs
from ._runs import list_runs, prune_runs, show_events
from ._schedules import add_schedule_commands
from ._show import show_run
from ._stream import stream_run, tag_filter
from ._web import DEFAULT_PORT, serve_web
from ._worker import serve

__all__ = ["build_parser"]

Handler = Callable[[argparse.Namespace], int]

STATUSES = ("pending", "running", "completed", "failed", "cancelled")

_EPILOG = """\
examples:
  worldflow start shop.flows:checkout '"order-1"' --wait
  worldflow worker shop.flows
  worldflow runs list --status failed
  worldflow runs show wrun_01j... --follow
  worldflow runs list --watch
  worldflow runs rerun wrun_01j... --wait
  worldflow sleeps wake wrun_01j...
  worldflow hooks resume approve:123 '{"ok": true}'
  worldflow dlq list

exit codes: 0 ok; 1 a run failed, or what was named does not exist (or has
nothing to act on); 2 a usage error; 3 the run was cancelled; 4 --timeout
passed first; 130 interrupted. (start --wait, runs rerun --wait and runs
show --follow exit with the run's outcome.)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (through ``main``), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see: {self.prog} --help)", EXIT_USAGE)


def _text(text: str) -> str:
    """Any argument that becomes data (an id, a token, JSON, a name): valid Unicode.

    Bytes that are not UTF-8 reach ``sys.argv`` as lone surrogates, which no
    World can store; say so here rather than fail deep inside a write.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"{clip(text)} is not valid UTF-8 text (a lone surrogate or an undecodable byte)"
        ) from None
    return text


def _data_dir(text: str) -> str:
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop ...
        raise argparse.ArgumentTypeError(f"cannot use {clip(text)} as a directory: {exc}") from None
    problem = data_dir_problem(path)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return str(path)


# Longer waits are typos, not plans (and a worker's --grace is a matter of seconds).
_MAX_SECONDS = 365 * 86400.0


def _duration(
    flag: str, minimum: float = 0.0, maximum: float = _MAX_SECONDS
) -> Callable[[str], float]:
    """A type for a duration option: seconds or "30s", "5m" ..., at most a year (by default)."""

    def duration(text: str) -> float:
        try:
            seconds = parse_duration(_text(text), what=flag)
        except ValueError as exc:  # parse_duration's message quotes the text: keep it short
            raise argparse.ArgumentTypeError(str(exc).replace(repr(text), clip(text))) from None
        if seconds < minimum:
            raise argparse.ArgumentTypeError(
                f"must be at least {format_duration(minimum)}, got {clip(text)}"
            )
        if seconds > maximum:
            raise argparse.ArgumentTypeError(
                f"must be at most {format_duration(maximum)}, got {clip(text)}"
            )
        return seconds

    return duration


_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() also takes "١٢", "1_0" and " 1 "


def _whole(low: int, high: int) -> Callable[[str], int]:
    """A type for a whole-number option from ``low`` to ``high``."""

    def whole(text: str) -> int:
        if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {clip(text)}"
            )
        return int(text)

    return whole


def _common_options() -> argparse.ArgumentParser:
    # Accepted both before and after the command (`worldflow --json runs list` and
    # `worldflow runs list --json`): SUPPRESS keeps a subcommand from resetting
    # what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document on stdout instead of tables",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        type=_data_dir,
        default=argparse.SUPPRESS,
        help="the local world's data directory (sets WORLDFLOW_DATA_DIR; default ./.worldflow)",
    )
    common.add_argument(
        "--world",
        metavar="NAME",
        type=_text,
        default=argparse.SUPPRESS,
        help="local, aws, gcp or module:factory (sets WORLDFLOW_WORLD; default local)",
    )
    return common


def build_parser(version: str) -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(
        prog="worldflow",
        description="Start, inspect and serve durable workflow runs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"worldflow {version}")
    # Sub-parsers are _Parsers too (argparse makes them of the parser's class); the
    # cast keeps the one type the command helpers (and _cloud) take.
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(title="commands", metavar="COMMAND", required=True),
    )

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Handler,
        summary: str,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name, parents=[common], help=summary, description=description or summary
        )
        sub.set_defaults(handler=handler)
        return sub

    start = command(
        commands,
        "start",
        start_run,
        "start a run of a workflow",
        "Import MODULE (from the current directory, as `python -m` would) and start a "
        "run of its @wf.workflow FUNCTION with the JSON_ARGS. Prints the run id; with "
        "--wait, waits for the run to end and prints its result.",
    )
    start.add_argument(
        "target", metavar="MODULE:FUNCTION", type=_text, help="e.g. shop.flows:checkout"
    )
    start.add_argument(
        "args",
        metavar="JSON_ARGS",
        nargs="*",
        type=_text,
        help="the workflow's arguments, each a JSON value (quote strings: '\"order-1\"')",
    )
    start.add_argument("--id", type=_text, help="the run's id (starting is idempotent per id)")
    start.add_argument("--wait", action="store_true", help="wait for the run to end")
    start.add_argument(
        "--timeout",
        metavar="S",
        type=_duration("--timeout"),
        help="with --wait: give up after S (seconds, or e.g. 30s, 5m); exit 4",
    )

    runs = commands.add_parser("runs", parents=[common], help="list and inspect runs, cancel one")
    runs_commands = runs.add_subparsers(title="commands", metavar="COMMAND", required=True)
    listing = command(runs_commands, "list", list_runs, "list runs, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only runs with this status")
    listing.add_argument(
        "--workflow", metavar="NAME", type=_text, help="only runs of this workflow"
    )
    listing.add_argument(
        "--limit",
        type=_whole(1, 10_000),
        default=50,
        metavar="N",
        help="at most N runs, 1 to 10000 (default 50; --cursor pages on)",
    )
    listing.add_argument("--cursor", metavar="C", type=_text, help="continue after a previous page")
    listing.add_argument(
        "--tag",
        dest="tags",
        action="append",
        type=tag_filter,
        metavar="KEY=VALUE",
        help="only runs with this tag (repeat: all of them), from the World's tag index",
    )
    listing.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C (in place on a terminal; with --json, a document per change)",
    )
    listing.add_argument(
        "--interval",
        type=_duration("--interval", minimum=0.05),
        default=1.0,
        metavar="S",
        help="with --watch (default 1s)",
    )
    listing.add_argument(
        "--count",
        type=_whole(1, 1_000_000),
        metavar="N",
        help="with --watch: stop after N refreshes",
    )
    show = command(
        runs_commands, "show", show_run, "a run's status, input, steps, and result or error"
    )
    show.add_argument("run_id", metavar="RUN_ID", type=_text)
    show.add_argument(
        "--follow",
        action="store_true",
        help="redraw as the run goes on, until it ends; exit with its outcome",
    )
    show.add_argument(
        "--interval",
        type=_duration("--interval", minimum=0.05),
        default=0.5,
        metavar="S",
        help="with --follow (default 0.5s)",
    )
    show.add_argument(
        "--timeout",
        metavar="S",
        type=_duration("--timeout"),
        help="with --follow: give up after S; exit 4",
    )
    streaming = command(
        runs_commands,
        "stream",
        stream_run,
        "print a run's stream, a chunk per line, live until the run ends",
    )
    streaming.add_argument("run_id", metavar="RUN_ID", type=_text)
    streaming.add_argument("name", metavar="NAME", type=_text)
    streaming.add_argument(
        "--start",
        type=_whole(0, 1 << 62),
        default=0,
        metavar="N",
        help="from chunk N (0 is the first; a reader that reconnects passes what it had)",
    )
    streaming.add_argument(
        "--no-follow",
        dest="follow",
        action="store_false",
        help="print what is stored now and stop (default: follow until the run ends)",
    )
    streaming.add_argument(
        "--interval",
        type=_duration("--interval", minimum=0.05),
        default=0.5,
        metavar="S",
        help="the longest wait between looks for new chunks (default 0.5s)",
    )
    events = command(runs_commands, "events", show_events, "a run's event log")
    events.add_argument("run_id", metavar="RUN_ID", type=_text)
    events.add_argument(
        "--raw", action="store_true", help="event data as stored (encoded values, not for display)"
    )
    prune = command(
        runs_commands,
        "prune",
        prune_runs,
        "delete runs that ended long ago",
        "Delete the runs that ended (completed, failed or cancelled) more than AGE ago, "
        "with their event logs, messages and hooks. Runs still going are never touched. "
        "A serving process does the same on its own with WORLDFLOW_RETENTION set.",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        type=_duration("--older-than", minimum=1.0, maximum=100 * 365 * 86400.0),
        help='runs that ended more than this long ago ("30d", "12h", seconds)',
    )
    replay = command(
        runs_commands,
        "replay",
        replay_runs,
        "check that the code now deployed replays the runs in flight",
        "Replay the log of each running or pending run (or of each --run) against the "
        "workflows the MODULEs now define, executing no step and writing nothing; list "
        "the runs whose log the code no longer matches (they would fail with a "
        "NonDeterminismError). Exit 1 if any would.",
    )
    replay.add_argument("modules", metavar="MODULE", nargs="+", type=_text)
    replay.add_argument("--check", action="store_true", help="only check (required for now)")
    replay.add_argument(
        "--run", metavar="RUN_ID", action="append", type=_text, help="only this run (repeatable)"
    )
    replay.add_argument("--workflow", metavar="NAME", type=_text, help="only runs of this workflow")
    replay.add_argument(
        "--limit",
        type=_whole(1, 100_000),
        default=1000,
        metavar="N",
        help="at most N runs (default 1000)",
    )
    cancel = command(runs_commands, "cancel", cancel_run, "ask a run to stop")
    cancel.add_argument("run_id", metavar="RUN_ID", type=_text)
    rerun = command(
        runs_commands,
        "rerun",
        rerun_run,
        "start a new run of the same workflow with the same input",
        "Start a new run of RUN_ID's workflow with RUN_ID's input (a fresh run, not a "
        "replay). Prints the new run's id; with --wait, waits for it (a worker executes it).",
    )
    rerun.add_argument("run_id", metavar="RUN_ID", type=_text)
    rerun.add_argument("--id", type=_text, help="the new run's id (idempotent per id)")
    rerun.add_argument("--wait", action="store_true", help="wait for the new run to end")
    rerun.add_argument(
        "--timeout",
        metavar="S",
        type=_duration("--timeout"),
        help="with --wait: give up after S; exit 4",
    )

    sleeps = commands.add_parser("sleeps", parents=[common], help="wake sleeping runs early")
    sleeps_commands = sleeps.add_subparsers(title="commands", metavar="COMMAND", required=True)
    wake = command(
        sleeps_commands,
        "wake",
        wake_sleeps,
        "fire a run's pending sleeps now",
        "Fire RUN_ID's pending sleeps now (only the one at --position if given): the "
        "workflow carries on as if they had ended. Exit 1 if nothing is sleeping.",
    )
    wake.add_argument("run_id", metavar="RUN_ID", type=_text)
    wake.add_argument(
        "--position",
        type=_whole(1, 1_000_000_000),
        metavar="N",
        help="only the sleep with this command number",
    )

    hooks = commands.add_parser("hooks", parents=[common], help="deliver payloads to hooks")
    hooks_commands = hooks.add_subparsers(title="commands", metavar="COMMAND", required=True)
    resume = command(
        hooks_commands, "resume", resume_hook, "deliver a JSON payload to the hook with TOKEN"
    )
    resume.add_argument("token", metavar="TOKEN", type=_text)
    resume.add_argument("payload", metavar="JSON", type=_text)

    dlq = commands.add_parser(
        "dlq", parents=[common], help="messages the engine gave up on: list, send again"
    )
    dlq_commands = dlq.add_subparsers(title="commands", metavar="COMMAND", required=True)
    dlq_list = command(
        dlq_commands,
        "list",
        list_dead_letters,
        "the dead letters, oldest first",
        "The messages whose handling failed WORLDFLOW_MAX_DELIVERIES times (default 16), "
        "set aside by a World that keeps dead letters (aws, gcp), with the reason.",
    )
    dlq_list.add_argument(
        "--limit",
        type=_whole(1, 10_000),
        default=100,
        metavar="N",
        help="at most N, 1 to 10000 (default 100)",
    )
    dlq_redrive = command(
        dlq_commands,
        "redrive",
        redrive_dead_letters,
        "send dead letters to the queue again",
        "Send the dead letters with these IDs (from `dlq list`), or --all, to the "
        "queue again as first deliveries, once what made them fail is fixed.",
    )
    dlq_redrive.add_argument("ids", metavar="ID", nargs="*", type=_text)
    dlq_redrive.add_argument("--all", action="store_true", help="every dead letter")

    add_schedule_commands(commands, command, _text)

    worker = command(
        commands,
        "worker",
        serve,
        "serve the workflows of some modules until Ctrl-C",
        "Import each MODULE (from the current directory, as `python -m` would) and "
        "execute runs of their workflows until SIGINT or SIGTERM; then let the steps "
        "already running finish, for up to --grace (a second signal stops at once).",
    )
    worker.add_argument("modules", metavar="MODULE", nargs="+", type=_text)
    worker.add_argument(
        "--grace",
        type=_duration("--grace"),
        default=10.0,
        metavar="DURATION",
        help="how long running steps may take to finish after a stop signal (default 10s; "
        "a step cut short runs again elsewhere)",
    )
    web = command(
        commands,
        "web",
        serve_web,
        "serve the web UI: runs, timelines, cancel/rerun/wake/resume",
        "Serve the web UI for the configured world until Ctrl-C; prints its URL. "
        "It has no authentication: keep the default --host 127.0.0.1 unless a proxy "
        "in front of it checks who comes in. Needs: pip install 'worldflow[web]'.",
    )
    web.add_argument(
        "--host", type=_text, default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    web.add_argument(
        "--port",
        type=_whole(0, 65535),
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)",
    )
    web.add_argument("--open", action="store_true", help="open the UI in a browser")
    for serving in (worker, web):
        serving.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            help="log more on stderr: -v info and tracebacks, -vv debug "
            "(default: warnings and errors, a line each)",
        )
    add_world_commands(commands, command)
    return parser
