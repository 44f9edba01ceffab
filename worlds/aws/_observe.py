"""powertools on Lambda: a JSON Logger, Metrics and Tracer around each invocation.

Log lines carry the SQS message id and run id of the record being handled
(a context variable: the records of a batch are handled concurrently), and
lines logged inside a step carry the step's run id, step id and attempt
(``wf.get_step_metadata()``). Metrics (CloudWatch's embedded metric format,
flushed at the end of each invocation) count the messages of each batch and
those that come again. Tracer needs the X-Ray SDK (powertools' ``tracer``
extra, part of ``worldflow[aws]``); without it, tracing is skipped.
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any

import worldflow as wf

__all__ = ["RECORD", "Powertools", "StepContext", "powertools"]

#: The SQS record being handled by this task: {"message_id": ..., "run_id": ...}.
RECORD: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "worldflow_aws_record", default=None
)


class Powertools:
    def __init__(self) -> None:
        from aws_lambda_powertools import Logger, Metrics
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        service = os.environ.get("POWERTOOLS_SERVICE_NAME", "worldflow")
        self.logger = Logger(service=service)
        self.logger.registered_handler.addFilter(StepContext())
        # worldflow's own loggers write through powertools' JSON formatter too.
        copy_config_to_registered_loggers(source_logger=self.logger, include={"worldflow"})
        self.metrics = Metrics(
            namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "worldflow"), service=service
        )
        self.tracer: Any = None
        if importlib.util.find_spec("aws_xray_sdk") is not None:  # powertools[tracer]
            from aws_lambda_powertools import Tracer

            self.tracer = Tracer(service=service)

    def wrap(self, fn: Callable[[Any, Any], Any], event: Any, context: Any) -> Any:
        handler = self.logger.inject_lambda_context(clear_state=True)(fn)
        if self.tracer is not None:
            handler = self.tracer.capture_lambda_handler(handler)
        return self.metrics.log_metrics(handler)(event, context)

    def count_batch(self, records: int, again: int) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name="Messages", unit=MetricUnit.Count, value=records)
        self.metrics.add_metric(name="MessagesAgain", unit=MetricUnit.Count, value=again)


class StepContext(logging.Filter):
    """Adds the step's ``run_id``, ``step_id`` and ``attempt`` to a line logged inside a
    step, and the record's ``message_id`` and ``run_id`` to one logged while handling it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            meta = wf.get_step_metadata()
        except RuntimeError:  # not inside a step
            for key, value in (RECORD.get() or {}).items():
                setattr(record, key, value)
            return True
        record.run_id = meta.run_id
        record.step_id = meta.step_id
        record.attempt = meta.attempt
        return True


_instance: Powertools | None = None


def powertools() -> Powertools:
    """The process's one :class:`Powertools` (powertools' Logger is per process too)."""
    global _instance
    if _instance is None:
        _instance = Powertools()
    return _instance
