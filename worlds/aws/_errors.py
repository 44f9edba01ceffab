"""Translating botocore's errors into worldflow's, at the seam.

Nothing outside this package sees a botocore exception: every call to AWS goes
through :func:`aws_call`, which re-raises what failed as a
:class:`worldflow.WorldError` naming the operation and the resource, chained
to the original (``raise ... from exc``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from worldflow._errors import WorldError

__all__ = ["AwsWorldError", "aws_call", "error_code"]


class AwsWorldError(WorldError):
    """An AWS call failed; ``code`` is AWS's error code (``"ResourceNotFoundException"``...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


_HINTS = {
    "ResourceNotFoundException": "does the table exist? run `worldflow setup aws`",
    "AWS.SimpleQueueService.NonExistentQueue": "does the queue exist? run `worldflow setup aws`",
    "QueueDoesNotExist": "does the queue exist? run `worldflow setup aws`",
    "NoSuchBucket": "does the bucket exist? run `worldflow setup aws`",
    "AccessDeniedException": "the function's IAM role lacks a permission",
    "AccessDenied": "the function's IAM role lacks a permission",
    "ExpiredTokenException": "the AWS credentials have expired",
}


def error_code(exc: BaseException) -> str:
    """AWS's error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


@contextlib.contextmanager
def aws_call(operation: str, resource: str) -> Iterator[None]:
    """Run AWS calls, turning botocore errors into :class:`AwsWorldError`.

    >>> with aws_call("DynamoDB GetItem", "table 'worldflow'"):
    ...     client.get_item(...)
    """
    try:
        yield
    except WorldError:
        raise
    except Exception as exc:
        module = type(exc).__module__ or ""
        if not module.startswith(("botocore", "boto3", "urllib3")):
            raise
        code = error_code(exc)
        hint = _HINTS.get(code)
        detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
        message = f"AWS {operation} on {resource} failed ({detail})"
        if hint:
            message += f"; {hint}"
        raise AwsWorldError(message, code) from exc
