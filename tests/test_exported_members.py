"""The public surface is curated: this list changes only on purpose."""

import worldflow as wf

PUBLIC = [
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


def test_all_is_sorted_and_pinned() -> None:
    assert wf.__all__ == sorted(wf.__all__)
    assert wf.__all__ == PUBLIC


def test_every_public_name_exists_and_is_documented() -> None:
    for name in wf.__all__:
        obj = getattr(wf, name)
        assert obj.__doc__, f"worldflow.{name} has no docstring"


def test_errors_share_one_root() -> None:
    for name in wf.__all__:
        obj = getattr(wf, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, wf.WorldflowError), name
            assert obj.__module__ == "worldflow", name
