"""Webhook intake, once for every World and every host.

:func:`answer` is the whole of it: take an HTTP request for
``/webhooks/<token>``, cap its body, look the token up (numbering the
payload, so that requests reach the workflow in the order they were
answered), record the request as the hook's payload with the caller's trace
context, and say what to answer (202, or 404/413/503 with a reason). The
hosts only translate HTTP to and from it:

- :class:`WebhookServer`: a small HTTP/1.1 server on the runtime's loop, for
  embedded Worlds (the local and postgres worlds serve their webhooks on a
  local port). It is strict, because it faces the network: a request whose
  headers never end, whose body is shorter than its ``Content-Length``, or
  that has two or a malformed ``Content-Length`` is dropped or refused, never
  delivered; slow clients are cut off; a client that leaves early costs
  nothing but a closed socket.
- :func:`asgi_app`: the same as an ASGI app, to mount in a user's own web app
  (and the Cloud Run service's webhook route).
- a serverless host (the Lambda handler) calls :func:`answer` with the
  request its event carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ._errors import HookNotFound, InvalidHookPayload
from ._events import HOOK_CREATED
from ._hooks import SPEC_TOKEN_PREFIX, WebhookRequest
from ._respond import DEFAULT_TIMEOUT as DEFAULT_RESPOND_TIMEOUT
from ._respond import wait_for_response
from ._typed_hooks import defined_hook
from ._world import WEBHOOK_PREFIX
from .signatures import SecretMissing
from .signatures import check as check_signature

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["DEFAULT_MAX_BODY", "ASGIApp", "WebhookServer", "answer", "asgi_app"]

log = logging.getLogger("worldflow")

DEFAULT_MAX_BODY = 1 << 20
HEADER_LIMIT = 64 * 1024
HEADER_TIMEOUT = 10.0  # seconds for the request line and headers, all of them
BODY_TIMEOUT = 30.0  # seconds for the body
_DIGITS = re.compile(r"[0-9]{1,12}")


Reply = tuple[int, dict[str, Any]]
# ASGI's types, spelled as Starlette and uvicorn spell them.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def answer(
    runtime: Runtime,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    query: str = "",
    *,
    max_body: int = DEFAULT_MAX_BODY,
) -> Reply:
    """Deliver one complete webhook request; the status and JSON body to answer with.

    ``path`` is already percent-decoded (``/webhooks/<token>``); ``headers`` have
    lower-case names.
    """
    if not path.startswith(WEBHOOK_PREFIX) or len(path) == len(WEBHOOK_PREFIX):
        return 404, {"error": "not a webhook URL"}
    if len(body) > max_body:
        return 413, {"error": f"body of {len(body)} bytes is over the {max_body} limit"}
    token = path[len(WEBHOOK_PREFIX) :]
    request = WebhookRequest(method=method, headers=headers, body=body, path=path, query=query)
    spec: dict[str, Any] | None = None
    seen = 0  # the run's log was read up to here
    try:
        if token.startswith(SPEC_TOKEN_PREFIX):
            spec, seen = await _spec(runtime, token)
            if spec is not None:
                refused = _refusal(spec, request)
                if refused is not None:
                    return refused
                if spec.get("respond") == "manual":
                    request = dataclasses.replace(request, id=uuid.uuid4().hex)
        run_id = await runtime.webhook(token, request)
    except HookNotFound:
        return 404, {"error": "no live webhook has this token"}
    except Exception as exc:
        log.warning("worldflow: a webhook request could not be recorded (%s)", exc)
        return 503, {"error": "the request could not be recorded; try again"}
    if spec is not None and spec.get("respond") == "manual":
        timeout = float(spec.get("respond_timeout") or DEFAULT_RESPOND_TIMEOUT)
        try:
            answered = await wait_for_response(runtime, run_id, request.id, seen, timeout)
        except Exception as exc:  # recorded already: say so rather than fail the caller
            log.warning("worldflow: waiting for a webhook's answer failed (%s)", exc)
            answered = None
        if answered is not None:
            return answered
        return 202, {"ok": True, "run_id": run_id, "responded": False}
    if spec is not None and spec.get("respond"):
        status, document = spec["respond"]
        return int(status), dict(document)
    return 202, {"ok": True, "run_id": run_id}


async def _spec(runtime: Runtime, token: str) -> tuple[dict[str, Any] | None, int]:
    """What the webhook's ``hook_created`` event says to do with a request (a signature
    to check, a type, a response), or None (no live webhook: answered 404 later); and
    the sequence number of the last event of the run's log read."""
    hook = await runtime.backend.get_hook(token)
    if hook is None or not hook.webhook:
        return None, 0
    spec = None
    seen = 0
    for event in await runtime.backend.read_events(hook.run_id):
        seen = event.seq
        if event.kind == HOOK_CREATED and event.data.get("token") == token:
            spec = event.data.get("spec")
    return (spec if isinstance(spec, dict) else None), seen


def _refusal(spec: dict[str, Any], request: WebhookRequest) -> Reply | None:
    """401 for a signature that does not hold, 422 for a body that does not fit the
    webhook's type, 503 when this process cannot check; None: take it."""
    verify = spec.get("verify")
    if isinstance(verify, dict):
        try:
            problem = check_signature(verify, request.headers, request.body, time.time())
        except SecretMissing as exc:
            log.error("worldflow: webhook request refused: %s", exc)
            return 503, {"error": "the webhook's signature cannot be checked here"}
        if problem is not None:
            return 401, {"error": problem}
    schema = spec.get("schema")
    hook_type = defined_hook(schema) if isinstance(schema, str) else None
    if hook_type is not None:
        try:
            hook_type._receive(request)
        except InvalidHookPayload as exc:
            return 422, {"error": str(exc)}
    return None


def _json(reply: Reply) -> bytes:
    return json.dumps(reply[1]).encode()


# -- the embedded HTTP server ------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _reason(status: int) -> str:
    """The status line's reason phrase (a workflow's answer may use any status)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class WebhookServer:
    """Answers ``/webhooks/<token>`` on ``host:port`` from the runtime's own loop.

    :meth:`open` returns None when the port is taken: another process on the
    same data serves it (the token is looked up in shared storage, so any
    serving process can answer any token).
    """

    def __init__(self, runtime: Runtime, server: asyncio.Server, max_body: int) -> None:
        self.runtime = runtime
        self.server = server
        self.max_body = max_body
        self.port = int(server.sockets[0].getsockname()[1])
        self._connections: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls, runtime: Runtime, host: str, port: int, *, max_body: int = DEFAULT_MAX_BODY
    ) -> WebhookServer | None:
        holder: list[WebhookServer] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._serve(reader, writer)

        try:
            server = await asyncio.start_server(
                on_connect, host, port, limit=HEADER_LIMIT, backlog=1024, reuse_address=True
            )
        except OSError:
            return None
        me = cls(runtime, server, max_body)
        holder.append(me)
        return me

    async def close(self) -> None:
        self.server.close()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            reply = await self._request(reader)
            if reply is not None:
                await self._reply(writer, *reply)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client left, or was too slow: nothing was delivered
        except Exception:
            log.exception("worldflow: the webhook server failed on a request")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader) -> Reply | None:
        """Read one request; None when it must be dropped without an answer."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
        except asyncio.LimitOverrunError:
            return 431, {"error": f"request headers are over {HEADER_LIMIT} bytes"}
        except (asyncio.IncompleteReadError, TimeoutError):
            return None  # the header block never ended: drop it, deliver nothing
        try:
            method, target, headers = _parse_head(head)
            length = _content_length(headers)
        except _BadRequest as bad:
            return bad.status, {"error": bad.reason}
        if length > self.max_body:
            return 413, {"error": f"body of {length} bytes is over the {self.max_body} limit"}
        try:
            body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None  # shorter than its Content-Length: never delivered
        parts = urlsplit(target)
        return await answer(
            self.runtime,
            method,
            unquote(parts.path),
            headers,
            body,
            parts.query,
            max_body=self.max_body,
        )

    async def _reply(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n"
            "Server: worldflow\r\n\r\n"
        ).encode()
        writer.write(head + payload)
        await asyncio.wait_for(writer.drain(), BODY_TIMEOUT)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes any byte; kept for clarity
        raise _BadRequest(400, "request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise _BadRequest(400, "malformed request line")
    method, target = parts[0], parts[1]
    headers: dict[str, str] = {}
    lengths: list[str] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise _BadRequest(400, "folded header lines are not accepted")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, f"malformed header line {line[:60]!r}")
        key = name.lower()
        value = value.strip(" \t")
        if key == "content-length":
            lengths.append(value)
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if lengths:
        headers["content-length"] = lengths[0] if len(lengths) == 1 else ",".join(lengths)
    return method, target, headers


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _BadRequest(411, "send a Content-Length, not a Transfer-Encoding")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    if not _DIGITS.fullmatch(raw):
        raise _BadRequest(400, f"bad Content-Length {raw[:40]!r}: one decimal number expected")
    return int(raw)


# -- ASGI --------------------------------------------------------------------------------------


def asgi_app(
    runtime: Callable[[], Awaitable[Runtime]] | None = None, *, max_body: int = DEFAULT_MAX_BODY
) -> ASGIApp:
    """The webhook intake as an ASGI app: mount it in your web app (at the root of the
    World's public URL, so that ``/webhooks/<token>`` reaches it).

    >>> app.mount("/", worldflow.world.webhook_app())    # Starlette / FastAPI

    ``runtime``: how to get the runtime (default: this loop's, as ``wf.start`` uses).
    """

    async def get_runtime() -> Runtime:
        if runtime is not None:
            return await runtime()
        from ._api import _runtime

        return await _runtime()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        reply = await _asgi_request(scope, receive, headers, max_body, get_runtime)
        if reply is None:
            return  # the client left before its body was complete: nothing delivered
        payload = _json(reply)
        await send(
            {
                "type": "http.response.start",
                "status": reply[0],
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


async def _asgi_request(
    scope: Scope,
    receive: Receive,
    headers: dict[str, str],
    max_body: int,
    get_runtime: Callable[[], Awaitable[Runtime]],
) -> Reply | None:
    path = str(scope["path"])
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root):
        path = path[len(root) :]
    declared = headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            return 400, {"error": f"bad Content-Length {declared[:40]!r}"}
        if int(declared) > max_body:
            return 413, {"error": f"body of {declared} bytes is over the {max_body} limit"}
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > max_body:
            return 413, {"error": f"body is over the {max_body} limit"}
        chunks.append(chunk)
        if not event.get("more_body", False):
            break
    body = b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        return None  # shorter (or longer) than it said: never delivered
    query = scope.get("query_string", b"").decode("latin-1")
    return await answer(
        await get_runtime(),
        str(scope.get("method", "POST")),
        path,
        headers,
        body,
        query,
        max_body=max_body,
    )
