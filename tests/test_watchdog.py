"""The watchdog: workflow code that does not await is stopped, and the worker serves on."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow import _watchdog
from worldflow._instance import WorkflowInstance
from worldflow._watchdog import WorkflowBlocked, block_timeout, set_block_timeout
from worldflow._world import Event
from worldflow.worlds.local import LocalWorld

LIMIT = 0.3


@pytest.fixture(autouse=True)
def small_limit() -> Iterator[None]:
    set_block_timeout(LIMIT)
    yield
    set_block_timeout(None)


def spin_for(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


@wf.step
async def add_one(i: int) -> int:
    return i + 1


@wf.workflow(name="test_watchdog.spin")
async def spin() -> None:
    while True:
        pass


@wf.workflow(name="test_watchdog.healthy")
async def healthy(n: int) -> int:
    total = 0
    for _ in range(n):
        total = await add_one(total)
    return total


@wf.workflow(name="test_watchdog.swallows")
async def swallows() -> None:
    while True:
        try:  # noqa: SIM105 - a plain swallowing try is what is tested
            spin_for(10)
        except BaseException:
            pass


@wf.workflow(name="test_watchdog.swallows_and_continues")
async def swallows_and_continues() -> None:
    caught = 0
    while True:
        try:
            try:
                while True:
                    pass
            except:  # noqa: E722 - a bare except, as careless code has
                caught += 1
                continue
        except BaseException:
            caught += 1


@wf.workflow(name="test_watchdog.swallows_then_awaits")
async def swallows_then_awaits() -> int:
    try:
        spin_for(10)
    except BaseException:
        return await add_one(1)  # the run is over: it cannot make commands
    return 0


@wf.workflow(name="test_watchdog.bounded")
async def bounded(seconds: float) -> str:
    spin_for(seconds)
    return "done"


@wf.workflow(name="test_watchdog.sleeps")
async def sleeps(seconds: float) -> str:
    time.sleep(seconds)  # noqa: ASYNC251 - the mistake under test
    return "done"


def _instance(workflow: Any, run_id: str = "run-1") -> WorkflowInstance:
    return WorkflowInstance(run_id, workflow, [], lambda token: f"http://x/{token}")


def _blocked_error(instance: WorkflowInstance) -> dict[str, Any]:
    assert instance.done
    outcome = instance.outcome()
    assert outcome.status == "failed" and outcome.error is not None
    return outcome.error


# -- end to end, on the local world ---------------------------------------------


def test_a_spinning_workflow_fails_and_the_worker_serves_other_runs(tmp_path: Path) -> None:
    async def main() -> tuple[Any, wf.RunFailed, float, list[Event]]:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            began = time.monotonic()
            stuck = await wf.start(spin)
            fine = await wf.start(healthy, 5)
            with pytest.raises(wf.RunFailed) as info:
                await stuck.result(timeout=10)  # woken as soon as the run ends here
            elapsed = time.monotonic() - began
            assert await fine.result(timeout=10) == 5
            return stuck.id, info.value, elapsed, await stuck.events()

    run_id, failed, elapsed, events = asyncio.run(main())
    assert failed.error_type == "worldflow.WorkflowBlocked"
    assert "workflow code must not block: it ran" in failed.message
    assert "without awaiting" in failed.message
    assert "'test_watchdog.spin'" in failed.message and run_id in failed.message
    assert LIMIT <= elapsed < LIMIT + 1.0
    error = events[-1].data["error"]
    assert events[-1].kind == "run_failed"
    assert "in spin" in error["traceback"]  # where the code was when it was stopped


def test_a_workflow_that_swallows_the_interrupt_is_still_stopped(tmp_path: Path) -> None:
    async def main() -> wf.RunFailed:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = await wf.start(swallows)
            fine = await wf.start(healthy, 3)
            assert await fine.result(timeout=10) == 3
            with pytest.raises(wf.RunFailed) as info:
                await run.result(timeout=10)
            return info.value

    failed = asyncio.run(main())
    assert failed.error_type == "worldflow.WorkflowBlocked"
    assert sys.gettrace() is None and sys.getprofile() is None  # the trace function is gone


def test_a_cold_worker_replaying_a_spinning_workflow_stops_it(tmp_path: Path) -> None:
    # The code spins only once it is replayed (as after a deploy of a bad change).
    async def main() -> wf.RunFailed:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = await wf.start(spins_on_replay, "replay-1")
            while "hook_created" not in [e.kind for e in await run.events()]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the log is in the store: polled, as a client would
        SPIN_ON_REPLAY[0] = True
        try:
            async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
                await wf.resume_hook("replay-1", "go")
                with pytest.raises(wf.RunFailed) as info:
                    await run.result(timeout=10)
                return info.value
        finally:
            SPIN_ON_REPLAY[0] = False

    failed = asyncio.run(main())
    assert failed.error_type == "worldflow.WorkflowBlocked"
    assert "'test_watchdog.spins_on_replay'" in failed.message


SPIN_ON_REPLAY = [False]


@wf.workflow(name="test_watchdog.spins_on_replay")
async def spins_on_replay(token: str) -> str:
    await add_one(0)
    while SPIN_ON_REPLAY[0]:
        pass
    return str(await wf.create_hook(token=token))


# -- one instance at a time -------------------------------------------------------


NESTED = pytest.param(
    swallows_and_continues,
    marks=pytest.mark.skipif(
        sys.version_info < (3, 12), reason="3.11 has no sys.monitoring: a documented limit"
    ),
)


@pytest.mark.parametrize("workflow", [spin, swallows, NESTED])
def test_the_pass_is_stopped_and_the_run_fails(workflow: Any) -> None:
    instance = _instance(workflow)
    began = time.monotonic()
    instance.start(1000.0, [[], {}])  # returns: the code was stopped
    assert time.monotonic() - began < 3 * LIMIT + 1.0
    assert isinstance(instance.blocked, WorkflowBlocked)
    error = _blocked_error(instance)
    assert error["type"] == "worldflow.WorkflowBlocked"
    assert "workflow code must not block" in error["message"]
    assert sys.gettrace() is None and sys.getprofile() is None
    instance.close()


def test_code_that_catches_the_interrupt_cannot_act_on_it() -> None:
    instance = _instance(swallows_then_awaits)
    instance.start(1000.0, [[], {}])
    assert instance.take_commands() == []  # its step call raised instead
    assert _blocked_error(instance)["type"] == "worldflow.WorkflowBlocked"


def test_a_replayed_pass_is_watched_too() -> None:
    recorded = [Event("run-1", 3, "step_scheduled", {"cid": 1, "name": add_one.name}, 1000.0)]
    instance = WorkflowInstance("run-1", spins_after_a_step, recorded, lambda token: "")
    instance.start(1000.0, [[], {}])
    assert not instance.done
    instance.feed(Event("run-1", 5, "step_completed", {"cid": 1, "output": 1}, 1001.0))
    assert _blocked_error(instance)["type"] == "worldflow.WorkflowBlocked"
    # nothing more is fed to code that was stopped
    instance.feed(Event("run-1", 6, "step_completed", {"cid": 2, "output": 1}, 1002.0))
    assert instance.divergence is None


@wf.workflow(name="test_watchdog.spins_after_a_step")
async def spins_after_a_step() -> None:
    await add_one(0)
    while True:
        pass


def test_a_blocking_call_is_stopped_when_it_returns() -> None:
    instance = _instance(sleeps)
    instance.start(1000.0, [[2 * LIMIT], {}])
    assert _blocked_error(instance)["type"] == "worldflow.WorkflowBlocked"


def test_the_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _instance(bounded)
    slow.start(1000.0, [[2 * LIMIT], {}])
    assert slow.blocked is not None

    set_block_timeout(0)  # off
    assert block_timeout() is None
    unchecked = _instance(bounded)
    unchecked.start(1000.0, [[2 * LIMIT], {}])
    assert unchecked.outcome().output == "done"

    set_block_timeout(4 * LIMIT)
    roomy = _instance(bounded)
    roomy.start(1000.0, [[2 * LIMIT], {}])
    assert roomy.outcome().output == "done"

    monkeypatch.setenv("WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT", "2.5")
    set_block_timeout(None)  # back to the environment
    assert block_timeout() == 2.5
    monkeypatch.delenv("WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT")
    set_block_timeout(None)
    assert block_timeout() == _watchdog.DEFAULT == 5.0
    monkeypatch.setenv("WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="not a number of seconds"):
        set_block_timeout(None)
    with pytest.raises(ValueError, match="positive"):
        set_block_timeout(-1)


def test_the_watchdog_thread_is_a_daemon() -> None:
    _instance(healthy).start(1000.0, [[1], {}])
    (thread,) = [t for t in threading.enumerate() if t.name == "worldflow-watchdog"]
    assert thread.daemon


# -- the races -------------------------------------------------------------------------


@wf.workflow(name="test_watchdog.jittery")
async def jittery(spins: list[float], swallow: bool) -> int:
    for seconds in spins:
        if swallow:
            try:
                spin_for(seconds)
            except BaseException:
                spin_for(seconds)
        else:
            spin_for(seconds)
        await asyncio.sleep(1)
    return len(spins)


def test_an_interrupt_never_reaches_engine_code() -> None:
    """Passes of random length around a tiny limit: an interrupt lands before, inside
    and just after passes, and must never escape one (nor leave a trace function)."""
    set_block_timeout(0.002)
    switching = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)  # the threads take turns often: more interleavings
    try:
        counts = _stress(2.0)
    finally:
        sys.setswitchinterval(switching)
    leaked, stopped, finished = counts
    assert leaked == 0
    assert stopped and finished  # both kinds of passes happened


def _stress(seconds: float) -> tuple[int, int, int]:
    rng = random.Random(7)
    leaked = stopped = finished = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        spins = [rng.uniform(0, 0.006) for _ in range(5)]
        instance = _instance(jittery)
        try:
            instance.start(0.0, [[spins, rng.random() < 0.3], {}])
            cid = 1
            while not instance.done:
                spin_for(rng.uniform(0, 0.001))  # engine code between passes
                instance.feed(Event("run-1", cid + 10, "sleep_fired", {"cid": cid}, float(cid)))
                cid += 1
            spin_for(rng.uniform(0, 0.003))
        except _watchdog._Interrupt:
            leaked += 1
        assert sys.gettrace() is None and sys.getprofile() is None
        if instance.blocked is not None:
            stopped += 1
        else:
            finished += 1
        instance.close()
    return leaked, stopped, finished


def test_interrupts_arriving_after_the_pass_are_absorbed() -> None:
    """White-box: the watchdog's injection is under way as the pass ends (it had
    checked the pass was active, then lost the processor), and it injects twice."""
    instance = _instance(healthy)
    tid = threading.get_ident()
    armed = threading.Event()

    def watchdog(rec: Any, gen: int) -> None:
        armed.wait(5)
        for _ in range(2):
            time.sleep(0.05)  # the loop thread is waiting in _settle by now
            rec.injected = gen
            _watchdog._inject(tid, _watchdog._Interrupt)
        time.sleep(0.05)
        rec.injecting = 0

    def body() -> None:
        rec = _watchdog._local.rec
        rec.injecting = rec.active  # as if the watchdog had just checked the pass
        threading.Thread(target=watchdog, args=(rec, rec.active), daemon=True).start()
        armed.set()

    _watchdog.run_pass(instance, body)
    spin_for(0.05)  # engine code after the pass: nothing lands here
    rec = _watchdog._local.rec
    assert rec.injecting == 0 and rec.active == 0


def test_code_stopped_in_a_debugger_is_not_interrupted(tmp_path: Path) -> None:
    # A frame of a file named bdb.py on the stack is how a pdb session looks.
    (tmp_path / "bdb.py").write_text("def interaction(wait, seconds):\n    wait(seconds)\n")
    spec = importlib.util.spec_from_file_location("fake_bdb", tmp_path / "bdb.py")
    assert spec is not None and spec.loader is not None
    FAKE_BDB.append(importlib.util.module_from_spec(spec))
    spec.loader.exec_module(FAKE_BDB[0])
    try:
        instance = _instance(at_a_breakpoint)
        instance.start(1000.0, [[2 * LIMIT], {}])
        assert instance.outcome().output == "done"
    finally:
        FAKE_BDB.clear()


FAKE_BDB: list[Any] = []


@wf.workflow(name="test_watchdog.at_a_breakpoint")
async def at_a_breakpoint(seconds: float) -> str:
    FAKE_BDB[0].interaction(spin_for, seconds)
    return "done"
