"""``@workflow`` and ``@step``: what they record about a function, and the registry.

A decorated function keeps its signature for type checkers (``ParamSpec``).
Inside a running workflow a step call becomes a command: it returns a future
of the workflow's loop at once and is recorded at the call. Anywhere else a
step is a plain function call.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from ._duration import parse_duration
from ._errors import WorkflowNotFound
from ._limits_spec import Limit, Rate, as_limit, parse_rate

if TYPE_CHECKING:
    import asyncio

    from ._instance import WorkflowInstance

__all__ = ["Step", "StepOptions", "Workflow", "get_step", "get_workflow", "step", "workflow"]

P = ParamSpec("P")
R = TypeVar("R")

_WORKFLOWS: dict[str, Workflow[Any, Any]] = {}
_STEPS: dict[str, Step[Any, Any]] = {}


def _instance_until_loop() -> WorkflowInstance | None:
    """The workflow instance running now: none before the workflow loop's module is
    imported (nothing can run workflow code without it), then the loop's own answer.

    Keeps ``import worldflow`` (which defining steps needs) from importing asyncio."""
    loop = sys.modules.get(f"{__package__}._loop")
    if loop is None:
        return None
    global current_instance
    current_instance = loop.current_instance
    return current_instance()


current_instance: Callable[[], WorkflowInstance | None] = _instance_until_loop


def _default_name(fn: Callable[..., Any]) -> str:
    module = fn.__module__
    if module == "__main__":
        # A script run as ``python -m pkg.mod`` or ``python path/mod.py`` must
        # record the name a worker importing that module will find.
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif main is not None and getattr(main, "__file__", None):
            module = os.path.splitext(os.path.basename(str(main.__file__)))[0]
    return f"{module}.{fn.__qualname__}"


@dataclasses.dataclass(frozen=True, slots=True)
class StepOptions:
    """How a step is retried: ``max_retries`` after the first attempt, with the
    delay before attempt k (k >= 2) being ``retry_delay * backoff ** (k - 2)``."""

    max_retries: int = 3
    retry_delay: float = 1.0
    backoff: float = 2.0
    timeout: float | None = None
    concurrency: Limit | None = None  # at most n attempts at once (per key)
    rate_limit: Rate | None = None  # attempts spaced by rate_limit.every (per rate_key)
    rate_key: Callable[..., object] | None = None
    remote: bool | None = None  # None: as WORLDFLOW_REMOTE_STEPS says (worldflow._remote)

    def delay_before(self, attempt: int) -> float:
        return self.retry_delay * self.backoff ** (attempt - 2)


class Step(Generic[P, R]):
    """A function decorated with ``@step``.

    Called inside a workflow it returns an ``asyncio.Future`` of the result
    (awaited, it gives the value or raises the step's error once retries are
    spent). Called anywhere else, it is the plain function.
    """

    def __init__(self, fn: Callable[P, Any], name: str, options: StepOptions) -> None:
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        instance = current_instance()
        if instance is None:
            return self.fn(*args, **kwargs)  # type: ignore[no-any-return]
        return instance.call_step(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"


class Workflow(Generic[P, R]):
    """A function decorated with ``@workflow``: start it with ``wf.start(fn, ...)``."""

    def __init__(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]],
        name: str,
        concurrency: Limit | None = None,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.concurrency = concurrency  # at most n runs at once (per key): see _limits_flow
        self.timeout = timeout  # seconds from start after which a run fails (TimeoutError)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Inside a workflow: start this workflow as a child run and wait for its result
        (a command, like a step call). Anywhere else: a TypeError."""
        instance = current_instance()
        if instance is None:
            raise TypeError(
                f"workflow {self.name!r} cannot be called directly: start a durable run "
                f"with `await wf.start({self.fn.__name__}, ...)`"
            )
        self.check_arguments(args, kwargs)
        if self.concurrency is not None:
            raise ValueError(
                f"workflow {self.name!r} has a concurrency limit: it cannot run as a child "
                "yet; start it from a step"
            )
        _, fut = instance.start_child(
            self, args, kwargs, run_id=None, detached=False, timeout=self.timeout
        )
        return fut

    @functools.cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` unless the function accepts ``args`` and ``kwargs``.

        Checked before a run is created: a run started with arguments its
        workflow cannot take would only fail once a worker executes it.

        >>> checkout.check_arguments(("o-1",), {})
        >>> checkout.check_arguments((), {})
        Traceback (most recent call last):
        TypeError: workflow 'shop.checkout' (order_id, amount=1.0): missing a required argument: 'order_id'
        """
        signature = self._signature
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            # The parameters as the caller passes them: annotations are noise here.
            plain = signature.replace(
                parameters=[
                    p.replace(annotation=inspect.Parameter.empty)
                    for p in signature.parameters.values()
                ],
                return_annotation=inspect.Signature.empty,
            )
            raise TypeError(f"workflow {self.name!r} {plain}: {exc}") from None

    def __repr__(self) -> str:
        return f"<workflow {self.name!r}>"


def check_timeout(value: object, where: str) -> float | None:
    """A run's timeout in seconds (None for none); a bad one is a ValueError naming
    ``where`` and quoting the value."""
    if value is None:
        return None
    seconds = parse_duration(value, what=f"{where} timeout")
    if seconds <= 0:
        raise ValueError(f"{where}: a run's timeout must be more than 0 seconds, got {value!r}")
    return seconds


def _register(table: dict[str, Any], kind: str, obj: Step[Any, Any] | Workflow[Any, Any]) -> None:
    known = table.get(obj.name)
    if known is not None and known.fn is not obj.fn:
        same_place = (known.fn.__module__, known.fn.__qualname__) == (
            obj.fn.__module__,
            obj.fn.__qualname__,
        )
        if not same_place:  # a module imported twice re-registers itself: fine
            raise ValueError(
                f"two {kind}s are named {obj.name!r}: "
                f"{known.fn.__module__}.{known.fn.__qualname__} and "
                f"{obj.fn.__module__}.{obj.fn.__qualname__}; give one of them name=..."
            )
    table[obj.name] = obj


class _WorkflowDecorator(Protocol):
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Workflow[P, R]: ...


class _StepDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Step[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Workflow[P, R]: ...
@overload
def workflow(
    *, name: str | None = None, concurrency: int | Limit | None = None, timeout: object = None
) -> _WorkflowDecorator: ...
def workflow(
    fn: Callable[P, Coroutine[Any, Any, R]] | None = None,
    /,
    *,
    name: str | None = None,
    concurrency: int | Limit | None = None,
    timeout: object = None,
) -> Workflow[P, R] | _WorkflowDecorator:
    """Mark an ``async def`` as a durable workflow.

    >>> @wf.workflow
    ... async def hail_ride(request_id: str) -> dict: ...
    >>> @wf.workflow(name="hail-ride")   # a stable name survives renames
    ... async def hail_ride_v2(request_id: str) -> dict: ...
    >>> @wf.workflow(concurrency=wf.Limit(1, key=lambda customer_id, **_: customer_id))
    ... async def sync_customer(customer_id: str) -> None: ...
    >>> @wf.workflow(timeout="1d")       # a run still going a day after its start fails
    ... async def nightly() -> None: ...

    ``concurrency``: at most that many runs at once, across every worker (an int,
    a ``wf.Limit`` with a key function of the workflow's arguments, or a shared
    ``wf.Queue``); runs beyond it wait as ``pending`` and start in start order.
    """
    limit = as_limit(concurrency, "@workflow")
    seconds = check_timeout(timeout, "@wf.workflow(timeout=...)")

    def decorate(f: Callable[P, Coroutine[Any, Any, R]]) -> Workflow[P, R]:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"@workflow needs an async def function, got {f!r}")
        wf = Workflow(f, name or _default_name(f), limit, seconds)
        _register(_WORKFLOWS, "workflow", wf)
        return wf

    return decorate if fn is None else decorate(fn)  # type: ignore[return-value]


@overload
def step(fn: Callable[P, Awaitable[R]], /) -> Step[P, R]: ...
@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    max_retries: int = 3,
    retry_delay: object = 1.0,
    backoff: float = 2.0,
    timeout: object = None,
    concurrency: int | Limit | None = None,
    rate_limit: str | Rate | None = None,
    key: Callable[..., object] | None = None,
    remote: bool | None = None,
) -> _StepDecorator: ...
def step(
    fn: Callable[P, Any] | None = None,
    /,
    *,
    name: str | None = None,
    max_retries: int = 3,
    retry_delay: object = 1.0,
    backoff: float = 2.0,
    timeout: object = None,
    concurrency: int | Limit | None = None,
    rate_limit: str | Rate | None = None,
    key: Callable[..., object] | None = None,
    remote: bool | None = None,
) -> Step[P, Any] | _StepDecorator:
    """Mark a function (``async def`` or plain ``def``) as a step: its input and
    output are recorded and it is retried on failure.

    >>> @wf.step(max_retries=5, retry_delay="1s", backoff=2.0, timeout="30s")
    ... def assign_driver(request: dict) -> dict: ...

    Plain ``def`` steps run in a worker thread, off the workflow's loop.

    ``concurrency``: at most that many attempts of this step at once across every
    worker (an int, or a ``wf.Limit`` with a key function of the step's arguments).
    ``rate_limit``: attempts spaced so that at most COUNT start per PERIOD
    (``"50/m"``, ``"10/s"``), per ``key(*args, **kwargs)`` when ``key`` is given;
    attempts beyond the rate wait durably, they do not fail.
    ``remote=True``: each attempt is a message any worker may take (its own Lambda
    invocation, its own Cloud Tasks request); the workflow's invocation ends while
    it runs. ``None`` (the default): remote when ``WORLDFLOW_REMOTE_STEPS=1``.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 1:
        raise ValueError(f"backoff must be a number >= 1, got {backoff!r}")
    if key is not None and rate_limit is None:
        raise ValueError("@step(key=...) is the rate limit's key: give rate_limit= too")
    if key is not None and not callable(key):
        raise TypeError(f"@step(key=...) must be a function of the step's arguments, got {key!r}")
    if remote is not None and not isinstance(remote, bool):
        raise ValueError(f"remote must be True, False or None, got {remote!r}")
    if remote and (concurrency is not None or rate_limit is not None):
        raise ValueError(
            "@step(remote=True) cannot take concurrency= or rate_limit= yet (a limited "
            "step's slot is held by its run's executor): drop one of them"
        )
    options = StepOptions(
        max_retries=max_retries,
        retry_delay=parse_duration(retry_delay, what="retry_delay"),
        backoff=float(backoff),
        timeout=None if timeout is None else parse_duration(timeout, what="timeout"),
        concurrency=as_limit(concurrency, "@step"),
        rate_limit=None
        if rate_limit is None
        else parse_rate(rate_limit, what="@step(rate_limit=...)"),
        rate_key=key,
        remote=remote,
    )
    if options.timeout is not None and options.timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")

    def decorate(f: Callable[P, Any]) -> Step[P, Any]:
        if isinstance(f, Step | Workflow):
            raise TypeError(f"{f!r} is already decorated")
        s: Step[P, Any] = Step(f, name or _default_name(f), options)
        _register(_STEPS, "step", s)
        return s

    return decorate if fn is None else decorate(fn)  # type: ignore[return-value]


def get_workflow(name: str) -> Workflow[Any, Any]:
    try:
        return _WORKFLOWS[name]
    except KeyError:
        raise WorkflowNotFound(name, list(_WORKFLOWS)) from None


def get_step(name: str) -> Step[Any, Any] | None:
    return _STEPS.get(name)


def workflow_names() -> list[str]:
    return sorted(_WORKFLOWS)
