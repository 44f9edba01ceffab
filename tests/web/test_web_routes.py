"""The web UI's routes without a browser: filters, paging, errors, the POST guard, escaping."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from web_helpers import XSS, Store, flows, make_store

import worldflow as wf
from worldflow.cli import main as cli_main
from worldflow.web import TOKEN_HEADER, create_app
from worldflow.web import _app as web_app
from worldflow.worlds.local import LocalWorld

BASE = "http://127.0.0.1:8765"


def client_for(path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("WORLDFLOW_DATA_DIR", str(path))
    monkeypatch.delenv("WORLDFLOW_WORLD", raising=False)
    return TestClient(create_app(), base_url=BASE)


@pytest.fixture
def web(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    with client_for(store.path, monkeypatch) as client:
        yield client


def token_of(client: TestClient) -> str:
    match = re.search(r'<meta name="wf-token" content="([^"]+)">', client.get("/").text)
    assert match, "the page carries no token"
    return match.group(1)


def ids_in(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)">', html)


# -- reading -------------------------------------------------------------------------------


def test_runs_page_lists_every_run_newest_first(web: TestClient, store: Store) -> None:
    response = web.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    ids = ids_in(response.text)
    assert set(ids) == {store.retried, store.failed, store.sleeping, store.waiting, *store.others}
    assert ids[0] == store.others[-1]  # the newest
    for status in ("completed", "failed", "running"):
        assert f'status-{status}">{status}<' in response.text


def test_filters_by_status_and_workflow(web: TestClient, store: Store) -> None:
    assert ids_in(web.get("/?status=failed").text) == [store.failed]
    orders = ids_in(web.get("/?workflow=web.order").text)
    assert set(orders) == {store.retried, *store.others}
    assert ids_in(web.get("/?status=running&workflow=web.nap").text) == [store.sleeping]
    assert ids_in(web.get("/?status=cancelled").text) == []
    assert "No runs match these filters" in web.get("/?workflow=nope").text
    doc = web.get("/api/runs", params={"status": "completed", "workflow": "web.order"}).json()
    assert {r["id"] for r in doc["runs"]} == {store.retried, *store.others}
    assert all(r["status"] == "completed" and "output" in r for r in doc["runs"])


def test_paging_with_cursors_visits_every_run_once(web: TestClient, store: Store) -> None:
    seen: list[str] = []
    url = "/?limit=3"
    pages = 0
    while url:
        html = web.get(url).text
        page_ids = ids_in(html)
        assert 1 <= len(page_ids) <= 3
        seen += page_ids
        pages += 1
        nxt = re.search(r'<a rel="next" id="next-page" href="([^"]+)">', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else ""
        if pages > 1:
            assert "first page" in html
    assert pages == 4  # 10 runs, 3 a page
    assert len(seen) == len(set(seen)) == 10
    api = web.get("/api/runs?limit=4").json()
    assert len(api["runs"]) == 4 and api["cursor"]
    rest = web.get("/api/runs", params={"limit": 100, "cursor": api["cursor"]}).json()
    assert rest["cursor"] is None
    assert [r["id"] for r in api["runs"] + rest["runs"]] == ids_in(web.get("/?limit=100").text)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=exploded", "unknown status 'exploded'"),
        ("limit=0", "limit must be a whole number from 1 to 500"),
        ("limit=many", "got 'many'"),
        ("cursor=garbage", "invalid cursor"),
    ],
)
def test_bad_query_is_a_400_that_says_why(web: TestClient, query: str, message: str) -> None:
    page = web.get(f"/?{query}")
    assert page.status_code == 400 and message in html.unescape(page.text)
    api = web.get(f"/api/runs?{query}")
    assert api.status_code == 400 and message in api.json()["error"]


def test_go_to_a_run_by_id(web: TestClient, store: Store) -> None:
    found = web.get("/go", params={"id": f" {store.failed} "})
    assert found.status_code == 200 and found.url.path == f"/runs/{store.failed}"
    assert web.get("/go", params={"id": "a/b c"}).url.path == "/runs/a/b c"
    assert web.get("/go", params={"id": "a/b c"}).status_code == 404
    assert web.get("/go").url.path == "/"


def test_unknown_run_is_a_404(web: TestClient) -> None:
    page = web.get("/runs/no-such-run")
    assert page.status_code == 404 and "no run with id &#x27;no-such-run&#x27;" in page.text
    assert web.get("/api/runs/no-such-run").status_code == 404
    assert web.get("/api/runs/no-such-run/events").json() == {
        "error": "no run with id 'no-such-run'"
    }


def test_run_page_shows_attempts_retries_and_output(web: TestClient, store: Store) -> None:
    html = web.get(f"/runs/{store.retried}").text
    assert "web.charge" in html and "web.ship" in html and "3 attempts" in html
    lane = html[html.index('data-position="1"') : html.index('data-position="2"')]
    kinds = re.findall(r'class="bar bar-([a-z-]+)" x="([\d.]+)%"', lane)
    assert [k for k, _ in kinds] == ["retried", "backoff", "retried", "backoff", "completed"]
    assert [float(x) for _, x in kinds] == sorted(float(x) for _, x in kinds)
    assert "ConnectionError: card processor timed out (try 1)" in html
    assert "&quot;charged&quot;: 42.5" in html  # the output, escaped JSON
    assert 'id="cancel"' not in html and 'id="rerun"' in html  # it has ended


def test_run_page_shows_sleeps_and_hooks_with_their_controls(web: TestClient, store: Store) -> None:
    nap = web.get(f"/runs/{store.sleeping}").text
    assert "bar-sleep-pending" in nap and 'id="wake-all"' in nap and 'id="cancel"' in nap
    assert 'data-body="{&quot;position&quot;: 2}"' in nap  # wake just that sleep
    approval = web.get(f"/runs/{store.waiting}").text
    assert "bar-hook-waiting" in approval
    assert f'<form class="resume" data-token="{store.token}">' in approval
    assert '<meta name="wf-refresh" content="2">' in approval  # live while it runs
    assert "wf-refresh" not in web.get(f"/runs/{store.retried}").text


def test_run_api_and_events(web: TestClient, store: Store) -> None:
    doc = web.get(f"/api/runs/{store.waiting}").json()
    assert doc["status"] == "running" and doc["hooks_waiting"] == [store.token]
    summary = web.get(f"/api/runs/{store.waiting}?summary=1").json()
    assert summary["last_seq"] == doc["last_seq"] and "steps" not in summary
    assert [s["name"] for s in doc["steps"]] == ["web.ship"]
    events = web.get(f"/api/runs/{store.retried}/events").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "run_created"
    assert sum(e["kind"] == "step_retrying" for e in events) == 2


def test_everything_a_run_holds_is_escaped(web: TestClient, store: Store) -> None:
    for url in ("/", f"/runs/{store.failed}", "/?workflow=" + XSS):
        response = web.get(url)
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
        assert "Content-Security-Policy" in response.headers
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = web.get(f"/runs/{store.failed}").text
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in html  # shown, as text
    assert "Traceback (most recent call last)" in html and "ValueError: cannot go on" in html
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script src="/static/app.js" defer>']


def test_static_files_are_served(web: TestClient) -> None:
    assert "textContent" in web.get("/static/app.js").text
    assert ".waterfall" in web.get("/static/style.css").text


def test_a_foreign_host_header_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    with client_for(store.path, monkeypatch) as client:
        assert client.get("/", headers={"host": "evil.example"}).status_code == 400
        assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200


def test_a_big_run_page_loads_step_details_and_the_log_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run_many() -> str:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = await wf.start(flows().many_steps, 120)
            assert await run.result(timeout=30) == 120
            return run.id

    run_id = asyncio.run(run_many())
    with client_for(tmp_path, monkeypatch) as web:
        html = web.get(f"/runs/{run_id}").text
        assert html.count('class="wf-row kind-step"') == 120  # the timeline has every step
        assert "part 119" not in html  # but no step's input inline
        fragment = f'data-fragment="/runs/{run_id}/fragments/step/120"'
        assert fragment in html and f'data-fragment="/runs/{run_id}/fragments/events"' in html
        step = web.get(f"/runs/{run_id}/fragments/step/120")
        assert step.status_code == 200 and "part 119" in step.text and "<html" not in step.text
        log = web.get(f"/runs/{run_id}/fragments/events").text
        assert log.count("<tr>") == 1 + len(web.get(f"/api/runs/{run_id}/events").json()["events"])
        assert web.get(f"/runs/{run_id}/fragments/step/999").status_code == 404


def test_runs_made_after_the_ui_started_on_an_empty_dir_show_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only local world over a directory with no database reads as empty
    and creates nothing; the UI opens it again once there is something to see."""
    monkeypatch.setattr(web_app, "REOPEN_EVERY", 0.0)
    data = tmp_path / "data"
    with client_for(data, monkeypatch) as web:
        assert "No runs" in web.get("/").text
        assert not data.exists()  # looking created nothing
        store = make_store(data, extra=0)
        assert store.retried in ids_in(web.get("/").text)
        assert web.get(f"/runs/{store.failed}").status_code == 200


# -- the POST guard --------------------------------------------------------------------------


def test_posts_without_the_token_or_from_another_origin_are_refused(
    web: TestClient, store: Store
) -> None:
    url = f"/api/runs/{store.sleeping}/cancel"
    token = token_of(web)
    refused = [
        web.post(url),
        web.post(url, headers={TOKEN_HEADER: "wrong"}),
        web.post(url, headers={TOKEN_HEADER: token, "Origin": "http://evil.example"}),
        web.post(url, headers={TOKEN_HEADER: token, "Origin": "http://127.0.0.1:9999"}),
        web.post(url, headers={TOKEN_HEADER: token, "Sec-Fetch-Site": "cross-site"}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert "X-Worldflow-Token" in refused[0].json()["error"]
    assert "Origin http://evil.example" in refused[2].json()["error"]
    assert web.get(f"/api/runs/{store.sleeping}").json()["cancel_requested"] is False


def test_bad_json_is_a_400_that_says_why(web: TestClient, store: Store) -> None:
    headers = {TOKEN_HEADER: token_of(web), "Origin": BASE, "Content-Type": "application/json"}
    bad = web.post("/api/hooks/resume", content=b'{"token": "x", payload: }', headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("the request body is not valid JSON: Expecting")
    shape = web.post("/api/hooks/resume", json={"payload": 1}, headers=headers)
    assert shape.status_code == 400 and '{"token"' in shape.json()["error"]
    wake = web.post(f"/api/runs/{store.sleeping}/wake", json={"position": "2"}, headers=headers)
    assert wake.status_code == 400 and "position must be a whole number" in wake.json()["error"]
    unknown = web.post("/api/hooks/resume", json={"token": "nope", "payload": 1}, headers=headers)
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]
    gone = web.post("/api/runs/nope/cancel", headers=headers)
    assert gone.status_code == 404 and gone.json() == {"error": "no run with id 'nope'"}


# -- acting ----------------------------------------------------------------------------------


def test_actions_record_their_effect_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path, extra=0)
    with client_for(tmp_path, monkeypatch) as web:
        headers = {TOKEN_HEADER: token_of(web), "Origin": BASE}
        rerun = web.post(f"/api/runs/{store.failed}/rerun", headers=headers)
        assert rerun.status_code == 200
        new_id = rerun.json()["id"]
        assert rerun.json()["url"] == f"/runs/{new_id}"
        assert new_id != store.failed
        again = web.get(f"/api/runs/{new_id}").json()
        assert again["workflow"] == "web.doomed" and again["input"] == {"args": [XSS], "kwargs": {}}
        done = web.post(f"/api/runs/{store.retried}/cancel", headers=headers).json()
        assert done == {"id": store.retried, "status": "completed", "cancel_requested": False}
        cancel = web.post(f"/api/runs/{store.sleeping}/cancel", headers=headers).json()
        assert cancel["cancel_requested"] is True
        wake = web.post(f"/api/runs/{store.sleeping}/wake", json={"position": 2}, headers=headers)
        assert wake.json() == {"id": store.sleeping, "woken": 2}
        resume = web.post(
            "/api/hooks/resume", json={"token": store.token, "payload": {"ok": 1}}, headers=headers
        )
        assert resume.json() == {"token": store.token, "run_id": store.waiting}

    async def finish() -> None:  # a worker takes the messages the UI sent
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            assert await wf.get_run(store.waiting).result(timeout=20) == {"ok": 1}
            with pytest.raises(wf.RunCancelled):
                await wf.get_run(store.sleeping).result(timeout=20)

    asyncio.run(finish())


# -- the command -----------------------------------------------------------------------------


def test_core_import_needs_no_web_packages() -> None:
    code = (
        "import sys, worldflow, worldflow.cli, worldflow.worlds.local\n"
        "assert 'starlette' not in sys.modules and 'uvicorn' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_web_without_starlette_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"  # as if it were not installed
        "from worldflow.cli import main\n"
        "sys.exit(main(['web', '--data-dir', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "pip install 'worldflow[web]'" in done.stderr


def test_web_on_a_port_in_use_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["web", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_web_on_a_public_address_warns_and_takes_any_host(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env["WORLDFLOW_DATA_DIR"] = str(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "worldflow", "web", "--host", "0.0.0.0", "--port", "0", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        request = urllib.request.Request(url, headers={"Host": "ui.example.com"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200  # a proxy in front decides who comes in
    finally:
        process.terminate()
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "0.0.0.0 is not a loopback address; the UI has no authentication" in err


def test_the_schedules_page_shows_each_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    @wf.schedule(cron="0 9 * * MON-FRI", timezone="Europe/London")
    @wf.workflow(name="web_tests.morning")
    async def morning(scheduled_at: dt.datetime) -> str:
        return scheduled_at.isoformat()

    clock = wf.VirtualClock(start=dt.datetime(2026, 12, 4, 8, tzinfo=dt.UTC).timestamp())

    async def serve() -> None:
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            await asyncio.sleep(0.3)  # a serving process sets up the next time

    try:
        asyncio.run(serve())
    finally:  # the schedule is this test's only: other tests' runtimes would keep it going
        wf.schedules._SCHEDULES.pop("web_tests.morning", None)
    with client_for(tmp_path, monkeypatch) as client:
        doc = client.get("/api/schedules").json()
        page = client.get("/schedules").text
    mine = [s for s in doc["schedules"] if s["workflow"] == "web_tests.morning"]
    assert mine == [
        {
            "workflow": "web_tests.morning",
            "next_at": "2026-12-04T09:00:00Z",
            "tick": "worldflow.schedule:web_tests.morning@2026-12-04T09:00:00Z",
            "paused": False,
        }
    ]
    assert "web_tests.morning" in page and "2026-12-04 09:00:00Z" in page
