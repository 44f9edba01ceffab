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
from ._limits_spec import Limit, Queue, Throttle  # limits, given to decorators and start
from ._types import register_type

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import schedules, signatures
    from ._api import (
        ChildRun,  # child workflows
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

    # streams and run tags
    from ._streams import StreamWriter, get_writable
    from ._sync import resume_hook_sync, start_sync
    from ._tags import set_tags
    from ._typed_hooks import HookType, define_hook
    from ._versioning import deprecate_patch, is_replaying, logger, patched
    from ._world import Event, RunInfo, RunPage
    from .schedules import schedule

__version__ = "0.1.0"

# name -> (the module that defines it, the attribute; None: the module itself),
# imported on first access.
_LAZY: dict[str, tuple[str, str | None]] = {
    **{
        name: ("_api", name)
        for name in (
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
        )
    },
    "ChildRun": ("_api", "ChildRun"),  # child workflows
    **{name: ("_attempts", name) for name in ("StepMetadata", "get_step_metadata")},
    **{name: ("_clock", name) for name in ("Clock", "SystemClock", "VirtualClock")},
    **{
        name: ("_hooks", name)
        for name in ("Hook", "Webhook", "WebhookRequest", "create_hook", "create_webhook")
    },
    **{name: ("_inspect", name) for name in ("AttemptInfo", "RunDetail", "StepInfo", "WaitInfo")},
    **{name: ("_sync", name) for name in ("resume_hook_sync", "start_sync")},
    **{name: ("_typed_hooks", name) for name in ("HookType", "define_hook")},
    **{
        name: ("_versioning", name)
        for name in ("deprecate_patch", "is_replaying", "logger", "patched")
    },
    **{name: ("_world", name) for name in ("Event", "RunInfo", "RunPage")},
    # streams and run tags
    **{name: ("_streams", name) for name in ("StreamWriter", "get_writable")},
    "set_tags": ("_tags", "set_tags"),
    # Schedules bring zoneinfo and register workflows of their own.
    "schedule": ("schedules", "schedule"),
    "schedules": ("schedules", None),
    "signatures": ("signatures", None),
}


def __getattr__(name: str) -> Any:
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module 'worldflow' has no attribute {name!r}")
    import importlib

    module, attribute = found
    value = importlib.import_module(f".{module}", __name__)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # looked up as a plain global from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AttemptInfo",
    "ChildRun",
    "Clock",
    "CorruptLogError",
    "Event",
    "FatalError",
    "Hook",
    "HookConflict",
    "HookNotFound",
    "HookType",
    "InvalidHookPayload",
    "Limit",
    "NonDeterminismError",
    "Queue",
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
    "StreamWriter",
    "SystemClock",
    "Throttle",
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
    "deprecate_patch",
    "get_run",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "is_replaying",
    "list_runs",
    "logger",
    "now",
    "patched",
    "random",
    "register_type",
    "resume_hook",
    "resume_hook_sync",
    "schedule",
    "schedules",
    "set_tags",
    "signatures",
    "sleep",
    "start",
    "start_sync",
    "step",
    "uuid4",
    "worker",
    "workflow",
]
