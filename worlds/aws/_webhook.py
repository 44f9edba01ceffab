"""Webhook calls arriving at Lambda through a function URL or API Gateway (HTTP API).

Both send the payload format 2.0 event (``rawPath``, ``requestContext.http``,
``body``, ``isBase64Encoded``). The path is ``/webhooks/<token>``; the token is
looked up in the hook index (an unknown token, or a hook that is not a
webhook, is a 404), the body is capped (413 past the cap), and the request
is queued for the run as a ``hook`` message: the answer is 202 once it is on
the queue. Nothing here needs the engine, so webhook calls never wait for a run.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any
from urllib.parse import unquote

from worldflow._codec import encode
from worldflow._hooks import WebhookRequest
from worldflow._world import Message, Outgoing

from ._world import WEBHOOK_PREFIX, AwsWorld

__all__ = ["DEFAULT_MAX_BODY", "is_http_event", "webhook_response"]

DEFAULT_MAX_BODY = 1 << 20


def is_http_event(event: dict[str, Any]) -> bool:
    return isinstance(event.get("requestContext"), dict) and "http" in event["requestContext"]


def _reply(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def webhook_response(
    world: AwsWorld, event: dict[str, Any], *, max_body: int = DEFAULT_MAX_BODY
) -> dict[str, Any]:
    """Answer one HTTP event (synchronously: two AWS calls, GetItem and SendMessage)."""
    http = event["requestContext"]["http"]
    path = str(event.get("rawPath") or http.get("path") or "")
    stage = event["requestContext"].get("stage")
    if stage and stage != "$default" and path.startswith(f"/{stage}/"):
        path = path[len(stage) + 1 :]  # API Gateway puts a named stage in the path
    if not path.startswith(WEBHOOK_PREFIX):
        return _reply(404, {"error": "not a webhook URL"})
    token = unquote(path[len(WEBHOOK_PREFIX) :])
    raw = event.get("body") or ""
    try:
        body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode()
    except (binascii.Error, ValueError):
        return _reply(400, {"error": "the body is not valid base64"})
    if len(body) > max_body:
        return _reply(413, {"error": f"body of {len(body)} bytes is over the {max_body} limit"})
    hook = world.store.get_hook(token)
    if hook is None or not hook.webhook:
        return _reply(404, {"error": "no live webhook has this token"})
    request = WebhookRequest(
        method=str(http.get("method", "POST")),
        headers={str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
        body=body,
        path=path,
        query=str(event.get("rawQueryString") or ""),
    )
    message = Message(
        f"webhook:{secrets.token_hex(8)}",
        hook.run_id,
        "hook",
        {"token": token, "payload": encode(request, where="a webhook request")},
    )
    world._send_sync([Outgoing(message)])
    return _reply(202, {"ok": True, "run_id": hook.run_id})
