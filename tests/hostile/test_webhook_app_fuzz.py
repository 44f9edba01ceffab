"""The ASGI webhook intake (``worldflow.world.webhook_app``: the Cloud Run service's
webhook route, and what a user mounts in Starlette or FastAPI), fuzzed with hypothesis:
random and forged paths (unicode included), bodies up to twice the cap, lying or
malformed Content-Length headers, bodies in random chunks, clients that leave
mid-body. Every request gets the right status, or no answer when the client left;
only a whole request to the live webhook's path is recorded; the app keeps serving.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldflow as wf
from worldflow.world import webhook_app
from worldflow.worlds.local import LocalWorld

MAX = 1000


@wf.workflow
async def collect_forever() -> int:
    webhook = wf.create_webhook()
    count = 0
    async for _ in webhook:
        count += 1
    return count


class Served:
    """A worker on its own loop, a run waiting on a webhook, and the ASGI app."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = wf.worker(LocalWorld(tmp))
        self.loop.run_until_complete(self.worker.__aenter__())
        self.run = self.loop.run_until_complete(wf.start(collect_forever))
        self.path = self.loop.run_until_complete(self._path())
        self.app = webhook_app(max_body=MAX)
        self.accepted = 0

    async def _path(self) -> str:
        for _ in range(500):
            created = [e for e in await self.run.events() if e.kind == "hook_created"]
            if created:
                url = str(created[0].data["url"])
                return "/" + url.removeprefix("http://").partition("/")[2]
            await asyncio.sleep(0.01)
        raise AssertionError("the webhook was never created")

    def call(
        self, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]], leave: bool
    ) -> int | None:
        """One request; its status, or None if the app sent no answer."""
        events: list[dict[str, Any]] = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ] or [{"type": "http.request", "body": b"", "more_body": False}]
        if leave:
            events = [*events[:-1], {"type": "http.disconnect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return events.pop(0) if events else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "root_path": "",
            "query_string": b"",
            "headers": headers,
        }
        self.loop.run_until_complete(self.app(scope, receive, send))
        starts = [m for m in sent if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None

    def received(self) -> int:
        async def count() -> int:
            return sum(1 for e in await self.run.events() if e.kind == "hook_received")

        return self.loop.run_until_complete(count())

    def settle(self) -> int:
        """Wait until every accepted request is in the log; the count in the log."""
        for _ in range(1000):
            if self.received() >= self.accepted:
                break
            self.loop.run_until_complete(asyncio.sleep(0.01))
        return self.received()

    def close(self) -> None:
        self.loop.run_until_complete(self.worker.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("fuzz"))
    try:
        yield s
    finally:
        s.close()


paths = st.one_of(
    st.just("LIVE"),
    st.builds(lambda t: "/webhooks/" + t, st.text(max_size=40)),
    st.text(max_size=40).map(lambda t: "/" + t),
    st.sampled_from(["/webhooks/", "/webhooks", "/", "/webhooks/../webhooks/x", "/webhooks/%00"]),
)
bodies = st.binary(max_size=2 * MAX)
lengths = st.one_of(
    st.just("TRUE"),
    st.none(),
    st.integers(min_value=0, max_value=10 * MAX).map(str),
    st.integers(min_value=10**11, max_value=10**20).map(str),
    st.text(max_size=12),
    st.sampled_from(["-1", "1e3", " 12", "12 ", "0x10", "١٢", "99999999999999999999999"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=paths,
    body=bodies,
    length=lengths,
    cuts=st.lists(st.integers(0, 2 * MAX), max_size=4),
    leave=st.booleans(),
)
def test_every_request_gets_the_right_answer_and_only_whole_ones_count(
    served: Served, path: str, body: bytes, length: str | None, cuts: list[int], leave: bool
) -> None:
    live = path == "LIVE"
    path = served.path if live else path
    headers = [(b"content-type", b"application/json")]
    declared: str | None = str(len(body)) if length == "TRUE" else length
    if declared is not None:
        headers.append((b"content-length", declared.encode("utf-8")))
    points = sorted({c for c in cuts if 0 < c < len(body)})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    status = served.call(path, chunks, headers, leave)

    # At most 12 ASCII digits (a longer one is refused as malformed, not as too big).
    well_formed = declared is None or re.fullmatch(r"[0-9]{1,12}", declared) is not None
    read = chunks[:-1] if leave else chunks  # what the app receives before the client leaves
    sizes = [sum(len(c) for c in read[: i + 1]) for i in range(len(read))]
    if declared is not None and not well_formed:
        assert status == 400
    elif declared is not None and int(declared) > MAX:
        assert status == 413  # refused on the header alone
    elif any(size > MAX for size in sizes):
        assert status == 413  # refused as soon as the body passed the cap
    elif leave or (declared is not None and int(declared) != len(body)):
        assert status is None  # nothing answered, nothing delivered
    elif live:
        assert status == 202
        served.accepted += 1
    else:
        assert status == 404


def test_nothing_but_the_accepted_requests_was_recorded(served: Served) -> None:
    """After the fuzzing (which runs first, in file order): the log holds one payload
    per 202, and the app still takes a plain request."""
    assert served.accepted >= 5  # the fuzzing did reach the live webhook whole, often
    assert served.settle() == served.accepted
    assert served.call(served.path, [b'{"ok": 1}'], [], leave=False) == 202
    served.accepted += 1
    assert served.settle() == served.accepted
