"""``worldflow runs stream RUN_ID NAME`` and ``worldflow runs list --tag KEY=VALUE`` on the
local world, in-process through ``main``; a stream followed live from a thread while
a worker writes it."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.cli import main
from worldflow.testing import _workflows_streams as s
from worldflow.worlds.local import LocalWorld


def cli(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", str(data), *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def make_runs(data: Path) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with wf.worker(LocalWorld(data)):
            a = await wf.start(s.stream_tokens, "t", 5, id="r-a", tags={"customer": "c-42"})
            b = await wf.start(s.plain, "t", id="r-b", tags={"customer": "c-7", "tier": "gold"})
            c = await wf.start(s.plain, "u", id="r-c", tags={"customer": "c-42", "tier": "gold"})
            for run in (a, b, c):
                await run.result(timeout=10)
            return {"a": a.id, "b": b.id, "c": c.id}

    return asyncio.run(go())


def test_runs_list_by_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_runs(data)
    code, out, _ = cli(capsys, data, "runs", "list", "--tag", "customer=c-42", "--json")
    assert code == 0
    runs = json.loads(out)["runs"]
    assert sorted(r["id"] for r in runs) == ["r-a", "r-c"]
    assert {r["id"]: r["tags"] for r in runs}["r-c"] == {"customer": "c-42", "tier": "gold"}
    code, out, _ = cli(
        capsys, data, "runs", "list", "--tag", "customer=c-42", "--tag", "tier=gold", "--json"
    )
    assert [r["id"] for r in json.loads(out)["runs"]] == ["r-c"]
    code, out, _ = cli(capsys, data, "runs", "list", "--tag", "customer=c-42")
    assert code == 0 and "r-a" in out and "r-b" not in out
    code, _, err = cli(capsys, data, "runs", "list", "--tag", "customer")
    assert code == 2 and "a tag filter is KEY=VALUE, got 'customer'" in err
    code, _, err = cli(capsys, data, "runs", "list", "--tag", "bad key=x")
    assert code == 2 and "--tag: invalid tag key 'bad key'" in err


def test_runs_stream_prints_every_chunk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_runs(data)
    code, out, _ = cli(capsys, data, "runs", "stream", "r-a", "tokens")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [{"i": i, "text": f"tok-{i}"} for i in range(5)]
    code, out, _ = cli(capsys, data, "runs", "stream", "r-a", "tokens", "--start", "3", "--json")
    doc = json.loads(out)
    assert doc["next"] == 5 and [c["i"] for c in doc["chunks"]] == [3, 4]
    code, out, _ = cli(capsys, data, "runs", "stream", "r-b", "tokens", "--json")
    assert code == 0 and json.loads(out)["chunks"] == []
    code, _, err = cli(capsys, data, "runs", "stream", "nope", "tokens")
    assert code == 1 and "no run 'nope'" in err


def test_runs_stream_follows_a_live_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI reads while a worker on another thread writes; it ends when the run does."""
    data = tmp_path / "data"
    gate = s.GATES["cli"] = threading.Event()
    started = threading.Event()
    failure: list[BaseException] = []

    def worker() -> None:
        async def go() -> None:
            async with wf.worker(LocalWorld(data)):
                run = await wf.start(s.live_stream, "cli", 3, 2, id="r-live")
                started.set()
                await run.result(timeout=30)

        try:
            asyncio.run(go())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert started.wait(10)
        threading.Timer(1.0, gate.set).start()  # the rest comes while the CLI follows
        code, out, _ = cli(capsys, data, "runs", "stream", "r-live", "live", "--interval", "0.1")
    finally:
        gate.set()
        thread.join(30)
        s.GATES.pop("cli", None)
    assert not failure, failure
    assert code == 0
    assert out.splitlines() == ["0", "1", "2", "3", "4"]
