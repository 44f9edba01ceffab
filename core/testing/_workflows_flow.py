"""The workflows of the flow-control part of the conformance suite: schedules,
typed hooks, signed and answered webhooks, patches, the workflow logger.

The schedule is defined as users define them, then taken out of the registry:
a schedule keeps its ticks going in every serving runtime of the process, so
its test puts it back only while it runs (:func:`scheduled`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

import worldflow as wf
from worldflow import schedules as _schedules

#: Webhooks of this suite are signed with this secret, read (by name) from the
#: environment of whichever process receives the request.
SECRET_ENV = "WORLDFLOW_CONFORMANCE_WEBHOOK_SECRET"
SECRET = "conformance-secret"
os.environ.setdefault(SECRET_ENV, SECRET)

LINES: list[str] = []  # what the workflow logger's lines said, in this process


@wf.workflow(name="conformance.daily")
async def daily(scheduled_at: dt.datetime) -> str:
    return scheduled_at.isoformat()


wf.schedule(cron="30 9 * * *", timezone="Europe/London", catch_up="all")(daily)
_DAILY = _schedules._SCHEDULES.pop(daily.name)


@contextlib.contextmanager
def scheduled() -> Iterator[None]:
    """The daily schedule is on (registered) inside the block only."""
    _schedules._SCHEDULES[daily.name] = _DAILY
    try:
        yield
    finally:
        _schedules._SCHEDULES.pop(daily.name, None)


@dataclasses.dataclass
class Approval:
    approved: bool
    by: str


approval = wf.define_hook(Approval, name="conformance.approval")


@wf.workflow(name="conformance.typed_approval")
async def typed_approval(token: str) -> dict[str, Any]:
    decision = await approval.create(token=token)
    assert isinstance(decision, Approval)
    return {"approved": decision.approved, "by": decision.by}


@wf.workflow(name="conformance.typed_webhook")
async def typed_webhook() -> dict[str, Any]:
    hook = approval.create_webhook()
    await wf.sleep(0)  # records the hook before the test reads its URL
    decision = await hook
    return {"approved": decision.approved, "by": decision.by}


@wf.workflow(name="conformance.signed_webhook")
async def signed_webhook() -> list[Any]:
    hook = wf.create_webhook(
        verify=wf.signatures.github(secret_env=SECRET_ENV), respond=(200, {"thanks": True})
    )
    await wf.sleep(0)
    first = await hook
    second = await hook
    return [first.json(), second.json()]


@wf.step(name="conformance.priced")
async def priced(amount: int) -> int:
    return amount


@wf.workflow(name="conformance.patched_pricing")
async def patched_pricing(amount: int) -> int:
    first = await priced(amount)
    if wf.patched("conformance-new-pricing"):
        return first * 2 + await priced(1)
    return first


@wf.step(name="conformance.logged_step")
async def logged_step(i: int) -> int:
    wf.logger.info("conformance step %d", i)
    return i


@wf.workflow(name="conformance.logged")
async def logged(tag: str, n: int) -> int:
    total = 0
    for i in range(n):
        wf.logger.info("%s before %d", tag, i)
        total += await logged_step(i)
    wf.logger.info("%s done %d", tag, total)
    return total


@wf.workflow(name="conformance.answered_webhook")
async def answered_webhook() -> list[int]:
    """Answers each request from the workflow, after a step, while its caller waits."""
    hook = wf.create_webhook(respond="manual", respond_timeout="20s")
    await wf.sleep(0)
    got = []
    for _ in range(2):
        request = await hook
        n = request.json()["n"]
        doubled = await priced(2 * n)
        await request.respond(201, {"n": n, "doubled": doubled})
        got.append(n)
    return got


@wf.workflow(name="conformance.unanswered_webhook")
async def unanswered_webhook() -> str:
    """Takes its time: the caller gets the documented default, the run goes on."""
    hook = wf.create_webhook(respond="manual", respond_timeout="0.5s")
    await wf.sleep(0)
    request = await hook
    await wf.sleep("1h")
    await request.respond(200, {"late": True})  # recorded; nobody waits any more
    return "answered late"


@wf.step(name="conformance.debounce_work")
async def debounce_work(tag: str, n: int) -> str:
    return f"{tag}:{n}"


@wf.workflow(name="conformance.debounce_target")
async def debounce_target(tag: str, n: int) -> str:
    return await debounce_work(tag, n)
