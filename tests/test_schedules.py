"""Schedules (``@wf.schedule``): cron times in a zone (daylight saving included), one run
per time however many workers serve, overlap and catch-up policies, pause, resume,
trigger; on the local world with a virtual clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow import schedules as _registry
from worldflow._cron import parse_cron, zone
from worldflow._runtime import Runtime
from worldflow.worlds.local import LocalWorld

UTC = dt.UTC
LONDON = zone("Europe/London")


def _fires(cron: str, start: dt.datetime, count: int, tz: dt.tzinfo = LONDON) -> list[str]:
    parsed, out, t = parse_cron(cron), [], start
    for _ in range(count):
        t = parsed.next_after(t, tz)
        out.append(t.astimezone(tz).strftime("%a %m-%d %H:%M %Z"))
    return out


def test_cron_fields_names_steps_and_day_rules() -> None:
    friday = dt.datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert _fires("0 9 * * MON-FRI", friday, 3) == [
        "Mon 12-07 09:00 GMT",
        "Tue 12-08 09:00 GMT",
        "Wed 12-09 09:00 GMT",
    ]
    assert _fires("*/20 8-9 * * *", friday, 3) == [
        "Sat 12-05 08:00 GMT",
        "Sat 12-05 08:20 GMT",
        "Sat 12-05 08:40 GMT",
    ]
    # Both day fields restricted: either matches (the 13th, or a Friday).
    assert _fires("0 0 13 * FRI", friday, 3) == [
        "Fri 12-11 00:00 GMT",
        "Sun 12-13 00:00 GMT",
        "Fri 12-18 00:00 GMT",
    ]
    assert _fires("@monthly", friday, 1) == ["Fri 01-01 00:00 GMT"]
    assert _fires("0 12 29 FEB *", friday, 1, UTC) == ["Tue 02-29 12:00 UTC"]  # 2028
    for bad, reason in [
        ("0 9 * *", "expected 5 fields"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("0 9 * * MOX", "day of week: 'MOX' is not a number or name"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "runs backwards"),
        ("0 0 31 2 *", "never fires"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_cron(bad).next_after(friday, UTC)
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus")


def test_daylight_saving_gap_and_repeat() -> None:
    """01:30 London: skipped on 29 March 2026 (fires once at 02:00 BST, the end of the
    gap), repeated on 25 October 2026 (fires once, the first 01:30)."""
    spring = _fires("30 1 * * *", dt.datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    assert spring == ["Sun 03-29 02:00 BST", "Mon 03-30 01:30 BST"]
    autumn = parse_cron("30 1 * * *")
    t = autumn.next_after(dt.datetime(2026, 10, 24, 12, tzinfo=UTC), LONDON)
    assert t == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 01:30 BST, the first
    t2 = autumn.next_after(t, LONDON)
    assert t2 == dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # not 01:30 GMT on the 25th
    # Every 30 minutes through the repeated hour: 01:00 and 01:30 once each.
    half = _fires("*/30 1 * * *", dt.datetime(2026, 10, 24, 23, tzinfo=UTC), 3)
    assert half == ["Sun 10-25 01:00 BST", "Sun 10-25 01:30 BST", "Mon 10-26 01:00 GMT"]


# -- end to end -------------------------------------------------------------------------------

FIRED: list[tuple[str, str]] = []


@wf.schedule(cron="0 9 * * MON-FRI", timezone="Europe/London")
@wf.workflow
async def morning_report(scheduled_at: dt.datetime) -> str:
    FIRED.append(("report", scheduled_at.isoformat()))
    return scheduled_at.isoformat()


@wf.schedule(cron="0 * * * *", catch_up="all")
@wf.workflow
async def hourly_all(scheduled_at: dt.datetime) -> str:
    return scheduled_at.isoformat()


@wf.schedule(cron="0 * * * *", catch_up="last")
@wf.workflow
async def hourly_last(scheduled_at: dt.datetime) -> str:
    return scheduled_at.isoformat()


@wf.schedule(cron="0 * * * *", catch_up="none")
@wf.workflow
async def hourly_none(scheduled_at: dt.datetime) -> str:
    return scheduled_at.isoformat()


@wf.schedule(cron="0 * * * *", overlap="skip")
@wf.workflow
async def slow_hourly(scheduled_at: dt.datetime) -> str:
    await wf.sleep("90m")
    return scheduled_at.isoformat()


# Defined at import, as users define them; but a schedule makes every serving runtime
# of the process keep its ticks going, so this module's are on only during its tests.
_MINE = {
    w.name: _registry._SCHEDULES.pop(w.name)
    for w in (morning_report, hourly_all, hourly_last, hourly_none, slow_hourly)
}


@pytest.fixture(autouse=True)
def _these_schedules_only_here() -> Iterator[None]:
    _registry._SCHEDULES.update(_MINE)
    try:
        yield
    finally:
        for name in list(_registry._SCHEDULES):
            if name not in _BEFORE:
                _registry._SCHEDULES.pop(name, None)


_BEFORE = set(_registry._SCHEDULES)

START = dt.datetime(2026, 12, 4, 8, 0, tzinfo=UTC).timestamp()  # a Friday, 08:00 GMT


async def _ids(workflow: Any) -> list[str]:
    page = await wf.list_runs(workflow=workflow.name, limit=500)
    return sorted(r.id for r in page.runs)


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not in {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def _step_to(clock: wf.VirtualClock, when: dt.datetime, step: float = 60) -> None:
    """Move the virtual clock to ``when`` a ``step`` at a time (a minute: each tick
    fires within its ``late_after``, on time)."""
    target = when.timestamp()
    while clock.now() < target:
        clock.set(min(target, clock.now() + step))
        await asyncio.sleep(0.002)


def _id(workflow: Any, when: dt.datetime) -> str:
    return f"{workflow.name}@{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def test_one_run_per_time_with_two_workers_serving(tmp_path: Path) -> None:
    clock = wf.VirtualClock(start=START)

    async def main() -> list[str]:
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            other = Runtime(LocalWorld(tmp_path, clock=clock))  # a second serving process
            await other.start()
            try:
                monday = dt.datetime(2026, 12, 7, 9, tzinfo=UTC)
                # 10-minute steps: each fire is a little late, and still fires (the
                # latest missed time, by the default catch_up="last").
                await _step_to(clock, monday + dt.timedelta(minutes=5), step=600)
                expected = [
                    _id(morning_report, dt.datetime(2026, 12, 4, 9, tzinfo=UTC)),
                    _id(morning_report, monday),
                ]

                async def both_done() -> bool:
                    ids = await _ids(morning_report)
                    if ids != expected:
                        return False
                    statuses = [await wf.get_run(i).status() for i in expected]
                    return statuses == ["completed"] * len(expected)

                await _until(both_done, f"the runs {expected}")
                await asyncio.sleep(0.2)
                return await _ids(morning_report)
            finally:
                await other.close()

    ids = asyncio.run(main())
    assert len(ids) == 2, ids  # one run per time, though two runtimes serve
    assert ids[0].endswith("morning_report@2026-12-04T09:00:00Z")
    assert ids[1].endswith("morning_report@2026-12-07T09:00:00Z")  # the weekend skipped


def test_catch_up_policies_after_downtime(tmp_path: Path) -> None:
    """Nothing serves from 08:05 to 13:05 (five hourly times missed): "all" runs each,
    "last" runs the latest, "none" runs none of them; all go on at 14:00."""
    clock = wf.VirtualClock(start=START)

    async def serve_until(when: dt.datetime) -> None:
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            await asyncio.sleep(0.3)  # the ticks of the next times are set up
            await _step_to(clock, when)
            await asyncio.sleep(0.5)

    async def main() -> dict[str, list[str]]:
        await serve_until(dt.datetime(2026, 12, 4, 8, 5, tzinfo=UTC))
        clock.set(dt.datetime(2026, 12, 4, 13, 5, tzinfo=UTC).timestamp())  # down
        await serve_until(dt.datetime(2026, 12, 4, 14, 5, tzinfo=UTC))
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            await asyncio.sleep(0.5)
            return {
                "all": [i[-9:-4] for i in await _ids(hourly_all)],
                "last": [i[-9:-4] for i in await _ids(hourly_last)],
                "none": [i[-9:-4] for i in await _ids(hourly_none)],
            }

    got = asyncio.run(main())
    assert got["all"] == ["09:00", "10:00", "11:00", "12:00", "13:00", "14:00"]
    assert got["last"] == ["13:00", "14:00"]
    assert got["none"] == ["14:00"]


def test_overlap_skip_pause_resume_trigger(tmp_path: Path) -> None:
    clock = wf.VirtualClock(start=START)

    async def main() -> dict[str, Any]:
        async with wf.worker(LocalWorld(tmp_path, clock=clock)):
            await asyncio.sleep(0.3)
            await _step_to(clock, dt.datetime(2026, 12, 4, 11, 5, tzinfo=UTC))
            await asyncio.sleep(0.3)
            slow = [i[-9:-4] for i in await _ids(slow_hourly)]
            listed = {s.workflow: s for s in await wf.schedules.list_schedules()}
            assert await wf.schedules.pause(hourly_all.name) is True
            assert await wf.schedules.pause(hourly_all.name) is False
            paused = {s.workflow: s for s in await wf.schedules.list_schedules()}
            await _step_to(clock, dt.datetime(2026, 12, 4, 13, 5, tzinfo=UTC))
            await asyncio.sleep(0.3)
            while_paused = [i[-9:-4] for i in await _ids(hourly_all)]
            assert await wf.schedules.resume(hourly_all.name) is True
            await _step_to(clock, dt.datetime(2026, 12, 4, 14, 5, tzinfo=UTC))
            await asyncio.sleep(0.3)
            after = [i[-9:-4] for i in await _ids(hourly_all)]
            manual = await wf.schedules.trigger(hourly_all.name)
            result = await wf.get_run(manual).result(timeout=10)
            return {
                "slow": slow,
                "next": listed[morning_report.name].next_at,
                "paused": (paused[hourly_all.name].paused, paused[hourly_all.name].next_at),
                "while_paused": while_paused,
                "after": after,
                "manual": (manual, result),
            }

    got = asyncio.run(main())
    # 09:00 started and sleeps until 10:30: 10:00 skipped; 11:00 starts again.
    assert got["slow"] == ["09:00", "11:00"]
    assert got["next"] == dt.datetime(2026, 12, 4, 9, tzinfo=UTC) or got["next"] > dt.datetime(
        2026, 12, 4, 11, tzinfo=UTC
    )
    assert got["paused"] == (True, None)
    assert got["while_paused"] == ["09:00", "10:00", "11:00"]  # 12:00 and 13:00 not fired
    assert got["after"] == ["09:00", "10:00", "11:00", "14:00"]  # resumed from the next time
    manual_id, result = got["manual"]
    assert "@manual-" in manual_id and result.startswith("2026-12-04T14:05")


def test_bad_schedules_are_refused_where_they_are_written() -> None:
    with pytest.raises(ValueError, match="expected 5 fields"):
        wf.schedule(cron="every day")
    with pytest.raises(ValueError, match="unknown time zone"):
        wf.schedule(cron="@daily", timezone="Nowhere/Here")
    with pytest.raises(ValueError, match="overlap"):
        wf.schedule(cron="@daily", overlap="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"above @wf\.workflow"):
        wf.schedule(cron="@daily")(lambda: None)  # type: ignore[type-var]

    @wf.workflow
    async def no_args() -> None:
        return None

    with pytest.raises(TypeError, match="scheduled time as its one argument"):
        wf.schedule(cron="@daily")(no_args)


CLI_FLOWS = """
import datetime as dt
import worldflow as wf

@wf.schedule(cron="0 9 * * MON-FRI", timezone="Europe/London")
@wf.workflow
async def nightly(scheduled_at: dt.datetime) -> str:
    return scheduled_at.isoformat()
"""


def test_the_schedules_commands(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "cronflows.py").write_text(CLI_FLOWS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
        "WORLDFLOW_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(tmp_path),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worldflow", "schedules", *args, "--modules", "cronflows"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    (info,) = json.loads(listed.stdout)
    assert info["workflow"] == "cronflows.nightly" and info["paused"] is False
    assert info["next_at"].endswith("09:00:00Z") or "T09:00:00" in info["next_at"]
    assert cli("pause", "cronflows.nightly").returncode == 0
    assert cli("pause", "cronflows.nightly").returncode == 1  # already paused
    (info,) = json.loads(cli("list", "--json").stdout)
    assert info["paused"] is True and info["next_at"] is None
    triggered = cli("trigger", "cronflows.nightly", "--json")
    assert triggered.returncode == 0, triggered.stderr
    assert "@manual-" in json.loads(triggered.stdout)["run_id"]
    missing = cli("trigger", "cronflows.nope")
    assert missing.returncode == 1 and "no schedule for workflow 'cronflows.nope'" in missing.stderr
