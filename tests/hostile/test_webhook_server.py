"""The engine's embedded webhook server, probed with raw sockets as an attacker would.

Half-sent requests never resume a run, a client that leaves early costs a closed
socket and no traceback, a lenient Content-Length is refused, slow clients are
cut off, and many clients at once are all answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow import _intake
from worldflow.testing import _workflows as w
from worldflow.worlds.local import LocalWorld


@wf.workflow
async def collect(count: int) -> list[Any]:
    webhook = wf.create_webhook()
    got: list[Any] = []
    async for request in webhook:
        got.append(request.json())
        if len(got) == count:
            return got
    return got


@asynccontextmanager
async def webhook(
    tmp_path: Path, flow: Any = w.webhook_echo, *args: Any
) -> AsyncIterator[tuple[wf.Run[Any], str, int]]:
    """A run waiting on a webhook: the run, the request path, and the server's port."""
    async with wf.worker(LocalWorld(tmp_path, max_webhook_bytes=1000)):
        run = await wf.start(flow, *args)
        for _ in range(500):
            created = [e for e in await run.events() if e.kind == "hook_created"]
            if created:
                break
            await asyncio.sleep(0.01)
        url = created[0].data["url"]
        host_port, _, path = url.removeprefix("http://").partition("/")
        yield run, "/" + path, int(host_port.rpartition(":")[2])


async def raw(port: int, data: bytes, *, close_write: bool = True, read: bool = True) -> bytes:
    """Send bytes on a fresh connection; the reply, if any, until the server closes."""

    def go() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
            if not read:
                return b""
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    return await asyncio.to_thread(go)


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


async def received(run: wf.Run[Any]) -> int:
    return sum(1 for e in await run.events() if e.kind == "hook_received")


def test_half_sent_requests_never_resume_a_run(tmp_path: Path) -> None:
    async def main() -> None:
        async with webhook(tmp_path) as (run, path, port):
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
            assert await raw(port, head) == b""  # the header block never ended: dropped
            short = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
            assert await raw(port, short.encode()) == b""  # shorter than it said: dropped
            await asyncio.sleep(0.2)
            assert await received(run) == 0 and await run.status() == "running"
            body = b'{"ok": 1}'
            whole = f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            assert status(await raw(port, whole + body)) == 202
            assert (await run.result(timeout=10))["json"] == {"ok": 1}

    asyncio.run(main())


@pytest.mark.parametrize(
    ("length_lines", "expected"),
    [
        ("Content-Length: 2\r\nContent-Length: 10\r\n", 400),
        ("Content-Length: 1_0\r\n", 400),
        ("Content-Length: +5\r\n", 400),
        ("Content-Length: 0x5\r\n", 400),
        ("Content-Length: 5 5\r\n", 400),
        ("Content-Length: -1\r\n", 400),
        ("Content-Length: 99999999999999\r\n", 400),
        ("Content-Length: 1001\r\n", 413),
        ("Transfer-Encoding: chunked\r\n", 411),
    ],
)
def test_a_lenient_content_length_is_refused(
    tmp_path: Path, length_lines: str, expected: int
) -> None:
    async def main() -> None:
        async with webhook(tmp_path) as (run, path, port):
            request = f"POST {path} HTTP/1.1\r\nHost: x\r\n{length_lines}\r\n0123456789"
            assert status(await raw(port, request.encode())) == expected
            assert await received(run) == 0

    asyncio.run(main())


def test_garbage_and_wrong_paths_get_an_answer_and_the_server_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        async with webhook(tmp_path) as (run, path, port):
            assert status(await raw(port, b"GARBAGE\r\n\r\n")) == 400
            assert status(await raw(port, b"POST /elsewhere HTTP/1.1\r\n\r\n")) == 404
            assert status(await raw(port, b"POST /webhooks/nope HTTP/1.1\r\n\r\n")) == 404
            folded = f"POST {path} HTTP/1.1\r\nX-A: 1\r\n continued\r\n\r\n".encode()
            assert status(await raw(port, folded)) == 400
            huge = f"POST {path} HTTP/1.1\r\nX-A: {'a' * 70_000}\r\n\r\n".encode()
            assert status(await raw(port, huge)) == 431
            unicode = "POST /webhooks/\u00e9t\u00e9 HTTP/1.1\r\n\r\n".encode()
            assert status(await raw(port, unicode)) == 404
            assert await received(run) == 0
            body = b"{}"
            ok = f"POST {path} HTTP/1.1\r\nContent-Length: 2\r\n\r\n".encode() + body
            assert status(await raw(port, ok)) == 202

    asyncio.run(main())


def test_a_client_that_leaves_early_costs_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        async with webhook(tmp_path) as (run, path, port):
            body = b'{"n": 1}'
            request = f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            for _ in range(20):  # send, then close without reading the reply
                await raw(port, request + body, read=False)
            await asyncio.sleep(0.3)
            assert await received(run) >= 1

    with caplog.at_level(logging.WARNING, logger="worldflow"):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in capfd.readouterr().err


def test_slow_clients_are_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_intake, "HEADER_TIMEOUT", 0.5)
    monkeypatch.setattr(_intake, "BODY_TIMEOUT", 0.5)

    async def main() -> None:
        async with webhook(tmp_path) as (run, path, port):

            def trickle(data: bytes) -> tuple[bytes, float]:
                start = time.monotonic()
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    try:
                        for byte in data:
                            sock.sendall(bytes([byte]))
                            time.sleep(0.1)
                    except OSError:
                        pass  # the server hung up on us: what we want
                    try:
                        return sock.recv(1000), time.monotonic() - start
                    except OSError:
                        return b"", time.monotonic() - start

            head = f"POST {path} HTTP/1.1\r\nHost: a-slow-client\r\n\r\n".encode()
            reply, took = await asyncio.to_thread(trickle, head)
            assert reply == b"" and took < 3.0
            slow_body = f"POST {path} HTTP/1.1\r\nContent-Length: 50\r\n\r\n".encode()
            reply, took = await asyncio.to_thread(trickle, slow_body + b"x" * 50)
            assert took < 6.0
            assert await received(run) == 0

    asyncio.run(main())


def test_many_clients_at_once_are_all_answered(tmp_path: Path) -> None:
    async def main() -> None:
        async with webhook(tmp_path, collect, 200) as (run, path, port):
            body = b"{}"
            request = f"POST {path} HTTP/1.1\r\nContent-Length: 2\r\n\r\n".encode() + body
            start = time.monotonic()
            replies = await asyncio.gather(*(raw(port, request) for _ in range(200)))
            took = time.monotonic() - start
            assert [status(r) for r in replies] == [202] * 200
            assert json.loads(replies[0].split(b"\r\n\r\n", 1)[1])["run_id"] == run.id
            assert took < 5.0
            assert await run.result(timeout=20) == [{}] * 200  # each one delivered once

    asyncio.run(main())
