"""Benchmark the web UI over a local store of 10,000 runs (run by hand, prints figures).

    python bench/bench_web.py [--runs 10000] [--steps 1000] [--data-dir DIR] [--repeat 20]

Fills a local store with real runs (most completed, every 10th failed, every
50th asleep for an hour) plus one run of ``--steps`` sequential steps, then
serves ``worldflow web`` on it (a subprocess, as a user would) and times:

- the server: each page fetched ``--repeat`` times over HTTP (median, p95);
- the browser: Debian's chromium (when /usr/bin/chromium exists) loading each
  page, from navigation start to the load event, as the Navigation Timing API
  reports it.

A ``--data-dir`` that already holds runs is reused as it is (no filling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2 as httpx

import worldflow as wf
from worldflow.worlds.local import LocalWorld

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@wf.step(name="bench.web.work", max_retries=0)
async def work(i: int) -> dict[str, int]:
    if i % 10 == 0:
        raise wf.FatalError(f"run {i} fails on purpose")
    return {"i": i, "square": i * i}


@wf.workflow(name="bench.web.order")
async def order(i: int) -> dict[str, int]:
    result = await work(i)
    if i % 50 == 1:
        await wf.sleep("1h")
    return result


@wf.step(name="bench.web.part")
async def part(i: int) -> int:
    return i


@wf.workflow(name="bench.web.long")
async def long(n: int) -> int:
    for i in range(n):
        await part(i)
    return n


async def fill(path: Path, runs: int, steps: int) -> str:
    """``runs`` runs of bench.web.order and one of bench.web.long; the long run's id."""
    started = time.perf_counter()
    async with wf.worker(LocalWorld(path, serve_webhooks=False)):
        long_run = await wf.start(long, steps, id="bench-long")
        done = 0
        batch = 500
        for first in range(0, runs, batch):
            numbers = range(first, min(first + batch, runs))
            handles = [(i, await wf.start(order, i)) for i in numbers]
            for i, run in handles:
                if i % 50 != 1:  # those sleep for an hour
                    with contextlib.suppress(wf.RunFailed):
                        await run.result(timeout=120)
            done += len(handles)
            print(f"  filled {done}/{runs} runs ({time.perf_counter() - started:.0f}s)", flush=True)
        await long_run.result(timeout=600)
    return long_run.id


def serve(path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env["WORLDFLOW_DATA_DIR"] = str(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "worldflow", "web", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip().rstrip("/")


def time_server(base: str, paths: dict[str, str], repeat: int) -> dict[str, list[float]]:
    """Each page ``repeat`` times, a new connection each (as curl would: an
    HTTP client's kept-alive connection can add 40 ms delayed ACKs to the figure)."""
    times: dict[str, list[float]] = {}
    for name, path in paths.items():
        fetch(base + path)  # warm
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            size = len(fetch(base + path))
            samples.append(time.perf_counter() - t0)
        times[name] = samples
        print(f"  {name:<34} {ms(samples)}  ({size / 1024:.0f} KB)", flush=True)
    return times


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


def time_browser(base: str, paths: dict[str, str], repeat: int) -> None:
    if not Path(CHROMIUM).exists():
        print(f"  skipped: {CHROMIUM} is missing (apt-get install chromium)")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        for name, path in paths.items():
            if path.startswith("/api/"):
                continue
            samples = []
            for _ in range(max(3, repeat // 4)):
                page.goto(base + path, wait_until="load")
                timing: dict[str, Any] = page.evaluate(
                    "() => performance.getEntriesByType('navigation')[0].toJSON()"
                )
                samples.append(float(timing["loadEventEnd"]) / 1000)
            print(f"  {name:<34} {ms(samples)}  (navigation start to load event)", flush=True)
        browser.close()


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000, help="steps of the long run")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-web-") as scratch:
        path = args.data_dir or Path(scratch)
        if not (path / "worldflow.sqlite3").exists():
            print(f"filling {path} with {args.runs} runs and one of {args.steps} steps")
            asyncio.run(fill(path, args.runs, args.steps))
        process, base = serve(path)
        try:
            with httpx.Client(base_url=base) as client:
                page = client.get("/api/runs", params={"limit": 50}).json()
                for _ in range(19):  # the 20th page of 50
                    cursor = page["cursor"]
                    page = client.get("/api/runs", params={"limit": 50, "cursor": cursor}).json()
            paths = {
                "runs page (first 50)": "/",
                "runs page 20 (cursor)": f"/?cursor={httpx.QueryParams({'c': cursor})['c']}",
                "runs page, status=failed": "/?status=failed",
                "runs page, status=running": "/?status=running",
                "runs page, workflow filter": "/?workflow=bench.web.order",
                "/api/runs (live refresh)": "/api/runs",
                f"run page, {args.steps} steps": "/runs/bench-long",
                f"/api/runs/<id>, {args.steps} steps": "/api/runs/bench-long",
                "run page, 1 step + a sleep": "/runs/" + first_sleeper(client_base=base),
            }
            print(f"server: {args.repeat} requests each, over HTTP to worldflow web")
            time_server(base, paths, args.repeat)
            print("browser (chromium, headless):")
            time_browser(base, paths, args.repeat)
        finally:
            process.terminate()
            process.wait(timeout=15)


def first_sleeper(client_base: str) -> str:
    with httpx.Client(base_url=client_base) as client:
        doc = client.get("/api/runs", params={"status": "running", "limit": 1}).json()
        return str(doc["runs"][0]["id"])


if __name__ == "__main__":
    main()
