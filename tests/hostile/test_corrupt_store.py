"""Corrupt rows in the local world's store: one bad run never hides or breaks another,
and a run whose log cannot be read ends failed, saying which event and why."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow.testing import _workflows as w
from worldflow.worlds.local import LocalWorld


def _sql(tmp_path: Path, sql: str, *params: Any) -> None:
    db = sqlite3.connect(tmp_path / "worldflow.sqlite3")
    db.execute(sql, params)
    db.commit()
    db.close()


def _finished_runs(tmp_path: Path, count: int) -> list[str]:
    async def main() -> list[str]:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            runs = [await wf.start(w.sequential, f"c{i}", 2) for i in range(count)]
            for run in runs:
                await run.result(timeout=10)
            return [run.id for run in runs]

    return asyncio.run(main())


def test_one_corrupt_row_does_not_break_the_listing(tmp_path: Path) -> None:
    ids = _finished_runs(tmp_path, 3)
    _sql(tmp_path, "UPDATE runs SET output = '{\"trunc' WHERE id = ?", ids[1])

    async def main() -> Any:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            page = await wf.list_runs(limit=10)
            bad = wf.get_run(ids[1])
            with pytest.raises(wf.CorruptLogError, match=ids[1]):
                await bad.result(timeout=1)
            return {info.id: info for info in page.runs}

    listed = asyncio.run(main())
    assert set(listed) == set(ids)
    assert listed[ids[1]].unreadable and "not valid JSON" in listed[ids[1]].unreadable
    assert ids[1] in listed[ids[1]].unreadable
    assert listed[ids[0]].unreadable is None and listed[ids[0]].output == 1


def test_a_deeply_nested_stored_event_is_a_corrupt_log_naming_its_place(tmp_path: Path) -> None:
    (run_id,) = _finished_runs(tmp_path, 1)
    _sql(
        tmp_path,
        "UPDATE events SET data = ? WHERE run_id = ? AND seq = 3",
        "[" * 100_000 + "]" * 100_000,
        run_id,
    )

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            with pytest.raises(wf.CorruptLogError, match=rf"{run_id}.*event 3.*nested too deeply"):
                await wf.get_run(run_id).events()

    asyncio.run(main())


def test_json_numbers_too_large_for_a_float_are_refused(tmp_path: Path) -> None:
    (run_id,) = _finished_runs(tmp_path, 1)
    _sql(
        tmp_path,
        "UPDATE events SET data = ? WHERE run_id = ? AND seq = 3",
        json.dumps({"cid": 1, "name": "x", "input": 1}).replace("1}", "1e400}"),
        run_id,
    )

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            with pytest.raises(wf.CorruptLogError, match="too large"):
                await wf.get_run(run_id).events()

    asyncio.run(main())


def test_a_run_with_a_corrupt_event_ends_failed_and_says_why(tmp_path: Path) -> None:
    async def start() -> str:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = await wf.start(w.offer_loyalty_reward, "rider-c")  # sleeps three days
            for _ in range(500):
                if any(e.kind == "sleep_started" for e in await run.events()):
                    return run.id
                await asyncio.sleep(0.01)
        raise AssertionError("never slept")

    run_id = asyncio.run(start())
    _sql(tmp_path, "UPDATE events SET kind = 'no_such_kind' WHERE run_id = ? AND seq = 2", run_id)

    async def wake() -> Any:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            run = wf.get_run(run_id)
            await run.wake()
            with pytest.raises(wf.RunFailed) as info:
                await run.result(timeout=10)
            return info.value, await run.status()

    error, status = asyncio.run(wake())
    assert status == "failed"
    assert error.error_type == "worldflow.CorruptLogError"
    assert run_id in error.message and "event 2" in error.message
    assert "no_such_kind" in error.message
