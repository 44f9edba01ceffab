"""The event kinds of a run's log, defined once, with the data each one carries.

``EventKind`` is a ``StrEnum``: its members are the strings stored in every
World's log, so a member compares equal to the stored kind and old logs read
the same. Each kind has a ``TypedDict`` describing its ``data``; values
(``input``, ``output``, ``payload``) are codec trees, errors are the dicts
``describe_error`` makes (``{"type", "message", "traceback", ...}``).

=================  ==========================================================
run_created        workflow, input (+ trace)             (written by start)
run_started        -
step_scheduled     cid, name, input                      (a command)
step_started       cid, attempt, worker, lease_until (+ granted: a rate limit's turn;
                   remote: true, worker null: a step message runs it)
step_retrying      cid, attempt, error, retry_at
step_completed     cid, attempt, output
step_failed        cid, attempt, error
sleep_started      cid, until                            (a command)
sleep_fired        cid (+ early, id, trace: woken by a "wake" message)
hook_created       cid, token, webhook, url              (a command)
hook_received      token, payload, id (+ n, trace)
hook_failed        cid, token, error                     (the token was taken)
patch_marked       cid, name                             (a command: wf.patched)
child_started      cid, name, id, input (+ detached, deadline)  (a command: a child run)
child_completed    cid, id, status (+ output or error)  (the child ended)
deadline_passed    deadline                              (the run's deadline came)
cancel_requested   id
run_completed      output
run_failed         error
run_cancelled      -
=================  ==========================================================
"""

from __future__ import annotations

import enum
import logging
from typing import Any, NotRequired, TypedDict

# A library logs, it does not print: the user's logging configuration decides.
# Set here rather than in ``worldflow/__init__`` (whose import stays free of
# logging): every module of the engine that logs is loaded with this one.
logging.getLogger("worldflow").addHandler(logging.NullHandler())

__all__ = [
    "CANCEL_REQUESTED",
    "CHILD_COMPLETED",
    "CHILD_STARTED",
    "COMMAND_KINDS",
    "DEADLINE_PASSED",
    "END_KINDS",
    "HOOK_CREATED",
    "HOOK_FAILED",
    "HOOK_RECEIVED",
    "PATCH_MARKED",
    "RESULT_KINDS",
    "RUN_CANCELLED",
    "RUN_COMPLETED",
    "RUN_CREATED",
    "RUN_FAILED",
    "RUN_STARTED",
    "SLEEP_FIRED",
    "SLEEP_STARTED",
    "STEP_COMPLETED",
    "STEP_FAILED",
    "STEP_RETRYING",
    "STEP_SCHEDULED",
    "STEP_STARTED",
    "EventKind",
]


class EventKind(enum.StrEnum):
    """Every kind of event a run's log holds."""

    RUN_CREATED = "run_created"
    RUN_STARTED = "run_started"
    STEP_SCHEDULED = "step_scheduled"
    STEP_STARTED = "step_started"
    STEP_RETRYING = "step_retrying"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    SLEEP_STARTED = "sleep_started"
    SLEEP_FIRED = "sleep_fired"
    HOOK_CREATED = "hook_created"
    HOOK_RECEIVED = "hook_received"
    HOOK_FAILED = "hook_failed"
    CANCEL_REQUESTED = "cancel_requested"
    PATCH_MARKED = "patch_marked"
    CHILD_STARTED = "child_started"
    CHILD_COMPLETED = "child_completed"
    DEADLINE_PASSED = "deadline_passed"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"


# Plain-str twins of the members, for the engine's hot path: an Enum member's
# attribute access and hash run Python code (about five times a str's), and a
# kind is a plain str in every stored log anyway.
RUN_CREATED = EventKind.RUN_CREATED.value
RUN_STARTED = EventKind.RUN_STARTED.value
STEP_SCHEDULED = EventKind.STEP_SCHEDULED.value
STEP_STARTED = EventKind.STEP_STARTED.value
STEP_RETRYING = EventKind.STEP_RETRYING.value
STEP_COMPLETED = EventKind.STEP_COMPLETED.value
STEP_FAILED = EventKind.STEP_FAILED.value
SLEEP_STARTED = EventKind.SLEEP_STARTED.value
SLEEP_FIRED = EventKind.SLEEP_FIRED.value
HOOK_CREATED = EventKind.HOOK_CREATED.value
HOOK_RECEIVED = EventKind.HOOK_RECEIVED.value
HOOK_FAILED = EventKind.HOOK_FAILED.value
CANCEL_REQUESTED = EventKind.CANCEL_REQUESTED.value
PATCH_MARKED = EventKind.PATCH_MARKED.value
CHILD_STARTED = EventKind.CHILD_STARTED.value
CHILD_COMPLETED = EventKind.CHILD_COMPLETED.value
DEADLINE_PASSED = EventKind.DEADLINE_PASSED.value
RUN_COMPLETED = EventKind.RUN_COMPLETED.value
RUN_FAILED = EventKind.RUN_FAILED.value
RUN_CANCELLED = EventKind.RUN_CANCELLED.value

K = EventKind

#: Events a workflow's code makes (commands), with the label replay errors use.
COMMAND_KINDS: dict[str, str] = {
    STEP_SCHEDULED: "step",
    SLEEP_STARTED: "sleep",
    HOOK_CREATED: "hook",
    PATCH_MARKED: "patch",
    CHILD_STARTED: "child",
}
#: Events fed into the workflow's code, in log order, on replay.
RESULT_KINDS: frozenset[str] = frozenset(
    {
        STEP_COMPLETED,
        STEP_FAILED,
        SLEEP_FIRED,
        HOOK_RECEIVED,
        HOOK_FAILED,
        CANCEL_REQUESTED,
        CHILD_COMPLETED,
        DEADLINE_PASSED,
    }
)
#: The events that end a run.
END_KINDS: frozenset[str] = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})


# -- the data of each kind (documentation for tools that read logs; the engine
# -- builds these dicts itself) --------------------------------------------------


class ErrorData(TypedDict):
    type: str
    message: str
    traceback: str
    attrs: NotRequired[dict[str, Any]]


class ParentRef(TypedDict):
    id: str  # the parent run
    cid: int  # the parent's child_started command


class RunCreated(TypedDict):
    workflow: str
    input: Any
    trace: NotRequired[str]
    parent: NotRequired[ParentRef]  # a child run: whose, and which command started it
    deadline: NotRequired[float]  # epoch seconds: the run fails with TimeoutError past it


class StepScheduled(TypedDict):
    cid: int
    name: str
    input: Any


class StepStarted(TypedDict):
    cid: int
    attempt: int
    worker: str | None  # None when remote
    lease_until: float | None
    remote: NotRequired[bool]  # True: a ``step`` message runs it on any worker
    granted: NotRequired[float]  # the rate limit's turn (worldflow._limits_flow)


class StepRetrying(TypedDict):
    cid: int
    attempt: int
    error: ErrorData
    retry_at: float


class StepCompleted(TypedDict):
    cid: int
    attempt: int
    output: Any


class StepFailed(TypedDict):
    cid: int
    attempt: int
    error: ErrorData


class SleepStarted(TypedDict):
    cid: int
    until: float


class SleepFired(TypedDict):
    cid: int
    early: NotRequired[bool]
    id: NotRequired[str]
    trace: NotRequired[str]


class HookCreated(TypedDict):
    cid: int
    token: str
    webhook: bool
    url: str | None


class HookReceived(TypedDict):
    token: str
    payload: Any
    id: str
    n: NotRequired[int]  # the payload's place in the order resume_hook calls returned
    trace: NotRequired[str]


class HookFailed(TypedDict):
    cid: int
    token: str
    error: ErrorData


class CancelRequested(TypedDict):
    id: str


class ChildStarted(TypedDict):
    cid: int
    name: str  # the child's workflow
    id: str  # the child's run id
    input: Any
    detached: NotRequired[bool]  # True: not cancelled with its parent
    deadline: NotRequired[float]


class ChildCompleted(TypedDict):
    cid: int
    id: str
    status: str  # completed | failed | cancelled
    output: NotRequired[Any]
    error: NotRequired[ErrorData]


class RunCompleted(TypedDict):
    output: Any


class RunFailed(TypedDict):
    error: ErrorData


#: kind -> the TypedDict of its data (kinds with no data map to an empty dict type).
DATA_TYPES: dict[EventKind, type] = {
    K.RUN_CREATED: RunCreated,
    K.STEP_SCHEDULED: StepScheduled,
    K.STEP_STARTED: StepStarted,
    K.STEP_RETRYING: StepRetrying,
    K.STEP_COMPLETED: StepCompleted,
    K.STEP_FAILED: StepFailed,
    K.SLEEP_STARTED: SleepStarted,
    K.SLEEP_FIRED: SleepFired,
    K.HOOK_CREATED: HookCreated,
    K.HOOK_RECEIVED: HookReceived,
    K.HOOK_FAILED: HookFailed,
    K.CANCEL_REQUESTED: CancelRequested,
    K.CHILD_STARTED: ChildStarted,
    K.CHILD_COMPLETED: ChildCompleted,
    K.RUN_COMPLETED: RunCompleted,
    K.RUN_FAILED: RunFailed,
}
