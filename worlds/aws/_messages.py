"""The SQS message body: an engine message plus when it is due.

Every message carries its ``not_before`` (epoch seconds on the World's clock)
in its body; SQS's ``DelaySeconds`` is only an optimisation for a real clock.
The consumer holds (or re-sends) a message that arrives before it is due, so
a sleep of any length works, and a virtual clock in tests is honoured.
"""

from __future__ import annotations

import json
from typing import Any

from worldflow._world import MESSAGE_KINDS, Message, Outgoing

__all__ = ["decode_outgoing", "encode_outgoing"]


def encode_outgoing(out: Outgoing) -> dict[str, Any]:
    m = out.message
    body: dict[str, Any] = {"id": m.id, "run": m.run_id, "kind": m.kind}
    if m.data:
        body["data"] = m.data
    if out.not_before is not None:
        body["nb"] = out.not_before
    if out.key is not None:
        body["key"] = out.key
    return body


def decode_outgoing(body: dict[str, Any]) -> Outgoing:
    """The inverse of :func:`encode_outgoing`; ``ValueError`` for anything else."""
    try:
        message = Message(str(body["id"]), str(body["run"]), body["kind"], body.get("data") or {})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a worldflow message: {json.dumps(body)[:200]}") from exc
    if message.kind not in MESSAGE_KINDS:
        raise ValueError(f"not a worldflow message kind: {message.kind!r}")
    nb = body.get("nb")
    return Outgoing(message, None if nb is None else float(nb), body.get("key"))
