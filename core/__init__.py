"""worldflow: durable async workflows for Python.

>>> import worldflow as wf
>>> @wf.step
... async def charge(order_id: str) -> str: ...
>>> @wf.workflow
... async def checkout(order_id: str) -> str:
...     receipt = await charge(order_id)
...     await wf.sleep("3d")
...     return receipt
>>> run = await wf.start(checkout, "order-1")
>>> await run.result()

Everything a run does is appended to an event log; a run resumes by replaying
its workflow function against that log. A World (``local`` by default, or
``aws``, ``gcp``) decides where the log lives and how work is queued.
"""

from typing import TYPE_CHECKING, Any

# Imported at once: what a module defining workflows and steps uses while it is
# being imported (the decorators, the errors, register_type). The rest is loaded
# on first use (module ``__getattr__`` below): running, inspecting and the World
# seam pull in asyncio, ssl, logging, sqlite3 and the codec, which a process
# that only imports its workflows (a CLI, a Lambda container before its first
# event) need not pay for at import. tests/test_import_time.py pins this.
from ._definitions import Step, Workflow, step, workflow
from ._errors import (
    CorruptLogError,
    FatalError,
    HookConflict,
    HookNotFound,
    NonDeterminismError,
    RetryableError,
    RunCancelled,
    RunConflict,
    RunFailed,
    RunNotFound,
    SerializationError,
    StepFailed,
    WorkflowBlocked,
    WorkflowNotFound,
    WorldError,
    WorldflowError,
)
from ._types import register_type

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from ._api import (
        Run,
        WorkflowMetadata,
        configure,
        get_run,
        get_workflow_metadata,
        list_runs,
        now,
        random,
        resume_hook,
        sleep,
        start,
        uuid4,
        worker,
    )
    from ._attempts import StepMetadata, get_step_metadata
    from ._clock import Clock, SystemClock, VirtualClock
    from ._hooks import Hook, Webhook, WebhookRequest, create_hook, create_webhook
    from ._inspect import AttemptInfo, RunDetail, StepInfo, WaitInfo
    from ._world import Event, RunInfo, RunPage

__version__ = "0.1.0"

# name -> the private module that defines it, imported on first access.
_LAZY = {
    **dict.fromkeys(
        (
            "Run",
            "WorkflowMetadata",
            "configure",
            "get_run",
            "get_workflow_metadata",
            "list_runs",
            "now",
            "random",
            "resume_hook",
            "sleep",
            "start",
            "uuid4",
            "worker",
        ),
        "_api",
    ),
    **dict.fromkeys(("StepMetadata", "get_step_metadata"), "_attempts"),
    **dict.fromkeys(("Clock", "SystemClock", "VirtualClock"), "_clock"),
    **dict.fromkeys(
        ("Hook", "Webhook", "WebhookRequest", "create_hook", "create_webhook"), "_hooks"
    ),
    **dict.fromkeys(("AttemptInfo", "RunDetail", "StepInfo", "WaitInfo"), "_inspect"),
    **dict.fromkeys(("Event", "RunInfo", "RunPage"), "_world"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'worldflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up as a plain global from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AttemptInfo",
    "Clock",
    "CorruptLogError",
    "Event",
    "FatalError",
    "Hook",
    "HookConflict",
    "HookNotFound",
    "NonDeterminismError",
    "RetryableError",
    "Run",
    "RunCancelled",
    "RunConflict",
    "RunDetail",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunPage",
    "SerializationError",
    "Step",
    "StepFailed",
    "StepInfo",
    "StepMetadata",
    "SystemClock",
    "VirtualClock",
    "WaitInfo",
    "Webhook",
    "WebhookRequest",
    "Workflow",
    "WorkflowBlocked",
    "WorkflowMetadata",
    "WorkflowNotFound",
    "WorldError",
    "WorldflowError",
    "configure",
    "create_hook",
    "create_webhook",
    "get_run",
    "get_step_metadata",
    "get_workflow_metadata",
    "list_runs",
    "now",
    "random",
    "register_type",
    "resume_hook",
    "sleep",
    "start",
    "step",
    "uuid4",
    "worker",
    "workflow",
]
