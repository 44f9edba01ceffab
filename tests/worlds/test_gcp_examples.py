"""The seed's examples run unchanged on the GCP world, against the emulators; and the
processes of a deployment: the Cloud Run service, a plain script, a crash.

In-process: each example's workflow on a GCP world (its app served on a local
port). Across processes, as deployed: the Cloud Run service is ``uvicorn
worldflow.worlds.gcp.app:app`` in a process of its own, and a plain script
(``python -m examples.hail_ride``, the CLI) is a client that starts runs the
service executes; retries and timers reach the service through Cloud Tasks. A
service killed mid-step is resumed by the queue's redelivery, and a run whose
process died mid-step with no task pending is adopted by another's sweeper.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
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
from worldflow.worlds.gcp.testing import Service, free_port, service_env, settings_for_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcp_support import emulators

HERE = Path(__file__).resolve().parent

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
def _deployed(settings: GcpSettings) -> tuple[GcpSettings, int]:
    """Settings for a service process on a port of its own (nothing served in the test's)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return dataclasses.replace(settings, service_url=url, public_url=None, listen=None), port


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _service(settings: GcpSettings, port: int, modules: str, **env: str) -> Service:
    return Service(settings, port, modules, cwd=ROOT, env={"PYTHONPATH": str(HERE), **env})


@pytest.mark.slow
@pytest.mark.parametrize("example", ["hail_ride", "research_agent"])
def test_example_scripts_run_unchanged_against_a_service_process(
    settings: GcpSettings, example: str
) -> None:
    settings, port = _deployed(settings)
    with _service(settings, port, "examples.hail_ride,examples.research_agent") as service:
        done = _run(["-m", f"examples.{example}"], service_env(settings))
        assert done.returncode == 0, done.stderr
        assert "completed" in done.stdout
    # The service's logs are Cloud Logging entries; the run's work came to it as tasks.
    entries = [json.loads(line) for line in service.logs.splitlines() if line.startswith("{")]
    assert entries and all("severity" in e and "time" in e for e in entries)
    (run_id,) = set(re.findall(r"\brun (wrun_\w+)", done.stdout))
    about_run = [e for e in entries if e.get("run_id") == run_id]
    assert about_run, service.logs
    assert about_run[0]["logging.googleapis.com/labels"] == {"run_id": run_id}


@pytest.mark.slow
def test_a_plain_script_is_a_client_and_the_service_runs_every_step(settings: GcpSettings) -> None:
    """``wf.start`` + ``run.result()`` in a plain script (``WORLDFLOW_SERVE`` left to the
    World: gcp says a plain process is a client) only records the run and queues its
    start; every step attempt runs in the service's process, none in the script's."""
    settings, port = _deployed(settings)
    with _service(settings, port, "gcp_support.flows") as service:
        env = {**service_env(settings), "PYTHONPATH": str(HERE)}
        done = _run(["-m", "gcp_support.flows", "plain"], env)
        assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["result"] == sum(range(4)) + 100
    pids = {int(worker.split(":")[1]) for worker in out["workers"]}
    assert len(out["workers"]) == 5 and pids == {service.pid}
    assert out["pid"] != service.pid


@pytest.mark.slow
def test_the_cli_starts_a_run_that_the_service_executes(settings: GcpSettings) -> None:
    """``worldflow start`` is a client: it records the run and queues its start; the
    service process runs it; ``worldflow runs show`` reads it from Firestore."""
    settings, port = _deployed(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(["-m", "worldflow", *args], service_env(settings))

    with _service(settings, port, "examples.hail_ride,examples.research_agent"):
        started = cli("start", "examples.hail_ride:hail_ride", '"req-43"', "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["id"]
        doc = _wait_done(cli, run_id, 30)
    assert doc["status"] == "completed", doc
    assert doc["result"]["rider"] == "Bo"
    listed = json.loads(cli("runs", "list", "--status", "completed", "--json").stdout)
    assert run_id in json.dumps(listed)


@pytest.mark.slow
def test_dlq_lists_a_message_no_deployed_module_handles_and_redrives_it(
    settings: GcpSettings,
) -> None:
    """A service that does not import the run's workflow fails its start task: after
    ``WORLDFLOW_MAX_DELIVERIES`` (2) deliveries it keeps the message in Firestore and
    Cloud Tasks forgets it. ``worldflow dlq list`` shows it; once a service that has the
    workflow is deployed, ``worldflow dlq redrive`` sends it again and the run completes."""
    settings, port = _deployed(settings)
    env = {**service_env(settings), "PYTHONPATH": str(HERE)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(["-m", "worldflow", *args], env)

    def letters() -> list[dict[str, Any]]:
        listed = cli("dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        found: list[dict[str, Any]] = json.loads(listed.stdout)
        return found

    with _service(settings, port, "examples.hail_ride", WORLDFLOW_MAX_DELIVERIES="2") as old:
        started = cli("start", "gcp_support.flows:plain", "3", "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["id"]
        deadline = time.monotonic() + 30
        while not (found := letters()):
            if time.monotonic() > deadline:
                old.stop()
                pytest.fail(f"no dead letter within 30 s; the service said:\n{old.logs}")
            time.sleep(0.3)
    (letter,) = found
    assert (letter["run_id"], letter["attempts"]) == (run_id, 2)
    assert "plain.flow" in letter["reason"]
    table = cli("dlq", "list")
    assert letter["id"] in table.stdout and run_id in table.stdout
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "pending"
    # Cloud Tasks forgot the task (answered 200): nothing is left on the queue.
    assert asyncio.run(_queued(settings)) == 0
    unknown = cli("dlq", "redrive", "no-such-letter")
    assert unknown.returncode != 0 and "not dead letters" in unknown.stdout + unknown.stderr
    with _service(settings, port, "gcp_support.flows"):
        redriven = cli("dlq", "redrive", "--all", "--json")
        assert redriven.returncode == 0, redriven.stderr
        assert json.loads(redriven.stdout) == {"redriven": 1}
        doc = _wait_done(cli, run_id, 30)
    assert doc["status"] == "completed", doc
    assert doc["result"] == 0 + 1 + 2 + 100
    assert letters() == []


async def _queued(settings: GcpSettings) -> int:
    from worldflow.worlds.gcp._queue import make_client

    client = make_client(settings)
    try:
        return len((await client.list_tasks(parent=settings.queue_path)).tasks)
    finally:
        await client.transport.close()


def _wait_done(cli: Any, run_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        shown = cli("runs", "show", run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        if doc["status"] == "completed" or time.monotonic() > deadline:
            return doc
        time.sleep(0.3)


FAST_LEASE = {"WORLDFLOW_GCP_HEARTBEAT": "0.3", "WORLDFLOW_GCP_LEASE": "1.5"}


@pytest.mark.slow
@pytest.mark.crash
def test_a_service_killed_mid_step_is_resumed_by_the_queue(
    settings: GcpSettings, tmp_path: Path
) -> None:
    """kill -9 the service while a step runs inside a task's request: Cloud Tasks redelivers
    the unanswered task to the next instance, which (once the dead worker's lease has run
    out) runs the step again as attempt 2."""
    settings, port = _deployed(settings)
    marker = tmp_path / "marks"
    marker.mkdir()
    env = {**service_env(settings), **FAST_LEASE, "PYTHONPATH": str(HERE)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(["-m", "worldflow", *args], env)

    modules = "gcp_support.flows"
    with _service(settings, port, modules, **FAST_LEASE) as first:
        started = cli("start", f"{modules}:flow", json.dumps(str(marker)), "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["id"]
        _wait_for(lambda: list(marker.glob("attempt-1-*")), 20, "the first attempt never started")
        first.kill()  # mid-step: no result, no answer to the task
        killed = time.time()
    with _service(settings, port, modules, **FAST_LEASE):
        doc = _wait_done(cli, run_id, 30)
    assert doc["status"] == "completed", doc
    assert doc["result"] == 2  # the lost attempt counted
    attempts = sorted(p.name.split("-pid-")[0] for p in marker.iterdir())
    assert attempts == ["attempt-1", "attempt-2"]
    # The attempt cut off runs again once the dead worker's lease (1.5 s) has run out,
    # not much later: the new service's start (~2 s here) plus the emulator's retry.
    (second,) = marker.glob("attempt-2-*")
    assert 1.0 < second.stat().st_mtime - killed < 1.5 + 10


@pytest.mark.slow
@pytest.mark.crash
def test_a_run_whose_process_died_mid_step_with_no_task_pending_is_adopted(
    settings: GcpSettings, tmp_path: Path
) -> None:
    """A serving script (``WORLDFLOW_SERVE=always``) starts a run and runs its step itself;
    the only task queued for the run is the start's safety copy, 60 s off. kill -9 the
    script mid-step: the service's sweeper finds the dead worker (its heartbeat ran out)
    and the run it held, and sends it a message; the service runs the step again, long
    before the safety copy is due."""
    settings, port = _deployed(settings)
    marker = tmp_path / "marks"
    marker.mkdir()
    env = {
        **service_env(settings),
        **FAST_LEASE,
        "PYTHONPATH": str(HERE),
        "WORLDFLOW_SERVE": "always",
    }
    with _service(settings, port, "gcp_support.flows", **FAST_LEASE) as service:
        script = subprocess.Popen(
            [sys.executable, "-m", "gcp_support.flows", "crash", str(marker)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert script.stdout is not None
            run_id = json.loads(script.stdout.readline())["run_id"]
            first = _wait_for(lambda: list(marker.glob("attempt-1-*")), 20, "no first attempt")
            assert first[0].name.endswith(f"-pid-{script.pid}")  # the script ran it
            script.kill()
            script.wait()
            killed = time.monotonic()
        finally:
            if script.poll() is None:
                script.kill()
            script.wait()
            if script.stdout is not None:
                script.stdout.close()
        second = _wait_for(lambda: list(marker.glob("attempt-2-*")), 30, "never adopted")
        adopted_after = time.monotonic() - killed
        assert second[0].name.endswith(f"-pid-{service.pid}")

        async def outcome() -> Any:
            async with wf.worker(GcpWorld(settings)):
                return await wf.get_run(run_id).result(timeout=10)

        assert run(outcome()) == 2
    # The lease (1.5 s) and a sweep or two (about a lease each), far from the safety copy.
    assert adopted_after < 15, adopted_after


def _wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found
