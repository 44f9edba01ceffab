"""Typed hooks (``wf.define_hook``): payloads checked against a pydantic model, a
dataclass, a TypedDict or a plain type; a bad one is refused at ``resume`` (422 on the
webhook path) and never reaches the run; the workflow gets the typed value, on replay
too."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, Literal, TypedDict

import pydantic
import pytest

import worldflow as wf
from worldflow.testing import http_call
from worldflow.worlds.local import LocalWorld


class Approval(pydantic.BaseModel):
    approved: bool
    by: str


@dataclasses.dataclass
class Shipment:
    carrier: Literal["ups", "dhl"]
    parcels: list[str]
    weight_kg: float
    note: str | None = None


class Refund(TypedDict):
    amount_cents: int
    reason: str


approval = wf.define_hook(Approval)
shipment = wf.define_hook(Shipment)
refund = wf.define_hook(Refund)
count = wf.define_hook(int, name="tests.count")


@wf.workflow
async def approve(order: str) -> dict[str, Any]:
    decision = await approval.create(token=f"approve:{order}")
    assert isinstance(decision, Approval)
    return {"approved": decision.approved, "by": decision.by}


@wf.workflow
async def ship(order: str) -> dict[str, Any]:
    sent = await shipment.create(token=f"ship:{order}")
    assert isinstance(sent, Shipment)
    return dataclasses.asdict(sent)


@wf.workflow
async def refund_then_count(order: str) -> list[Any]:
    got: list[Any] = [await refund.create(token=f"refund:{order}")]
    hook = count.create(token=f"count:{order}")
    while True:
        try:
            got.append(await hook)
            return got
        except wf.InvalidHookPayload as exc:  # a payload that came without the check
            got.append(f"refused: {exc}")


@wf.workflow
async def typed_webhook() -> dict[str, Any]:
    hook = approval.create_webhook()
    await wf.sleep(0)  # records the hook before the test reads its URL
    decision = await hook
    return {"approved": decision.approved, "by": decision.by}


def _serve(tmp_path: Path, body: Any, *, always_replay: bool = False) -> Any:
    async def main() -> Any:
        async with wf.worker(LocalWorld(tmp_path), always_replay=always_replay):
            return await body()

    return asyncio.run(main())


async def _received(run: wf.Run[Any]) -> int:
    return sum(1 for e in await run.events() if e.kind == "hook_received")


async def _resume_when_ready(resume: Any, token: str, payload: Any) -> None:
    for _ in range(500):
        try:
            await resume(token, payload)
            return
        except wf.HookNotFound:
            await asyncio.sleep(0.01)
    raise AssertionError(f"hook {token!r} never appeared")


@pytest.mark.parametrize("always_replay", [False, True], ids=["warm", "replay"])
def test_a_model_payload_is_checked_at_resume_and_arrives_typed(
    tmp_path: Path, always_replay: bool
) -> None:
    async def body() -> Any:
        run = await wf.start(approve, "o1")
        with pytest.raises(wf.InvalidHookPayload, match="by"):
            await _resume_when_ready(approval.resume, "approve:o1", {"approved": True})
        with pytest.raises(wf.InvalidHookPayload):
            await approval.resume("approve:o1", {"approved": "perhaps", "by": "ana"})
        await asyncio.sleep(0.2)
        assert await _received(run) == 0  # refused payloads never reached the run
        await approval.resume("approve:o1", Approval(approved=True, by="ana"))
        return await run.result(timeout=10)

    assert _serve(tmp_path, body, always_replay=always_replay) == {"approved": True, "by": "ana"}


def test_a_dataclass_payload_checked_field_by_field(tmp_path: Path) -> None:
    async def body() -> Any:
        run = await wf.start(ship, "o2")
        good = {"carrier": "dhl", "parcels": ["p1", "p2"], "weight_kg": 3}
        bad = [
            ({**good, "carrier": "fedex"}, "expected one of ['ups', 'dhl']"),
            ({**good, "parcels": ["p1", 2]}, "parcels[1]: expected str"),
            ({**good, "weight_kg": True}, "weight_kg: expected a number"),
            ({**good, "colour": "red"}, "unknown 'colour'"),
            ({"carrier": "ups"}, "missing 'parcels', 'weight_kg'"),
            (["not", "an", "object"], "expected an object"),
        ]
        for payload, reason in bad:
            with pytest.raises(wf.InvalidHookPayload, match=reason.replace("[", r"\[")):
                await _resume_when_ready(shipment.resume, "ship:o2", payload)
        await _resume_when_ready(shipment.resume, "ship:o2", good)
        return await run.result(timeout=10)

    result = _serve(tmp_path, body)
    assert result == {"carrier": "dhl", "parcels": ["p1", "p2"], "weight_kg": 3.0, "note": None}


def test_a_payload_that_came_unchecked_raises_at_the_await_and_on_replay(tmp_path: Path) -> None:
    """An untyped ``wf.resume_hook`` skips the check: the workflow's ``await`` raises
    ``InvalidHookPayload`` for it (it can catch it and wait for the next), and a replay
    of the recorded log does the same."""

    async def body() -> Any:
        run = await wf.start(refund_then_count, "o3")
        with pytest.raises(wf.InvalidHookPayload, match="amount_cents: expected int"):
            await _resume_when_ready(
                refund.resume, "refund:o3", {"amount_cents": "12", "reason": "x"}
            )
        await _resume_when_ready(
            refund.resume, "refund:o3", {"amount_cents": 1200, "reason": "late"}
        )
        await _resume_when_ready(wf.resume_hook, "count:o3", "three")  # unchecked
        await wf.resume_hook("count:o3", 3)
        return await run.result(timeout=10)

    result = _serve(tmp_path, body)
    assert result[0] == {"amount_cents": 1200, "reason": "late"}
    assert result[1].startswith("refused: the payload of hook type 'tests.count': expected int")
    assert result[2] == 3

    async def replayed() -> Any:  # a cold process replays the whole log: the same outcome
        return await wf.get_run(
            (await wf.list_runs(workflow=refund_then_count.name)).runs[0].id
        ).result(timeout=10)

    assert _serve(tmp_path, replayed, always_replay=True) == result


def test_a_typed_webhook_answers_422_to_a_body_that_does_not_fit(tmp_path: Path) -> None:
    async def body() -> Any:
        run = await wf.start(typed_webhook)
        for _ in range(500):
            created = [e for e in await run.events() if e.kind == "hook_created"]
            if created:
                break
            await asyncio.sleep(0.01)
        assert created[0].data["spec"] == {"schema": approval.name}
        url = created[0].data["url"]
        status, reply = await http_call("POST", url, b'{"approved": "yes"}')
        assert status == 422 and b"by" in reply, reply
        status, _ = await http_call("POST", url, b"not json")
        assert status == 422
        assert await _received(run) == 0
        status, _ = await http_call("POST", url, b'{"approved": false, "by": "bo"}')
        assert status == 202
        return await run.result(timeout=10)

    assert _serve(tmp_path, body) == {"approved": False, "by": "bo"}


def test_definitions_are_named_once() -> None:
    assert approval.name == "tests.test_typed_hooks.Approval" or approval.name.endswith(
        "test_typed_hooks.Approval"
    )
    with pytest.raises(ValueError, match="already defined"):
        wf.define_hook(str, name="tests.count")
    assert wf.define_hook(int, name="tests.count").type is int  # the same again is fine
    with pytest.raises(RuntimeError, match="inside a workflow"):
        approval.create()
