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

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], name: str) -> None:
        self.fn = fn
        self.name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        raise TypeError(
            f"workflow {self.name!r} cannot be called directly: start a durable run "
            f"with `await wf.start({self.fn.__name__}, ...)`"
        )

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
def workflow(*, name: str | None = None) -> _WorkflowDecorator: ...
def workflow(
    fn: Callable[P, Coroutine[Any, Any, R]] | None = None, /, *, name: str | None = None
) -> Workflow[P, R] | _WorkflowDecorator:
    """Mark an ``async def`` as a durable workflow.

    >>> @wf.workflow
    ... async def hail_ride(request_id: str) -> dict: ...
    >>> @wf.workflow(name="hail-ride")   # a stable name survives renames
    ... async def hail_ride_v2(request_id: str) -> dict: ...
    """

    def decorate(f: Callable[P, Coroutine[Any, Any, R]]) -> Workflow[P, R]:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"@workflow needs an async def function, got {f!r}")
        wf = Workflow(f, name or _default_name(f))
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
    remote: bool | None = None,
) -> Step[P, Any] | _StepDecorator:
    """Mark a function (``async def`` or plain ``def``) as a step: its input and
    output are recorded and it is retried on failure.

    >>> @wf.step(max_retries=5, retry_delay="1s", backoff=2.0, timeout="30s")
    ... def assign_driver(request: dict) -> dict: ...

    Plain ``def`` steps run in a worker thread, off the workflow's loop.
    ``remote=True``: each attempt is a message any worker may take (its own Lambda
    invocation, its own Cloud Tasks request); the workflow's invocation ends while
    it runs. ``None`` (the default): remote when ``WORLDFLOW_REMOTE_STEPS=1``.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 1:
        raise ValueError(f"backoff must be a number >= 1, got {backoff!r}")
    if remote is not None and not isinstance(remote, bool):
        raise ValueError(f"remote must be True, False or None, got {remote!r}")
    options = StepOptions(
        max_retries=max_retries,
        retry_delay=parse_duration(retry_delay, what="retry_delay"),
        backoff=float(backoff),
        timeout=None if timeout is None else parse_duration(timeout, what="timeout"),
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
