"""Debounced starts: ``wf.start(..., debounce=wf.Debounce("5s", key=...))``.

Only the last of a burst of starts runs: each start makes a small run of its
own (``worldflow.debounced``, tagged with the workflow and key) that sleeps
durably for the window, then looks, through the World's tag index, for a
start of the same workflow and key made after it. If there is one, it ends
cancelled (superseded: ``run.result()`` raises ``wf.RunCancelled``); if not,
the window has passed quietly and it runs the workflow as its child, its
result being the child's. Each new start restarts the wait (a trailing-edge
debounce), so a steady stream of starts closer together than the window
runs nothing until it pauses.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ._definitions import step, workflow
from ._limits_spec import StartWindow

__all__ = ["TAG", "Debounce", "as_debounce", "debounced"]

#: The tag a debounced start's run carries: a digest of its workflow and key.
TAG = "worldflow.debounce"


class Debounce(StartWindow):
    """Run only the last of the starts (per ``key``) that come closer together than
    ``window``, once ``window`` has passed without another.

    >>> run = await wf.start(reindex, doc_id, debounce=wf.Debounce("5s", key=doc_id))
    """

    __slots__ = ()
    what = "a debounce"

    def tag(self, workflow_name: str) -> str:
        """The value of :data:`TAG` for this key of that workflow."""
        return hashlib.sha256(f"{workflow_name}\n{self.key}".encode()).hexdigest()[:40]


def as_debounce(value: object) -> Debounce | None:
    """``wf.start(debounce=...)``: a :class:`Debounce`, or a window (one key for all)."""
    if value is None or isinstance(value, Debounce):
        return value
    return Debounce(value)


@step(name="worldflow.debounce_check", max_retries=10, retry_delay="200ms")
async def _superseded_by(tag: str) -> str | None:
    """The id of a start of the same workflow and key made after this run's, if any."""
    from ._api import _runtime
    from ._attempts import get_step_metadata

    me = get_step_metadata().run_id
    backend = (await _runtime()).backend
    mine = await backend.get_run(me)
    assert mine is not None
    later: list[Any] = []
    cursor = None
    while True:  # any later start supersedes this one, whatever it has become since
        page = await backend.list_runs(tags={TAG: tag}, cursor=cursor, limit=50)
        later += [r for r in page.runs if (r.created_at, r.id) > (mine.created_at, mine.id)]
        cursor = page.cursor
        # Newest first: past a run older than this one, every run is older too (a key's
        # thousands of past starts are not read).
        if cursor is None or any(r.created_at < mine.created_at for r in page.runs):
            break
    return min(later, key=lambda r: (r.created_at, r.id)).id if later else None


@workflow(name="worldflow.debounced")
async def debounced(
    name: str, args: list[Any], kwargs: dict[str, Any], tag: str, window: float
) -> Any:
    import asyncio  # not at import time: `import worldflow` loads no event loop

    from ._api import sleep, start

    await sleep(window)
    if await _superseded_by(tag) is not None:
        raise asyncio.CancelledError("superseded by a later start (debounce)")
    child: Any = await start(name, *args, **kwargs)
    return await child.result()
