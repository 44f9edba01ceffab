"""Remote steps (worldflow._remote): the option's bad input, the switch, the rule that
decides a failed attempt's event, and where a replay's new code begins."""

from __future__ import annotations

import pytest

import worldflow as wf
from worldflow._definitions import StepOptions
from worldflow._remote import ENV, chosen, failure_event, fresh_from
from worldflow._world import Event


@pytest.mark.parametrize("bad", ["yes", 1, 0, [True]])
def test_remote_must_be_a_bool_or_none(bad: object) -> None:
    with pytest.raises(ValueError, match=r"remote must be True, False or None, got"):
        wf.step(remote=bad)  # type: ignore[call-overload]


def test_the_option_wins_over_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert not chosen(StepOptions())
    assert chosen(StepOptions(remote=True))
    monkeypatch.setenv(ENV, "1")
    assert chosen(StepOptions())
    assert not chosen(StepOptions(remote=False))
    monkeypatch.setenv(ENV, "0")
    assert not chosen(StepOptions())


def test_failure_event_retries_then_fails() -> None:
    options = StepOptions(max_retries=1, retry_delay=2.0)
    kind, data = failure_event(options, 3, 1, ValueError("boom"), 100.0)
    assert kind == "step_retrying" and data["retry_at"] == 102.0 and data["cid"] == 3
    kind, data = failure_event(options, 3, 2, ValueError("boom"), 100.0)
    assert kind == "step_failed" and data["error"]["message"] == "boom"
    kind, _ = failure_event(options, 3, 1, wf.FatalError("no"), 100.0)
    assert kind == "step_failed"
    kind, data = failure_event(options, 3, 1, wf.RetryableError("later", retry_after="5s"), 0.0)
    assert kind == "step_retrying" and data["retry_at"] == 5.0


def _e(seq: int, kind: str, **data: object) -> Event:
    return Event("r", seq, kind, dict(data), float(seq))


def test_fresh_from_finds_the_remote_outcomes_at_the_end() -> None:
    head = [_e(1, "run_created"), _e(2, "run_started"), _e(3, "step_scheduled", cid=1)]
    by_executor = _e(4, "step_completed", cid=1, attempt=1, output=1)
    by_worker = _e(4, "step_completed", cid=1, attempt=1, output=1, worker="w")
    assert fresh_from([*head, by_executor]) is None
    assert fresh_from([*head, by_worker]) == 3
    later = _e(5, "step_scheduled", cid=2)
    assert fresh_from([*head, by_worker, later]) is None  # fed already: its commands follow


def test_a_limited_step_is_not_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"remote=True\) cannot take concurrency= or rate_limit="):
        wf.step(remote=True, concurrency=2)
    with pytest.raises(ValueError, match=r"remote=True\) cannot take concurrency= or rate_limit="):
        wf.step(remote=True, rate_limit="5/s")
    monkeypatch.setenv(ENV, "1")  # the switch leaves limited steps inline
    assert not chosen(StepOptions(concurrency=wf.Limit(2)))
