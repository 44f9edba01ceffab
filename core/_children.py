"""Child workflows and deadlines: what the engine does for them, outside the workflow's code.

A workflow starts a child with ``await wf.start(other, ...)`` (or calls a
``@wf.workflow`` function: start and wait). That is a command,
``child_started``, recorded in the parent's log with the child's id (given,
or derived from the parent's id and the command's number, so replay and
duplicate delivery never start two). With the append that records it goes a
``start_child`` message *to the parent's own run* (it exists, so every World
delivers it): its handler creates the child with ``create_run``, idempotent by
id. The child's ``run_created`` names its parent; when the child ends, its
last append carries a ``child_ended`` message to the parent, which records
``child_completed`` and feeds it to the code: no one polls.

A run that ends, or whose cancellation is requested, sends ``cancel`` to its
children still running, except those started with ``detached=True``. A child
created after its parent ended (a late ``start_child``) is cancelled at once.

A deadline (``@wf.workflow(timeout=...)``, ``wf.start(..., timeout=...)``)
is an absolute time in ``run_created``; the pass that starts the run sends a
``resume`` due then (a durable timer, carried past a queue's longest delay
like a sleep's). The pass that finds the deadline passed records
``deadline_passed``: the code is cancelled as by ``run.cancel()`` (its
``finally`` blocks run, and may still call steps), and the run ends failed
with a ``TimeoutError`` whatever the code does after.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._definitions import check_timeout
from ._errors import RunConflict
from ._events import CHILD_STARTED, RUN_CREATED, EventKind
from ._failures import describe_error
from ._world import Event, Message, Outgoing

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._state import RunState

__all__ = [
    "ChildLink",
    "cancel_children",
    "check_timeout",
    "child_id",
    "children_in",
    "deadline_error",
    "ended_message",
    "start_child",
]

log = logging.getLogger("worldflow")


def child_id(parent_id: str, cid: int) -> str:
    """The id of the child a run's command ``cid`` starts when no id was given:
    the same on every replay and delivery, at most 256 characters."""
    suffix = f"-c{cid}"
    if len(parent_id) + len(suffix) <= 256:
        return parent_id + suffix
    digest = hashlib.sha256(parent_id.encode()).hexdigest()[:24]
    return f"{parent_id[:200]}-{digest}{suffix}"


def deadline_error(run_id: str, workflow: str, deadline: float) -> dict[str, Any]:
    """The error a run that passed its deadline ends with: a ``TimeoutError``."""
    import datetime as dt

    when = dt.datetime.fromtimestamp(deadline, dt.UTC).isoformat(timespec="seconds")
    exc = TimeoutError(
        f"run {run_id!r} of workflow {workflow!r} passed its deadline ({when}, its timeout "
        "from when it was started); it was cancelled and failed"
    )
    return describe_error(exc, with_traceback=False)


def start_message(rt: Runtime, parent_id: str, data: dict[str, Any]) -> Outgoing:
    """The ``start_child`` message a ``child_started`` command sends to its own run."""
    body = {
        "cid": data["cid"],
        "id": data["id"],
        "workflow": data["name"],
        "input": data["input"],
    }
    if data.get("deadline") is not None:
        body["deadline"] = data["deadline"]
    if data.get("detached"):
        body["detached"] = True
    message = Message(rt.new_id(), parent_id, "start_child", body)
    return Outgoing(message, key=f"{parent_id}:child:{data['cid']}")


def ended_message(
    rt: Runtime, state: RunState, status: str, output: Any, error: dict[str, Any] | None
) -> Outgoing | None:
    """The ``child_ended`` message a child's last append sends to its parent (None for a
    run that has no parent)."""
    if state.parent is None:
        return None
    parent_id, cid = state.parent
    body: dict[str, Any] = {"cid": cid, "id": state.run_id, "status": status}
    if status == "completed":
        body["output"] = output
    elif status == "failed":
        body["error"] = error
    message = Message(rt.new_id(), parent_id, "child_ended", body)
    return Outgoing(message, key=f"{parent_id}:child:{cid}:ended")


def cancel_children(rt: Runtime, state: RunState) -> list[Outgoing]:
    """``cancel`` messages for the run's children still running, detached ones aside."""
    return [
        Outgoing(
            Message(rt.new_id(), child.id, "cancel", {"parent": state.run_id}),
            key=f"{child.id}:cancel:parent",
        )
        for child in state.children.values()
        if not child.detached
    ]


async def start_child(rt: Runtime, message: Message) -> None:
    """Handle a ``start_child`` message: create the child run (idempotent by its id).

    If the id already belongs to another run (not this parent's child from this
    command), the parent learns at once that the child failed with
    ``RunConflict``; if the parent has ended by now, the new child is cancelled.
    """
    data = message.data
    parent_id = message.run_id
    cid = int(data["cid"])
    run_id = str(data["id"])
    workflow = str(data["workflow"])
    link = {"id": parent_id, "cid": cid}
    deadline = data.get("deadline")
    try:
        _, created = await rt.create_run_here(
            workflow,
            data["input"],
            run_id,
            parent=link,
            deadline=None if deadline is None else float(deadline),
        )
    except RunConflict as exc:
        await _refuse(rt, parent_id, cid, run_id, exc)
        return
    if not created:
        events = await rt.backend.read_events(run_id)
        first = events[0] if events else None
        if first is None or first.kind != RUN_CREATED or first.data.get("parent") != link:
            taken = RunConflict(
                f"run id {run_id!r} already belongs to a run that is not the child this "
                f"command of run {parent_id!r} started; give the child another id"
            )
            await _refuse(rt, parent_id, cid, run_id, taken)
        return
    if not data.get("detached"):
        parent = await rt.backend.get_run(parent_id)
        if parent is None or parent.done:  # its cancel came before the child existed
            await rt.backend.send(
                [
                    Outgoing(
                        Message(rt.new_id(), run_id, "cancel", {"parent": parent_id}),
                        key=f"{run_id}:cancel:parent",
                    )
                ]
            )


async def _refuse(rt: Runtime, parent_id: str, cid: int, run_id: str, exc: Exception) -> None:
    log.warning("worldflow: run %r cannot start child %r: %s", parent_id, run_id, exc)
    body = {
        "cid": cid,
        "id": run_id,
        "status": "failed",
        "error": describe_error(exc, with_traceback=False),
    }
    message = Message(rt.new_id(), parent_id, "child_ended", body)
    await rt.backend.send([Outgoing(message, key=f"{parent_id}:child:{cid}:refused")])


class ChildLink:
    """A child as its parent's log records it: its run id, workflow, the command that
    started it, whether it is detached, and how it ended as far as the parent knows
    (``None``: still running)."""

    __slots__ = ("cid", "detached", "id", "status", "workflow")

    def __init__(self, cid: int, id: str, workflow: str, detached: bool) -> None:
        self.cid = cid
        self.id = id
        self.workflow = workflow
        self.detached = detached
        self.status: str | None = None

    def __repr__(self) -> str:
        return f"<child #{self.cid} {self.id!r} of {self.workflow!r}: {self.status or 'running'}>"


def children_in(events: Sequence[Event]) -> list[ChildLink]:
    """The children a run's log started, in the order it started them."""
    found: dict[int, ChildLink] = {}
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        if event.kind == CHILD_STARTED:
            cid = int(data.get("cid", 0))
            found[cid] = ChildLink(
                cid, str(data.get("id")), str(data.get("name")), bool(data.get("detached"))
            )
        elif event.kind == EventKind.CHILD_COMPLETED:
            link = found.get(int(data.get("cid", 0)))
            if link is not None:
                link.status = str(data.get("status"))
    return list(found.values())


def parent_of(events: Sequence[Event]) -> tuple[str, int] | None:
    """The parent a run's ``run_created`` names, if any."""
    if not events or events[0].kind != RUN_CREATED:
        return None
    parent = events[0].data.get("parent")
    if not isinstance(parent, dict):
        return None
    return str(parent.get("id")), int(parent.get("cid", 0))
