"""The JSON documents of the web UI's ``/api/`` routes (also what the pages' live refresh reads).

Values are in display form (plain JSON, no class resolved) and times are
epoch seconds, so a script can use the API as well as the page does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from worldflow._inspect import RunDetail, display
from worldflow._world import Event, RunInfo, RunPage

__all__ = ["detail_doc", "event_doc", "page_doc", "run_doc"]


def run_doc(info: RunInfo) -> dict[str, Any]:
    """A run's summary: what the runs page shows in a row."""
    doc: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "ended_at": info.updated_at if info.done else None,
        "last_seq": info.last_seq,
    }
    if info.status == "completed":
        doc["output"] = display(info.output)
    elif info.status == "failed":
        doc["error"] = info.error or {}
    return doc


def page_doc(page: RunPage) -> dict[str, Any]:
    return {"runs": [run_doc(r) for r in page.runs], "cursor": page.cursor}


def event_doc(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "kind": event.kind, "at": event.at, "data": event.data}


def detail_doc(detail: RunDetail) -> dict[str, Any]:
    """Everything the run page shows, as JSON (the event log is its own route)."""
    doc = run_doc(detail.info)
    doc.update(
        input=detail.input,
        started_at=detail.started_at,
        ended_at=detail.ended_at,
        cancel_requested=detail.cancel_requested,
        log_error=detail.log_error,
        steps=[
            {**dataclasses.asdict(s), "attempts": [dataclasses.asdict(a) for a in s.attempts]}
            for s in detail.steps
        ],
        waits=[dataclasses.asdict(w) for w in detail.waits],
        hooks_waiting=[w.token for w in detail.hooks_waiting],
        sleeping=[w.position for w in detail.sleeping],
    )
    return doc
