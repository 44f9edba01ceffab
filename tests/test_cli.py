"""The ``worldflow`` command: every command in-process through ``main``, and through
``python -m worldflow`` in a real process (a worker stopped by SIGINT/SIGTERM).

Each test works in its own directory with its own data directory and a small
workflow module written there, imported the way the CLI imports it (from the
current directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import worldflow as wf
from worldflow.cli import main
from worldflow.worlds.local import LocalWorld

MODULE = "cliflows"

FLOWS = """
import dataclasses
import datetime
import decimal

import worldflow as wf


@dataclasses.dataclass
class Receipt:
    order_id: str
    total: decimal.Decimal
    at: datetime.datetime


@wf.step
async def charge(order_id: str, amount: float) -> dict:
    return {"receipt": f"r-{order_id}", "amount": amount}


@wf.step(max_retries=0)
async def explode(reason: str) -> None:
    raise ValueError(f"cannot ship: {reason}")


@wf.workflow
async def checkout(order_id: str, amount: float = 1.0) -> dict:
    receipt = await charge(order_id, amount)
    return {"order": order_id, "receipt": receipt["receipt"]}


@wf.workflow
async def doomed(reason: str) -> None:
    await explode(reason)


@wf.workflow
async def sleeper() -> str:
    await wf.sleep("1h")
    return "woke"


@wf.step
def slow_step(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return f"slept {seconds}"


@wf.workflow
async def slow(seconds: float) -> str:
    return await slow_step(seconds)


@wf.workflow
async def approval(order_id: str) -> dict:
    hook = wf.create_hook(token="t1")
    return {"order": order_id, "decision": await hook}


@wf.workflow
async def invoice(order_id: str) -> Receipt:
    at = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc)
    return Receipt(order_id, decimal.Decimal("9.90"), at)


async def helper() -> None:
    pass
"""


class Cli:
    """Runs ``main`` in-process against one data directory and captures what it printed."""

    def __init__(self, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data = data
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()  # drop anything printed before
        code = main(["--data-dir", str(self.data), *argv])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        assert out.count("\n") == 1  # one document, on one line
        return json.loads(out)

    def wait_for(self, run_id: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll ``runs show --json`` until ``ready(doc)``."""
        deadline = time.monotonic() + 15
        while True:
            doc: dict[str, Any] = self.json("runs", "show", run_id)
            if ready(doc):
                return doc
            assert time.monotonic() < deadline, f"gave up waiting; last seen: {doc}"
            time.sleep(0.05)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory holding the workflow module, as the current directory."""
    for name in ("WORLDFLOW_DATA_DIR", "WORLDFLOW_WORLD", "WORLDFLOW_MODULES"):
        monkeypatch.setenv(name, "")  # restored afterwards, whatever main() sets
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / f"{MODULE}.py").write_text(FLOWS)
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop(MODULE, None)


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(project / "data", capsys)


@contextlib.contextmanager
def background_worker(data: Path) -> Iterator[None]:
    """A worker on its own thread and loop, as another process would be."""
    sys.path.insert(0, os.getcwd())
    importlib.import_module(MODULE)
    started = threading.Event()
    failure: list[BaseException] = []
    control: dict[str, Any] = {}

    async def serve() -> None:
        control["loop"] = asyncio.get_running_loop()
        control["stop"] = stop = asyncio.Event()
        async with wf.worker(LocalWorld(data, serve_webhooks=False)):
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, name="test-worker")
    thread.start()
    try:
        assert started.wait(10) and not failure, failure
        yield
    finally:
        if "loop" in control:
            control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(10)
        assert not thread.is_alive()
    assert not failure, failure


# -- start, runs list/show/events ------------------------------------------------------


def test_start_wait_then_inspect_as_json(cli: Cli) -> None:
    started = cli.json("start", f"{MODULE}:checkout", '"o-1"', "2.5", "--wait")
    assert started["workflow"] == f"{MODULE}.checkout"
    assert started["status"] == "completed"
    assert started["result"] == {"order": "o-1", "receipt": "r-o-1"}
    run_id = started["id"]

    listed = cli.json("runs", "list")
    assert listed["cursor"] is None
    [run] = listed["runs"]
    assert run["id"] == run_id
    assert run["workflow"] == f"{MODULE}.checkout"
    assert run["status"] == "completed"
    assert run["result"] == {"order": "o-1", "receipt": "r-o-1"}
    assert run["created_at"].endswith("Z") and run["created_at"] <= run["updated_at"]

    shown = cli.json("runs", "show", run_id)
    assert shown["id"] == run_id
    assert shown["status"] == "completed"
    assert shown["input"] == {"args": ["o-1", 2.5], "kwargs": {}}
    assert shown["result"] == {"order": "o-1", "receipt": "r-o-1"}
    assert "error" not in shown
    [step] = shown["steps"]
    assert step["cid"] == 1
    assert step["name"] == f"{MODULE}.charge"
    assert step["status"] == "completed"
    assert step["attempts"] == 1
    assert step["input"] == {"args": ["o-1", 2.5], "kwargs": {}}
    assert step["output"] == {"receipt": "r-o-1", "amount": 2.5}
    assert step["started_at"] <= step["ended_at"]

    events = cli.json("runs", "events", run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_created" and kinds[-1] == "run_completed"
    assert kinds.index("step_scheduled") < kinds.index("step_completed")
    assert events[0]["data"] == {"workflow": f"{MODULE}.checkout", "input": [["o-1", 2.5], {}]}
    assert events[-1]["data"] == {"output": {"order": "o-1", "receipt": "r-o-1"}}


def test_plain_output_for_people(cli: Cli) -> None:
    code, out, err = cli("start", f"{MODULE}:checkout", '"o-2"', "--wait")
    assert code == 0
    assert json.loads(out) == {"order": "o-2", "receipt": "r-o-2"}  # only the result
    assert "wrun_" in err  # the run id, for the person watching
    run_id = cli.json("runs", "list")["runs"][0]["id"]

    code, out, _ = cli("runs", "list")
    assert code == 0
    [row] = [line for line in out.splitlines() if run_id in line]
    assert f"{MODULE}.checkout" in row and "completed" in row

    code, out, _ = cli("runs", "show", run_id)
    assert code == 0
    assert run_id in out and "completed" in out
    assert f"{MODULE}.charge" in out
    assert '"o-2", 1.0' not in out and '"o-2"' in out  # the input, as given
    assert '"receipt": "r-o-2"' in out  # the result

    code, out, _ = cli("runs", "events", run_id)
    assert code == 0
    assert "run_created" in out and "step_completed" in out and "run_completed" in out
    assert f'{MODULE}.checkout("o-2")' in out


def test_reading_never_imports_the_workflows(cli: Cli) -> None:
    code, _, err = cli("start", f"{MODULE}:invoice", '"o-4"', "--wait", "--id", "i1")
    assert code == 0, err
    del sys.modules[MODULE]
    receipt = {
        "__class__": f"{MODULE}.Receipt",
        "order_id": "o-4",
        "total": "9.90",
        "at": "2024-05-01T12:00:00+00:00",
    }
    assert cli.json("runs", "show", "i1")["result"] == receipt
    assert cli.json("runs", "list")["runs"][0]["result"] == receipt
    assert cli.json("runs", "events", "i1")[-1]["data"] == {"output": receipt}
    raw = cli.json("runs", "events", "i1", "--raw")[-1]["data"]["output"]
    assert raw["$t"] == "dataclass" and raw["c"] == f"{MODULE}:Receipt"
    code, out, _ = cli("runs", "show", "i1")
    assert code == 0 and f'"__class__": "{MODULE}.Receipt"' in out
    assert MODULE not in sys.modules


def test_start_without_wait_prints_only_the_id(cli: Cli) -> None:
    code, out, err = cli("start", f"{MODULE}:checkout", '"o-3"', "--id", "order-3")
    assert (code, out, err) == (0, "order-3\n", "")
    # Starting is idempotent per id.
    assert cli.json("start", f"{MODULE}:checkout", '"o-3"', "--id", "order-3")["id"] == "order-3"
    [run] = cli.json("runs", "list")["runs"]
    assert run["id"] == "order-3"
    assert run["status"] in ("pending", "running")  # nobody serves it yet


def test_failed_run(cli: Cli) -> None:
    code, out, err = cli("start", f"{MODULE}:doomed", '"no stock"', "--wait", "--id", "d1")
    assert code == 1
    assert out == ""
    assert "ValueError: cannot ship: no stock" in err

    shown = cli.json("runs", "show", "d1")
    assert shown["status"] == "failed"
    assert "result" not in shown
    assert shown["error"]["type"] == "ValueError"
    assert shown["error"]["message"] == "cannot ship: no stock"
    assert "cannot ship: no stock" in shown["error"]["traceback"]
    [step] = shown["steps"]
    assert (step["name"], step["status"], step["attempts"]) == (f"{MODULE}.explode", "failed", 1)
    assert step["error"]["type"] == "ValueError"

    code, out, _ = cli("runs", "show", "d1")
    assert code == 0
    assert "error: ValueError: cannot ship: no stock" in out
    assert "Traceback (most recent call last)" in out  # the run's own traceback

    assert [r["id"] for r in cli.json("runs", "list", "--status", "failed")["runs"]] == ["d1"]
    assert cli.json("runs", "list", "--status", "completed")["runs"] == []
    failed = cli.json("runs", "list", "--workflow", f"{MODULE}.doomed")["runs"]
    assert failed[0]["error"]["message"] == "cannot ship: no stock"


def test_list_pages_newest_first(cli: Cli) -> None:
    for n in range(3):
        assert cli("start", f"{MODULE}:checkout", json.dumps(f"o-{n}"), "--id", f"r{n}")[0] == 0
        time.sleep(0.002)  # distinct creation times
    first = cli.json("runs", "list", "--limit", "2")
    assert [r["id"] for r in first["runs"]] == ["r2", "r1"]
    assert first["cursor"]
    second = cli.json("runs", "list", "--limit", "2", "--cursor", first["cursor"])
    assert [r["id"] for r in second["runs"]] == ["r0"]
    assert second["cursor"] is None

    code, out, _ = cli("runs", "list", "--limit", "2")
    assert code == 0 and "r2" in out and "r0" not in out
    assert "--cursor" in out  # how to get the next page


def test_wait_timeout(cli: Cli) -> None:
    code, out, err = cli("start", f"{MODULE}:sleeper", "--timeout", "0.3", "--id", "s0", "--json")
    assert code == 4
    assert json.loads(out) == {"id": "s0", "workflow": f"{MODULE}.sleeper", "status": "running"}
    assert "still running" in err


# -- acting on runs: cancel, hooks ----------------------------------------------------------


def test_cancel_a_sleeping_run(cli: Cli) -> None:
    with background_worker(cli.data):
        assert cli("start", f"{MODULE}:sleeper", "--id", "s1")[:2] == (0, "s1\n")
        sleeping = cli.wait_for("s1", lambda doc: bool(doc["sleeps"]))
        assert sleeping["status"] == "running"
        assert [s["cid"] for s in sleeping["sleeps"]] == [1]
        code, out, _ = cli("runs", "show", "s1")
        assert code == 0 and "sleep #1 until" in out

        code, out, _ = cli("runs", "cancel", "s1")
        assert code == 0
        assert "cancellation requested for run s1" in out
        cancelled = cli.wait_for("s1", lambda doc: doc["status"] != "running")
        assert cancelled["status"] == "cancelled"
        assert "result" not in cancelled and "error" not in cancelled

    code, out, err = cli("runs", "cancel", "s1")
    assert (code, out) == (0, "")
    assert "already ended (cancelled)" in err


def test_cancel_while_start_waits(cli: Cli) -> None:
    """``start --wait`` serves the run itself, and exits 3 when it is cancelled."""
    codes: list[int] = []
    waiter = threading.Thread(
        target=lambda: codes.append(
            main(
                ["--data-dir", str(cli.data), "start", f"{MODULE}:sleeper", "--id", "s2", "--wait"]
            )
        )
    )
    waiter.start()
    try:
        deadline = time.monotonic() + 15
        while not cli.json("runs", "list")["runs"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cli.wait_for("s2", lambda doc: bool(doc["sleeps"]))
        assert cli("runs", "cancel", "s2")[0] == 0
    finally:
        waiter.join(15)
    assert not waiter.is_alive()
    assert codes == [3]
    assert cli.json("runs", "show", "s2")["status"] == "cancelled"


def test_resume_a_hook(cli: Cli) -> None:
    with background_worker(cli.data):
        assert cli("start", f"{MODULE}:approval", '"o-9"', "--id", "a1")[0] == 0
        waiting = cli.wait_for("a1", lambda doc: bool(doc["hooks"]))
        assert [(h["token"], h["received"]) for h in waiting["hooks"]] == [("t1", 0)]
        code, out, _ = cli("runs", "show", "a1")
        assert code == 0 and "hook #1 token 't1'" in out

        assert cli.json("hooks", "resume", "t1", '{"approved": true}') == {
            "token": "t1",
            "run_id": "a1",
        }
        done = cli.wait_for("a1", lambda doc: doc["status"] != "running")
    assert done["status"] == "completed"
    assert done["result"] == {"order": "o-9", "decision": {"approved": True}}
    # The run has ended: its hook is gone.
    code, out, err = cli("hooks", "resume", "t1", "1")
    assert (code, out) == (1, "")
    assert "no hook with token 't1'" in err


# -- following, watching, rerunning, waking --------------------------------------------------


def test_follow_exits_with_the_run_outcome(cli: Cli) -> None:
    with background_worker(cli.data):
        assert cli("start", f"{MODULE}:approval", '"o-5"', "--id", "f1")[0] == 0
        cli.wait_for("f1", lambda doc: bool(doc["hooks"]))
        resumer = threading.Timer(
            0.3, lambda: main(["--data-dir", str(cli.data), "hooks", "resume", "t1", '"yes"'])
        )
        resumer.start()
        try:
            code, out, _ = cli("runs", "show", "f1", "--follow", "--json", "--interval", "0.05")
        finally:
            resumer.join()
        assert code == 0
        resumed, shown = out.splitlines()  # the resumer's line, then the run when it ended
        assert resumed == "resumed hook 't1' of run f1"
        doc = json.loads(shown)
        assert doc["status"] == "completed" and doc["result"] == {"order": "o-5", "decision": "yes"}
        assert doc["waits"][0]["kind"] == "hook" and doc["waits"][0]["received"] == 1

        assert cli("start", f"{MODULE}:sleeper", "--id", "f2")[0] == 0
        code, out, err = cli("runs", "show", "f2", "--follow", "--timeout", "0.3")
        assert code == 4 and "still running" in err
        assert "sleep #1 until" in out  # the view, printed once off a terminal

    assert cli("start", f"{MODULE}:doomed", '"x"', "--wait", "--id", "f3")[0] == 1
    code, out, _ = cli("runs", "show", "f3", "--follow")
    assert code == 1 and "error: ValueError: cannot ship: x" in out


def test_watch_prints_a_page_per_change(cli: Cli) -> None:
    assert cli("start", f"{MODULE}:checkout", '"o-6"', "--wait", "--id", "w1")[0] == 0
    code, out, _ = cli("runs", "list", "--watch", "--json", "--interval", "0.05", "--count", "3")
    assert code == 0
    (line,) = out.splitlines()  # nothing changed between refreshes: one document
    assert [r["id"] for r in json.loads(line)["runs"]] == ["w1"]
    code, out, _ = cli("runs", "list", "--watch", "--interval", "0.05", "--count", "2")
    assert code == 0 and "w1" in out and "completed" in out


def test_rerun_starts_a_new_run_with_the_same_input(cli: Cli) -> None:
    assert cli("start", f"{MODULE}:checkout", '"o-7"', "3", "--wait", "--id", "c1")[0] == 0
    with background_worker(cli.data):
        code, out, err = cli("runs", "rerun", "c1", "--id", "c2", "--wait")
        assert code == 0, err
        assert json.loads(out) == {"order": "o-7", "receipt": "r-o-7"}
        assert cli.json("runs", "show", "c2")["input"] == {"args": ["o-7", 3], "kwargs": {}}
        doc = cli.json("runs", "rerun", "c1")
        assert doc["rerun_of"] == "c1" and doc["id"] not in ("c1", "c2")
        assert cli("start", f"{MODULE}:doomed", '"y"', "--id", "d5")[0] == 0
        cli.wait_for("d5", lambda d: d["status"] == "failed")
        code, _, err = cli("runs", "rerun", "d5", "--wait", "--id", "d6")
        assert code == 1 and "cannot ship: y" in err


def test_wake_a_sleeping_run(cli: Cli) -> None:
    with background_worker(cli.data):
        assert cli("start", f"{MODULE}:sleeper", "--id", "z1")[0] == 0
        cli.wait_for("z1", lambda doc: bool(doc["sleeps"]))
        code, out, _ = cli("sleeps", "wake", "z1", "--position", "2")
        assert code == 1  # no such sleep: nothing is woken
        code, out, _ = cli("sleeps", "wake", "z1")
        assert (code, out) == (0, "woke sleep #1 of run z1\n")
        done = cli.wait_for("z1", lambda doc: doc["status"] == "completed")
        assert done["result"] == "woke"
        assert done["waits"][0]["early"] is True
    code, out, err = cli("sleeps", "wake", "z1")
    assert (code, out) == (1, "")
    assert "has no pending sleep" in err


def test_progress_line_says_what_the_run_is_doing() -> None:
    from worldflow._inspect import inspect_run
    from worldflow._world import Event, RunInfo
    from worldflow.cli._act import progress_line

    events = [
        Event("r", 1, "run_created", {"workflow": "w", "input": [[], {}]}, 0.0),
        Event("r", 2, "run_started", {}, 0.0),
        Event("r", 3, "step_scheduled", {"cid": 1, "name": "a", "input": [[], {}]}, 0.0),
        Event("r", 4, "step_scheduled", {"cid": 2, "name": "b", "input": [[], {}]}, 0.0),
        Event("r", 5, "step_started", {"cid": 1, "attempt": 1, "worker": "x"}, 0.0),
        Event("r", 6, "step_completed", {"cid": 1, "attempt": 1, "output": 1}, 1.0),
        Event("r", 7, "step_started", {"cid": 2, "attempt": 1, "worker": "x"}, 1.0),
        Event("r", 8, "hook_created", {"cid": 3, "token": "tok", "webhook": False}, 1.0),
    ]
    detail = inspect_run(RunInfo("r", "w", "running", 0.0, 1.0, 8), events)
    line = progress_line(detail, 4.2)
    assert line.startswith("running · 1/2 steps done, 1 running · waiting on hook 'tok'")
    assert line.endswith("4.2s")


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["runs", "show", "nope"], 1, "no run with id 'nope'"),
        (["runs", "events", "nope"], 1, "no run with id 'nope'"),
        (["runs", "cancel", "nope"], 1, "no run with id 'nope'"),
        (["hooks", "resume", "nope", "{}"], 1, "no hook with token 'nope'"),
        (["hooks", "resume", "t1", "{oops"], 2, "the payload '{oops' is not valid JSON"),
        (
            ["start", f"{MODULE}:checkout", '"o"', "{oops"],
            2,
            "argument 2 '{oops' is not valid JSON",
        ),
        (["start", f"{MODULE}:checkout", "o-1"], 2, """e.g. '"o-1"'"""),
        (["start", "no_such_module:flow"], 1, "no module named 'no_such_module'"),
        (["start", f"{MODULE}:missing"], 1, f"module '{MODULE}' has no 'missing'"),
        (["start", f"{MODULE}:helper"], 2, "is not a workflow"),
        (["start", MODULE], 2, "expected MODULE:FUNCTION"),
        (["worker", "no_such_module"], 1, "no module named 'no_such_module'"),
        (["runs", "list", "--cursor", "garbage"], 2, "invalid cursor"),
        (["runs", "list", "--status", "bogus"], 2, "invalid choice: 'bogus'"),
        (["runs", "list", "--limit", "0"], 2, "expected a whole number from 1 to 10000"),
        (["start", f"{MODULE}:sleeper", "--timeout", "soon"], 2, "invalid duration 'soon'"),
        (["--world", "bogus", "runs", "list"], 2, "unknown world 'bogus'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["runs", "rerun", "nope"], 1, "no run with id 'nope'"),
        (["sleeps", "wake", "nope"], 1, "no run with id 'nope'"),
        (["runs", "show", "nope", "--follow"], 1, "no run with id 'nope'"),
        (["runs", "show", "x", "--follow", "--interval", "1ms"], 2, "at least 50ms"),
        (["runs", "list", "--watch", "--count", "0"], 2, "expected a whole number from 1 to"),
        (["dlq", "list"], 1, "the local world keeps no dead letters"),
        (["dlq", "redrive", "--all"], 1, "the local world keeps no dead letters"),
        (["dlq", "redrive"], 2, "name the dead letters to send again"),
        (["dlq", "redrive", "x", "--all"], 2, "give IDs or --all, not both"),
    ],
)
def test_errors(cli: Cli, argv: list[str], code: int, message: str) -> None:
    got, out, err = cli(*argv)
    assert (got, out) == (code, "")
    assert message in err


def one_line(err: str) -> str:
    """The one line a failing command writes on stderr."""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (['"o-1"', "2", "3"], "too many positional arguments"),
        ([], "missing a required argument: 'order_id'"),
    ],
    ids=["too-many", "missing"],
)
def test_start_checks_the_arguments_before_starting(cli: Cli, args: list[str], reason: str) -> None:
    for wait in ([], ["--wait"]):
        code, out, err = cli("start", f"{MODULE}:checkout", *args, *wait)
        assert (code, out) == (2, "")
        assert one_line(err) == (
            f"worldflow: error: workflow '{MODULE}.checkout' (order_id, amount=1.0): {reason}\n"
        )
    assert cli.json("runs", "list")["runs"] == []  # nothing was started


# What sys.argv holds for a byte that is not UTF-8 (Python decodes it with surrogateescape).
NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")
HUGE = "9" * 22
DEEP = "[" * 50_000
GARBAGE: list[list[str]] = [
    *(
        ["start", f"{MODULE}:checkout", value]
        for value in (
            DEEP,
            "[" * 600 + "]" * 600,  # JSON parses it; too deep to store
            "9" * 5000,
            "1e400",
            "NaN",
            "-Infinity",
            '"\\ud800"',
            NOT_UTF8,
            f'"{NOT_UTF8}"',
        )
    ),
    ["start", f"{MODULE}:checkout", '"o"', "--id", NOT_UTF8],
    [f"{MODULE}:checkout{NOT_UTF8}"],
    *(
        ["start", f"{MODULE}:checkout", '"o"', "--wait", "--timeout", value]
        for value in (HUGE, "-1", "nan", "inf", "1e400", NOT_UTF8)
    ),
    ["hooks", "resume", "t1", DEEP],
    ["hooks", "resume", "t1", "NaN"],
    ["hooks", "resume", "t1", '{"a": "\\udfff"}'],
    ["hooks", "resume", NOT_UTF8, "1"],
    *(["runs", "list", "--limit", v] for v in (HUGE, "-1", "nan", "inf", "1e3", "١٢", "1_0", "")),
    ["runs", "list", "--watch", "--count", HUGE],
    ["runs", "list", "--watch", "--count", "-5"],
    *(["runs", "list", "--watch", "--interval", v] for v in (HUGE, "nan", "inf", "-1")),
    ["runs", "list", "--cursor", NOT_UTF8],
    ["runs", "list", "--workflow", NOT_UTF8],
    ["runs", "show", NOT_UTF8],
    *(["runs", "show", "x", "--follow", "--timeout", v] for v in (HUGE, "nan", "-1")),
    ["runs", "show", "x", "--follow", "--interval", "inf"],
    ["runs", "events", NOT_UTF8],
    ["runs", "cancel", NOT_UTF8],
    ["runs", "rerun", "x", "--id", NOT_UTF8],
    ["runs", "rerun", "x", "--wait", "--timeout", "nan"],
    *(["sleeps", "wake", "x", "--position", v] for v in (HUGE, "0", "-1", "nan")),
    *(["web", "--port", v] for v in (HUGE, "65536", "-1", "nan", "http")),
    ["web", "--host", NOT_UTF8],
    ["web", "--host", "a\x00b"],
    *(["worker", MODULE, "--grace", v] for v in (HUGE, "nan", "inf", "-1", NOT_UTF8)),
    ["worker", NOT_UTF8],
    ["--world", NOT_UTF8, "runs", "list"],
]


def _garbage_id(argv: list[str]) -> str:
    text = " ".join(argv).encode("ascii", "backslashreplace").decode()
    return text if len(text) <= 60 else text[:57] + "..."


@pytest.mark.parametrize("argv", GARBAGE, ids=[_garbage_id(argv) for argv in GARBAGE])
def test_garbage_arguments_are_usage_errors(cli: Cli, argv: list[str]) -> None:
    if argv[0].startswith(f"{MODULE}:"):
        argv = ["start", *argv]
    code, out, err = cli(*argv)
    assert (code, out) == (2, ""), err
    assert one_line(err).startswith("worldflow: error: ")
    assert len(err) < 1000  # a value is quoted cut short, not whole
    assert cli.json("runs", "list")["runs"] == []  # nothing was started


def test_data_dir_must_be_a_directory(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = project / "notes.txt"
    a_file.write_text("not a directory")
    for data_dir, problem in [
        (a_file, f"{a_file} is a file, not a directory"),
        (a_file / "data", f"{a_file} is a file, so {a_file / 'data'} cannot be a directory"),
    ]:
        for argv in (
            ["runs", "list"],
            ["runs", "show", "r1"],
            ["start", f"{MODULE}:checkout", '"o"'],
            ["worker", MODULE],
        ):
            assert main(["--data-dir", str(data_dir), *argv]) == 2
            out, err = capsys.readouterr()
            assert out == ""
            assert f"argument --data-dir: {problem}" in one_line(err)
    monkeypatch.setenv("WORLDFLOW_DATA_DIR", str(a_file))
    assert main(["runs", "list"]) == 2
    assert capsys.readouterr().err == (
        f"worldflow: error: WORLDFLOW_DATA_DIR: {a_file} is a file, not a directory\n"
    )
    assert a_file.read_text() == "not a directory"


def test_a_directory_without_a_database_says_so(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = project / "empty"
    empty.mkdir()
    for data_dir in (empty, project / "absent"):
        where = f"no worldflow database in {data_dir.resolve()}"
        assert main(["--data-dir", str(data_dir), "runs", "list"]) == 0
        out, err = capsys.readouterr()
        assert out == "" and err == f"worldflow: no runs: {where} (is --data-dir right?)\n"
        assert main(["--data-dir", str(data_dir), "runs", "list", "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out) == {"runs": [], "cursor": None} and where in err
        for argv in (["runs", "show", "r1"], ["runs", "events", "r1"]):
            assert main(["--data-dir", str(data_dir), *argv]) == 1
            out, err = capsys.readouterr()
            assert out == ""
            assert (
                one_line(err)
                == f"worldflow: error: no run with id 'r1' ({where}; is --data-dir right?)\n"
            )
    assert list(empty.iterdir()) == []  # reading created nothing
    assert not (project / "absent").exists()


# -- a corrupt store ----------------------------------------------------------------------------


def corrupt(data: Path, sql: str, *params: str) -> None:
    """Damage the local world's database as a disk or a hand edit might."""
    with contextlib.closing(sqlite3.connect(data / "worldflow.sqlite3")) as db:
        db.execute(sql, params)
        db.commit()


@pytest.fixture
def corrupt_summary(cli: Cli) -> Cli:
    """Two completed runs; the stored summary (runs.output) of ``r-done`` cut short."""
    for run_id, order in (("r-done", "o-1"), ("r-ok", "o-2")):
        code, _, err = cli(
            "start", f"{MODULE}:checkout", json.dumps(order), "--wait", "--id", run_id
        )
        assert code == 0, err
    corrupt(cli.data, """UPDATE runs SET output = '{"trunc' WHERE id = 'r-done'""")
    return cli


def test_a_run_whose_summary_is_corrupt_is_shown_from_its_log(corrupt_summary: Cli) -> None:
    cli = corrupt_summary
    code, out, err = cli("runs", "show", "r-done", "--json")
    assert code == 1
    doc = json.loads(out)
    assert (doc["status"], doc["result"]) == ("completed", {"order": "o-1", "receipt": "r-o-1"})
    assert doc["input"] == {"args": ["o-1"], "kwargs": {}}
    assert "Unterminated string" in doc["unreadable"]
    assert "cannot be read" in one_line(err) and "shown from its event log" in err

    code, out, err = cli("runs", "show", "r-done")
    assert code == 1 and "r-done" in out and "completed" in out and '"receipt": "r-o-1"' in out
    code, out, err = cli("runs", "show", "r-done", "--follow", "--json")
    assert code == 0  # the run's outcome: it completed
    assert json.loads(out)["unreadable"] == doc["unreadable"]
    assert "shown from its event log" in one_line(err)
    code, out, err = cli("runs", "events", "r-done", "--json")
    assert code == 1 and [e["kind"] for e in json.loads(out)][-1] == "run_completed"
    assert "cannot be read" in one_line(err)
    assert cli.json("runs", "show", "r-ok")["result"] == {"order": "o-2", "receipt": "r-o-2"}

    # Not a usage error: the command line was right, the store failed.
    code, out, err = cli("runs", "list")
    assert code != 2
    assert "cannot be read" in one_line(err)


def test_runs_list_shows_the_other_runs_beside_a_corrupt_one(corrupt_summary: Cli) -> None:
    cli = corrupt_summary
    code, out, err = cli("runs", "list", "--json")
    assert code == 0, err
    runs = {r["id"]: r for r in json.loads(out)["runs"]}
    assert runs["r-ok"]["result"] == {"order": "o-2", "receipt": "r-o-2"}
    assert "Unterminated string" in runs["r-done"]["unreadable"]
    assert "result" not in runs["r-done"]
    assert "worldflow runs show r-done" in one_line(err)
    code, out, _ = cli("runs", "list")
    assert code == 0
    [row] = [line for line in out.splitlines() if "r-done" in line]
    assert "completed (unreadable)" in row
    assert "r-ok" in out


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"worldflow {wf.__version__}\n"
    assert main(["runs", "show", "--help"]) == 0
    assert "RUN_ID" in capsys.readouterr().out


# -- real processes ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}


@pytest.mark.slow
def test_python_m_worldflow(cli: Cli) -> None:
    assert cli("start", f"{MODULE}:checkout", '"o-7"', "--wait", "--id", "p1")[0] == 0
    done = subprocess.run(
        [sys.executable, "-m", "worldflow", "runs", "show", "p1", "--json"],
        env={**_env(), "WORLDFLOW_DATA_DIR": str(cli.data)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"order": "o-7", "receipt": "r-o-7"}

    missing = subprocess.run(
        [sys.executable, "-m", "worldflow", "--data-dir", str(cli.data), "runs", "show", "x"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "worldflow: error: no run with id 'x'\n"


@contextlib.contextmanager
def _worker_process(
    cli: Cli, module: str = MODULE, *options: str
) -> Iterator[subprocess.Popen[str]]:
    """``python -m worldflow worker MODULE --json`` on the test's data directory."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worldflow",
            "worker",
            module,
            "--data-dir",
            str(cli.data),
            "--json",
            *options,
        ],
        cwd=cli.data.parent,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        for stream in (worker.stdout, worker.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_worker_process(cli: Cli, stop: signal.Signals) -> None:
    with _worker_process(cli) as worker:
        assert worker.stdout is not None and worker.stderr is not None
        ready = json.loads(worker.stdout.readline())
        assert ready["pid"] == worker.pid
        assert ready["data_dir"] == str(cli.data.resolve())
        assert f"{MODULE}.checkout" in ready["workflows"]

        # Started here and left at once: the worker process carries it out.
        assert cli("start", f"{MODULE}:checkout", '"o-8"', "--id", "w1")[0] == 0
        done = cli.wait_for("w1", lambda doc: doc["status"] == "completed")
        assert done["result"] == {"order": "o-8", "receipt": "r-o-8"}
        assert done["steps"][0]["worker"] == ready["worker_id"]

        worker.send_signal(stop)
        assert worker.wait(15) == 0
        assert worker.stdout.read() == ""
        err = worker.stderr.read()
        assert "serving" in err and f"{MODULE}.checkout" in err and str(cli.data.resolve()) in err
        assert "worker stopped" in err
        assert "Traceback" not in err


@pytest.mark.slow
def test_worker_lets_running_steps_finish_when_stopped(cli: Cli) -> None:
    with _worker_process(cli) as worker:
        assert worker.stdout is not None and worker.stderr is not None
        ready = json.loads(worker.stdout.readline())
        assert cli("start", f"{MODULE}:slow", "1.0", "--id", "g1")[0] == 0
        cli.wait_for(
            "g1", lambda doc: bool(doc["steps"]) and doc["steps"][0]["status"] == "running"
        )
        worker.send_signal(signal.SIGTERM)  # mid-step: the step may finish first
        assert worker.wait(15) == 0
        assert "letting running steps finish" in worker.stderr.read()
        code, out, _ = cli("runs", "show", "g1", "--json")
        assert code == 0
        doc = json.loads(out)
        (step,) = doc["steps"]
        assert (step["status"], step["attempts"], step["worker"]) == (
            "completed",
            1,
            ready["worker_id"],
        )


class _Lines:
    """The lines of a process's stream, read on a thread as they come."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 20) -> str:
        """The first line holding ``needle``, once it has come."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: [line for line in self.lines if needle in line], timeout
            )
        assert found, f"no {needle!r} in: {''.join(self.lines)}"
        return found[0]

    def text(self) -> str:
        """Everything, once the stream has ended."""
        self._reader.join(10)
        return "".join(self.lines)


def _corrupt_run_for_a_worker(cli: Cli) -> None:
    """Run ``c1`` left for a worker, with a log no worker can read."""
    assert cli("start", f"{MODULE}:checkout", '"o-1"', "--id", "c1")[0] == 0
    corrupt(cli.data, """UPDATE events SET data = '{"trunc' WHERE run_id = 'c1'""")


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_worker_shows_warnings_and_errors_on_stderr(cli: Cli, verbose: bool) -> None:
    _corrupt_run_for_a_worker(cli)
    with _worker_process(cli, MODULE, *(["-v"] if verbose else [])) as worker:
        assert worker.stdout is not None and worker.stderr is not None
        json.loads(worker.stdout.readline())
        err = _Lines(worker.stderr)
        line = err.wait_for("run 'c1' cannot be read")
        worker.send_signal(signal.SIGINT)
        assert worker.wait(15) == 0
        text = err.text()
    # The exception's reason on the same line; with -v, its traceback after it.
    reason = (
        "" if verbose else r" \(CorruptLogError: .*Unterminated string.*; -v for the traceback\)"
    )
    expected = rf"\d\d:\d\d:\d\d ERROR worldflow: run 'c1' cannot be read; it is failed{reason}\n"
    assert re.fullmatch(expected, line)
    assert ("Traceback" in text) is verbose  # the traceback only when asked for
    assert "worker stopped" in text
    code, out, _ = cli("runs", "list", "--json")  # its log is unreadable; its summary is not
    assert code == 0
    (shown,) = [r for r in json.loads(out)["runs"] if r["id"] == "c1"]
    assert shown["status"] == "failed" and shown["error"]["type"] == "worldflow.CorruptLogError"


@pytest.mark.slow
def test_worker_logs_through_the_logging_the_user_configured(cli: Cli, project: Path) -> None:
    (project / "clilogged.py").write_text(
        "import logging\n"
        "import sys\n\n"
        "logging.basicConfig(stream=sys.stderr, format='USER %(levelname)s %(name)s: %(message)s')\n"
        f"from {MODULE} import checkout  # noqa: E402, F401\n"
    )
    _corrupt_run_for_a_worker(cli)
    with _worker_process(cli, "clilogged") as worker:
        assert worker.stdout is not None and worker.stderr is not None
        json.loads(worker.stdout.readline())
        err = _Lines(worker.stderr)
        err.wait_for("run 'c1' cannot be read")
        worker.send_signal(signal.SIGINT)
        assert worker.wait(15) == 0
        text = err.text()
    loads = [line for line in text.splitlines() if "run 'c1' cannot be read" in line]
    # Each record once, through the user's handler only.
    assert loads == ["USER ERROR worldflow: worldflow: run 'c1' cannot be read; it is failed"]


def test_runs_prune_deletes_only_runs_that_ended_long_ago(cli: Cli) -> None:
    assert cli("start", f"{MODULE}:checkout", '"o-old"', "--id", "old", "--wait")[0] == 0
    assert cli("start", f"{MODULE}:checkout", '"o-new"', "--id", "new", "--wait")[0] == 0
    corrupt(cli.data, "UPDATE runs SET updated_at = updated_at - 40 * 86400 WHERE id = 'old'")
    code, out, err = cli("runs", "prune", "--older-than", "30d", "--json")
    assert code == 0, err
    assert json.loads(out)["deleted"] == 1
    ids = [r["id"] for r in cli.json("runs", "list")["runs"]]
    assert ids == ["new"]
    assert cli("runs", "prune", "--older-than", "soon")[0] == 2
