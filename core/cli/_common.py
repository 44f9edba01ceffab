"""What every command shares: exit codes, errors, output streams, time and value formatting."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO, cast

from rich.console import Console
from rich.text import Text

from worldflow._backend import Backend
from worldflow._codec import to_display
from worldflow._config import create_world
from worldflow._documents import iso
from worldflow._duration import format_duration
from worldflow._errors import CorruptLogError

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CliError",
    "clip",
    "console",
    "data_dir_problem",
    "display",
    "elapsed",
    "iso",
    "local_time",
    "missing_database",
    "open_world",
    "say",
    "short",
    "status_text",
    "write_json",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed, or what the command names does not exist
EXIT_USAGE = 2  # the command line is wrong (argparse uses 2 as well)
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4


class CliError(Exception):
    """A reason to stop: printed as one line on stderr, then ``main`` returns ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- output ----------------------------------------------------------------------


def write_json(document: Any) -> None:
    """The one JSON document of a ``--json`` command, on one line (never through rich)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    text = json.dumps(document, ensure_ascii=encoding != "utf8")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A line for the person at the terminal, on stderr (stdout is for what was asked)."""
    sys.stderr.write(f"worldflow: {message}\n")
    sys.stderr.flush()


def console(file: TextIO | None = None) -> Console:
    """A rich console on stdout: colours on a terminal, plain text otherwise.

    Markup and emoji codes are off: run ids, outputs and error messages are
    user data and may contain ``[brackets]`` or ``:colons:``. Off a terminal
    the width is unbounded, so a table piped to ``grep`` never truncates an id,
    and lines lose the padding rich gives table cells.
    """
    stream = sys.stdout if file is None else file
    if stream.isatty():
        return Console(file=stream, markup=False, emoji=False, highlight=False)
    return Console(
        file=cast(TextIO, _TrimmedLines(stream)),
        markup=False,
        emoji=False,
        highlight=False,
        width=100_000,
        soft_wrap=True,
    )


class _TrimmedLines:
    """The file rich writes to off a terminal: whole lines, without trailing spaces."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def write(self, text: str, /) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            self._stream.write("".join(line.rstrip() + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


# -- worlds ------------------------------------------------------------------------


def data_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a data directory (it, or a folder above it, is a file), if so."""
    try:
        for folder in (path, *path.parents):
            if folder.exists():
                if folder.is_dir():
                    return None
                if folder == path:
                    return f"{path} is a file, not a directory"
                return f"{folder} is a file, so {path} cannot be a directory"
    except OSError as exc:  # e.g. a folder on the way that we may not look into
        return f"cannot use {path} as a directory: {exc.strerror or exc}"
    return None


def missing_database(world: object) -> str | None:
    """A reason to show beside "nothing found" when the World has nothing to read.

    The local world opened read-only over a directory without a database reads
    it as empty; saying so tells a mistyped ``--data-dir`` from an idle world.
    """
    world = getattr(world, "world", world)  # a Backend: the World it reads
    data_dir = getattr(world, "data_dir", None)
    if data_dir is None or getattr(world, "database", True) is not None:
        return None
    return f"no worldflow database in {Path(data_dir).resolve()}"


@contextlib.asynccontextmanager
async def open_world(*, read_only: bool = True) -> AsyncIterator[Backend]:
    """The configured World, not started (no background work), closed afterwards: its
    storage as the engine reads it (big values from blobs, unsent messages sent)."""
    try:
        world = create_world(read_only=read_only)
    except (ValueError, ImportError) as exc:
        raise CliError(f"cannot set up the world: {exc}", EXIT_USAGE) from None
    backend = Backend(world)
    try:
        yield backend
    finally:
        await backend.close()
        await world.close()


# -- values and times ------------------------------------------------------------


def display(tree: Any) -> Any:
    """An encoded value as plain JSON for people; no class is ever imported."""
    try:
        return to_display(tree)
    except CorruptLogError as exc:
        return f"<unreadable value: {exc}>"


def short(value: Any, width: int = 60) -> str:
    """A displayed value on one line, cut to ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"


def clip(text: str, width: int = 40) -> str:
    """``text`` quoted for a one-line message, cut to about ``width`` characters."""
    return repr(text) if len(text) <= width else repr(text[:width]) + "…"


def local_time(ts: float | None, *, date: bool = True, ms: bool = False) -> str:
    if ts is None:
        return ""
    when = dt.datetime.fromtimestamp(ts).astimezone()
    text = when.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{when.microsecond // 1000:03d}" if ms else text


def elapsed(start: float | None, end: float | None) -> str:
    """How long from ``start`` to ``end``; to now, marked as ongoing, when ``end`` is None."""
    if start is None:
        return ""
    if end is None:
        return format_duration(max(0.0, time.time() - start)) + "…"
    return format_duration(max(0.0, end - start))


_STATUS_STYLES = {
    "pending": "dim",
    "scheduled": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}


def status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))
