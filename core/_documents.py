"""The JSON document of one run's detail: what ``worldflow runs show --json`` prints and
what the web UI's ``/api/runs/<id>`` answers, the same for both.

Values are in display form (plain JSON; no class is ever resolved), times are
ISO 8601 UTC strings with milliseconds, durations are seconds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ._inspect import RunDetail, StepInfo, WaitInfo, display

__all__ = ["detail_document", "iso"]


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    if ts is None:
        return None
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _attempt_doc(step: StepInfo) -> list[dict[str, Any]]:
    return [
        {
            "attempt": a.number,
            "outcome": a.outcome,
            "started_at": iso(a.started_at),
            "ended_at": iso(a.ended_at),
            "duration": a.duration,
            "worker": a.worker,
            **({"error": a.error} if a.error is not None else {}),
        }
        for a in step.attempts
    ]


def _step_doc(st: StepInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "cid": st.position,
        "step_id": st.id,
        "name": st.name,
        "status": st.status,
        "attempts": len(st.attempts),
        "scheduled_at": iso(st.scheduled_at),
        "started_at": iso(st.started_at),
        "ended_at": iso(st.ended_at),
        "duration": st.duration,
        "input": st.input,
        "history": _attempt_doc(st),
    }
    if st.status == "completed":
        doc["output"] = st.output
    elif st.error is not None:  # failed, or a failed attempt's error before a retry
        doc["error"] = st.error
    if st.status == "retrying":
        doc["retry_at"] = iso(st.retry_at)
    if st.attempts and st.attempts[-1].worker is not None:
        doc["worker"] = st.attempts[-1].worker
    return doc


def _wait_doc(w: WaitInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "cid": w.position,
        "kind": w.kind,
        "started_at": iso(w.started_at),
        "ended_at": iso(w.ended_at),
    }
    if w.kind == "sleep":
        doc["until"] = iso(w.until)
        doc["early"] = w.early
    else:
        doc.update(token=w.token, webhook=w.kind == "webhook", url=w.url, received=w.received)
    return doc


def detail_document(d: RunDetail, unreadable: str | None = None) -> dict[str, Any]:
    """The run, its steps (each attempt in ``history``), waits, sleeps and hooks.

    ``unreadable``: why the World could not read the run's summary (the run is
    then described from its event log).
    """
    info = d.info
    doc: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "started_at": iso(d.started_at),
        "ended_at": iso(d.ended_at),
        "duration": d.duration,
        "events": len(d.events),
        "last_seq": info.last_seq,
        "input": d.input,
        "steps": [_step_doc(st) for st in d.steps],
        "waits": [_wait_doc(w) for w in d.waits],
        "sleeps": [{"cid": w.position, "until": iso(w.until)} for w in d.sleeping],
        "hooks": [
            {
                "cid": h.position,
                "token": h.token,
                "webhook": h.kind == "webhook",
                "url": h.url,
                "received": h.received,
            }
            for h in d.hooks_waiting
        ],
    }
    doc["hooks_waiting"] = [w.token for w in d.hooks_waiting]
    doc["parent"] = d.parent
    doc["children"] = [
        {"id": k.id, "workflow": k.workflow, "cid": k.cid, "status": k.status or "running"}
        | ({"detached": True} if k.detached else {})
        for k in d.children
    ]
    if not info.done:
        doc["cancel_requested"] = d.cancel_requested
    if info.status == "completed":
        doc["result"] = display(info.output)
    elif info.status == "failed":
        error = info.error or {}
        doc["error"] = {
            "type": error.get("type"),
            "message": error.get("message"),
            "traceback": error.get("traceback"),
        }
    if d.log_error is not None:
        doc["log_error"] = d.log_error
    if unreadable is not None:
        doc["unreadable"] = unreadable
    return doc


# -- for people ----------------------------------------------------------------------
