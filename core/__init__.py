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

import logging

from . import signatures
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
from ._definitions import Step, Workflow, step, workflow
from ._errors import (
    CorruptLogError,
    FatalError,
    HookConflict,
    HookNotFound,
    InvalidHookPayload,
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
from ._hooks import Hook, Webhook, WebhookRequest, create_hook, create_webhook
from ._inspect import AttemptInfo, RunDetail, StepInfo, WaitInfo
from ._sync import resume_hook_sync, start_sync
from ._typed_hooks import HookType, define_hook
from ._types import register_type
from ._world import Event, RunInfo, RunPage

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Loaded on first use: schedules bring zoneinfo and register their own workflows.
    if name in ("schedule", "schedules"):
        import importlib

        schedules = importlib.import_module("worldflow.schedules")
        return schedules.schedule if name == "schedule" else schedules
    raise AttributeError(f"module 'worldflow' has no attribute {name!r}")


# A library logs, it does not print: the user's logging configuration decides.
logging.getLogger("worldflow").addHandler(logging.NullHandler())

__all__ = [
    "AttemptInfo",
    "Clock",
    "CorruptLogError",
    "Event",
    "FatalError",
    "Hook",
    "HookConflict",
    "HookNotFound",
    "HookType",
    "InvalidHookPayload",
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
    "define_hook",
    "get_run",
    "get_step_metadata",
    "get_workflow_metadata",
    "list_runs",
    "now",
    "random",
    "register_type",
    "resume_hook",
    "resume_hook_sync",
    "schedule",
    "schedules",
    "signatures",
    "sleep",
    "start",
    "start_sync",
    "step",
    "uuid4",
    "worker",
    "workflow",
]
