"""The local world's webhook server: stdlib ``http.server`` on a daemon thread.

It only parses HTTP; each request is handed to the world on its event loop,
which looks up the token and queues the payload. The port is stable per data
directory (stored in the database), and whichever process binds it serves
every process's webhooks, since the database is shared.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from worldflow._hooks import WebhookRequest

__all__ = ["WEBHOOK_PREFIX", "WebhookServer"]

WEBHOOK_PREFIX = "/webhooks/"

# (token, request) -> (HTTP status, JSON-able body)
Deliver = Callable[[str, WebhookRequest], Coroutine[Any, Any, tuple[int, dict[str, object]]]]


class WebhookServer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = 1 << 20,
    ) -> None:
        self.loop = loop
        self.deliver = deliver
        self.max_body = max_body
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        # A short poll: shutdown() waits for it, on the loop's thread, at close.
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="worldflow-webhooks",
            daemon=True,
        )

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "worldflow"
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # nothing on stdout or stderr that the user did not ask for

            def _reply(self, status: int, body: dict[str, object]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                if not parts.path.startswith(WEBHOOK_PREFIX):
                    self._reply(HTTPStatus.NOT_FOUND, {"error": "not a webhook URL"})
                    return
                token = unquote(parts.path[len(WEBHOOK_PREFIX) :])
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    self.close_connection = True
                    self._reply(
                        HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length, not chunks"}
                    )
                    return
                raw_length = self.headers.get("Content-Length", "0")
                try:
                    length = int(raw_length)
                    if length < 0:
                        raise ValueError(raw_length)
                except ValueError:
                    self.close_connection = True
                    self._reply(
                        HTTPStatus.BAD_REQUEST, {"error": f"bad Content-Length {raw_length!r}"}
                    )
                    return
                if length > outer.max_body:
                    self.close_connection = True
                    self._reply(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        {"error": f"body of {length} bytes is over the {outer.max_body} limit"},
                    )
                    return
                body = self.rfile.read(length) if length else b""
                request = WebhookRequest(
                    method=self.command,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    path=parts.path,
                    query=parts.query,
                )
                future = asyncio.run_coroutine_threadsafe(outer.deliver(token, request), outer.loop)
                try:
                    status, reply = future.result(timeout=30)
                except Exception as exc:  # the loop ended, or the store failed
                    status, reply = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
                self._reply(status, reply)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
