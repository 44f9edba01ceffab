"""``worldflow web``: serve the web UI (runs, timelines, actions) with uvicorn.

Starlette and uvicorn come with the ``web`` extra; without them the command
says which ``pip install`` to run. The server binds to 127.0.0.1 unless told
otherwise: the UI has no authentication (docs/web.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import signal
import socket
import threading
import webbrowser
from collections.abc import Iterator
from typing import Any

from ._common import EXIT_OK, EXIT_USAGE, CliError, clip, say, write_json
from ._logging import logging_to_stderr

__all__ = ["DEFAULT_PORT", "serve_web"]

DEFAULT_PORT = 8765
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def serve_web(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from worldflow.web import create_app
    except ImportError as exc:
        raise CliError(
            f"the web UI needs Starlette and uvicorn ({exc}): pip install 'worldflow[web]'",
            EXIT_USAGE,
        ) from None
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{_url_host(args.host, host)}:{port}/"
    app = create_app(allowed_hosts=_allowed_hosts(args.host))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if args.json:
        write_json({"url": url})
    else:
        print(url, flush=True)
        say(f"serving the web UI at {url} (Ctrl-C to stop)")
    if not _is_loopback(args.host):
        say(f"warning: {args.host} is not a loopback address; the UI has no authentication")
    if args.open:
        threading.Timer(0.3, webbrowser.open, (url,)).start()
    with (
        logging_to_stderr(args.verbose),
        contextlib.suppress(KeyboardInterrupt),
        sock,
        _quiet_sigterm(),
    ):
        asyncio.run(server.serve(sockets=[sock]))
    say("web UI stopped")
    return EXIT_OK


@contextlib.contextmanager
def _quiet_sigterm() -> Iterator[None]:
    """Make SIGTERM a normal stop (exit 0). uvicorn shuts down gracefully on it,
    then raises the signal again under the handler it found: the default one
    would kill the process with -15 after a clean shutdown."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the URL is printed (so port 0 can be used)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except (OSError, ValueError, TypeError) as exc:  # ValueError, TypeError: not a host name
        sock.close()
        shown = host if host.isprintable() and len(host) <= 100 else clip(host)
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {port} on {shown} is in use; choose another with --port (0: any free port)",
                EXIT_USAGE,
            ) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CliError(f"cannot listen on {shown}:{port}: {reason}", EXIT_USAGE) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _allowed_hosts(host: str) -> list[str] | None:
    """Host headers to accept: loopback names on a loopback bind (against DNS
    rebinding); any on a public bind, where a proxy in front decides."""
    if not _is_loopback(host):
        return None
    return ["127.0.0.1", "localhost", "[::1]", "::1"]


def _url_host(asked: str, bound: Any) -> str:
    if asked in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    text = str(bound)
    return f"[{text}]" if ":" in text else text
