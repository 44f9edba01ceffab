"""Record the golden event logs in this folder (run by hand: python tests/golden/record.py).

Each file is one finished run of a workflow from ``worldflow.testing._workflows``;
tests/test_golden.py replays them against the current code on every Python.
Re-record only when a log format change is intended, and say so in the commit.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import worldflow as wf
from worldflow.testing import _workflows as w
from worldflow.testing._harness import Harness
from worldflow.worlds.local import LocalWorld

HERE = Path(__file__).parent


async def record() -> None:
    clock = wf.VirtualClock(start=1_800_000_000.0)
    data = tempfile.mkdtemp()
    async with Harness(lambda: LocalWorld(data, clock=clock)) as h:
        runs: dict[str, Any] = {}
        runs["hail_ride"] = await wf.start(w.hail_ride, "golden", "req-1", id="golden-hail")
        runs["fan_out"] = await wf.start(w.fan_out, "golden", 5, id="golden-fan-out")
        runs["retrying"] = await wf.start(w.retrying_caught, "golden", 10, id="golden-retry")
        runs["metadata"] = await wf.start(w.metadata_workflow, id="golden-metadata")
        for run in runs.values():
            await run.result(timeout=10)

        run = await wf.start(w.hook_with_timeout, "golden-wait", 60, id="golden-wait-for-timeout")
        await h.wait_event(run, "sleep_started")
        h.advance("60s")
        await run.result(timeout=10)
        runs["wait_for_timeout"] = run

        run = await wf.start(w.hook_with_timeout, "golden-hook", 60, id="golden-wait-for-hook")
        await h.wait_event(run, "sleep_started")
        await wf.resume_hook("golden-hook", {"ok": True})
        await run.result(timeout=10)
        runs["wait_for_hook"] = run

        run = await wf.start(w.race_hook_and_sleep, "golden-race", id="golden-race")
        await h.wait_event(run, "sleep_started")
        h.advance("1d")
        await run.result(timeout=10)
        runs["race"] = run

        run = await wf.start(w.many_payloads, "golden-many", 3, id="golden-payloads")
        await h.wait_event(run, "hook_created")
        for i in range(3):
            await wf.resume_hook("golden-many", i)
        await run.result(timeout=10)
        runs["payloads"] = run

        w.CALLS.clear()
        for name, run in runs.items():
            events = [
                {"seq": e.seq, "kind": e.kind, "at": e.at, "data": _scrub(e.data)}
                for e in await run.events()
            ]
            _write(name, run.id, events)
            if name == "hail_ride":
                # The same log, but the code now calls another step second: must not replay.
                changed = json.loads(json.dumps(events))
                for event in changed:
                    if event["kind"] == "step_scheduled" and event["data"]["cid"] == 2:
                        event["data"]["name"] = "worldflow.testing._workflows.charge_card"
                _write("nondeterministic", run.id, changed)


def _scrub(value: Any) -> Any:
    """Drop what depends on the machine that recorded (paths in tracebacks, worker names)."""
    if isinstance(value, dict):
        return {
            k: ("" if k == "traceback" else "worker-1" if k == "worker" else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _write(name: str, run_id: str, events: list[dict[str, Any]]) -> None:
    document = {"run_id": run_id, "events": events}
    (HERE / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"recorded {name}: {len(events)} events")


if __name__ == "__main__":
    asyncio.run(record())
