"""Changing code under runs in flight (``wf.patched``, ``wf.deprecate_patch``), and logging
that writes each line once per run (``wf.logger``, ``wf.is_replaying``).

The code change is simulated in one process: the workflow reads ``CODE["version"]``,
as a redeployed module would have other code. ``always_replay=True`` makes every
resumption replay the log, as a cold process after a deploy does.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow.testing import wait_for_hook
from worldflow.worlds.local import LocalWorld

CODE = {"version": 1}


@wf.step
async def price_v1(order: str) -> str:
    return f"v1 price for {order}"


@wf.step
async def price_v2(order: str) -> str:
    return f"v2 price for {order}"


@wf.step
async def confirm(order: str) -> str:
    return f"confirmed {order}"


@wf.workflow
async def checkout(order: str) -> list[str]:
    got = [await confirm(order)]
    await wf.create_hook(token=f"go:{order}")  # runs wait here while the code changes
    if CODE["version"] == 1:
        got.append(await price_v1(order))
    elif CODE["version"] == 2:
        if wf.patched("new-pricing"):
            got.append(await price_v2(order))
        else:
            got.append(await price_v1(order))
    else:  # version 3: the old branch removed, once no run needed it
        wf.deprecate_patch("new-pricing")
        got.append(await price_v2(order))
    await wf.create_hook(token=f"ship:{order}")  # and here, past the pricing
    got.append(await confirm(order + "!"))
    return got


def _serve(tmp_path: Path, body: Any) -> Any:
    async def main() -> Any:
        async with wf.worker(LocalWorld(tmp_path), always_replay=True):
            return await body()

    return asyncio.run(main())


async def _waiting(order: str, at: str = "go") -> wf.Run[Any]:
    """A run of ``checkout`` waiting at its hook ``at`` ("go": before the pricing,
    "ship": after it)."""
    run = await wf.start(checkout, order, id=f"order-{order}")
    await wait_for_hook(run, f"go:{order}")
    if at == "ship":
        await wf.resume_hook(f"go:{order}", None)
        await wait_for_hook(run, f"ship:{order}")
    return run


async def _finish(order: str, at: str = "go") -> Any:
    if at == "go":
        await wf.resume_hook(f"go:{order}", None)
        await wait_for_hook(wf.get_run(f"order-{order}"), f"ship:{order}")
    await wf.resume_hook(f"ship:{order}", None)
    return await wf.get_run(f"order-{order}").result(timeout=10)


def test_a_patch_keeps_old_runs_on_the_old_branch_and_new_ones_on_the_new(
    tmp_path: Path,
) -> None:
    """A run recorded past the patch point by the old code replays down the old branch
    (no NonDeterminismError); a run that reaches the point first under the new code (a
    new one, or an old one still before it) takes the new branch."""
    CODE["version"] = 1

    async def under_v1() -> None:
        await _waiting("past", at="ship")  # priced by v1 already
        await _waiting("before", at="go")  # not priced yet

    _serve(tmp_path, under_v1)
    CODE["version"] = 2
    try:

        async def deploy_v2() -> tuple[Any, Any, Any]:
            await _waiting("new")
            return await _finish("past", at="ship"), await _finish("before"), await _finish("new")

        past, before, new = _serve(tmp_path, deploy_v2)
    finally:
        CODE["version"] = 1
    assert past == ["confirmed past", "v1 price for past", "confirmed past!"]  # replayed, no error
    assert before == ["confirmed before", "v2 price for before", "confirmed before!"]
    assert new == ["confirmed new", "v2 price for new", "confirmed new!"]

    async def markers(run_id: str) -> list[Any]:
        events = await wf.get_run(run_id).events()
        return [e.data.get("name") for e in events if e.kind == "patch_marked"]

    assert _serve(tmp_path, lambda: markers("order-new")) == ["new-pricing"]
    assert _serve(tmp_path, lambda: markers("order-past")) == []


def test_without_the_patch_the_same_change_breaks_old_runs(tmp_path: Path) -> None:
    """The control: v3's code (the new branch alone) on a log v1 recorded past the point
    is a NonDeterminismError naming the command."""
    CODE["version"] = 1
    _serve(tmp_path, lambda: _waiting("old", at="ship"))
    CODE["version"] = 3
    try:
        with pytest.raises(wf.RunFailed, match="no longer matches its event log"):
            _serve(tmp_path, lambda: _finish("old", at="ship"))
    finally:
        CODE["version"] = 1


def test_deprecating_a_patch_replays_runs_recorded_with_it(tmp_path: Path) -> None:
    CODE["version"] = 2
    try:
        _serve(tmp_path, lambda: _waiting("mid", at="ship"))  # past the patch, under v2
        CODE["version"] = 3

        async def deploy_v3() -> tuple[Any, Any]:
            await _waiting("fresh")
            return await _finish("mid", at="ship"), await _finish("fresh")

        mid, fresh = _serve(tmp_path, deploy_v3)
    finally:
        CODE["version"] = 1
    assert mid == ["confirmed mid", "v2 price for mid", "confirmed mid!"]
    assert fresh == ["confirmed fresh", "v2 price for fresh", "confirmed fresh!"]


def test_a_run_that_passed_the_patch_under_v2_replays_under_v3(tmp_path: Path) -> None:
    """The marker recorded under v2 is taken by deprecate_patch under v3 (no divergence)."""
    CODE["version"] = 2
    try:

        async def v2_to_the_end_but_one() -> Any:
            await _waiting("p")
            return await _finish("p")

        before = _serve(tmp_path, v2_to_the_end_but_one)
        CODE["version"] = 3
        from worldflow.testing import replay

        async def events() -> Any:
            return await wf.get_run("order-p").events()

        state = replay(_serve(tmp_path, events), checkout)  # the log checks against v3
    finally:
        CODE["version"] = 1
    assert state.status == "completed" and state.output is not None
    assert before == ["confirmed p", "v2 price for p", "confirmed p!"]


def test_bad_patch_ids_and_outside_a_workflow() -> None:
    with pytest.raises(RuntimeError, match="inside a workflow"):
        wf.patched("x")
    with pytest.raises(RuntimeError, match="inside a workflow"):
        wf.deprecate_patch("x")
    assert wf.is_replaying() is False


@wf.workflow
async def bad_patch() -> bool:
    return wf.patched("")


def test_an_empty_patch_id_fails_the_run_clearly(tmp_path: Path) -> None:
    async def body() -> None:
        with pytest.raises(wf.RunFailed, match="patch id"):
            await (await wf.start(bad_patch)).result(timeout=10)

    _serve(tmp_path, body)


# -- logging -------------------------------------------------------------------------------

SEEN: list[bool] = []


@wf.step
async def noisy_step(i: int) -> int:
    wf.logger.info("step %d", i)
    return i


@wf.workflow
async def chatty(n: int) -> int:
    total = 0
    for i in range(n):
        SEEN.append(wf.is_replaying())
        wf.logger.info("before step %d", i)
        total += await noisy_step(i)
    wf.logger.warning("done: %d", total)
    return total


def test_the_workflow_logger_writes_each_line_once_per_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SEEN.clear()

    async def body() -> int:
        return await (await wf.start(chatty, 4)).result(timeout=10)

    with caplog.at_level(logging.INFO, logger="worldflow.workflow"):
        assert _serve(tmp_path, body) == 6  # always replaying: the code ran 1+2+3+4+5 times
    lines = [r for r in caplog.records if r.name == "worldflow.workflow"]
    messages = [r.getMessage() for r in lines]
    assert messages.count("before step 0") == 1
    assert [m for m in messages if m.startswith("before")] == [f"before step {i}" for i in range(4)]
    assert messages.count("done: 6") == 1
    assert [m for m in messages if m.startswith("step ")] == [f"step {i}" for i in range(4)]
    assert True in SEEN and False in SEEN  # replays happened, and were told apart
    workflow_line = next(r for r in lines if r.getMessage() == "done: 6")
    assert workflow_line.run_id and workflow_line.workflow == chatty.name  # type: ignore[attr-defined]
    step_line = next(r for r in lines if r.getMessage() == "step 2")
    assert step_line.attempt == 1 and step_line.step_id  # type: ignore[attr-defined]
    assert step_line.step == noisy_step.name  # type: ignore[attr-defined]
