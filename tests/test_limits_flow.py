"""Concurrency and rate limits: rate strings, the limiter's fold, and on the local world
a slot left by a process that died, and a real-clock rate (slow)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow import _limits_flow
from worldflow._limits_flow import (
    LIMIT_RELEASED,
    LIMIT_REQUESTED,
    LimiterLog,
    Limiters,
    generation_id,
    limiter_id,
)
from worldflow._limits_spec import Rate, parse_rate
from worldflow._runtime import Runtime
from worldflow._world import Event
from worldflow.worlds.local import LocalWorld


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("10/s", 10, 1.0),
        ("50/m", 50, 60.0),
        ("1000/h", 1000, 3600.0),
        ("5/d", 5, 86400.0),
        ("3/10s", 3, 10.0),
        (" 7 / min ", 7, 60.0),
        ("1/1h30m", 1, 5400.0),
    ],
)
def test_rates(text: str, count: int, period: float) -> None:
    assert parse_rate(text) == Rate(count, period)


@pytest.mark.parametrize("text", ["10/x", "0/s", "ten/s", "10", "", "/s", "-1/s", "10/-1s", "1/0s"])
def test_bad_rates_quote_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="rate_limit") as info:
        parse_rate(text)
    assert repr(text) in str(info.value)


def _fold(*events: tuple[str, dict[str, Any], float]) -> LimiterLog:
    lg = LimiterLog("wf-limit-x")
    lg.apply(Event(lg.id, 1, "limiter_opened", {"scope": "s", "key": ""}, 0.0))
    for seq, (kind, data, at) in enumerate(events, start=2):
        lg.apply(Event(lg.id, seq, kind, data, at))
    return lg


def test_slots_go_in_request_order_and_are_never_taken_back() -> None:
    req = [(LIMIT_REQUESTED, {"holder": h, "run": h}, 0.0) for h in "abcd"]
    lg = _fold(*req)
    assert lg.holders(2) == ["a", "b"]
    assert not lg.granted("c", 2)
    lg = _fold(*req, (LIMIT_RELEASED, {"holders": ["b"]}, 1.0))
    assert lg.holders(2) == ["a", "c"]  # c moves up; a keeps its slot
    # a request seen again (a redelivery, a replay) changes nothing
    lg = _fold(*req, (LIMIT_REQUESTED, {"holder": "a", "run": "a"}, 2.0))
    assert list(lg.active) == ["a", "b", "c", "d"]


def test_rate_turns_are_evenly_spaced() -> None:
    req = [(LIMIT_REQUESTED, {"holder": f"h{i}", "run": "r", "every": 0.1}, 5.0) for i in range(30)]
    lg = _fold(*req, (LIMIT_REQUESTED, {"holder": "late", "run": "r", "every": 0.1}, 100.0))
    turns = [lg.grant_at[f"h{i}"] for i in range(30)]
    assert turns[0] == 5.0
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(turns))
    assert lg.grant_at["late"] == 100.0  # an idle limiter does not bank turns (no burst)


@wf.workflow(name="test-limits.one_at_a_time", concurrency=wf.Limit(1, key=lambda tag: tag))
async def one_at_a_time(tag: str) -> str:
    return tag


def test_a_slot_left_by_a_dead_process_is_given_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run ends but its process 'dies' before releasing its slot: the next run
    of the key, looking again after the World's lease (1 s here), finds the holder ended,
    releases it and starts."""

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False, lease=1.0)):
            with monkeypatch.context() as m:

                async def no_release(*args: Any, **kwargs: Any) -> None:
                    return None

                m.setattr(Limiters, "release", no_release)
                first = await wf.start(one_at_a_time, "k")
                assert await first.result(timeout=10) == "k"
            second = await wf.start(one_at_a_time, "k")
            await asyncio.sleep(0.3)
            assert await second.status() == "pending"  # the slot looks held
            assert await second.result(timeout=10) == "k"

    asyncio.run(main())


def test_a_limiter_log_moves_on_to_short_generations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 8 events a generation, 30 runs of one key (60+ events) go through several
    generations; the limit holds throughout (one run at a time, in start order); each
    generation is short; a process new to the limiter starts from the newest one and
    reads nothing older."""
    monkeypatch.setattr(_limits_flow, "LOG_EVENTS", 8)
    lid = limiter_id("workflow:test-limits.one_at_a_time", "gens")

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            runs = [await wf.start(one_at_a_time, "gens") for _ in range(30)]
            for run in runs:
                assert await run.result(timeout=20) == "gens"
            spans = []
            for run in runs:
                events = await run.events()
                spans.append((events[1].at, events[-1].at))
            for (_, end), (begin, _) in itertools.pairwise(spans):
                assert begin >= end  # one at a time, in start order
            gens = 1
            while True:
                try:
                    await wf.get_run(generation_id(lid, gens + 1)).status()
                except wf.RunNotFound:
                    break
                gens += 1
            assert gens >= 5
            for g in range(1, gens + 1):
                assert len(await wf.get_run(generation_id(lid, g)).events()) <= 9
            read: list[str] = []
            cold = Runtime(LocalWorld(tmp_path, serve_webhooks=False))
            await cold.start()
            try:
                original = cold.backend.read_events

                async def counting(run_id: str, after_seq: int = 0) -> Any:
                    read.append(run_id)
                    return await original(run_id, after_seq)

                cold.backend.read_events = counting  # type: ignore[method-assign]
                lims = _limits_flow.limiters(cold)
                lg = await lims._synced(lid, "workflow:test-limits.one_at_a_time", "gens")
                assert lg.gen == gens and not lg.active
                assert set(read) == {generation_id(lid, gens)}
            finally:
                await cold.close()

    asyncio.run(main())


@wf.step(name="test-limits.tick", rate_limit="10/s")
async def tick(i: int) -> int:
    return i


@wf.workflow(name="test-limits.ticks")
async def ticks(first: int, n: int) -> int:
    return sum(await asyncio.gather(*(tick(first + i) for i in range(n))))


@pytest.mark.slow
def test_rate_on_the_real_clock_across_two_workers(tmp_path: Path) -> None:
    """100 attempts at 10/s on the wall clock, two workers serving: turns 0.1 s apart
    (no 1 s window with more than 10), no start before its turn, >= 9.9 s from the first
    start to the last. A start lags its turn by the queue's delivery (printed with -s;
    tens of ms on a loaded machine), so starts may bunch by that much, never more."""

    async def main() -> list[Event]:
        async with wf.worker(LocalWorld(tmp_path, serve_webhooks=False)):
            other = Runtime(LocalWorld(tmp_path, serve_webhooks=False))
            await other.start()
            try:
                runs = [await wf.start(ticks, 25 * k, 25) for k in range(4)]
                for k, run in enumerate(runs):
                    assert await run.result(timeout=60) == sum(range(25 * k, 25 * k + 25))
                return [e for run in runs for e in await run.events()]
            finally:
                await other.close()

    events = asyncio.run(main())
    started = [e for e in events if e.kind == "step_started"]
    starts = sorted(e.at for e in started)
    turns = sorted(e.data["granted"] for e in started)
    assert len(starts) == 100
    assert starts[-1] - starts[0] >= 9.9 - 1e-3
    for a, b in zip(turns, turns[10:], strict=False):
        assert b - a >= 1.0 - 1e-6
    lags = sorted(e.at - e.data["granted"] for e in started)
    print(f"starts lag their turns by {lags[0]:.4f} .. {lags[-1]:.4f} s (median {lags[50]:.4f})")
    closest = min(b - a for a, b in zip(starts, starts[10:], strict=False))
    print(f"the closest 11 starts spanned {closest:.4f} s")
    assert lags[0] >= -1e-3  # never before its turn
    assert closest >= 1.0 - lags[-1] - 1e-3  # bunched by no more than the largest lag
    assert lags[-1] < 2.0  # a sanity bound: the lag is the delivery of a due message


@pytest.mark.slow
def test_the_customer_sync_example() -> None:
    """examples/customer_sync.py: one sync per customer at a time, 18 pushes at 5/s."""
    import importlib
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # examples/ is not installed: import it from the checkout
        sys.path.insert(0, root)
    example = importlib.import_module("examples.customer_sync")
    spans = asyncio.run(example.demo())
    for customer in ("c0", "c1"):
        mine = sorted((s, e) for c, s, e in spans if c == customer)
        assert all(b[0] >= a[1] for a, b in itertools.pairwise(mine))
    assert max(e for _, _, e in spans) >= 17 / 5  # 18 pushes, spaced 0.2 s
