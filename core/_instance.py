"""One workflow run's code, executing on its deterministic loop.

The instance turns what the code does (call a step, sleep, create a hook)
into numbered commands, and feeds it what happened (a step's result, a timer
firing, a hook payload, a cancellation) in log order. On replay, each command
the code makes is checked against the one the log recorded at that position;
a mismatch is a :class:`NonDeterminismError` naming both, never a hang.

The code runs in passes watched by the watchdog (``_watchdog``): a pass
that does not yield within the limit is stopped and the run fails with
``WorkflowBlocked``. A recorded value that cannot be read back is not the
code's to handle: ``start()`` and ``feed()`` raise ``CorruptLogError`` (or
``SerializationError`` when its class is not in this process) to the engine,
without running the code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import decode, encode
from ._duration import check_wakeup
from ._errors import CorruptLogError, NonDeterminismError, SerializationError
from ._events import (
    CANCEL_REQUESTED,
    CHILD_COMPLETED,
    CHILD_STARTED,
    DEADLINE_PASSED,
    HOOK_CREATED,
    HOOK_FAILED,
    HOOK_RECEIVED,
    PATCH_MARKED,
    RUN_CREATED,
    SLEEP_FIRED,
    SLEEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SCHEDULED,
)
from ._failures import describe_error, rebuild_error
from ._hooks import SPEC_TOKEN_PREFIX, Hook, Webhook
from ._loop import WorkflowLoop
from ._watchdog import WorkflowBlocked, run_pass
from ._world import Event

if TYPE_CHECKING:
    from ._definitions import Step, Workflow

__all__ = ["Discarded", "Outcome", "WorkflowInstance"]

_COMMAND_LABEL = {
    STEP_SCHEDULED: "step",
    SLEEP_STARTED: "sleep",
    HOOK_CREATED: "hook",
    PATCH_MARKED: "patch",
    CHILD_STARTED: "child",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # completed | failed | cancelled
    output: Any = None  # encoded
    error: dict[str, Any] | None = None


def _describe(kind: str, name: str | None) -> str:
    label = _COMMAND_LABEL.get(kind, kind)
    return f"{label} {name!r}" if name and label in ("step", "child") else label


class Discarded(BaseException):
    """Raised into workflow code that tries to act while its copy is being dropped
    (a ``finally`` block, say); a BaseException so ``except Exception`` lets it pass."""


class WorkflowInstance:
    def __init__(
        self,
        run_id: str,
        workflow: Workflow[Any, Any],
        recorded: list[Event],
        webhook_url: Callable[[str], str],
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.loop = WorkflowLoop(self)  # type: ignore[abstract]  # I/O methods set below the class
        self.recorded = recorded  # the command events of the log, in cid order
        self.webhook_url = webhook_url
        self.next_cid = 1
        self.new_commands: list[tuple[str, dict[str, Any]]] = []
        self.steps: dict[int, Step[Any, Any]] = {}
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._hooks: dict[str, Hook[Any]] = {}
        self._hooks_by_cid: dict[int, Hook[Any]] = {}
        self.rng = random.Random(run_id)
        self.task: asyncio.Task[Any] | None = None
        self.started_at = 0.0
        self.divergence: NonDeterminismError | None = None
        self.blocked: WorkflowBlocked | None = None  # set by the watchdog, from its thread
        self.discarded = False
        #: True while the executor replays the recorded log into this copy (wf.is_replaying).
        self.replaying = False
        self._patches: dict[str, bool] = {}
        self._children: dict[int, tuple[str, str]] = {}  # cid -> (child run id, workflow)
        #: The run's deadline passed: its code was cancelled and the run fails with this.
        self.timed_out: dict[str, Any] | None = None

    # -- driving ---------------------------------------------------------
    def start(self, at: float, input_tree: Any) -> None:
        """Run the code from the start (the run's first pass, or a replay's)."""
        args, kwargs = self._recorded_input(input_tree)
        self.started_at = at
        self.loop.set_time(at)
        self.task = self.loop.create_task(self._main(args, kwargs))
        self._run()

    async def _main(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return await self.workflow.fn(*args, **kwargs)

    def _run(self) -> None:
        """One pass: the code runs until it waits, under the watchdog."""
        run_pass(self, self.loop.run_ready)

    def feed(self, event: Event) -> None:
        """Deliver one result event to the code and run it until it waits again.

        Raises ``CorruptLogError`` or ``SerializationError`` (and runs no code) if
        a value the event records cannot be read back.
        """
        if self.blocked is not None:
            return  # stopped by the watchdog: its code runs no more
        self.loop.set_time(event.at)
        data = event.data
        kind = event.kind
        if kind == HOOK_FAILED:
            failed = self._hooks_by_cid.get(int(data["cid"]))
            if failed is not None:
                failed._fail(self._recorded_error(event, ""))
        elif kind == HOOK_RECEIVED:
            hook = self._hooks.get(data["token"])
            if hook is None:
                self._diverged(
                    f"event {event.seq} delivers a payload to hook {data['token']!r}, "
                    "which the workflow's code has not created",
                    raise_=False,
                )
            else:
                hook._deliver(self._recorded(event, data["payload"], "payload"))
        elif kind == CANCEL_REQUESTED:
            if self.task is not None and not self.task.done():
                self.task.cancel()
        elif kind == DEADLINE_PASSED:
            from ._children import deadline_error

            deadline = data.get("deadline")
            when = float(deadline) if isinstance(deadline, int | float) else event.at
            self.timed_out = deadline_error(self.run_id, self.workflow.name, when)
            if self.task is not None and not self.task.done():
                self.task.cancel()
        else:
            cid = int(data["cid"])
            if cid >= self.next_cid:
                self._diverged(
                    f"event {event.seq} ({kind}) is the result of command #{cid}, but the "
                    f"workflow's code has made only {self.next_cid - 1} commands",
                    raise_=False,
                )
            elif kind == SLEEP_FIRED:
                handle = self._timers.pop(cid, None)
                if handle is not None:
                    self.loop.fire(handle)
                else:
                    self._resolve(cid, None)
            elif kind == STEP_COMPLETED:  # the hot path: decode inline
                try:
                    value = decode(data["output"])
                except Exception as exc:
                    raise self._unreadable(event.seq, kind, "output", exc) from exc
                self._resolve(cid, value)
            elif kind == CHILD_COMPLETED:
                self._child_completed(event)
            elif kind == STEP_FAILED:
                step = self.steps.get(cid)
                label = f"step {step.name!r}" if step else f"step #{cid}"
                self._fail(cid, self._recorded_error(event, label))
        run_pass(self, self.loop.run_ready)

    def _child_completed(self, event: Event) -> None:
        data = event.data
        cid = int(data["cid"])
        run_id, name = self._children.pop(cid, (str(data.get("id")), "?"))
        status = data.get("status")
        if status == "completed":
            self._resolve(cid, self._recorded(event, data.get("output"), "output"))
        elif status == "cancelled":
            from ._errors import RunCancelled

            self._fail(cid, RunCancelled(run_id))
        else:
            self._fail(cid, self._recorded_error(event, f"child workflow {name!r} ({run_id})"))

    # -- reading recorded values back --------------------------------------
    # Never raised into the code, which could catch them and go on as if a step
    # had failed: the engine decides (a corrupt log fails the run; a class this
    # process lacks may be found by another).
    def _recorded(self, event: Event, tree: Any, what: str) -> Any:
        try:
            return decode(tree)
        except Exception as exc:
            raise self._unreadable(event.seq, event.kind, what, exc) from exc

    def _recorded_input(self, tree: Any) -> tuple[list[Any], dict[str, Any]]:
        try:
            args, kwargs = decode(tree)
            if type(args) is not list or type(kwargs) is not dict:
                raise CorruptLogError(
                    f"the input must be [args, kwargs], not [{type(args).__name__}, "
                    f"{type(kwargs).__name__}]"
                )
        except Exception as exc:
            raise self._unreadable(1, RUN_CREATED, "input", exc) from exc
        return args, kwargs

    def _recorded_error(self, event: Event, context: str) -> BaseException:
        error = event.data.get("error")
        if not isinstance(error, dict):
            exc = CorruptLogError(f"an error must be an object, not {error!r}")
            raise self._unreadable(event.seq, event.kind, "error", exc)
        return rebuild_error(error, context=context)

    def _unreadable(self, seq: int, kind: str, what: str, exc: Exception) -> Exception:
        where = f"run {self.run_id!r} of workflow {self.workflow.name!r}: event {seq} ({kind})"
        if isinstance(exc, SerializationError):
            return SerializationError(f"{where}: its {what} cannot be read back here: {exc}")
        return CorruptLogError(
            f"{where}: its {what} cannot be read back: {exc}; the log was altered or damaged "
            "(the code did not change)"
        )

    def _resolve(self, cid: int, value: Any) -> None:
        self.steps.pop(cid, None)  # ended: nothing needs its Step any more
        fut = self._pending.pop(cid, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _fail(self, cid: int, exc: BaseException) -> None:
        self.steps.pop(cid, None)
        fut = self._pending.pop(cid, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def take_commands(self) -> list[tuple[str, dict[str, Any]]]:
        made, self.new_commands = self.new_commands, []
        return made

    def check_replayed(self) -> None:
        """After replaying the whole log, every recorded command must have been made."""
        made = self.next_cid - 1
        if made < len(self.recorded) and self.divergence is None and self.blocked is None:
            missing = self.recorded[made]
            self._diverged(
                f"the log records command #{made + 1} "
                f"({_describe(missing.kind, missing.data.get('name'))}, event {missing.seq}) "
                f"but the workflow's code {'ended' if self.done else 'is waiting'} "
                f"after making only {made}",
                raise_=False,
            )

    @property
    def done(self) -> bool:
        return (
            self.divergence is not None
            or self.blocked is not None
            or (self.task is not None and self.task.done())
        )

    def outcome(self) -> Outcome:
        if self.blocked is not None:  # the traceback shows where the code was stopped
            return Outcome("failed", error=describe_error(self.blocked))
        if self.divergence is not None:
            return Outcome("failed", error=describe_error(self.divergence, with_traceback=False))
        if self.timed_out is not None:  # whatever the code did once cancelled
            return Outcome("failed", error=self.timed_out)
        assert self.task is not None and self.task.done()
        if self.task.cancelled():
            return Outcome("cancelled")
        exc = self.task.exception()
        if exc is not None:
            return Outcome("failed", error=describe_error(exc))
        try:
            output = encode(
                self.task.result(), where=f"the return value of workflow {self.workflow.name!r}"
            )
        except TypeError as err:
            return Outcome("failed", error=describe_error(err))
        return Outcome("completed", output=output)

    def close(self) -> None:
        """Stop the code for good (the run ended, or this copy is being dropped)."""
        self.discarded = True
        run_pass(self, self.loop.close)  # ``finally`` blocks run there, watched too

    # -- commands made by the code -----------------------------------------
    def _command(
        self, kind: str, name: str | None, data: dict[str, Any]
    ) -> tuple[int, Event | None]:
        if self.discarded:
            raise Discarded(f"run {self.run_id!r}: this copy of the workflow is being dropped")
        if self.blocked is not None:
            raise Discarded(f"run {self.run_id!r}: the workflow was stopped: {self.blocked}")
        if self.done:
            raise RuntimeError("the workflow has ended; it cannot make more commands")
        cid = self.next_cid
        self.next_cid += 1
        if cid <= len(self.recorded):
            recorded = self.recorded[cid - 1]
            if recorded.kind != kind or recorded.data.get("name") != name:
                self._diverged(
                    f"at command #{cid} the log records "
                    f"{_describe(recorded.kind, recorded.data.get('name'))} (event "
                    f"{recorded.seq}) but the code now makes {_describe(kind, name)}"
                )
            return cid, recorded
        self.new_commands.append((kind, {"cid": cid, "name": name, **data}))
        return cid, None

    def _diverged(self, detail: str, *, raise_: bool = True) -> None:
        error = NonDeterminismError(
            f"run {self.run_id!r} of workflow {self.workflow.name!r}: the workflow's code no "
            f"longer matches its event log: {detail}. Keep code that runs in flight "
            "compatible with its log (deploy changes under a new workflow name)"
        )
        if self.divergence is None:
            self.divergence = error
        if raise_:
            raise error

    def patched(self, patch_id: str) -> bool:
        """True where the run reaches this point under code that has the patch (a new
        run, or one past everything its log records); False on the replay of a log that
        code without the patch recorded. The same answer for a patch id all run long."""
        known = self._patches.get(patch_id)
        if known is not None:
            return known
        cid = self.next_cid
        if cid <= len(self.recorded):
            recorded = self.recorded[cid - 1]
            found = recorded.kind == PATCH_MARKED and recorded.data.get("name") == patch_id
            if found:
                self.next_cid += 1  # the marker this code recorded: take it
        else:
            self._command(PATCH_MARKED, patch_id, {})
            found = True
        self._patches[patch_id] = found
        return found

    def deprecate_patch(self, patch_id: str) -> None:
        """Once no run needs the old branch: take the patch's marker where a log has one
        here, record none (runs recorded with or without the patch both replay)."""
        cid = self.next_cid
        if cid <= len(self.recorded):
            recorded = self.recorded[cid - 1]
            if recorded.kind == PATCH_MARKED and recorded.data.get("name") == patch_id:
                self.next_cid += 1

    def call_step(
        self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        tree = encode([list(args), kwargs], where=f"the arguments of step {step.name!r}")
        cid, _ = self._command(STEP_SCHEDULED, step.name, {"input": tree})
        self.steps[cid] = step
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._pending[cid] = fut
        return fut

    def start_child(
        self,
        workflow: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None,
        detached: bool,
        timeout: float | None,
    ) -> tuple[str, asyncio.Future[Any]]:
        """A child run (a command): its id, and a future of its result."""
        from ._children import child_id

        tree = encode([list(args), kwargs], where=f"the arguments of workflow {workflow.name!r}")
        cid = self.next_cid
        chosen = run_id or child_id(self.run_id, cid)
        data: dict[str, Any] = {"id": chosen, "input": tree}
        if detached:
            data["detached"] = True
        if timeout is not None:
            data["deadline"] = self.loop.time() + timeout
        _, recorded = self._command(CHILD_STARTED, workflow.name, data)
        if recorded is not None:
            if run_id is not None and recorded.data.get("id") != run_id:
                self._diverged(
                    f"at command #{cid} the log records child run {recorded.data.get('id')!r} "
                    f"but the code now starts {run_id!r}"
                )
            chosen = str(recorded.data.get("id"))
        self._children[cid] = (chosen, workflow.name)
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._pending[cid] = fut
        return chosen, fut

    def sleep_until(self, until: float) -> asyncio.Future[None]:
        until = check_wakeup(until, "wf.sleep()")
        cid, _ = self._command(SLEEP_STARTED, None, {"until": until})
        fut: asyncio.Future[None] = self.loop.create_future()
        self._pending[cid] = fut
        return fut

    def start_timer(self, handle: asyncio.TimerHandle) -> None:
        when = check_wakeup(
            handle.when(), "an asyncio timer in workflow code (asyncio.sleep, wait_for, timeout)"
        )
        cid, _ = self._command(SLEEP_STARTED, None, {"until": when})
        self._timers[cid] = handle

    def timer_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass  # a fired event for a cancelled handle is ignored by WorkflowLoop.fire

    def create_hook(
        self, token: str | None, *, webhook: bool, spec: dict[str, Any] | None = None
    ) -> Hook[Any]:
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError(f"a hook token must be a non-empty str, got {token!r}")
        # A webhook with a spec (a signature to check, a type, a response) gets a token
        # the intake recognises, so that only its requests cost a look at the log.
        chosen = token or (SPEC_TOKEN_PREFIX if spec else "") + secrets.token_urlsafe(18)
        url = self.webhook_url(chosen) if webhook else None
        data: dict[str, Any] = {"token": chosen, "webhook": webhook, "url": url}
        if spec:
            data["spec"] = spec
        cid, recorded = self._command(HOOK_CREATED, "webhook" if webhook else "hook", data)
        if recorded is not None:
            if token is not None and recorded.data["token"] != token:
                self._diverged(
                    f"at command #{cid} the log records a hook with token "
                    f"{recorded.data['token']!r} but the code now uses {token!r}"
                )
            chosen, url = recorded.data["token"], recorded.data.get("url")
        hook: Hook[Any]
        if webhook:
            hook = Webhook(chosen, str(url), loop=self.loop)
        else:
            hook = Hook(chosen, loop=self.loop)
        self._hooks[chosen] = self._hooks_by_cid[cid] = hook
        return hook
