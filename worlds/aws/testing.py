"""Helpers to test against AWS's protocols on localhost: a moto server, sessions.

Needs ``moto[server]`` (the test extra). Used by worldflow's own tests and
usable in a project's tests::

    with MotoServer() as moto:
        settings = setup("wf-test", session=moto.session(), endpoint_url=moto.url)
"""

from __future__ import annotations

import socket
import urllib.request
from types import TracebackType
from typing import Any

__all__ = ["MotoServer"]


class MotoServer:
    """A moto server on 127.0.0.1 (a free port), in a thread of this process."""

    region = "us-east-1"

    def __init__(self, port: int | None = None) -> None:
        from moto.server import ThreadedMotoServer

        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> MotoServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every resource (moto's reset endpoint)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def session(self) -> Any:
        """A boto3 session with moto's dummy credentials (nothing read from the machine)."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=self.region,
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and so a subprocess) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


class WebhookGateway:
    """An HTTP server that plays a Lambda function URL: each request becomes a
    payload-2.0 event for ``worldflow.worlds.aws.lambda_handler``, and its answer
    the HTTP response. The handler builds its World from the environment."""

    def __init__(self) -> None:
        import http.server
        import threading

        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = gateway.call(
                    self.command, self.path, dict(self.headers.items()), body
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def call(
        method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        import base64
        from urllib.parse import urlsplit

        from . import lambda_handler

        parts = urlsplit(target)
        event = {
            "version": "2.0",
            "rawPath": parts.path,
            "rawQueryString": parts.query,
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {"http": {"method": method, "path": parts.path}, "stage": "$default"},
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }
        answer = lambda_handler(event, None)
        payload = str(answer.get("body", "")).encode()
        return int(answer["statusCode"]), dict(answer.get("headers", {})), payload

    def __enter__(self) -> WebhookGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        from . import _lambda

        _lambda.reset()
