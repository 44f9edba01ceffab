"""What a run did, for people and tools: its steps, attempts, sleeps and hook waits.

:func:`inspect_run` folds a run's event log into a :class:`RunDetail`. It is
what ``run.detail()`` / ``run.steps()`` return and what the CLI and the web UI
show. It reads only the log: values are in their *display* form
(:func:`worldflow._decode.to_display`, plain JSON, no class resolved), so a
tool can show any run without importing the user's modules; pass a value to
``wf``'s codec yourself when you want the Python object back.

Unlike the engine's fold (:class:`worldflow._state.RunState`), this one keeps
every attempt of every step and every wait, ended or not, so that a timeline
can be drawn. A corrupt log is folded up to the bad event, and the reason is
in :attr:`RunDetail.log_error`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._decode import to_display
from ._errors import CorruptLogError
from ._events import EventKind
from ._state import RunState
from ._world import Event, RunInfo

if TYPE_CHECKING:
    from ._children import ChildLink

__all__ = ["AttemptInfo", "RunDetail", "StepInfo", "WaitInfo", "inspect_run"]

AttemptOutcome = Literal["running", "completed", "failed", "retried", "lost"]


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt of a step. ``outcome`` is ``"retried"`` when it failed and a
    retry followed, ``"lost"`` when its worker went away before it ended."""

    number: int
    started_at: float
    ended_at: float | None
    worker: str | None
    outcome: AttemptOutcome
    error: dict[str, Any] | None = None  # {"type", "message", "traceback"}

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclasses.dataclass(frozen=True, slots=True)
class StepInfo:
    """A step call of a run, in call order (``position`` is its command number)."""

    id: str  # what wf.get_step_metadata().step_id gave the step: an idempotency key
    position: int
    name: str
    status: Literal["scheduled", "running", "retrying", "completed", "failed"]
    input: dict[str, Any]  # {"args": [...], "kwargs": {...}}, display form
    scheduled_at: float
    started_at: float | None = None
    ended_at: float | None = None
    retry_at: float | None = None
    output: Any = None  # display form, once completed
    error: dict[str, Any] | None = None  # the last failed attempt's error
    attempts: tuple[AttemptInfo, ...] = ()

    @property
    def duration(self) -> float | None:
        return (
            None
            if self.started_at is None or self.ended_at is None
            else (self.ended_at - self.started_at)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class WaitInfo:
    """A pause of the run: a sleep, or a wait on a hook or webhook.

    A sleep ends when it fires (``early`` when woken before ``until``); a hook
    wait "ends" at its first payload (``received`` counts them all). A wait
    the run left behind (it ended first) keeps ``ended_at`` None.
    """

    kind: Literal["sleep", "hook", "webhook"]
    position: int
    started_at: float
    ended_at: float | None = None
    until: float | None = None  # a sleep's deadline
    early: bool = False
    name: str | None = None
    token: str | None = None
    url: str | None = None
    received: int = 0
    payloads_at: tuple[float, ...] = ()

    @property
    def waiting(self) -> bool:
        return self.ended_at is None


@dataclasses.dataclass(frozen=True, slots=True)
class RunDetail:
    """Everything about one run: the World's summary, and the fold of its log."""

    info: RunInfo
    input: dict[str, Any]  # {"args": [...], "kwargs": {...}}, display form
    started_at: float | None
    ended_at: float | None
    steps: tuple[StepInfo, ...]
    waits: tuple[WaitInfo, ...]
    events: tuple[Event, ...]
    cancel_requested: bool = False
    log_error: str | None = None  # the log is corrupt from this point on

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def workflow(self) -> str:
        return self.info.workflow

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def output(self) -> Any:
        """The run's return value in display form (None until it completes)."""
        return display(self.info.output) if self.info.status == "completed" else None

    @property
    def error(self) -> dict[str, Any] | None:
        return self.info.error if self.info.status == "failed" else None

    @property
    def children(self) -> list[ChildLink]:
        """The child runs this run started (with how each ended, as far as its log says)."""
        from ._children import children_in

        return children_in(self.events)

    @property
    def parent(self) -> str | None:
        """The id of the run that started this one as a child, or None."""
        from ._children import parent_of

        found = parent_of(self.events)
        return None if found is None else found[0]

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.info.created_at

    @property
    def hooks_waiting(self) -> tuple[WaitInfo, ...]:
        """The hooks and webhooks the run can still be resumed through."""
        if self.info.done:
            return ()
        return tuple(w for w in self.waits if w.kind != "sleep" and w.token is not None)

    @property
    def sleeping(self) -> tuple[WaitInfo, ...]:
        return (
            ()
            if self.info.done
            else tuple(w for w in self.waits if w.kind == "sleep" and w.waiting)
        )


def display(tree: Any) -> Any:
    """The display form of an encoded value; a malformed one is shown as its raw JSON."""
    try:
        return to_display(tree)
    except CorruptLogError:
        return tree


def call_args(tree: Any) -> dict[str, Any]:
    """``{"args": [...], "kwargs": {...}}`` from an encoded ``[args, kwargs]`` tree."""
    shown = display(tree)
    if isinstance(shown, list) and len(shown) == 2 and isinstance(shown[1], dict):
        args = shown[0] if isinstance(shown[0], list) else [shown[0]]
        return {"args": args, "kwargs": shown[1]}
    return {"args": [shown], "kwargs": {}}


class _Step:
    """A step being folded (mutable), frozen into a StepInfo at the end."""

    def __init__(self, run_id: str, cid: int, name: str, input: Any, at: float) -> None:
        self.id = f"{run_id}:{cid}"
        self.cid = cid
        self.name = name
        self.input = input
        self.scheduled_at = at
        self.status: Any = "scheduled"
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.retry_at: float | None = None
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.attempts: list[AttemptInfo] = []

    def end_attempt(self, at: float, outcome: AttemptOutcome, error: Any = None) -> None:
        if self.attempts and self.attempts[-1].outcome == "running":
            self.attempts[-1] = dataclasses.replace(
                self.attempts[-1], ended_at=at, outcome=outcome, error=error
            )

    def freeze(self) -> StepInfo:
        return StepInfo(
            id=self.id,
            position=self.cid,
            name=self.name,
            status=self.status,
            input=call_args(self.input),
            scheduled_at=self.scheduled_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            retry_at=self.retry_at,
            output=display(self.output) if self.status == "completed" else None,
            error=self.error,
            attempts=tuple(self.attempts),
        )


def inspect_run(info: RunInfo, events: Sequence[Event]) -> RunDetail:
    """Fold ``events`` (the whole log of the run ``info`` describes) into a RunDetail."""
    state = RunState(info.id)
    steps: dict[int, _Step] = {}
    waits: dict[int, WaitInfo] = {}
    hook_cids: dict[str, int] = {}
    problem: str | None = None
    for event in events:
        try:
            state.apply(event)  # validates the log; the engine's view of it
            _fold(info.id, event, steps, waits, hook_cids)
        except CorruptLogError as exc:
            problem = str(exc)
            break
        except (KeyError, TypeError, ValueError) as exc:  # valid for the engine, odd for us
            problem = f"event {event.seq} ({event.kind}): {type(exc).__name__}: {exc}"
            break
    ended = state.ended_at if info.done else None
    return RunDetail(
        info=info,
        input=call_args(state.input),
        started_at=state.started_at,
        ended_at=ended,
        steps=tuple(s.freeze() for s in steps.values()),
        waits=tuple(waits.values()),
        events=tuple(events),
        cancel_requested=state.cancel_requested,
        log_error=problem,
    )


def _fold(
    run_id: str,
    e: Event,
    steps: dict[int, _Step],
    waits: dict[int, WaitInfo],
    hook_cids: dict[str, int],
) -> None:
    d = e.data
    kind = e.kind
    if kind == EventKind.STEP_SCHEDULED:
        cid = int(d["cid"])
        steps[cid] = _Step(run_id, cid, d["name"], d["input"], e.at)
    elif kind == EventKind.STEP_STARTED:
        st = steps[int(d["cid"])]
        st.end_attempt(e.at, "lost")  # a new attempt while one ran: that one was lost
        st.status = "running"
        st.retry_at = None
        if st.started_at is None:
            st.started_at = e.at
        st.attempts.append(AttemptInfo(int(d["attempt"]), e.at, None, d.get("worker"), "running"))
    elif kind == EventKind.STEP_RETRYING:
        st = steps[int(d["cid"])]
        st.status = "retrying"
        st.retry_at = d.get("retry_at")
        st.error = d.get("error")
        st.end_attempt(e.at, "retried", st.error)
    elif kind == EventKind.STEP_COMPLETED:
        st = steps[int(d["cid"])]
        st.status = "completed"
        st.output = d.get("output")
        st.ended_at = e.at
        st.end_attempt(e.at, "completed")
    elif kind == EventKind.STEP_FAILED:
        st = steps[int(d["cid"])]
        st.status = "failed"
        st.error = d.get("error")
        st.ended_at = e.at
        lost = (st.error or {}).get("type") == "StepLost"
        st.end_attempt(e.at, "lost" if lost else "failed", st.error)
    elif kind == EventKind.SLEEP_STARTED:
        cid = int(d["cid"])
        waits[cid] = WaitInfo("sleep", cid, e.at, until=float(d["until"]), name=d.get("name"))
    elif kind == EventKind.SLEEP_FIRED:
        cid = int(d["cid"])
        waits[cid] = dataclasses.replace(waits[cid], ended_at=e.at, early=bool(d.get("early")))
    elif kind == EventKind.HOOK_CREATED:
        cid = int(d["cid"])
        token = str(d["token"])
        hook_kind: Literal["hook", "webhook"] = "webhook" if d.get("webhook") else "hook"
        waits[cid] = WaitInfo(hook_kind, cid, e.at, token=token, url=d.get("url"))
        hook_cids[token] = cid
    elif kind == EventKind.HOOK_RECEIVED:
        cid = hook_cids[str(d["token"])]
        wait = waits[cid]
        waits[cid] = dataclasses.replace(
            wait,
            ended_at=wait.ended_at if wait.ended_at is not None else e.at,
            received=wait.received + 1,
            payloads_at=(*wait.payloads_at, e.at),
        )
    elif kind == EventKind.HOOK_FAILED:
        cid = int(d["cid"])
        if cid in waits:
            waits[cid] = dataclasses.replace(waits[cid], ended_at=e.at, token=None)
