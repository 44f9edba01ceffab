"""What ``worldflow worker`` and ``worldflow web`` log on stderr.

The library only adds a ``NullHandler`` to the ``worldflow`` logger (the
application decides where logs go), so a bare command would hide every
warning. These long-running commands are the application: they show the
``worldflow`` logger's warnings and errors, one line each, unless logging is
already configured (by a module the worker imported, say), which then decides.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["logging_to_stderr"]

_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)


class _Formatter(logging.Formatter):
    """``12:00:01 WARNING worldflow.local: message``; tracebacks only when verbose."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        # Messages repeat "worldflow: " (for handlers that omit the logger's name).
        message = record.getMessage().removeprefix("worldflow: ")
        line = (
            f"{self.formatTime(record, self.datefmt)} {record.levelname} {record.name}: {message}"
        )
        if record.exc_info and record.exc_info[1] is not None:
            if self.tracebacks:
                return f"{line}\n{self.formatException(record.exc_info).rstrip()}"
            exc = record.exc_info[1]
            reason = " ".join(str(exc).split())
            line += f" ({type(exc).__name__}: {reason}; -v for the traceback)"
        return line


def _handled(logger: logging.Logger) -> bool:
    """Whether a record of ``logger`` would reach a handler that outputs it somewhere."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


@contextlib.contextmanager
def logging_to_stderr(verbose: int = 0) -> Iterator[None]:
    """Show the ``worldflow`` logger's records on stderr for the block.

    ``verbose`` 0 shows warnings and errors (an exception as its one-line
    reason), 1 adds info and tracebacks, 2 debug. Where logging is configured
    already, records go only to the handlers it set up (no line twice);
    ``verbose`` still lowers the level.
    """
    logger = logging.getLogger("worldflow")
    level = _LEVELS[min(max(verbose, 0), len(_LEVELS) - 1)]
    previous_level = logger.level
    handler: logging.Handler | None = None
    if not _handled(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter(tracebacks=verbose > 0))
        logger.addHandler(handler)
    if handler is not None or verbose > 0:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous_level)
        if handler is not None:
            logger.removeHandler(handler)
