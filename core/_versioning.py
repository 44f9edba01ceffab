"""Changing workflow code under runs in flight: ``wf.patched``, ``wf.deprecate_patch``,
``wf.is_replaying``, and ``wf.logger``, which writes each line once per run.

>>> if wf.patched("new-pricing"):
...     price = await price_v2(order)
... else:
...     price = await price_v1(order)     # runs recorded before the change

``patched(id)`` is True for a run that reaches it under the new code (a new
run, or one whose log ends before this point), and records a marker in the
log there; on the replay of a log recorded by code without the patch it is
False, so such a run goes on down the old branch. Once no run recorded
without the patch is left (``worldflow runs replay --check`` tells), replace
the ``if`` with the new branch alone and ``wf.deprecate_patch(id)`` in its
place: it takes the marker from the logs that have one and records none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._loop import current_instance

__all__ = ["WorkflowLogger", "deprecate_patch", "is_replaying", "logger", "patched"]


def _patch_id(patch_id: object, what: str) -> str:
    if not isinstance(patch_id, str) or not patch_id or len(patch_id) > 200:
        raise ValueError(
            f"{what} takes a patch id, a non-empty str (at most 200 chars), got {patch_id!r}"
        )
    return patch_id


def patched(patch_id: str) -> bool:
    """True under the code with the patch (a new run, or past the end of the log), False
    when replaying a run recorded without it. See the module docstring."""
    instance = current_instance()
    if instance is None:
        raise RuntimeError("wf.patched() can only be called inside a workflow")
    return instance.patched(_patch_id(patch_id, "wf.patched()"))


def deprecate_patch(patch_id: str) -> None:
    """Where ``if wf.patched(patch_id):`` was, once no run needs the old branch."""
    instance = current_instance()
    if instance is None:
        raise RuntimeError("wf.deprecate_patch() can only be called inside a workflow")
    instance.deprecate_patch(_patch_id(patch_id, "wf.deprecate_patch()"))


def is_replaying() -> bool:
    """Inside a workflow: whether its code is being replayed from the log (what it does
    now was done before, by this or another process). False outside a workflow."""
    instance = current_instance()
    return instance is not None and instance.replaying


class WorkflowLogger:
    """``wf.logger``: logging for workflows and steps (the ``worldflow.workflow`` logger).

    In a workflow, a line is written when the code runs for the first time, not
    again when it is replayed; in a step, each attempt writes its lines. Each
    record carries ``run_id`` and ``workflow`` (in a step: ``run_id``, ``step``,
    ``step_id`` and ``attempt``) as attributes, which the AWS and GCP worlds' JSON
    log lines and OpenTelemetry's logging handler pick up.
    """

    def __init__(self, name: str = "worldflow.workflow") -> None:
        self.logger = logging.getLogger(name)

    def _log(self, level: int, msg: object, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        instance = current_instance()
        fields: dict[str, Any] = {}
        if instance is not None:
            if instance.replaying:
                return
            fields = {"run_id": instance.run_id, "workflow": instance.workflow.name}
        else:
            from ._attempts import _STEP_METADATA

            meta = _STEP_METADATA.get()
            if meta is not None:
                fields = {
                    "run_id": meta.run_id,
                    "step": meta.step_name,
                    "step_id": meta.step_id,
                    "attempt": meta.attempt,
                }
        if not self.logger.isEnabledFor(level):
            return
        extra: Mapping[str, Any] = {**fields, **(kw.pop("extra", None) or {})}
        kw.setdefault("stacklevel", 3)
        self.logger.log(level, msg, *args, extra=extra, **kw)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        self._log(logging.DEBUG, msg, args, kw)

    def info(self, msg: object, *args: Any, **kw: Any) -> None:
        self._log(logging.INFO, msg, args, kw)

    def warning(self, msg: object, *args: Any, **kw: Any) -> None:
        self._log(logging.WARNING, msg, args, kw)

    def error(self, msg: object, *args: Any, **kw: Any) -> None:
        self._log(logging.ERROR, msg, args, kw)

    def exception(self, msg: object, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._log(logging.ERROR, msg, args, kw)

    def critical(self, msg: object, *args: Any, **kw: Any) -> None:
        self._log(logging.CRITICAL, msg, args, kw)


#: ``wf.logger``: see :class:`WorkflowLogger`.
logger = WorkflowLogger()
