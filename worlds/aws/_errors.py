"""Calling AWS: off the event loop, with botocore's errors translated at the seam.

Nothing outside this package sees a botocore exception: every call goes
through :func:`aws_call`, which re-raises what failed as a
:class:`worldflow.WorldError` naming the operation and the resource, chained
to the original (``raise ... from exc``). boto3 is synchronous, so calls run
on a thread (:func:`off_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from worldflow.world import WorldError

__all__ = ["AwsWorldError", "aws_call", "error_code", "off_loop"]

T = TypeVar("T")


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
    "NoCredentialsError": "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
    "NoRegionError": "no AWS region: set AWS_DEFAULT_REGION (the variable boto3 reads)",
    "ProvisionedThroughputExceededException": "DynamoDB throttled the table: raise its "
    "provisioned capacity, or use on-demand billing",
    "ThrottlingException": "AWS throttled the calls",
    "RequestLimitExceeded": "the account's DynamoDB request limit was exceeded",
    "TransactionConflictException": "another transaction was writing the item",
    "ConnectionClosedError": "the connection to AWS was lost: a write may or may not have "
    "been applied",
    "EndpointConnectionError": "AWS could not be reached: is the network, or the endpoint "
    "URL, right?",
    "ReadTimeoutError": "AWS did not answer in time: a write may or may not have been applied",
}


def error_code(exc: BaseException) -> str:
    """AWS's error code of a botocore ``ClientError`` or an :class:`AwsWorldError`."""
    if isinstance(exc, AwsWorldError):
        return exc.code
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
        code = error_code(exc) or type(exc).__name__
        hint = _HINTS.get(code)
        detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
        message = f"AWS {operation} on {resource} failed ({detail})"
        response: Any = getattr(exc, "response", None)
        retried = response.get("ResponseMetadata", {}).get("RetryAttempts") if response else None
        if retried:
            message += f" after {retried} retries"
        if hint:
            message += f"; {hint}"
        raise AwsWorldError(message, code) from exc


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking boto3 call on a daemon thread of its own and await its result.

    Not ``asyncio.to_thread``: the default executor's threads are joined when
    ``asyncio.run`` ends, so an SQS long poll in flight held a finished
    program for up to its wait (20 s; measured: a cancelled 3 s call held
    ``asyncio.run`` for 3.0 s). A daemon thread is abandoned instead.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, daemon=True, name="worldflow-aws").start()
    return await future
