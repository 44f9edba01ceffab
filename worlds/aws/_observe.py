"""powertools on Lambda: a JSON Logger (run id in every line), Metrics, and Tracer.

Metrics come from what the engine appends (steps completed, retried and
failed, runs ended, step latency from an attempt's start to its result), so
the engine needs no hooks for them. They are emitted in CloudWatch's
embedded metric format at the end of each invocation. Tracer needs the X-Ray
SDK (powertools' ``tracer`` extra, part of ``worldflow[aws]``); without it,
tracing is skipped.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any

from worldflow._world import Append

__all__ = ["Powertools", "powertools"]


class Powertools:
    def __init__(self) -> None:
        from aws_lambda_powertools import Logger, Metrics
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        service = os.environ.get("POWERTOOLS_SERVICE_NAME", "worldflow")
        self.logger = Logger(service=service)
        # Lines logged inside a step (by worldflow, or by the step through this
        # service's Logger) carry the step's run id, step id and attempt.
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
        self._started: dict[tuple[str, int], float] = {}

    def wrap(self, fn: Callable[[Any, Any], Any], event: Any, context: Any) -> Any:
        handler = self.logger.inject_lambda_context(clear_state=True)(fn)
        if self.tracer is not None:
            handler = self.tracer.capture_lambda_handler(handler)
        return self.metrics.log_metrics(handler)(event, context)

    def append_keys(self, **keys: str) -> None:
        self.logger.append_keys(**keys)

    def count_batch(self, records: int, failures: int) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name="Messages", unit=MetricUnit.Count, value=records)
        self.metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=failures)

    def on_append(self, append: Append) -> None:
        """Count what an append records (the World calls this after each commit)."""
        from aws_lambda_powertools.metrics import MetricUnit

        counts = {"StepsCompleted": 0, "StepRetries": 0, "StepsFailed": 0, "RunsEnded": 0}
        for event in append.events:
            kind = event.kind
            key = (append.run_id, int(event.data.get("cid", 0)))
            if kind == "step_started":
                self._started[key] = event.at
            elif kind in ("step_completed", "step_retrying", "step_failed"):
                started = self._started.pop(key, None)
                if started is not None:
                    self.metrics.add_metric(
                        name="StepLatency",
                        unit=MetricUnit.Milliseconds,
                        value=max(0.0, (event.at - started) * 1000),
                    )
                name = {
                    "step_completed": "StepsCompleted",
                    "step_retrying": "StepRetries",
                    "step_failed": "StepsFailed",
                }[kind]
                counts[name] += 1
            elif kind in ("run_completed", "run_failed", "run_cancelled"):
                counts["RunsEnded"] += 1
        for name, value in counts.items():
            if value:
                self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


class StepContext(logging.Filter):
    """Adds ``run_id``, ``step_id`` and ``attempt`` to a record logged inside a step."""

    def filter(self, record: logging.LogRecord) -> bool:
        from worldflow._attempts import _STEP_METADATA

        meta = _STEP_METADATA.get()
        if meta is not None:
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
