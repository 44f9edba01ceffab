"""Webhooks answered by their workflow: ``wf.create_webhook(respond="manual")``.

The intake records the request with an id of its own, then waits (up to the
webhook's ``respond_timeout``) for the workflow to answer it with
``await request.respond(status, body)``. That call is a step of the run
(``worldflow.webhook_respond``): its result, in the run's log, *is* the
answer, so it is given once whatever is replayed or delivered twice, and any
process can read it. The intake reads the run's log after the request's
place in it, first every 20 ms, then less often; when the time is up it
answers ``202 {"ok": true, "run_id": ..., "responded": false}`` (the request
is recorded and the run goes on; its answer, if it comes, is only in the log).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from ._decode import decode
from ._definitions import step
from ._events import STEP_COMPLETED

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["DEFAULT_TIMEOUT", "check_response", "respond_step", "wait_for_response"]

#: Seconds the intake waits for a manual answer unless the webhook says otherwise.
DEFAULT_TIMEOUT = 10.0
_KEY = "worldflow.webhook_response"


def check_response(status: object, body: object) -> tuple[int, dict[str, Any]]:
    """The answer as the intake will send it; ValueError/TypeError saying what is wrong."""
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(
            f"request.respond(): the status must be an int from 200 to 599, not {status!r}"
        )
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise TypeError(
            f"request.respond(): the body must be a JSON object (a dict), not {type(body).__name__}"
        )
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request.respond(): the body is not JSON ({exc})") from None
    return status, body


@step(name="worldflow.webhook_respond", max_retries=0)
async def respond_step(request_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Recorded, the step's result is the answer the intake waits for."""
    return {_KEY: request_id, "status": status, "body": body}


def _answer_in(output: Any, request_id: str) -> tuple[int, dict[str, Any]] | None:
    try:
        value = decode(output)
    except Exception:  # another step's output the intake cannot rebuild: not ours
        return None
    if isinstance(value, dict) and value.get(_KEY) == request_id:
        return int(value["status"]), dict(value["body"])
    return None


async def wait_for_response(
    runtime: Runtime, run_id: str, request_id: str, after_seq: int, timeout: float
) -> tuple[int, dict[str, Any]] | None:
    """The workflow's answer to the request, or None when ``timeout`` runs out first
    (or the run ends without one)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.02
    while True:
        events = await runtime.backend.read_events(run_id, after_seq)
        for event in events:
            after_seq = max(after_seq, event.seq)
            if event.kind == STEP_COMPLETED:
                found = _answer_in(event.data.get("output"), request_id)
                if found is not None:
                    return found
            elif event.kind in ("run_completed", "run_failed", "run_cancelled"):
                return None
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.25)
