"""RunState: the fold of an event log, full (for tools) and lean (the engine's copy)."""

from __future__ import annotations

import pytest

import worldflow as wf
from worldflow._state import RunState
from worldflow._world import Event

BIG = "x" * 100_000


def log(n_steps: int) -> list[Event]:
    events = [
        Event("r", 1, "run_created", {"workflow": "w", "input": [[], {}]}, 1.0),
        Event("r", 2, "run_started", {}, 1.0),
    ]
    for cid in range(1, n_steps + 1):
        for kind, data in (
            ("step_scheduled", {"cid": cid, "name": "s", "input": [[BIG], {}]}),
            ("step_started", {"cid": cid, "attempt": 1, "worker": "w1", "lease_until": None}),
            ("step_completed", {"cid": cid, "attempt": 1, "output": BIG}),
        ):
            events.append(Event("r", len(events) + 1, kind, data, 2.0))
    events.append(
        Event(
            "r",
            len(events) + 1,
            "step_scheduled",
            {"cid": n_steps + 1, "name": "s", "input": [[1], {}]},
            3.0,
        )
    )
    return events


def test_full_state_keeps_every_step() -> None:
    state = RunState.from_events("r", log(3))
    assert len(state.steps) == 4 and state.steps[1].output == BIG
    assert state.commands[0].data["input"] == [[BIG], {}]
    assert list(state.open_steps) == [4]


def test_lean_state_forgets_what_running_does_not_need() -> None:
    state = RunState.from_events("r", log(3), lean=True)
    assert list(state.steps) == [4]  # ended steps are gone, the open one stays
    assert state.steps[4].input == [[1], {}]  # needed to run it again
    assert all("input" not in e.data for e in state.commands)
    assert [e.data["name"] for e in state.commands] == ["s"] * 4  # what replay checks


def test_out_of_order_and_unknown_events_are_corrupt() -> None:
    events = log(1)
    with pytest.raises(wf.CorruptLogError, match="follows event"):
        RunState.from_events("r", [events[0], events[2]])
    bad = Event("r", 2, "step_teleported", {}, 1.0)
    with pytest.raises(wf.CorruptLogError, match="unknown kind 'step_teleported'"):
        RunState.from_events("r", [events[0], bad])
    orphan = Event("r", 2, "step_completed", {"cid": 9, "output": 1}, 1.0)
    with pytest.raises(wf.CorruptLogError, match="never scheduled"):
        RunState.from_events("r", [events[0], orphan])
    malformed = Event("r", 2, "step_scheduled", {"name": "s"}, 1.0)
    with pytest.raises(wf.CorruptLogError, match="malformed"):
        RunState.from_events("r", [events[0], malformed])
