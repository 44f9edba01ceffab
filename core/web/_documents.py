"""The JSON documents of the web UI's ``/api/`` routes (also what the pages' live refresh reads).

Values are in display form (plain JSON, no class resolved) and times are
epoch seconds, so a script can use the API as well as the page does.
"""

from __future__ import annotations

from typing import Any

from worldflow._documents import detail_document
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
    if info.tags:
        doc["tags"] = dict(info.tags)
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
    """A run's detail: the same document as ``worldflow runs show --json``."""
    return detail_document(detail)
