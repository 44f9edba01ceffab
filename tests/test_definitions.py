"""@workflow and @step: the forms they take and what a call does outside a run."""

from __future__ import annotations

import asyncio

import pytest

import worldflow as wf
from worldflow._definitions import get_step, get_workflow


@wf.step
def plain_sync(x: int) -> int:
    return x + 1


@wf.step(name="custom.async", max_retries=0, retry_delay="2s", backoff=3, timeout="1m")
async def named_async(x: int) -> int:
    return x * 2


@wf.workflow
async def bare_workflow() -> None:
    return None


@wf.workflow(name="test-hail-ride")
async def named_workflow() -> None:
    return None


def test_names_default_to_module_and_qualname() -> None:
    assert plain_sync.name == f"{__name__}.plain_sync"
    assert bare_workflow.name == f"{__name__}.bare_workflow"
    assert named_workflow.name == "test-hail-ride"
    assert get_workflow("test-hail-ride") is named_workflow
    assert get_step("custom.async") is named_async


def test_step_options_are_parsed() -> None:
    options = named_async.options
    assert (options.max_retries, options.retry_delay, options.backoff, options.timeout) == (
        0,
        2.0,
        3.0,
        60.0,
    )
    assert plain_sync.options.max_retries == 3 and plain_sync.options.retry_delay == 1.0
    # api.md: the delay before attempt k (k >= 2) is retry_delay * backoff ** (k - 2)
    assert [named_async.options.delay_before(k) for k in (2, 3, 4)] == [2.0, 6.0, 18.0]


def test_a_step_outside_a_workflow_is_a_plain_call() -> None:
    assert plain_sync(1) == 2
    assert asyncio.run(named_async(4)) == 8


def test_calling_a_workflow_directly_says_how_to_start_it() -> None:
    with pytest.raises(TypeError, match=r"wf\.start\(bare_workflow"):
        bare_workflow()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"backoff": 0.5}, "backoff"),
        ({"retry_delay": "soon"}, "'soon'"),
        ({"timeout": "0s"}, "timeout"),
    ],
)
def test_bad_step_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        wf.step(**kwargs)  # type: ignore[call-overload]


def test_workflow_must_be_async() -> None:
    with pytest.raises(TypeError, match="async def"):
        wf.workflow(lambda: None)  # type: ignore[arg-type,return-value]


def test_two_functions_cannot_share_a_name() -> None:
    with pytest.raises(ValueError, match="two workflows are named 'test-hail-ride'"):

        @wf.workflow(name="test-hail-ride")
        async def other() -> None:
            return None


def test_helpers_outside_a_workflow() -> None:
    with pytest.raises(RuntimeError, match="inside a workflow"):
        wf.get_workflow_metadata()
    with pytest.raises(RuntimeError, match="inside a running step"):
        wf.get_step_metadata()
    with pytest.raises(RuntimeError, match="inside a workflow"):
        wf.create_hook()
    assert wf.now().tzinfo is not None
    assert 0 <= wf.random() < 1
    assert wf.uuid4().version == 4


def test_sleep_outside_a_workflow_is_asyncio_sleep() -> None:
    asyncio.run(wf.sleep("1ms"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'3x'"):
        wf.sleep("3x")
