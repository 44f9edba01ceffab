"""The waterfall's geometry, from the logs of real runs: to scale, in order, inside the chart."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from web_helpers import Store

from worldflow._inspect import RunDetail, inspect_run
from worldflow.web._timeline import MIN_WIDTH, Row, _Scale, _ticks, layout
from worldflow.worlds.local import LocalWorld


def detail_of(store: Store, run_id: str) -> RunDetail:
    async def read() -> RunDetail:
        world = LocalWorld(store.path, read_only=True)
        try:
            info = await world.storage.get_run(run_id)
            assert info is not None
            return inspect_run(info, (await world.storage.read_log(run_id)).events)
        finally:
            await world.close()

    return asyncio.run(read())


def inside(row: Row) -> None:
    for bar in row.bars:
        assert bar.left >= 0.0 and bar.width >= MIN_WIDTH and bar.left + bar.width <= 100.0001


def test_retries_are_bars_with_gaps_between_them(store: Store) -> None:
    detail = detail_of(store, store.retried)
    tl = layout(detail, now=time.time())
    assert tl.start == detail.info.created_at and tl.end == detail.ended_at
    charge, ship = tl.rows
    assert (charge.label, ship.label) == ("web.charge", "web.ship")
    kinds = [b.kind for b in charge.bars if b.kind != "queued"]
    assert kinds == ["retried", "backoff", "retried", "backoff", "completed"]
    spans = [b for b in charge.bars if b.kind != "queued"]
    for before, after in itertools.pairwise(spans):
        # in time order, overlapping only where an instant was widened to MIN_WIDTH
        assert after.left >= before.left + before.width - MIN_WIDTH - 0.01
    span = tl.end - tl.start
    for gap in (b for b in charge.bars if b.kind == "backoff"):
        assert gap.width / 100 * span == pytest.approx(0.3, abs=0.15)  # retry_delay="300ms"
    assert "ConnectionError" in spans[0].label and charge.note == "3 attempts"
    assert ship.bars[-1].left >= spans[-1].left  # the second step comes after the first
    inside(charge)
    inside(ship)


def test_a_pending_sleep_and_hook_run_to_the_right_edge(store: Store) -> None:
    now = time.time()
    (_, sleep) = layout(detail_of(store, store.sleeping), now).rows
    assert sleep.kind == "sleep" and sleep.status == "sleeping" and sleep.label == "sleep 1h 00m"
    assert sleep.bars[0].kind == "sleep-pending"
    assert sleep.bars[0].left + sleep.bars[0].width == pytest.approx(100.0)
    (_, hook) = layout(detail_of(store, store.waiting), now).rows
    assert hook.kind == "hook" and hook.status == "waiting" and hook.label == f"hook {store.token}"
    assert hook.bars[0].left + hook.bars[0].width == pytest.approx(100.0)


def test_ticks_are_round_offsets_across_the_chart(store: Store) -> None:
    tl = layout(detail_of(store, store.retried), now=time.time())
    percents = [p for p, _ in tl.ticks]
    assert tl.ticks[0] == (0.0, "0") and 2 <= len(tl.ticks) <= 7
    assert percents == sorted(percents) and percents[-1] <= 100.0
    assert all(label.startswith("+") for _, label in tl.ticks[1:])


@pytest.mark.parametrize(
    ("span", "labels"),
    [
        (0.9, ["0", "+200ms", "+400ms", "+600ms", "+800ms"]),
        (3.3, ["0", "+1s", "+2s", "+3s"]),
        (802.0, ["0", "+5m 00s", "+10m 00s"]),
        (7200.0, ["0", "+30m 00s", "+1h 00m", "+1h 30m", "+2h 00m"]),
        (3 * 86400.0, ["0", "+12h 00m", "+1d 0h", "+1d 12h", "+2d 0h", "+2d 12h", "+3d 0h"]),
    ],
)
def test_ticks_fall_on_round_offsets(span: float, labels: list[str]) -> None:
    ticks = _ticks(_Scale(1000.0, 1000.0 + span))
    assert [label for _, label in ticks] == labels
