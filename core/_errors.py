"""The exceptions worldflow raises, in one tree.

    WorldflowError
    ├── FatalError               raised in a step: fail it now, no retry
    ├── RetryableError           raised in a step: retry after ``retry_after``
    ├── StepFailed               a step failed for good; its class is not importable here
    ├── NonDeterminismError      the workflow's code no longer matches its log
    ├── WorkflowBlocked          workflow code ran too long without awaiting, and was stopped
    ├── RunFailed                ``Run.result()`` of a run that failed
    ├── RunCancelled             ``Run.result()`` of a run that was cancelled
    ├── RunNotFound              no run has that id
    ├── RunConflict              (also a ValueError) a run id is taken by other work
    ├── HookNotFound             no live hook has that token
    ├── HookConflict             (also a ValueError) another live run holds that hook token
    ├── InvalidHookPayload       (also a ValueError) a payload does not fit its typed hook
    ├── WorkflowNotFound         no workflow of that name is registered in this process
    ├── CorruptLogError          a stored event log cannot be read back
    ├── SerializationError       (also a TypeError) a value cannot be stored
    └── WorldError               a World failed to do what was asked (storage, queue)

A ``NonDeterminismError`` raised into workflow code fails the run even if
the code catches it: the engine records the divergence before raising.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CorruptLogError",
    "FatalError",
    "HookConflict",
    "HookNotFound",
    "InvalidHookPayload",
    "NonDeterminismError",
    "RetryableError",
    "RunCancelled",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "SerializationError",
    "StepFailed",
    "WorkflowBlocked",
    "WorkflowNotFound",
    "WorldError",
    "WorldflowError",
]


class WorldflowError(Exception):
    """The root of every error worldflow raises."""


class FatalError(WorldflowError):
    """Raise in a step to fail it at once, without retrying.

    >>> raise FatalError("card declined")
    """


class RetryableError(WorldflowError):
    """Raise in a step to have it retried after ``retry_after``.

    ``retry_after`` is a duration (``"5s"``, seconds, a ``timedelta``) or
    ``None`` for the step's usual backoff.
    """

    def __init__(self, message: str = "", retry_after: Any = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.retry_after))


class StepFailed(WorldflowError):
    """A step failed for good and its exception class is not available here.

    ``error_type`` is the qualified name of the original class, ``message``
    its text.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class NonDeterminismError(WorldflowError):
    """The workflow's code no longer makes the commands its log records.

    The message names the position, the command the log expected and the
    one the code made.
    """


class WorkflowBlocked(WorldflowError):
    """Workflow code ran for too long without awaiting, and was stopped.

    Workflow code must only compute and await: do blocking or long work in a
    ``@step``. The limit is ``WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT`` seconds (or
    ``wf.configure(workflow_block_timeout=...)``).
    """


class RunFailed(WorldflowError):
    """The run ended with an error; ``error_type`` and ``message`` say which."""

    def __init__(self, run_id: str, error_type: str, message: str) -> None:
        super().__init__(f"run {run_id!r} failed: {error_type}: {message}")
        self.run_id = run_id
        self.error_type = error_type
        self.message = message


class RunCancelled(WorldflowError):
    """The run was cancelled before it finished."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} was cancelled")
        self.run_id = run_id


class RunNotFound(WorldflowError, LookupError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class RunConflict(WorldflowError, ValueError):
    """``wf.start(..., id=...)``: that id belongs to a run of another workflow, or (with
    ``on_conflict="raise"``) to a run started with other arguments."""


class HookNotFound(WorldflowError, LookupError):
    """No live hook has this token (never created, or its run has ended)."""

    def __init__(self, token: str) -> None:
        super().__init__(f"no hook with token {token!r} (never created, or its run has ended)")
        self.token = token


class InvalidHookPayload(WorldflowError, ValueError):
    """A payload does not fit its typed hook (``wf.define_hook``): raised by
    ``resume`` before anything is sent, or at the workflow's ``await`` for a payload
    that came another way. The message says what and where."""


class HookConflict(WorldflowError, ValueError):
    """Another live run already holds this hook token: tokens are unique among live runs.

    Raised at the ``await`` of the second hook; the first keeps the token.
    """

    def __init__(self, token: str, holder: str | None = None) -> None:
        held = f" by run {holder!r}" if holder else ""
        super().__init__(
            f"hook token {token!r} is already in use{held}; a token must be unique among "
            "live runs (put the order or run id in it, or leave it out for a random one)"
        )
        self.token = token
        self.holder = holder


class WorkflowNotFound(WorldflowError, LookupError):
    """No workflow of this name is registered in this process."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; known workflows: {', '.join(sorted(known))}" if known else ""
        super().__init__(
            f"no workflow named {name!r} is registered in this process "
            f"(import the module that defines it, or list it in WORLDFLOW_MODULES){hint}"
        )
        self.name = name


class CorruptLogError(WorldflowError):
    """A stored event cannot be read back; the message says which and why."""


class SerializationError(WorldflowError, TypeError):
    """A value cannot be serialized; the message names its type and where it was."""


class WorldError(WorldflowError):
    """A World could not do what the engine asked (a storage or queue failure)."""


# Report the public classes under the name users import them by, so a recorded
# error says "worldflow.NonDeterminismError" and is found again when rebuilt.
for _name in __all__:
    globals()[_name].__module__ = "worldflow"
