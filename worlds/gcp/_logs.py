"""Structured logs in Cloud Logging's JSON format (one object per line on stdout).

Cloud Run forwards each line of stdout as a log entry and reads the special
fields ``severity``, ``message``, ``time`` and ``logging.googleapis.com/labels``;
every entry about a run carries its id as the label ``run_id`` and a field.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import traceback

__all__ = ["CloudLoggingFormatter", "current_run", "install"]

current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "worldflow_gcp_run", default=None
)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON entry."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "logger": record.name,
        }
        run_id = getattr(record, "run_id", None) or current_run.get()
        if run_id:
            entry["run_id"] = run_id
            entry["logging.googleapis.com/labels"] = {"run_id": run_id}
        if record.exc_info:
            entry["message"] = f"{entry['message']}\n" + "".join(
                traceback.format_exception(*record.exc_info)
            )
        return json.dumps(entry, default=str)


def install(level: int = logging.INFO) -> None:
    """Send worldflow's logs to stdout as Cloud Logging entries (the Cloud Run service)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    for name in ("worldflow", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
