"""The state of a run, as a pure projection of its event log.

The engine folds events into a :class:`RunState` to decide what is due
(steps to start or retry, timers to fire); tools fold the same events to
show a run's steps. No workflow code runs here.

The event kinds and their data are listed once, in :mod:`worldflow._events`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ._errors import CorruptLogError
from ._events import (
    CANCEL_REQUESTED,
    CHILD_COMPLETED,
    CHILD_STARTED,
    COMMAND_KINDS,
    DEADLINE_PASSED,
    HOOK_CREATED,
    HOOK_FAILED,
    HOOK_RECEIVED,
    PATCH_MARKED,
    RESULT_KINDS,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_CREATED,
    RUN_FAILED,
    RUN_STARTED,
    SLEEP_FIRED,
    SLEEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SCHEDULED,
    STEP_STARTED,
)
from ._world import TERMINAL, Event

__all__ = ["COMMAND_KINDS", "RESULT_KINDS", "ChildState", "HookState", "RunState", "StepState"]


@dataclasses.dataclass(slots=True)
class StepState:
    cid: int
    name: str
    input: Any
    scheduled_at: float
    status: str = "scheduled"  # scheduled | running | retrying | completed | failed
    attempt: int = 0  # the last attempt started
    worker: str | None = None  # None for a remote attempt: any worker may run it
    remote: bool = False  # the last attempt runs remotely (worldflow._remote)
    lease_until: float | None = None
    retry_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None


@dataclasses.dataclass(slots=True)
class HookState:
    cid: int
    token: str
    webhook: bool
    url: str | None
    received: int = 0
    next: int = 1  # the number (``n``) of the next payload to apply, in resume order


@dataclasses.dataclass(slots=True)
class ChildState:
    cid: int
    id: str  # the child's run id
    name: str  # its workflow
    detached: bool = False  # not cancelled with its parent


@dataclasses.dataclass(slots=True)
class RunState:
    run_id: str
    workflow: str = ""
    input: Any = None
    status: str = "pending"
    seq: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    trace: str | None = None  # the W3C traceparent of wf.start's caller, when traced
    commands: list[Event] = dataclasses.field(default_factory=list)
    steps: dict[int, StepState] = dataclasses.field(default_factory=dict)
    open_steps: dict[int, StepState] = dataclasses.field(default_factory=dict)  # not yet ended
    timers: dict[int, float] = dataclasses.field(default_factory=dict)  # pending: cid -> until
    hooks: dict[str, HookState] = dataclasses.field(default_factory=dict)
    children: dict[int, ChildState] = dataclasses.field(default_factory=dict)  # not yet ended
    parent: tuple[str, int] | None = None  # a child run: (the parent's id, its command)
    deadline: float | None = None  # the run fails with TimeoutError past it
    timed_out: bool = False  # deadline_passed is in the log
    seen: set[str] = dataclasses.field(default_factory=set)  # applied message ids
    # lean: keep only what running the run needs (the engine's copy), not every
    # step's input and output (a tool's copy): ended steps are forgotten.
    lean: bool = False

    @classmethod
    def from_events(cls, run_id: str, events: Iterable[Event], *, lean: bool = False) -> RunState:
        state = cls(run_id, lean=lean)
        for event in events:
            state.apply(event)
        return state

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def apply(self, event: Event) -> None:
        """Fold one event in; a malformed or out-of-order event is a CorruptLogError."""
        if event.seq != self.seq + 1:
            raise CorruptLogError(
                f"run {self.run_id!r}: event {event.seq} ({event.kind}) follows event "
                f"{self.seq}; the log must be densely numbered"
            )
        try:
            handler = _APPLY[event.kind]
        except KeyError:
            raise CorruptLogError(
                f"run {self.run_id!r}: event {event.seq} has unknown kind {event.kind!r}"
            ) from None
        try:
            handler(self, event, event.data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CorruptLogError(
                f"run {self.run_id!r}: event {event.seq} ({event.kind}) is malformed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.seq = event.seq

    def _command(self, event: Event, data: dict[str, Any]) -> int:
        cid = int(data["cid"])
        if cid != len(self.commands) + 1:
            raise CorruptLogError(
                f"run {self.run_id!r}: event {event.seq} records command #{cid}, "
                f"expected #{len(self.commands) + 1}"
            )
        if self.lean and "input" in data:  # replay checks kind and name, never the input
            data = {k: v for k, v in data.items() if k != "input"}
            event = Event(event.run_id, event.seq, event.kind, data, event.at)
        self.commands.append(event)
        return cid

    def _ended_step(self, step: StepState) -> None:
        self.open_steps.pop(step.cid, None)
        if self.lean:
            del self.steps[step.cid]

    def _step(self, event: Event, data: dict[str, Any]) -> StepState:
        try:
            return self.steps[int(data["cid"])]
        except KeyError:
            raise CorruptLogError(
                f"run {self.run_id!r}: event {event.seq} ({event.kind}) names step "
                f"#{data.get('cid')}, which was never scheduled"
            ) from None


def _run_created(s: RunState, e: Event, d: dict[str, Any]) -> None:
    s.workflow = d["workflow"]
    s.input = d["input"]
    s.created_at = e.at
    s.trace = d.get("trace")
    parent = d.get("parent")
    if parent is not None:
        s.parent = (str(parent["id"]), int(parent["cid"]))
    if d.get("deadline") is not None:
        s.deadline = float(d["deadline"])


def _run_started(s: RunState, e: Event, d: dict[str, Any]) -> None:
    s.status = "running"
    s.started_at = e.at


def _step_scheduled(s: RunState, e: Event, d: dict[str, Any]) -> None:
    cid = s._command(e, d)
    s.steps[cid] = s.open_steps[cid] = StepState(cid, d["name"], d["input"], e.at)


def _step_started(s: RunState, e: Event, d: dict[str, Any]) -> None:
    st = s._step(e, d)
    st.status = "running"
    st.attempt = d["attempt"]
    st.worker = d.get("worker")
    st.remote = bool(d.get("remote"))
    st.lease_until = d.get("lease_until")
    st.retry_at = None
    if st.started_at is None:
        st.started_at = e.at


def _step_retrying(s: RunState, e: Event, d: dict[str, Any]) -> None:
    st = s._step(e, d)
    st.status = "retrying"
    st.retry_at = d["retry_at"]
    st.error = d["error"]


def _step_completed(s: RunState, e: Event, d: dict[str, Any]) -> None:
    st = s._step(e, d)
    s._ended_step(st)
    st.status = "completed"
    st.output = None if s.lean else d["output"]
    st.ended_at = e.at


def _step_failed(s: RunState, e: Event, d: dict[str, Any]) -> None:
    st = s._step(e, d)
    s._ended_step(st)
    st.status = "failed"
    st.error = d["error"]
    st.ended_at = e.at


def _patch_marked(s: RunState, e: Event, d: dict[str, Any]) -> None:
    s._command(e, d)  # only its place among the commands: wf.patched() reads it on replay


def _sleep_started(s: RunState, e: Event, d: dict[str, Any]) -> None:
    cid = s._command(e, d)
    s.timers[cid] = float(d["until"])


def _sleep_fired(s: RunState, e: Event, d: dict[str, Any]) -> None:
    if s.timers.pop(int(d["cid"]), None) is None:
        raise CorruptLogError(
            f"run {s.run_id!r}: event {e.seq} fires sleep #{d['cid']}, which is not pending"
        )
    if "id" in d:  # woken early by a message: a redelivery of it must not wake a later sleep
        s.seen.add(d["id"])


def _hook_created(s: RunState, e: Event, d: dict[str, Any]) -> None:
    cid = s._command(e, d)
    s.hooks[d["token"]] = HookState(cid, d["token"], bool(d.get("webhook")), d.get("url"))


def _hook_received(s: RunState, e: Event, d: dict[str, Any]) -> None:
    hook = s.hooks.get(d["token"])
    if hook is None:
        raise CorruptLogError(
            f"run {s.run_id!r}: event {e.seq} delivers to hook {d['token']!r}, never created"
        )
    hook.received += 1
    n = d.get("n")
    if type(n) is int and n >= hook.next:
        hook.next = n + 1
    s.seen.add(d["id"])


def _hook_failed(s: RunState, e: Event, d: dict[str, Any]) -> None:
    hook = s.hooks.get(d["token"])
    if hook is not None and hook.cid == d["cid"]:
        del s.hooks[d["token"]]  # never this run's: nothing to remove from the index


def _cancel_requested(s: RunState, e: Event, d: dict[str, Any]) -> None:
    s.cancel_requested = True
    s.seen.add(d["id"])


def _child_started(s: RunState, e: Event, d: dict[str, Any]) -> None:
    cid = s._command(e, d)
    s.children[cid] = ChildState(cid, str(d["id"]), d["name"], bool(d.get("detached")))


def _child_completed(s: RunState, e: Event, d: dict[str, Any]) -> None:
    if s.children.pop(int(d["cid"]), None) is None:
        raise CorruptLogError(
            f"run {s.run_id!r}: event {e.seq} ends child #{d['cid']}, which is not running"
        )


def _deadline_passed(s: RunState, e: Event, d: dict[str, Any]) -> None:
    s.timed_out = True


def _ended(status: str) -> Any:
    def apply(s: RunState, e: Event, d: dict[str, Any]) -> None:
        s.status = status
        s.ended_at = e.at
        s.output = d.get("output")
        s.error = d.get("error")

    return apply


_APPLY: dict[str, Any] = {
    RUN_CREATED: _run_created,
    RUN_STARTED: _run_started,
    STEP_SCHEDULED: _step_scheduled,
    STEP_STARTED: _step_started,
    STEP_RETRYING: _step_retrying,
    STEP_COMPLETED: _step_completed,
    STEP_FAILED: _step_failed,
    SLEEP_STARTED: _sleep_started,
    SLEEP_FIRED: _sleep_fired,
    HOOK_CREATED: _hook_created,
    HOOK_RECEIVED: _hook_received,
    HOOK_FAILED: _hook_failed,
    PATCH_MARKED: _patch_marked,
    CANCEL_REQUESTED: _cancel_requested,
    CHILD_STARTED: _child_started,
    CHILD_COMPLETED: _child_completed,
    DEADLINE_PASSED: _deadline_passed,
    RUN_COMPLETED: _ended("completed"),
    RUN_FAILED: _ended("failed"),
    RUN_CANCELLED: _ended("cancelled"),
}
