"""The web UI in a real browser: headless Debian Chromium driven by Playwright.

``worldflow web`` and ``worldflow worker`` run as subprocesses over a local
store that real workflows filled; the test reads the pages, clicks cancel,
wake, re-run and resume-hook, and checks each effect in the store itself.
Screenshots go to the test's tmp dir, and to docs/img/ (for the README) when
WORLDFLOW_UPDATE_SCREENSHOTS=1.

Chromium comes from Debian (``apt-get install chromium``; scripts/test does
it): Playwright's own browser download is never used. Without it the test
skips, except on CI, where it fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from web_helpers import HERE, XSS, Store, flows, make_store

import worldflow as wf
from worldflow._api import client
from worldflow._inspect import RunDetail, inspect_run
from worldflow.worlds.local import LocalWorld

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = os.environ.get("WORLDFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = HERE.parents[1]
T = TypeVar("T")


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install chromium; scripts/test installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env["WORLDFLOW_DATA_DIR"] = str(data_dir)
    return env


def _stop(process: subprocess.Popen[str]) -> str:
    """Stop ``process`` (SIGTERM: a graceful stop) and return its stderr; closes its pipes."""
    if process.poll() is None:
        process.terminate()
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=5)
    return err or ""


def off_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a thread of its own: Playwright's sync API keeps
    an event loop running on this thread, where asyncio.run() is refused."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Site:
    """The running UI and worker over one store, and ways to look into the store."""

    def __init__(self, store: Store, url: str) -> None:
        self.store = store
        self.url = url

    def detail(self, run_id: str) -> RunDetail:
        async def read() -> RunDetail:
            world = LocalWorld(self.store.path, read_only=True)
            try:
                info = await world.storage.get_run(run_id)
                assert info is not None, f"no run {run_id} in the store"
                return inspect_run(info, (await world.storage.read_log(run_id)).events)
            finally:
                await world.close()

        return off_loop(read())

    def until(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def start(self, workflow: Any, *args: Any) -> str:
        """Start a run from this process (a client: the worker subprocess executes it)."""

        async def start() -> str:
            async with client(LocalWorld(self.store.path, serve_webhooks=False)):
                return (await wf.start(workflow, *args)).id

        return off_loop(start())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    _need_chromium()
    store = make_store(tmp_path / "data")
    env = _env(store.path)
    worker = subprocess.Popen(
        [sys.executable, "-m", "worldflow", "worker", "web_flows", "--grace", "1s"],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    web = subprocess.Popen(
        [sys.executable, "-m", "worldflow", "web", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert web.stdout is not None
        url = web.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"worldflow web printed {url!r}"
        yield Site(store, url)
    finally:
        web_err = _stop(web)
        worker_err = _stop(worker)
    assert web.returncode == 0, web_err
    assert worker.returncode == 0, worker_err


def test_the_ui_in_chromium(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    # The suite runs two test files at a time on two cores: give each page 15 s, not 5.
    expect.set_options(timeout=15_000)
    shots = tmp_path / "img"
    shots.mkdir()
    store = site.store
    f = flows()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            problems: list[str] = []
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )

            # The runs page: every run, newest first; filters; live refresh.
            page.goto(site.url)
            rows = page.locator("#runs tbody tr")
            expect(rows).to_have_count(10)
            expect(page.locator("#runs")).to_contain_text("web.doomed")
            page.select_option("#filter-status", "failed")
            page.click("form.filters button[type=submit]")
            expect(rows).to_have_count(1)
            assert "status=failed" in page.url
            expect(rows.first).to_have_attribute("data-id", store.failed)
            page.goto(site.url)
            fresh = site.start(f.order, "live-1")
            expect(page.locator(f'#runs tr[data-id="{fresh}"]')).to_have_count(1, timeout=10_000)

            # The failed run: the hostile input and error are shown as text, never run.
            page.goto(f"{site.url}runs/{store.failed}")
            expect(page.locator(".error-line").first).to_contain_text(XSS)
            expect(page.locator("img[src=x]")).to_have_count(0)
            page.click("#rerun")  # re-run with the same input: a new run's page opens
            page.wait_for_url(lambda u: store.failed not in u and "/runs/" in u)
            new_id = page.url.rsplit("/", 1)[1]
            assert site.detail(new_id).input == {"args": [XSS], "kwargs": {}}
            site.until("the re-run to fail", lambda: site.detail(new_id).status == "failed")

            # The retried run: one lane per step, each attempt a bar, gaps between them.
            page.goto(f"{site.url}runs/{store.retried}")
            lane = page.locator('.wf-row[data-position="1"]')
            expect(lane.locator("rect.bar-retried")).to_have_count(2)
            expect(lane.locator("rect.bar-backoff")).to_have_count(2)
            expect(lane.locator("rect.bar-completed")).to_have_count(1)
            page.click("#step-1 summary")
            expect(page.locator("#step-1 table.attempts tbody tr")).to_have_count(3)
            expect(page.locator("#step-1")).to_contain_text("card processor timed out (try 2)")

            # A big run: step details and the log load when opened.
            big = site.start(f.many_steps, 150)
            site.until("the big run", lambda: site.detail(big).status == "completed")
            page.goto(f"{site.url}runs/{big}")
            expect(page.locator(".wf-row.kind-step")).to_have_count(150)
            page.click("#step-140 summary")
            expect(page.locator("#step-140")).to_contain_text("part 139")
            page.click("#event-log summary")
            expect(page.locator("#event-log table.events tbody tr")).to_have_count(
                len(site.detail(big).events)
            )

            # The hook: bad JSON is refused in the page; a good payload resumes the run.
            page.goto(f"{site.url}runs/{store.waiting}")
            form = page.locator(f'form.resume[data-token="{store.token}"]')
            form.locator("textarea").fill("{not json")
            form.locator("button").click()
            expect(page.locator("#toast")).to_contain_text("not valid JSON")
            form.locator("textarea").fill('{"approved": true, "by": "<b>ann</b>"}')
            form.locator("button").click()
            site.until("the hook's run to end", lambda: site.detail(store.waiting).info.done)
            done = site.detail(store.waiting)
            assert done.status == "completed"
            assert done.output == {"approved": True, "by": "<b>ann</b>"}
            expect(page.locator("h1 .status")).to_have_text("completed", timeout=10_000)

            # The sleep: wake it now; the worker carries the run on.
            page.goto(f"{site.url}runs/{store.sleeping}")
            expect(page.locator(".wf-row.kind-sleep rect.bar-sleep-pending")).to_have_count(1)
            page.click("#wake-all")
            site.until("the woken run to end", lambda: site.detail(store.sleeping).info.done)
            woken = site.detail(store.sleeping)
            assert woken.status == "completed" and woken.waits[0].early is True

            # Cancel: a run asleep for an hour stops now.
            victim = site.start(f.nap, "to-cancel")
            site.until("the nap", lambda: bool(site.detail(victim).sleeping))
            page.goto(f"{site.url}runs/{victim}")
            page.click("#cancel")
            site.until("the cancellation", lambda: site.detail(victim).status == "cancelled")
            expect(page.locator("h1 .status")).to_have_text("cancelled", timeout=10_000)

            # The tour: retries, parallel steps, a sleep and a hook on one timeline.
            tour = site.start(f.tour, "t-1")
            site.until("the tour's hook", lambda: bool(site.detail(tour).hooks_waiting), 60)
            time.sleep(0.8)  # the hook wait shows as a span
            off_loop(_resume(store.path, "review:t-1", {"ok": True}))
            site.until("the tour to end", lambda: site.detail(tour).status == "completed")
            page.goto(f"{site.url}runs/{tour}")
            expect(page.locator(".waterfall .wf-row:not(.axis)")).to_have_count(7)
            page.screenshot(path=shots / "timeline.png")
            page.goto(site.url)  # by now: runs of every status
            expect(page.locator("#runs .status-cancelled")).to_have_count(1)
            page.screenshot(path=shots / "runs.png")
            assert not problems, problems
        finally:
            browser.close()
    if os.environ.get("WORLDFLOW_UPDATE_SCREENSHOTS"):
        (REPO / "docs" / "img").mkdir(exist_ok=True)
        for shot in shots.iterdir():
            shutil.copyfile(shot, REPO / "docs" / "img" / shot.name)


async def _resume(path: Path, token: str, payload: Any) -> None:
    async with client(LocalWorld(path, serve_webhooks=False)):
        await wf.resume_hook(token, payload)
