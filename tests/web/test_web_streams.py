"""The web UI's streams and tags: the SSE endpoint (whole, resumed, live), the run page's
stream panels and tags, and the runs page's tag filter (HTML and JSON)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import worldflow as wf
from worldflow.testing import _workflows_streams as s
from worldflow.web import create_app
from worldflow.worlds.local import LocalWorld

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"

    async def go() -> None:
        async with wf.worker(LocalWorld(path)):
            runs = [
                await wf.start(s.stream_tokens, "w", 12, id="w-tokens", tags={"team": "red"}),
                await wf.start(s.plain, "w", id="w-plain", tags={"team": "blue"}),
            ]
            for run in runs:
                await run.result(timeout=10)

    asyncio.run(go())
    return path


@pytest.fixture
def web(data: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("WORLDFLOW_DATA_DIR", str(data))
    monkeypatch.delenv("WORLDFLOW_WORLD", raising=False)
    with TestClient(create_app(), base_url=BASE) as client:
        yield client


def sse(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body: each a dict of its fields."""
    found = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            fields[key] = value
        if "event" in fields:
            found.append(fields)
    return found


def test_sse_serves_a_stream_whole_then_ends(web: TestClient) -> None:
    response = web.get("/api/runs/w-tokens/streams/tokens")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.text)
    chunks = [e for e in events if e["event"] == "chunk"]
    assert [json.loads(e["data"])["i"] for e in chunks] == list(range(12))
    assert [e["id"] for e in chunks] == [str(i) for i in range(12)]
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"]) == {"next": 12}


def test_sse_resumes_from_start_or_last_event_id(web: TestClient) -> None:
    from_start = sse(web.get("/api/runs/w-tokens/streams/tokens?start=9").text)
    assert [e["id"] for e in from_start if e["event"] == "chunk"] == ["9", "10", "11"]
    again = web.get("/api/runs/w-tokens/streams/tokens", headers={"Last-Event-ID": "10"})
    assert [e["id"] for e in sse(again.text) if e["event"] == "chunk"] == ["11"]


def test_sse_refuses_bad_requests_clearly(web: TestClient) -> None:
    response = web.get("/api/runs/nope/streams/tokens")
    assert response.status_code == 404 and "no run with id 'nope'" in response.json()["error"]
    response = web.get("/api/runs/w-tokens/streams/bad%20name")
    assert response.status_code == 400 and "invalid stream name" in response.json()["error"]
    response = web.get("/api/runs/w-tokens/streams/tokens?start=-3")
    assert response.status_code == 400 and "start must be" in response.json()["error"]


def test_run_page_shows_streams_and_tags(web: TestClient) -> None:
    text = web.get("/runs/w-tokens").text
    assert 'data-stream="/api/runs/w-tokens/streams/tokens"' in text
    assert '<span class="count" data-count>12</span>' in text
    assert 'href="/?tag=team%3Dred"' in text
    assert "data-stream" not in web.get("/runs/w-plain").text


def test_runs_are_filtered_by_tag(web: TestClient) -> None:
    page = web.get("/?tag=team=red")
    assert 'data-id="w-tokens"' in page.text and 'data-id="w-plain"' not in page.text
    assert 'value="team=red"' in page.text
    doc = web.get("/api/runs?tag=team%3Dblue").json()
    assert [r["id"] for r in doc["runs"]] == ["w-plain"]
    assert doc["runs"][0]["tags"] == {"team": "blue"}
    bad = web.get("/api/runs?tag=team")
    assert bad.status_code == 400 and "key=value" in bad.json()["error"]
    bad = web.get("/api/runs?tag=bad%20key=x")
    assert bad.status_code == 400 and "invalid tag key 'bad key'" in bad.json()["error"]


def test_sse_follows_a_live_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker on another thread writes while the endpoint streams; the response ends
    with the run."""
    path = tmp_path / "live"
    gate = s.GATES["web"] = threading.Event()
    started = threading.Event()
    failure: list[BaseException] = []

    def worker() -> None:
        async def go() -> None:
            async with wf.worker(LocalWorld(path)):
                run = await wf.start(s.live_stream, "web", 2, 3, id="w-live")
                started.set()
                await run.result(timeout=30)

        try:
            asyncio.run(go())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=worker)
    thread.start()
    monkeypatch.setenv("WORLDFLOW_DATA_DIR", str(path))
    monkeypatch.delenv("WORLDFLOW_WORLD", raising=False)
    try:
        assert started.wait(10)
        threading.Timer(1.0, gate.set).start()
        with TestClient(create_app(), base_url=BASE) as client:
            text = client.get("/api/runs/w-live/streams/live").text
    finally:
        gate.set()
        thread.join(30)
        s.GATES.pop("web", None)
    assert not failure, failure
    events = sse(text)
    assert [json.loads(e["data"]) for e in events if e["event"] == "chunk"] == [0, 1, 2, 3, 4]
    assert events[-1]["event"] == "end"
