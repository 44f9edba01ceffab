"""The AWS world: Lambda + SQS + DynamoDB (+ S3). Needs ``pip install 'worldflow[aws]'``.

- :class:`AwsWorld` / :func:`create_world` (``WORLDFLOW_WORLD=aws``, settings
  ``WORLDFLOW_AWS_TABLE``, ``WORLDFLOW_AWS_QUEUE_URL``, ``WORLDFLOW_AWS_BUCKET``);
- :func:`lambda_handler`: the Lambda entry point (SQS batches, webhooks);
- :func:`setup`: create the table, queue, dead-letter queue and bucket.

Importing this package imports neither boto3 nor powertools: they load when a
World is built or the handler is first called, so a cold start pays only for
what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CLI_COMMANDS", "AwsWorld", "create_world", "lambda_handler", "setup"]

#: ``worldflow setup aws`` and ``worldflow package aws``.
CLI_COMMANDS = {
    "setup": "worldflow.worlds.aws._cli:SETUP",
    "package": "worldflow.worlds.aws._cli:PACKAGE",
}

if TYPE_CHECKING:
    from ._setup import setup
    from ._world import AwsWorld, create_world


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    """The Lambda handler: ``worldflow.worlds.aws.lambda_handler``."""
    from ._host import handle

    return handle(event, context)


def __getattr__(name: str) -> Any:
    if name in ("AwsWorld", "create_world"):
        from . import _world

        return getattr(_world, name)
    if name == "setup":
        from ._setup import setup

        return setup
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
