"""Workflows of the conformance suite's child-workflow and deadline tests (``_suite_children``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import worldflow as wf

#: tag:what -> how many times a step ran (a child's step, a cleanup).
CALLS: Counter[str] = Counter()


@wf.step(name="worldflow.testing.children.add")
async def add(tag: str, x: int, y: int) -> int:
    CALLS[f"{tag}:add"] += 1
    return x + y


@wf.step(name="worldflow.testing.children.cleanup")
async def cleanup(tag: str, what: str) -> str:
    CALLS[f"{tag}:cleanup:{what}"] += 1
    return what


@wf.workflow(name="worldflow.testing.children.kid")
async def kid(tag: str, x: int) -> int:
    return await add(tag, x, 1)


class KidError(Exception):
    """A child's own error class: its parent sees it as it is."""


@wf.workflow(name="worldflow.testing.children.failing_kid")
async def failing_kid(tag: str, why: str) -> int:
    await add(tag, 0, 0)
    raise KidError(f"kid failed: {why}")


@wf.workflow(name="worldflow.testing.children.sleeper")
async def sleeper(tag: str, name: str) -> str:
    try:
        await wf.sleep("1d")
    finally:
        await cleanup(tag, name)
    return name


@wf.workflow(name="worldflow.testing.children.family")
async def family(tag: str) -> list[Any]:
    """A child by wf.start, one by a call, one that fails, one nested two deep."""
    child = await wf.start(kid, tag, 1)
    first = await child.result()
    second = await kid(tag, 10)
    try:
        await failing_kid(tag, "on purpose")
        caught = "nothing"
    except KidError as exc:
        caught = f"{type(exc).__name__}: {exc}"
    nested = await grandparent_child(tag)
    return [first, second, caught, nested, child.id]


@wf.workflow(name="worldflow.testing.children.middle")
async def grandparent_child(tag: str) -> int:
    return await kid(tag, 100) + await kid(tag, 200)


@wf.workflow(name="worldflow.testing.children.fan_out")
async def fan_out(tag: str, n: int) -> int:
    results = await asyncio.gather(*(kid(tag, i) for i in range(n)))
    return sum(results)


@wf.workflow(name="worldflow.testing.children.named")
async def named(tag: str, child_id: str) -> list[Any]:
    child = await wf.start(kid, tag, 5, id=child_id)
    return [child.id, await child.result()]


@wf.workflow(name="worldflow.testing.children.waits_on_sleepers")
async def waits_on_sleepers(tag: str) -> str:
    """Two children that sleep a day; one detached. The test cancels this run."""
    attached = await wf.start(sleeper, tag, "attached")
    await wf.start(sleeper, tag, "detached", detached=True)
    try:
        return await attached.result()
    finally:
        await cleanup(tag, "parent")


@wf.workflow(name="worldflow.testing.children.leaves_early")
async def leaves_early(tag: str) -> str:
    """Returns without awaiting its child: the child is cancelled with the run's end."""
    await wf.start(sleeper, tag, "orphan")
    await add(tag, 1, 1)
    return "left"


@wf.workflow(name="worldflow.testing.children.bad_children", timeout="2h")
async def bad_children(tag: str) -> list[str]:
    """Every bad call is an error at the call; the run goes on and its good child runs."""
    errors = []
    try:
        await wf.start(add, tag, 1, 2)  # type: ignore[arg-type]  # a step, not a workflow
    except TypeError as exc:
        errors.append(f"TypeError: {exc}")
    try:
        await wf.start("no.such.workflow", 1)
    except wf.WorkflowNotFound as exc:
        errors.append(f"WorkflowNotFound: {exc}")
    for bad in ("soon", -1, 0, True):
        try:
            await wf.start(kid, tag, 1, timeout=bad)
        except ValueError as exc:
            errors.append(f"ValueError: {exc}")
    try:
        await wf.start(kid, tag, "not", "three", "args")
    except TypeError as exc:
        errors.append(f"TypeError: {exc}")
    try:
        await wf.start(kid, tag, 1, id="")
    except ValueError as exc:
        errors.append(f"ValueError: {exc}")
    try:
        await wf.get_run("anything").status()
    except RuntimeError as exc:
        errors.append(f"RuntimeError: {exc}")
    errors.append(f"kid: {await kid(tag, 41)}")
    return errors


@wf.workflow(name="worldflow.testing.children.deadline", timeout="1h")
async def with_deadline(tag: str) -> str:
    """Past its hour: cancelled (its finally block calls a step), its child too."""
    await wf.start(sleeper, tag, "child-of-deadline")
    try:
        await wf.sleep("1d")
    finally:
        await cleanup(tag, "deadline")
    return "slept"


@wf.workflow(name="worldflow.testing.children.swallows")
async def swallows_cancellation(tag: str) -> str:
    """Catches the deadline's cancellation and returns: the run fails all the same."""
    try:
        await wf.sleep("1d")
    except asyncio.CancelledError:
        return "swallowed"
    return "slept"


@wf.workflow(name="worldflow.testing.children.child_times_out")
async def child_times_out(tag: str) -> str:
    child = await wf.start(sleeper, tag, "slow-child", timeout="10m")
    try:
        await child.result()
    except TimeoutError as exc:
        return f"TimeoutError: {exc}"
    return "finished"


@wf.workflow(name="worldflow.testing.children.waits_with_timeout")
async def waits_with_timeout(tag: str) -> str:
    """``child.result(timeout=...)`` is a durable timer; the child runs on."""
    child = await wf.start(sleeper, tag, "waited-for", detached=True)
    try:
        return await child.result(timeout="5m")
    except TimeoutError:
        return "gave up waiting"


@wf.workflow(name="worldflow.testing.children.sequence")
async def sequence(tag: str) -> list[Any]:
    """For the duplicate-delivery scenario: children one after another, one failing."""
    out: list[Any] = [await kid(tag, 1), await kid(tag, 2)]
    try:
        await failing_kid(tag, "dup")
    except KidError as exc:
        out.append(str(exc))
    return out
