"""The public functions: start runs, look at them, sleep, resume hooks.

Each event loop gets one :class:`~worldflow._runtime.Runtime`, created on
first use from the configured World and stopped when the loop ends (or when
its ``async with wf.worker()`` block exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib
import os
import random as _random
import uuid as _uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from ._config import create_world
from ._definitions import Workflow, check_timeout, get_workflow
from ._duration import check_wakeup, parse_duration
from ._errors import CorruptLogError
from ._events import EventKind
from ._limits_spec import Throttle, as_throttle
from ._loop import current_instance
from ._runtime import Runtime
from ._streams import check_stream_name, read_stream
from ._tags import check_tags
from ._world import TERMINAL, Event, RunInfo, RunPage, World

if TYPE_CHECKING:
    from ._inspect import RunDetail, StepInfo

__all__ = [
    "ChildRun",
    "Run",
    "WorkflowMetadata",
    "configure",
    "get_run",
    "get_workflow_metadata",
    "list_runs",
    "now",
    "random",
    "resume_hook",
    "sleep",
    "start",
    "uuid4",
    "worker",
]

P = ParamSpec("P")
R = TypeVar("R")


Serve = Literal["auto", "always", "never"]
_SERVE_VALUES = ("auto", "always", "never")


@dataclasses.dataclass(slots=True)
class _Config:
    world: str | World | Callable[[], World] | None = None
    always_replay: bool = False
    modules: tuple[str, ...] = ()
    serve: Serve | None = None


_config = _Config()
_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[Runtime]] = (
    weakref.WeakKeyDictionary()
)


def configure(
    *,
    world: str | World | Callable[[], World] | None = None,
    always_replay: bool | None = None,
    modules: list[str] | None = None,
    serve: Serve | None = None,
    workflow_block_timeout: float | None = None,
) -> None:
    """Choose the World for runtimes created from now on.

    ``world`` is a name (``"local"``, ``"aws"``, ``"gcp"``, ``"postgres"``,
    ``"module:factory"``), a World instance, or a callable making one; by
    default it comes from ``WORLDFLOW_WORLD``. ``always_replay`` drops the
    warm cache after every step, so every resumption replays the run from its
    log (for tests). ``modules`` are imported when a runtime starts, to
    register workflows. ``serve`` says whether a plain process (not
    ``wf.worker()``) executes work: ``"auto"`` (the default, also from
    ``WORLDFLOW_SERVE``) lets the World decide (the local world: yes; aws and
    gcp: no, their functions execute), ``"always"`` or ``"never"``.
    ``workflow_block_timeout``: seconds workflow code may run without awaiting
    before it is stopped and its run fails with ``wf.WorkflowBlocked`` (default
    5, from ``WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT``; 0 turns the watchdog off).
    """
    if world is not None:
        _config.world = world
    if always_replay is not None:
        _config.always_replay = always_replay
    if modules is not None:
        _config.modules = tuple(modules)
    if serve is not None:
        _config.serve = _check_serve(serve, "wf.configure(serve=...)")
    if workflow_block_timeout is not None:
        from ._watchdog import set_block_timeout

        set_block_timeout(workflow_block_timeout)


def _check_serve(value: str, where: str) -> Serve:
    if value not in _SERVE_VALUES:
        raise ValueError(f"{where} must be one of auto, always, never; got {value!r}")
    return value  # type: ignore[return-value]


def _serves(world: World) -> bool:
    """Whether a plain process (the implicit runtime) serves work on this World."""
    setting = _config.serve
    if setting is None:
        setting = _check_serve(os.environ.get("WORLDFLOW_SERVE") or "auto", "WORLDFLOW_SERVE")
    if setting == "auto":
        return world.capabilities.embedded
    return setting == "always"


def _make_world(world: str | World | Callable[[], World] | None) -> World:
    if world is None or isinstance(world, str):
        return create_world(world)
    if isinstance(world, World):
        return world
    made = world()
    if not isinstance(made, World):
        raise TypeError(f"a World factory must return a worldflow.world.World, got {made!r}")
    return made


def _import_modules() -> None:
    names = list(_config.modules)
    names += [m.strip() for m in os.environ.get("WORLDFLOW_MODULES", "").split(",") if m.strip()]
    for name in names:
        importlib.import_module(name)


async def _runtime() -> Runtime:
    if current_instance() is not None:
        raise RuntimeError(
            "this call reaches the World, which workflow code cannot do (it must replay the "
            "same): make it in a step"
        )
    loop = asyncio.get_running_loop()
    ready = _runtimes.get(loop)
    if ready is None:
        ready = _runtimes[loop] = loop.create_future()
        try:
            _import_modules()
            world = _make_world(_config.world)
            runtime = Runtime(world, always_replay=_config.always_replay, serve=_serves(world))
            await runtime.start()
        except BaseException as exc:
            del _runtimes[loop]
            ready.set_exception(exc)
            ready.exception()  # retrieved here; the caller gets it raised below
            raise
        ready.set_result(runtime)
        # Closed when the loop's tasks are cancelled (the end of asyncio.run): steps and
        # deliveries stop, the World's connections and threads are released.
        guard = loop.create_task(_close_at_end(loop, runtime), name="worldflow-runtime")
        _guards.add(guard)
        guard.add_done_callback(_guards.discard)
    return await asyncio.shield(ready)


_guards: set[asyncio.Task[None]] = set()


async def _close_at_end(loop: asyncio.AbstractEventLoop, runtime: Runtime) -> None:
    try:
        await asyncio.Future()  # until cancelled
    finally:
        if _runtimes.get(loop) is not None and _runtimes[loop].done():
            with contextlib.suppress(Exception):
                if _runtimes[loop].result() is runtime:
                    del _runtimes[loop]
        with contextlib.suppress(Exception):
            await runtime.close()


@contextlib.asynccontextmanager
async def worker(
    world: str | World | Callable[[], World] | None = None,
    *,
    always_replay: bool | None = None,
    grace: float = 0.0,
) -> AsyncIterator[None]:
    """Serve runs on this loop for the duration of the block (and start them).

    On leaving the block, steps this process is running get up to ``grace``
    seconds to finish and record their results; what is cut short runs again
    on another worker.

    >>> async with wf.worker(grace=10):
    ...     await asyncio.Event().wait()   # serve until cancelled
    """
    async with _serving(world, always_replay, serve=True, grace=grace):
        yield


@contextlib.asynccontextmanager
async def client(world: str | World | Callable[[], World] | None = None) -> AsyncIterator[None]:
    """A runtime that starts, resumes and cancels runs but executes none.

    For short-lived tools (the CLI): a process that runs for a moment should
    not take runs from the workers only to drop them mid-step when it exits.
    """
    async with _serving(world, None, serve=False):
        yield


@contextlib.asynccontextmanager
async def _serving(
    world: str | World | Callable[[], World] | None,
    always_replay: bool | None,
    *,
    serve: bool,
    grace: float = 0.0,
) -> AsyncIterator[Runtime]:
    loop = asyncio.get_running_loop()
    if loop in _runtimes:
        if world is not None:
            raise RuntimeError("a worldflow runtime is already running on this loop")
        yield await _runtime()
        return
    ready: asyncio.Future[Runtime] = loop.create_future()
    _runtimes[loop] = ready
    try:
        if serve:
            _import_modules()
        runtime = Runtime(
            _make_world(world if world is not None else _config.world),
            always_replay=_config.always_replay if always_replay is None else always_replay,
            serve=serve,
        )
        await runtime.start()
    except BaseException:
        del _runtimes[loop]
        raise
    ready.set_result(runtime)
    try:
        yield runtime
        if grace > 0:
            await runtime.drain(grace)
    finally:
        _runtimes.pop(loop, None)
        await runtime.close()


class Run(Generic[R]):
    """A handle on a run: ``await run.result()``.

    Made by :func:`start` and :func:`get_run`; it holds only the id, so it is
    cheap and works from any process sharing the World. ``wf.start`` gives a
    ``Run[R]`` for a workflow returning ``R``, so ``result()`` is typed.
    """

    __slots__ = ("id",)

    def __init__(self, run_id: str) -> None:
        self.id = run_id

    def __repr__(self) -> str:
        return f"<Run {self.id!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def info(self) -> RunInfo:
        """Everything the World keeps about the run (``wf.RunNotFound`` if none)."""
        return await (await _runtime()).get_run(self.id)

    async def status(self) -> str:
        """``"pending"``, ``"running"``, ``"completed"``, ``"failed"`` or ``"cancelled"``."""
        return (await self.info()).status

    async def result(self, timeout: float | str | None = None) -> R:
        """Wait for the run to end and return its value.

        Raises ``wf.RunFailed`` / ``wf.RunCancelled``, or ``TimeoutError`` when
        ``timeout`` seconds pass first.
        """
        seconds = None if timeout is None else parse_duration(timeout, what="timeout")
        value: R = await (await _runtime()).result(self.id, seconds)
        return value

    async def cancel(self) -> None:
        """Ask the run to stop: the workflow sees ``asyncio.CancelledError`` at its await."""
        await (await _runtime()).cancel(self.id)

    # -- for code without an event loop (see worldflow._sync) ---------------------------
    def result_sync(self, timeout: float | str | None = None) -> R:
        """:meth:`result`, blocking: for a Django or Flask view, a script, a thread."""
        from ._sync import run_sync

        return run_sync(self.result(timeout))

    def status_sync(self) -> str:
        """:meth:`status`, blocking."""
        from ._sync import run_sync

        return run_sync(self.status())

    def cancel_sync(self) -> None:
        """:meth:`cancel`, blocking."""
        from ._sync import run_sync

        run_sync(self.cancel())

    async def events(self) -> list[Event]:
        """The run's event log, in order."""
        return await (await _runtime()).read_events(self.id)

    async def detail(self) -> RunDetail:
        """Everything about the run, folded from its log: steps with every attempt,
        sleeps and hook waits (with their times, for a timeline), input, output."""
        runtime = await _runtime()
        info = await runtime.get_run(self.id)
        from ._inspect import inspect_run  # the display code: only for those who look

        return inspect_run(info, await runtime.backend.read_events(self.id))

    async def stream(self, name: str, start: int = 0) -> AsyncIterator[Any]:
        """The chunks of the run's stream ``name`` from index ``start`` on, live, ending
        once the run has ended and every chunk is read (``wf.RunNotFound`` if no run).

        >>> async for token in run.stream("tokens"):
        ...     print(token, end="")

        Reconnecting with ``start=`` the number of chunks already read misses nothing.
        """
        check_stream_name(name, "run.stream()")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"run.stream(): start must be an int >= 0, got {start!r}")
        runtime = await _runtime()
        await runtime.get_run(self.id)  # wf.RunNotFound before anything is yielded

        async def ended() -> bool:
            return (await runtime.get_run(self.id)).status in TERMINAL

        store = runtime.world.stream_store()
        async for chunk in read_stream(store, self.id, name, start, ended):
            yield chunk

    async def steps(self) -> list[StepInfo]:
        """The run's step calls in call order, each with its attempts, input and output."""
        return list((await self.detail()).steps)

    async def wake(self, position: int | None = None) -> None:
        """Fire the run's pending sleeps now (only the one at ``position`` if given).

        The workflow carries on as if the sleep had ended; the log records the
        sleep as woken early. A run with no pending sleep is left as it is.
        """
        await (await _runtime()).wake(self.id, position)

    async def children(self) -> list[ChildRun[Any]]:
        """The child runs this run started, in the order it started them (each a
        ``wf.Run`` with ``.workflow``, ``.detached`` and ``.parent_id``)."""
        from ._children import children_in

        events = await (await _runtime()).read_events(self.id)
        return [
            ChildRun(link.id, link.workflow, self.id, link.detached) for link in children_in(events)
        ]

    async def parent(self) -> Run[Any] | None:
        """The run that started this one as its child, or None."""
        from ._children import parent_of

        found = parent_of(await (await _runtime()).read_events(self.id))
        return None if found is None else Run(found[0])

    async def rerun(self, *, id: str | None = None) -> Run[R]:
        """Start a new run of the same workflow with the same input (not a replay)."""
        runtime = await _runtime()
        info = await runtime.get_run(self.id)
        events = await runtime.backend.read_events(self.id)
        if not events or events[0].kind != EventKind.RUN_CREATED:
            raise CorruptLogError(f"run {self.id!r}: its log does not start with run_created")
        tree = events[0].data.get("input")
        return Run(await runtime.create_run(info.workflow, tree, _valid_id(id)))


class ChildRun(Run[R]):
    """A child run: ``child = await wf.start(other, ...)`` inside a workflow.

    Inside the workflow that started it, ``await child.result()`` waits durably for
    the child's end (its failure raises here as a step's does; its cancellation is
    ``wf.RunCancelled``); ``timeout=`` is a durable timer there too. Anywhere else it
    is a plain :class:`Run` handle.
    """

    __slots__ = ("_future", "detached", "parent_id", "workflow")

    def __init__(
        self,
        run_id: str,
        workflow: str,
        parent_id: str,
        detached: bool = False,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        super().__init__(run_id)
        self.workflow = workflow
        self.parent_id = parent_id
        self.detached = detached
        self._future = future

    def __repr__(self) -> str:
        return f"<ChildRun {self.id!r} of {self.parent_id!r}>"

    async def result(self, timeout: float | str | None = None) -> R:
        instance = current_instance()
        if instance is None or self._future is None or instance.run_id != self.parent_id:
            return await super().result(timeout)
        if timeout is None:
            value: R = await self._future
            return value
        seconds = parse_duration(timeout, what="timeout")
        try:
            waited: R = await asyncio.wait_for(asyncio.shield(self._future), seconds)
            return waited
        except TimeoutError:
            raise TimeoutError(f"child run {self.id!r} has not finished after {timeout}s") from None


async def list_runs(
    *,
    status: str | None = None,
    workflow: str | Workflow[Any, Any] | None = None,
    limit: int = 50,
    cursor: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunPage:
    """A page of runs, newest first, optionally only those of one status or workflow,
    or carrying every tag of ``tags`` (answered from the World's tag index).

    ``page.runs`` holds ``wf.RunInfo`` summaries; pass ``page.cursor`` back to
    get the next page (it is None on the last one).

    >>> page = await wf.list_runs(status="failed", limit=20)
    >>> while page.cursor: page = await wf.list_runs(status="failed", cursor=page.cursor)
    """
    if status is not None and status not in ("pending", "running", *TERMINAL):
        raise ValueError(
            f"unknown run status {status!r}; expected one of pending, running, completed, "
            "failed, cancelled"
        )
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValueError(f"limit must be an int from 1 to 1000, got {limit!r}")
    name = workflow.name if isinstance(workflow, Workflow) else workflow
    wanted = check_tags(tags, "wf.list_runs(tags=...)") if tags is not None else None
    runtime = await _runtime()
    return await runtime.backend.list_runs(
        status=status, workflow=name, limit=limit, cursor=cursor, tags=wanted
    )


async def start(
    workflow: Workflow[P, R] | Callable[P, Coroutine[Any, Any, R]] | str,
    *args: Any,
    id: str | None = None,
    on_conflict: Literal["return", "raise"] = "return",
    tags: Mapping[str, str] | None = None,
    throttle: Throttle | float | str | None = None,
    timeout: float | str | dt.timedelta | None = None,
    detached: bool = False,
    **kwargs: Any,
) -> Run[R]:
    """Start a durable run of ``workflow`` with these arguments.

    With ``id=``, starting is idempotent: the same id gives the same run, even
    if the arguments differ (the run keeps the arguments it was started with);
    ``on_conflict="raise"`` raises ``wf.RunConflict`` when a run with that id
    exists with other arguments. An id that belongs to another workflow's run
    always raises ``wf.RunConflict``. ``tags``: string attributes of the run
    (``{"customer": "c-42"}``), for ``wf.list_runs(tags=...)``.

    >>> run = await wf.start(hail_ride, "req-1", id="ride-1")
    >>> await run.result(timeout=30)

    ``throttle`` (a ``wf.Throttle(window, key=...)``, or a window for one key): at most
    one new run per window; a start within the window of the last run it made returns
    that run (whatever its arguments), across every process.

    ``timeout``: the run fails with ``TimeoutError`` if it is still going that long
    after it was started (a durable timer; default the ``@wf.workflow(timeout=)``).

    Inside a workflow this starts a *child* run (a command, recorded in the log;
    its id, when not given, is derived from the parent's, so replay never starts
    two) and returns a :class:`ChildRun`: ``await child.result()`` waits durably.
    A run that ends or is cancelled cancels its children still running, except
    those started with ``detached=True``.
    """
    window = as_throttle(throttle)  # a bad window is a ValueError before anything
    if on_conflict not in ("return", "raise"):
        raise ValueError(f"on_conflict must be 'return' or 'raise', got {on_conflict!r}")
    if isinstance(workflow, str):
        definition = get_workflow(workflow)
    elif isinstance(workflow, Workflow):
        definition = workflow
    else:
        raise TypeError(
            f"wf.start() takes a @wf.workflow function or its name, got {workflow!r}"
            " (decorate the function with @wf.workflow)"
        )
    seconds = check_timeout(timeout, "wf.start()") if timeout is not None else definition.timeout
    if not isinstance(detached, bool):
        raise TypeError(f"wf.start(detached=...) takes a bool, got {detached!r}")
    definition.check_arguments(args, kwargs)  # a TypeError now, not a run that fails later
    checked = check_tags(tags, "wf.start(tags=...)") if tags is not None else None
    instance = current_instance()
    if instance is not None:
        if on_conflict != "return":
            raise ValueError("a child run cannot use on_conflict='raise'")
        if checked:
            raise ValueError("a child run cannot take tags= yet; give them to its parent")
        if window is not None or definition.concurrency is not None:
            raise ValueError(
                f"workflow {definition.name!r}: a child run cannot be throttled or "
                "concurrency-limited yet; start it from a step"
            )
        child, fut = instance.start_child(
            definition, args, kwargs, run_id=_valid_id(id), detached=detached, timeout=seconds
        )
        return ChildRun(child, definition.name, instance.run_id, detached, fut)
    key = None
    if definition.concurrency is not None:
        from ._limits_flow import check_start

        key = check_start(definition, args, kwargs)  # a bad key function: no run is made
    runtime = await _runtime()

    def create(rid: str | None) -> Awaitable[str]:
        return runtime.start_run(
            definition.name,
            args,
            kwargs,
            rid,
            conflict=on_conflict == "raise",
            tags=checked,
            deadline=seconds,
        )

    if window is None:
        run_id = await create(_valid_id(id))
    else:
        from ._limits_flow import throttle_start
        from ._runtime import new_run_id

        # The window's run, or a new one (with the id given, if any).
        given = _valid_id(id) or new_run_id()
        run_id = await throttle_start(runtime, definition.name, window, given, create)
        if run_id != given:
            return Run(run_id)
    if key is not None:
        from ._limits_flow import request_run_slot

        await request_run_slot(runtime, definition, run_id, key)  # in start order
    return Run(run_id)


def _valid_id(id: str | None) -> str | None:
    if id is not None and (
        not isinstance(id, str) or not id or len(id) > 256 or not id.isprintable()
    ):
        raise ValueError(
            f"a run id must be a non-empty printable str of at most 256 chars, got {id!r}"
        )
    return id


def get_run(run_id: str) -> Run[Any]:
    """A handle on an existing run; its calls raise ``wf.RunNotFound`` if there is none."""
    return Run(run_id)


async def resume_hook(token: str, payload: Any = None) -> Run[Any]:
    """Deliver ``payload`` to the hook with this token, from anywhere.

    Raises ``wf.HookNotFound`` if no live hook has the token. Returns the run.
    """
    if current_instance() is not None:
        raise RuntimeError("wf.resume_hook() cannot be called inside a workflow; use a step")
    return Run(await (await _runtime()).resume_hook(token, payload))


def sleep(duration: object = None, *, until: dt.datetime | None = None) -> Awaitable[None]:
    """Suspend the run durably: ``await wf.sleep("3d")`` or ``wf.sleep(until=when)``.

    Durations: ``"500ms"``, ``"10s"``, ``"5m"``, ``"2h"``, ``"3d"``, ``"1w"``,
    seconds as int or float, or a ``timedelta``. Outside a workflow this is
    an ordinary ``asyncio.sleep``.
    """
    instance = current_instance()
    if until is not None:
        if duration is not None:
            raise ValueError("wf.sleep() takes a duration or until=, not both")
        if not isinstance(until, dt.datetime) or until.tzinfo is None:
            raise ValueError(f"wf.sleep(until=...) needs a timezone-aware datetime, got {until!r}")
        deadline = check_wakeup(until.timestamp(), "wf.sleep(until=...)")
        if instance is None:
            return asyncio.sleep(max(0.0, deadline - dt.datetime.now(dt.UTC).timestamp()))
        return instance.sleep_until(max(deadline, instance.loop.time()))
    seconds = parse_duration(duration, what="sleep")
    if instance is None:
        return asyncio.sleep(seconds)
    return instance.sleep_until(instance.loop.time() + seconds)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowMetadata:
    """What a running workflow knows about its run (``wf.get_workflow_metadata()``)."""

    run_id: str
    workflow_name: str
    started_at: dt.datetime


def get_workflow_metadata() -> WorkflowMetadata:
    """The running workflow's ``run_id``, ``workflow_name`` and ``started_at``."""
    instance = current_instance()
    if instance is None:
        raise RuntimeError("wf.get_workflow_metadata() can only be called inside a workflow")
    started = dt.datetime.fromtimestamp(instance.started_at, dt.UTC)
    return WorkflowMetadata(instance.run_id, instance.workflow.name, started)


def now() -> dt.datetime:
    """The current time (UTC); inside a workflow, the run's logical time, same on replay."""
    instance = current_instance()
    if instance is None:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(instance.loop.time(), dt.UTC)


def random() -> float:
    """A float in [0, 1); inside a workflow, the same on every replay."""
    instance = current_instance()
    return _random.random() if instance is None else instance.rng.random()


def uuid4() -> _uuid.UUID:
    """A random UUID; inside a workflow, the same on every replay."""
    instance = current_instance()
    if instance is None:
        return _uuid.uuid4()
    return _uuid.UUID(int=instance.rng.getrandbits(128), version=4)
