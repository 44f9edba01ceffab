"""Golden histories: event logs recorded once, replayed against today's code.

They pin the log format and the replay semantics (including asyncio.wait_for,
which differs between Python 3.11 and 3.12+) on every supported Python.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import worldflow as wf
from worldflow._world import Event
from worldflow.testing import (
    _workflows,  # noqa: F401 - registers the recorded workflows
    dump_log,
    load_log,
    replay_log,
)

GOLDEN = Path(__file__).parent / "golden"
HISTORIES = sorted(p for p in GOLDEN.glob("*.json") if p.stem != "nondeterministic")


def load(path: Path) -> list[Event]:
    return load_log(path)


def test_there_are_histories() -> None:
    assert len(HISTORIES) >= 8


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
def test_golden_history_replays(path: Path) -> None:
    state = replay_log(load(path))
    assert state.status == "completed"


def test_changed_code_does_not_replay() -> None:
    with pytest.raises(wf.NonDeterminismError) as info:
        replay_log(load(GOLDEN / "nondeterministic.json"))
    message = str(info.value)
    assert "command #2" in message
    assert "charge_card" in message and "assign_driver" in message


def test_a_changed_result_is_caught() -> None:
    events = load(GOLDEN / "hail_ride.json")
    last = events[-1]
    assert last.kind == "run_completed"
    tampered = {**last.data, "output": {"receipt": "someone else"}}
    events[-1] = Event(last.run_id, last.seq, last.kind, tampered, last.at)
    with pytest.raises(wf.NonDeterminismError, match="replaying its log ends"):
        replay_log(events)


def test_corrupt_log_is_reported_with_its_position() -> None:
    events = load(GOLDEN / "hail_ride.json")
    del events[4]
    with pytest.raises(wf.CorruptLogError, match="densely numbered"):
        replay_log(events)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    events = load(GOLDEN / "hail_ride.json")
    dump_log(events, tmp_path / "log.json")
    assert load_log(tmp_path / "log.json") == events
