"""Workflows of the remote-step conformance tests (:mod:`._suite_remote`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import worldflow as wf

CALLS: Counter[str] = Counter()
GATES: dict[str, bool] = {}


@wf.step(remote=True)
def square(tag: str, i: int) -> int:
    CALLS[f"{tag}:square"] += 1
    return i * i


@wf.workflow
async def remote_fanout(tag: str, n: int) -> int:
    return sum(await asyncio.gather(*(square(tag, i) for i in range(n))))


@wf.step(remote=False)
def inline_double(tag: str, i: int) -> int:
    CALLS[f"{tag}:inline"] += 1
    return 2 * i


@wf.workflow
async def mixed(tag: str) -> list[int]:
    first = await inline_double(tag, 1)
    both = await asyncio.gather(square(tag, 3), inline_double(tag, 4))
    return [first, *both]


@wf.step(remote=True, max_retries=2, retry_delay=0)
async def flaky(tag: str) -> int:
    attempt = wf.get_step_metadata().attempt
    CALLS[f"{tag}:flaky"] += 1
    if attempt < 3:
        raise ValueError(f"attempt {attempt} of {tag} failed")
    return attempt


class Declined(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"declined with code {code}")
        self.code = code


@wf.step(remote=True, max_retries=1, retry_delay=0)
async def declines(tag: str) -> None:
    CALLS[f"{tag}:declines"] += 1
    raise Declined(51)


@wf.workflow
async def retried_and_failed(tag: str) -> dict[str, Any]:
    attempt = await flaky(tag)
    try:
        await declines(tag)
    except Declined as exc:
        return {"attempt": attempt, "error": type(exc).__name__, "code": exc.code}
    return {"attempt": attempt, "error": None}


@wf.step(remote=True, max_retries=2, retry_delay=0)
async def remote_gated(tag: str) -> int:
    CALLS[f"{tag}:gated"] += 1
    while not GATES.get(tag):  # noqa: ASYNC110 - a plain flag the test sets from outside
        await asyncio.sleep(0.005)
    return wf.get_step_metadata().attempt


@wf.workflow
async def gated_remote(tag: str) -> int:
    return await remote_gated(tag)


@wf.step(remote=True, max_retries=1, retry_delay=0, timeout="30s")
async def leased(tag: str) -> int:
    CALLS[f"{tag}:leased"] += 1
    return wf.get_step_metadata().attempt


@wf.workflow
async def leased_remote(tag: str) -> int:
    return await leased(tag)
