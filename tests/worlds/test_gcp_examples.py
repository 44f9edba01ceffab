"""The seed's examples run unchanged on the GCP world, against the emulators.

In-process: each example's workflow on a GCP world (its app served on a local
port). Across processes, as deployed: the Cloud Run service is ``uvicorn
worldflow.worlds.gcp.app:app`` in a process of its own, and
``WORLDFLOW_WORLD=gcp python -m examples.hail_ride`` (and the research agent)
start their runs from another; retries and timers reach the service through
Cloud Tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import worldflow as wf
from worldflow._state import RunState
from worldflow.worlds.gcp import GcpSettings, GcpWorld
from worldflow.worlds.gcp._setup import delete_queue, ensure_queue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcp_support.emulators import emulators, free_port
from gcp_support.world import SECRET, settings_for_test

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

hail_ride = importlib.import_module("examples.hail_ride")
loyalty_reward = importlib.import_module("examples.loyalty_reward")
payment_webhook = importlib.import_module("examples.payment_webhook")
research_agent = importlib.import_module("examples.research_agent")

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 40))


@pytest.fixture
def settings() -> Iterator[GcpSettings]:
    made = settings_for_test(emulators())
    asyncio.run(ensure_queue(made))
    yield made
    asyncio.run(delete_queue(made))


async def fold(handle: wf.Run[Any]) -> RunState:
    return RunState.from_events(handle.id, await handle.events())


@pytest.mark.parametrize("always_replay", [False, True], ids=["warm", "always-replay"])
def test_hail_ride(settings: GcpSettings, always_replay: bool) -> None:
    async def main() -> tuple[str, Any, RunState]:
        async with wf.worker(GcpWorld(settings), always_replay=always_replay):
            handle = await wf.start(hail_ride.hail_ride, "req-42")
            return handle.id, await handle.result(timeout=30), await fold(handle)

    run_id, receipt, state = run(main())
    assert receipt["receipt_id"] == f"rcpt-{run_id}:4"
    assert receipt["driver"] == "Sam"
    assert [s.attempt for s in state.steps.values()] == [1, 2, 1, 1]


def test_loyalty_reward_sleeps_three_virtual_days(settings: GcpSettings) -> None:
    clock = wf.VirtualClock(start=1_700_000_000.0)

    async def main() -> Any:
        async with wf.worker(GcpWorld(settings, clock=clock)):
            handle = await wf.start(loyalty_reward.offer_loyalty_reward, "rider-7")
            await loyalty_reward.wait_for_event(handle, "sleep_started")
            clock.advance("2d")
            with pytest.raises(TimeoutError):
                await handle.result(timeout=0.3)
            clock.advance("1d")
            return await handle.result(timeout=10)

    reward = run(main())
    assert reward["reward"] == "Ride Credit"
    assert reward["offered_at"].timestamp() == 1_700_000_000.0 + 3 * 86400


@pytest.mark.parametrize(
    ("ride_id", "status"), [("ride-1", "approved"), ("declined-2", "declined")]
)
def test_payment_webhook(settings: GcpSettings, ride_id: str, status: str) -> None:
    async def main() -> tuple[Any, RunState]:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(payment_webhook.validate_payment_method, ride_id)
            return await handle.result(timeout=20), await fold(handle)

    result, state = run(main())
    assert result == {"ride_id": ride_id, "status": status}
    (hook,) = state.hooks.values()
    assert hook.url is not None and hook.url.startswith(f"{settings.public_url}/webhooks/")


def test_research_agent(settings: GcpSettings) -> None:
    async def main() -> Any:
        async with wf.worker(GcpWorld(settings)):
            handle = await wf.start(research_agent.research, "vector databases")
            await research_agent.review(handle)
            return await handle.result(timeout=30)

    outcome = run(main())
    assert outcome["status"] == "published" and outcome["by"] == "ana@example.com"


# -- across processes, as deployed ---------------------------------------------------------------
def _env(settings: GcpSettings, modules: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env.update(
        {
            "WORLDFLOW_WORLD": "gcp",
            "WORLDFLOW_GCP_PROJECT": settings.project,
            "WORLDFLOW_GCP_LOCATION": settings.location,
            "WORLDFLOW_GCP_QUEUE": settings.queue,
            "WORLDFLOW_GCP_SERVICE_URL": settings.service_url or "",
            "WORLDFLOW_GCP_BUCKET": settings.bucket or "",
            "WORLDFLOW_GCP_TASKS_ENDPOINT": settings.tasks_endpoint or "",
            "WORLDFLOW_GCP_SHARED_SECRET": SECRET,
            "WORLDFLOW_GCP_DRAIN_TIMEOUT": "10",
        }
    )
    if modules:
        env["WORLDFLOW_MODULES"] = modules  # the service imports the workflows it serves
    return env


@contextlib.contextmanager
def service(
    settings: GcpSettings,
    port: int,
    modules: str = "examples.hail_ride,examples.research_agent",
    extra: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The Cloud Run stand-in: uvicorn serving worldflow.worlds.gcp.app:app."""
    args = [sys.executable, "-m", "uvicorn", "worldflow.worlds.gcp.app:app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**_env(settings, modules), **(extra or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    out = process.stdout.read().decode() if process.stdout else ""
                    raise AssertionError(f"the service did not start:\n{out}") from None
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)
        process.logs = process.stdout.read().decode() if process.stdout else ""  # type: ignore[attr-defined]
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("example", ["hail_ride", "research_agent"])
def test_example_scripts_run_unchanged_against_a_service_process(
    settings: GcpSettings, example: str
) -> None:
    port = free_port()
    settings = dataclasses.replace(
        settings, service_url=f"http://127.0.0.1:{port}", public_url=None, listen=None
    )
    with service(settings, port) as process:
        done = subprocess.run(
            [sys.executable, "-m", f"examples.{example}"],
            cwd=ROOT,
            env=_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "completed" in done.stdout
    logs: str = process.logs  # type: ignore[attr-defined]
    # The service's logs are Cloud Logging entries; the retry ran there, under its run id.
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert entries and all("severity" in e and "time" in e for e in entries)
    (run_id,) = set(re.findall(r"\brun (wrun_\w+)", done.stdout))
    about_run = [e for e in entries if e.get("run_id") == run_id]
    assert about_run, logs  # a timer or retry of the run came to the service as a task
    assert about_run[0]["logging.googleapis.com/labels"] == {"run_id": run_id}


@pytest.mark.slow
def test_the_cli_starts_a_run_that_the_service_executes(settings: GcpSettings) -> None:
    """``worldflow start`` is a client: it records the run and queues its start; the
    service process runs it; ``worldflow runs show`` reads it from Firestore."""
    port = free_port()
    settings = dataclasses.replace(
        settings, service_url=f"http://127.0.0.1:{port}", public_url=None, listen=None
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worldflow", *args],
            cwd=ROOT,
            env=_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    with service(settings, port):
        started = cli("start", "examples.hail_ride:hail_ride", '"req-43"', "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["id"]
        deadline = time.monotonic() + 30
        while True:
            shown = cli("runs", "show", run_id, "--json")
            assert shown.returncode == 0, shown.stderr
            doc = json.loads(shown.stdout)
            if doc["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert doc["status"] == "completed", doc
    assert doc["result"]["rider"] == "Bo"
    listed = json.loads(cli("runs", "list", "--status", "completed", "--json").stdout)
    assert run_id in json.dumps(listed)


@pytest.mark.slow
@pytest.mark.crash
def test_a_service_killed_mid_step_is_resumed_by_the_queue(
    settings: GcpSettings, tmp_path: Path
) -> None:
    """kill -9 the service while a step runs: Cloud Tasks redelivers the unacknowledged
    task to the next instance, which waits for the dead worker's lease to pass (the
    redelivery is refused meanwhile), then runs the step again as attempt 2."""
    port = free_port()
    settings = dataclasses.replace(
        settings, service_url=f"http://127.0.0.1:{port}", public_url=None, listen=None
    )
    extra = {
        "WORLDFLOW_GCP_HEARTBEAT": "0.3",
        "WORLDFLOW_GCP_LEASE": "1.5",
        "PYTHONPATH": str(Path(__file__).resolve().parent),
    }
    marker = tmp_path / "marks"
    marker.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worldflow", *args],
            cwd=ROOT,
            env={**_env(settings), **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    modules = "gcp_support.crashflows"
    with service(settings, port, modules=modules, extra=extra) as first:
        started = cli("start", f"{modules}:flow", json.dumps(str(marker)), "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["id"]
        deadline = time.monotonic() + 20
        while not list(marker.glob("attempt-1-*")):
            assert time.monotonic() < deadline, "the first attempt never started"
            time.sleep(0.05)
        first.kill()  # mid-step: no result, no acknowledgement
        first.wait()
    with service(settings, port, modules=modules, extra=extra):
        deadline = time.monotonic() + 30
        while True:
            doc = json.loads(cli("runs", "show", run_id, "--json").stdout)
            if doc["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert doc["status"] == "completed", doc
    assert doc["result"] == 2  # the lost attempt counted
    attempts = sorted(p.name.split("-pid-")[0] for p in marker.iterdir())
    assert attempts == ["attempt-1", "attempt-2"]
